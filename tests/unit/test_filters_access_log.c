/* The JSON access log line: fields and their null cases, escaping of every byte, cuts of long values, the bound. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "remora/strutil.h"
#include "filters/access_log.h"
#include "proxy/stream.h"

static rm_stream_t *
new_stream(const char *method, const char *authority, const char *path)
{
    rm_stream_t *s = calloc(1, sizeof(*s));
    s->req.method = h2o_iovec_init(method, strlen(method));
    s->req.authority = h2o_iovec_init(authority, authority != NULL ? strlen(authority) : 0);
    s->req.path = h2o_iovec_init(path, strlen(path));
    s->info.grpc_status = -1;
    s->started_at_us = rm_now_us() - 12345;
    s->info.ended_at_us = s->started_at_us + 12345;
    return s;
}

static const char *
format(rm_stream_t *s, char *buf)
{
    size_t len = rm_access_log_format(s, buf);
    assert_true(len <= RM_ACCESS_LOG_MAX_LINE);
    assert_true(len >= 2 && buf[len - 1] == '\n' && buf[len - 2] == '}');
    buf[len] = '\0'; /* the caller's buffer has room: RM_ACCESS_LOG_MAX_LINE + 1 */
    return buf;
}

static void
assert_contains(const char *text, const char *needle)
{
    if (strstr(text, needle) == NULL)
        fail_msg("missing: %s\n--- line ---\n%s", needle, text);
}

static void
test_fields(void **state)
{
    char buf[RM_ACCESS_LOG_MAX_LINE + 1];
    rm_config_route_t route = {.name = "api"};
    rm_stream_down_ops_t down = {.protocol = "HTTP/2"};
    rm_stream_t *s = new_stream("POST", "api.default", "/echo.Echo/Unary?x=1");
    s->route = &route;
    rm_config_listener_t listener = {.name = "inbound", .direction = RM_DIRECTION_INBOUND};
    s->listener = &listener;
    s->peer_identity = "spiffe://remora.local/ns/default/sa/web";
    s->info.protocol = down.protocol;
    s->info.status = 200;
    s->info.grpc_status = 14;
    s->info.backend = "api.default";
    snprintf(s->info.upstream_addr, sizeof(s->info.upstream_addr), "10.0.0.7:8080");
    s->info.attempts = 2;
    s->info.resp_bytes = 42;
    s->req_body.bytes_in = 17;
    struct sockaddr_in *sin = (void *)&s->peer;
    sin->sin_family = AF_INET;
    sin->sin_port = htons(40312);
    inet_pton(AF_INET, "127.0.0.1", &sin->sin_addr);
    s->peerlen = sizeof(*sin);
    const char *line = format(s, buf);
    assert_true(strncmp(line, "{\"start_time\":\"20", 17) == 0);
    assert_true(line[17 + 2] == '-' && strstr(line, "Z\",\"duration_ms\":12.345,") != NULL);
    assert_contains(line,
                    ",\"method\":\"POST\",\"authority\":\"api.default\",\"path\":\"/echo.Echo/Unary?x=1\","
                    "\"protocol\":\"HTTP/"
                    "2\",\"direction\":\"inbound\",\"status\":200,\"grpc_status\":14,\"response_flag\":\"-\",\"route\":\"api\","
                    "\"backend\":\"api.default\",\"upstream_address\":\"10.0.0.7:8080\",\"attempts\":2,"
                    "\"bytes_received\":17,\"bytes_sent\":42,\"trace_id\":null,"
                    "\"peer_identity\":\"spiffe://remora.local/ns/default/sa/web\","
                    "\"downstream_address\":\"127.0.0.1:40312\"}\n");
    free(s);
}

static void
test_nulls_of_a_local_reply(void **state)
{
    char buf[RM_ACCESS_LOG_MAX_LINE + 1];
    rm_stream_t *s = new_stream("GET", NULL, "/");
    s->info.flag = "NR";
    const char *line = format(s, buf);
    assert_contains(line,
                    "\"authority\":null,\"path\":\"/\",\"protocol\":null,\"direction\":null,\"status\":null,\"grpc_status\":null,"
                    "\"response_flag\":\"NR\",\"route\":null,\"backend\":null,\"upstream_address\":null,\"attempts\":0,");
    assert_contains(line, "\"downstream_address\":null}");
    free(s);
}

static void
test_escaping(void **state)
{
    char buf[RM_ACCESS_LOG_MAX_LINE + 1];
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"\"\\", "\\\"\\\\"},
        {"\n\r\t\x01\x1f\x7f", "\\n\\r\\t\\u0001\\u001f\\u007f"},
        {"caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80", "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80"}, /* valid UTF-8 kept */
        {"\xff\xfe\x80", "\\u00ff\\u00fe\\u0080"},                                                  /* stray bytes */
        {"\xc0\xaf", "\\u00c0\\u00af"},                                                             /* overlong '/' */
        {"\xed\xa0\x80", "\\u00ed\\u00a0\\u0080"},                                                  /* a surrogate */
        {"\xf4\x90\x80\x80", "\\u00f4\\u0090\\u0080\\u0080"},                                       /* above U+10FFFF */
        {"x\xe2\x82", "x\\u00e2\\u0082"},                                                           /* cut short */
        {"\xe2\x82\x41", "\\u00e2\\u0082A"},
    };
    for (size_t i = 0; i != sizeof(cases) / sizeof(cases[0]); ++i) {
        rm_stream_t *s = new_stream("GET", cases[i].in, cases[i].in);
        const char *line = format(s, buf);
        char want[256];
        snprintf(want, sizeof(want), "\"authority\":\"%s\",\"path\":\"%s\",", cases[i].out, cases[i].out);
        assert_contains(line, want);
        free(s);
    }
}

static void
test_long_values_cut_and_line_bounded(void **state)
{
    char buf[RM_ACCESS_LOG_MAX_LINE + 1], *path = malloc(10001), *auth = malloc(10001), name[1000];
    memset(path, '"', 10000); /* every byte doubles when escaped */
    path[0] = '/', path[10000] = '\0';
    memset(auth, '\x01', 10000); /* every byte becomes six */
    auth[10000] = '\0';
    memset(name, 'r', sizeof(name) - 1);
    name[sizeof(name) - 1] = '\0';
    rm_config_route_t route = {.name = name};
    rm_stream_t *s = new_stream("VERYLONGMETHODVERYLONGMETHODVERYLONGMETHODVERYLONGMETHODVERYLONGMETHODVERYLONGMETHOD", auth, path);
    s->route = &route;
    s->info.backend = name;
    s->info.flag = "UF";
    memset(s->info.upstream_addr, '9', sizeof(s->info.upstream_addr) - 1);
    const char *line = format(s, buf);
    const char *p = strstr(line, "\"path\":\"/\\\""), *end = strstr(p, "...\",\"protocol\"");
    assert_non_null(end);
    assert_true(end + 3 - (p + 8) <= 1792 && end + 3 - (p + 8) > 1784);
    assert_non_null(strstr(line, "\\u0001...\",\"path\""));
    assert_non_null(strstr(line, "\"method\":\"VERYLONGMETHOD"));
    assert_non_null(strstr(line, "rrr...\",\"backend\":\"rrr"));
    free(s);
    free(path);
    free(auth);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fields),
        cmocka_unit_test(test_nulls_of_a_local_reply),
        cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_long_values_cut_and_line_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
