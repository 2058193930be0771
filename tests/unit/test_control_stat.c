/*
 * Golden metrics over a window (control/src/stat.c, `remoractl stat`): quantiles as Prometheus'
 * histogram_quantile, the baseline of the window (a kept summary, the agent's start, or the oldest
 * kept), summaries thinned to one per RM_STAT_SPACING_MS, an agent restart starting the history over,
 * grouping by Service / route / (agent, backend), the namespace filter, and malformed summaries refused.
 */
#include <math.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "stat.h"

static uint64_t bounds[] = {1000, 2000, 4000};

/* One summary: series (route, backend, requests, failures), every request in the 1-2 ms bucket. */
typedef struct {
    const char *route, *backend;
    uint64_t requests, failures;
} in_series_t;

static int
add(rm_stat_history_t *h, uint64_t recv_ms, uint64_t mono_ms, uint64_t uptime_ms, const in_series_t *in, size_t n)
{
    Remora__V1__Stats msg = REMORA__V1__STATS__INIT;
    Remora__V1__StatSeries series[8], *ptrs[8];
    uint64_t buckets[8][4];
    for (size_t i = 0; i != n; ++i) {
        remora__v1__stat_series__init(&series[i]);
        series[i].direction = "main";
        series[i].route = (char *)in[i].route;
        series[i].backend = (char *)in[i].backend;
        series[i].requests = in[i].requests;
        series[i].failures = in[i].failures;
        memset(buckets[i], 0, sizeof(buckets[i]));
        buckets[i][1] = in[i].requests;
        series[i].n_buckets = 4;
        series[i].buckets = buckets[i];
        ptrs[i] = &series[i];
    }
    msg.monotonic_ms = mono_ms;
    msg.uptime_ms = uptime_ms;
    msg.n_bounds_us = 3;
    msg.bounds_us = bounds;
    msg.n_series = n;
    msg.series = ptrs;
    char err[256];
    return rm_stat_history_add(h, &msg, recv_ms, err, sizeof(err));
}

static size_t
query(const rm_stat_history_t *const *hs, const char *const *nodes, size_t n, rm_stat_by_t by, uint64_t window_ms, const char *ns,
      uint64_t now_ms, rm_stat_row_t *out, size_t max)
{
    rm_stat_query_t *q = rm_stat_query_create(by, window_ms, ns, now_ms);
    for (size_t i = 0; i != n; ++i)
        rm_stat_query_add(q, nodes[i], hs[i]);
    const rm_stat_row_t *rows;
    size_t num = rm_stat_query_rows(q, &rows);
    assert_true(num <= max);
    static char names[16][128], nodes_out[16][64];
    for (size_t i = 0; i != num; ++i) {
        out[i] = rows[i];
        snprintf(names[i], sizeof(names[i]), "%s", rows[i].name);
        snprintf(nodes_out[i], sizeof(nodes_out[i]), "%s", rows[i].node_id);
        out[i].name = names[i];
        out[i].node_id = nodes_out[i];
    }
    rm_stat_query_destroy(q);
    return num;
}

static void
test_quantiles(void **state)
{
    /* histogram_quantile: linear inside the bucket, the first bucket from 0, +Inf -> the highest bound */
    uint64_t b1[] = {1, 2, 1, 0};
    assert_true(fabs(rm_stat_quantile_ms(0.5, bounds, 3, b1) - 1.5) < 1e-9);  /* rank 2: half of (1, 2] */
    assert_true(fabs(rm_stat_quantile_ms(0.25, bounds, 3, b1) - 1.0) < 1e-9); /* rank 1: the end of [0, 1] */
    assert_true(fabs(rm_stat_quantile_ms(0.1, bounds, 3, b1) - 0.4) < 1e-9);
    assert_true(fabs(rm_stat_quantile_ms(0.99, bounds, 3, b1) - 3.92) < 1e-9);
    uint64_t inf[] = {0, 0, 0, 5};
    assert_true(rm_stat_quantile_ms(0.5, bounds, 3, inf) == 4.0);
    uint64_t none[] = {0, 0, 0, 0};
    assert_true(rm_stat_quantile_ms(0.5, bounds, 3, none) == 0);
}

static void
test_window_baselines(void **state)
{
    /* an agent up for a long time (900 s), one summary per second from t=1000 s to 1120 s, 10 requests a second */
    rm_stat_history_t *h = rm_stat_history_create();
    for (uint64_t t = 0; t <= 120; ++t) {
        in_series_t s = {"web.default/default/1", "web.default", 1000 + 10 * t, 100 + t};
        assert_int_equal(add(h, 1000000 + t * 1000, 500000 + t * 1000, 900000 + t * 1000, &s, 1), 0);
    }
    const rm_stat_history_t *hs[] = {h};
    const char *nodes[] = {"a"};
    rm_stat_row_t rows[4];
    /* the window starts at 1060 s: a kept summary (one per 5 s) is exactly there */
    assert_int_equal(query(hs, nodes, 1, RM_STAT_BY_SERVICE, 60000, NULL, 1120000, rows, 4), 1);
    assert_string_equal(rows[0].name, "web.default");
    assert_int_equal(rows[0].requests, 600);
    assert_int_equal(rows[0].failures, 60);
    assert_true(fabs(rows[0].rps - 10) < 1e-9);
    assert_true(fabs(rows[0].success_rate - 0.9) < 1e-9);
    assert_true(rows[0].p50_ms > 1 && rows[0].p50_ms <= 2);
    /* 10 s at 1122 s: the newest summary kept at or before 1112 s is the one of 1110 s (kept 5 s apart) */
    assert_int_equal(query(hs, nodes, 1, RM_STAT_BY_SERVICE, 10000, NULL, 1122000, rows, 4), 1);
    assert_int_equal(rows[0].requests, 100);
    assert_true(fabs(rows[0].rps - 10) < 1e-9);
    /* a window reaching before the oldest summary kept, the agent older still: from the oldest, rate over what is covered */
    assert_int_equal(query(hs, nodes, 1, RM_STAT_BY_SERVICE, 600000, NULL, 1120000, rows, 4), 1);
    assert_int_equal(rows[0].requests, 1200);
    assert_true(fabs(rows[0].rps - 10) < 1e-9);
    /* nothing heard within the window */
    assert_int_equal(query(hs, nodes, 1, RM_STAT_BY_SERVICE, 60000, NULL, 1200000, rows, 4), 0);
    rm_stat_history_destroy(h);
}

static void
test_young_agent_and_restart(void **state)
{
    rm_stat_history_t *h = rm_stat_history_create();
    const rm_stat_history_t *hs[] = {h};
    const char *nodes[] = {"a"};
    rm_stat_row_t rows[4];
    /* one summary, 2 s after the agent started: every request since its start counts */
    in_series_t s = {"r", "web.default", 50, 5};
    assert_int_equal(add(h, 10000, 7000, 2000, &s, 1), 0);
    assert_int_equal(query(hs, nodes, 1, RM_STAT_BY_SERVICE, 60000, NULL, 10500, rows, 4), 1);
    assert_int_equal(rows[0].requests, 50);
    assert_true(fabs(rows[0].rps - 25) < 1e-9);
    s.requests = 80;
    assert_int_equal(add(h, 11000, 8000, 3000, &s, 1), 0);
    /* restarted: uptime and counters went down; the new process is counted from its own start */
    s.requests = 7;
    s.failures = 1;
    assert_int_equal(add(h, 12000, 1000, 500, &s, 1), 0);
    assert_int_equal(query(hs, nodes, 1, RM_STAT_BY_SERVICE, 60000, NULL, 12000, rows, 4), 1);
    assert_int_equal(rows[0].requests, 7);
    assert_int_equal(rows[0].failures, 1);
    /* counters down without an uptime that says so: also a restart */
    s.requests = 3;
    s.failures = 0;
    assert_int_equal(add(h, 13000, 2000, 1500, &s, 1), 0);
    assert_int_equal(query(hs, nodes, 1, RM_STAT_BY_SERVICE, 60000, NULL, 13000, rows, 4), 1);
    assert_int_equal(rows[0].requests, 3);
    rm_stat_history_destroy(h);
}

static void
test_grouping_and_namespaces(void **state)
{
    rm_stat_history_t *a = rm_stat_history_create(), *b = rm_stat_history_create();
    in_series_t sa[] = {{"web.default/api/1", "web.default", 30, 3},
                        {"web.default/default/2", "web.default", 10, 0},
                        {"db.prod/default/3", "db.prod", 4, 4}};
    in_series_t sb[] = {{"web.default/api/1", "web.default", 20, 2}};
    assert_int_equal(add(a, 1000, 1000, 1000, sa, 3), 0);
    assert_int_equal(add(b, 1000, 9000, 1000, sb, 1), 0);
    const rm_stat_history_t *hs[] = {a, b};
    const char *nodes[] = {"node-a", "node-b"};
    rm_stat_row_t rows[8];
    assert_int_equal(query(hs, nodes, 2, RM_STAT_BY_SERVICE, 60000, NULL, 1000, rows, 8), 2);
    assert_string_equal(rows[0].name, "db.prod");
    assert_int_equal(rows[0].agents, 1);
    assert_true(rows[0].success_rate == 0);
    assert_string_equal(rows[1].name, "web.default");
    assert_int_equal(rows[1].agents, 2);
    assert_int_equal(rows[1].requests, 60);
    assert_true(fabs(rows[1].rps - 60) < 1e-9);
    assert_int_equal(query(hs, nodes, 2, RM_STAT_BY_ROUTE, 60000, NULL, 1000, rows, 8), 3);
    assert_string_equal(rows[0].name, "db.prod/default/3");
    assert_string_equal(rows[1].name, "web.default/api/1");
    assert_int_equal(rows[1].requests, 50);
    assert_int_equal(rows[1].agents, 2);
    assert_int_equal(query(hs, nodes, 2, RM_STAT_BY_BACKEND, 60000, NULL, 1000, rows, 8), 3);
    assert_string_equal(rows[1].node_id, "node-a");
    assert_int_equal(rows[1].requests, 40);
    assert_string_equal(rows[2].node_id, "node-b");
    assert_int_equal(rows[2].requests, 20);
    assert_int_equal(query(hs, nodes, 2, RM_STAT_BY_ROUTE, 60000, "prod", 1000, rows, 8), 1);
    assert_string_equal(rows[0].name, "db.prod/default/3");
    assert_int_equal(query(hs, nodes, 2, RM_STAT_BY_SERVICE, 60000, "fault", 1000, rows, 8), 0);
    rm_stat_history_destroy(a);
    rm_stat_history_destroy(b);
}

static void
test_malformed_and_parse(void **state)
{
    rm_stat_history_t *h = rm_stat_history_create();
    Remora__V1__Stats msg = REMORA__V1__STATS__INIT;
    char err[256];
    assert_int_equal(rm_stat_history_add(h, &msg, 0, err, sizeof(err)), -1); /* no bounds */
    uint64_t down[] = {2000, 1000};
    msg.n_bounds_us = 2;
    msg.bounds_us = down;
    assert_int_equal(rm_stat_history_add(h, &msg, 0, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "ascending"));
    Remora__V1__StatSeries s = REMORA__V1__STAT_SERIES__INIT, *ps = &s;
    uint64_t two[] = {1, 1};
    s.n_buckets = 2;
    s.buckets = two;
    msg.bounds_us = bounds;
    msg.n_bounds_us = 3;
    msg.n_series = 1;
    msg.series = &ps;
    assert_int_equal(rm_stat_history_add(h, &msg, 0, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "buckets"));
    assert_int_equal(rm_stat_history_newest_ms(h), 0);
    rm_stat_history_destroy(h);

    rm_stat_by_t by;
    assert_int_equal(rm_stat_by_parse("", &by), 0);
    assert_int_equal(by, RM_STAT_BY_SERVICE);
    assert_int_equal(rm_stat_by_parse("route", &by), 0);
    assert_int_equal(by, RM_STAT_BY_ROUTE);
    assert_int_equal(rm_stat_by_parse("backend", &by), 0);
    assert_int_equal(by, RM_STAT_BY_BACKEND);
    assert_int_equal(rm_stat_by_parse("pod", &by), -1);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_quantiles),
        cmocka_unit_test(test_window_baselines),
        cmocka_unit_test(test_young_agent_and_restart),
        cmocka_unit_test(test_grouping_and_namespaces),
        cmocka_unit_test(test_malformed_and_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
