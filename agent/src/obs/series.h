/*
 * Labelled metric families with bounded cardinality (the golden request metrics).
 *
 * A family has fixed label names; a series is one tuple of label values. Every worker keeps its own
 * values of each series it has seen (in its rm_stats_t), found through a worker-private hash table
 * keyed by the tuple: the request path takes no lock and writes only its own worker's memory
 * (relaxed atomic stores, read by the scraper with relaxed loads).
 *
 * Cardinality: the family's tuples are also kept once agent-wide (under the family's mutex, which a
 * worker takes only the first time it meets a tuple). A tuple that would make the family hold more
 * than the limit (rm_series_set_limit, from `limits.max_series_per_family`) gets no series: the
 * observation is dropped and counted in remora_metrics_series_dropped_total{family}. Series live
 * as long as the process (like the per-listener and per-cluster blocks); lowering the limit keeps
 * the series that exist. Label values longer than RM_SERIES_MAX_VALUE bytes are truncated.
 *
 * Rendering (main thread, at scrape) sums each series over the workers, sorts the series by their
 * label values and writes Prometheus text 0.0.4 or OpenMetrics 1.0 (with exemplars).
 */
#ifndef remora__obs_series_h
#define remora__obs_series_h

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "obs/histogram.h"
#include "obs/stats.h"

#define RM_SERIES_MAX_LABELS 8
#define RM_SERIES_MAX_VALUE 128
/** The limit's range (`limits.max_series_per_family`). */
#define RM_SERIES_LIMIT_MAX 100000

typedef enum en_rm_series_kind_t {
    RM_SERIES_COUNTER = 0,
    RM_SERIES_HISTOGRAM = 1,
} rm_series_kind_t;

/** What a family is; strings are static storage. */
typedef struct st_rm_series_family_spec_t {
    const char *name;
    const char *help;
    rm_series_kind_t kind;
    const char *labels[RM_SERIES_MAX_LABELS];
    size_t num_labels;
    /** histogram families: also render each series' count as this counter family (NULL: none) */
    const char *count_name, *count_help;
    /** and the counts summed over the series sharing the first `total_labels` labels, as this counter family (NULL: none) */
    const char *total_name, *total_help;
    size_t total_labels;
} rm_series_family_spec_t;

typedef struct st_rm_series_family_t rm_series_family_t;

/** One worker's values of one series. Written only by that worker. */
typedef struct st_rm_series_t {
    /** counter families */
    uint64_t counter;
    /** histogram families */
    rm_histogram_t histogram;
    /** the family's index of the tuple */
    uint32_t _index;
} rm_series_t;

/** Registers a family. Main thread, at start, before workers run; at most RM_STATS_MAX_SERIES_FAMILIES. */
rm_series_family_t *rm_series_family_register(const rm_series_family_spec_t *spec);

/** Sets the cap on series per family (0: keep the default, 2000). Any thread; applies to tuples met from now on. */
void rm_series_set_limit(uint32_t max_series_per_family);

/**
 * The calling worker's series for the tuple `values` (num_labels strings; "" renders no label), or
 * NULL when the family is at its limit (the observation is counted as dropped). `stats` is the
 * calling worker's block. Worker thread (the owner of `stats`).
 */
rm_series_t *rm_series_get(rm_stats_t *stats, rm_series_family_t *family, const char *const *values);

/**
 * A per-worker cache in front of rm_series_get, for callers that can name a tuple by a few words
 * (`ident`) that identify its values exactly for as long as they are used: e.g. the config snapshot's
 * generation and the addresses of that snapshot's immutable strings (a generation is never reused, so
 * an address freed with an old snapshot cannot alias a new string). rm_series_cached returns the
 * series cached under `ident`, or NULL on a miss; rm_series_get_cached then looks the values up as
 * rm_series_get does and caches the result (a dropped observation is not cached). An all-zero ident
 * must not be used (it matches the empty cache). Owner worker only.
 */
#define RM_SERIES_IDENT_WORDS 6
rm_series_t *rm_series_cached(rm_stats_t *stats, rm_series_family_t *family, const uint64_t ident[RM_SERIES_IDENT_WORDS]);
rm_series_t *rm_series_get_cached(rm_stats_t *stats, rm_series_family_t *family, const uint64_t ident[RM_SERIES_IDENT_WORDS],
                                  const char *const *values);

/** Adds to a counter series. Owner worker only. */
static inline void
rm_series_add(rm_series_t *s, uint64_t n)
{
    __atomic_store_n(&s->counter, __atomic_load_n(&s->counter, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}

/** Writes every family (and remora_metrics_series_dropped_total) summed over `workers`. Main thread. */
void rm_series_render(FILE *fp, rm_stats_t *const *workers, size_t num_workers, int openmetrics);

/** Frees a worker's series (rm_stats_destroy; nothing may read them any more). */
void rm_series_free_worker(rm_stats_t *stats);

/* -- iteration (for the control plane's stats summary, `remoractl stat`) ----------------------------------------------------- */

/**
 * One series as rm_series_foreach gives it: the family's label values (num_labels strings, "" for an
 * empty label; valid during the call only) and its value summed over the workers. Counter families:
 * `counter` is the value, `buckets` NULL, `sum_us` 0. Histogram families: `counter` is the number of
 * observations, `buckets` the RM_HISTOGRAM_BUCKETS per-bucket counts (not cumulative), `sum_us` the sum.
 */
typedef void (*rm_series_visit_t)(void *ctx, const char *const *values, uint64_t counter, const uint64_t *buckets, uint64_t sum_us);

/**
 * Visits every series of the family named `family_name` (its spec's `name`) in label-value order, each
 * summed over `workers` (NULL entries skipped). Returns the number of series visited, or -1 when no
 * family has that name. Any thread, while `workers` stay alive: the values are read lock-free as the
 * scrape reads them; the family's mutex is held only to copy its tuple list.
 */
long rm_series_foreach(const char *family_name, rm_stats_t *const *workers, size_t num_workers, rm_series_visit_t fn, void *ctx);

#endif
