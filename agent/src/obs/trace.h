/*
 * Trace context: extraction and injection of W3C Trace Context (`traceparent`, `tracestate`) and
 * B3 (the X-B3-* multi-header form and the single `b3` header), and fast trace and span ids.
 *
 * Pure: no I/O, no allocation. Header values come in as (pointer, length) pairs the caller finds in
 * the request (the strings are never copied, except tracestate's bounded copy); formatted headers
 * are written into caller buffers.
 *
 * Rules (docs/telemetry.md):
 * - traceparent version 00 is exactly "00-<32 hex>-<16 hex>-<2 hex>", lower-case hex, trace id and
 *   parent id not all zero. A higher version (not "ff") is parsed by its first 55 characters, which
 *   must be followed by nothing or by '-' (W3C Trace Context §3.2.4). Anything else is invalid.
 * - tracestate is carried only with a valid traceparent, and only up to RM_TRACE_STATE_MAX bytes:
 *   longer values are cut at the last list-member boundary that fits.
 * - B3: trace id of 16 or 32 lower-case hex (16 is left-padded with zeros), span id and parent span
 *   id of 16, none all zero; sampled "1"/"0" (also "true"/"false" in X-B3-Sampled), "d" or
 *   X-B3-Flags: 1 for debug (sampled). A single `b3` of "0", "1" or "d" is a decision without ids.
 * - W3C wins when both formats are present and valid. A malformed value of either format is
 *   reported (for the remora_trace_context_invalid_total counter) and ignored.
 *
 * Thread: any; the id generator keeps per-thread state.
 */
#ifndef remora__obs_trace_h
#define remora__obs_trace_h

#include <stddef.h>
#include <stdint.h>

/** Longest tracestate carried through (W3C: 32 members of up to 256 bytes are allowed, vendors may cut). */
#define RM_TRACE_STATE_MAX 512

/** A string from a header (base NULL: the header is absent). */
typedef struct st_rm_trace_str_t {
    const char *base;
    size_t len;
} rm_trace_str_t;

/** The trace headers of a request, as found by the caller (absent ones have base NULL). */
typedef struct st_rm_trace_carrier_t {
    rm_trace_str_t traceparent;
    rm_trace_str_t tracestate;
    rm_trace_str_t b3;
    rm_trace_str_t x_b3_traceid;
    rm_trace_str_t x_b3_spanid;
    rm_trace_str_t x_b3_parentspanid;
    rm_trace_str_t x_b3_sampled;
    rm_trace_str_t x_b3_flags;
} rm_trace_carrier_t;

/** Where a context came from. */
typedef enum en_rm_trace_source_t {
    RM_TRACE_SOURCE_NONE = 0,     /* no usable context: a new trace */
    RM_TRACE_SOURCE_W3C = 1,      /* traceparent (+ tracestate) */
    RM_TRACE_SOURCE_B3_MULTI = 2, /* X-B3-TraceId / X-B3-SpanId ... */
    RM_TRACE_SOURCE_B3_SINGLE = 3 /* b3: {trace}-{span}[-{sampled}[-{parent}]] */
} rm_trace_source_t;

/** The formats counted in remora_trace_context_invalid_total{format}. */
typedef enum en_rm_trace_format_t { RM_TRACE_FORMAT_W3C = 0, RM_TRACE_FORMAT_B3 = 1, RM_TRACE_FORMAT_MAX = 2 } rm_trace_format_t;

/** A span context received from the caller (or none). */
typedef struct st_rm_trace_ctx_t {
    uint8_t trace_id[16];
    /** the caller's span: the parent of our server span */
    uint8_t span_id[8];
    rm_trace_source_t source;
    /** the caller decided (W3C: always, via the sampled flag; B3: only when a sampled/debug value was sent) */
    unsigned has_decision : 1;
    unsigned sampled : 1;
    unsigned debug : 1;
    /** the request's traceparent / b3 single / X-B3 fields were malformed (reported, then ignored) */
    unsigned invalid_w3c : 1;
    unsigned invalid_b3 : 1;
    /** tracestate to carry on (only with source W3C); not NUL-terminated */
    size_t tracestate_len;
    char tracestate[RM_TRACE_STATE_MAX];
} rm_trace_ctx_t;

/**
 * Extracts the caller's context from `c` into `ctx` (all of it overwritten). Returns ctx->source;
 * RM_TRACE_SOURCE_NONE with ctx->has_decision set means a B3 sampling decision without ids
 * ("b3: 0", "X-B3-Sampled: 1" alone). Never fails: malformed input sets invalid_w3c / invalid_b3.
 */
rm_trace_source_t rm_trace_extract(const rm_trace_carrier_t *c, rm_trace_ctx_t *ctx);

/** Parses one traceparent value. Returns 0 and fills trace_id, span_id, sampled; -1 if invalid. */
int rm_trace_parse_traceparent(const char *v, size_t len, uint8_t trace_id[16], uint8_t span_id[8], int *sampled);

/**
 * Copies a tracestate value into `out` (RM_TRACE_STATE_MAX bytes), cut at the last ',' boundary that
 * fits when it is longer; surrounding blanks are trimmed. Returns the length written (0: nothing kept).
 */
size_t rm_trace_copy_tracestate(const char *v, size_t len, char *out);

/** Length of a formatted traceparent ("00-" 32 "-" 16 "-" 2) without the NUL. */
#define RM_TRACE_TRACEPARENT_LEN 55
/** Writes "00-<trace>-<span>-0<sampled>" plus a NUL into out[56]. */
void rm_trace_format_traceparent(char out[RM_TRACE_TRACEPARENT_LEN + 1], const uint8_t trace_id[16], const uint8_t span_id[8],
                                 int sampled);

/** Longest single b3 value: trace(32) - span(16) - d - parent(16), plus NUL. */
#define RM_TRACE_B3_MAX 69
/** Writes a single b3 value "<trace>-<span>-<1|0|d>[-<parent>]" (parent NULL: none); returns its length. */
size_t rm_trace_format_b3(char out[RM_TRACE_B3_MAX], const uint8_t trace_id[16], const uint8_t span_id[8], int sampled, int debug,
                          const uint8_t *parent_id);

/** Writes `n` bytes as 2n lower-case hex characters plus a NUL. */
void rm_trace_hex(char *out, const uint8_t *bytes, size_t n);

/** A random 64-bit value from this thread's xoshiro256** generator (seeded from getrandom). */
uint64_t rm_trace_random_u64(void);
/** New random ids, never all zero. */
void rm_trace_new_trace_id(uint8_t out[16]);
void rm_trace_new_span_id(uint8_t out[8]);

/** Counts a malformed context of `format` (remora_trace_context_invalid_total). Any thread. */
void rm_trace_count_invalid(rm_trace_format_t format);
/** The count of malformed contexts of `format` so far. Any thread. */
uint64_t rm_trace_invalid_count(rm_trace_format_t format);
/** "w3c" or "b3". */
const char *rm_trace_format_name(rm_trace_format_t format);

#endif
