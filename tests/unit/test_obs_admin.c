/*
 * Health and admin servers over real sockets: the servers run on a libuv loop in the test thread
 * while a client thread sends raw HTTP/1.1 requests; results are checked once the loop has ended,
 * because cmocka's assertions must run in the test thread.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include <uv.h>
#include "remora/log.h"
#include "admin/admin.h"

#define METRICS_TEXT "# TYPE remora_config_generation gauge\nremora_config_generation 3\n"
#define CONFIG_JSON "{\"generation\":3}"

typedef struct st_resp_t {
    int status;
    char head[2048];
    char body[4096];
} resp_t;

enum {
    R_LIVE,
    R_READY_NOT,
    R_READY_OK,
    R_METRICS,
    R_CONFIG_DUMP,
    R_ADMIN_READY,
    R_HEALTH_CONFIG_DUMP,
    R_ADMIN_UNKNOWN,
    R_HEALTH_INDEX,
    R_ADMIN_INDEX,
    R_DRAIN_GET,
    R_LIVE_POST,
    R_DRAIN,
    R_READY_DRAINING,
    R_LOG_SET,
    R_LOG_GET,
    R_LOG_BAD,
    R_LOG_MISSING,
    R_HEAD_LIVE,
    R_METRICS_QUERY,
    NUM_RESULTS
};

typedef struct st_fixture_t {
    uv_loop_t loop;
    uv_async_t stop_async;
    rm_admin_t *admin;
    uint16_t health_port, admin_port;
    int ready, draining, drain_calls, metrics_calls; /* touched by both threads: __atomic */
    resp_t results[NUM_RESULTS];
    int idle_closed, partial_closed;
    double stop_requested_at;
} fixture_t;

static double
now_sec(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static uint16_t
free_port(void)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(sin);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sin, &len), 0);
    close(fd);
    return ntohs(sin.sin_port);
}

static struct sockaddr_in
loopback(uint16_t port)
{
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    return sin;
}

static int
connect_to(uint16_t port)
{
    struct sockaddr_in sin = loopback(port);
    struct timeval tv = {.tv_sec = 5};
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sin, sizeof(sin)) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* One request per connection (the server closes after each response): read until EOF. */
static void
http(uint16_t port, const char *request, resp_t *r)
{
    char buf[8192];
    size_t len = 0;
    ssize_t n;
    int fd;

    memset(r, 0, sizeof(*r));
    r->status = -1;
    if ((fd = connect_to(port)) < 0)
        return;
    if (write(fd, request, strlen(request)) != (ssize_t)strlen(request)) {
        close(fd);
        return;
    }
    while (len < sizeof(buf) - 1 && (n = read(fd, buf + len, sizeof(buf) - 1 - len)) > 0)
        len += (size_t)n;
    close(fd);
    buf[len] = '\0';
    char *sep = strstr(buf, "\r\n\r\n");
    if (sep == NULL || sscanf(buf, "HTTP/1.%*d %d", &r->status) != 1)
        return;
    snprintf(r->head, sizeof(r->head), "%.*s", (int)(sep - buf), buf);
    snprintf(r->body, sizeof(r->body), "%s", sep + 4);
}

static int
cb_is_ready(void *ctx)
{
    fixture_t *f = ctx;
    return __atomic_load_n(&f->ready, __ATOMIC_SEQ_CST);
}

static int
cb_is_draining(void *ctx)
{
    fixture_t *f = ctx;
    return __atomic_load_n(&f->draining, __ATOMIC_SEQ_CST);
}

static char *
cb_render_metrics(void *ctx)
{
    fixture_t *f = ctx;
    __atomic_add_fetch(&f->metrics_calls, 1, __ATOMIC_SEQ_CST);
    return strdup(METRICS_TEXT);
}

static char *
cb_config_dump(void *ctx)
{
    return strdup(CONFIG_JSON);
}

static void
cb_start_drain(void *ctx)
{
    fixture_t *f = ctx;
    __atomic_add_fetch(&f->drain_calls, 1, __ATOMIC_SEQ_CST);
    __atomic_store_n(&f->draining, 1, __ATOMIC_SEQ_CST);
}

static const rm_admin_callbacks_t callbacks = {
    cb_is_ready, cb_is_draining, cb_render_metrics, cb_config_dump, cb_start_drain, NULL, NULL, NULL, NULL, NULL};

static void
on_stop_async(uv_async_t *async)
{
    fixture_t *f = async->data;
    rm_admin_stop(f->admin);
    uv_close((uv_handle_t *)async, NULL);
}

#define GET(path) "GET " path " HTTP/1.1\r\nHost: localhost\r\n\r\n"
#define POST(path) "POST " path " HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n"

static void *
client_main(void *arg)
{
    fixture_t *f = arg;
    resp_t *r = f->results;
    uint16_t h = f->health_port, a = f->admin_port;

    http(h, GET("/live"), r + R_LIVE);
    http(h, GET("/ready"), r + R_READY_NOT);
    __atomic_store_n(&f->ready, 1, __ATOMIC_SEQ_CST);
    http(h, GET("/ready"), r + R_READY_OK);
    http(h, GET("/metrics"), r + R_METRICS);
    http(a, GET("/config_dump"), r + R_CONFIG_DUMP);
    http(a, GET("/ready"), r + R_ADMIN_READY);
    http(h, GET("/config_dump"), r + R_HEALTH_CONFIG_DUMP);
    http(a, GET("/nope"), r + R_ADMIN_UNKNOWN);
    http(h, GET("/"), r + R_HEALTH_INDEX);
    http(a, GET("/"), r + R_ADMIN_INDEX);
    http(a, GET("/drain"), r + R_DRAIN_GET);
    http(h, POST("/live"), r + R_LIVE_POST);
    http(a, POST("/drain"), r + R_DRAIN);
    http(h, GET("/ready"), r + R_READY_DRAINING);
    http(a, POST("/logging?level=debug"), r + R_LOG_SET);
    http(a, GET("/logging"), r + R_LOG_GET);
    http(a, POST("/logging?level=loud"), r + R_LOG_BAD);
    http(a, POST("/logging"), r + R_LOG_MISSING);
    http(h, "HEAD /live HTTP/1.1\r\nHost: localhost\r\n\r\n", r + R_HEAD_LIVE);
    http(h, GET("/metrics?x=1"), r + R_METRICS_QUERY);

    /* connections that never complete a request must not keep the loop alive after stop */
    int idle = connect_to(h), partial = connect_to(a);
    if (partial >= 0)
        (void)!write(partial, "GET /rea", 8);
    usleep(100 * 1000); /* let the server accept both */
    f->stop_requested_at = now_sec();
    uv_async_send(&f->stop_async);
    char c;
    f->idle_closed = idle >= 0 && read(idle, &c, 1) == 0;
    f->partial_closed = partial >= 0 && read(partial, &c, 1) == 0;
    if (idle >= 0)
        close(idle);
    if (partial >= 0)
        close(partial);
    return NULL;
}

static void
assert_resp(const resp_t *r, int status, const char *body)
{
    if (r->status != status)
        fail_msg("expected status %d, got %d (%s)", status, r->status, r->head);
    if (body != NULL)
        assert_string_equal(r->body, body);
}

static void
assert_header(const resp_t *r, const char *header_line)
{
    if (strcasestr(r->head, header_line) == NULL)
        fail_msg("missing header \"%s\" in:\n%s", header_line, r->head);
}

static void
test_endpoints(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    char errbuf[256] = "";
    pthread_t client;
    int saved_level = rm_log_current_level;

    assert_int_equal(uv_loop_init(&f->loop), 0);
    /* a port free_port() found may be taken by another process before rm_admin_start binds it (tests run in
     * parallel): try other ports, a bounded number of times */
    for (int attempt = 0; attempt != 20 && f->admin == NULL; ++attempt) {
        f->health_port = free_port();
        f->admin_port = free_port();
        struct sockaddr_in hs = loopback(f->health_port), as = loopback(f->admin_port);
        f->admin = rm_admin_start(&f->loop, (struct sockaddr *)&hs, (struct sockaddr *)&as, &callbacks, f, errbuf, sizeof(errbuf));
        if (f->admin == NULL && strstr(errbuf, "in use") == NULL)
            break;
    }
    if (f->admin == NULL)
        fail_msg("rm_admin_start: %s", errbuf);
    uv_async_init(&f->loop, &f->stop_async, on_stop_async);
    f->stop_async.data = f;

    pthread_create(&client, NULL, client_main, f);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    double loop_ended_at = now_sec();
    pthread_join(client, NULL);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    rm_log_current_level = saved_level;

    resp_t *r = f->results;
    assert_resp(r + R_LIVE, 200, "live\n");
    assert_header(r + R_LIVE, "content-type: text/plain");
    assert_header(r + R_LIVE, "content-length: 5");
    assert_header(r + R_LIVE, "connection: close");
    assert_resp(r + R_READY_NOT, 503, "not ready\n");
    assert_resp(r + R_READY_OK, 200, "ready\n");
    assert_resp(r + R_METRICS, 200, METRICS_TEXT);
    assert_header(r + R_METRICS, "content-type: text/plain; version=0.0.4");
    assert_resp(r + R_CONFIG_DUMP, 200, CONFIG_JSON);
    assert_header(r + R_CONFIG_DUMP, "content-type: application/json");
    assert_resp(r + R_ADMIN_READY, 200, "ready\n");
    assert_resp(r + R_HEALTH_CONFIG_DUMP, 404, NULL);
    assert_resp(r + R_ADMIN_UNKNOWN, 404, NULL);
    assert_resp(r + R_HEALTH_INDEX, 404, NULL);
    assert_resp(r + R_ADMIN_INDEX, 200, NULL);
    assert_non_null(strstr(r[R_ADMIN_INDEX].body, "/config_dump"));
    assert_resp(r + R_DRAIN_GET, 405, NULL);
    assert_header(r + R_DRAIN_GET, "allow: POST");
    assert_resp(r + R_LIVE_POST, 405, NULL);
    assert_resp(r + R_DRAIN, 200, NULL);
    assert_int_equal(f->drain_calls, 1);
    assert_resp(r + R_READY_DRAINING, 503, "draining\n");
    assert_resp(r + R_LOG_SET, 200, "debug\n");
    assert_resp(r + R_LOG_GET, 200, "debug\n");
    assert_resp(r + R_LOG_BAD, 400, NULL);
    assert_resp(r + R_LOG_MISSING, 400, NULL);
    assert_resp(r + R_HEAD_LIVE, 200, "");
    assert_resp(r + R_METRICS_QUERY, 200, METRICS_TEXT);
    assert_int_equal(f->metrics_calls, 2);

    /* the request timeout is seconds; a prompt end proves stop closed the idle and half-sent connections itself */
    assert_true(f->idle_closed);
    assert_true(f->partial_closed);
    assert_true(loop_ended_at - f->stop_requested_at < 1.5);
    free(f);
}

static void
test_bind_errors(void **state)
{
    uv_loop_t loop;
    char errbuf[256], expect[64];
    uint16_t port = free_port();
    struct sockaddr_in busy = loopback(port);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_int_equal(uv_loop_init(&loop), 0);
    assert_int_equal(bind(fd, (struct sockaddr *)&busy, sizeof(busy)), 0);
    assert_int_equal(listen(fd, 1), 0);

    /* the health listener may bind any address, but not one that is taken */
    errbuf[0] = '\0';
    assert_null(rm_admin_start(&loop, (struct sockaddr *)&busy, NULL, &callbacks, NULL, errbuf, sizeof(errbuf)));
    snprintf(expect, sizeof(expect), "bind 127.0.0.1:%u: ", port);
    if (strstr(errbuf, expect) == NULL || strcasestr(errbuf, "in use") == NULL)
        fail_msg("unexpected error: %s", errbuf);

    /* a failing second listener releases the first one it had bound */
    uint16_t other = free_port();
    struct sockaddr_in ok = loopback(other);
    errbuf[0] = '\0';
    assert_null(rm_admin_start(&loop, (struct sockaddr *)&ok, (struct sockaddr *)&busy, &callbacks, NULL, errbuf, sizeof(errbuf)));
    assert_non_null(strstr(errbuf, expect));
    int probe = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(bind(probe, (struct sockaddr *)&ok, sizeof(ok)), 0);
    close(probe);

    /* the admin API never listens beyond loopback */
    struct sockaddr_in any = {.sin_family = AF_INET, .sin_port = htons(other), .sin_addr.s_addr = htonl(INADDR_ANY)};
    errbuf[0] = '\0';
    assert_null(rm_admin_start(&loop, NULL, (struct sockaddr *)&any, &callbacks, NULL, errbuf, sizeof(errbuf)));
    if (strstr(errbuf, "0.0.0.0:") == NULL || strstr(errbuf, "loopback") == NULL)
        fail_msg("unexpected error: %s", errbuf);
    struct sockaddr_in6 any6 = {.sin6_family = AF_INET6, .sin6_port = htons(other), .sin6_addr = IN6ADDR_ANY_INIT};
    assert_null(rm_admin_start(&loop, NULL, (struct sockaddr *)&any6, &callbacks, NULL, errbuf, sizeof(errbuf)));
    assert_non_null(strstr(errbuf, "loopback"));

    /* failures leave nothing on the loop */
    assert_int_equal(uv_run(&loop, UV_RUN_NOWAIT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
    close(fd);
}

static void
test_start_stop_without_traffic(void **state)
{
    uv_loop_t loop;
    char errbuf[256] = "";
    struct sockaddr_in as = loopback(free_port());

    assert_int_equal(uv_loop_init(&loop), 0);
    /* only the admin listener, with no callbacks at all */
    rm_admin_t *admin = rm_admin_start(&loop, NULL, (struct sockaddr *)&as, NULL, NULL, errbuf, sizeof(errbuf));
    if (admin == NULL)
        fail_msg("rm_admin_start: %s", errbuf);
    rm_admin_stop(admin);
    rm_admin_stop(admin);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);

    /* neither listener */
    assert_int_equal(uv_loop_init(&loop), 0);
    admin = rm_admin_start(&loop, NULL, NULL, &callbacks, NULL, errbuf, sizeof(errbuf));
    assert_non_null(admin);
    rm_admin_stop(admin);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

typedef struct st_stop_fixture_t {
    rm_admin_t *admin;
    uint16_t port;
    int drain_calls;
    resp_t resp;
} stop_fixture_t;

static void
cb_drain_and_stop(void *ctx)
{
    stop_fixture_t *f = ctx;
    ++f->drain_calls;
    /* the owner tears the servers down from inside a request callback */
    rm_admin_stop(f->admin);
}

static void *
stop_client_main(void *arg)
{
    stop_fixture_t *f = arg;
    http(f->port, POST("/drain"), &f->resp);
    return NULL;
}

static void
test_stop_from_callback(void **state)
{
    static const rm_admin_callbacks_t cbs = {.start_drain = cb_drain_and_stop};
    stop_fixture_t f = {.port = free_port()};
    struct sockaddr_in as = loopback(f.port);
    char errbuf[256] = "";
    uv_loop_t loop;
    pthread_t client;

    assert_int_equal(uv_loop_init(&loop), 0);
    f.admin = rm_admin_start(&loop, NULL, (struct sockaddr *)&as, &cbs, &f, errbuf, sizeof(errbuf));
    if (f.admin == NULL)
        fail_msg("rm_admin_start: %s", errbuf);
    pthread_create(&client, NULL, stop_client_main, &f);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    pthread_join(client, NULL);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(f.drain_calls, 1);
    /* the response to the request that stopped the server still goes out */
    assert_int_equal(f.resp.status, 200);
}

static void
test_ipv6_loopback(void **state)
{
    struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    socklen_t len = sizeof(sin6);
    char errbuf[256] = "";
    uv_loop_t loop;
    int fd = socket(AF_INET6, SOCK_STREAM, 0);

    if (fd < 0 || bind(fd, (struct sockaddr *)&sin6, sizeof(sin6)) != 0) {
        if (fd >= 0)
            close(fd);
        skip();
    }
    getsockname(fd, (struct sockaddr *)&sin6, &len);
    close(fd);
    assert_int_equal(uv_loop_init(&loop), 0);
    rm_admin_t *admin = rm_admin_start(&loop, NULL, (struct sockaddr *)&sin6, &callbacks, NULL, errbuf, sizeof(errbuf));
    if (admin == NULL)
        fail_msg("[::1] is loopback, yet: %s", errbuf);
    rm_admin_stop(admin);
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    assert_int_equal(uv_loop_close(&loop), 0);
}

int
main(void)
{
    /* a write to a peer that went away must be an error, not a signal (the agent's main does the same) */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_endpoints),
        cmocka_unit_test(test_bind_errors),
        cmocka_unit_test(test_start_stop_without_traffic),
        cmocka_unit_test(test_stop_from_callback),
        cmocka_unit_test(test_ipv6_loopback),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
