/*
 * A cluster's runtime on one worker: its endpoints (fixed IPs, or host names resolved with c-ares
 * and re-resolved by TTL), a load balancer (upstream/lb.h), and per-endpoint connection pools (HTTP/2
 * connections multiplexing streams, idle HTTP/1.1 keep-alive connections).
 *
 * Reference counts here are plain integers: a cluster and its endpoints belong to one worker.
 * Streams and upstream connections hold references; a cluster replaced by a reload is retired
 * (no new streams), closes its idle connections, and is freed when the last reference goes.
 *
 * Thread: the owning worker only.
 */
#ifndef remora__cluster_h
#define remora__cluster_h

#include <h2o.h>
#include <openssl/ssl.h>
#include "config/config.h"
#include "core/worker.h"
#include "obs/stats.h"

typedef struct st_rm_cluster_t rm_cluster_t;
typedef struct st_rm_attempt_t rm_attempt_t;
typedef struct st_rm_endpoint_t rm_endpoint_t;

/** The protocol an endpoint's connections speak once known. */
typedef enum en_rm_wire_protocol_t { RM_WIRE_UNKNOWN = 0, RM_WIRE_HTTP1 = 1, RM_WIRE_H2 = 2, RM_WIRE_MAX } rm_wire_protocol_t;

struct st_rm_endpoint_t {
    rm_cluster_t *cluster;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    /** for TLS SNI and logs: the host as configured (owned) */
    char *host;
    /** the identity this endpoint's agent presents when it is not the cluster's (rm_config_endpoint_t.peer_identity;
     * owned), else NULL */
    char *peer_identity;
    char name[80];
    int refcnt;
    /** no longer in the cluster's endpoint list (DNS changed, cluster retired): pools do not reuse it */
    unsigned removed : 1;
    /** load-balancing weight (the configured endpoint's, >= 1) */
    uint32_t weight;
    /** the agent-wide load of this address in this cluster (own reference; see upstream/lb.h) */
    struct st_rm_lb_load_t *load;
    /** AUTO over TLS: the protocol ALPN chose last time */
    rm_wire_protocol_t learned;
    /** HTTP/2 connections (rm_h2client_conn_t) */
    h2o_linklist_t h2_conns;
    size_t num_h2_conns;
    /** idle HTTP/1.1 connections (rm_h1client_conn_t) */
    h2o_linklist_t h1_idle;
    size_t num_h1_idle;
    /** every HTTP/1.1 connection, busy or idle */
    h2o_linklist_t h1_all;
    /** HTTP/1.1 attempts waiting for a pooled connection (max_connections reached; rm_attempt_t pending_link) */
    h2o_linklist_t h1_waiting;
    /** connections of this endpoint on this worker (either codec, open or opening) holding a
     * max_connections slot: rm_endpoint_conn_acquire / rm_endpoint_conn_release */
    size_t num_conns;
    /** agent-wide outlier state of this address (a reference; NULL once removed) */
    struct st_rm_outlier_host_t *outlier;
};

/** Creates the runtime for `config` (a cluster of `snapshot`) on `worker`; starts DNS resolution of host-name endpoints. */
rm_cluster_t *rm_cluster_create(rm_worker_t *worker, rm_config_t *snapshot, const rm_config_cluster_t *config);
/** 1 if `old` can serve `config` unchanged (same endpoints, protocol, TLS): pools are kept across the reload. */
int rm_cluster_can_reuse(rm_cluster_t *old, const rm_config_cluster_t *config);
void rm_cluster_update_config(rm_cluster_t *c, rm_config_t *snapshot, const rm_config_cluster_t *config);
/** Retires a cluster that is no longer configured; it is freed when unused. */
void rm_cluster_retire(rm_cluster_t *c);
/** Closes every pooled connection of every cluster, live or retired (worker shutdown). */
void rm_clusters_close_all(rm_worker_t *worker);

/**
 * The worker's runtime for cluster `index` of `snapshot`, built on first use (a Service never called
 * costs no runtime). For the worker's current snapshot it is cached by index; for an older one (a
 * stream pinned to it) the runtime of the same name now in service is used, or one is built and kept
 * until the next snapshot no longer names it. Never NULL. The caller acquires it to keep it.
 */
rm_cluster_t *rm_cluster_lookup(rm_worker_t *worker, rm_config_t *snapshot, size_t index);
/** The upstream module (clusters and the DNS resolver) of every worker. */
extern const rm_worker_module_t rm_upstream_module;
/** Registers the upstream module with the workers. Main thread, once, before workers start. */
void rm_upstream_module_register(void);

rm_cluster_t *rm_cluster_acquire(rm_cluster_t *c);
void rm_cluster_release(rm_cluster_t *c);
rm_cluster_stats_t *rm_cluster_stats(rm_cluster_t *c);
rm_worker_t *rm_cluster_worker(rm_cluster_t *c);
const char *rm_cluster_name(rm_cluster_t *c);
/** The cluster's settings in the snapshot it serves. */
const rm_config_cluster_t *rm_cluster_config(rm_cluster_t *c);
SSL_CTX *rm_cluster_ssl_ctx(rm_cluster_t *c);

/**
 * Picks an endpoint (through the cluster's load balancer) and hands the attempt to a connection of
 * it through the protocol table (reusing or opening one). On failure the attempt gets
 * rm_attempt_on_error (possibly synchronously).
 */
void rm_cluster_dispatch(rm_cluster_t *c, rm_attempt_t *a);
/**
 * Picks an endpoint for a connection that is not a request (opaque TCP, tcp/tcp_proxy.c): the cluster's
 * balancer without a hash key, then outlier detection and health checks as rm_cluster_dispatch does.
 * Returns a reference the caller drops with rm_endpoint_unref, or NULL (no endpoint resolved yet, or
 * every endpoint out). The pick is not counted as an active request of the endpoint.
 */
rm_endpoint_t *rm_cluster_pick_endpoint(rm_cluster_t *c);
/**
 * A slot where the policy layer (above this one) keeps its per-runtime state, e.g. the router's
 * handle on the cluster's agent-wide retry budget; `release` (if set) is called when the runtime is freed.
 */
typedef struct st_rm_cluster_slot_t {
    void *data;
    void (*release)(void *data);
} rm_cluster_slot_t;
rm_cluster_slot_t *rm_cluster_policy_slot(rm_cluster_t *c);
/**
 * The outcome of an attempt on `ep` (NULL: none was picked) for outlier detection; `result` is an
 * rm_outlier_result_t (upstream/outlier.h). Counts an ejection it causes.
 */
void rm_cluster_report_outlier(rm_cluster_t *c, rm_endpoint_t *ep, int result);
/**
 * 1 if `ep` may be picked now: not unhealthy by active health checks and not ejected by outlier
 * detection (or its ejection is over and no probe is in flight). Balancers call it to skip ejected
 * endpoints; rm_cluster_dispatch re-checks its pick.
 * No side effect. Thread: the cluster's worker.
 */
int rm_endpoint_available(rm_endpoint_t *ep);
/** The cluster's agent-wide circuit breaker (upstream/breaker.h), held by the runtime. */
struct st_rm_breaker_t *rm_cluster_breaker(rm_cluster_t *c);

void rm_endpoint_ref(rm_endpoint_t *ep);
void rm_endpoint_unref(rm_endpoint_t *ep);

/**
 * max_connections (agent-wide, the cluster's breaker): a codec calls this before opening a
 * connection to `ep`. 1: it may (a slot is taken; the worker's first connection to the endpoint is
 * always allowed and counted anyway, so the agent-wide count may exceed the limit by up to
 * workers x endpoints - 1); 0: it may not (nothing taken). The slot belongs to the connection and is
 * given back with rm_endpoint_conn_release exactly once, when the connection is destroyed; a socket
 * handed from one codec to the other (ALPN) keeps its slot.
 */
int rm_endpoint_conn_acquire(rm_endpoint_t *ep);
void rm_endpoint_conn_release(rm_endpoint_t *ep);
/**
 * A codec refuses attempt `a` for a circuit breaker (`limit`: an rm_breaker_limit_t): counts
 * remora_upstream_overflow_total{limit}
 * and fails the attempt with RM_UPSTREAM_ERR_OVERFLOW (the local reply `overflow`, not retried).
 */
void rm_cluster_overflow(rm_cluster_t *c, rm_attempt_t *a, int limit, const char *detail);

/*
 * Connection establishment shared by the HTTP/1.1 and HTTP/2 clients: TCP connect with the
 * cluster's connect timeout, TCP_NODELAY, and the TLS handshake (peer verified) when the cluster has
 * TLS. `cb` gets the socket (NULL on failure, with an error kind and message) and the protocol ALPN
 * selected (RM_WIRE_UNKNOWN for cleartext or no ALPN).
 */
typedef struct st_rm_connect_t rm_connect_t;
typedef void (*rm_connect_cb)(rm_connect_t *conn, h2o_socket_t *sock, int err_kind, const char *err, rm_wire_protocol_t alpn,
                              void *data);
/** Returns NULL (and does not call `cb`) if no socket could be created. */
rm_connect_t *rm_connect_start(rm_endpoint_t *ep, rm_connect_cb cb, void *data);
/**
 * The same for a codec that speaks `wire` (RM_WIRE_H2 or RM_WIRE_HTTP1; RM_WIRE_UNKNOWN: opaque bytes, what
 * rm_connect_start means). To a peer agent (agent_hop or `peer: agent`) whose cluster has an expected identity
 * (rm_config_cluster_t.peer_identity), the connection is mesh mTLS offering the mesh ALPN id of `wire`, unless
 * MeshTLS is DISABLE or the agent has no identity (docs/mesh-tls.md); opaque bytes stay plaintext. A peer whose
 * certificate is not trusted or names another SPIFFE ID fails the connect (RM_UPSTREAM_ERR_CONNECT, the message
 * names both IDs).
 */
rm_connect_t *rm_connect_start_proto(rm_endpoint_t *ep, rm_wire_protocol_t wire, rm_connect_cb cb, void *data);

/**
 * Every upstream connection registers here so the worker can close them all at shutdown, even
 * those of endpoints no longer in any cluster. `close` closes the connection now (it is already
 * unlinked when called).
 */
typedef struct st_rm_upconn_link_t {
    h2o_linklist_t _link;
    void (*close)(struct st_rm_upconn_link_t *u);
} rm_upconn_link_t;
static inline void
rm_upconn_register(rm_worker_t *worker, rm_upconn_link_t *u)
{
    h2o_linklist_insert(&worker->upstream_conns, &u->_link);
}
static inline void
rm_upconn_unregister(rm_upconn_link_t *u)
{
    if (h2o_linklist_is_linked(&u->_link))
        h2o_linklist_unlink(&u->_link);
}
/** Abandons a connect in progress; the callback is not called. */
void rm_connect_cancel(rm_connect_t *conn);

/*
 * The protocol table: each client codec (http1/h1client.c, http2/h2client.c) fills its row once at
 * start (main thread, before workers run); the cluster and the codecs reach each other only
 * through it, and ALPN picks the row.
 */
typedef struct st_rm_client_codec_t {
    const char *name;
    /** runs `a` on a connection of `ep` (an idle or multiplexed one, or a new one) */
    void (*dispatch)(rm_endpoint_t *ep, rm_attempt_t *a);
    /** starts `a` on a new connection built on an already connected socket (ALPN chose this codec); the
     * connection takes over the max_connections slot the socket's opener took */
    void (*start_on_socket)(rm_endpoint_t *ep, h2o_socket_t *sock, rm_attempt_t *a);
    /** closes idle connections of an endpoint (retired / removed), and every connection if `all` */
    void (*close_idle)(rm_endpoint_t *ep, int all);
} rm_client_codec_t;

void rm_upstream_register_codec(rm_wire_protocol_t proto, const rm_client_codec_t *codec);
/** The codec of `proto`; aborts if none registered (a build without that codec). */
const rm_client_codec_t *rm_upstream_codec(rm_wire_protocol_t proto);

#endif
