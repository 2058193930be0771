/* Span records and the exporter's counters (obs/otlp.c) without a telemetry thread: attribute and
 * string bounds, drops while no exporter runs, the /metrics text, a module that cannot be loaded. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "obs/otlp.h"
#include "obs/trace.h"

static void
test_span_bounds(void **state)
{
    rm_otlp_span_t *s = rm_otlp_span_new();
    rm_otlp_span_set_name(s, "GET", 3);
    assert_int_equal(s->name_len, 3);
    assert_memory_equal(rm_otlp_span_str(s, s->name_off), "GET", 3);
    char big[1000];
    memset(big, 'x', sizeof(big));
    /* a value is cut at RM_OTLP_ATTR_VALUE_MAX */
    rm_otlp_span_add_str(s, "k0", big, sizeof(big));
    assert_int_equal(s->attrs[0].v.str.len, RM_OTLP_ATTR_VALUE_MAX);
    rm_otlp_span_add_int(s, "k1", -7);
    rm_otlp_span_add_bool(s, "k2", 5);
    assert_int_equal(s->attrs[1].v.i, -7);
    assert_int_equal(s->attrs[2].v.b, 1);
    /* fill the strings area: later string values are dropped, counted */
    for (int i = 0; i != 10; ++i)
        rm_otlp_span_add_str(s, "more", big, sizeof(big));
    assert_true(s->strings_used <= RM_OTLP_SPAN_STRINGS);
    assert_true(s->dropped_attrs > 0);
    /* and the attribute array */
    for (int i = 0; i != RM_OTLP_MAX_ATTRS + 5; ++i)
        rm_otlp_span_add_int(s, "n", i);
    assert_int_equal(s->num_attrs, RM_OTLP_MAX_ATTRS);
    for (uint32_t i = 0; i != s->num_attrs; ++i)
        if (s->attrs[i].type == RM_OTLP_ATTR_STRING)
            assert_true(s->attrs[i].v.str.off + s->attrs[i].v.str.len <= RM_OTLP_SPAN_STRINGS);
    rm_otlp_span_free(s);
}

static void
test_submit_without_exporter_drops(void **state)
{
    rm_otlp_counters_t before, after;
    rm_otlp_counters(&before);
    assert_false(rm_otlp_accepting());
    rm_otlp_submit(rm_otlp_span_new());
    rm_otlp_count_dropped(2);
    rm_otlp_counters(&after);
    assert_int_equal(after.dropped_queue_full, before.dropped_queue_full + 3);
    assert_int_equal(after.exported, before.exported);
}

static void
test_disabled_configure_costs_nothing(void **state)
{
    rm_otlp_settings_t off = {.enabled = 0};
    char err[256] = "";
    assert_int_equal(rm_otlp_configure(&off, err, sizeof(err)), 0);
    assert_false(rm_otlp_accepting());
    rm_otlp_shutdown(10); /* nothing runs: a no-op */
}

static void
test_missing_module_is_an_error(void **state)
{
    setenv("REMORA_AGENT_MODULE_DIR", "/nonexistent", 1);
    rm_otlp_settings_t on = {.enabled = 1, .endpoint = "127.0.0.1:1", .transport = RM_OTLP_TRANSPORT_GRPC};
    char err[2048] = "";
    /* the unit test's directory has no remora-agent-otlp.so */
    if (rm_otlp_configure(&on, err, sizeof(err)) == 0) {
        rm_otlp_shutdown(10);
        skip();
    }
    assert_non_null(strstr(err, "remora-agent-otlp.so"));
    assert_false(rm_otlp_accepting());
}

static void
test_render(void **state)
{
    rm_trace_count_invalid(RM_TRACE_FORMAT_B3);
    char *text = rm_otlp_render();
    assert_non_null(strstr(text, "# TYPE remora_trace_spans_total counter\n"));
    assert_non_null(strstr(text, "remora_trace_spans_total{result=\"exported\"} "));
    assert_non_null(strstr(text, "remora_trace_spans_total{result=\"dropped_queue_full\"} "));
    assert_non_null(strstr(text, "remora_trace_spans_total{result=\"export_failed\"} "));
    assert_non_null(strstr(text, "remora_trace_export_batches_total{result=\"ok\"} "));
    assert_non_null(strstr(text, "remora_trace_context_invalid_total{format=\"w3c\"} "));
    assert_non_null(strstr(text, "remora_trace_context_invalid_total{format=\"b3\"} 1\n"));
    free(text);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_span_bounds),
        cmocka_unit_test(test_submit_without_exporter_drops),
        cmocka_unit_test(test_disabled_configure_costs_nothing),
        cmocka_unit_test(test_missing_module_is_an_error),
        cmocka_unit_test(test_render),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
