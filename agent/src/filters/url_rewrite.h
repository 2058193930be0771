/*
 * URL rewrite (the route's `url_rewrite`, Gateway API URLRewrite): before the request goes upstream,
 * replace its authority with `hostname` (sent as :authority over HTTP/2 and Host over HTTP/1.1) and
 * its path with the configured path modifier. Route selection is already done and is not redone.
 *
 * The path modifier (rm_url_rewrite_path) is shared with RequestRedirect (filters/redirect.h):
 *  - RM_PATH_REWRITE_FULL replaces the path before '?' with the value;
 *  - RM_PATH_REWRITE_PREFIX replaces the prefix the route matched (route->path for a prefix match,
 *    "/" for a route without a path match) with the value, as the Gateway API's ReplacePrefixMatch:
 *    a trailing '/' of the prefix and of the value is ignored, so that prefix "/foo" or "/foo/"
 *    with value "/xyz" or "/xyz/" turns "/foo/bar" into "/xyz/bar", "/foo/" into "/xyz/" and "/foo"
 *    into "/xyz"; value "/" turns "/foo/bar" into "/bar" (never "//bar") and "/foo" into "/". Where
 *    the byte-wise prefix match ended inside a path segment ("/foobar" under prefix "/foo"), the
 *    value replaces the matched bytes as they are ("/xyz" + "bar").
 * The query string (from '?') is kept in both cases. A path that does not start with '/' (the
 * asterisk form of OPTIONS) is left alone.
 *
 * Thread: the stream's worker. Memory: the stream's pool; the hostname is referenced from the
 * stream's snapshot, which the stream holds.
 */
#ifndef remora__filters_url_rewrite_h
#define remora__filters_url_rewrite_h

#include <h2o/memory.h>
#include "config/config.h"
#include "proxy/filter.h"

extern const rm_filter_t rm_url_rewrite_filter;

/**
 * Returns `path` (origin-form, with its query) modified by `type` and `value` as described above
 * for a request that matched `route`. The result is NUL-terminated and allocated in `pool`, or is
 * `path` itself when nothing changes (RM_PATH_REWRITE_NONE, NULL value, a path not starting with
 * '/', or a path that does not start with the route's prefix). Pure function; any thread.
 */
h2o_iovec_t rm_url_rewrite_path(h2o_mem_pool_t *pool, const rm_config_route_t *route, rm_path_rewrite_t type, const char *value,
                                h2o_iovec_t path);

#endif
