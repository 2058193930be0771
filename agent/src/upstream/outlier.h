/*
 * Passive outlier detection, agent-wide: per endpoint (cluster name + endpoint address), from the
 * outcome of every attempt (BackendTrafficPolicy outlierDetection; the bootstrap's
 * `outlier_detection`).
 *
 *   healthy --N consecutive 5xx / gateway errors--> ejected (for base x times ejected, at most max)
 *   ejected --ejection time over, one real request claims the probe--> probing
 *   probing --success--> healthy          probing --failure--> ejected again (longer)
 *
 * At most max_ejection_percent of a cluster's endpoints are ejected at once (an ejection that would
 * go over is not made). An endpoint whose ejection time is over stays counted as ejected until its
 * probe succeeds; when every endpoint is ejected the circuit of the cluster is open: the cluster
 * fails fast. A probe whose attempt never reports (a downstream abort) is given up after
 * interval_ms, so another request may probe.
 *
 * Two registries: the cluster record keyed by cluster name, holding the hosts keyed by endpoint
 * address; both refcounted (every worker's cluster runtime and endpoint hold a reference) so the
 * state survives snapshot swaps while the key exists. A cluster record's small mutex guards its
 * hosts; `ejected` is also readable without it (the selection fast path).
 *
 * Active health checks (upstream/health.c) add a second verdict to the same host record: the checker
 * holds a reference on each host it checks and sets `rm_outlier_set_health`. Either verdict can take
 * a host out; both must agree to bring it back: rm_outlier_available and rm_outlier_claim answer 0
 * while the health check says unhealthy, whatever outlier detection says (an ejected host whose
 * ejection is over is probed only once it is healthy again).
 *
 * Thread: any. Times are milliseconds of any monotonic clock shared by the callers.
 */
#ifndef remora__upstream_outlier_h
#define remora__upstream_outlier_h

#include <stdint.h>
#include "config/config.h"

typedef enum en_rm_outlier_result_t {
    RM_OUTLIER_SUCCESS = 0, /* a response below 500 (and not gRPC UNAVAILABLE) */
    RM_OUTLIER_5XX = 1,     /* a 5xx other than 502/503/504 */
    RM_OUTLIER_GATEWAY = 2, /* connect failure, timeout, reset, 502/503/504, gRPC UNAVAILABLE */
} rm_outlier_result_t;

typedef struct st_rm_outlier_cluster_t rm_outlier_cluster_t;
typedef struct st_rm_outlier_host_t rm_outlier_host_t;

/** The record of cluster `name` (created if new); takes a reference. Never NULL. */
rm_outlier_cluster_t *rm_outlier_cluster_acquire(const char *name);
/** Drops a reference (NULL ignored); the record goes with the last one (its hosts hold references too). */
void rm_outlier_cluster_release(rm_outlier_cluster_t *oc);
/** Sets the settings (copied); `enabled` 0 turns detection off and brings ejected hosts back. */
void rm_outlier_configure(rm_outlier_cluster_t *oc, const rm_config_outlier_t *config);

/** The host `addr` ("ip:port") of `oc` (created healthy if new); takes a reference. Never NULL. */
rm_outlier_host_t *rm_outlier_host_acquire(rm_outlier_cluster_t *oc, const char *addr);
void rm_outlier_host_release(rm_outlier_host_t *h);

/** 1 if the host may be picked: not ejected, or its ejection is over and no probe is in flight. No side effect. */
int rm_outlier_available(rm_outlier_host_t *h, uint64_t now_ms);
/** For the endpoint finally chosen: 1 if it may take the request (healthy, or this request is the probe it claims now). */
int rm_outlier_claim(rm_outlier_host_t *h, uint64_t now_ms);
/** The outcome of an attempt on the host; 1 if this report ejected it (count it). */
int rm_outlier_report(rm_outlier_host_t *h, rm_outlier_result_t result, uint64_t now_ms);
/** 1 while the host is ejected or probing. */
int rm_outlier_is_ejected(rm_outlier_host_t *h);
/**
 * The health checker's verdict on the host (1 healthy or pending, 0 unhealthy). The caller holds a
 * reference on `h` (rm_outlier_host_acquire) for as long as it checks it, and sets it back to healthy
 * before releasing it when it stops checking. Thread: any (the health checker runs on the main thread).
 */
void rm_outlier_set_health(rm_outlier_host_t *h, int healthy);
/** 1 while the health check says unhealthy. */
int rm_outlier_is_unhealthy(rm_outlier_host_t *h);
/** The host's address as given to rm_outlier_host_acquire (owned by the record). */
const char *rm_outlier_host_addr(const rm_outlier_host_t *h);

/** Hosts known / ejected now; the circuit is open when every known host is ejected. */
void rm_outlier_counts(rm_outlier_cluster_t *oc, uint32_t *hosts, uint32_t *ejected);
int rm_outlier_circuit_open(rm_outlier_cluster_t *oc);

/** Classifies a response head: HTTP status and gRPC status (-1: none). */
rm_outlier_result_t rm_outlier_classify(int http_status, int grpc_status);

/**
 * remora_upstream_endpoints_ejected{cluster} and remora_upstream_circuit_open{cluster} as Prometheus
 * text (malloc'ed; NULL when no cluster has detection on). For rm_stats_register_renderer.
 */
char *rm_outlier_render(void);
/** One line per cluster with detection on: "name: N/M endpoints ejected, circuit open|closed\n" (malloc'ed, may be ""). */
char *rm_outlier_describe(void);

#endif
