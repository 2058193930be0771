/*
 * Weighted backends (canary splits) and method matching: parsing, validation, JSON dump, and the
 * router's pick, whose distribution must follow the weights.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <h2o/string_.h>
#include "config/config.h"
#include "router/router.h"

static const char yaml[] = "listeners:\n"
                           "  - name: l\n"
                           "    address: 127.0.0.1:15001\n"
                           "    routes:\n"
                           "      - name: deletes\n"
                           "        match: {method: DELETE}\n"
                           "        cluster: admin\n"
                           "      - name: split\n"
                           "        backends: [{cluster: v1, weight: 90}, {cluster: v2, weight: 10}, {cluster: admin, weight: 0}]\n"
                           "clusters:\n"
                           "  - {name: v1, endpoints: \"127.0.0.1:1\"}\n"
                           "  - {name: v2, endpoints: \"127.0.0.1:2\"}\n"
                           "  - {name: admin, endpoints: \"127.0.0.1:3\"}\n";

static rm_config_t *
load(const char *text, rm_config_error_t *err)
{
    return rm_config_load_string(text, strlen(text), "split.yaml", err);
}

static rm_req_head_t
request(const char *method)
{
    rm_req_head_t req;
    memset(&req, 0, sizeof(req));
    req.method = h2o_iovec_init(method, strlen(method));
    req.scheme = h2o_iovec_init(H2O_STRLIT("http"));
    req.authority = h2o_iovec_init(H2O_STRLIT("svc"));
    req.path = h2o_iovec_init(H2O_STRLIT("/x"));
    req.content_length = -1;
    return req;
}

static void
test_parse_and_pick(void **state)
{
    rm_config_error_t err;
    rm_config_t *c = load(yaml, &err);
    assert_non_null(c);
    const rm_config_listener_t *l = &c->listeners[0];
    assert_int_equal(l->routes[1].num_backends, 3);
    assert_int_equal(l->routes[1].total_weight, 100);

    rm_req_head_t del = request("DELETE"), get = request("GET"), lower = request("delete");
    assert_ptr_equal(rm_router_match(l, &del), &l->routes[0]);
    assert_ptr_equal(rm_router_match(l, &get), &l->routes[1]);
    /* methods are case-sensitive (RFC 9110 9.1) */
    assert_ptr_equal(rm_router_match(l, &lower), &l->routes[1]);

    /* the pick follows the weights: 90/10/0 over a deterministic spread of random values */
    size_t counts[3] = {0, 0, 0};
    uint64_t x = 88172645463325252ULL;
    for (int i = 0; i != 100000; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        size_t idx = rm_router_pick_cluster(&l->routes[1], x);
        assert_true(idx < 3);
        ++counts[idx];
    }
    ssize_t v1 = rm_config_find_cluster(c, "v1"), v2 = rm_config_find_cluster(c, "v2"), admin = rm_config_find_cluster(c, "admin");
    assert_in_range(counts[v1], 89000, 91000);
    assert_in_range(counts[v2], 9000, 11000);
    assert_int_equal(counts[admin], 0);
    /* a plain route always picks its cluster */
    assert_int_equal(rm_router_pick_cluster(&l->routes[0], 12345), (size_t)admin);

    char *json = rm_config_to_json(c);
    assert_non_null(strstr(json, "\"backends\":[{\"cluster\":\"v1\",\"weight\":90}"));
    assert_non_null(strstr(json, "\"method\":\"DELETE\""));
    free(json);
    rm_config_unref(c);
}

static void
expect_error(const char *text, unsigned line, const char *needle)
{
    rm_config_error_t err;
    rm_config_t *c = load(text, &err);
    if (c != NULL)
        rm_config_unref(c);
    assert_null(c);
    if (strstr(err.message, needle) == NULL || err.line != line)
        fail_msg("expected line %u and '%s', got %u: %s", line, needle, err.line, err.message);
}

static void
test_errors(void **state)
{
    expect_error("listeners: [{address: \"127.0.0.1:1\", routes: [{backends: [{cluster: nope, weight: 1}]}]}]\n"
                 "clusters: [{name: v1, endpoints: \"127.0.0.1:1\"}]\n",
                 1, "backend cluster 'nope' is not defined");
    expect_error("listeners:\n"
                 "  - address: 127.0.0.1:1\n"
                 "    routes:\n"
                 "      - backends: [{cluster: v1, weight: 0}]\n"
                 "clusters: [{name: v1, endpoints: \"127.0.0.1:1\"}]\n",
                 4, "every backend has weight 0");
    expect_error("listeners:\n"
                 "  - address: 127.0.0.1:1\n"
                 "    routes:\n"
                 "      - cluster: v1\n"
                 "        backends: [{cluster: v1}]\n"
                 "clusters: [{name: v1, endpoints: \"127.0.0.1:1\"}]\n",
                 5, "either 'cluster' or 'backends'");
    expect_error("listeners:\n"
                 "  - address: 127.0.0.1:1\n"
                 "    routes:\n"
                 "      - match: {method: \"GE T\"}\n"
                 "        cluster: v1\n"
                 "clusters: [{name: v1, endpoints: \"127.0.0.1:1\"}]\n",
                 4, "not a valid HTTP method");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_and_pick),
        cmocka_unit_test(test_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
