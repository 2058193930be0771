/* Outlier detection (upstream/outlier.c): the ejection state machine (consecutive 5xx and gateway
 * errors, ejection for base x times, at most max_ejection_percent, one probe after the ejection,
 * success brings the endpoint back), the circuit of a cluster whose endpoints are all ejected, and
 * the agent-wide registries by cluster name and address. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "upstream/outlier.h"

static rm_config_outlier_t
settings(uint32_t c5xx, uint32_t gateway, uint32_t percent)
{
    rm_config_outlier_t c;
    memset(&c, 0, sizeof(c));
    c.enabled = 1;
    c.consecutive_5xx = c5xx;
    c.consecutive_gateway_errors = gateway;
    c.interval_ms = 1000;
    c.base_ejection_ms = 100;
    c.max_ejection_ms = 350;
    c.max_ejection_percent = percent;
    return c;
}

static void
test_gateway_errors_eject_then_probe(void **state)
{
    rm_outlier_cluster_t *oc = rm_outlier_cluster_acquire("gw");
    rm_config_outlier_t c = settings(5, 2, 50);
    rm_outlier_configure(oc, &c);
    rm_outlier_host_t *a = rm_outlier_host_acquire(oc, "127.0.0.1:1"), *b = rm_outlier_host_acquire(oc, "127.0.0.1:2");

    assert_false(rm_outlier_report(a, RM_OUTLIER_GATEWAY, 1000));
    assert_true(rm_outlier_report(a, RM_OUTLIER_GATEWAY, 1000));
    assert_true(rm_outlier_is_ejected(a));
    uint32_t hosts, ejected;
    rm_outlier_counts(oc, &hosts, &ejected);
    assert_int_equal(hosts, 2);
    assert_int_equal(ejected, 1);
    assert_false(rm_outlier_circuit_open(oc));
    /* no traffic while ejected */
    assert_false(rm_outlier_available(a, 1050));
    assert_false(rm_outlier_claim(a, 1099));
    assert_true(rm_outlier_available(b, 1050));
    /* after base x 1: one request probes; nobody else meanwhile */
    assert_true(rm_outlier_available(a, 1100));
    assert_true(rm_outlier_available(a, 1100)); /* no side effect */
    assert_true(rm_outlier_claim(a, 1100));
    assert_false(rm_outlier_available(a, 1101));
    assert_false(rm_outlier_claim(a, 1101));
    assert_true(rm_outlier_is_ejected(a));
    /* success brings it back */
    assert_false(rm_outlier_report(a, RM_OUTLIER_SUCCESS, 1110));
    assert_false(rm_outlier_is_ejected(a));
    assert_true(rm_outlier_available(a, 1111));
    rm_outlier_counts(oc, &hosts, &ejected);
    assert_int_equal(ejected, 0);

    rm_outlier_host_release(a);
    rm_outlier_host_release(b);
    rm_outlier_cluster_release(oc);
}

static void
test_consecutive_counts(void **state)
{
    rm_outlier_cluster_t *oc = rm_outlier_cluster_acquire("count");
    rm_config_outlier_t c = settings(3, 0, 100);
    rm_outlier_configure(oc, &c);
    rm_outlier_host_t *h = rm_outlier_host_acquire(oc, "10.0.0.1:80");
    /* a success in between starts the count again */
    assert_false(rm_outlier_report(h, RM_OUTLIER_5XX, 1));
    assert_false(rm_outlier_report(h, RM_OUTLIER_5XX, 2));
    assert_false(rm_outlier_report(h, RM_OUTLIER_SUCCESS, 3));
    assert_false(rm_outlier_report(h, RM_OUTLIER_5XX, 4));
    assert_false(rm_outlier_report(h, RM_OUTLIER_GATEWAY, 5)); /* gateway errors are 5xx too */
    assert_true(rm_outlier_report(h, RM_OUTLIER_5XX, 6));
    rm_outlier_host_release(h);

    /* gateway-only detection: a plain 500 breaks the run of gateway errors */
    c = settings(0, 2, 100);
    rm_outlier_configure(oc, &c);
    h = rm_outlier_host_acquire(oc, "10.0.0.2:80");
    assert_false(rm_outlier_report(h, RM_OUTLIER_GATEWAY, 1));
    assert_false(rm_outlier_report(h, RM_OUTLIER_5XX, 2));
    assert_false(rm_outlier_report(h, RM_OUTLIER_GATEWAY, 3));
    for (int i = 0; i != 10; ++i)
        assert_false(rm_outlier_report(h, RM_OUTLIER_5XX, 4));
    assert_false(rm_outlier_report(h, RM_OUTLIER_GATEWAY, 5));
    assert_true(rm_outlier_report(h, RM_OUTLIER_GATEWAY, 6));
    rm_outlier_host_release(h);
    rm_outlier_cluster_release(oc);
}

static void
test_failed_probe_ejects_longer_up_to_max(void **state)
{
    rm_outlier_cluster_t *oc = rm_outlier_cluster_acquire("longer");
    rm_config_outlier_t c = settings(1, 0, 100);
    rm_outlier_configure(oc, &c);
    rm_outlier_host_t *h = rm_outlier_host_acquire(oc, "[::1]:80");
    assert_true(rm_outlier_report(h, RM_OUTLIER_5XX, 0));
    /* late answers of requests sent before the ejection decide nothing */
    assert_false(rm_outlier_report(h, RM_OUTLIER_SUCCESS, 10));
    assert_true(rm_outlier_is_ejected(h));
    assert_false(rm_outlier_available(h, 99));
    assert_true(rm_outlier_claim(h, 100));
    assert_false(rm_outlier_report(h, RM_OUTLIER_GATEWAY, 110)); /* probe failed: 2 x 100 ms */
    assert_false(rm_outlier_available(h, 309));
    assert_true(rm_outlier_claim(h, 310));
    rm_outlier_report(h, RM_OUTLIER_5XX, 310); /* 3 x 100 */
    assert_false(rm_outlier_available(h, 609));
    assert_true(rm_outlier_claim(h, 610));
    rm_outlier_report(h, RM_OUTLIER_5XX, 610); /* 4 x 100, capped at 350 */
    assert_false(rm_outlier_available(h, 959));
    assert_true(rm_outlier_available(h, 960));
    /* a probe that never reports is given up after interval_ms: another request may probe */
    assert_true(rm_outlier_claim(h, 960));
    assert_false(rm_outlier_claim(h, 1959));
    assert_true(rm_outlier_claim(h, 1960));
    assert_false(rm_outlier_report(h, RM_OUTLIER_SUCCESS, 1970));
    assert_false(rm_outlier_is_ejected(h));
    rm_outlier_host_release(h);
    rm_outlier_cluster_release(oc);
}

static void
test_max_ejection_percent_and_circuit(void **state)
{
    rm_outlier_cluster_t *oc = rm_outlier_cluster_acquire("pct");
    rm_config_outlier_t c = settings(1, 0, 50);
    rm_outlier_configure(oc, &c);
    rm_outlier_host_t *a = rm_outlier_host_acquire(oc, "a:1"), *b = rm_outlier_host_acquire(oc, "b:1");
    /* the same address acquired again (another worker's runtime) is the same host */
    rm_outlier_host_t *a2 = rm_outlier_host_acquire(oc, "a:1");
    assert_ptr_equal(a, a2);
    rm_outlier_host_release(a2);

    assert_true(rm_outlier_report(a, RM_OUTLIER_5XX, 0));
    assert_false(rm_outlier_report(b, RM_OUTLIER_5XX, 0)); /* 2 of 2 would be over 50 % */
    assert_false(rm_outlier_is_ejected(b));
    assert_false(rm_outlier_circuit_open(oc));

    /* with 100 %, every endpoint may go: the circuit opens */
    c = settings(1, 0, 100);
    rm_outlier_configure(oc, &c);
    assert_true(rm_outlier_report(b, RM_OUTLIER_5XX, 0));
    assert_true(rm_outlier_circuit_open(oc));
    assert_false(rm_outlier_available(a, 50));
    assert_false(rm_outlier_available(b, 50));
    char *text = rm_outlier_describe();
    assert_non_null(strstr(text, "pct: 2/2 endpoints ejected, circuit open\n"));
    free(text);
    text = rm_outlier_render();
    assert_non_null(text);
    assert_non_null(strstr(text, "remora_upstream_endpoints_ejected{cluster=\"pct\"} 2\n"));
    assert_non_null(strstr(text, "remora_upstream_circuit_open{cluster=\"pct\"} 1\n"));
    free(text);
    /* a probe's success closes it */
    assert_true(rm_outlier_claim(b, 100));
    rm_outlier_report(b, RM_OUTLIER_SUCCESS, 101);
    assert_false(rm_outlier_circuit_open(oc));
    text = rm_outlier_render();
    assert_non_null(strstr(text, "remora_upstream_circuit_open{cluster=\"pct\"} 0\n"));
    free(text);

    /* an ejected address that leaves the cluster no longer counts */
    rm_outlier_host_release(a);
    uint32_t hosts, ejected;
    rm_outlier_counts(oc, &hosts, &ejected);
    assert_int_equal(hosts, 1);
    assert_int_equal(ejected, 0);

    /* turning detection off brings every endpoint back and stops counting */
    assert_true(rm_outlier_report(b, RM_OUTLIER_5XX, 200));
    c.enabled = 0;
    rm_outlier_configure(oc, &c);
    assert_false(rm_outlier_is_ejected(b));
    assert_false(rm_outlier_report(b, RM_OUTLIER_5XX, 300));
    text = rm_outlier_render(); /* other clusters of this test program may still be rendered */
    assert_true(text == NULL || strstr(text, "cluster=\"pct\"") == NULL);
    free(text);
    rm_outlier_host_release(b);
    rm_outlier_cluster_release(oc);
}

/* A reload that rebuilds the cluster's runtimes drops every endpoint and then takes the same addresses
 * again: an ejection survives it (the cluster name and the address still exist). */
static void
test_ejection_survives_rebuild(void **state)
{
    rm_config_outlier_t c = settings(1, 0, 100);
    rm_outlier_cluster_t *oc = rm_outlier_cluster_acquire("rebuild");
    rm_outlier_configure(oc, &c);
    rm_outlier_host_t *a = rm_outlier_host_acquire(oc, "a:1"), *b = rm_outlier_host_acquire(oc, "b:1");
    assert_true(rm_outlier_report(a, RM_OUTLIER_5XX, 0));
    rm_outlier_host_release(a);
    rm_outlier_host_release(b);
    rm_outlier_cluster_release(oc);
    uint32_t hosts, ejected;

    oc = rm_outlier_cluster_acquire("rebuild");
    rm_outlier_counts(oc, &hosts, &ejected);
    assert_int_equal(hosts, 0);
    assert_int_equal(ejected, 0);
    rm_outlier_configure(oc, &c);
    a = rm_outlier_host_acquire(oc, "a:1");
    b = rm_outlier_host_acquire(oc, "b:1");
    assert_true(rm_outlier_is_ejected(a));
    assert_false(rm_outlier_is_ejected(b));
    rm_outlier_counts(oc, &hosts, &ejected);
    assert_int_equal(hosts, 2);
    assert_int_equal(ejected, 1);
    assert_false(rm_outlier_available(a, 50));
    assert_true(rm_outlier_claim(a, 100));
    rm_outlier_report(a, RM_OUTLIER_SUCCESS, 101);
    assert_false(rm_outlier_is_ejected(a));
    /* many ejected addresses that leave for good: at most 64 are remembered */
    char name[32];
    for (int i = 0; i != 100; ++i) {
        snprintf(name, sizeof(name), "gone:%d", i);
        rm_outlier_host_t *h = rm_outlier_host_acquire(oc, name);
        rm_outlier_report(h, RM_OUTLIER_5XX, 200);
        rm_outlier_host_release(h);
    }
    rm_outlier_counts(oc, &hosts, &ejected);
    assert_int_equal(hosts, 2);
    assert_int_equal(ejected, 0);
    /* turning detection off forgets them */
    c.enabled = 0;
    rm_outlier_configure(oc, &c);
    rm_outlier_host_release(a);
    rm_outlier_host_release(b);
    rm_outlier_cluster_release(oc);
}

#define THREADS 4

typedef struct st_claim_race_t {
    rm_outlier_host_t *h;
    uint64_t now_ms;
    pthread_barrier_t start;
    uint32_t wins;
} claim_race_t;

static void *
claim_thread(void *arg)
{
    claim_race_t *r = arg;
    pthread_barrier_wait(&r->start);
    for (int i = 0; i != 1000; ++i)
        if (rm_outlier_claim(r->h, r->now_ms))
            __atomic_add_fetch(&r->wins, 1, __ATOMIC_RELAXED);
    return NULL;
}

/* Workers share the ejection state: after the ejection time exactly one request, on any thread, probes. */
static void
test_one_probe_across_threads(void **state)
{
    rm_outlier_cluster_t *oc = rm_outlier_cluster_acquire("threads");
    rm_config_outlier_t c = settings(1, 0, 100);
    rm_outlier_configure(oc, &c);
    claim_race_t r;
    memset(&r, 0, sizeof(r));
    r.h = rm_outlier_host_acquire(oc, "127.0.0.9:80");
    assert_true(rm_outlier_report(r.h, RM_OUTLIER_5XX, 1000));
    r.now_ms = 1100;
    pthread_barrier_init(&r.start, NULL, THREADS);
    pthread_t th[THREADS];
    for (int i = 0; i != THREADS; ++i)
        assert_int_equal(pthread_create(&th[i], NULL, claim_thread, &r), 0);
    for (int i = 0; i != THREADS; ++i)
        pthread_join(th[i], NULL);
    pthread_barrier_destroy(&r.start);
    assert_int_equal(r.wins, 1);
    rm_outlier_host_release(r.h);
    rm_outlier_cluster_release(oc);
}

static void
test_classify(void **state)
{
    assert_int_equal(rm_outlier_classify(200, -1), RM_OUTLIER_SUCCESS);
    assert_int_equal(rm_outlier_classify(404, -1), RM_OUTLIER_SUCCESS);
    assert_int_equal(rm_outlier_classify(500, -1), RM_OUTLIER_5XX);
    assert_int_equal(rm_outlier_classify(501, -1), RM_OUTLIER_5XX);
    assert_int_equal(rm_outlier_classify(502, -1), RM_OUTLIER_GATEWAY);
    assert_int_equal(rm_outlier_classify(503, -1), RM_OUTLIER_GATEWAY);
    assert_int_equal(rm_outlier_classify(504, -1), RM_OUTLIER_GATEWAY);
    assert_int_equal(rm_outlier_classify(200, 14), RM_OUTLIER_GATEWAY);
    assert_int_equal(rm_outlier_classify(200, 13), RM_OUTLIER_SUCCESS);
}

/* The health checker's verdict: either can take a host out, both must agree to bring it back. */
static void
test_health_verdict(void **state)
{
    rm_outlier_cluster_t *oc = rm_outlier_cluster_acquire("hc");
    rm_config_outlier_t c = settings(5, 1, 100);
    rm_outlier_configure(oc, &c);
    rm_outlier_host_t *a = rm_outlier_host_acquire(oc, "127.0.0.1:1");
    rm_outlier_host_t *checked = rm_outlier_host_acquire(oc, "127.0.0.1:1"); /* the checker's reference */
    assert_ptr_equal(a, checked);
    assert_string_equal(rm_outlier_host_addr(a), "127.0.0.1:1");

    /* unhealthy, not ejected: out */
    rm_outlier_set_health(checked, 0);
    assert_true(rm_outlier_is_unhealthy(a));
    assert_false(rm_outlier_available(a, 1000));
    assert_false(rm_outlier_claim(a, 1000));
    rm_outlier_set_health(checked, 1);
    assert_true(rm_outlier_claim(a, 1000));

    /* ejected, then unhealthy: no probe after the ejection time while unhealthy */
    assert_true(rm_outlier_report(a, RM_OUTLIER_GATEWAY, 1000));
    rm_outlier_set_health(checked, 0);
    assert_false(rm_outlier_available(a, 2000));
    assert_false(rm_outlier_claim(a, 2000));
    /* healthy again: the probe goes, and decides */
    rm_outlier_set_health(checked, 1);
    assert_false(rm_outlier_available(a, 1050)); /* still in its ejection time */
    assert_true(rm_outlier_claim(a, 2000));
    assert_false(rm_outlier_report(a, RM_OUTLIER_SUCCESS, 2010));
    assert_true(rm_outlier_available(a, 2010));

    /* the checker stops (healthy first, as the contract says): the record stays for the other holder */
    rm_outlier_set_health(checked, 0);
    rm_outlier_set_health(checked, 1);
    rm_outlier_host_release(checked);
    assert_true(rm_outlier_available(a, 2020));
    rm_outlier_host_release(a);
    rm_outlier_cluster_release(oc);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_health_verdict),
        cmocka_unit_test(test_gateway_errors_eject_then_probe),
        cmocka_unit_test(test_consecutive_counts),
        cmocka_unit_test(test_failed_probe_ejects_longer_up_to_max),
        cmocka_unit_test(test_max_ejection_percent_and_circuit),
        cmocka_unit_test(test_ejection_survives_rebuild),
        cmocka_unit_test(test_one_probe_across_threads),
        cmocka_unit_test(test_classify),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
