/*
 * A proxied exchange: one downstream request, its upstream attempt, and the two body pipes
 * between them. The stream is the only thing the downstream codec (HTTP/1.1 or HTTP/2 server) and
 * the upstream codec (HTTP/1.1 or HTTP/2 client) share; neither knows what the other side speaks.
 *
 *   downstream codec --head/body/trailers--> req pipe  --> upstream codec
 *   downstream codec <--head/body/trailers-- resp pipe <-- upstream codec
 *
 * Flow control is end to end: bytes sit in a pipe until the other side has taken them, and only
 * then does the producing side learn they are consumed (*_consumed callbacks), which is when an
 * HTTP/2 side sends WINDOW_UPDATE or an HTTP/1.1 side resumes reading. A pipe therefore never
 * holds more than one flow-control window (HTTP/2) or `stream_window_bytes` (HTTP/1.1, where the
 * reader is paused past that).
 *
 * Lifetime: the downstream side creates the stream; each side detaches when it is done with it
 * (rm_stream_detach_downstream / _upstream) and the stream is freed when both have. A side must not
 * touch the stream after detaching. Per-request memory lives in `pool`, released at the end.
 *
 * Thread: a stream belongs to one worker.
 */
#ifndef remora__proxy_stream_h
#define remora__proxy_stream_h

#include <stdint.h>
#include <h2o/memory.h>
#include "config/config.h"
#include "core/worker.h"
#include "obs/stats.h"
#include "proxy/filter.h"
#include "proxy/local_reply.h"
#include "proxy/message.h"

typedef struct st_rm_stream_t rm_stream_t;
typedef struct st_rm_attempt_t rm_attempt_t;

typedef struct st_rm_pipe_t {
    h2o_buffer_t *buf;
    /** total bytes ever written into the pipe */
    uint64_t bytes_in;
    /** the writer is done; trailers (may be NULL) follow the remaining bytes */
    unsigned eos : 1;
    rm_headers_t *trailers;
} rm_pipe_t;

/** What the downstream codec provides to a stream. */
typedef struct st_rm_stream_down_ops_t {
    /** stream->resp is set; the body (possibly none: resp pipe eos) follows through resp_body_ready */
    void (*send_response_head)(rm_stream_t *s);
    /** bytes, eos or trailers were added to the resp pipe */
    void (*resp_body_ready)(rm_stream_t *s);
    /** n bytes of the request body have been taken by the upstream side: reopen the window */
    void (*req_body_consumed)(rm_stream_t *s, size_t n);
    /** abort the downstream half (HTTP/2: RST_STREAM with `h2_error`; HTTP/1.1: close the connection) */
    void (*reset)(rm_stream_t *s, uint32_t h2_error);
    /** the downstream protocol as access logs and spans name it: "HTTP/1.1" or "HTTP/2" (static storage) */
    const char *protocol;
} rm_stream_down_ops_t;

/**
 * What the proxy did with a request, for metrics, access logs and spans. Filled as the stream goes
 * (by the stream, the router and the attempts); final when observers' on_end runs.
 */
typedef struct st_rm_stream_info_t {
    /** the cluster (backend Service) the last upstream attempt went to (the stream's snapshot; NULL: none) */
    const char *backend;
    /** "ip:port" of the endpoint of the last attempt that reached one ("" if none) */
    char upstream_addr[80];
    /** upstream tries: the first plus retries and keep-alive re-sends (mirrors are not counted) */
    unsigned attempts;
    /** the response status sent downstream (0: none went, the stream was reset) */
    int status;
    /** the gRPC status of the response (head of a trailers-only response, or trailers); -1: none */
    int grpc_status;
    /** why the proxy answered locally (valid when stream->local_reply) */
    rm_local_reply_t cause;
    /** Envoy-style response flag ("UH", "URX", ...; static storage), NULL for none */
    const char *flag;
    /** response body bytes sent downstream (request bytes: stream->req_body.bytes_in) */
    uint64_t resp_bytes;
    /** the downstream protocol, "HTTP/1.1" or "HTTP/2" (rm_stream_down_ops_t.protocol, kept after the downstream detached) */
    const char *protocol;
    /** when the stream ended (rm_now_us clock; 0: not yet) */
    uint64_t ended_at_us;
} rm_stream_info_t;

/** At most this many stream observers (rm_stream_register_observer). */
#define RM_STREAM_MAX_OBSERVERS 4

/**
 * An observer of every stream of the agent (metrics, tracing, access logs): unlike filters they
 * run on every stream whatever its route, cannot answer or stop it, and are called in registration
 * order. Hooks may be NULL. Thread: the stream's worker.
 */
typedef struct st_rm_stream_observer_t {
    /** the request head is complete, before the filter chain runs (the route is not known yet) */
    void (*on_request_head)(rm_stream_t *s);
    /** an attempt (try or mirror) is about to be dispatched: the observer may add a->extra_headers */
    void (*on_attempt_start)(rm_stream_t *s, rm_attempt_t *a);
    /** the attempt is done (about to be freed); its outcome is in a->resp, a->grpc_status, a->error */
    void (*on_attempt_end)(rm_stream_t *s, rm_attempt_t *a);
    /** the stream is about to be freed: stream->info is final */
    void (*on_end)(rm_stream_t *s);
} rm_stream_observer_t;

/**
 * Adds an observer to every stream; returns its slot in stream->observer_state (each observer may
 * keep a pointer to per-stream state there, pool memory). Main thread, at start, before workers run.
 */
unsigned rm_stream_register_observer(const rm_stream_observer_t *observer);

struct st_rm_stream_t {
    rm_worker_t *worker;
    /** the snapshot this stream started with (own reference) */
    rm_config_t *config;
    const rm_config_listener_t *listener;
    rm_listener_stats_t *lstats;
    h2o_mem_pool_t pool;

    rm_req_head_t req;
    rm_resp_head_t resp;
    rm_pipe_t req_body;
    rm_pipe_t resp_body;

    const rm_stream_down_ops_t *down;
    void *down_ctx;

    /** the downstream client's address (peerlen 0 if unknown): rate limits, ring hash by source */
    struct sockaddr_storage peer;
    socklen_t peerlen;
    /**
     * The downstream peer's authenticated identity: the SPIFFE URI ("spiffe://<td>/ns/<ns>/sa/<sa>") of
     * the client certificate the mesh mTLS handshake verified, NUL-terminated, or NULL (plaintext,
     * or a TLS client without a mesh identity). Set by the downstream connection before
     * rm_stream_on_request_head, in memory that outlives the stream (the connection's) or the
     * stream's pool; read by authorization (filters/authz.h), rate limits, metrics and logs. The
     * HTTP/1.1 and HTTP/2 servers copy it from rm_dconn_t.peer_identity (mesh mTLS, docs/mesh-tls.md).
     */
    const char *peer_identity;
    /** rm_fnv1a of peer_identity (0 without one), computed once per connection: the metrics' series key */
    uint64_t peer_identity_hash;
    /** the matched route (NULL until routed, or none matched) */
    const rm_config_route_t *route;
    uint64_t started_at_us;

    /** the filter chain the stream runs, its per-filter state (pool memory) and the next filter to run */
    const rm_filter_chain_t *chain;
    void **filter_state;
    size_t chain_pos;

    /** request body replay: the pipe holds bytes [req_base, req_body.bytes_in); req_acked bytes were
     * acknowledged downstream (taken by the furthest attempt) */
    uint64_t req_base;
    uint64_t req_acked;
    /** live attempts (the stream is freed once the downstream detached and this is 0) */
    unsigned num_attempts;

    /** what happened to the request (metrics, access logs, spans) */
    rm_stream_info_t info;
    /** per-stream state of the observers, by slot (rm_stream_register_observer) */
    void *observer_state[RM_STREAM_MAX_OBSERVERS];

    unsigned resp_head_sent : 1; /* send_response_head was called */
    unsigned local_reply : 1;    /* the response is generated by the proxy */
    unsigned req_done : 1;       /* the downstream finished the request */
    unsigned down_detached : 1;
    unsigned counted : 1; /* counted in listener rq_total / rq_active */
    /** request bytes are kept for a replay (retry, mirror) rather than dropped once taken */
    unsigned req_keep : 1;
    /** nobody will read more of the request body: arriving bytes are dropped and acknowledged */
    unsigned req_discard : 1;
    unsigned aborted : 1; /* filters were told to stop upstream work */
};

/** Creates a stream (downstream side attached, upstream detached). Takes a config reference. */
rm_stream_t *rm_stream_create(rm_worker_t *worker, rm_config_t *config, const rm_config_listener_t *listener,
                              rm_listener_stats_t *lstats, const rm_stream_down_ops_t *down, void *down_ctx);

/*
 * Called by the downstream codec.
 */
/** Records the downstream client's address (copied). Downstream codec, before rm_stream_on_request_head. */
void rm_stream_set_peer(rm_stream_t *s, const struct sockaddr *addr, socklen_t len);
/** Records the mesh mTLS caller's SPIFFE ID (copied into the stream's pool: the stream may outlive the connection)
 * and its hash; NULL: none. Downstream codec, before rm_stream_on_request_head. */
void rm_stream_set_peer_identity(rm_stream_t *s, const char *identity, uint64_t hash);
/** stream->req is complete: route it and start the upstream attempt (or a local reply). */
void rm_stream_on_request_head(rm_stream_t *s);
/** A piece of the request body (copied into the req pipe). */
void rm_stream_on_request_body(rm_stream_t *s, const void *data, size_t len);
/** The request is complete; `trailers` (pool memory) may be NULL. */
void rm_stream_on_request_end(rm_stream_t *s, rm_headers_t *trailers);
/** The downstream half is gone (peer reset, connection closed): cancel upstream. */
void rm_stream_on_downstream_abort(rm_stream_t *s);
/** The downstream side is done with the stream. */
void rm_stream_detach_downstream(rm_stream_t *s);
/** Takes up to `max` bytes of the response body: copies them out and tells the upstream side. */
size_t rm_stream_read_response_body(rm_stream_t *s, void *dst, size_t max);

/*
 * Called by the attempts of the stream (proxy/attempt.c) and the filters.
 */
/** stream->resp is filled: run the response filters and pass it downstream. */
void rm_stream_on_response_head(rm_stream_t *s);
void rm_stream_on_response_body(rm_stream_t *s, const void *data, size_t len);
void rm_stream_on_response_end(rm_stream_t *s, rm_headers_t *trailers);
/** Ends a response that has started because of a failure: gRPC trailers with `grpc_status`, else a reset with `h2_error`. */
void rm_stream_abort_response(rm_stream_t *s, int grpc_status, uint32_t h2_error, const char *message);
/** Copies request body bytes at absolute offset `off` (see req_base); acknowledges downstream what no attempt took before. */
size_t rm_stream_read_request_at(rm_stream_t *s, uint64_t off, void *dst, size_t max);
/** Drops request body bytes before absolute offset `off` (no replay needs them). */
void rm_stream_drop_request_before(rm_stream_t *s, uint64_t off);
/** A filter that returned RM_FILTER_STOP from on_request_head continues the chain with the next filter. */
void rm_stream_resume(rm_stream_t *s);
/**
 * The stream moved to another listener (adopting a new snapshot before it was routed): choose its
 * chain again. Only while no filter after the first has run; the first filter's state is kept.
 */
void rm_stream_reselect_chain(rm_stream_t *s);
/** The per-stream state of `filter` (NULL if the filter is not in the stream's chain). */
void *rm_stream_filter_state(rm_stream_t *s, const rm_filter_t *filter);
/**
 * The stream's `direction` for metrics and logs: "inbound" / "outbound" on the transparent listeners,
 * else the listener's name ("" without a listener). Static or snapshot storage.
 */
const char *rm_stream_direction(const rm_stream_t *s);
/** The observers' on_attempt_start / on_attempt_end (rm_attempt_start; the attempt's free). */
void rm_stream_attempt_started(rm_stream_t *s, rm_attempt_t *a);
void rm_stream_attempt_ended(rm_stream_t *s, rm_attempt_t *a);
/** An attempt was created / freed (keeps the stream alive while attempts exist). */
void rm_stream_attempt_added(rm_stream_t *s);
void rm_stream_attempt_removed(rm_stream_t *s);

/** The filter chain new streams run (set once by the assembly at start, before workers run). */
void rm_stream_set_default_chain(const rm_filter_chain_t *chain);
/**
 * Chooses each new stream's chain from its listener instead (e.g. only the filters some route of
 * the listener uses); `select` returns static storage and is called on the worker thread. Set once
 * at start, before workers run.
 */
void rm_stream_set_chain_selector(const rm_filter_chain_t *(*select)(const rm_config_listener_t *listener));

/**
 * Answers the request locally: HTTP status and a text body, or for gRPC requests a trailers-only
 * response with `grpc_status` and `message`. Cancels the upstream attempt if any. Only before the
 * response head went downstream.
 */
void rm_stream_send_local_reply(rm_stream_t *s, int http_status, int grpc_status, const char *message);
/**
 * Answers locally for `cause` (proxy/local_reply.h): its HTTP / gRPC status and message, with
 * `detail` appended when not NULL; counted per cause. Only before the response head went downstream.
 */
void rm_stream_reply(rm_stream_t *s, rm_local_reply_t cause, const char *detail);
/** Same with explicit statuses (fault aborts, redirects). */
void rm_stream_reply_status(rm_stream_t *s, rm_local_reply_t cause, int http_status, int grpc_status, const char *message);
/** Same, adding the header fields of `extra` (pool memory; e.g. a redirect's location) to the response head. */
void rm_stream_reply_with_headers(rm_stream_t *s, rm_local_reply_t cause, int http_status, int grpc_status, const char *message,
                                  const rm_headers_t *extra);

#endif
