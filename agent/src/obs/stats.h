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

/** Upstream attempts by kind (remora_upstream_attempts_total{kind}). */
typedef enum en_rm_stat_attempt_kind_t {
    RM_STAT_ATTEMPT_FIRST = 0,
    RM_STAT_ATTEMPT_RETRY = 1, /* a retry or a keep-alive re-send */
    RM_STAT_ATTEMPT_MIRROR = 2,
    RM_STAT_ATTEMPT_KINDS
} rm_stat_attempt_kind_t;

/**
 * Upstream attempts by outcome (remora_upstream_attempts_total{outcome}): the response's status class,
 * `grpc_error` for a response whose gRPC status is a server error (docs/metrics.md), the failure
 * (RM_STAT_ATTEMPT_ERROR_BASE + rm_upstream_error_t), or `cancelled` (abandoned without a response: a
 * per-try timeout, the request ended, a mirror cut short).
 */
#define RM_STAT_ATTEMPT_GRPC_ERROR 5
#define RM_STAT_ATTEMPT_ERROR_BASE 5 /* + rm_upstream_error_t (1..7) */
#define RM_STAT_ATTEMPT_CANCELLED 13
#define RM_STAT_ATTEMPT_OUTCOMES 14
extern const char *const rm_stat_attempt_kind_names[RM_STAT_ATTEMPT_KINDS];
extern const char *const rm_stat_attempt_outcome_names[RM_STAT_ATTEMPT_OUTCOMES];

/** Kinds of HTTP/2 abuse counted per listener (remora_downstream_h2_abuse_total; http2/h2conn.h rm_h2_abuse_t). */
#define RM_STAT_H2_ABUSE_KINDS 6

/** Downstream request limits (remora_downstream_limit_total{kind}; docs/hardening.md): the index of
 * rm_listener_stats_t.limit */
typedef enum en_rm_stat_limit_t {
    RM_STAT_LIMIT_URI_TOO_LONG = 0,  /* 414: request target over limits.max_request_uri_bytes */
    RM_STAT_LIMIT_HEADERS_TOO_LARGE, /* 431: header fields over limits.max_headers / max_header_bytes */
    RM_STAT_LIMIT_HEADER_TIMEOUT,    /* 408: HTTP/1.1 head not complete within limits.request_headers_timeout_ms */
    RM_STAT_LIMIT_BODY_TOO_LARGE,    /* 413 (or a reset): body over limits.max_request_body_bytes */
    RM_STAT_LIMIT_KINDS
} rm_stat_limit_t;

/** Labelled families (obs/series.h) a worker's rm_stats_t may hold. */
#define RM_STATS_MAX_SERIES_FAMILIES 4

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
    /** protocol detection outcomes (index: rm_detect_result_t, net/listener.h) */
    uint64_t detect[6];
    /** opaque TCP connections (tcp/tcp_proxy.c): relayed, open, upstream connect failures, idle timeouts,
     * bytes from the downstream (rx) and to it (tx) */
    uint64_t tcp_cx_total, tcp_cx_active, tcp_connect_fail, tcp_idle_timeout;
    uint64_t tcp_bytes_rx, tcp_bytes_tx;
    /** HTTP/1.1 Upgrade (WebSocket) requests forwarded: switched to a tunnel (101), answered otherwise; tunnels open */
    uint64_t upgrade_switched, upgrade_refused, upgrade_active;
    /** HTTP/2 connections closed by an abuse limit (index: rm_h2_abuse_t, http2/h2conn.h; docs/hardening.md) */
    uint64_t h2_abuse[RM_STAT_H2_ABUSE_KINDS];
    /** requests answered (or reset) by a downstream limit (index: rm_stat_limit_t) */
    uint64_t limit[RM_STAT_LIMIT_KINDS];
    /** connections closed at accept because the listener had max_connections open (across workers) */
    uint64_t cx_refused_max;
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
    uint64_t rq_no_healthy;                       /* requests failed fast: every endpoint unhealthy or ejected */
    uint64_t bytes_rx, bytes_tx;
    /** upstream attempts ended, by kind and outcome (rm_stat_attempt_kind_t, RM_STAT_ATTEMPT_*) */
    uint64_t attempts[RM_STAT_ATTEMPT_KINDS][RM_STAT_ATTEMPT_OUTCOMES];
    struct st_rm_cluster_stats_t *_next;
} rm_cluster_stats_t;

typedef struct st_rm_stats_t {
    unsigned worker_id;
    pthread_mutex_t _mutex;
    rm_listener_stats_t *_listeners;
    rm_cluster_stats_t *_clusters;
    /** this worker's series of each labelled family (obs/series.c; published with release stores) */
    void *_series[RM_STATS_MAX_SERIES_FAMILIES];
} rm_stats_t;

rm_stats_t *rm_stats_create(unsigned worker_id);
void rm_stats_destroy(rm_stats_t *stats);
/** Get-or-create the block for a name. Owner worker (or main before workers start). Never NULL. */
rm_listener_stats_t *rm_stats_listener(rm_stats_t *stats, const char *name);
rm_cluster_stats_t *rm_stats_cluster(rm_stats_t *stats, const char *name);

/**
 * Adds a renderer of agent-wide state (shared tables: breakers, ejections, rate limits) to
 * /metrics: `render` returns malloc'ed Prometheus text (HELP/TYPE lines included) or NULL; it runs
 * on the main thread while scraping and must only read shared state safely. Call at start, before
 * workers run; at most 16. In OpenMetrics output the text is converted (counter families named
 * without _total; a counter whose samples lack _total becomes `unknown`).
 */
void rm_stats_register_renderer(char *(*render)(void));
/** Writes `v` as the value of a Prometheus label (backslash, quote and newline escaped). For renderers. */
void rm_stats_fprint_label_value(FILE *fp, const char *v);

/** Names of the local-reply causes (labels of remora_downstream_local_replies_total); static storage. Call once at start. */
void rm_stats_set_cause_names(const char *const *names, size_t n);

/** Exposition formats of /metrics. */
typedef enum en_rm_stats_format_t {
    RM_STATS_PROMETHEUS = 0,  /* text/plain; version=0.0.4 */
    RM_STATS_OPENMETRICS = 1, /* application/openmetrics-text; version=1.0.0: counter families named without
                                 _total, exemplars on histogram buckets, "# EOF" at the end */
} rm_stats_format_t;

/**
 * Renders the sum over `workers` of every counter, the labelled families (obs/series.h), the
 * registered renderers' text (converted to OpenMetrics when asked), and the process, build and
 * config families (obs/process.h). Main thread. Returns a malloc'ed string.
 */
char *rm_stats_render(rm_stats_t *const *workers, size_t num_workers, uint64_t config_generation, rm_stats_format_t format);
/** rm_stats_render(..., RM_STATS_PROMETHEUS). */
char *rm_stats_render_prometheus(rm_stats_t *const *workers, size_t num_workers, uint64_t config_generation);

#endif
