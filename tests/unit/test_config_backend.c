/*
 * Backend and limit policy in the configuration: endpoint weights, balancers, circuit breakers,
 * outlier detection, health checks, session persistence and rate limits. Each
 * bootstrap key parses, each bad value gives an error on its line, rm_config_validate applies the
 * same rules and defaults to snapshots built by hand, and /config_dump renders all of it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <cmocka.h>
#include "config/config.h"

static rm_config_t *
load(const char *yaml, rm_config_error_t *err)
{
    return rm_config_load_string(yaml, strlen(yaml), "test.yaml", err);
}

static const char good_yaml[] =
    "listeners:\n"                   /* 1 */
    "  - name: out\n"                /* 2 */
    "    address: 127.0.0.1:15001\n" /* 3 */
    "    routes:\n"                  /* 4 */
    "      - name: r\n"              /* 5 */
    "        cluster: c\n"           /* 6 */
    "        session_persistence: {type: header, name: X-User}\n"
    "        rate_limit:\n" /* 8 */
    "          name: api-limits\n"
    "          total: {requests_per_second: 1000, burst: 200}\n"
    "          per_client: {requests_per_second: 20}\n"
    "          client_key: {type: header, header: X-Client-Id}\n"
    "          overrides: [{requests_per_second: 200, burst: 300, clients: [\"10.0.0.7\", \"spiffe://a/b\"]},"
    " {requests_per_second: 5, clients: solo}]\n"
    "          max_clients: 500\n"
    "      - cluster: plain\n" /* 15 */
    "        session_persistence: {type: cookie, name: Sess}\n"
    "        rate_limit: {per_client: {requests_per_second: 3, burst: 0}}\n"
    "  - name: quiet\n" /* 18 */
    "    address: 127.0.0.1:15002\n"
    "    routes: [{cluster: plain}]\n"
    "  - name: via-cluster\n" /* 21 */
    "    address: 127.0.0.1:15003\n"
    "    routes: [{backends: [{cluster: plain}, {cluster: h2}]}]\n"
    "clusters:\n"
    "  - name: c\n" /* 25 */
    "    endpoints: [\"127.0.0.1:8080\", {address: \"127.0.0.1:8081\", weight: 3}]\n"
    "    load_balancer: {type: ring_hash, ring_min_size: 4096}\n"
    "    circuit_breakers: {max_connections: 10, max_pending_requests: 0, max_requests: 30, max_retries: 4}\n"
    "    outlier_detection: {consecutive_5xx: 0, consecutive_gateway_errors: 7, interval_ms: 500, base_ejection_ms: 1000,"
    " max_ejection_ms: 1000, max_ejection_percent: 100}\n"
    "  - name: plain\n" /* 30 */
    "    endpoints: 127.0.0.1:8090\n"
    "  - name: h2\n"
    "    protocol: h2\n"
    "    endpoints: [{address: \"[::1]:8091\"}]\n"
    "    outlier_detection: {}\n"
    "    rate_limit: {total: {requests_per_second: 50}}\n";

static void
test_parse(void **state)
{
    rm_config_error_t err;
    char msg[1024];
    rm_config_t *c = load(good_yaml, &err);
    if (c == NULL)
        fail_msg("%s", rm_config_error_format(&err, msg, sizeof(msg)));

    rm_config_route_t *r = c->listeners[0].routes;
    assert_int_equal(r->session_persistence, RM_SESSION_HEADER);
    assert_string_equal(r->session_name, "x-user"); /* header names lower-cased */
    rm_config_rate_limit_t *rl = r->rate_limit;
    assert_non_null(rl);
    assert_string_equal(rl->name, "api-limits");
    assert_int_equal(rl->total_rps, 1000);
    assert_int_equal(rl->total_burst, 200);
    assert_int_equal(rl->per_client_rps, 20);
    assert_int_equal(rl->per_client_burst, 20); /* default: the rate */
    assert_int_equal(rl->client_key, RM_CLIENT_KEY_HEADER);
    assert_string_equal(rl->client_header, "x-client-id");
    assert_int_equal(rl->num_overrides, 2);
    assert_int_equal(rl->overrides[0].requests_per_second, 200);
    assert_int_equal(rl->overrides[0].burst, 300);
    assert_int_equal(rl->overrides[0].num_clients, 2);
    assert_string_equal(rl->overrides[0].clients[1], "spiffe://a/b");
    assert_int_equal(rl->overrides[1].burst, 5);
    assert_int_equal(rl->overrides[1].num_clients, 1);
    assert_string_equal(rl->overrides[1].clients[0], "solo");
    assert_int_equal(rl->max_clients, 500);

    r = c->listeners[0].routes + 1;
    assert_int_equal(r->session_persistence, RM_SESSION_COOKIE);
    assert_string_equal(r->session_name, "Sess"); /* cookie names are case-sensitive */
    rl = r->rate_limit;
    assert_string_equal(rl->name, "route/out/#2");
    assert_int_equal(rl->total_rps, 0);
    assert_int_equal(rl->per_client_rps, 3);
    assert_int_equal(rl->per_client_burst, 3); /* 0 is "the rate" too */
    assert_int_equal(rl->client_key, RM_CLIENT_KEY_IDENTITY);
    assert_null(rl->client_header);
    assert_int_equal(rl->max_clients, 10000);

    /* the filter bit: set by a route's limit; a cluster's is applied by the router, whatever the listener */
    assert_true((c->listeners[0].filters & RM_LISTENER_USES_RATE_LIMIT) != 0);
    assert_true((c->listeners[1].filters & RM_LISTENER_USES_RATE_LIMIT) == 0);
    assert_true((c->listeners[2].filters & RM_LISTENER_USES_RATE_LIMIT) == 0);
    assert_int_equal(RM_LISTENER_USES_ALL, 0x3f);

    rm_config_cluster_t *cl = c->clusters;
    assert_int_equal(cl->endpoints[0].weight, 1);
    assert_int_equal(cl->endpoints[1].weight, 3);
    assert_int_equal(cl->endpoints[1].addr.line, 26);
    assert_int_equal(cl->lb, RM_LB_RING_HASH);
    assert_int_equal(cl->ring_min_size, 4096);
    assert_int_equal(cl->breakers.max_connections, 10);
    assert_int_equal(cl->breakers.max_pending_requests, 0);
    assert_int_equal(cl->breakers.max_requests, 30);
    assert_int_equal(cl->breakers.max_retries, 4);
    assert_true(cl->outlier.enabled);
    assert_int_equal(cl->outlier.consecutive_5xx, 0);
    assert_int_equal(cl->outlier.consecutive_gateway_errors, 7);
    assert_int_equal(cl->outlier.interval_ms, 500);
    assert_int_equal(cl->outlier.base_ejection_ms, 1000);
    assert_int_equal(cl->outlier.max_ejection_ms, 1000);
    assert_int_equal(cl->outlier.max_ejection_percent, 100);
    assert_null(cl->rate_limit);

    cl = c->clusters + 1; /* every default */
    assert_int_equal(cl->endpoints[0].weight, 1);
    assert_int_equal(cl->lb, RM_LB_DEFAULT);
    assert_int_equal(cl->ring_min_size, 1024);
    assert_int_equal(cl->breakers.max_connections, 1024);
    assert_int_equal(cl->breakers.max_pending_requests, 1024);
    assert_int_equal(cl->breakers.max_requests, 4096);
    assert_int_equal(cl->breakers.max_retries, 64);
    assert_false(cl->outlier.enabled);
    assert_false(cl->health_check.enabled);

    cl = c->clusters + 2;
    assert_int_equal(cl->endpoints[0].weight, 1);
    assert_true(cl->outlier.enabled); /* `{}`: on, with the defaults */
    assert_int_equal(cl->outlier.consecutive_5xx, 5);
    assert_int_equal(cl->outlier.consecutive_gateway_errors, 5);
    assert_int_equal(cl->outlier.interval_ms, 10000);
    assert_int_equal(cl->outlier.base_ejection_ms, 30000);
    assert_int_equal(cl->outlier.max_ejection_ms, 300000);
    assert_int_equal(cl->outlier.max_ejection_percent, 50);
    assert_string_equal(cl->rate_limit->name, "cluster/h2");
    assert_int_equal(cl->rate_limit->total_burst, 50);

    /* validating again keeps everything */
    assert_int_equal(rm_config_validate(c, &err), 0);
    assert_string_equal(c->listeners[0].routes[1].rate_limit->name, "route/out/#2");
    rm_config_unref(c);
}

static void
test_dump(void **state)
{
    rm_config_error_t err;
    rm_config_t *c = load(good_yaml, &err);
    assert_non_null(c);
    char *json = rm_config_to_json(c);
    static const char *const want[] = {
        "\"endpoints\":[\"127.0.0.1:8080\",{\"address\":\"127.0.0.1:8081\",\"weight\":3}]",
        "\"load_balancer\":{\"type\":\"ring_hash\",\"ring_min_size\":4096}",
        "\"circuit_breakers\":{\"max_connections\":10,\"max_pending_requests\":0,\"max_requests\":30,\"max_retries\":4}",
        "\"outlier_detection\":{\"consecutive_5xx\":0,\"consecutive_gateway_errors\":7,\"interval_ms\":500,\"base_ejection_ms\":"
        "1000,\"max_ejection_ms\":1000,\"max_ejection_percent\":100}",
        /* an unset balancer is shown as the one in force */
        "\"name\":\"plain\",\"protocol\":\"http1\"",
        "\"load_balancer\":{\"type\":\"round_robin\",\"ring_min_size\":null}",
        "\"load_balancer\":{\"type\":\"peak_ewma\",\"ring_min_size\":null}",
        "\"outlier_detection\":null",
        "\"health_check\":null",
        "\"session_persistence\":{\"type\":\"header\",\"name\":\"x-user\"}",
        "\"session_persistence\":{\"type\":\"cookie\",\"name\":\"Sess\"}",
        "\"session_persistence\":null",
        "\"rate_limit\":{\"name\":\"api-limits\",\"total\":{\"requests_per_second\":1000,\"burst\":200},\"per_client\":{"
        "\"requests_per_second\":20,\"burst\":20},\"client_key\":{\"type\":\"header\",\"header\":\"x-client-id\"},\"overrides\":[{"
        "\"requests_per_second\":200,\"burst\":300,\"clients\":[\"10.0.0.7\",\"spiffe://a/b\"]},{\"requests_per_second\":5,"
        "\"burst\":5,\"clients\":[\"solo\"]}],\"max_clients\":500}",
        "\"rate_limit\":{\"name\":\"route/out/#2\",\"total\":null,\"per_client\":{\"requests_per_second\":3,\"burst\":3},"
        "\"client_key\":{\"type\":\"identity\",\"header\":null},\"overrides\":[],\"max_clients\":10000}",
        "\"rate_limit\":{\"name\":\"cluster/h2\",\"total\":{\"requests_per_second\":50,\"burst\":50}",
        "\"endpoints\":[\"[::1]:8091\"]",
    };
    for (size_t i = 0; i != sizeof(want) / sizeof(want[0]); ++i)
        if (strstr(json, want[i]) == NULL)
            fail_msg("missing %s in\n%s", want[i], json);
    free(json);
    rm_config_unref(c);
}

typedef struct st_bad_case_t {
    const char *yaml;
    unsigned line;
    const char *message; /* substring */
} bad_case_t;

/* a route 'r' on line 4 whose further keys follow from line 6 on, 8 columns in */
#define R "listeners:\n  - address: 127.0.0.1:15001\n    routes:\n      - name: r\n        cluster: c\n"
#define C "clusters: [{name: c, endpoints: [\"127.0.0.1:1\"]}]\n"
#define L "listeners: [{address: \"127.0.0.1:15001\", routes: [{cluster: c}]}]\n"
/* a cluster 'c' on line 3 whose further keys follow from line 5 on, 4 columns in */
#define CL L "clusters:\n  - name: c\n    endpoints: [\"127.0.0.1:1\"]\n"

static const bad_case_t bad_cases[] = {
    /* endpoint weights */
    {L "clusters:\n  - name: c\n    endpoints:\n      - {address: \"127.0.0.1:1\", weight: 0}\n", 5,
     "cluster 'c': endpoints[].weight must be 1-1000000, got 0"},
    {L "clusters:\n  - name: c\n    endpoints:\n      - 127.0.0.1:2\n      - {address: \"127.0.0.1:1\", weight: 1000001}\n", 6,
     "endpoints[].weight must be 1-1000000, got 1000001"},
    {L "clusters:\n  - name: c\n    endpoints:\n      - {weight: 2}\n", 5, "'endpoints[].address' is required"},
    {L "clusters:\n  - name: c\n    endpoints:\n      - {address: \"127.0.0.1:1\", wieght: 2}\n", 5,
     "unknown key 'wieght' in endpoints[] (did you mean 'weight'?)"},
    {L "clusters:\n  - name: c\n    endpoints:\n      - {address: \"127.0.0.1:99999\"}\n", 5,
     "endpoint '127.0.0.1:99999': port must be 1-65535"},
    {L "clusters:\n  - name: c\n    endpoints:\n      - 127.0.0.1:1\n      - {address: \"127.0.0.1:1\", weight: 2}\n", 6,
     "endpoint '127.0.0.1:1' is listed twice"},
    /* load balancer */
    {CL "    load_balancer:\n      type: ring_hsh\n", 6,
     "load_balancer.type 'ring_hsh' must be round_robin, least_request, peak_ewma or ring_hash (did you mean 'ring_hash'?)"},
    {CL "    load_balancer: {type: default}\n", 5, "load_balancer.type 'default' must be round_robin"},
    {CL "    load_balancer: {ring_min_size: 10}\n", 5, "'load_balancer.type' is required"},
    {CL "    load_balancer:\n      type: round_robin\n      ring_min_size: 10\n", 7,
     "load_balancer.ring_min_size is only used with type ring_hash"},
    {CL "    load_balancer:\n      type: ring_hash\n      ring_min_size: 0\n", 7,
     "load_balancer.ring_min_size must be 1-8388608, got 0"},
    {CL "    load_balancer: {type: ring_hash, ring_min_size: 8388609}\n", 5, "ring_min_size must be 1-8388608, got 8388609"},
    {CL "    load_balancer: {type: peak_ewma, ring_min_siz: 1}\n", 5,
     "unknown key 'ring_min_siz' in load_balancer (did you mean 'ring_min_size'?)"},
    {CL "    load_balancr: {type: peak_ewma}\n", 5, "unknown key 'load_balancr' in cluster (did you mean 'load_balancer'?)"},
    /* circuit breakers */
    {CL "    circuit_breakers:\n      max_requests: 1000001\n", 6,
     "cluster 'c': circuit_breakers.max_requests must be 0-1000000, got 1000001"},
    {CL "    circuit_breakers: {max_connection: 1}\n", 5,
     "unknown key 'max_connection' in circuit_breakers (did you mean 'max_connections'?)"},
    {CL "    circuit_breakers: {max_retries: -1}\n", 5, "circuit_breakers.max_retries must be a whole number 0-1000000"},
    /* outlier detection */
    {CL "    outlier_detection:\n      max_ejection_percent: 101\n", 6,
     "outlier_detection.max_ejection_percent must be 0-100, got 101"},
    {CL "    outlier_detection:\n      base_ejection_ms: 5000\n      max_ejection_ms: 4000\n", 7,
     "outlier_detection.max_ejection_ms (4000) must not be below base_ejection_ms (5000)"},
    {CL "    outlier_detection:\n      base_ejection_ms: 400000\n", 6,
     "outlier_detection.max_ejection_ms (300000) must not be below base_ejection_ms (400000)"},
    {CL "    outlier_detection:\n      consecutive_5xx: 0\n      consecutive_gateway_errors: 0\n", 6,
     "outlier_detection needs consecutive_5xx or consecutive_gateway_errors above 0"},
    {CL "    outlier_detection: {interval_ms: 0}\n", 5, "outlier_detection.interval_ms must be 1-86400000, got 0"},
    {CL "    outlier_detection: {consecutive_5xxx: 1}\n", 5, "did you mean 'consecutive_5xx'?"},
    /* health checks */
    {CL "    health_check:\n      http: {path: healthz}\n", 6, "cluster 'c': health_check.http.path 'healthz' must start with '/'"},
    {CL "    health_check:\n      http: {path: \"/a b\"}\n", 6, "health_check.http.path must not contain spaces"},
    {CL "    health_check:\n      http: {path: /h}\n      timeout_ms: 5000\n", 7,
     "health_check.timeout_ms (5000) must be below interval_ms (5000)"},
    {CL "    health_check:\n      http: {path: /h}\n      interval_ms: 99\n", 7,
     "health_check.interval_ms must be 100-86400000, got 99"},
    {CL "    health_check:\n      http: {path: /h}\n      unhealthy_threshold: 0\n", 7,
     "health_check.unhealthy_threshold must be 1-1000000, got 0"},
    {CL "    health_check:\n      grpc: {service: x}\n", 6, "health_check.grpc needs an h2 or auto cluster"},
    {CL "    health_check: {interval_ms: 1000}\n", 5, "health_check needs exactly one of http"},
    {CL "    health_check: {http: {path: /h}, grpc: {}}\n", 5, "health_check needs exactly one of http"},
    {CL "    health_check: {http: {path: /h}, timeout: 5}\n", 5, "unknown key 'timeout' in health_check"},
    /* cluster rate limit */
    {CL "    rate_limit:\n      name: \"a b\"\n      total: {requests_per_second: 1}\n", 6,
     "cluster 'c': rate_limit.name 'a b' may only contain letters, digits and . _ - / (1-128)"},
    /* session persistence */
    {R "        session_persistence:\n          type: query\n          name: x\n", 7,
     "session_persistence.type 'query' must be header or cookie"},
    {R "        session_persistence: {type: header}\n", 6, "'session_persistence.name' is required"},
    {R "        session_persistence: {name: x}\n", 6, "'session_persistence.type' is required"},
    {R "        session_persistence:\n          type: header\n          name: \"x user\"\n", 8,
     "session_persistence.name 'x user' is not a valid header name"},
    {R "        session_persistence:\n          type: cookie\n          name: \"a=b\"\n", 8,
     "session_persistence.name 'a=b' is not a valid cookie name (an RFC 6265 token)"},
    {R "        session_persistence: {type: header, name: x, ttl: 5}\n", 6, "unknown key 'ttl' in session_persistence"},
    {"listeners:\n  - address: 127.0.0.1:15001\n    routes:\n      - name: r\n        redirect: {hostname: x.example}\n"
     "        session_persistence: {type: header, name: x}\n" C,
     6, "'session_persistence' cannot be combined with 'redirect'"},
    /* route rate limit */
    {R "        rate_limit: {name: x}\n", 6, "rate_limit needs 'total' or 'per_client'"},
    {R "        rate_limit:\n          total: {requests_per_second: 0}\n", 7,
     "rate_limit.total.requests_per_second must be 1-10000000, got 0"},
    {R "        rate_limit:\n          total: {requests_per_second: 10000001}\n", 7,
     "rate_limit.total.requests_per_second must be 1-10000000, got 10000001"},
    {R "        rate_limit:\n          total: {burst: 5}\n", 7, "'rate_limit.total.requests_per_second' is required"},
    {R "        rate_limit:\n          per_client: {requests_per_second: 1, burst: 10000001}\n", 7,
     "rate_limit.per_client.burst must be 0-10000000, got 10000001"},
    {R "        rate_limit:\n          total: {requests_per_second: 1, brust: 5}\n", 7,
     "unknown key 'brust' in rate_limit.total (did you mean 'burst'?)"},
    {R "        rate_limit:\n          name: \"#1\"\n          total: {requests_per_second: 1}\n", 7,
     "rate_limit.name '#1' may only contain letters, digits and . _ - / (1-128)"},
    {R "        rate_limit:\n          total: {requests_per_second: 1}\n          client_key: {type: identity}\n", 8,
     "rate_limit.client_key needs per_client"},
    {R "        rate_limit:\n          total: {requests_per_second: 1}\n          max_clients: 5\n", 8,
     "rate_limit.max_clients needs per_client"},
    {R "        rate_limit:\n          total: {requests_per_second: 1}\n          overrides: []\n", 8,
     "rate_limit.overrides needs per_client"},
    {R "        rate_limit:\n          per_client: {requests_per_second: 1}\n          client_key:\n            type: ip\n", 9,
     "rate_limit.client_key.type 'ip' must be identity, source_address or header"},
    {R "        rate_limit:\n          per_client: {requests_per_second: 1}\n          client_key: {type: header}\n", 8,
     "rate_limit.client_key: type header needs 'header'"},
    {R "        rate_limit:\n          per_client: {requests_per_second: 1}\n          client_key:\n            type: "
       "source_address\n"
       "            header: x\n",
     10, "rate_limit.client_key.header is only used with type header"},
    {R "        rate_limit:\n          per_client: {requests_per_second: 1}\n          client_key:\n            type: header\n"
       "            header: \"x:y\"\n",
     10, "rate_limit.client_key.header 'x:y' is not a valid header name"},
    {R "        rate_limit:\n          per_client: {requests_per_second: 1}\n          max_clients: 0\n", 8,
     "rate_limit.max_clients must be 1-10000000, got 0"},
    {R "        rate_limit:\n          per_client: {requests_per_second: 1}\n          max_clients: 10000001\n", 8,
     "rate_limit.max_clients must be 1-10000000, got 10000001"},
    {R "        rate_limit:\n          per_client: {requests_per_second: 1}\n          overrides:\n            - {clients: [a]}\n",
     9, "'rate_limit.overrides[].requests_per_second' is required"},
    {R "        rate_limit:\n          per_client: {requests_per_second: 1}\n          overrides:\n"
       "            - {requests_per_second: 0, clients: [a]}\n",
     9, "rate_limit.overrides[].requests_per_second must be 1-10000000, got 0"},
    {R "        rate_limit:\n          per_client: {requests_per_second: 1}\n          overrides:\n"
       "            - {requests_per_second: 1}\n",
     9, "'rate_limit.overrides[].clients' is required"},
    {R "        rate_limit:\n          per_client: {requests_per_second: 1}\n          overrides:\n"
       "            - requests_per_second: 1\n              clients: []\n",
     10, "rate_limit.overrides[].clients must list 1-1000 clients, got 0"},
    {R "        rate_limit:\n          per_client: {requests_per_second: 1}\n          overrides:\n"
       "            - requests_per_second: 1\n              clients: [a, \"\"]\n",
     10, "rate_limit.overrides[].clients[] must not be empty"},
    {R "        rate_limit:\n          per_client: {requests_per_second: 1}\n          overrides:\n"
       "            - {requests_per_second: 1, burst: 10000001, clients: [a]}\n",
     9, "rate_limit.overrides[].burst must be 0-10000000, got 10000001"},
    {R "        rate_limit:\n          per_client: {requests_per_second: 1}\n          overrides:\n"
       "            - {requests_per_second: 1, clients: [a], client: [b]}\n",
     9, "unknown key 'client' in rate_limit.overrides[] (did you mean 'clients'?)"},
    /* a client in two overrides: the validator, on the route's line */
    {R "        rate_limit:\n          per_client: {requests_per_second: 1}\n          overrides:\n"
       "            - {requests_per_second: 1, clients: [a, b]}\n            - {requests_per_second: 2, clients: [b]}\n" C,
     4, "rate_limit.overrides: client 'b' is listed twice"},
    {R "        rate_limt: {total: {requests_per_second: 1}}\n", 6,
     "unknown key 'rate_limt' in route (did you mean 'rate_limit'?)"},
};

static void
test_bad(void **state)
{
    size_t failures = 0;
    for (size_t i = 0; i != sizeof(bad_cases) / sizeof(bad_cases[0]); ++i) {
        const bad_case_t *bc = bad_cases + i;
        rm_config_error_t err;
        memset(&err, 0, sizeof(err));
        rm_config_t *c = load(bc->yaml, &err);
        if (c != NULL) {
            rm_config_unref(c);
            print_error("case %zu accepted:\n%s\n", i, bc->yaml);
            ++failures;
        } else if (strcmp(err.file, "test.yaml") != 0 || err.line != bc->line || strstr(err.message, bc->message) == NULL) {
            print_error("case %zu:\n%s\nwant line %u and \"%s\"\ngot %s:%u: %s\n\n", i, bc->yaml, bc->line, bc->message, err.file,
                        err.line, err.message);
            ++failures;
        }
    }
    assert_int_equal(failures, 0);
}

/* As the control-plane translation builds it: cluster "api" (line 20, one endpoint, weight left 0), one route (line 7). */
static rm_config_t *
by_hand(void)
{
    rm_config_t *c = rm_config_create_defaults();
    c->source = strdup("control plane");
    c->clusters = calloc(1, sizeof(*c->clusters));
    c->num_clusters = 1;
    rm_config_cluster_set_defaults(c->clusters);
    c->clusters[0].name = strdup("api");
    c->clusters[0].line = 20;
    c->clusters[0].endpoints = calloc(1, sizeof(rm_config_endpoint_t));
    c->clusters[0].endpoints[0].host = strdup("api.local");
    c->clusters[0].endpoints[0].port = 80;
    c->clusters[0].num_endpoints = 1;
    c->listeners = calloc(1, sizeof(*c->listeners));
    c->num_listeners = 1;
    c->listeners[0].name = strdup("in");
    struct sockaddr_in *sin = (void *)&c->listeners[0].addr.addr;
    sin->sin_family = AF_INET;
    sin->sin_port = htons(15001);
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->listeners[0].addr.addrlen = sizeof(*sin);
    c->listeners[0].routes = calloc(1, sizeof(rm_config_route_t));
    c->listeners[0].num_routes = 1;
    c->listeners[0].routes[0].cluster_name = strdup("api");
    c->listeners[0].routes[0].line = 7;
    return c;
}

static rm_config_rate_limit_t *
limit(rm_config_rate_limit_t **slot, uint32_t total_rps, uint32_t per_client_rps)
{
    rm_config_rate_limit_t *rl = *slot = calloc(1, sizeof(**slot));
    rl->total_rps = total_rps;
    rl->per_client_rps = per_client_rps;
    return rl;
}

static void
add_override(rm_config_rate_limit_t *rl, uint32_t rps, size_t n, ...)
{
    va_list ap;
    rl->overrides = realloc(rl->overrides, (rl->num_overrides + 1) * sizeof(*rl->overrides));
    rm_config_rate_override_t *o = rl->overrides + rl->num_overrides++;
    memset(o, 0, sizeof(*o));
    o->requests_per_second = rps;
    o->clients = calloc(n != 0 ? n : 1, sizeof(char *));
    o->num_clients = n;
    va_start(ap, n);
    for (size_t i = 0; i != n; ++i)
        o->clients[i] = strdup(va_arg(ap, const char *));
    va_end(ap);
}

static void
expect_invalid_at(rm_config_t *c, unsigned line, const char *want, int src_line)
{
    rm_config_error_t err;
    memset(&err, 0, sizeof(err));
    if (rm_config_validate(c, &err) == 0)
        fail_msg("line %d: accepted, want \"%s\"", src_line, want);
    if (strcmp(err.file, "control plane") != 0 || err.line != line || strstr(err.message, want) == NULL)
        fail_msg("line %d: want %u \"%s\", got %s:%u: %s", src_line, line, want, err.file, err.line, err.message);
    rm_config_unref(c);
}
#define expect_invalid(c, line, want) expect_invalid_at((c), (line), (want), __LINE__)

static void
expect_valid(rm_config_t *c)
{
    rm_config_error_t err;
    char msg[1024];
    if (rm_config_validate(c, &err) != 0)
        fail_msg("%s", rm_config_error_format(&err, msg, sizeof(msg)));
}

/* Every producer gets the same rules, defaults and normalization from rm_config_validate. */
static void
test_validate(void **state)
{
    rm_config_t *c;
    rm_config_route_t *r;
    rm_config_cluster_t *cl;
    rm_config_rate_limit_t *rl;

    /* defaults filled in: weight 0 -> 1, bursts 0 -> the rate, max_clients 0 -> 10000, names */
    c = by_hand();
    r = c->listeners[0].routes;
    cl = c->clusters;
    rl = limit(&r->rate_limit, 100, 10);
    rl->client_key = RM_CLIENT_KEY_HEADER;
    rl->client_header = strdup("X-Key");
    add_override(rl, 50, 2, "a", "b");
    limit(&cl->rate_limit, 7, 0);
    r->session_persistence = RM_SESSION_HEADER;
    r->session_name = strdup("X-User");
    expect_valid(c);
    assert_int_equal(cl->endpoints[0].weight, 1);
    assert_string_equal(rl->name, "route/in/#1");
    assert_int_equal(rl->total_burst, 100);
    assert_int_equal(rl->per_client_burst, 10);
    assert_int_equal(rl->overrides[0].burst, 50);
    assert_int_equal(rl->max_clients, 10000);
    assert_string_equal(rl->client_header, "x-key");
    assert_string_equal(cl->rate_limit->name, "cluster/api");
    assert_int_equal(cl->rate_limit->total_burst, 7);
    assert_string_equal(r->session_name, "x-user");
    assert_true((c->listeners[0].filters & RM_LISTENER_USES_RATE_LIMIT) != 0);
    rm_config_unref(c);
    /* a named route's default name; a cluster limit alone does not set the listener's bit */
    c = by_hand();
    c->listeners[0].routes[0].name = strdup("r1");
    limit(&c->clusters[0].rate_limit, 1, 0);
    expect_valid(c);
    assert_int_equal(c->listeners[0].filters & RM_LISTENER_USES_RATE_LIMIT, 0);
    rm_config_unref(c);
    c = by_hand();
    limit(&c->listeners[0].routes[0].rate_limit, 1, 0);
    c->listeners[0].routes[0].name = strdup("r1");
    expect_valid(c);
    assert_string_equal(c->listeners[0].routes[0].rate_limit->name, "route/in/r1");
    rm_config_unref(c);
    c = by_hand();
    expect_valid(c);
    assert_int_equal(c->listeners[0].filters & RM_LISTENER_USES_RATE_LIMIT, 0);
    rm_config_unref(c);

    /* cluster policy */
    c = by_hand();
    c->clusters[0].endpoints[0].weight = 1000001;
    expect_invalid(c, 20, "cluster 'api': endpoint 'api.local': weight must be 1-1000000, got 1000001");
    c = by_hand();
    c->clusters[0].endpoints[0].weight = 1000001;
    c->clusters[0].endpoints[0].addr.line = 22;
    expect_invalid(c, 22, "weight must be 1-1000000");
    c = by_hand();
    c->clusters[0].lb = (rm_lb_type_t)5;
    expect_invalid(c, 20, "cluster 'api': load_balancer: unknown type 5");
    c = by_hand();
    c->clusters[0].ring_min_size = 0;
    expect_invalid(c, 20, "load_balancer.ring_min_size must be 1-8388608, got 0");
    c = by_hand();
    c->clusters[0].breakers.max_retries = 1000001;
    expect_invalid(c, 20, "cluster 'api': circuit_breakers.max_retries must be 0-1000000, got 1000001");
    c = by_hand();
    c->clusters[0].outlier.max_ejection_percent = 101; /* off: not checked */
    expect_valid(c);
    rm_config_unref(c);
    c = by_hand();
    c->clusters[0].outlier.enabled = 1;
    c->clusters[0].outlier.max_ejection_percent = 101;
    expect_invalid(c, 20, "outlier_detection.max_ejection_percent must be 0-100, got 101");
    c = by_hand();
    c->clusters[0].outlier.enabled = 1;
    c->clusters[0].outlier.max_ejection_ms = 1000;
    expect_invalid(c, 20, "outlier_detection.max_ejection_ms (1000) must not be below base_ejection_ms (30000)");
    c = by_hand();
    c->clusters[0].outlier.enabled = 1;
    c->clusters[0].outlier.consecutive_5xx = 0;
    c->clusters[0].outlier.consecutive_gateway_errors = 0;
    expect_invalid(c, 20, "outlier_detection needs consecutive_5xx or consecutive_gateway_errors above 0");
    c = by_hand();
    c->clusters[0].health_check.enabled = 1;
    c->clusters[0].health_check.http_path = strdup("/healthz");
    expect_valid(c);
    rm_config_unref(c);
    c = by_hand();
    c->clusters[0].health_check.enabled = 1;
    c->clusters[0].health_check.http_path = strdup("healthz");
    expect_invalid(c, 20, "cluster 'api': health_check.http.path must start with '/'");
    c = by_hand();
    c->clusters[0].health_check.enabled = 1;
    c->clusters[0].health_check.http_path = strdup("/h");
    c->clusters[0].health_check.interval_ms = 50;
    expect_invalid(c, 20, "health_check.interval_ms must be 100-86400000, got 50");
    c = by_hand();
    c->clusters[0].health_check.enabled = 1;
    c->clusters[0].health_check.http_path = strdup("/h");
    c->clusters[0].health_check.timeout_ms = 6000;
    expect_invalid(c, 20, "health_check.timeout_ms (6000) must be below interval_ms (5000)");
    c = by_hand();
    c->clusters[0].health_check.enabled = 1;
    c->clusters[0].health_check.grpc = 1;
    c->clusters[0].health_check.grpc_service = strdup("");
    expect_invalid(c, 20, "health_check.grpc needs an h2 or auto cluster");
    c = by_hand();
    limit(&c->clusters[0].rate_limit, 0, 0);
    expect_invalid(c, 20, "cluster 'api': rate_limit needs 'total' or 'per_client'");

    /* session persistence */
    c = by_hand();
    c->listeners[0].routes[0].session_persistence = RM_SESSION_COOKIE;
    expect_invalid(c, 7, "session_persistence: type cookie needs a name");
    c = by_hand();
    c->listeners[0].routes[0].session_name = strdup("x");
    expect_invalid(c, 7, "session_persistence: a name is set without a type");
    c = by_hand();
    c->listeners[0].routes[0].session_persistence = RM_SESSION_COOKIE;
    c->listeners[0].routes[0].session_name = strdup("a;b");
    expect_invalid(c, 7, "session_persistence.name 'a;b' is not a valid cookie name");
    c = by_hand();
    c->listeners[0].routes[0].session_persistence = (rm_session_persistence_t)3;
    expect_invalid(c, 7, "session_persistence: unknown type 3");

    /* route rate limits */
    static const struct {
        uint32_t total_rps, total_burst, per_client_rps, max_clients;
        rm_client_key_t key;
        const char *header, *name, *want;
    } bad[] = {
        {0, 0, 0, 0, RM_CLIENT_KEY_IDENTITY, NULL, NULL, "listener 'in': route #1: rate_limit needs 'total' or 'per_client'"},
        {10000001, 0, 0, 0, RM_CLIENT_KEY_IDENTITY, NULL, NULL, "rate_limit: requests_per_second must be 1-10000000, got 10000001"},
        {1, 10000001, 0, 0, RM_CLIENT_KEY_IDENTITY, NULL, NULL, "rate_limit: burst must be 0-10000000, got 10000001"},
        {0, 0, 1, 10000001, RM_CLIENT_KEY_IDENTITY, NULL, NULL, "rate_limit.max_clients must be 1-10000000, got 10000001"},
        {0, 0, 1, 0, RM_CLIENT_KEY_HEADER, NULL, NULL, "rate_limit.client_key: type header needs 'header'"},
        {0, 0, 1, 0, RM_CLIENT_KEY_HEADER, "a b", NULL, "rate_limit.client_key.header 'a b' is not a valid header name"},
        {0, 0, 1, 0, RM_CLIENT_KEY_SOURCE, "x", NULL, "rate_limit.client_key: 'header' is only used with type header"},
        {0, 0, 1, 0, (rm_client_key_t)3, NULL, NULL, "rate_limit.client_key: unknown type 3"},
        {1, 0, 0, 0, RM_CLIENT_KEY_IDENTITY, NULL, "a:b", "rate_limit.name 'a:b' may only contain letters, digits and . _ - /"},
    };
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        c = by_hand();
        rl = limit(&c->listeners[0].routes[0].rate_limit, bad[i].total_rps, bad[i].per_client_rps);
        rl->total_burst = bad[i].total_burst;
        rl->max_clients = bad[i].max_clients;
        rl->client_key = bad[i].key;
        rl->client_header = bad[i].header != NULL ? strdup(bad[i].header) : NULL;
        rl->name = bad[i].name != NULL ? strdup(bad[i].name) : NULL;
        expect_invalid(c, 7, bad[i].want);
    }
    c = by_hand();
    add_override(limit(&c->listeners[0].routes[0].rate_limit, 5, 0), 1, 1, "a");
    expect_invalid(c, 7, "rate_limit.overrides needs per_client");
    c = by_hand();
    add_override(limit(&c->listeners[0].routes[0].rate_limit, 0, 5), 0, 1, "a");
    expect_invalid(c, 7, "rate_limit.overrides[0].requests_per_second must be 1-10000000, got 0");
    c = by_hand();
    add_override(limit(&c->listeners[0].routes[0].rate_limit, 0, 5), 1, 0);
    expect_invalid(c, 7, "rate_limit.overrides[0].clients must list 1-1000 clients, got 0");
    c = by_hand();
    rl = limit(&c->listeners[0].routes[0].rate_limit, 0, 5);
    add_override(rl, 1, 1, "a");
    rl->overrides[0].burst = 10000001;
    expect_invalid(c, 7, "rate_limit.overrides[0].burst must be 0-10000000, got 10000001");
    c = by_hand();
    add_override(limit(&c->listeners[0].routes[0].rate_limit, 0, 5), 1, 1, "");
    expect_invalid(c, 7, "rate_limit.overrides[0].clients: a client must be a non-empty string");
    c = by_hand();
    rl = limit(&c->listeners[0].routes[0].rate_limit, 0, 5);
    add_override(rl, 1, 2, "x", "y");
    add_override(rl, 2, 1, "x");
    expect_invalid(c, 7, "rate_limit.overrides: client 'x' is listed twice");
    c = by_hand();
    rl = limit(&c->listeners[0].routes[0].rate_limit, 0, 5);
    add_override(rl, 1, 0);
    rl->overrides[0].num_clients = 1001;
    rl->overrides[0].num_clients = 1001;
    free(rl->overrides[0].clients);
    rl->overrides[0].clients = calloc(1001, sizeof(char *));
    for (size_t i = 0; i != 1001; ++i) {
        char buf[16];
        snprintf(buf, sizeof(buf), "c%zu", i);
        rl->overrides[0].clients[i] = strdup(buf);
    }
    expect_invalid(c, 7, "rate_limit.overrides[0].clients must list 1-1000 clients, got 1001");
}

/* The example file stays loadable. */
static void
test_example(void **state)
{
    char dir[512], path[600], msg[1024], *slash;
    rm_config_error_t err;
    rm_config_t *c;

    snprintf(dir, sizeof(dir), "%s", __FILE__);
    for (int i = 0; i != 3; ++i) {
        assert_non_null(slash = strrchr(dir, '/'));
        *slash = '\0';
    }
    snprintf(path, sizeof(path), "%s/examples/agent-backend.yaml", dir);
    if ((c = rm_config_load_file(path, &err)) == NULL)
        fail_msg("%s", rm_config_error_format(&err, msg, sizeof(msg)));
    assert_int_equal(c->clusters[0].endpoints[1].weight, 3);
    assert_true(c->clusters[0].outlier.enabled);
    assert_int_equal(c->clusters[1].lb, RM_LB_RING_HASH);
    assert_string_equal(c->listeners[0].routes[0].rate_limit->name, "carts-limits");
    assert_true((c->listeners[0].filters & RM_LISTENER_USES_RATE_LIMIT) != 0);
    rm_config_unref(c);
}

/* Truncations and byte flips of the good file fail cleanly (no crash, no leak under ASan) or parse. */
static void
test_mutations(void **state)
{
    static const char flips[] = " :[]{}-\n0\"";
    size_t len = sizeof(good_yaml) - 1, parsed = 0;
    char *buf = malloc(len);
    rm_config_error_t err;
    for (size_t i = 0; i <= len; ++i) {
        rm_config_t *c = rm_config_load_string(good_yaml, i, "m.yaml", &err);
        parsed += c != NULL;
        rm_config_unref(c);
    }
    for (size_t i = 0; i != len; ++i) {
        for (const char *f = flips; *f != '\0'; ++f) {
            memcpy(buf, good_yaml, len);
            buf[i] = *f;
            rm_config_t *c = rm_config_load_string(buf, len, "m.yaml", &err);
            parsed += c != NULL;
            rm_config_unref(c);
        }
    }
    free(buf);
    print_message("%zu mutated documents parsed\n", parsed);
}

/* health_check parses with its defaults and is dumped as written */
static void
test_health_check(void **state)
{
    rm_config_error_t err;
    static const char yaml[] = "listeners:\n  - address: 127.0.0.1:15001\n    routes:\n      - {name: r, cluster: a}\n"
                               "clusters:\n"
                               "  - name: a\n    endpoints: [\"127.0.0.1:1\"]\n    health_check: {http: {path: /healthz}}\n"
                               "  - name: b\n    protocol: h2\n    endpoints: [\"127.0.0.1:2\"]\n"
                               "    health_check: {grpc: {}, interval_ms: 300, timeout_ms: 200, healthy_threshold: 1,"
                               " unhealthy_threshold: 4}\n";
    rm_config_t *c = rm_config_load_string(yaml, sizeof(yaml) - 1, "h.yaml", &err);
    if (c == NULL)
        fail_msg("%s:%u: %s", err.file, err.line, err.message);
    const rm_config_health_check_t *h = &c->clusters[0].health_check;
    assert_true(h->enabled);
    assert_false(h->grpc);
    assert_string_equal(h->http_path, "/healthz");
    assert_int_equal(h->interval_ms, 5000);
    assert_int_equal(h->timeout_ms, 1000);
    assert_int_equal(h->healthy_threshold, 2);
    assert_int_equal(h->unhealthy_threshold, 3);
    h = &c->clusters[1].health_check;
    assert_true(h->enabled);
    assert_true(h->grpc);
    assert_string_equal(h->grpc_service, "");
    assert_int_equal(h->interval_ms, 300);
    assert_int_equal(h->unhealthy_threshold, 4);
    char *json = rm_config_to_json(c);
    assert_non_null(strstr(json, "\"health_check\":{\"http\":{\"path\":\"/healthz\"},\"interval_ms\":5000,\"timeout_ms\":1000,"
                                 "\"healthy_threshold\":2,\"unhealthy_threshold\":3}"));
    assert_non_null(strstr(json, "\"health_check\":{\"grpc\":{\"service\":\"\"},\"interval_ms\":300,\"timeout_ms\":200,"
                                 "\"healthy_threshold\":1,\"unhealthy_threshold\":4}"));
    free(json);
    rm_config_unref(c);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health_check), cmocka_unit_test(test_parse),    cmocka_unit_test(test_dump),
        cmocka_unit_test(test_bad),          cmocka_unit_test(test_validate), cmocka_unit_test(test_example),
        cmocka_unit_test(test_mutations),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
