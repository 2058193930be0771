/*
 * rm_router_match: routes are built from YAML (as in production), requests by hand.
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
#include "router/router.h"

static const char yaml[] = "listeners:\n"
                           "  - name: l\n"
                           "    address: 127.0.0.1:15001\n"
                           "    routes:\n"
                           "      - name: canary\n"
                           "        match:\n"
                           "          authority: echo\n"
                           "          headers: [{name: x-canary, value: \"1\"}, {name: x-debug}]\n"
                           "        cluster: c\n"
                           "      - name: grpc\n"
                           "        match: {authority: [echo, \"*.echo.svc\"], path: {prefix: /echo.Echo/}}\n"
                           "        cluster: c\n"
                           "      - name: exact\n"
                           "        match: {path: {exact: /health}}\n"
                           "        cluster: c\n"
                           "      - name: port8080\n"
                           "        match: {authority: \"api:8080\"}\n"
                           "        cluster: c\n"
                           "      - name: port80\n"
                           "        match: {authority: [\"web:80\", \"secure:443\", \"[::1]:80\"]}\n"
                           "        cluster: c\n"
                           "      - name: v6\n"
                           "        match: {authority: \"[::2]\"}\n"
                           "        cluster: c\n"
                           "      - name: wild-port\n"
                           "        match: {authority: \"*.svc:9000\"}\n"
                           "        cluster: c\n"
                           "      - name: catchall-host\n"
                           "        match: {authority: \"*\", path: {prefix: /any}}\n"
                           "        cluster: c\n"
                           "      - name: root\n"
                           "        match: {authority: [Echo.Local], path: {prefix: /}}\n"
                           "        cluster: c\n"
                           "clusters: [{name: c, endpoints: \"127.0.0.1:1\"}]\n";

static rm_config_t *config;

static int
setup(void **state)
{
    rm_config_error_t err;
    config = rm_config_load_string(yaml, sizeof(yaml) - 1, "router.yaml", &err);
    if (config == NULL)
        fprintf(stderr, "%s:%u: %s\n", err.file, err.line, err.message);
    return config != NULL ? 0 : -1;
}

static int
teardown(void **state)
{
    rm_config_unref(config);
    return 0;
}

static h2o_iovec_t
iov(const char *s)
{
    return h2o_iovec_init(s, strlen(s));
}

/* Matches a request given as scheme, authority, path and up to 4 "name: value" headers; returns the route's name or NULL. */
static const char *
match(const char *scheme, const char *authority, const char *path, ...)
{
    static rm_header_t entries[4];
    rm_req_head_t req;
    va_list ap;
    const char *h;

    memset(&req, 0, sizeof(req));
    req.method = iov("GET");
    req.scheme = iov(scheme);
    req.authority = iov(authority);
    req.path = iov(path);
    req.content_length = -1;
    req.headers.entries = entries;
    va_start(ap, path);
    while ((h = va_arg(ap, const char *)) != NULL) {
        const char *colon = strchr(h, ':');
        entries[req.headers.size].name = h2o_iovec_init(h, colon - h);
        entries[req.headers.size].value = iov(colon + 2);
        ++req.headers.size;
    }
    va_end(ap);
    req.headers.capacity = req.headers.size;
    const rm_config_route_t *r = rm_router_match(config->listeners, &req);
    return r != NULL ? r->name : NULL;
}

static void
check(const char *want, const char *got, int line)
{
    if (want == NULL ? got != NULL : (got == NULL || strcmp(got, want) != 0))
        fail_msg("line %d: want %s, got %s", line, want != NULL ? want : "(none)", got != NULL ? got : "(none)");
}

#define assert_route(want, ...) check((want), match(__VA_ARGS__, NULL), __LINE__)

static void
test_headers(void **state)
{
    /* all header conditions needed; value exact; first matching route wins */
    assert_route("canary", "http", "echo", "/echo.Echo/Say", "x-canary: 1", "x-debug: ");
    assert_route("grpc", "http", "echo", "/echo.Echo/Say", "x-canary: 1");
    assert_route("grpc", "http", "echo", "/echo.Echo/Say", "x-canary: 10", "x-debug: yes");
    /* any field of the name may carry the value */
    assert_route("canary", "http", "echo", "/", "x-canary: 0", "x-debug: 1", "x-canary: 1");
    assert_route(NULL, "http", "echo", "/", "x-canary: 0", "x-debug: 1");
}

static void
test_authority(void **state)
{
    /* case-insensitive, port ignored when the entry has none */
    assert_route("grpc", "http", "ECHO", "/echo.Echo/Say");
    assert_route("grpc", "http", "echo:8080", "/echo.Echo/Say");
    assert_route("grpc", "http", "echo.", "/echo.Echo/Say");
    /* wildcard: any subdomain, not the bare domain nor a lookalike */
    assert_route("grpc", "http", "a.echo.svc", "/echo.Echo/Say");
    assert_route("grpc", "http", "a.b.ECHO.svc:80", "/echo.Echo/Say");
    assert_route(NULL, "http", "echo.svc", "/echo.Echo/Say");
    assert_route(NULL, "http", "xecho.svc", "/echo.Echo/Say");
    assert_route(NULL, "http", ".echo.svc", "/echo.Echo/Say");
    assert_route(NULL, "http", "other", "/echo.Echo/Say");
    assert_route(NULL, "http", "", "/echo.Echo/Say");
    /* entries with a port: explicit or the scheme's default */
    assert_route("port8080", "http", "api:8080", "/");
    assert_route(NULL, "http", "api", "/");
    assert_route(NULL, "http", "api:80", "/");
    assert_route(NULL, "http", "api:808", "/");
    assert_route("port80", "http", "web", "/");
    assert_route("port80", "http", "web:80", "/");
    assert_route(NULL, "https", "web", "/");
    assert_route("port80", "https", "secure", "/");
    assert_route(NULL, "http", "secure", "/");
    assert_route(NULL, "http", "web:8o", "/");
    assert_route("port80", "http", "[::1]", "/");
    assert_route("port80", "http", "[::1]:80", "/");
    assert_route(NULL, "http", "[::1]:81", "/");
    assert_route("v6", "http", "[::2]:1234", "/");
    assert_route("wild-port", "http", "x.svc:9000", "/");
    assert_route(NULL, "http", "x.svc:9001", "/");
    assert_route(NULL, "http", "x.svc", "/");
    /* "*" matches even an empty authority */
    assert_route("catchall-host", "http", "", "/any/thing");
    assert_route("catchall-host", "http", "whatever:1", "/any");
    assert_route("root", "http", "echo.local", "/x");
}

static void
test_path(void **state)
{
    assert_route("exact", "http", "x", "/health");
    assert_route("exact", "http", "x", "/health?verbose=1");
    assert_route(NULL, "http", "x", "/health/");
    assert_route(NULL, "http", "x", "/Health");
    assert_route(NULL, "http", "x", "/healt");
    assert_route("grpc", "http", "echo", "/echo.Echo/");
    assert_route("root", "http", "echo.local", "/echo.Echo");
    /* the query is not part of the path */
    assert_route("root", "http", "echo.local", "/?/echo.Echo/");
    assert_route(NULL, "http", "echo", "/echo.Echo?/echo.Echo/");
    assert_route(NULL, "http", "echo.local", "*");
    assert_route(NULL, "http", "echo.local", "");
}

static void
test_empty_listener_and_quick(void **state)
{
    rm_config_error_t err;
    rm_config_quick_t q = {.listen = "127.0.0.1:15001", .upstream = "127.0.0.1:2"};
    rm_config_t *c = rm_config_from_quick(&q, &err);
    assert_non_null(c);
    rm_req_head_t req;
    memset(&req, 0, sizeof(req));
    req.path = iov("/anything?x");
    assert_ptr_equal(rm_router_match(c->listeners, &req), c->listeners[0].routes);
    assert_true(rm_router_route_matches(c->listeners[0].routes, &req));
    rm_config_listener_t empty = {0};
    assert_null(rm_router_match(&empty, &req));
    rm_config_unref(c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_headers),
        cmocka_unit_test(test_authority),
        cmocka_unit_test(test_path),
        cmocka_unit_test(test_empty_listener_and_quick),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
