/*
 * Golden metrics over a sliding window, from the Stats summaries agents send on their discovery
 * streams (remora.v1.Stats; `remoractl stat`).
 *
 * An agent's summaries are CUMULATIVE since it started. The control plane keeps, per agent node, a
 * ring of them (rm_stat_history_t): at most one every RM_STAT_SPACING_MS (a newer summary replaces
 * the newest kept one until that much time has passed), RM_STAT_MAX_SAMPLES in all, so a little more
 * than ten minutes are kept whatever the agents' interval. A query takes, per agent, the difference
 * between its newest summary and the newest one at or before now - window; when none is that old, the
 * agent's start (all counters zero) if it started inside the window, else the oldest summary kept (the
 * rate is then over the time actually covered). Counters that went down (the agent restarted) or
 * changed latency bounds start the history over.
 *
 * Rows group the differences by backend Service (RM_STAT_BY_SERVICE), route, or (agent, backend);
 * rates add up over agents, latency quantiles come from the summed buckets by linear interpolation
 * inside the bucket, as Prometheus' histogram_quantile does.
 *
 * Thread: not thread-safe; the server's completion-queue thread owns every history and query.
 * Errors: peer input that does not fit (bucket counts that do not match the bounds) is refused with a
 * message, never asserted.
 */
#ifndef remora__control_stat_h
#define remora__control_stat_h

#include <stddef.h>
#include <stdint.h>
#include "remora/v1/discovery.pb-c.h"

/** Minimum time between two summaries kept (ms): the window's start is rounded out by up to this much. */
#define RM_STAT_SPACING_MS 5000
/** Summaries kept per agent: RM_STAT_SPACING_MS * RM_STAT_MAX_SAMPLES covers a bit more than 10 minutes. */
#define RM_STAT_MAX_SAMPLES 132
/** Series accepted per summary (the agent sends at most 1000). */
#define RM_STAT_MAX_SERIES 1000
/** Distinct (direction, route, backend) kept per agent before its history starts over. */
#define RM_STAT_MAX_KEYS 10000
/** Window bounds (ms) and default. */
#define RM_STAT_WINDOW_MIN_MS 10000
#define RM_STAT_WINDOW_MAX_MS 600000
#define RM_STAT_WINDOW_DEFAULT_MS 60000

typedef struct st_rm_stat_history_t rm_stat_history_t;

/** An empty history. Aborts on OOM. */
rm_stat_history_t *rm_stat_history_create(void);
void rm_stat_history_destroy(rm_stat_history_t *h);
/**
 * Adds a summary received at `now_ms` (the control plane's monotonic clock; `msg` stays the caller's).
 * Returns 0, or -1 with a reason in `err` when the summary is malformed (nothing is kept from it).
 */
int rm_stat_history_add(rm_stat_history_t *h, const Remora__V1__Stats *msg, uint64_t now_ms, char *err, size_t errlen);
/** The receive time of the newest summary, 0 for none. */
uint64_t rm_stat_history_newest_ms(const rm_stat_history_t *h);

typedef enum en_rm_stat_by_t {
    RM_STAT_BY_SERVICE,
    RM_STAT_BY_ROUTE,
    RM_STAT_BY_BACKEND,
} rm_stat_by_t;

/** "service" (or "") / "route" / "backend" -> *by; -1 for anything else. */
int rm_stat_by_parse(const char *s, rm_stat_by_t *by);

typedef struct st_rm_stat_row_t {
    /** the Service, route or backend; node_id only for RM_STAT_BY_BACKEND ("" otherwise); owned by the query */
    char *name, *node_id;
    uint32_t agents;
    double rps, success_rate, p50_ms, p95_ms, p99_ms;
    uint64_t requests, failures;
} rm_stat_row_t;

typedef struct st_rm_stat_query_t rm_stat_query_t;

/** A query over (now_ms - window_ms, now_ms]; `ns` NULL or "" for every namespace (copied). */
rm_stat_query_t *rm_stat_query_create(rm_stat_by_t by, uint64_t window_ms, const char *ns, uint64_t now_ms);
/** Adds one agent's contribution. */
void rm_stat_query_add(rm_stat_query_t *q, const char *node_id, const rm_stat_history_t *h);
/** The rows with requests in the window, sorted by (name, node_id); owned by the query. */
size_t rm_stat_query_rows(rm_stat_query_t *q, const rm_stat_row_t **rows);
void rm_stat_query_destroy(rm_stat_query_t *q);

/**
 * The q-quantile (0..1) of a histogram in ms: `buckets` has num_bounds + 1 per-bucket counts, the last
 * one +Inf. Linear inside the bucket (the first bucket starts at 0); a rank in the +Inf bucket gives the
 * highest finite bound. 0 when the histogram is empty.
 */
double rm_stat_quantile_ms(double q, const uint64_t *bounds_us, size_t num_bounds, const uint64_t *buckets);

#endif
