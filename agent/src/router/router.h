/*
 * Route selection: which route of a listener answers a request.
 *
 * Pure and allocation-free; it runs once per request on the worker that owns the stream. The
 * listener (and the snapshot it belongs to) must stay referenced by the caller for as long as the
 * returned route is used.
 */
#ifndef remora__router_h
#define remora__router_h

#include "config/config.h"
#include "proxy/message.h"

/**
 * Returns the first route of `listener` (in configuration order) whose every condition holds for
 * `req`, or NULL if none does. The result points into the listener (not owned by the caller).
 * On a Service listener (fallback_route set) only the Service's routes are tested, authority aside,
 * and the fallback route answers when none matches; with service_routes_indexed (control-plane
 * snapshots) only the span of the Service's routes is visited: the cost is that of the Service's
 * routes, not of every route of the listener.
 *
 * - authority: empty list matches anything. Otherwise one entry must match req->authority,
 *   compared case-insensitively (a trailing dot on the request host is ignored):
 *     "*"            any authority, including an empty one;
 *     "host"         the request host, whatever its port;
 *     "host:port"    the request host and port; a request without a port has the scheme's
 *                    default (443 for "https", else 80);
 *     "*.domain"     any host ending in ".domain" with at least one label before it (not "domain"
 *                    itself); "*.domain:port" also compares the port as above.
 *   IPv6 hosts are written in brackets on both sides ("[::1]:80").
 * - path: compared to req->path up to the first '?' (the query is never matched); exact is a
 *   byte-for-byte comparison, prefix a plain string prefix ("/api" also matches "/apis"), regex a
 *   PCRE2 match of the whole path (anchored at both ends, see config/regex.h).
 * - headers: each entry needs a field in req->headers with that (lower-case) name; with a value,
 *   at least one field of that name must have exactly that value, or with is_regex, a value that
 *   the expression matches whole.
 * Conditions are tested cheapest first (method, authority, path, headers), so a route's regular
 * expressions only run on requests that passed its other conditions. A regular expression match
 * that hits its limits (RM_REGEX_MATCH_LIMIT ...) counts as no match; so does a regex condition on
 * a route whose snapshot was not validated (no compiled form).
 *
 * Thread: any (reads only; regex matching uses per-thread scratch space, created on the thread's
 * first regex match, the only allocation). Never fails; NULL means "no route" (the caller answers 404).
 */
const rm_config_route_t *rm_router_match(const rm_config_listener_t *listener, const rm_req_head_t *req);

/** Tests a single route; same rules as rm_router_match. Returns 1 on match. */
int rm_router_route_matches(const rm_config_route_t *route, const rm_req_head_t *req);

/**
 * The cluster index a request on `route` goes to: the route's cluster, or for a weighted split the
 * backend that `random` (uniform over 64 bits) falls on, in proportion to the weights. No allocation.
 */
size_t rm_router_pick_cluster(const rm_config_route_t *route, uint64_t random);

#endif
