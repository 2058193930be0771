/*
 * Route matching. Runs per request: no allocation, no locale-dependent calls, and the request's
 * authority is split once per call rather than once per route. Regular expressions were compiled at
 * validation (config/regex.h); matching them only touches per-thread scratch space.
 */
#include <string.h>
#include "config/regex.h"
#include "router/router.h"

typedef struct st_authority_t {
    const char *host;
    size_t host_len;
    /* -1: no port given */
    long port;
} authority_t;

static inline unsigned char
lc(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

/* `pattern` is already lower-case (the validator normalizes it) */
static int
eq_lc(const char *s, const char *pattern, size_t n)
{
    for (size_t i = 0; i != n; ++i)
        if (lc(s[i]) != (unsigned char)pattern[i])
            return 0;
    return 1;
}

static long
parse_port(const char *s, size_t len)
{
    long v = 0;
    if (len == 0)
        return -1;
    if (len > 5)
        return -2;
    for (size_t i = 0; i != len; ++i) {
        if (s[i] < '0' || s[i] > '9')
            return -2;
        v = v * 10 + (s[i] - '0');
    }
    return v;
}

/*
 * Splits "host", "host:port", "[v6]" or "[v6]:port"; brackets stay part of the host so both sides
 * compare the same way. A malformed port yields -2, which equals no configured port.
 */
static void
split_authority(const char *s, size_t len, authority_t *a)
{
    const char *colon = NULL;
    a->port = -1;
    if (len != 0 && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (close != NULL && (size_t)(close - s) + 1 < len && close[1] == ':')
            colon = close + 1;
    } else {
        for (size_t i = len; i != 0; --i) {
            if (s[i - 1] == ':') {
                colon = s + i - 1;
                break;
            }
        }
    }
    if (colon != NULL) {
        a->port = parse_port(colon + 1, s + len - colon - 1);
        len = colon - s;
    }
    /* "example.com." names the same host as "example.com" */
    if (len > 1 && s[len - 1] == '.')
        --len;
    a->host = s;
    a->host_len = len;
}

static int
authority_entry_matches(const char *entry, const authority_t *req, long default_port)
{
    authority_t e;
    if (entry[0] == '*' && entry[1] == '\0')
        return 1;
    split_authority(entry, strlen(entry), &e);
    if (e.port != -1) {
        long rport = req->port != -1 ? req->port : default_port;
        if (rport != e.port)
            return 0;
    }
    if (e.host_len >= 2 && e.host[0] == '*' && e.host[1] == '.') {
        size_t suffix_len = e.host_len - 1; /* ".domain" */
        return req->host_len > suffix_len && eq_lc(req->host + req->host_len - suffix_len, e.host + 1, suffix_len);
    }
    return req->host_len == e.host_len && eq_lc(req->host, e.host, e.host_len);
}

static int
headers_match(const rm_config_route_t *route, const rm_req_head_t *req)
{
    const rm_route_compiled_t *compiled = route->_compiled;
    for (size_t i = 0; i != route->num_headers; ++i) {
        const rm_config_header_match_t *m = route->headers + i;
        size_t name_len = strlen(m->name), value_len = m->value != NULL ? strlen(m->value) : 0;
        /* a regex the validator did not compile (a snapshot that skipped validation) matches nothing */
        const rm_regex_t *re = m->is_regex && compiled != NULL && i < compiled->num_headers ? compiled->headers[i] : NULL;
        int found = 0;
        if (m->is_regex && re == NULL)
            return 0;
        for (size_t j = 0; j != req->headers.size && !found; ++j) {
            const rm_header_t *h = req->headers.entries + j;
            if (h->name.len != name_len || !eq_lc(h->name.base, m->name, name_len))
                continue;
            if (re != NULL)
                found = rm_regex_match(re, h->value.base, h->value.len);
            else
                found = m->value == NULL || (h->value.len == value_len && memcmp(h->value.base, m->value, value_len) == 0);
        }
        if (!found)
            return 0;
    }
    return 1;
}

static int
route_matches(const rm_config_route_t *route, const rm_req_head_t *req, const authority_t *authority, long default_port,
              size_t path_len)
{
    if (route->method != NULL && !h2o_memis(req->method.base, req->method.len, route->method, strlen(route->method)))
        return 0;
    if (route->num_authorities != 0 && authority != NULL) {
        size_t i;
        for (i = 0; i != route->num_authorities; ++i)
            if (authority_entry_matches(route->authorities[i], authority, default_port))
                break;
        if (i == route->num_authorities)
            return 0;
    }
    switch (route->path_match) {
    case RM_PATH_MATCH_ANY:
        break;
    case RM_PATH_MATCH_PREFIX: {
        size_t n = strlen(route->path);
        if (path_len < n || memcmp(req->path.base, route->path, n) != 0)
            return 0;
    } break;
    case RM_PATH_MATCH_EXACT: {
        size_t n = strlen(route->path);
        if (path_len != n || memcmp(req->path.base, route->path, n) != 0)
            return 0;
    } break;
    case RM_PATH_MATCH_REGEX: {
        const rm_route_compiled_t *compiled = route->_compiled;
        if (compiled == NULL || compiled->path == NULL || !rm_regex_match(compiled->path, req->path.base, path_len))
            return 0;
    } break;
    default:
        return 0;
    }
    return headers_match(route, req);
}

static void
prepare(const rm_req_head_t *req, authority_t *authority, long *default_port, size_t *path_len)
{
    const char *q;
    split_authority(req->authority.base, req->authority.len, authority);
    /* an empty authority only matches "*" and routes without authorities */
    if (req->authority.len == 0)
        authority->port = -2;
    *default_port = req->scheme.len == 5 && eq_lc(req->scheme.base, "https", 5) ? 443 : 80;
    *path_len = req->path.len;
    if (req->path.len != 0 && (q = memchr(req->path.base, '?', req->path.len)) != NULL)
        *path_len = q - req->path.base;
}

int
rm_router_route_matches(const rm_config_route_t *route, const rm_req_head_t *req)
{
    authority_t authority;
    long default_port;
    size_t path_len;
    prepare(req, &authority, &default_port, &path_len);
    return route_matches(route, req, &authority, default_port, path_len);
}

/* A route of the Service `cluster_index`: it sends there (first or any weighted backend). */
static int
route_serves(const rm_config_route_t *route, size_t cluster_index)
{
    if (route->has_service)
        return route->service_cluster == cluster_index;
    if (route->cluster_index == cluster_index)
        return 1;
    for (size_t i = 0; i != route->num_backends; ++i)
        if (route->backends[i].cluster_index == cluster_index)
            return 1;
    return 0;
}

const rm_config_route_t *
rm_router_match(const rm_config_listener_t *listener, const rm_req_head_t *req)
{
    authority_t authority;
    long default_port;
    size_t path_len;
    prepare(req, &authority, &default_port, &path_len);
    if (listener->fallback_route != NULL) {
        /* the original destination chose the Service (docs/transparent.md): its routes, authority aside;
         * the index keeps a request on one Service's address from scanning every Service's routes */
        size_t i = 0, end = listener->num_routes;
        if (listener->service_routes_indexed && (size_t)listener->service_route_first + listener->service_route_count <= end) {
            i = listener->service_route_first;
            end = i + listener->service_route_count;
        }
        for (; i != end; ++i)
            if (route_serves(listener->routes + i, listener->service_cluster) &&
                route_matches(listener->routes + i, req, NULL, default_port, path_len))
                return listener->routes + i;
        return listener->fallback_route;
    }
    for (size_t i = 0; i != listener->num_routes; ++i)
        if (route_matches(listener->routes + i, req, &authority, default_port, path_len))
            return listener->routes + i;
    return NULL;
}

size_t
rm_router_pick_cluster(const rm_config_route_t *route, uint64_t random)
{
    if (route->num_backends == 0)
        return route->cluster_index;
    uint64_t point = random % route->total_weight;
    for (size_t i = 0; i != route->num_backends; ++i) {
        if (point < route->backends[i].weight)
            return route->backends[i].cluster_index;
        point -= route->backends[i].weight;
    }
    return route->backends[route->num_backends - 1].cluster_index;
}
