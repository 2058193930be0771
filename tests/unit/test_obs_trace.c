/* Trace context (obs/trace.c): W3C traceparent/tracestate and B3 parsing, precedence, formatting, ids.
 * The traceparent cases follow the W3C Trace Context test suite (w3c/trace-context test/test.py). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "obs/trace.h"

#define S(lit) ((rm_trace_str_t){(lit), sizeof(lit) - 1})

static int
tp_valid(const char *v)
{
    uint8_t t[16], s[8];
    int sampled;
    return rm_trace_parse_traceparent(v, strlen(v), t, s, &sampled) == 0;
}

static void
hexof(char *out, const uint8_t *b, size_t n)
{
    rm_trace_hex(out, b, n);
}

static void
test_traceparent_valid(void **state)
{
    uint8_t t[16], s[8];
    int sampled = -1;
    const char *v = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    assert_int_equal(rm_trace_parse_traceparent(v, strlen(v), t, s, &sampled), 0);
    char h[33];
    hexof(h, t, 16);
    assert_string_equal(h, "0af7651916cd43dd8448eb211c80319c");
    hexof(h, s, 8);
    assert_string_equal(h, "b7ad6b7169203331");
    assert_int_equal(sampled, 1);
    v = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    assert_int_equal(rm_trace_parse_traceparent(v, strlen(v), t, s, &sampled), 0);
    assert_int_equal(sampled, 0);
    /* unknown flag bits are ignored; only bit 0 means sampled */
    v = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-09";
    assert_int_equal(rm_trace_parse_traceparent(v, strlen(v), t, s, &sampled), 0);
    assert_int_equal(sampled, 1);
    v = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-fe";
    assert_int_equal(rm_trace_parse_traceparent(v, strlen(v), t, s, &sampled), 0);
    assert_int_equal(sampled, 0);
    /* surrounding blanks (OWS) */
    assert_true(tp_valid(" 00-12345678901234567890123456789012-1234567890123456-01\t"));
}

static void
test_traceparent_future_versions(void **state)
{
    /* a later version is parsed by its version-00 prefix; more fields may follow after '-' */
    assert_true(tp_valid("01-12345678901234567890123456789012-1234567890123456-01"));
    assert_true(tp_valid("cc-12345678901234567890123456789012-1234567890123456-01-what-the-future-will-be-like"));
    assert_false(tp_valid("cc-12345678901234567890123456789012-1234567890123456-01.what-the-future-will-be-like"));
    assert_false(tp_valid("cc-12345678901234567890123456789012-1234567890123456-0"));
    /* ff is forbidden */
    assert_false(tp_valid("ff-12345678901234567890123456789012-1234567890123456-01"));
}

static void
test_traceparent_invalid(void **state)
{
    static const char *const bad[] = {
        "",
        "00",
        "00-12345678901234567890123456789012-1234567890123456-01-extra", /* version 00 has exactly 4 fields */
        "00-12345678901234567890123456789012-1234567890123456-01-",
        "0-12345678901234567890123456789012-1234567890123456-01",
        "000-12345678901234567890123456789012-1234567890123456-01",
        "0g-12345678901234567890123456789012-1234567890123456-01",
        "0A-12345678901234567890123456789012-1234567890123456-01",
        "00-00000000000000000000000000000000-1234567890123456-01", /* all-zero trace id */
        "00-12345678901234567890123456789012-0000000000000000-01", /* all-zero parent id */
        "00-1234567890123456789012345678901g-1234567890123456-01",
        "00-ABCDEF78901234567890123456789012-1234567890123456-01", /* upper case */
        "00-12345678901234567890123456789012-ABCDEF7890123456-01",
        "00-12345678901234567890123456789012-1234567890123456-0X",
        "00-1234567890123456789012345678901-1234567890123456-01",   /* 31 */
        "00-123456789012345678901234567890123-1234567890123456-01", /* 33 */
        "00-12345678901234567890123456789012-123456789012345-01",
        "00-12345678901234567890123456789012-12345678901234567-01",
        "00-12345678901234567890123456789012-1234567890123456-1",
        "00-12345678901234567890123456789012-1234567890123456-001",
        "00_12345678901234567890123456789012-1234567890123456-01",
        "00-12345678901234567890123456789012_1234567890123456-01",
        "00-12345678901234567890123456789012-1234567890123456_01",
        "00-12345678901234567890123456789012-1234567890123456-01 x",
    };
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i)
        if (tp_valid(bad[i]))
            fail_msg("accepted invalid traceparent '%s'", bad[i]);
}

static void
test_tracestate_bound(void **state)
{
    char out[RM_TRACE_STATE_MAX];
    assert_int_equal(rm_trace_copy_tracestate(" a=1,b=2 ", 9, out), 7);
    assert_memory_equal(out, "a=1,b=2", 7);
    /* 600 bytes: cut at the last member boundary under 512 */
    char big[601];
    size_t n = 0;
    while (n + 10 <= 600) {
        memcpy(big + n, n == 0 ? "k00=vvvvv" : ",k00=vvvv", 9);
        n += 9;
    }
    big[n] = '\0';
    size_t got = rm_trace_copy_tracestate(big, n, out);
    assert_true(got <= RM_TRACE_STATE_MAX);
    assert_true(got > RM_TRACE_STATE_MAX - 10);
    assert_int_equal(big[got], ',');
}

static void
test_extract_w3c_wins(void **state)
{
    rm_trace_carrier_t c = {0};
    c.traceparent = S("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
    c.tracestate = S("congo=t61rcWkgMzE");
    c.b3 = S("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0");
    rm_trace_ctx_t ctx;
    assert_int_equal(rm_trace_extract(&c, &ctx), RM_TRACE_SOURCE_W3C);
    char h[33];
    hexof(h, ctx.trace_id, 16);
    assert_string_equal(h, "0af7651916cd43dd8448eb211c80319c");
    assert_true(ctx.has_decision);
    assert_true(ctx.sampled);
    assert_int_equal(ctx.tracestate_len, strlen("congo=t61rcWkgMzE"));
    assert_memory_equal(ctx.tracestate, "congo=t61rcWkgMzE", ctx.tracestate_len);
    assert_false(ctx.invalid_w3c);
    assert_false(ctx.invalid_b3);
}

static void
test_extract_invalid_w3c_falls_back_to_b3(void **state)
{
    rm_trace_carrier_t c = {0};
    c.traceparent = S("00-00000000000000000000000000000000-b7ad6b7169203331-01");
    c.tracestate = S("congo=t61rcWkgMzE");
    c.x_b3_traceid = S("463ac35c9f6413ad48485a3953bb6124");
    c.x_b3_spanid = S("a2fb4a1d1a96d312");
    c.x_b3_sampled = S("1");
    rm_trace_ctx_t ctx;
    assert_int_equal(rm_trace_extract(&c, &ctx), RM_TRACE_SOURCE_B3_MULTI);
    assert_true(ctx.invalid_w3c);
    assert_int_equal(ctx.tracestate_len, 0); /* tracestate goes only with a valid traceparent */
    char h[33];
    hexof(h, ctx.trace_id, 16);
    assert_string_equal(h, "463ac35c9f6413ad48485a3953bb6124");
    hexof(h, ctx.span_id, 8);
    assert_string_equal(h, "a2fb4a1d1a96d312");
    assert_true(ctx.has_decision && ctx.sampled);
}

static void
test_extract_invalid_is_new_trace(void **state)
{
    rm_trace_carrier_t c = {0};
    c.traceparent = S("garbage");
    rm_trace_ctx_t ctx;
    assert_int_equal(rm_trace_extract(&c, &ctx), RM_TRACE_SOURCE_NONE);
    assert_true(ctx.invalid_w3c);
    assert_false(ctx.has_decision);
    rm_trace_carrier_t none = {0};
    assert_int_equal(rm_trace_extract(&none, &ctx), RM_TRACE_SOURCE_NONE);
    assert_false(ctx.invalid_w3c || ctx.invalid_b3 || ctx.has_decision);
}

static void
test_b3_multi(void **state)
{
    rm_trace_ctx_t ctx;
    char h[33];
    /* 64-bit trace id: left-padded */
    rm_trace_carrier_t c = {0};
    c.x_b3_traceid = S("48485a3953bb6124");
    c.x_b3_spanid = S("a2fb4a1d1a96d312");
    c.x_b3_parentspanid = S("0020000000000001");
    assert_int_equal(rm_trace_extract(&c, &ctx), RM_TRACE_SOURCE_B3_MULTI);
    hexof(h, ctx.trace_id, 16);
    assert_string_equal(h, "000000000000000048485a3953bb6124");
    assert_false(ctx.has_decision); /* deferred: sampling_percent decides */

    c.x_b3_sampled = S("0");
    assert_int_equal(rm_trace_extract(&c, &ctx), RM_TRACE_SOURCE_B3_MULTI);
    assert_true(ctx.has_decision);
    assert_false(ctx.sampled);
    c.x_b3_sampled = S("true");
    rm_trace_extract(&c, &ctx);
    assert_true(ctx.has_decision && ctx.sampled);
    /* debug implies sampled, whatever X-B3-Sampled says */
    c.x_b3_sampled = S("0");
    c.x_b3_flags = S("1");
    rm_trace_extract(&c, &ctx);
    assert_true(ctx.has_decision && ctx.sampled && ctx.debug);

    /* decision only */
    rm_trace_carrier_t d = {0};
    d.x_b3_sampled = S("1");
    assert_int_equal(rm_trace_extract(&d, &ctx), RM_TRACE_SOURCE_NONE);
    assert_true(ctx.has_decision && ctx.sampled);
    assert_false(ctx.invalid_b3);

    /* invalid forms */
    static const struct {
        rm_trace_str_t trace, span, parent, sampled;
    } bad[] = {
        {{"463ac35c9f6413ad48485a3953bb6124", 32}, {NULL, 0}, {NULL, 0}, {NULL, 0}},               /* no span id */
        {{NULL, 0}, {"a2fb4a1d1a96d312", 16}, {NULL, 0}, {NULL, 0}},                               /* no trace id */
        {{"463ac35c9f6413ad48485a3953bb612", 31}, {"a2fb4a1d1a96d312", 16}, {NULL, 0}, {NULL, 0}}, /* 31 digits */
        {{"463AC35C9F6413AD48485A3953BB6124", 32}, {"a2fb4a1d1a96d312", 16}, {NULL, 0}, {NULL, 0}},
        {{"00000000000000000000000000000000", 32}, {"a2fb4a1d1a96d312", 16}, {NULL, 0}, {NULL, 0}},
        {{"463ac35c9f6413ad48485a3953bb6124", 32}, {"0000000000000000", 16}, {NULL, 0}, {NULL, 0}},
        {{"463ac35c9f6413ad48485a3953bb6124", 32}, {"a2fb4a1d1a96d31", 15}, {NULL, 0}, {NULL, 0}},
        {{"463ac35c9f6413ad48485a3953bb6124", 32}, {"a2fb4a1d1a96d312", 16}, {"xyz", 3}, {NULL, 0}},
        {{"463ac35c9f6413ad48485a3953bb6124", 32}, {"a2fb4a1d1a96d312", 16}, {NULL, 0}, {"2", 1}},
    };
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        rm_trace_carrier_t b = {0};
        b.x_b3_traceid = bad[i].trace;
        b.x_b3_spanid = bad[i].span;
        b.x_b3_parentspanid = bad[i].parent;
        b.x_b3_sampled = bad[i].sampled;
        if (rm_trace_extract(&b, &ctx) != RM_TRACE_SOURCE_NONE || !ctx.invalid_b3)
            fail_msg("accepted invalid B3 case %zu", i);
    }
}

static void
test_b3_single(void **state)
{
    rm_trace_ctx_t ctx;
    char h[33];
    rm_trace_carrier_t c = {0};
    c.b3 = S("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90");
    assert_int_equal(rm_trace_extract(&c, &ctx), RM_TRACE_SOURCE_B3_SINGLE);
    hexof(h, ctx.trace_id, 16);
    assert_string_equal(h, "80f198ee56343ba864fe8b2a57d3eff7");
    hexof(h, ctx.span_id, 8);
    assert_string_equal(h, "e457b5a2e4d86bd1");
    assert_true(ctx.has_decision && ctx.sampled);

    c.b3 = S("80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1");
    assert_int_equal(rm_trace_extract(&c, &ctx), RM_TRACE_SOURCE_B3_SINGLE);
    assert_false(ctx.has_decision);
    c.b3 = S("64fe8b2a57d3eff7-e457b5a2e4d86bd1-d");
    assert_int_equal(rm_trace_extract(&c, &ctx), RM_TRACE_SOURCE_B3_SINGLE);
    assert_true(ctx.debug && ctx.sampled);
    hexof(h, ctx.trace_id, 16);
    assert_string_equal(h, "000000000000000064fe8b2a57d3eff7");

    /* deny / accept / debug without ids */
    c.b3 = S("0");
    assert_int_equal(rm_trace_extract(&c, &ctx), RM_TRACE_SOURCE_NONE);
    assert_true(ctx.has_decision);
    assert_false(ctx.sampled);
    assert_false(ctx.invalid_b3);
    c.b3 = S("1");
    rm_trace_extract(&c, &ctx);
    assert_true(ctx.has_decision && ctx.sampled);
    c.b3 = S("d");
    rm_trace_extract(&c, &ctx);
    assert_true(ctx.has_decision && ctx.sampled && ctx.debug);

    static const char *const bad[] = {
        "",
        "2",
        "true",
        "80f198ee56343ba864fe8b2a57d3eff7",
        "80f198ee56343ba864fe8b2a57d3eff7-",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-2",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b9",
        "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-1-05e3ac9a4f6e3b90-x",
        "80f198ee56343ba864fe8b2a57d3eff-e457b5a2e4d86bd1-1",
        "00000000000000000000000000000000-e457b5a2e4d86bd1-1",
        "80f198ee56343ba864fe8b2a57d3eff7-0000000000000000-1",
        "80F198EE56343BA864FE8B2A57D3EFF7-e457b5a2e4d86bd1-1",
    };
    for (size_t i = 0; i != sizeof(bad) / sizeof(bad[0]); ++i) {
        rm_trace_carrier_t b = {0};
        b.b3 = (rm_trace_str_t){bad[i], strlen(bad[i])};
        if (rm_trace_extract(&b, &ctx) != RM_TRACE_SOURCE_NONE || !ctx.invalid_b3 || ctx.has_decision)
            fail_msg("accepted invalid b3 '%s'", bad[i]);
    }
}

static void
test_format(void **state)
{
    uint8_t t[16], s[8], p[8];
    for (int i = 0; i != 16; ++i)
        t[i] = (uint8_t)(0x10 + i);
    for (int i = 0; i != 8; ++i) {
        s[i] = (uint8_t)(0xa0 + i);
        p[i] = (uint8_t)(0x01 + i);
    }
    char tp[RM_TRACE_TRACEPARENT_LEN + 1];
    rm_trace_format_traceparent(tp, t, s, 1);
    assert_string_equal(tp, "00-101112131415161718191a1b1c1d1e1f-a0a1a2a3a4a5a6a7-01");
    rm_trace_format_traceparent(tp, t, s, 0);
    assert_string_equal(tp, "00-101112131415161718191a1b1c1d1e1f-a0a1a2a3a4a5a6a7-00");
    assert_true(tp_valid(tp));
    char b3[RM_TRACE_B3_MAX];
    assert_int_equal(rm_trace_format_b3(b3, t, s, 1, 0, NULL), 51);
    assert_string_equal(b3, "101112131415161718191a1b1c1d1e1f-a0a1a2a3a4a5a6a7-1");
    assert_int_equal(rm_trace_format_b3(b3, t, s, 0, 1, p), 68);
    assert_string_equal(b3, "101112131415161718191a1b1c1d1e1f-a0a1a2a3a4a5a6a7-d-0102030405060708");
    /* what we format, we parse */
    rm_trace_carrier_t c = {0};
    c.b3 = (rm_trace_str_t){b3, strlen(b3)};
    rm_trace_ctx_t ctx;
    assert_int_equal(rm_trace_extract(&c, &ctx), RM_TRACE_SOURCE_B3_SINGLE);
    assert_memory_equal(ctx.trace_id, t, 16);
    assert_memory_equal(ctx.span_id, s, 8);
}

static void
test_ids(void **state)
{
    uint8_t a[16], b[16], s1[8], s2[8];
    static const uint8_t zero[16];
    for (int i = 0; i != 1000; ++i) {
        rm_trace_new_trace_id(a);
        rm_trace_new_trace_id(b);
        assert_memory_not_equal(a, zero, 16);
        assert_memory_not_equal(a, b, 16);
        rm_trace_new_span_id(s1);
        rm_trace_new_span_id(s2);
        assert_memory_not_equal(s1, zero, 8);
        assert_memory_not_equal(s1, s2, 8);
    }
    /* roughly uniform bits */
    unsigned ones = 0;
    for (int i = 0; i != 1000; ++i)
        ones += (unsigned)__builtin_popcountll(rm_trace_random_u64());
    assert_in_range(ones, 30000, 34000);
}

static void
test_invalid_counters(void **state)
{
    uint64_t w = rm_trace_invalid_count(RM_TRACE_FORMAT_W3C), b = rm_trace_invalid_count(RM_TRACE_FORMAT_B3);
    rm_trace_count_invalid(RM_TRACE_FORMAT_W3C);
    rm_trace_count_invalid(RM_TRACE_FORMAT_B3);
    rm_trace_count_invalid(RM_TRACE_FORMAT_B3);
    assert_int_equal(rm_trace_invalid_count(RM_TRACE_FORMAT_W3C), w + 1);
    assert_int_equal(rm_trace_invalid_count(RM_TRACE_FORMAT_B3), b + 2);
    assert_string_equal(rm_trace_format_name(RM_TRACE_FORMAT_W3C), "w3c");
    assert_string_equal(rm_trace_format_name(RM_TRACE_FORMAT_B3), "b3");
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_traceparent_valid),
        cmocka_unit_test(test_traceparent_future_versions),
        cmocka_unit_test(test_traceparent_invalid),
        cmocka_unit_test(test_tracestate_bound),
        cmocka_unit_test(test_extract_w3c_wins),
        cmocka_unit_test(test_extract_invalid_w3c_falls_back_to_b3),
        cmocka_unit_test(test_extract_invalid_is_new_trace),
        cmocka_unit_test(test_b3_multi),
        cmocka_unit_test(test_b3_single),
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_ids),
        cmocka_unit_test(test_invalid_counters),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
