/*
 * rm_config_to_json: the output is valid JSON (checked by a strict recursive-descent validator
 * below) and holds what the snapshot holds, with strings escaped.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "config/config.h"

/* --- a strict RFC 8259 validator (no extensions: no trailing commas, no comments, no NaN) --- */

typedef struct st_json_t {
    const char *p, *end;
    int depth;
} json_t;

static int json_value(json_t *j);

static void
json_ws(json_t *j)
{
    while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r'))
        ++j->p;
}

static int
json_lit(json_t *j, const char *lit)
{
    size_t n = strlen(lit);
    if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0)
        return 0;
    j->p += n;
    return 1;
}

static int
json_string(json_t *j)
{
    if (j->p >= j->end || *j->p != '"')
        return 0;
    for (++j->p; j->p < j->end; ++j->p) {
        unsigned char c = *j->p;
        if (c == '"') {
            ++j->p;
            return 1;
        }
        if (c < 0x20)
            return 0;
        if (c == '\\') {
            if (++j->p >= j->end)
                return 0;
            if (*j->p == 'u') {
                for (int i = 0; i != 4; ++i)
                    if (++j->p >= j->end || strchr("0123456789abcdefABCDEF", *j->p) == NULL)
                        return 0;
            } else if (strchr("\"\\/bfnrt", *j->p) == NULL) {
                return 0;
            }
        }
    }
    return 0;
}

static int
json_number(json_t *j)
{
    const char *start = j->p;
    if (j->p < j->end && *j->p == '-')
        ++j->p;
    if (j->p >= j->end || *j->p < '0' || *j->p > '9')
        return 0;
    if (*j->p == '0' && j->p + 1 < j->end && j->p[1] >= '0' && j->p[1] <= '9')
        return 0;
    while (j->p < j->end && ((*j->p >= '0' && *j->p <= '9') || strchr(".eE+-", *j->p) != NULL))
        ++j->p;
    return j->p > start;
}

static int
json_container(json_t *j, char close, int is_object)
{
    ++j->p;
    if (++j->depth > 64)
        return 0;
    json_ws(j);
    if (j->p < j->end && *j->p == close) {
        ++j->p;
        --j->depth;
        return 1;
    }
    for (;;) {
        json_ws(j);
        if (is_object) {
            if (!json_string(j))
                return 0;
            json_ws(j);
            if (j->p >= j->end || *j->p++ != ':')
                return 0;
        }
        if (!json_value(j))
            return 0;
        json_ws(j);
        if (j->p >= j->end)
            return 0;
        if (*j->p == ',') {
            ++j->p;
            continue;
        }
        if (*j->p++ != close)
            return 0;
        --j->depth;
        return 1;
    }
}

static int
json_value(json_t *j)
{
    json_ws(j);
    if (j->p >= j->end)
        return 0;
    switch (*j->p) {
    case '{':
        return json_container(j, '}', 1);
    case '[':
        return json_container(j, ']', 0);
    case '"':
        return json_string(j);
    case 't':
        return json_lit(j, "true");
    case 'f':
        return json_lit(j, "false");
    case 'n':
        return json_lit(j, "null");
    default:
        return json_number(j);
    }
}

static int
json_valid(const char *s)
{
    json_t j = {s, s + strlen(s), 0};
    if (!json_value(&j))
        return 0;
    json_ws(&j);
    return j.p == j.end;
}

static void
test_validator(void **state)
{
    assert_true(json_valid("{\"a\":[1,2,{\"b\":null}],\"c\":\"x\\u0001\"}"));
    assert_false(json_valid("{\"a\":[1,2,]}"));
    assert_false(json_valid("{\"a\":\"\x01\"}"));
    assert_false(json_valid("{\"a\":1}}"));
    assert_false(json_valid("{a:1}"));
}

#define contains(hay, needle)                                                                                                      \
    do {                                                                                                                           \
        if (strstr((hay), (needle)) == NULL)                                                                                       \
            fail_msg("missing %s in\n%s", (needle), (hay));                                                                        \
    } while (0)

static void
test_dump(void **state)
{
    static const char yaml[] = "version: \"v7 \\\"quoted\\\" \\\\ back \\x01 \\u00e9\"\n"
                               "workers: 3\n"
                               "dns: {servers: [\"127.0.0.1:5353\"]}\n"
                               "listeners:\n"
                               "  - name: outbound\n"
                               "    address: 127.0.0.1:15001\n"
                               "    routes:\n"
                               "      - name: r1\n"
                               "        match:\n"
                               "          authority: [echo, \"*.echo.svc\"]\n"
                               "          path: {prefix: /echo.Echo/}\n"
                               "          headers: [{name: x-canary, value: \"tab\\there\"}, {name: x-debug}]\n"
                               "        cluster: echo\n"
                               "      - {cluster: echo, match: {path: {exact: /x}}}\n"
                               "clusters:\n"
                               "  - name: echo\n"
                               "    protocol: h2\n"
                               "    endpoints: [\"127.0.0.1:27201\", \"echo.local:27201\", \"[::1]:27201\"]\n"
                               "    tls: {server_name: echo.local}\n";
    rm_config_error_t err;
    rm_config_t *c = rm_config_load_string(yaml, sizeof(yaml) - 1, "dump.yaml", &err);
    if (c == NULL)
        fail_msg("%s:%u: %s", err.file, err.line, err.message);
    c->generation = 42;
    char *json = rm_config_to_json(c);
    assert_non_null(json);
    if (!json_valid(json))
        fail_msg("invalid JSON:\n%s", json);
    contains(json, "\"source\":\"dump.yaml\"");
    contains(json, "\"generation\":42");
    contains(json, "\"version\":\"v7 \\\"quoted\\\" \\\\ back \\u0001 \xc3\xa9\"");
    contains(json, "\"workers\":3");
    contains(json, "\"admin\":\"127.0.0.1:15000\"");
    contains(json, "\"health\":\"0.0.0.0:15020\"");
    contains(json, "\"drain_timeout_ms\":10000");
    contains(json, "\"dns\":{\"servers\":[\"127.0.0.1:5353\"]}");
    contains(json, "\"max_headers\":100");
    contains(json, "\"max_header_bytes\":65536");
    contains(json, "\"h2_max_concurrent_streams\":1024");
    contains(json, "\"stream_window_bytes\":262144");
    contains(json, "\"connection_window_bytes\":4194304");
    contains(json, "\"idle_timeout_ms\":300000");
    contains(json, "\"detect_timeout_ms\":10000");
    contains(json, "\"max_series_per_family\":2000");
    contains(json, "\"name\":\"outbound\",\"address\":\"127.0.0.1:15001\",\"tls\":null");
    contains(json, "\"authority\":[\"echo\",\"*.echo.svc\"]");
    contains(json, "\"path\":{\"prefix\":\"/echo.Echo/\"}");
    contains(json, "\"path\":{\"exact\":\"/x\"}");
    contains(json, "{\"name\":\"x-canary\",\"value\":\"tab\\there\",\"regex\":false}");
    contains(json, "{\"name\":\"x-debug\",\"value\":null,\"regex\":false}");
    contains(json, "\"cluster\":\"echo\"");
    contains(json, "\"protocol\":\"h2\"");
    contains(json, "\"endpoints\":[\"127.0.0.1:27201\",\"echo.local:27201\",\"[::1]:27201\"]");
    contains(json, "\"connect_timeout_ms\":1000");
    contains(json, "\"h2_connections\":1");
    contains(json, "\"h1_max_idle\":64");
    contains(json, "\"tls\":{\"ca\":null,\"server_name\":\"echo.local\",\"certificate\":null,\"key\":null}");
    contains(json, "\"dns\":{\"min_refresh_ms\":1000,\"max_refresh_ms\":300000}");
    /* request policy of a route that has none, and the cluster defaults */
    contains(json, "\"timeout_ms\":0,\"per_try_timeout_ms\":0,\"retry\":null,"
                   "\"request_headers\":{\"set\":[],\"add\":[],\"remove\":[]},"
                   "\"response_headers\":{\"set\":[],\"add\":[],\"remove\":[]},"
                   "\"mirrors\":[],\"fault\":null,\"redirect\":null,\"url_rewrite\":null,"
                   "\"session_persistence\":null,\"rate_limit\":null,\"authorization\":null,\"line\":");
    contains(json, "\"pool_idle_timeout_ms\":4000,\"stream_idle_timeout_ms\":300000,"
                   "\"retry_budget\":{\"percent\":20,\"interval_ms\":10000,\"min_retry_count\":10,\"min_retry_interval_ms\":1000},"
                   "\"load_balancer\":{\"type\":\"peak_ewma\",\"ring_min_size\":null},"
                   "\"circuit_breakers\":{\"max_connections\":1024,\"max_pending_requests\":1024,\"max_requests\":4096,"
                   "\"max_retries\":64},\"outlier_detection\":null,\"health_check\":null,\"rate_limit\":null,"
                   "\"authorization\":null,\"line\":");
    free(json);
    rm_config_unref(c);
}

/* Backend and limit policy render as valid JSON, strings escaped (the full shape is checked in test_config_backend.c). */
static void
test_dump_backend(void **state)
{
    static const char yaml[] = "listeners:\n"
                               "  - address: 127.0.0.1:15001\n"
                               "    routes:\n"
                               "      - cluster: c\n"
                               "        session_persistence: {type: cookie, name: s}\n"
                               "        rate_limit:\n"
                               "          per_client: {requests_per_second: 2}\n"
                               "          overrides: [{requests_per_second: 3, clients: [\"q\\\"uote\", \"tab\\there\"]}]\n"
                               "clusters:\n"
                               "  - name: c\n"
                               "    endpoints: [{address: \"[::1]:1\", weight: 2}, \"127.0.0.1:1\"]\n"
                               "    load_balancer: {type: ring_hash}\n"
                               "    outlier_detection: {}\n"
                               "    rate_limit: {total: {requests_per_second: 1}}\n";
    rm_config_error_t err;
    rm_config_t *c = rm_config_load_string(yaml, sizeof(yaml) - 1, "dump.yaml", &err);
    if (c == NULL)
        fail_msg("%s:%u: %s", err.file, err.line, err.message);
    char *json = rm_config_to_json(c);
    if (!json_valid(json))
        fail_msg("invalid JSON:\n%s", json);
    contains(json, "\"endpoints\":[{\"address\":\"[::1]:1\",\"weight\":2},\"127.0.0.1:1\"]");
    contains(json, "\"clients\":[\"q\\\"uote\",\"tab\\there\"]");
    contains(json, "\"load_balancer\":{\"type\":\"ring_hash\",\"ring_min_size\":1024}");
    free(json);
    rm_config_unref(c);
}

static void
test_dump_policy(void **state)
{
    static const char yaml[] =
        "listeners:\n"
        "  - name: l\n"
        "    address: 127.0.0.1:15001\n"
        "    routes:\n"
        "      - name: r\n"
        "        match: {path: {regex: \"/v[0-9]+/\\\\d+\"}, headers: [{name: x-env, value: \"a|b\", regex: true}]}\n"
        "        cluster: c\n"
        "        timeout_ms: 1000\n"
        "        per_try_timeout_ms: 200\n"
        "        retry:\n"
        "          attempts: 2\n"
        "          on: [reset, refused-stream]\n"
        "          http_statuses: [503, 502]\n"
        "          grpc_statuses: [UNAVAILABLE, 1]\n"
        "        request_headers: {set: [{name: X-Env, value: \"q\\\"uote\"}], add: [{name: x-a, value: \"1\"}], remove: "
        "[x-debug]}\n"
        "        response_headers: {remove: [server]}\n"
        "        mirrors: [{cluster: shadow, percent: 12.25}]\n"
        "        fault: {delay_ms: 50, delay_percent: 0.0001, abort_grpc_status: 14}\n"
        "      - name: moved\n"
        "        match: {path: {prefix: /old/}}\n"
        "        redirect: {scheme: https, port: 8443, path: {type: prefix, value: /new/}}\n"
        "      - name: rw\n"
        "        cluster: shadow\n"
        "        url_rewrite: {hostname: y.example}\n"
        "clusters:\n"
        "  - {name: c, endpoints: \"127.0.0.1:1\", pool_idle_timeout_ms: 1500, stream_idle_timeout_ms: 0,"
        " retry_budget: {percent: 0, min_retry_count: 0}}\n"
        "  - {name: shadow, endpoints: \"127.0.0.1:2\"}\n";
    rm_config_error_t err;
    rm_config_t *c = rm_config_load_string(yaml, sizeof(yaml) - 1, "policy.yaml", &err);
    if (c == NULL)
        fail_msg("%s:%u: %s", err.file, err.line, err.message);
    char *json = rm_config_to_json(c);
    if (!json_valid(json))
        fail_msg("invalid JSON:\n%s", json);
    contains(json, "\"path\":{\"regex\":\"/v[0-9]+/\\\\d+\"}");
    contains(json, "{\"name\":\"x-env\",\"value\":\"a|b\",\"regex\":true}");
    contains(json, "\"timeout_ms\":1000,\"per_try_timeout_ms\":200,");
    contains(json, "\"retry\":{\"attempts\":2,\"backoff_ms\":25,\"max_backoff_ms\":250,\"on\":[\"refused-stream\",\"reset\"],"
                   "\"http_statuses\":[502,503],\"grpc_statuses\":[\"CANCELLED\",\"UNAVAILABLE\"],\"max_replay_bytes\":65536}");
    contains(json, "\"request_headers\":{\"set\":[{\"name\":\"x-env\",\"value\":\"q\\\"uote\"}],"
                   "\"add\":[{\"name\":\"x-a\",\"value\":\"1\"}],\"remove\":[\"x-debug\"]}");
    contains(json, "\"response_headers\":{\"set\":[],\"add\":[],\"remove\":[\"server\"]}");
    contains(json, "\"mirrors\":[{\"cluster\":\"shadow\",\"percent\":12.25}]");
    contains(json, "\"fault\":{\"delay_ms\":50,\"delay_percent\":0.0001,\"abort_http_status\":null,"
                   "\"abort_grpc_status\":\"UNAVAILABLE\",\"abort_percent\":100}");
    contains(json, "\"cluster\":null,");
    contains(json, "\"redirect\":{\"scheme\":\"https\",\"hostname\":null,\"port\":8443,\"status_code\":302,"
                   "\"path\":{\"type\":\"prefix\",\"value\":\"/new/\"}}");
    contains(json, "\"url_rewrite\":{\"hostname\":\"y.example\",\"path\":null}");
    contains(json, "\"pool_idle_timeout_ms\":1500,\"stream_idle_timeout_ms\":0,"
                   "\"retry_budget\":{\"percent\":0,\"interval_ms\":10000,\"min_retry_count\":0,\"min_retry_interval_ms\":1000}");
    free(json);
    rm_config_unref(c);
}

static void
test_dump_empty(void **state)
{
    rm_config_t *c = rm_config_create_defaults();
    char *json = rm_config_to_json(c);
    if (!json_valid(json))
        fail_msg("invalid JSON:\n%s", json);
    contains(json, "\"source\":null");
    contains(json, "\"listeners\":[]");
    contains(json, "\"clusters\":[]");
    free(json);
    rm_config_unref(c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_validator),   cmocka_unit_test(test_dump),       cmocka_unit_test(test_dump_backend),
        cmocka_unit_test(test_dump_policy), cmocka_unit_test(test_dump_empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
