/* Latency histograms and bounded labelled families: bucket lookup, merging, the series cap, both exposition formats. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "obs/histogram.h"
#include "obs/series.h"
#include "obs/stats.h"

static void
assert_contains(const char *text, const char *needle)
{
    if (strstr(text, needle) == NULL)
        fail_msg("missing: %s\n--- output ---\n%s", needle, text);
}

static void
assert_not_contains(const char *text, const char *needle)
{
    if (strstr(text, needle) != NULL)
        fail_msg("unexpected: %s\n--- output ---\n%s", needle, text);
}

/* The O(1) lookup agrees with a linear scan for every microsecond value up to past the last bound. */
static void
test_bucket_lookup(void **state)
{
    unsigned expect = 0;
    for (uint64_t us = 0; us <= 30000100; ++us) {
        while (expect < RM_HISTOGRAM_NUM_BOUNDS && rm_histogram_bounds_us[expect] < us)
            ++expect;
        if (rm_histogram_bucket(us) != expect)
            fail_msg("bucket of %llu us: %u, expected %u", (unsigned long long)us, rm_histogram_bucket(us), expect);
    }
    assert_int_equal(rm_histogram_bucket(UINT64_MAX), RM_HISTOGRAM_NUM_BOUNDS);
    /* `le` is inclusive */
    assert_int_equal(rm_histogram_bucket(500), 0);
    assert_int_equal(rm_histogram_bucket(501), 1);
    assert_int_equal(rm_histogram_bucket(1000), 2);
    assert_int_equal(rm_histogram_bucket(30000000), RM_HISTOGRAM_NUM_BOUNDS - 1);
    assert_int_equal(rm_histogram_bucket(30000001), RM_HISTOGRAM_NUM_BOUNDS);
    /* the text bounds say the same as the numeric ones */
    for (unsigned i = 0; i != RM_HISTOGRAM_NUM_BOUNDS; ++i)
        assert_int_equal((uint64_t)(strtod(rm_histogram_bounds_text[i], NULL) * 1e6 + 0.5), rm_histogram_bounds_us[i]);
}

static rm_series_family_t *family;

static int
setup_family(void **state)
{
    if (family == NULL) {
        static const rm_series_family_spec_t spec = {
            .name = "test_duration_seconds",
            .help = "Test durations.",
            .kind = RM_SERIES_HISTOGRAM,
            .labels = {"direction", "route", "status_code"},
            .num_labels = 3,
            .count_name = "test_responses_total",
            .count_help = "Test responses.",
            .total_name = "test_requests_total",
            .total_help = "Test requests.",
            .total_labels = 2,
        };
        family = rm_series_family_register(&spec);
    }
    return 0;
}

static void
test_series_merge_and_render(void **state)
{
    rm_stats_t *w[2] = {rm_stats_create(0), rm_stats_create(1)};
    const char *ok[3] = {"in", "r1", "200"}, *bad[3] = {"in", "r1", "503"}, *other[3] = {"in", "r2", ""};

    rm_series_t *a = rm_series_get(w[0], family, ok);
    assert_non_null(a);
    assert_ptr_equal(rm_series_get(w[0], family, ok), a);                         /* found again in the worker's table */
    rm_histogram_observe(&a->histogram, 400);                                     /* 0.0005 */
    rm_histogram_observe(&a->histogram, 1200);                                    /* 0.0015 */
    rm_histogram_observe(&rm_series_get(w[1], family, ok)->histogram, 2500000);   /* 3 */
    rm_histogram_observe(&rm_series_get(w[1], family, bad)->histogram, 40000000); /* +Inf */
    rm_histogram_observe(&rm_series_get(w[0], family, other)->histogram, 10);
    static const uint8_t trace_id[16] = {0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6,
                                         0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36};
    rm_histogram_set_exemplar(&a->histogram, rm_histogram_bucket(1200), trace_id, 1200);

    char *out = rm_stats_render_prometheus(w, 2, 1);
    assert_contains(out, "# TYPE test_requests_total counter\n"
                         "test_requests_total{direction=\"in\",route=\"r1\"} 4\n"
                         "test_requests_total{direction=\"in\",route=\"r2\"} 1\n");
    assert_contains(out, "# TYPE test_responses_total counter\n"
                         "test_responses_total{direction=\"in\",route=\"r1\",status_code=\"200\"} 3\n"
                         "test_responses_total{direction=\"in\",route=\"r1\",status_code=\"503\"} 1\n"
                         "test_responses_total{direction=\"in\",route=\"r2\"} 1\n");
    assert_contains(out, "# TYPE test_duration_seconds histogram\n"
                         "test_duration_seconds_bucket{direction=\"in\",route=\"r1\",status_code=\"200\",le=\"0.0005\"} 1\n");
    assert_contains(out, "test_duration_seconds_bucket{direction=\"in\",route=\"r1\",status_code=\"200\",le=\"0.0015\"} 2\n");
    assert_contains(out, "test_duration_seconds_bucket{direction=\"in\",route=\"r1\",status_code=\"200\",le=\"2\"} 2\n");
    assert_contains(out, "test_duration_seconds_bucket{direction=\"in\",route=\"r1\",status_code=\"200\",le=\"3\"} 3\n");
    assert_contains(out, "test_duration_seconds_bucket{direction=\"in\",route=\"r1\",status_code=\"200\",le=\"+Inf\"} 3\n"
                         "test_duration_seconds_count{direction=\"in\",route=\"r1\",status_code=\"200\"} 3\n"
                         "test_duration_seconds_sum{direction=\"in\",route=\"r1\",status_code=\"200\"} 2.501600\n");
    assert_contains(out, "test_duration_seconds_bucket{direction=\"in\",route=\"r1\",status_code=\"503\",le=\"30\"} 0\n"
                         "test_duration_seconds_bucket{direction=\"in\",route=\"r1\",status_code=\"503\",le=\"+Inf\"} 1\n");
    assert_contains(out, "remora_metrics_series_dropped_total{family=\"test_duration_seconds\"} 0\n");
    assert_not_contains(out, "# {trace_id"); /* no exemplars in the 0.0.4 text */
    assert_not_contains(out, "# EOF");
    free(out);

    out = rm_stats_render(w, 2, 1, RM_STATS_OPENMETRICS);
    assert_contains(out, "# TYPE test_requests counter\ntest_requests_total{direction=\"in\",route=\"r1\"} 4\n");
    assert_contains(out, "# TYPE test_responses counter\n");
    assert_contains(out, "test_duration_seconds_bucket{direction=\"in\",route=\"r1\",status_code=\"200\",le=\"0.0015\"} 2 # "
                         "{trace_id=\"4bf92f3577b34da6a3ce929d0e0e4736\"} 0.001200 ");
    assert_contains(out, "# TYPE remora_metrics_series_dropped counter\n");
    assert_contains(out, "# TYPE remora_config_generation gauge\n");
    assert_contains(out, "# TYPE process_cpu_seconds counter\nprocess_cpu_seconds_total ");
    assert_int_equal(strcmp(out + strlen(out) - 6, "# EOF\n"), 0);
    free(out);

    rm_stats_destroy(w[0]);
    rm_stats_destroy(w[1]);
}

static void
test_series_cap(void **state)
{
    rm_stats_t *w[2] = {rm_stats_create(0), rm_stats_create(1)};
    char route[16];
    const char *v[3] = {"cap", route, "200"};

    /* the family already holds the other tests' tuples (or none when run alone): the cap is set above that */
    char *before = rm_stats_render_prometheus(w, 2, 1);
    unsigned existing = 0;
    for (const char *p = before; (p = strstr(p, "\ntest_responses_total{")) != NULL; ++p)
        ++existing;
    free(before);
    rm_series_set_limit(existing + 2);
    unsigned made = 0, dropped = 0;
    int first_made = -1;
    for (int i = 0; i != 10; ++i) {
        snprintf(route, sizeof(route), "c%d", i);
        rm_series_t *s = rm_series_get(w[i % 2], family, v);
        if (s != NULL) {
            rm_histogram_observe(&s->histogram, 1);
            if (first_made < 0)
                first_made = i;
            ++made;
        } else {
            ++dropped;
        }
    }
    assert_int_equal(made, 2);
    assert_int_equal(dropped, 8);
    /* an existing tuple still counts on the other worker at the cap */
    snprintf(route, sizeof(route), "c%d", first_made);
    assert_non_null(rm_series_get(w[1 - first_made % 2], family, v));
    char *out = rm_stats_render_prometheus(w, 2, 1);
    char line[128];
    snprintf(line, sizeof(line), "remora_metrics_series_dropped_total{family=\"test_requests_total\"} %u\n", dropped);
    assert_contains(out, line);
    snprintf(line, sizeof(line), "remora_metrics_series_dropped_total{family=\"test_duration_seconds\"} %u\n", dropped);
    assert_contains(out, line);
    free(out);
    rm_series_set_limit(0);
    rm_stats_destroy(w[0]);
    rm_stats_destroy(w[1]);
}

static void
test_series_cache(void **state)
{
    rm_stats_t *w = rm_stats_create(0);
    const char *v[3] = {"cached", "r", "200"}, *v2[3] = {"cached", "r", "500"};
    uint64_t ident[RM_SERIES_IDENT_WORDS] = {7, 1, 2, 3, 200}, ident2[RM_SERIES_IDENT_WORDS] = {7, 1, 2, 3, 500};

    assert_null(rm_series_cached(w, family, ident));
    rm_series_t *s = rm_series_get_cached(w, family, ident, v);
    assert_non_null(s);
    assert_ptr_equal(rm_series_cached(w, family, ident), s);
    assert_ptr_equal(rm_series_get(w, family, v), s);
    /* another ident is another entry (or a miss), never the first series */
    assert_true(rm_series_cached(w, family, ident2) != s);
    rm_series_t *s2 = rm_series_get_cached(w, family, ident2, v2);
    assert_non_null(s2);
    assert_true(s2 != s);
    assert_ptr_equal(rm_series_cached(w, family, ident2), s2);
    rm_stats_destroy(w);
}

static char *
legacy_renderer(void)
{
    return strdup("# HELP legacy_things_total Things, \"quoted\".\n# TYPE legacy_things_total counter\nlegacy_things_total 3\n\n"
                  "# HELP legacy_count A counter without the suffix.\n# TYPE legacy_count counter\nlegacy_count 1\n"
                  "# a comment\n");
}

static void
test_openmetrics_conversion(void **state)
{
    rm_stats_register_renderer(legacy_renderer);
    rm_stats_t *w[1] = {rm_stats_create(0)};
    RM_STAT_ADD(rm_stats_listener(w[0], "main")->cx_total, 2);
    char *out = rm_stats_render(w, 1, 1, RM_STATS_OPENMETRICS);
    assert_contains(out, "# HELP remora_downstream_connections Downstream connections accepted.\n"
                         "# TYPE remora_downstream_connections counter\n"
                         "remora_downstream_connections_total{listener=\"main\"} 2\n");
    assert_contains(out, "# HELP legacy_things Things, \\\"quoted\\\".\n# TYPE legacy_things counter\nlegacy_things_total 3\n");
    assert_contains(out, "# TYPE legacy_count unknown\nlegacy_count 1\n");
    assert_not_contains(out, "\n\n");
    assert_not_contains(out, "# a comment");
    free(out);
    out = rm_stats_render_prometheus(w, 1, 1);
    assert_contains(out, "# TYPE legacy_things_total counter\nlegacy_things_total 3\n");
    free(out);
    rm_stats_destroy(w[0]);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bucket_lookup),
        cmocka_unit_test_setup(test_series_merge_and_render, setup_family),
        cmocka_unit_test_setup(test_series_cache, setup_family),
        cmocka_unit_test_setup(test_series_cap, setup_family),
        cmocka_unit_test(test_openmetrics_conversion),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
