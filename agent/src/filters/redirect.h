/*
 * Redirects (the route's `redirect`, Gateway API RequestRedirect): the request is answered with
 * redirect->status_code (validation defaults it to 302) and a Location built from the request and
 * the policy; it never reaches a backend. A gRPC request gets a trailers-only UNIMPLEMENTED
 * carrying the same location. Counted as the local reply cause RM_LOCAL_REDIRECT.
 *
 * Location = scheme "://" host [":" port] path:
 *  - scheme: the policy's, else the request's (":scheme", or "http"/"https" from the connection);
 *  - host: the policy's hostname, else the host of the request's authority without its port; an
 *    IPv6 literal stays bracketed;
 *  - port: the policy's port; else, when the policy gives a scheme, that scheme's well-known port
 *    (Gateway API); else the port of the request's authority if it carried one (the port the
 *    client used, which for a sidecar is what the Gateway API's "listener port" means to the
 *    client); else none. It is left out when it is the resulting scheme's well-known port (80 for
 *    http, 443 for https);
 *  - path: the request's, or modified as rm_url_rewrite_path() does (ReplaceFullPath,
 *    ReplacePrefixMatch against the route's matched prefix); the query string is always kept.
 * A request without an authority and a policy without a hostname get the path alone (a relative
 * reference, RFC 9110 10.2.2).
 *
 * Thread: the stream's worker. Memory: the stream's pool.
 */
#ifndef remora__filters_redirect_h
#define remora__filters_redirect_h

#include <h2o/memory.h>
#include "config/config.h"
#include "proxy/filter.h"
#include "proxy/message.h"

extern const rm_filter_t rm_redirect_filter;

/**
 * Returns the Location for `req`, matched by `route` whose redirect is `redirect`, as described
 * above, allocated in `pool` (or, for a relative reference, possibly the request's path itself). Pure
 * function; any thread.
 */
h2o_iovec_t rm_redirect_location(h2o_mem_pool_t *pool, const rm_config_route_t *route, const rm_config_redirect_t *redirect,
                                 const rm_req_head_t *req);

#endif
