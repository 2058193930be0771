/*
 * The one table of local replies: every response the proxy makes up on a request's behalf has a
 * cause, and each cause maps to one HTTP status, one gRPC status, one HTTP/2 RST_STREAM code (for a
 * response that has already started) and one response flag for logs and metrics
 * (remora_downstream_local_replies_total{cause}). Pure data; any thread.
 */
#ifndef remora__proxy_local_reply_h
#define remora__proxy_local_reply_h

#include <stdint.h>

typedef enum en_rm_local_reply_t {
    RM_LOCAL_NO_ROUTE = 0,      /* no route matched the request */
    RM_LOCAL_NOT_CONFIGURED,    /* control-plane mode before the first snapshot */
    RM_LOCAL_NO_CLUSTER,        /* the route's cluster has no runtime (removed by a reload) */
    RM_LOCAL_UNREACHABLE,       /* connect failure, no endpoint, DNS failure */
    RM_LOCAL_CONNECT_TIMEOUT,   /* connect timeout */
    RM_LOCAL_UPSTREAM_RESET,    /* reset before the response head */
    RM_LOCAL_UPSTREAM_REFUSED,  /* REFUSED_STREAM (never processed) and no retry left */
    RM_LOCAL_UPSTREAM_CLOSED,   /* connection lost before the response head */
    RM_LOCAL_UPSTREAM_PROTOCOL, /* invalid response */
    RM_LOCAL_REQUEST_TIMEOUT,   /* the route's request timeout */
    RM_LOCAL_PER_TRY_TIMEOUT,   /* the last try's per-try timeout */
    RM_LOCAL_GRPC_DEADLINE,     /* the client's grpc-timeout */
    RM_LOCAL_STREAM_IDLE,       /* no bytes either way for the stream idle timeout */
    RM_LOCAL_FAULT_ABORT,       /* fault injection (status from the policy) */
    RM_LOCAL_REDIRECT,          /* RequestRedirect (status from the policy) */
    RM_LOCAL_HEADERS_TOO_LARGE, /* request header block over the limits */
    RM_LOCAL_OVERFLOW,          /* a circuit breaker or queue limit */
    RM_LOCAL_RATE_LIMITED,      /* a rate limit */
    RM_LOCAL_DENIED,            /* authorization */
    RM_LOCAL_URI_TOO_LONG,      /* request target / :path over limits.max_request_uri_bytes */
    RM_LOCAL_BODY_TOO_LARGE,    /* request body over limits.max_request_body_bytes */
    RM_LOCAL_REPLY_MAX
} rm_local_reply_t;

typedef struct st_rm_local_reply_row_t {
    /** snake_case name: the `cause` label */
    const char *name;
    int http_status;
    int grpc_status;
    /** RST_STREAM code for a response that already started (non-gRPC) */
    uint32_t h2_error;
    /** Envoy-style response flag for access logs */
    const char *flag;
    /** the default message */
    const char *message;
} rm_local_reply_row_t;

extern const rm_local_reply_row_t rm_local_replies[RM_LOCAL_REPLY_MAX];

#endif
