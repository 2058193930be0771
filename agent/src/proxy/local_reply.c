#include "proxy/local_reply.h"
#include "proxy/message.h"

/* HTTP and gRPC statuses follow the gRPC spec's mapping (doc/http-grpc-status-mapping.md) and
 * Envoy's habits; the flags are Envoy's response flags, so existing dashboards read them. */
const rm_local_reply_row_t rm_local_replies[RM_LOCAL_REPLY_MAX] = {
    [RM_LOCAL_NO_ROUTE] = {"no_route", 404, RM_GRPC_UNIMPLEMENTED, RM_H2_REFUSED_STREAM, "NR", "no route"},
    [RM_LOCAL_NOT_CONFIGURED] = {"not_configured", 503, RM_GRPC_UNAVAILABLE, RM_H2_REFUSED_STREAM, "NC",
                                 "not configured yet: waiting for the first snapshot from the control plane"},
    [RM_LOCAL_NO_CLUSTER] = {"no_cluster", 503, RM_GRPC_UNAVAILABLE, RM_H2_REFUSED_STREAM, "NC", "cluster not found"},
    [RM_LOCAL_UNREACHABLE] = {"unreachable", 503, RM_GRPC_UNAVAILABLE, RM_H2_REFUSED_STREAM, "UF", "upstream connect error"},
    [RM_LOCAL_CONNECT_TIMEOUT] = {"connect_timeout", 503, RM_GRPC_UNAVAILABLE, RM_H2_REFUSED_STREAM, "UF",
                                  "upstream connect timeout"},
    [RM_LOCAL_UPSTREAM_RESET] = {"upstream_reset", 502, RM_GRPC_UNAVAILABLE, RM_H2_INTERNAL_ERROR, "UR",
                                 "upstream reset before response headers"},
    [RM_LOCAL_UPSTREAM_REFUSED] = {"upstream_refused", 503, RM_GRPC_UNAVAILABLE, RM_H2_REFUSED_STREAM, "UR",
                                   "upstream refused the request"},
    [RM_LOCAL_UPSTREAM_CLOSED] = {"upstream_closed", 502, RM_GRPC_UNAVAILABLE, RM_H2_INTERNAL_ERROR, "UC",
                                  "upstream connection closed before response headers"},
    [RM_LOCAL_UPSTREAM_PROTOCOL] = {"upstream_protocol_error", 502, RM_GRPC_INTERNAL, RM_H2_INTERNAL_ERROR, "UPE",
                                    "upstream protocol error"},
    [RM_LOCAL_REQUEST_TIMEOUT] = {"request_timeout", 504, RM_GRPC_DEADLINE_EXCEEDED, RM_H2_CANCEL, "UT",
                                  "request timeout: the upstream did not respond in time"},
    [RM_LOCAL_PER_TRY_TIMEOUT] = {"per_try_timeout", 504, RM_GRPC_DEADLINE_EXCEEDED, RM_H2_CANCEL, "UT",
                                  "per-try timeout: the upstream did not respond in time"},
    [RM_LOCAL_GRPC_DEADLINE] = {"grpc_deadline", 504, RM_GRPC_DEADLINE_EXCEEDED, RM_H2_CANCEL, "DE",
                                "deadline exceeded (grpc-timeout)"},
    [RM_LOCAL_STREAM_IDLE] = {"stream_idle_timeout", 504, RM_GRPC_DEADLINE_EXCEEDED, RM_H2_CANCEL, "SI", "stream idle timeout"},
    [RM_LOCAL_FAULT_ABORT] = {"fault_abort", 503, RM_GRPC_UNAVAILABLE, RM_H2_INTERNAL_ERROR, "FI", "fault injected"},
    [RM_LOCAL_REDIRECT] = {"redirect", 302, RM_GRPC_UNIMPLEMENTED, RM_H2_NO_ERROR, "RD", "redirect"},
    [RM_LOCAL_HEADERS_TOO_LARGE] = {"headers_too_large", 431, RM_GRPC_RESOURCE_EXHAUSTED, RM_H2_PROTOCOL_ERROR, "DPE",
                                    "request header fields too large"},
    [RM_LOCAL_OVERFLOW] = {"overflow", 503, RM_GRPC_UNAVAILABLE, RM_H2_REFUSED_STREAM, "UO", "upstream overflow"},
    [RM_LOCAL_RATE_LIMITED] = {"rate_limited", 429, RM_GRPC_RESOURCE_EXHAUSTED, RM_H2_REFUSED_STREAM, "RL", "rate limited"},
    [RM_LOCAL_DENIED] = {"denied", 403, RM_GRPC_PERMISSION_DENIED, RM_H2_REFUSED_STREAM, "UAEX", "denied"},
    [RM_LOCAL_URI_TOO_LONG] = {"uri_too_long", 414, RM_GRPC_RESOURCE_EXHAUSTED, RM_H2_PROTOCOL_ERROR, "DPE",
                               "request URI too long"},
    [RM_LOCAL_BODY_TOO_LARGE] = {"body_too_large", 413, RM_GRPC_RESOURCE_EXHAUSTED, RM_H2_CANCEL, "DPE", "request body too large"},
};
