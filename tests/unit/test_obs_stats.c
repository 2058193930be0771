/* Prometheus rendering of per-worker counters: sums, labels, escaping, ordering. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "obs/stats.h"

static void
assert_contains(const char *text, const char *needle)
{
    if (strstr(text, needle) == NULL)
        fail_msg("missing line: %s\n--- output ---\n%s", needle, text);
}

static void
assert_not_contains(const char *text, const char *needle)
{
    if (strstr(text, needle) != NULL)
        fail_msg("unexpected: %s", needle);
}

static void
test_sums_across_workers(void **state)
{
    rm_stats_t *w[2] = {rm_stats_create(0), rm_stats_create(1)};
    rm_listener_stats_t *l0 = rm_stats_listener(w[0], "inbound"), *l1 = rm_stats_listener(w[1], "inbound");
    rm_cluster_stats_t *c0 = rm_stats_cluster(w[0], "backend"), *c1 = rm_stats_cluster(w[1], "backend");

    /* get-or-create returns the same block */
    assert_ptr_equal(rm_stats_listener(w[0], "inbound"), l0);
    assert_ptr_equal(rm_stats_cluster(w[1], "backend"), c1);

    RM_STAT_ADD(l0->cx_total, 3);
    RM_STAT_ADD(l1->cx_total, 4);
    RM_STAT_INC(l0->cx_active);
    RM_STAT_INC(l1->cx_active);
    RM_STAT_INC(l1->cx_active);
    RM_STAT_DEC(l1->cx_active);
    RM_STAT_ADD(l0->cx_http1, 2);
    RM_STAT_ADD(l1->cx_h2, 5);
    RM_STAT_ADD(l0->rq_total, 10);
    RM_STAT_ADD(l1->rq_total, 20);
    RM_STAT_ADD(l0->bytes_rx, 1000);
    RM_STAT_ADD(l1->bytes_rx, 24);
    RM_STAT_ADD(l1->bytes_tx, 7);
    RM_STAT_INC(l0->rq_no_route);
    RM_STAT_ADD(c0->cx_connect_fail, 2);
    RM_STAT_ADD(c1->cx_connect_fail, 3);
    RM_STAT_ADD(c0->rq_total, 6);
    RM_STAT_ADD(c1->rq_total, 1);
    RM_STAT_ADD(c1->bytes_tx, 99);

    char *out = rm_stats_render_prometheus(w, 2, 42);
    assert_non_null(out);
    assert_contains(out, "# HELP remora_downstream_connections_total ");
    assert_contains(out, "# TYPE remora_downstream_connections_total counter\n");
    assert_contains(out, "# TYPE remora_downstream_connections_active gauge\n");
    assert_contains(out, "\nremora_downstream_connections_total{listener=\"inbound\"} 7\n");
    assert_contains(out, "\nremora_downstream_connections_active{listener=\"inbound\"} 2\n");
    assert_contains(out, "\nremora_downstream_connections_by_protocol_total{listener=\"inbound\",protocol=\"http1\"} 2\n");
    assert_contains(out, "\nremora_downstream_connections_by_protocol_total{listener=\"inbound\",protocol=\"h2\"} 5\n");
    assert_contains(out, "\nremora_downstream_requests_total{listener=\"inbound\"} 30\n");
    assert_contains(out, "\nremora_downstream_no_route_total{listener=\"inbound\"} 1\n");
    assert_contains(out, "\nremora_downstream_bytes_total{listener=\"inbound\",direction=\"rx\"} 1024\n");
    assert_contains(out, "\nremora_downstream_bytes_total{listener=\"inbound\",direction=\"tx\"} 7\n");
    assert_contains(out, "\nremora_upstream_connect_failures_total{cluster=\"backend\"} 5\n");
    assert_contains(out, "\nremora_upstream_requests_total{cluster=\"backend\"} 7\n");
    assert_contains(out, "\nremora_upstream_bytes_total{cluster=\"backend\",direction=\"tx\"} 99\n");
    assert_contains(out, "# TYPE remora_config_generation gauge\nremora_config_generation 42\n");
    assert_contains(out, "\nremora_process_start_time_seconds ");
    assert_contains(out, "\nremora_process_resident_memory_bytes ");
    /* a name that appears on two workers is one series */
    char *first = strstr(out, "remora_downstream_requests_total{listener=\"inbound\"}");
    assert_null(strstr(first + 1, "remora_downstream_requests_total{listener=\"inbound\"}"));
    free(out);

    rm_stats_destroy(w[0]);
    rm_stats_destroy(w[1]);
}

static void
test_status_classes(void **state)
{
    rm_stats_t *w[2] = {rm_stats_create(0), rm_stats_create(1)};
    rm_listener_stats_t *l0 = rm_stats_listener(w[0], "out"), *l1 = rm_stats_listener(w[1], "out");
    rm_cluster_stats_t *c1 = rm_stats_cluster(w[1], "api");

    assert_int_equal(rm_stat_status_class(100), 0);
    assert_int_equal(rm_stat_status_class(204), 1);
    assert_int_equal(rm_stat_status_class(308), 2);
    assert_int_equal(rm_stat_status_class(429), 3);
    assert_int_equal(rm_stat_status_class(503), 4);
    assert_int_equal(rm_stat_status_class(0), 4);
    assert_int_equal(rm_stat_status_class(999), 4);

    RM_STAT_INC(l0->rs_by_class[rm_stat_status_class(200)]);
    RM_STAT_INC(l1->rs_by_class[rm_stat_status_class(201)]);
    RM_STAT_INC(l1->rs_by_class[rm_stat_status_class(404)]);
    RM_STAT_ADD(l0->rs_by_class[rm_stat_status_class(503)], 3);
    RM_STAT_INC(c1->rs_by_class[rm_stat_status_class(302)]);

    char *out = rm_stats_render_prometheus(w, 2, 0);
    assert_contains(out, "\nremora_downstream_responses_total{listener=\"out\",status_class=\"1xx\"} 0\n");
    assert_contains(out, "\nremora_downstream_responses_total{listener=\"out\",status_class=\"2xx\"} 2\n");
    assert_contains(out, "\nremora_downstream_responses_total{listener=\"out\",status_class=\"3xx\"} 0\n");
    assert_contains(out, "\nremora_downstream_responses_total{listener=\"out\",status_class=\"4xx\"} 1\n");
    assert_contains(out, "\nremora_downstream_responses_total{listener=\"out\",status_class=\"5xx\"} 3\n");
    assert_contains(out, "\nremora_upstream_responses_total{cluster=\"api\",status_class=\"3xx\"} 1\n");
    assert_contains(out, "\nremora_upstream_responses_total{cluster=\"api\",status_class=\"2xx\"} 0\n");
    free(out);

    rm_stats_destroy(w[0]);
    rm_stats_destroy(w[1]);
}

static void
test_escaping(void **state)
{
    rm_stats_t *w[1] = {rm_stats_create(0)};
    rm_listener_stats_t *l = rm_stats_listener(w[0], "a\"b\\c\nd");
    RM_STAT_ADD(l->rq_total, 9);

    char *out = rm_stats_render_prometheus(w, 1, 1);
    assert_contains(out, "\nremora_downstream_requests_total{listener=\"a\\\"b\\\\c\\nd\"} 9\n");
    assert_not_contains(out, "c\nd");
    free(out);
    rm_stats_destroy(w[0]);
}

/* Removes the resident memory sample, which legitimately changes between two renders. */
static void
strip_rss(char *s)
{
    char *p = strstr(s, "\nremora_process_resident_memory_bytes ");
    assert_non_null(p);
    *p = '\0';
}

static void
test_sorted_and_deterministic(void **state)
{
    rm_stats_t *w[2] = {rm_stats_create(0), rm_stats_create(1)};
    /* created in a different order on each worker, and only some names on each */
    rm_stats_listener(w[0], "zeta");
    rm_stats_listener(w[0], "alpha");
    rm_stats_listener(w[1], "mid");
    rm_stats_listener(w[1], "zeta");
    rm_stats_cluster(w[1], "c2");
    rm_stats_cluster(w[0], "c1");

    char *a = rm_stats_render_prometheus(w, 2, 3);
    char *pa = strstr(a, "remora_downstream_connections_total{listener=\"alpha\"}");
    char *pm = strstr(a, "remora_downstream_connections_total{listener=\"mid\"}");
    char *pz = strstr(a, "remora_downstream_connections_total{listener=\"zeta\"}");
    assert_non_null(pa);
    assert_non_null(pm);
    assert_non_null(pz);
    assert_true(pa < pm && pm < pz);
    assert_true(strstr(a, "{cluster=\"c1\"}") < strstr(a, "{cluster=\"c2\"}"));
    /* every family's HELP and TYPE precede its samples */
    assert_true(strstr(a, "# TYPE remora_downstream_connections_total counter") < pa);

    rm_stats_t *rev[2] = {w[1], w[0]};
    char *b = rm_stats_render_prometheus(rev, 2, 3);
    strip_rss(a);
    strip_rss(b);
    assert_string_equal(a, b);
    free(a);
    free(b);
    rm_stats_destroy(w[0]);
    rm_stats_destroy(w[1]);
}

static void
test_empty(void **state)
{
    char *out = rm_stats_render_prometheus(NULL, 0, 0);
    assert_contains(out, "# TYPE remora_downstream_connections_total counter\n");
    assert_not_contains(out, "listener=");
    assert_contains(out, "\nremora_config_generation 0\n");
    /* a started process has a plausible start time (after 2020) and some resident memory */
    double start = 0;
    unsigned long long rss = 0;
    assert_int_equal(
        sscanf(strstr(out, "\nremora_process_start_time_seconds ") + 1, "remora_process_start_time_seconds %lf", &start), 1);
    assert_true(start > 1577836800.0);
    assert_int_equal(
        sscanf(strstr(out, "\nremora_process_resident_memory_bytes ") + 1, "remora_process_resident_memory_bytes %llu", &rss), 1);
    assert_true(rss > 0);
    free(out);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sums_across_workers),      cmocka_unit_test(test_status_classes), cmocka_unit_test(test_escaping),
        cmocka_unit_test(test_sorted_and_deterministic), cmocka_unit_test(test_empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
