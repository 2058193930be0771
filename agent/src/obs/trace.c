#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>
#include "obs/trace.h"

static uint64_t invalid_counts[RM_TRACE_FORMAT_MAX];

void
rm_trace_count_invalid(rm_trace_format_t format)
{
    __atomic_fetch_add(&invalid_counts[format], 1, __ATOMIC_RELAXED);
}

uint64_t
rm_trace_invalid_count(rm_trace_format_t format)
{
    return __atomic_load_n(&invalid_counts[format], __ATOMIC_RELAXED);
}

const char *
rm_trace_format_name(rm_trace_format_t format)
{
    return format == RM_TRACE_FORMAT_W3C ? "w3c" : "b3";
}

/* -1 for anything but a lower-case hex digit: both W3C and B3 require lower case */
static int
hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Decodes 2n lower-case hex characters into n bytes; -1 if any is not hex. */
static int
unhex(const char *s, size_t n, uint8_t *out)
{
    for (size_t i = 0; i != n; ++i) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (uint8_t)(hi << 4 | lo);
    }
    return 0;
}

static int
all_zero(const uint8_t *b, size_t n)
{
    for (size_t i = 0; i != n; ++i)
        if (b[i] != 0)
            return 0;
    return 1;
}

static rm_trace_str_t
trim(rm_trace_str_t s)
{
    while (s.len != 0 && (s.base[0] == ' ' || s.base[0] == '\t'))
        ++s.base, --s.len;
    while (s.len != 0 && (s.base[s.len - 1] == ' ' || s.base[s.len - 1] == '\t'))
        --s.len;
    return s;
}

void
rm_trace_hex(char *out, const uint8_t *bytes, size_t n)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i != n; ++i) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    out[2 * n] = '\0';
}

int
rm_trace_parse_traceparent(const char *v, size_t len, uint8_t trace_id[16], uint8_t span_id[8], int *sampled)
{
    rm_trace_str_t s = trim((rm_trace_str_t){v, len});
    v = s.base;
    len = s.len;
    if (len < RM_TRACE_TRACEPARENT_LEN)
        return -1;
    int vh = hexval(v[0]), vl = hexval(v[1]);
    if (vh < 0 || vl < 0)
        return -1;
    int version = vh << 4 | vl;
    if (version == 0xff)
        return -1;
    /* version 00 has exactly four fields; a later version may append fields after a '-' */
    if (version == 0 ? len != RM_TRACE_TRACEPARENT_LEN : (len > RM_TRACE_TRACEPARENT_LEN && v[RM_TRACE_TRACEPARENT_LEN] != '-'))
        return -1;
    if (v[2] != '-' || v[35] != '-' || v[52] != '-')
        return -1;
    uint8_t flags;
    if (unhex(v + 3, 16, trace_id) != 0 || unhex(v + 36, 8, span_id) != 0 || unhex(v + 53, 1, &flags) != 0)
        return -1;
    if (all_zero(trace_id, 16) || all_zero(span_id, 8))
        return -1;
    *sampled = flags & 1;
    return 0;
}

size_t
rm_trace_copy_tracestate(const char *v, size_t len, char *out)
{
    rm_trace_str_t s = trim((rm_trace_str_t){v, len});
    if (s.len > RM_TRACE_STATE_MAX) {
        /* keep whole list members only: cut at the last ',' that leaves at most the bound */
        size_t cut = RM_TRACE_STATE_MAX;
        while (cut != 0 && s.base[cut] != ',')
            --cut;
        s.len = cut;
        s = trim(s);
    }
    memcpy(out, s.base, s.len);
    return s.len;
}

/* A B3 trace id: 16 or 32 hex digits, 16 left-padded to 128 bits. */
static int
parse_b3_trace_id(rm_trace_str_t s, uint8_t out[16])
{
    memset(out, 0, 16);
    if (s.len == 32) {
        if (unhex(s.base, 16, out) != 0)
            return -1;
    } else if (s.len == 16) {
        if (unhex(s.base, 8, out + 8) != 0)
            return -1;
    } else {
        return -1;
    }
    return all_zero(out, 16) ? -1 : 0;
}

static int
parse_b3_span_id(rm_trace_str_t s, uint8_t out[8])
{
    if (s.len != 16 || unhex(s.base, 8, out) != 0 || all_zero(out, 8))
        return -1;
    return 0;
}

static int
str_is(rm_trace_str_t s, const char *lit)
{
    size_t n = strlen(lit);
    return s.len == n && memcmp(s.base, lit, n) == 0;
}

/* "0", "1", "d": sets the decision; -1 for anything else */
static int
parse_b3_sampling_state(rm_trace_str_t s, rm_trace_ctx_t *ctx)
{
    if (str_is(s, "0")) {
        ctx->sampled = 0;
    } else if (str_is(s, "1")) {
        ctx->sampled = 1;
    } else if (str_is(s, "d")) {
        ctx->sampled = 1;
        ctx->debug = 1;
    } else {
        return -1;
    }
    ctx->has_decision = 1;
    return 0;
}

/* b3: {trace}-{span}[-{state}[-{parent}]] or a lone {state}. 0 ok, -1 invalid. */
static int
parse_b3_single(rm_trace_str_t v, rm_trace_ctx_t *ctx, int *has_ids)
{
    rm_trace_str_t fields[5];
    size_t n = 0;
    const char *p = v.base, *end = v.base + v.len;
    while (1) {
        const char *dash = memchr(p, '-', (size_t)(end - p));
        if (n == 4)
            return -1;
        fields[n++] = (rm_trace_str_t){p, (size_t)((dash != NULL ? dash : end) - p)};
        if (dash == NULL)
            break;
        p = dash + 1;
    }
    *has_ids = 0;
    if (n == 1)
        return parse_b3_sampling_state(fields[0], ctx);
    uint8_t parent[8];
    if (parse_b3_trace_id(fields[0], ctx->trace_id) != 0 || parse_b3_span_id(fields[1], ctx->span_id) != 0)
        return -1;
    if (n >= 3 && parse_b3_sampling_state(fields[2], ctx) != 0)
        return -1;
    if (n == 4 && parse_b3_span_id(fields[3], parent) != 0)
        return -1;
    *has_ids = 1;
    return 0;
}

/* X-B3-*: 0 ok (has_ids tells whether ids came), -1 invalid */
static int
parse_b3_multi(const rm_trace_carrier_t *c, rm_trace_ctx_t *ctx, int *has_ids)
{
    *has_ids = 0;
    if (c->x_b3_flags.base != NULL) {
        rm_trace_str_t f = trim(c->x_b3_flags);
        if (str_is(f, "1")) {
            ctx->debug = 1;
            ctx->sampled = 1;
            ctx->has_decision = 1;
        } else if (!str_is(f, "0")) {
            return -1;
        }
    }
    if (c->x_b3_sampled.base != NULL && !ctx->debug) {
        rm_trace_str_t sm = trim(c->x_b3_sampled);
        if (str_is(sm, "1") || str_is(sm, "true")) {
            ctx->sampled = 1;
        } else if (str_is(sm, "0") || str_is(sm, "false")) {
            ctx->sampled = 0;
        } else {
            return -1;
        }
        ctx->has_decision = 1;
    }
    if (c->x_b3_traceid.base == NULL && c->x_b3_spanid.base == NULL)
        return c->x_b3_parentspanid.base == NULL ? 0 : -1;
    if (c->x_b3_traceid.base == NULL || c->x_b3_spanid.base == NULL)
        return -1;
    uint8_t parent[8];
    if (parse_b3_trace_id(trim(c->x_b3_traceid), ctx->trace_id) != 0 || parse_b3_span_id(trim(c->x_b3_spanid), ctx->span_id) != 0)
        return -1;
    if (c->x_b3_parentspanid.base != NULL && parse_b3_span_id(trim(c->x_b3_parentspanid), parent) != 0)
        return -1;
    *has_ids = 1;
    return 0;
}

static void
reset_ids(rm_trace_ctx_t *ctx)
{
    memset(ctx->trace_id, 0, sizeof(ctx->trace_id));
    memset(ctx->span_id, 0, sizeof(ctx->span_id));
}

rm_trace_source_t
rm_trace_extract(const rm_trace_carrier_t *c, rm_trace_ctx_t *ctx)
{
    memset(ctx, 0, offsetof(rm_trace_ctx_t, tracestate));
    if (c->traceparent.base != NULL) {
        int sampled;
        if (rm_trace_parse_traceparent(c->traceparent.base, c->traceparent.len, ctx->trace_id, ctx->span_id, &sampled) == 0) {
            ctx->source = RM_TRACE_SOURCE_W3C;
            ctx->has_decision = 1;
            ctx->sampled = sampled != 0;
            if (c->tracestate.base != NULL)
                ctx->tracestate_len = rm_trace_copy_tracestate(c->tracestate.base, c->tracestate.len, ctx->tracestate);
        } else {
            reset_ids(ctx);
            ctx->invalid_w3c = 1;
        }
    }
    /* B3 is still checked when W3C won, so that a malformed B3 value is counted either way */
    rm_trace_ctx_t b3 = {0};
    int has_ids = 0, b3_present = 0;
    rm_trace_source_t b3_source = RM_TRACE_SOURCE_NONE;
    if (c->b3.base != NULL) {
        b3_present = 1;
        b3_source = RM_TRACE_SOURCE_B3_SINGLE;
        if (parse_b3_single(trim(c->b3), &b3, &has_ids) != 0)
            ctx->invalid_b3 = 1;
    } else if (c->x_b3_traceid.base != NULL || c->x_b3_spanid.base != NULL || c->x_b3_sampled.base != NULL ||
               c->x_b3_flags.base != NULL || c->x_b3_parentspanid.base != NULL) {
        b3_present = 1;
        b3_source = RM_TRACE_SOURCE_B3_MULTI;
        if (parse_b3_multi(c, &b3, &has_ids) != 0)
            ctx->invalid_b3 = 1;
    }
    if (ctx->source == RM_TRACE_SOURCE_W3C || !b3_present || ctx->invalid_b3)
        return ctx->source;
    memcpy(ctx->trace_id, b3.trace_id, sizeof(ctx->trace_id));
    memcpy(ctx->span_id, b3.span_id, sizeof(ctx->span_id));
    ctx->has_decision = b3.has_decision;
    ctx->sampled = b3.sampled;
    ctx->debug = b3.debug;
    ctx->source = has_ids ? b3_source : RM_TRACE_SOURCE_NONE;
    return ctx->source;
}

void
rm_trace_format_traceparent(char out[RM_TRACE_TRACEPARENT_LEN + 1], const uint8_t trace_id[16], const uint8_t span_id[8],
                            int sampled)
{
    memcpy(out, "00-", 3);
    rm_trace_hex(out + 3, trace_id, 16);
    out[35] = '-';
    rm_trace_hex(out + 36, span_id, 8);
    out[52] = '-';
    out[53] = '0';
    out[54] = sampled ? '1' : '0';
    out[55] = '\0';
}

size_t
rm_trace_format_b3(char out[RM_TRACE_B3_MAX], const uint8_t trace_id[16], const uint8_t span_id[8], int sampled, int debug,
                   const uint8_t *parent_id)
{
    rm_trace_hex(out, trace_id, 16);
    out[32] = '-';
    rm_trace_hex(out + 33, span_id, 8);
    out[49] = '-';
    out[50] = debug ? 'd' : sampled ? '1' : '0';
    size_t n = 51;
    if (parent_id != NULL) {
        out[n++] = '-';
        rm_trace_hex(out + n, parent_id, 8);
        n += 16;
    }
    out[n] = '\0';
    return n;
}

/*
 * Ids: xoshiro256** per thread, seeded from getrandom through splitmix64 (a few ns per id, no lock,
 * no syscall after the first).
 */
static __thread uint64_t rng_state[4];
static __thread int rng_seeded;

static uint64_t
splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void
rng_seed(void)
{
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) != (ssize_t)sizeof(seed)) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 32) ^ ((uint64_t)getpid() << 16) ^ (uint64_t)(uintptr_t)&seed;
    }
    for (int i = 0; i != 4; ++i)
        rng_state[i] = splitmix64(&seed);
    rng_seeded = 1;
}

static inline uint64_t
rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t
rm_trace_random_u64(void)
{
    if (!rng_seeded)
        rng_seed();
    uint64_t *s = rng_state;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

static void
fill_nonzero(uint8_t *out, size_t n)
{
    do {
        for (size_t i = 0; i < n; i += 8) {
            uint64_t r = rm_trace_random_u64();
            memcpy(out + i, &r, n - i < 8 ? n - i : 8);
        }
    } while (all_zero(out, n));
}

void
rm_trace_new_trace_id(uint8_t out[16])
{
    fill_nonzero(out, 16);
}

void
rm_trace_new_span_id(uint8_t out[8])
{
    fill_nonzero(out, 8);
}
