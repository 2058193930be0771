/*
 * The golden-metrics summary the control client sends to the control plane (remora.v1.Stats on the
 * discovery stream, shown by `remoractl stat`).
 *
 * The control client does not know where the numbers come from: it calls the source set here, once
 * per --stats-interval-ms, on the control thread. The source returns CUMULATIVE values since the
 * agent started (the control plane takes differences), one entry per (direction, route, backend),
 * summed over workers and outcomes. With no source set, nothing is sent.
 *
 * Thread: rm_control_set_stats_source from the main thread before the control client starts;
 * rm_control_get_stats_source from any thread. The source itself is called on the control thread,
 * must not block on a worker, and must not keep `out`.
 */
#ifndef remora__control_stats_h
#define remora__control_stats_h

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include "obs/histogram.h"

/** Label values longer than this (bytes, without the NUL) are truncated. */
#define RM_CONTROL_STAT_MAX_VALUE 128
/** The most series one Stats message carries; more are counted as dropped. */
#define RM_CONTROL_STATS_MAX_SERIES 1000

typedef struct st_rm_control_stat_series_t {
    char direction[RM_CONTROL_STAT_MAX_VALUE + 1];
    char route[RM_CONTROL_STAT_MAX_VALUE + 1];
    char backend[RM_CONTROL_STAT_MAX_VALUE + 1];
    /** requests ended, and those classified as failures */
    uint64_t requests, failures;
    /** requests per latency bucket (bounds: rm_histogram_bounds_us, then +Inf); not cumulative over `le` */
    uint64_t buckets[RM_HISTOGRAM_BUCKETS];
    uint64_t sum_us;
} rm_control_stat_series_t;

/**
 * Fills at most `max` entries of `out` (owned by the caller) and returns how many series exist in
 * total: a return value above `max` means the rest were left out (and are counted as dropped).
 * Called on the control thread.
 */
typedef size_t (*rm_control_stats_source_t)(rm_control_stat_series_t *out, size_t max);

/** Sets the source (NULL: send no Stats). Main thread, before rm_control_client_start. */
void rm_control_set_stats_source(rm_control_stats_source_t source);
/** The source set, or NULL. Any thread. */
rm_control_stats_source_t rm_control_get_stats_source(void);

/**
 * Snapshots received from the control plane, by kind (docs/control-plane.md, "Incremental updates"):
 * counted by the control client (control thread) when one is received, whatever its fate (refusals are
 * in remora_config_nacks_total). Process-wide atomics; any thread.
 */
typedef enum en_rm_control_update_kind_t {
    RM_CONTROL_UPDATE_FULL = 0,
    RM_CONTROL_UPDATE_DELTA = 1,
} rm_control_update_kind_t;

void rm_control_count_update(rm_control_update_kind_t kind, size_t bytes);
/** The counts and the bytes (encoded sizes) received so far, of one kind. */
void rm_control_updates(rm_control_update_kind_t kind, uint64_t *count, uint64_t *bytes);
/**
 * Writes remora_control_updates_total{kind="full|delta"} and remora_control_update_bytes_total{kind} in
 * the Prometheus text format (for the agent's /metrics). Any thread.
 */
void rm_control_render_updates(FILE *fp);

#endif
