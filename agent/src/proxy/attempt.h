/*
 * One upstream attempt of a stream: a try of the request on one endpoint (the first try, a retry,
 * or a mirror). The router owns attempts; an upstream codec attaches to one, reads the request
 * through it (read-only: the request head belongs to the stream, the body comes from the stream's
 * replay buffer at this attempt's own cursor) and reports the response and the outcome to it.
 *
 *   router --create/cancel--> attempt <--attach/read/response/error-- upstream codec
 *                                |
 *                                +--commit--> stream (the response goes downstream)
 *
 * An attempt holds its own response head. Until the router commits it, nothing of its response
 * reaches the stream, so the router can still retry; once committed, body and trailers flow to the
 * stream's response pipe with end-to-end flow control. A mirror's response is never committed:
 * its bytes are acknowledged and dropped.
 *
 * Lifetime: created by the owner (router); freed once both the owner has released it
 * (rm_attempt_release / rm_attempt_cancel) and the codec has detached (rm_attempt_detach, or
 * rm_attempt_on_error, which detaches). Memory for headers comes from the stream's pool, which
 * outlives every attempt of the stream.
 *
 * Thread: the stream's worker.
 */
#ifndef remora__proxy_attempt_h
#define remora__proxy_attempt_h

#include <stdint.h>
#include <h2o/linklist.h>
#include <h2o/memory.h>
#include "config/config.h"
#include "core/timerwheel.h"
#include "obs/stats.h"
#include "proxy/message.h"

typedef struct st_rm_stream_t rm_stream_t;
typedef struct st_rm_attempt_t rm_attempt_t;

/** Why an upstream attempt failed; drives retries, the local reply and stats. */
typedef enum en_rm_upstream_error_t {
    RM_UPSTREAM_ERR_CONNECT = 1,  /* connection refused, unreachable, TLS handshake failed, no endpoint */
    RM_UPSTREAM_ERR_TIMEOUT = 2,  /* connect timeout */
    RM_UPSTREAM_ERR_RESET = 3,    /* the upstream reset the stream (h2_error says how) */
    RM_UPSTREAM_ERR_CLOSED = 4,   /* the upstream connection was lost mid-exchange */
    RM_UPSTREAM_ERR_PROTOCOL = 5, /* the upstream sent something invalid */
    RM_UPSTREAM_ERR_REFUSED = 6,  /* never processed: REFUSED_STREAM, above a GOAWAY's last-stream-id, or a
                                     reused HTTP/1.1 connection closed before any response byte */
    RM_UPSTREAM_ERR_OVERFLOW = 7, /* a circuit breaker refused it (max_connections, max_pending_requests): not
                                     retried, not held against the endpoint; the local reply `overflow` */
} rm_upstream_error_t;

/** Where an attempt's consistent-hash key comes from (the ring-hash balancer, session persistence). */
typedef enum en_rm_attempt_hash_t {
    RM_ATTEMPT_HASH_NONE = 0,    /* no key: the cluster's balancer as configured */
    RM_ATTEMPT_HASH_SESSION = 1, /* the route's sessionPersistence header or cookie: consistent hash whatever the balancer */
    RM_ATTEMPT_HASH_SOURCE = 2,  /* the client's source address (ring hash without a session key): hash_key is not set, the
                                    ring-hash balancer hashes the stream's peer address itself when it picks */
} rm_attempt_hash_t;

/** What the upstream codec provides to the attempt it has taken. */
typedef struct st_rm_attempt_up_ops_t {
    /** request bytes, eos or trailers became available (rm_attempt_req_pending / _req_eos) */
    void (*req_body_ready)(rm_attempt_t *a);
    /** n bytes of the response body have been taken downstream (or dropped): reopen the window */
    void (*resp_body_consumed)(rm_attempt_t *a, size_t n);
    /** abandon the attempt: abort the upstream exchange and detach (may detach synchronously) */
    void (*cancel)(rm_attempt_t *a);
} rm_attempt_up_ops_t;

/** What the owner (the router) learns from its attempts. */
typedef struct st_rm_attempt_owner_ops_t {
    /** a->resp holds a final (>= 200) response head: commit it (rm_attempt_commit) or abandon the attempt */
    void (*on_head)(rm_attempt_t *a);
    /** the first body byte of an uncommitted attempt arrived (a held gRPC head): commit or abandon */
    void (*on_body_start)(rm_attempt_t *a);
    /** the response of an uncommitted attempt ended (`trailers` may be NULL): decide with the trailers */
    void (*on_end)(rm_attempt_t *a, rm_headers_t *trailers);
    /** the response of a committed attempt ended; the attempt is done */
    void (*on_complete)(rm_attempt_t *a);
    /** the attempt failed; the codec has detached. `committed` tells whether bytes went downstream */
    void (*on_error)(rm_attempt_t *a, rm_upstream_error_t err, uint32_t h2_error, const char *detail);
} rm_attempt_owner_ops_t;

struct st_rm_attempt_t {
    rm_stream_t *stream;
    /** the stream's per-request pool (headers of this attempt live there) */
    h2o_mem_pool_t *pool;
    /** the request head: read-only for codecs */
    const rm_req_head_t *req;
    const rm_config_limits_t *limits;
    /** counters of the cluster the attempt goes to */
    rm_cluster_stats_t *cstats;
    /** this attempt's response head (written by the codec) */
    rm_resp_head_t resp;
    /** 0 for the first try, then 1, 2... for retries */
    unsigned number;
    /** request body bytes this attempt has taken (its replay cursor, an absolute offset) */
    uint64_t req_off;
    uint64_t started_at_us;

    const rm_attempt_up_ops_t *up;
    void *up_ctx;
    const rm_attempt_owner_ops_t *owner;
    void *owner_ctx;
    /** the endpoint the cluster picked (an rm_endpoint_t, opaque here), NULL before dispatch */
    void *endpoint;
    /** the owner's data (the router keeps a mirror's cluster here) */
    void *owner_data;
    /** a grpc-timeout value this attempt sends instead of the request's (the remaining deadline), or
     * {NULL, 0} to send the request's own; codecs add the field if the request has none */
    h2o_iovec_t grpc_timeout;

    /**
     * Header fields this attempt sends besides the request's (pool memory; NULL: none), e.g. the
     * trace context of its client span. Codecs send them after the request's fields and leave out
     * the request's own fields of the same names.
     */
    rm_headers_t *extra_headers;
    /** the outcome, for observers: the gRPC status of the response (head or trailers; -1: none) and the
     * failure (0: none) */
    int grpc_status;
    rm_upstream_error_t error;
    /** the cluster the attempt goes to (its name in the stream's snapshot; set by the owner) and the
     * endpoint picked last ("ip:port"; set by the cluster, "" before) */
    const char *backend;
    char endpoint_name[80];

    /** the consistent-hash key (XXH64 of the session key; RM_ATTEMPT_HASH_SESSION only), set by the router */
    uint64_t hash_key;
    rm_attempt_hash_t hash_kind;
    /**
     * The cluster's hold on the picked endpoint (one active request of its agent-wide load): set at
     * pick, ended by `lb_done` exactly once per pick, when a final response head arrives or, failing
     * that, when the attempt is freed (failed or cancelled). lb_done clears these fields.
     */
    void (*lb_done)(rm_attempt_t *a);
    void *lb_hold;
    uint64_t lb_picked_at_us;

    unsigned attached : 1;         /* a codec holds the attempt */
    unsigned counted : 1;          /* counted in cstats rq_active */
    unsigned committed : 1;        /* its response goes downstream */
    unsigned mirror : 1;           /* response discarded */
    unsigned released : 1;         /* the owner is done with it */
    unsigned head_received : 1;    /* a final head arrived */
    unsigned resp_no_body : 1;     /* the head carried END_STREAM (trailers-only); keeps it one frame downstream */
    unsigned resp_done : 1;        /* the response ended */
    unsigned fresh_connection : 1; /* a re-send of a refused request: not on a connection already open */
    unsigned upstream_failed : 1;  /* the codec reported a failure (rm_attempt_on_error) */
    /** depth of attempt calls on the stack that may end in the owner's or codec's callbacks: no free meanwhile */
    unsigned busy;
    /** owner's intrusive link (its attempt list) */
    h2o_linklist_t owner_link;
    /** intrusive link for whoever queues the attempt (a cluster waiting for DNS, a pool waiting for a connection) */
    h2o_linklist_t pending_link;
    /** owner's per-try timer entry */
    rm_timer_t try_timer;
};

/*
 * Owner (router) side
 */
/** Creates an attempt of stream `s` (not attached). `cstats` are the target cluster's counters. */
rm_attempt_t *rm_attempt_create(rm_stream_t *s, const rm_attempt_owner_ops_t *owner, void *owner_ctx, rm_cluster_stats_t *cstats);
/** The owner is about to dispatch `a` (the first time): the stream's observers see it (they may set extra_headers). */
void rm_attempt_start(rm_attempt_t *a);
/** Makes `a` the stream's response: copies its head into the stream and sends it downstream. */
void rm_attempt_commit(rm_attempt_t *a);
/** The owner abandons the attempt: the codec (if any) cancels the exchange; no more owner callbacks. */
void rm_attempt_cancel(rm_attempt_t *a);
/** The owner is done with an attempt that has finished (completed or failed). */
void rm_attempt_release(rm_attempt_t *a);
/** New request bytes / eos in the stream's request pipe: tell the codec. */
void rm_attempt_notify_req_body(rm_attempt_t *a);
/** n bytes of the committed response were taken downstream: tell the codec. */
void rm_attempt_notify_resp_consumed(rm_attempt_t *a, size_t n);

/*
 * Codec side
 */
/** The codec takes the attempt (counts an upstream request). */
void rm_attempt_attach(rm_attempt_t *a, const rm_attempt_up_ops_t *ops, void *ctx);
/** The codec lets go of the attempt without an outcome (it will be handed to another codec). */
void rm_attempt_unattach(rm_attempt_t *a);
/** The codec is done with the attempt (after its response ended, or after a cancel). */
void rm_attempt_detach(rm_attempt_t *a);
/** Request body bytes available to this attempt. */
size_t rm_attempt_req_pending(const rm_attempt_t *a);
/** 1 once the whole request (body and trailers) is in the pipe. */
int rm_attempt_req_eos(const rm_attempt_t *a);
/** The request trailers (NULL if none, or not yet known). */
rm_headers_t *rm_attempt_req_trailers(const rm_attempt_t *a);
/** Copies up to `max` request body bytes at this attempt's cursor and advances it. */
size_t rm_attempt_read_request_body(rm_attempt_t *a, void *dst, size_t max);
/** Response bytes this attempt has handed downstream that are still buffered there (HTTP/1.1 reading pauses on it). */
size_t rm_attempt_resp_buffered(const rm_attempt_t *a);
/** a->resp is complete (status >= 200). */
void rm_attempt_on_response_head(rm_attempt_t *a);
void rm_attempt_on_response_body(rm_attempt_t *a, const void *data, size_t len);
/** The response ended; `trailers` (pool memory) may be NULL. The codec detaches afterwards. */
void rm_attempt_on_response_end(rm_attempt_t *a, rm_headers_t *trailers);
/** The exchange failed; the codec is detached by this call and must not touch `a` again. */
void rm_attempt_on_error(rm_attempt_t *a, rm_upstream_error_t err, uint32_t h2_error, const char *detail);

#endif
