/* The round-robin balancer (upstream/lb_rr.c): rotation over the endpoints, results ignored, state freed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "upstream/lb.h"

/* The balancer never dereferences an endpoint: distinct addresses stand in for them. */
static char endpoint_storage[8];

static rm_endpoint_t *
endpoint(size_t i)
{
    return (rm_endpoint_t *)&endpoint_storage[i];
}

static void
fill_endpoints(rm_endpoint_t **endpoints, size_t n)
{
    for (size_t i = 0; i != n; ++i)
        endpoints[i] = endpoint(i);
}

static void
test_name(void **state)
{
    assert_string_equal(rm_lb_round_robin.name, "RoundRobin");
    assert_non_null(rm_lb_round_robin.create);
    assert_non_null(rm_lb_round_robin.destroy);
    assert_non_null(rm_lb_round_robin.pick);
    assert_non_null(rm_lb_round_robin.on_result);
}

static void
test_rotation(void **state)
{
    rm_config_cluster_t config;
    memset(&config, 0, sizeof(config));
    rm_endpoint_t *endpoints[8];
    fill_endpoints(endpoints, 8);

    for (size_t n = 1; n <= 8; ++n) {
        void *lb = rm_lb_round_robin.create(&config);
        assert_non_null(lb);
        /* several rounds: every endpoint once per round, in order */
        for (size_t round = 0; round != 3; ++round)
            for (size_t i = 0; i != n; ++i)
                assert_ptr_equal(rm_lb_round_robin.pick(lb, endpoints, n, NULL), endpoints[i]);
        rm_lb_round_robin.destroy(lb);
    }
}

static void
test_even_spread(void **state)
{
    rm_endpoint_t *endpoints[5];
    fill_endpoints(endpoints, 5);
    void *lb = rm_lb_round_robin.create(NULL);
    size_t hits[5] = {0};
    for (size_t k = 0; k != 5 * 1000; ++k) {
        rm_endpoint_t *ep = rm_lb_round_robin.pick(lb, endpoints, 5, NULL);
        size_t i = (size_t)((char *)ep - endpoint_storage);
        assert_true(i < 5);
        ++hits[i];
    }
    for (size_t i = 0; i != 5; ++i)
        assert_int_equal(hits[i], 1000);
    rm_lb_round_robin.destroy(lb);
}

static void
test_endpoint_set_changes(void **state)
{
    /* the cluster's endpoint list may shrink or grow between picks (DNS refresh): every pick stays in range */
    rm_endpoint_t *endpoints[8];
    fill_endpoints(endpoints, 8);
    void *lb = rm_lb_round_robin.create(NULL);
    static const size_t sizes[] = {4, 1, 7, 2, 8, 3, 1, 5};
    for (size_t k = 0; k != 200; ++k) {
        size_t n = sizes[k % (sizeof(sizes) / sizeof(sizes[0]))];
        rm_endpoint_t *ep = rm_lb_round_robin.pick(lb, endpoints, n, NULL);
        size_t i = (size_t)((char *)ep - endpoint_storage);
        assert_true(i < n);
    }
    /* a fixed set afterwards rotates again */
    rm_endpoint_t *first = rm_lb_round_robin.pick(lb, endpoints, 3, NULL);
    size_t i = (size_t)((char *)first - endpoint_storage);
    assert_ptr_equal(rm_lb_round_robin.pick(lb, endpoints, 3, NULL), endpoints[(i + 1) % 3]);
    assert_ptr_equal(rm_lb_round_robin.pick(lb, endpoints, 3, NULL), endpoints[(i + 2) % 3]);
    assert_ptr_equal(rm_lb_round_robin.pick(lb, endpoints, 3, NULL), endpoints[i]);
    rm_lb_round_robin.destroy(lb);
}

static void
test_on_result_harmless(void **state)
{
    rm_endpoint_t *endpoints[3];
    fill_endpoints(endpoints, 3);
    void *lb = rm_lb_round_robin.create(NULL);
    assert_ptr_equal(rm_lb_round_robin.pick(lb, endpoints, 3, NULL), endpoints[0]);
    /* failures and huge latencies do not skew the rotation */
    rm_lb_round_robin.on_result(lb, endpoints[0], 0, UINT64_MAX);
    rm_lb_round_robin.on_result(lb, endpoints[1], 0, 0);
    rm_lb_round_robin.on_result(lb, endpoints[2], 1, 1234);
    assert_ptr_equal(rm_lb_round_robin.pick(lb, endpoints, 3, NULL), endpoints[1]);
    rm_lb_round_robin.on_result(lb, endpoints[1], 0, 5000000);
    assert_ptr_equal(rm_lb_round_robin.pick(lb, endpoints, 3, NULL), endpoints[2]);
    assert_ptr_equal(rm_lb_round_robin.pick(lb, endpoints, 3, NULL), endpoints[0]);
    rm_lb_round_robin.destroy(lb);
}

static void
test_independent_states(void **state)
{
    /* two cluster runtimes each keep their own cursor */
    rm_endpoint_t *endpoints[4];
    fill_endpoints(endpoints, 4);
    void *a = rm_lb_round_robin.create(NULL), *b = rm_lb_round_robin.create(NULL);
    assert_ptr_not_equal(a, b);
    assert_ptr_equal(rm_lb_round_robin.pick(a, endpoints, 4, NULL), endpoints[0]);
    assert_ptr_equal(rm_lb_round_robin.pick(a, endpoints, 4, NULL), endpoints[1]);
    assert_ptr_equal(rm_lb_round_robin.pick(b, endpoints, 4, NULL), endpoints[0]);
    assert_ptr_equal(rm_lb_round_robin.pick(a, endpoints, 4, NULL), endpoints[2]);
    rm_lb_round_robin.destroy(a);
    rm_lb_round_robin.destroy(b);
}

static void
test_create_destroy(void **state)
{
    /* under the sanitizer build LeakSanitizer checks that every state is freed */
    for (size_t k = 0; k != 1000; ++k)
        rm_lb_round_robin.destroy(rm_lb_round_robin.create(NULL));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name),
        cmocka_unit_test(test_rotation),
        cmocka_unit_test(test_even_spread),
        cmocka_unit_test(test_endpoint_set_changes),
        cmocka_unit_test(test_on_result_harmless),
        cmocka_unit_test(test_independent_states),
        cmocka_unit_test(test_create_destroy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
