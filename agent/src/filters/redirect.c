#include <stdio.h>
#include <string.h>
#include "filters/redirect.h"
#include "filters/url_rewrite.h"
#include "proxy/stream.h"

static int
well_known_port(h2o_iovec_t scheme)
{
    if (h2o_lcstris(scheme.base, scheme.len, H2O_STRLIT("https")))
        return 443;
    if (h2o_lcstris(scheme.base, scheme.len, H2O_STRLIT("http")))
        return 80;
    return 0;
}

static char *
append(char *p, const void *s, size_t n)
{
    if (n != 0)
        memcpy(p, s, n);
    return p + n;
}

/* Splits an authority into host (brackets of an IPv6 literal kept) and port (0: none or not a valid port). */
static void
split_authority(h2o_iovec_t authority, h2o_iovec_t *host, int *port)
{
    const char *p = authority.base, *end = authority.base + authority.len, *colon = NULL;
    *port = 0;
    if (p != end && *p == '[') {
        const char *close = memchr(p, ']', authority.len);
        if (close != NULL && close + 1 != end && close[1] == ':')
            colon = close + 1;
    } else {
        colon = memchr(p, ':', authority.len);
        /* several colons without brackets is no host:port; keep it whole */
        if (colon != NULL && memchr(colon + 1, ':', end - colon - 1) != NULL)
            colon = NULL;
    }
    if (colon == NULL) {
        *host = authority;
        return;
    }
    *host = h2o_iovec_init(p, colon - p);
    int v = 0;
    const char *d;
    for (d = colon + 1; d != end && *d >= '0' && *d <= '9' && v <= 65535; ++d)
        v = v * 10 + (*d - '0');
    if (d == end && d != colon + 1 && v >= 1 && v <= 65535)
        *port = v;
}

h2o_iovec_t
rm_redirect_location(h2o_mem_pool_t *pool, const rm_config_route_t *route, const rm_config_redirect_t *redirect,
                     const rm_req_head_t *req)
{
    h2o_iovec_t scheme = redirect->scheme != NULL ? h2o_iovec_init(redirect->scheme, strlen(redirect->scheme)) : req->scheme;
    if (scheme.len == 0)
        scheme = h2o_iovec_init(H2O_STRLIT("http"));

    h2o_iovec_t host;
    int req_port;
    split_authority(req->authority, &host, &req_port);
    if (redirect->hostname != NULL)
        host = h2o_iovec_init(redirect->hostname, strlen(redirect->hostname));
    /* an IPv6 literal needs its brackets in a URI (RFC 3986 3.2.2) */
    size_t bracket = host.len != 0 && host.base[0] != '[' && memchr(host.base, ':', host.len) != NULL;

    int port = redirect->port != 0 ? redirect->port : redirect->scheme != NULL ? well_known_port(scheme) : req_port;
    if (port == well_known_port(scheme))
        port = 0;

    h2o_iovec_t path = rm_url_rewrite_path(pool, route, redirect->path_type, redirect->path, req->path);
    if (path.len == 0 || path.base[0] != '/')
        path = h2o_iovec_init(H2O_STRLIT("/"));

    /* without a host (a request with no authority) only a relative reference can be given */
    if (host.len == 0)
        return path;

    char port_buf[sizeof(":65535")];
    size_t port_len = port != 0 ? (size_t)snprintf(port_buf, sizeof(port_buf), ":%d", port) : 0;
    size_t len = scheme.len + 3 + bracket + host.len + bracket + port_len + path.len;
    char *buf = h2o_mem_alloc_pool(pool, len + 1), *p = buf;
    p = append(p, scheme.base, scheme.len);
    p = append(p, "://", 3);
    p = append(p, "[", bracket);
    p = append(p, host.base, host.len);
    p = append(p, "]", bracket);
    p = append(p, port_buf, port_len);
    p = append(p, path.base, path.len);
    *p = '\0';
    return h2o_iovec_init(buf, len);
}

static rm_filter_status_t
redirect_on_request_head(rm_stream_t *s, void *state)
{
    const rm_config_redirect_t *redirect = s->route->redirect;
    if (redirect == NULL)
        return RM_FILTER_CONTINUE;
    rm_header_t *location = h2o_mem_alloc_pool(&s->pool, sizeof(*location));
    location->name = h2o_iovec_init(H2O_STRLIT("location"));
    location->value = rm_redirect_location(&s->pool, s->route, redirect, &s->req);
    location->orig_name = NULL;
    rm_headers_t *extra = h2o_mem_alloc_pool(&s->pool, sizeof(*extra));
    *extra = (rm_headers_t){location, 1, 1};
    rm_stream_reply_with_headers(s, RM_LOCAL_REDIRECT, redirect->status_code != 0 ? redirect->status_code : 302,
                                 RM_GRPC_UNIMPLEMENTED, "redirect", extra);
    return RM_FILTER_STOP;
}

const rm_filter_t rm_redirect_filter = {
    .name = "redirect",
    .on_request_head = redirect_on_request_head,
};
