/*
 * Fuzz target for trace-context extraction (obs/trace.c): the input is split at '\n' into the eight
 * carrier headers in order (traceparent, tracestate, b3, x-b3-traceid, x-b3-spanid,
 * x-b3-parentspanid, x-b3-sampled, x-b3-flags); a missing line is an absent header.
 *
 * Besides "no crash, no UB" it checks, for any input:
 *   - an extracted context never has an all-zero id, and tracestate fits its bound;
 *   - a context formatted again (traceparent, b3) parses back to the same ids and decision;
 *   - a malformed traceparent is never the source.
 * A violated property aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "obs/trace.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_trace: property violated: %s\n", what);
        abort();
    }
}

static int
zero(const uint8_t *b, size_t n)
{
    for (size_t i = 0; i != n; ++i)
        if (b[i] != 0)
            return 0;
    return 1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rm_trace_str_t f[8] = {{NULL, 0}};
    const char *p = (const char *)data, *end = p + size;
    for (int i = 0; i != 8 && p <= end; ++i) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        const char *e = nl != NULL ? nl : end;
        f[i] = (rm_trace_str_t){p, (size_t)(e - p)};
        if (nl == NULL)
            break;
        p = nl + 1;
    }
    rm_trace_carrier_t c = {f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7]};
    rm_trace_ctx_t ctx;
    rm_trace_source_t src = rm_trace_extract(&c, &ctx);
    check(ctx.tracestate_len <= RM_TRACE_STATE_MAX, "tracestate bound");
    if (src == RM_TRACE_SOURCE_NONE)
        return 0;
    check(!zero(ctx.trace_id, 16) && !zero(ctx.span_id, 8), "non-zero ids");
    if (src == RM_TRACE_SOURCE_W3C)
        check(!ctx.invalid_w3c, "a malformed traceparent is not the source");
    else
        check(ctx.tracestate_len == 0, "tracestate only with traceparent");

    char tp[RM_TRACE_TRACEPARENT_LEN + 1];
    rm_trace_format_traceparent(tp, ctx.trace_id, ctx.span_id, ctx.sampled);
    uint8_t t[16], s[8];
    int sampled;
    check(rm_trace_parse_traceparent(tp, strlen(tp), t, s, &sampled) == 0, "formatted traceparent parses");
    check(memcmp(t, ctx.trace_id, 16) == 0 && memcmp(s, ctx.span_id, 8) == 0 && sampled == ctx.sampled, "traceparent round trip");

    char b3[RM_TRACE_B3_MAX];
    size_t n = rm_trace_format_b3(b3, ctx.trace_id, ctx.span_id, ctx.sampled, ctx.debug, ctx.span_id);
    rm_trace_carrier_t c2 = {.b3 = {b3, n}};
    rm_trace_ctx_t ctx2;
    check(rm_trace_extract(&c2, &ctx2) == RM_TRACE_SOURCE_B3_SINGLE, "formatted b3 parses");
    check(memcmp(ctx2.trace_id, ctx.trace_id, 16) == 0 && memcmp(ctx2.span_id, ctx.span_id, 8) == 0, "b3 round trip ids");
    check(ctx2.has_decision && ctx2.sampled == (ctx.sampled || ctx.debug) && ctx2.debug == ctx.debug, "b3 round trip decision");
    return 0;
}
