/*
 * Latency histograms: fixed log-linear buckets, one histogram per worker per series, merged at scrape.
 *
 * Buckets (upper bounds, seconds; `le` is inclusive, the last bucket is +Inf):
 *
 *   0.0005 0.00075
 *   0.001  0.0015  0.002  0.003  0.004  0.005  0.0075
 *   0.01   0.015   0.02   0.03   0.04   0.05   0.075
 *   0.1    0.15    0.2    0.3    0.4    0.5    0.75
 *   1      1.5     2      3      4      5      7.5
 *   10     15      20     30     +Inf
 *
 * i.e. 1, 1.5, 2, 3, 4, 5, 7.5 in every decade from 0.5 ms to 30 s: neighbouring bounds differ by at most
 * 1.5x, so a quantile interpolated inside a bucket is off by less than half a bucket. Durations are
 * kept in microseconds. The bucket of a value is found in O(1): the position of its highest set bit
 * picks a first candidate from a 64-entry table, and at most three more bounds are compared (no two
 * bounds are closer than 1.25x, so at most three fall within one power of two).
 *
 * Concurrency: a histogram is written only by the worker that owns it (relaxed atomic stores; the
 * owner is the only writer, so a load-add-store is exact) and read by the main thread with relaxed
 * loads at scrape. `_count` is rendered as the sum of the buckets, so it always equals the +Inf
 * bucket; `_sum` may lag the buckets by the observations in flight.
 *
 * Exemplars: each bucket may keep the last observation that carried a trace id (value, trace id,
 * wall-clock time). The slots are allocated on the first exemplar (a histogram whose streams are never
 * traced costs no memory for them), written by the owner under a per-slot sequence counter and read
 * by the scraper, which skips a slot caught mid-write (no lock on either side).
 */
#ifndef remora__obs_histogram_h
#define remora__obs_histogram_h

#include <stdint.h>
#include <stdio.h>

/** Finite bounds plus the +Inf bucket. */
#define RM_HISTOGRAM_NUM_BOUNDS 34
#define RM_HISTOGRAM_BUCKETS (RM_HISTOGRAM_NUM_BOUNDS + 1)

/** Upper bounds of the finite buckets in microseconds, ascending. */
extern const uint64_t rm_histogram_bounds_us[RM_HISTOGRAM_NUM_BOUNDS];
/** The same as text for the `le` label ("0.0005" ... "30"). */
extern const char *const rm_histogram_bounds_text[RM_HISTOGRAM_NUM_BOUNDS];
/** For each bit position k: the first bucket whose bound is >= 2^k (filled at load time). */
extern uint8_t rm_histogram__first_candidate[64];

/** One bucket's exemplar slot; every field is accessed atomically. */
typedef struct st_rm_exemplar_t {
    /** even: stable; odd: the owner is writing */
    uint64_t seq;
    /** the W3C trace id (16 bytes, big-endian halves) */
    uint64_t trace_hi, trace_lo;
    uint64_t value_us;
    /** wall-clock time of the observation, ms since the Unix epoch */
    uint64_t at_ms;
} rm_exemplar_t;

typedef struct st_rm_histogram_t {
    uint64_t buckets[RM_HISTOGRAM_BUCKETS];
    uint64_t sum_us;
    /** RM_HISTOGRAM_BUCKETS slots, NULL until the first exemplar (published with a release store) */
    rm_exemplar_t *exemplars;
} rm_histogram_t;

/** A merged histogram (the sum over workers), with the newest exemplar of each bucket. Main thread. */
typedef struct st_rm_histogram_sum_t {
    uint64_t buckets[RM_HISTOGRAM_BUCKETS];
    uint64_t sum_us;
    struct {
        uint64_t trace_hi, trace_lo, value_us, at_ms; /* at_ms 0: none */
    } exemplars[RM_HISTOGRAM_BUCKETS];
} rm_histogram_sum_t;

/** The bucket of a duration in microseconds. Any thread; O(1). */
static inline unsigned
rm_histogram_bucket(uint64_t us)
{
    if (us <= 500)
        return 0;
    if (us > 30000000)
        return RM_HISTOGRAM_NUM_BOUNDS;
    unsigned i = rm_histogram__first_candidate[63 - __builtin_clzll(us)];
    while (rm_histogram_bounds_us[i] < us)
        ++i;
    return i;
}

/** Records a duration; returns its bucket. Owner worker only. */
static inline unsigned
rm_histogram_observe(rm_histogram_t *h, uint64_t us)
{
    unsigned b = rm_histogram_bucket(us);
    /* single writer: a relaxed load and store is exact and cheaper than a locked add */
    __atomic_store_n(&h->buckets[b], __atomic_load_n(&h->buckets[b], __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
    __atomic_store_n(&h->sum_us, __atomic_load_n(&h->sum_us, __ATOMIC_RELAXED) + us, __ATOMIC_RELAXED);
    return b;
}

/**
 * Keeps (trace id, value, now) as the exemplar of bucket `b` (allocating the slots on first use).
 * `trace_id` is the 16-byte W3C trace id. Owner worker only.
 */
void rm_histogram_set_exemplar(rm_histogram_t *h, unsigned b, const uint8_t trace_id[16], uint64_t value_us);
/** Frees the exemplar slots (when nothing reads the histogram any more). */
void rm_histogram_dispose(rm_histogram_t *h);

/** Adds `src` (another thread's histogram) into `dst`, keeping the newest exemplar of each bucket. Main thread. */
void rm_histogram_merge(rm_histogram_sum_t *dst, const rm_histogram_t *src);

/**
 * Writes the _bucket, _count and _sum samples of one series of family `name`. `labels` is the
 * series' formatted label list without braces (may be ""). OpenMetrics output (`openmetrics` 1)
 * carries the buckets' exemplars as `# {trace_id="..."} VALUE TIMESTAMP`.
 */
void rm_histogram_render(FILE *fp, const char *name, const char *labels, const rm_histogram_sum_t *h, int openmetrics);

#endif
