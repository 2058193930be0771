#include <string.h>
#include "filters/url_rewrite.h"
#include "proxy/stream.h"

static size_t
trim_trailing_slashes(const char *s, size_t len)
{
    while (len != 0 && s[len - 1] == '/')
        --len;
    return len;
}

h2o_iovec_t
rm_url_rewrite_path(h2o_mem_pool_t *pool, const rm_config_route_t *route, rm_path_rewrite_t type, const char *value,
                    h2o_iovec_t path)
{
    if (type == RM_PATH_REWRITE_NONE || value == NULL || path.len == 0 || path.base[0] != '/')
        return path;
    const char *q = memchr(path.base, '?', path.len);
    size_t path_len = q != NULL ? (size_t)(q - path.base) : path.len;
    h2o_iovec_t query = h2o_iovec_init(path.base + path_len, path.len - path_len);

    /* the new path is head + rest + query */
    h2o_iovec_t head = h2o_iovec_init(value, strlen(value)), rest = {NULL, 0};
    if (type == RM_PATH_REWRITE_PREFIX) {
        const char *prefix = route->path_match == RM_PATH_MATCH_PREFIX && route->path != NULL ? route->path : "/";
        size_t prefix_len = trim_trailing_slashes(prefix, strlen(prefix));
        if (path_len < prefix_len || memcmp(path.base, prefix, prefix_len) != 0)
            return path;
        rest = h2o_iovec_init(path.base + prefix_len, path_len - prefix_len);
        /* Gateway API: the prefix is a list of whole segments and a trailing '/' of either side is
         * ignored, so the remainder ("" or "/...") carries the only separator; a match that ended
         * inside a segment (our prefix match is byte-wise) keeps the value as written */
        if (rest.len == 0 || rest.base[0] == '/')
            head.len = trim_trailing_slashes(head.base, head.len);
        if (head.len + rest.len == 0)
            head = h2o_iovec_init(H2O_STRLIT("/"));
    }

    size_t len = head.len + rest.len + query.len;
    char *buf = h2o_mem_alloc_pool(pool, len + 1), *p = buf;
    memcpy(p, head.base, head.len);
    p += head.len;
    if (rest.len != 0) {
        memcpy(p, rest.base, rest.len);
        p += rest.len;
    }
    if (query.len != 0) {
        memcpy(p, query.base, query.len);
        p += query.len;
    }
    *p = '\0';
    return h2o_iovec_init(buf, len);
}

static rm_filter_status_t
url_rewrite_on_request_head(rm_stream_t *s, void *state)
{
    const rm_config_url_rewrite_t *rw = s->route->url_rewrite;
    if (rw == NULL)
        return RM_FILTER_CONTINUE;
    if (rw->hostname != NULL)
        s->req.authority = h2o_iovec_init(rw->hostname, strlen(rw->hostname));
    s->req.path = rm_url_rewrite_path(&s->pool, s->route, rw->path_type, rw->path, s->req.path);
    return RM_FILTER_CONTINUE;
}

const rm_filter_t rm_url_rewrite_filter = {
    .name = "url_rewrite",
    .on_request_head = url_rewrite_on_request_head,
};
