/*
 * Latency histograms (see histogram.h for the buckets and the concurrency rules).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "remora/strutil.h"
#include "obs/histogram.h"

const uint64_t rm_histogram_bounds_us[RM_HISTOGRAM_NUM_BOUNDS] = {
    500,      750,                                                     /* 0.5 ms */
    1000,     1500,     2000,     3000,     4000,    5000,    7500,    /* 1 ms */
    10000,    15000,    20000,    30000,    40000,   50000,   75000,   /* 10 ms */
    100000,   150000,   200000,   300000,   400000,  500000,  750000,  /* 100 ms */
    1000000,  1500000,  2000000,  3000000,  4000000, 5000000, 7500000, /* 1 s */
    10000000, 15000000, 20000000, 30000000,                            /* 10 s */
};

const char *const rm_histogram_bounds_text[RM_HISTOGRAM_NUM_BOUNDS] = {
    "0.0005", "0.00075", "0.001", "0.0015", "0.002", "0.003", "0.004", "0.005", "0.0075", "0.01", "0.015", "0.02",
    "0.03",   "0.04",    "0.05",  "0.075",  "0.1",   "0.15",  "0.2",   "0.3",   "0.4",    "0.5",  "0.75",  "1",
    "1.5",    "2",       "3",     "4",      "5",     "7.5",   "10",    "15",    "20",     "30",
};

uint8_t rm_histogram__first_candidate[64];

__attribute__((constructor)) static void
init_first_candidate(void)
{
    for (unsigned k = 0; k != 64; ++k) {
        unsigned i = 0;
        while (i != RM_HISTOGRAM_NUM_BOUNDS && (k >= 63 || rm_histogram_bounds_us[i] < (1ull << k)))
            ++i;
        rm_histogram__first_candidate[k] = (uint8_t)i;
    }
}

static uint64_t
now_unix_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t
load_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i != 8; ++i)
        v = v << 8 | p[i];
    return v;
}

void
rm_histogram_set_exemplar(rm_histogram_t *h, unsigned b, const uint8_t trace_id[16], uint64_t value_us)
{
    rm_exemplar_t *slots = h->exemplars;
    if (slots == NULL) {
        slots = rm_calloc(RM_HISTOGRAM_BUCKETS, sizeof(*slots));
        /* the scraper may find the pointer at once: the zeroed slots must be visible before it */
        __atomic_store_n(&h->exemplars, slots, __ATOMIC_RELEASE);
    }
    rm_exemplar_t *e = slots + b;
    uint64_t seq = __atomic_load_n(&e->seq, __ATOMIC_RELAXED);
    __atomic_store_n(&e->seq, seq + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    __atomic_store_n(&e->trace_hi, load_be64(trace_id), __ATOMIC_RELAXED);
    __atomic_store_n(&e->trace_lo, load_be64(trace_id + 8), __ATOMIC_RELAXED);
    __atomic_store_n(&e->value_us, value_us, __ATOMIC_RELAXED);
    __atomic_store_n(&e->at_ms, now_unix_ms(), __ATOMIC_RELAXED);
    __atomic_store_n(&e->seq, seq + 2, __ATOMIC_RELEASE);
}

void
rm_histogram_dispose(rm_histogram_t *h)
{
    free(h->exemplars);
    h->exemplars = NULL;
}

void
rm_histogram_merge(rm_histogram_sum_t *dst, const rm_histogram_t *src)
{
    for (unsigned b = 0; b != RM_HISTOGRAM_BUCKETS; ++b)
        dst->buckets[b] += __atomic_load_n(&src->buckets[b], __ATOMIC_RELAXED);
    dst->sum_us += __atomic_load_n(&src->sum_us, __ATOMIC_RELAXED);

    rm_exemplar_t *slots = __atomic_load_n(&src->exemplars, __ATOMIC_ACQUIRE);
    if (slots == NULL)
        return;
    for (unsigned b = 0; b != RM_HISTOGRAM_BUCKETS; ++b) {
        rm_exemplar_t *e = slots + b;
        /* a seqlock read: retry a few times if the owner is writing, else keep what the other workers gave */
        for (int tries = 0; tries != 4; ++tries) {
            uint64_t s1 = __atomic_load_n(&e->seq, __ATOMIC_ACQUIRE);
            if ((s1 & 1) != 0)
                continue;
            uint64_t hi = __atomic_load_n(&e->trace_hi, __ATOMIC_RELAXED), lo = __atomic_load_n(&e->trace_lo, __ATOMIC_RELAXED),
                     value = __atomic_load_n(&e->value_us, __ATOMIC_RELAXED), at = __atomic_load_n(&e->at_ms, __ATOMIC_RELAXED);
            __atomic_thread_fence(__ATOMIC_ACQUIRE);
            if (__atomic_load_n(&e->seq, __ATOMIC_RELAXED) != s1)
                continue;
            if (at != 0 && at > dst->exemplars[b].at_ms) {
                dst->exemplars[b].trace_hi = hi;
                dst->exemplars[b].trace_lo = lo;
                dst->exemplars[b].value_us = value;
                dst->exemplars[b].at_ms = at;
            }
            break;
        }
    }
}

static void
render_exemplar(FILE *fp, const rm_histogram_sum_t *h, unsigned b)
{
    if (h->exemplars[b].at_ms == 0)
        return;
    fprintf(fp, " # {trace_id=\"%016" PRIx64 "%016" PRIx64 "\"} %" PRIu64 ".%06" PRIu64 " %" PRIu64 ".%03" PRIu64,
            h->exemplars[b].trace_hi, h->exemplars[b].trace_lo, h->exemplars[b].value_us / 1000000,
            h->exemplars[b].value_us % 1000000, h->exemplars[b].at_ms / 1000, h->exemplars[b].at_ms % 1000);
}

void
rm_histogram_render(FILE *fp, const char *name, const char *labels, const rm_histogram_sum_t *h, int openmetrics)
{
    const char *sep = labels[0] != '\0' ? "," : "";
    uint64_t cumulative = 0;

    for (unsigned b = 0; b != RM_HISTOGRAM_BUCKETS; ++b) {
        cumulative += h->buckets[b];
        fprintf(fp, "%s_bucket{%s%sle=\"%s\"} %" PRIu64, name, labels, sep,
                b < RM_HISTOGRAM_NUM_BOUNDS ? rm_histogram_bounds_text[b] : "+Inf", cumulative);
        if (openmetrics)
            render_exemplar(fp, h, b);
        fputc('\n', fp);
    }
    const char *open = labels[0] != '\0' ? "{" : "", *close = labels[0] != '\0' ? "}" : "";
    fprintf(fp, "%s_count%s%s%s %" PRIu64 "\n", name, open, labels, close, cumulative);
    fprintf(fp, "%s_sum%s%s%s %" PRIu64 ".%06" PRIu64 "\n", name, open, labels, close, h->sum_us / 1000000, h->sum_us % 1000000);
}
