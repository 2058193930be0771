/*
 * rm_router_match: routes are built from YAML (as in production), requests by hand.
 */
#include <arpa/inet.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>
#include <cmocka.h>
#include "config/config.h"
#include "config/regex.h"
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
                           "  - name: regex\n"
                           "    address: 127.0.0.1:15002\n"
                           "    routes:\n"
                           "      - name: versioned\n"
                           "        match: {path: {regex: \"^/v[0-9]+/.*\"}}\n"
                           "        cluster: c\n"
                           "      - name: unanchored-api\n" /* anchored anyway: whole path only */
                           "        match: {path: {regex: \"/api|/API\"}}\n"
                           "        cluster: c\n"
                           "      - name: env\n"
                           "        match: {headers: [{name: X-Env, value: \"prod|staging\", regex: true}]}\n"
                           "        cluster: c\n"
                           "      - name: evil-path\n"
                           "        match: {path: {regex: \"/(a+)+\"}}\n"
                           "        cluster: c\n"
                           "      - name: evil-header\n"
                           "        match: {headers: [{name: x-evil, value: \"^(a+)+$\", regex: true}]}\n"
                           "        cluster: c\n"
                           "      - name: both\n"
                           "        match:\n"
                           "          path: {regex: \"/items/[0-9a-f]{8}\"}\n"
                           "          headers: [{name: x-id, value: \"[0-9]+\", regex: true}, {name: x-plain, value: \"a.*\"}]\n"
                           "        cluster: c\n"
                           "clusters: [{name: c, endpoints: \"127.0.0.1:1\"}]\n";

/* which listener match() uses: 0 for the literal routes, 1 for the regex routes */
static __thread size_t listener_index;

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
    /* per thread: the concurrency test matches from two threads */
    static __thread rm_header_t entries[4];
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
    const rm_config_route_t *r = rm_router_match(config->listeners + listener_index, &req);
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

/* Transparent listeners (docs/transparent.md): the original destination picks a Service listener. */
static void
test_service_listeners(void **state)
{
    static const char y[] =
        "listeners:\n"
        "  - name: out\n"
        "    address: 127.0.0.1:15001\n"
        "    direction: outbound\n"
        "    routes:\n"
        "      - {name: web-v2, match: {authority: web, path: {prefix: /v2/}}, cluster: web2}\n"
        "      - {name: db-any, match: {authority: db}, cluster: db}\n"
        "      - {name: web, match: {authority: web}, cluster: web}\n"
        "  - name: in\n"
        "    address: 0.0.0.0:15006\n"
        "    direction: inbound\n"
        "clusters:\n"
        "  - {name: web, endpoints: [\"10.0.0.5:8080\"], addresses: [\"10.96.0.10:80\"]}\n"
        "  - {name: web2, endpoints: [\"10.0.0.6:8080\"]}\n"
        "  - {name: db, protocol: tcp, endpoints: [\"10.0.0.5:3306\", \"db.local:3306\"], addresses: [\"10.96.0.12:3306\"]}\n";
    rm_config_error_t err;
    rm_config_t *c = rm_config_load_string(y, sizeof(y) - 1, "t.yaml", &err);
    if (c == NULL) {
        char buf[1024];
        fail_msg("%s", rm_config_error_format(&err, buf, sizeof(buf)));
    }
    /* a second validation (the command line's overrides) rebuilds the same, without duplicates */
    assert_int_equal(rm_config_validate(c, &err), 0);
    assert_int_equal(c->listeners[0].num_opaque_ports, rm_config_num_default_opaque_ports);
    assert_true(rm_config_port_is_opaque(&c->listeners[0], 3306));
    assert_false(rm_config_port_is_opaque(&c->listeners[0], 80));
    /* outbound: one per virtual address; inbound: one per IP endpoint, each with its inbound cluster */
    assert_int_equal(c->num_service_listeners, 2 + 3); /* db.local is not an IP endpoint */
    assert_int_equal(c->num_clusters, 3 + 3);
    struct sockaddr_in vip = {.sin_family = AF_INET, .sin_port = htons(80)};
    inet_pton(AF_INET, "10.96.0.10", &vip.sin_addr);
    size_t i = rm_config_find_service_listener(c, 0, (struct sockaddr *)&vip);
    assert_int_not_equal(i, SIZE_MAX);
    const rm_config_listener_t *sl = &c->service_listeners[i];
    assert_int_equal(sl->direction, RM_DIRECTION_OUTBOUND);
    assert_string_equal(sl->name, "out");
    assert_int_equal(rm_config_find_service_listener(c, 1, (struct sockaddr *)&vip), SIZE_MAX); /* not inbound's */
    vip.sin_port = htons(81);
    assert_int_equal(rm_config_find_service_listener(c, 0, (struct sockaddr *)&vip), SIZE_MAX);
    /* the Service's routes, authority aside (the address chose it); another Service's never; else the Service */
    rm_req_head_t req;
    memset(&req, 0, sizeof(req));
    req.method = iov("GET");
    req.authority = iov("10.96.0.10");
    req.path = iov("/v2/x");
    /* from a bootstrap file a route belongs to the Service it sends to: web-v2 is web2's */
    assert_string_equal(rm_router_match(sl, &req)->name, "web");
    /* the control-plane translation marks the parent Service (the HTTPRoute's parentRef) */
    c->listeners[0].routes[0].has_service = 1;
    c->listeners[0].routes[0].service_cluster = 0;
    assert_string_equal(rm_router_match(sl, &req)->name, "web-v2");
    req.path = iov("/other");
    assert_string_equal(rm_router_match(sl, &req)->name, "web");
    rm_config_listener_t plain = c->listeners[0];
    plain.fallback_route = NULL;
    assert_null(rm_router_match(&plain, &req)); /* the listener itself still routes by authority */
    /* inbound: the endpoint 10.0.0.5:8080 of web is served here, through inbound/web/8080 */
    struct sockaddr_in ep = {.sin_family = AF_INET, .sin_port = htons(8080)};
    inet_pton(AF_INET, "10.0.0.5", &ep.sin_addr);
    i = rm_config_find_service_listener(c, 1, (struct sockaddr *)&ep);
    assert_int_not_equal(i, SIZE_MAX);
    sl = &c->service_listeners[i];
    const rm_config_cluster_t *ic = &c->clusters[sl->service_cluster];
    assert_true(ic->inbound);
    assert_string_equal(ic->name, "inbound/web/8080");
    assert_string_equal(ic->endpoints[0].host, "10.0.0.5");
    assert_ptr_equal(rm_router_match(sl, &req), sl->fallback_route);
    assert_int_equal(sl->fallback_route->cluster_index, sl->service_cluster);
    rm_config_unref(c);
}

static void
test_regex_path(void **state)
{
    listener_index = 1;
    assert_route("versioned", "http", "x", "/v1/");
    assert_route("versioned", "http", "x", "/v12/items/3");
    assert_route("versioned", "http", "x", "/v2/a?q=/x"); /* the query is not matched */
    assert_route(NULL, "http", "x", "/v/x");
    assert_route(NULL, "http", "x", "/v1");
    assert_route(NULL, "http", "x", "/x/v1/");
    /* a pattern without ^ and $ is anchored at both ends all the same */
    assert_route("unanchored-api", "http", "x", "/api");
    assert_route("unanchored-api", "http", "x", "/API");
    assert_route("unanchored-api", "http", "x", "/api?x=1");
    assert_route(NULL, "http", "x", "/api/x");
    assert_route(NULL, "http", "x", "/x/api");
    assert_route(NULL, "http", "x", "/apix");
    /* path and header expressions together, and a literal value next to them ("a.*" is not a pattern there) */
    assert_route("both", "http", "x", "/items/0123abcd", "x-id: 42", "x-plain: a.*");
    assert_route(NULL, "http", "x", "/items/0123abcd", "x-id: 42", "x-plain: abc");
    assert_route(NULL, "http", "x", "/items/0123abcd", "x-id: 4a", "x-plain: a.*");
    assert_route(NULL, "http", "x", "/items/0123abcde", "x-id: 42", "x-plain: a.*");
    assert_route(NULL, "http", "x", "", "x-id: 1", "x-plain: a.*");
    listener_index = 0;
}

static void
test_regex_header(void **state)
{
    listener_index = 1;
    assert_route("env", "http", "x", "/", "x-env: prod");
    assert_route("env", "http", "x", "/", "X-ENV: staging");
    assert_route(NULL, "http", "x", "/", "x-env: production"); /* whole value */
    assert_route(NULL, "http", "x", "/", "x-env: Prod");
    assert_route(NULL, "http", "x", "/", "x-env: ");
    assert_route(NULL, "http", "x", "/");
    /* any field of the name may match */
    assert_route("env", "http", "x", "/", "x-env: dev", "x-env: staging");
    assert_route(NULL, "http", "x", "/", "x-env: dev", "x-other: prod");
    listener_index = 0;
}

static double
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Catastrophic backtracking hits the match limit: no match, quickly, and counted. */
static void
test_regex_catastrophic(void **state)
{
    char value[64], path[72], header[80];
    memset(value, 'a', 30);
    strcpy(value + 30, "!");
    snprintf(path, sizeof(path), "/%s", value);
    snprintf(header, sizeof(header), "x-evil: %s", value);

    listener_index = 1;
    uint64_t hits = rm_regex_limit_hits();
    double start = now_ms();
    assert_route(NULL, "http", "x", path);
    assert_route(NULL, "http", "x", "/", header);
    double took = now_ms() - start;
    assert_true(rm_regex_limit_hits() >= hits + 2);
    /* 2^30 steps unbounded; a few hundred microseconds with the limit (generous bound for sanitizer builds) */
    if (took > 500)
        fail_msg("catastrophic patterns took %.1f ms", took);
    print_message("two catastrophic matches: %.3f ms\n", took);
    /* the same expressions still match what they should */
    assert_route("evil-path", "http", "x", "/aaaa");
    assert_route("evil-header", "http", "x", "/", "x-evil: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    listener_index = 0;
}

static void
test_regex_api(void **state)
{
    char err[300];
    rm_regex_t *re = rm_regex_compile("a(b|c)*d", err, sizeof(err));
    assert_non_null(re);
    assert_true(rm_regex_match(re, "abcbd", 5));
    assert_true(rm_regex_match(re, "abcbdX", 5)); /* the length counts, not a NUL */
    assert_false(rm_regex_match(re, "xabcbd", 6));
    assert_false(rm_regex_match(re, NULL, 0));
    rm_regex_destroy(re);
    re = rm_regex_compile("(x)?", err, sizeof(err));
    assert_true(rm_regex_match(re, NULL, 0)); /* empty subject */
    assert_true(rm_regex_match(re, "x", 1));
    rm_regex_destroy(re);
    rm_regex_destroy(NULL);
    /* bytes, not UTF-8: invalid sequences are plain bytes, and (*UTF) is refused */
    re = rm_regex_compile("a.b", err, sizeof(err));
    assert_true(rm_regex_match(re,
                               "a\xff"
                               "b",
                               3));
    rm_regex_destroy(re);
    assert_null(rm_regex_compile("(*UTF)a", err, sizeof(err)));
    assert_non_null(strstr(err, "at offset"));
    assert_null(rm_regex_compile("a)", err, sizeof(err)));
    assert_string_equal(err, "unmatched closing parenthesis at offset 1");
    assert_int_equal(rm_regex_check("a(", err, sizeof(err)), -1);
    assert_string_equal(err, "missing closing parenthesis at offset 2");
    assert_int_equal(rm_regex_check("a", err, sizeof(err)), 0);
    /* a pattern cannot raise the limits (*LIMIT_MATCH only lowers them) */
    re = rm_regex_compile("(*LIMIT_MATCH=100000000)(a+)+b", err, sizeof(err));
    assert_non_null(re);
    char s[40];
    memset(s, 'a', 35);
    assert_false(rm_regex_match(re, s, 35));
    rm_regex_destroy(re);
    /* without JIT the interpreter is bounded the same way */
    re = rm_regex_compile("(*NO_JIT)(a+)+b", err, sizeof(err));
    assert_false(rm_regex_match(re, s, 35));
    rm_regex_destroy(re);

    /* a regex condition on a route whose snapshot was never validated (no compiled form) matches nothing */
    rm_config_header_match_t hm = {.name = "x-a", .value = ".*", .is_regex = 1};
    rm_config_route_t route = {.path_match = RM_PATH_MATCH_REGEX, .path = ".*"};
    rm_req_head_t req;
    memset(&req, 0, sizeof(req));
    req.path = iov("/x");
    assert_false(rm_router_route_matches(&route, &req));
    route.path_match = RM_PATH_MATCH_ANY;
    route.headers = &hm;
    route.num_headers = 1;
    rm_header_t h = {.name = iov("x-a"), .value = iov("1")};
    req.headers.entries = &h;
    req.headers.size = req.headers.capacity = 1;
    assert_false(rm_router_route_matches(&route, &req));
}

static void *
match_loop(void *arg)
{
    long failures = 0;
    char evil[64];
    memset(evil, 0, sizeof(evil));
    snprintf(evil, sizeof(evil), "x-evil: %.30s!", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
    listener_index = 1;
    for (int i = 0; i != 2000; ++i) {
        const char *got;
        failures += (got = match("http", "x", "/v7/x", NULL)) == NULL || strcmp(got, "versioned") != 0;
        failures += (got = match("http", "x", "/", "x-env: staging", NULL)) == NULL || strcmp(got, "env") != 0;
        failures += match("http", "x", "/v7", NULL) != NULL;
        failures += match("http", "x", "/", "x-env: stage", NULL) != NULL;
        if (i % 100 == 0)
            failures += match("http", "x", "/", evil, NULL) != NULL;
    }
    return (void *)failures;
}

/* Workers are threads: compiled expressions are shared, scratch space is per thread (freed when the thread exits). */
static void
test_regex_threads(void **state)
{
    pthread_t threads[2];
    for (int i = 0; i != 2; ++i)
        assert_int_equal(pthread_create(threads + i, NULL, match_loop, NULL), 0);
    for (int i = 0; i != 2; ++i) {
        void *failures;
        assert_int_equal(pthread_join(threads[i], &failures), 0);
        assert_int_equal((long)failures, 0);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_headers),
        cmocka_unit_test(test_authority),
        cmocka_unit_test(test_path),
        cmocka_unit_test(test_empty_listener_and_quick),
        cmocka_unit_test(test_service_listeners),
        cmocka_unit_test(test_regex_path),
        cmocka_unit_test(test_regex_header),
        cmocka_unit_test(test_regex_catastrophic),
        cmocka_unit_test(test_regex_api),
        cmocka_unit_test(test_regex_threads),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
