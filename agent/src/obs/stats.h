/*
 * Per-worker counters, merged by the main thread on scrape.
 *
 * Each worker owns one rm_stats_t. Only that worker writes its counters (RM_STAT_ADD: relaxed
 * atomic add); the main thread reads them with relaxed loads while rendering /metrics, so no lock is
 * taken on the hot path. Per-listener and per-cluster blocks are created on first use by name and
 * never freed (their number is bounded by the names configurations ever used), so a pointer
 * obtained by a worker stays valid for the life of the process and survives config reloads.
 * Creating a block takes the rm_stats_t's mutex, as does iterating them for rendering.
 */
#ifndef remora__stats_h
#define remora__stats_h

#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdint.h>

#define RM_STAT_ADD(field, n) __atomic_fetch_add(&(field), (uint64_t)(n), __ATOMIC_RELAXED)
#define RM_STAT_INC(field) RM_STAT_ADD(field, 1)
#define RM_STAT_SUB(field, n) __atomic_fetch_sub(&(field), (uint64_t)(n), __ATOMIC_RELAXED)
#define RM_STAT_DEC(field) RM_STAT_SUB(field, 1)
#define RM_STAT_LOAD(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

/** Index of a status class: 0 = 1xx, 1 = 2xx, 2 = 3xx, 3 = 4xx, 4 = 5xx. */
#define RM_STAT_STATUS_CLASSES 5
static inline unsigned
rm_stat_status_class(int status)
{
    int c = status / 100 - 1;
    return c < 0 ? 4 : c > 4 ? 4 : (unsigned)c;
}

/** Retry reasons counted per cluster (rm_retry_reason_t without NONE). */
#define RM_STAT_RETRY_REASONS 6

/** Circuit-breaker limits counted per cluster (rm_breaker_limit_t: connections, pending, requests, retries). */
#define RM_STAT_BREAKER_LIMITS 4

/** Bound of the per-cause local-reply counters. */
#define RM_STAT_MAX_CAUSES 32

typedef struct st_rm_listener_stats_t {
    char *name;
    uint64_t cx_total;                            /* downstream connections accepted */
    uint64_t cx_active;                           /* gauge */
    uint64_t cx_http1, cx_h2;                     /* connections by detected protocol */
    uint64_t cx_tls;                              /* of which over TLS */
    uint64_t rq_total;                            /* requests received */
    uint64_t rq_active;                           /* gauge: streams in flight */
    uint64_t rs_by_class[RM_STAT_STATUS_CLASSES]; /* responses sent, by status class */
    uint64_t rs_reset;                            /* streams that ended in a reset instead of a response */
    uint64_t rq_protocol_error;                   /* malformed requests answered with 400/431/RST PROTOCOL_ERROR */
    uint64_t rq_no_route;                         /* requests with no matching route (404) */
    uint64_t rq_timeout;                          /* requests that hit their route's timeout (504) */
    uint64_t fault_delay, fault_abort;            /* fault injection: requests delayed / aborted */
    uint64_t mirror_sent, mirror_body_too_large;  /* mirrors started / skipped because the body was over the replay bound */
    uint64_t bytes_rx, bytes_tx;
    /** local replies by cause (index: rm_local_reply_t; names registered with rm_stats_set_cause_names) */
    uint64_t local_replies[RM_STAT_MAX_CAUSES];
    struct st_rm_listener_stats_t *_next;
} rm_listener_stats_t;

typedef struct st_rm_cluster_stats_t {
    char *name;
    uint64_t cx_total;                            /* upstream connections opened */
    uint64_t cx_active;                           /* gauge */
    uint64_t cx_connect_fail;                     /* connect errors and timeouts, TLS handshake failures */
    uint64_t rq_total;                            /* requests sent upstream */
    uint64_t rq_active;                           /* gauge */
    uint64_t rs_by_class[RM_STAT_STATUS_CLASSES]; /* responses received, by status class */
    uint64_t rq_reset;                            /* upstream streams reset or connections lost mid-request */
    uint64_t rq_unavailable;                      /* requests answered locally because no upstream could be reached */
    uint64_t rq_retry[RM_STAT_RETRY_REASONS];     /* retries sent, by reason (index: rm_retry_reason_t - 1) */
    uint64_t rq_retry_budget_exhausted;           /* retries not sent: over the retry budget */
    uint64_t rq_retry_not_replayable;             /* requests whose body outgrew the replay buffer: not retried */
    uint64_t rq_retry_limit_exceeded;             /* failures returned because no attempt was left */
    uint64_t rq_retry_success;                    /* requests answered by a retry */
    uint64_t rq_refused_resend;                   /* refused or stale-connection requests re-sent once (keep-alive race) */
    uint64_t rq_per_try_timeout;                  /* tries abandoned at their per-try timeout */
    uint64_t rq_overflow[RM_STAT_BREAKER_LIMITS]; /* requests refused by a circuit breaker (index: rm_breaker_limit_t) */
    uint64_t outlier_ejections;                   /* endpoints ejected by outlier detection (by this worker's reports) */
    uint64_t bytes_rx, bytes_tx;
    struct st_rm_cluster_stats_t *_next;
} rm_cluster_stats_t;

typedef struct st_rm_stats_t {
    unsigned worker_id;
    pthread_mutex_t _mutex;
    rm_listener_stats_t *_listeners;
    rm_cluster_stats_t *_clusters;
} rm_stats_t;

rm_stats_t *rm_stats_create(unsigned worker_id);
void rm_stats_destroy(rm_stats_t *stats);
/** Get-or-create the block for a name. Owner worker (or main before workers start). Never NULL. */
rm_listener_stats_t *rm_stats_listener(rm_stats_t *stats, const char *name);
rm_cluster_stats_t *rm_stats_cluster(rm_stats_t *stats, const char *name);

/**
 * Renders Prometheus text exposition (format 0.0.4) of the sum over `workers`, plus the process
 * gauges (config generation, start time, resident memory). Main thread. Returns a malloc'ed string.
 */
/**
 * Adds a renderer of agent-wide state (shared tables: breakers, ejections, rate limits) to
 * /metrics: `render` returns malloc'ed Prometheus text (HELP/TYPE lines included) or NULL; it runs
 * on the main thread while scraping and must only read shared state safely. Call at start, before
 * workers run; at most 8.
 */
void rm_stats_register_renderer(char *(*render)(void));
/** Writes `v` as the value of a Prometheus label (backslash, quote and newline escaped). For renderers. */
void rm_stats_fprint_label_value(FILE *fp, const char *v);

/** Names of the local-reply causes (labels of remora_downstream_local_replies_total); static storage. Call once at start. */
void rm_stats_set_cause_names(const char *const *names, size_t n);

char *rm_stats_render_prometheus(rm_stats_t *const *workers, size_t num_workers, uint64_t config_generation);

#endif
