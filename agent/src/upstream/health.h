/*
 * Active health checking (the bootstrap's per-cluster `health_check`, BackendTrafficPolicy
 * `healthCheck`), on the agent's main thread.
 *
 * On every snapshot put in service, rm_health_reconcile keeps one checker per (cluster name,
 * endpoint address) of every cluster with health_check.enabled: IP endpoints directly, host names
 * resolved on the main loop (re-resolved at the cluster's DNS refresh). Checkers of clusters and
 * addresses that went away stop; unchanged ones keep their state and timers.
 *
 * A check: connect (TLS with the cluster's client context when the cluster has TLS), one request,
 * one answer; timeout_ms bounds the whole exchange. HTTP: `GET <http_path>` over HTTP/1.1 (http1
 * clusters, and auto clusters unless ALPN chose h2) or HTTP/2 (prior knowledge h2c, or ALPN h2);
 * 2xx is a success. gRPC: grpc.health.v1.Health/Check over HTTP/2; a success is grpc-status 0 with
 * status SERVING. One check at a time per endpoint, interval_ms apart (+-10 % jitter); the first
 * check of a new endpoint runs at once.
 *
 * The verdict goes to the endpoint's agent-wide record (upstream/outlier.h, rm_outlier_set_health),
 * which every worker's balancer consults; see rm_health_sm_record for the state machine.
 *
 * Thread: the main thread (the loop given to rm_health_init), but for the pure state machine.
 */
#ifndef remora__upstream_health_h
#define remora__upstream_health_h

#include <stddef.h>
#include <stdint.h>
#include <h2o.h>
#include <uv.h>
#include "config/config.h"
#include "tls/tls.h"

typedef enum en_rm_health_state_t {
    RM_HEALTH_PENDING = 0, /* not checked yet: counts as available */
    RM_HEALTH_HEALTHY = 1,
    RM_HEALTH_UNHEALTHY = 2,
} rm_health_state_t;

typedef enum en_rm_health_result_t {
    RM_HEALTH_SUCCESS = 0,
    RM_HEALTH_FAILURE = 1,         /* an explicit bad answer: HTTP non-2xx, gRPC not SERVING, a protocol error */
    RM_HEALTH_TIMEOUT = 2,         /* no answer within timeout_ms */
    RM_HEALTH_CONNECT_FAILURE = 3, /* connect or TLS handshake failed, or the connection closed without an answer */
    RM_HEALTH_NUM_RESULTS
} rm_health_result_t;

/** The state of one checked endpoint (Envoy's semantics). */
typedef struct st_rm_health_sm_t {
    rm_health_state_t state;
    uint32_t successes, failures; /* consecutive, since the last change */
} rm_health_sm_t;

/**
 * Applies one check result: the first result of a pending endpoint decides at once; an explicit bad
 * answer (RM_HEALTH_FAILURE) makes a healthy endpoint unhealthy at once; otherwise
 * `unhealthy_threshold` consecutive failures make it unhealthy and `healthy_threshold` consecutive
 * successes make an unhealthy one healthy. Returns 1 if the state changed. Pure; any thread.
 */
int rm_health_sm_record(rm_health_sm_t *sm, rm_health_result_t result, uint32_t healthy_threshold, uint32_t unhealthy_threshold);

/** Names as in metrics: "success", "failure", "timeout", "connect_failure"; "healthy", "unhealthy", "pending". */
const char *rm_health_result_name(rm_health_result_t result);
const char *rm_health_state_name(rm_health_state_t state);

/*
 * The HTTP/2 exchange of a check, without I/O: filled by the HTTP/2 codec module (which alone
 * includes nghttp2.h) through rm_health_register_h2 and driven by the checker's connection.
 */
typedef struct st_rm_health_h2_request_t {
    const char *method, *path, *authority;
    /** 1: gRPC (content-type application/grpc, te: trailers) */
    int grpc;
    const void *body;
    size_t body_len;
} rm_health_h2_request_t;

typedef struct st_rm_health_h2_codec_t {
    /** A client session with the connection preface and the request submitted (strings copied); NULL on failure. */
    void *(*create)(const rm_health_h2_request_t *req);
    /** Appends the frames ready to go to `*out`; -1 on a session error. */
    int (*send)(void *session, h2o_buffer_t **out);
    /** Feeds received bytes: 0 more wanted, 1 the stream is over (see result), 2 the session ended first (GOAWAY),
     * -1 a protocol error. */
    int (*recv)(void *session, const void *data, size_t len);
    /** After recv said 1: the :status (0: none), grpc-status (-1: none) and the DATA received (up to 64 KiB; owned by the session).
     */
    void (*result)(void *session, int *status, int *grpc_status, const uint8_t **body, size_t *body_len);
    void (*destroy)(void *session);
} rm_health_h2_codec_t;

/** HealthCheckResponse.status (field 1: 1 is SERVING) from a gRPC-framed, uncompressed response body; -1 if malformed.
 * Pure; any thread. */
int rm_health_grpc_serving_status(const uint8_t *body, size_t len);

/** Called by the HTTP/2 module at start (main thread, once). Without it, checks needing HTTP/2 fail. */
void rm_health_register_h2(const rm_health_h2_codec_t *codec);

/** Binds the checker to the main loop. Main thread, once, before the first reconcile. */
void rm_health_init(uv_loop_t *loop);
/**
 * Brings the checkers in line with `config` (a validated snapshot) and its TLS contexts `tls` (the
 * checker takes its own references on the contexts it uses; neither argument is kept). Main thread.
 */
void rm_health_reconcile(const rm_config_t *config, const rm_tls_set_t *tls);
/** Stops every checker and the resolver, and gives every verdict back (shutdown). Main thread. */
void rm_health_stop(void);

/**
 * remora_upstream_health_checks_total{cluster,result} and remora_upstream_endpoints_health{cluster,state}
 * as Prometheus text (malloc'ed; NULL when no cluster is checked). For rm_stats_register_renderer:
 * reads main-thread state, so the metrics server must run on the main thread (it does).
 */
char *rm_health_render(void);
/** One line per checked endpoint: "cluster ADDR: healthy|unhealthy|pending (health check: LAST RESULT)\n" (malloc'ed, may be "").
 */
char *rm_health_describe(void);

#endif
