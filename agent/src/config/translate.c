#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "remora/strutil.h"
#include "remora/v1/discovery.pb-c.h"
#include "config/translate.h"

typedef struct st_builder_t {
    rm_config_t *config;
    const Remora__V1__Snapshot *snap;
    char *err;
    size_t errlen;
    /* routes being built for the listeners (every listener gets the same list) */
    rm_config_route_t *routes;
    size_t num_routes, cap_routes;
} builder_t;

__attribute__((format(printf, 2, 3))) static int
fail(builder_t *b, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    vsnprintf(b->err, b->errlen, fmt, args);
    va_end(args);
    return -1;
}

static const char *
ns_of(const Remora__V1__ObjectMeta *meta)
{
    return meta != NULL && meta->namespace_ != NULL && meta->namespace_[0] != '\0' ? meta->namespace_ : "default";
}

static const char *
name_of(const Remora__V1__ObjectMeta *meta)
{
    return meta != NULL && meta->name != NULL ? meta->name : "";
}

static char *
cluster_name(const char *name, const char *ns)
{
    size_t len = strlen(name) + strlen(ns) + 2;
    char *s = rm_malloc(len);
    snprintf(s, len, "%s.%s", name, ns);
    return s;
}

static int
copy_base(builder_t *b, const rm_config_t *base)
{
    rm_config_t *c = b->config;
    c->num_workers = base->num_workers;
    c->admin_addr = base->admin_addr;
    c->health_addr = base->health_addr;
    c->drain_timeout_ms = base->drain_timeout_ms;
    c->limits = base->limits;
    c->dns_servers = rm_calloc(base->num_dns_servers, sizeof(char *));
    for (size_t i = 0; i != base->num_dns_servers; ++i)
        c->dns_servers[i] = rm_strdup(base->dns_servers[i]);
    c->num_dns_servers = base->num_dns_servers;
    c->listeners = rm_calloc(base->num_listeners, sizeof(*c->listeners));
    for (size_t i = 0; i != base->num_listeners; ++i) {
        const rm_config_listener_t *from = &base->listeners[i];
        rm_config_listener_t *to = &c->listeners[i];
        to->name = from->name != NULL ? rm_strdup(from->name) : NULL;
        to->addr = from->addr;
        to->tls_cert_file = from->tls_cert_file != NULL ? rm_strdup(from->tls_cert_file) : NULL;
        to->tls_key_file = from->tls_key_file != NULL ? rm_strdup(from->tls_key_file) : NULL;
        to->line = from->line;
        c->num_listeners = i + 1;
    }
    return 0;
}

static int
add_cluster(builder_t *b, const Remora__V1__Service *svc)
{
    rm_config_t *c = b->config;
    const char *name = name_of(svc->metadata), *ns = ns_of(svc->metadata);
    rm_config_cluster_t *cl = &c->clusters[c->num_clusters++];
    rm_config_cluster_set_defaults(cl);
    cl->name = cluster_name(name, ns);
    const Remora__V1__ServiceSpec *spec = svc->spec;
    Remora__V1__Protocol proto = spec != NULL ? spec->protocol : REMORA__V1__PROTOCOL__PROTOCOL_UNSPECIFIED;
    switch (proto) {
    case REMORA__V1__PROTOCOL__PROTOCOL_GRPC:
    case REMORA__V1__PROTOCOL__PROTOCOL_HTTP2:
        cl->protocol = RM_UPSTREAM_H2;
        break;
    case REMORA__V1__PROTOCOL__PROTOCOL_HTTP1:
        cl->protocol = RM_UPSTREAM_HTTP1;
        break;
    default:
        return fail(b, "service %s/%s: protocol is not set", ns, name);
    }
    size_t n = spec->n_endpoints;
    cl->endpoints = rm_calloc(n, sizeof(*cl->endpoints));
    for (size_t i = 0; i != n; ++i) {
        const Remora__V1__Endpoint *ep = spec->endpoints[i];
        const char *target = ep->target_case == REMORA__V1__ENDPOINT__TARGET_ADDRESS ? ep->address
                             : ep->target_case == REMORA__V1__ENDPOINT__TARGET_DNS   ? ep->dns
                                                                                     : NULL;
        if (target == NULL)
            return fail(b, "service %s/%s: endpoint #%zu has neither address nor dns", ns, name, i + 1);
        rm_config_endpoint_t *e = &cl->endpoints[i];
        const char *why;
        if (rm_split_host_port(target, &e->host, &e->port, &why) != 0)
            return fail(b, "service %s/%s: endpoint '%s': %s", ns, name, target, why);
        cl->num_endpoints = i + 1;
        if (ep->target_case == REMORA__V1__ENDPOINT__TARGET_ADDRESS) {
            if (rm_parse_ip_port(target, &e->addr.addr, &e->addr.addrlen, &why) != 0)
                return fail(b, "service %s/%s: endpoint '%s': %s", ns, name, target, why);
            e->is_ip = 1;
        }
        if (e->port == 0)
            return fail(b, "service %s/%s: endpoint '%s': port must be 1-65535", ns, name, target);
    }
    return 0;
}

static const Remora__V1__Service *
find_service(const Remora__V1__Snapshot *snap, const char *name, const char *ns)
{
    for (size_t i = 0; i != snap->n_services; ++i) {
        const Remora__V1__Service *s = snap->services[i];
        if (strcmp(name_of(s->metadata), name) == 0 && strcmp(ns_of(s->metadata), ns) == 0)
            return s;
    }
    return NULL;
}

static rm_config_route_t *
new_route(builder_t *b, const Remora__V1__Service *svc, const char *route_name)
{
    if (b->num_routes == b->cap_routes) {
        b->cap_routes = b->cap_routes == 0 ? 16 : b->cap_routes * 2;
        b->routes = rm_realloc(b->routes, b->cap_routes * sizeof(*b->routes));
    }
    rm_config_route_t *r = &b->routes[b->num_routes++];
    memset(r, 0, sizeof(*r));
    const char *name = name_of(svc->metadata), *ns = ns_of(svc->metadata);
    char buf[600];
    snprintf(buf, sizeof(buf), "%s.%s/%s/%zu", name, ns, route_name, b->num_routes);
    r->name = rm_strdup(buf);
    const char *suffixes[] = {"", ".svc", ".svc.cluster.local"};
    r->authorities = rm_calloc(4, sizeof(char *));
    for (size_t i = 0; i != 3; ++i) {
        snprintf(buf, sizeof(buf), "%s.%s%s", name, ns, suffixes[i]);
        r->authorities[r->num_authorities++] = rm_strdup(buf);
    }
    if (strcmp(ns, "default") == 0)
        r->authorities[r->num_authorities++] = rm_strdup(name);
    return r;
}

static int
set_headers(builder_t *b, rm_config_route_t *r, Remora__V1__HeaderMatch *const *headers, size_t n, const char *what)
{
    r->headers = rm_calloc(n, sizeof(*r->headers));
    for (size_t i = 0; i != n; ++i) {
        const Remora__V1__HeaderMatch *h = headers[i];
        if (h->match_case == REMORA__V1__HEADER_MATCH__MATCH_REGULAR_EXPRESSION)
            return fail(b, "%s: header match on '%s' by regular expression is not supported by this agent yet", what, h->name);
        rm_config_header_match_t *m = &r->headers[r->num_headers++];
        m->name = rm_strdup(h->name != NULL ? h->name : "");
        for (char *p = m->name; *p != '\0'; ++p)
            if ('A' <= *p && *p <= 'Z')
                *p += 'a' - 'A';
        m->value = h->match_case == REMORA__V1__HEADER_MATCH__MATCH_EXACT ? rm_strdup(h->exact) : NULL;
    }
    return 0;
}

/* Without retries a per-try (backendRequest) timeout bounds the one try, so the effective bound is
 * the smaller of the two. */
static int
set_timeout(builder_t *b, rm_config_route_t *r, const Remora__V1__RouteTimeouts *t, const char *what)
{
    if (t == NULL)
        return 0;
    const Remora__V1__Duration *ds[] = {t->request, t->backend_request};
    for (size_t i = 0; i != 2; ++i) {
        const Remora__V1__Duration *d = ds[i];
        if (d == NULL)
            continue;
        if (d->seconds < 0 || d->nanos < 0 || d->seconds > 86400)
            return fail(b, "%s: timeouts must be between 0 and 24h", what);
        uint64_t ms = (uint64_t)d->seconds * 1000 + (uint64_t)d->nanos / 1000000;
        if (ms == 0 && (d->seconds != 0 || d->nanos != 0))
            ms = 1;
        if (ms != 0 && (r->timeout_ms == 0 || ms < r->timeout_ms))
            r->timeout_ms = (uint32_t)ms;
    }
    return 0;
}

static int
set_backends(builder_t *b, rm_config_route_t *r, const Remora__V1__Service *svc, Remora__V1__BackendReference *const *refs,
             size_t n, const char *route_ns, const char *what)
{
    if (n == 0) {
        r->cluster_name = cluster_name(name_of(svc->metadata), ns_of(svc->metadata));
        return 0;
    }
    r->backends = rm_calloc(n, sizeof(*r->backends));
    for (size_t i = 0; i != n; ++i) {
        const Remora__V1__BackendReference *ref = refs[i];
        const char *ns = ref->namespace_ != NULL && ref->namespace_[0] != '\0' ? ref->namespace_ : route_ns;
        if (ref->kind != NULL && ref->kind[0] != '\0' && strcasecmp(ref->kind, "Service") != 0)
            return fail(b, "%s: backendRef kind '%s' is not supported (only Service)", what, ref->kind);
        if (find_service(b->snap, ref->name, ns) == NULL)
            return fail(b, "%s: backendRef names service %s/%s, which does not exist", what, ns, ref->name);
        r->backends[i].cluster_name = cluster_name(ref->name, ns);
        r->backends[i].weight = ref->weight;
        r->num_backends = i + 1;
    }
    return 0;
}

static int
refers_to(Remora__V1__ParentReference *const *refs, size_t n, const char *route_ns, const Remora__V1__Service *svc)
{
    for (size_t i = 0; i != n; ++i) {
        const Remora__V1__ParentReference *p = refs[i];
        const char *ns = p->namespace_ != NULL && p->namespace_[0] != '\0' ? p->namespace_ : route_ns;
        if ((p->kind == NULL || p->kind[0] == '\0' || strcasecmp(p->kind, "Service") == 0) && p->name != NULL &&
            strcmp(p->name, name_of(svc->metadata)) == 0 && strcmp(ns, ns_of(svc->metadata)) == 0)
            return 1;
    }
    return 0;
}

static int
add_http_routes(builder_t *b, const Remora__V1__Service *svc)
{
    for (size_t i = 0; i != b->snap->n_http_routes; ++i) {
        const Remora__V1__HTTPRoute *hr = b->snap->http_routes[i];
        const Remora__V1__HTTPRouteSpec *spec = hr->spec;
        const char *rns = ns_of(hr->metadata);
        if (spec == NULL || !refers_to(spec->parent_refs, spec->n_parent_refs, rns, svc))
            continue;
        char what[300];
        snprintf(what, sizeof(what), "HTTPRoute %s/%s", rns, name_of(hr->metadata));
        for (size_t j = 0; j != spec->n_rules; ++j) {
            const Remora__V1__HTTPRouteRule *rule = spec->rules[j];
            size_t nm = rule->n_matches != 0 ? rule->n_matches : 1;
            for (size_t k = 0; k != nm; ++k) {
                const Remora__V1__HTTPRouteMatch *m = rule->n_matches != 0 ? rule->matches[k] : NULL;
                rm_config_route_t *r = new_route(b, svc, name_of(hr->metadata));
                if (m != NULL) {
                    const Remora__V1__HTTPPathMatch *pm = m->path;
                    if (pm != NULL) {
                        switch (pm->match_case) {
                        case REMORA__V1__HTTPPATH_MATCH__MATCH_EXACT:
                            r->path_match = RM_PATH_MATCH_EXACT;
                            r->path = rm_strdup(pm->exact);
                            break;
                        case REMORA__V1__HTTPPATH_MATCH__MATCH_PREFIX:
                            r->path_match = RM_PATH_MATCH_PREFIX;
                            r->path = rm_strdup(pm->prefix);
                            break;
                        case REMORA__V1__HTTPPATH_MATCH__MATCH_REGULAR_EXPRESSION:
                            return fail(b, "%s: path match by regular expression is not supported by this agent yet", what);
                        default:
                            break;
                        }
                    }
                    if (set_headers(b, r, m->headers, m->n_headers, what) != 0)
                        return -1;
                    if (m->method != NULL && m->method[0] != '\0')
                        r->method = rm_strdup(m->method);
                }
                if (set_backends(b, r, svc, rule->backend_refs, rule->n_backend_refs, rns, what) != 0 ||
                    set_timeout(b, r, rule->timeouts, what) != 0)
                    return -1;
            }
        }
    }
    return 0;
}

static int
add_grpc_routes(builder_t *b, const Remora__V1__Service *svc)
{
    for (size_t i = 0; i != b->snap->n_grpc_routes; ++i) {
        const Remora__V1__GRPCRoute *gr = b->snap->grpc_routes[i];
        const Remora__V1__GRPCRouteSpec *spec = gr->spec;
        const char *rns = ns_of(gr->metadata);
        if (spec == NULL || !refers_to(spec->parent_refs, spec->n_parent_refs, rns, svc))
            continue;
        char what[300];
        snprintf(what, sizeof(what), "GRPCRoute %s/%s", rns, name_of(gr->metadata));
        for (size_t j = 0; j != spec->n_rules; ++j) {
            const Remora__V1__GRPCRouteRule *rule = spec->rules[j];
            size_t nm = rule->n_matches != 0 ? rule->n_matches : 1;
            for (size_t k = 0; k != nm; ++k) {
                const Remora__V1__GRPCRouteMatch *m = rule->n_matches != 0 ? rule->matches[k] : NULL;
                rm_config_route_t *r = new_route(b, svc, name_of(gr->metadata));
                if (m != NULL) {
                    const Remora__V1__GRPCMethodMatch *mm = m->method;
                    if (mm != NULL) {
                        int has_service = mm->service != NULL && mm->service[0] != '\0';
                        int has_method = mm->method != NULL && mm->method[0] != '\0';
                        if (mm->type == REMORA__V1__GRPCMETHOD_MATCH__TYPE__TYPE_REGULAR_EXPRESSION)
                            return fail(b, "%s: method match by regular expression is not supported by this agent yet", what);
                        if (has_method && !has_service)
                            return fail(b, "%s: a method match without a service is not supported by this agent yet", what);
                        if (has_service) {
                            size_t len = strlen(mm->service) + (has_method ? strlen(mm->method) : 0) + 3;
                            r->path = rm_malloc(len);
                            snprintf(r->path, len, "/%s/%s", mm->service, has_method ? mm->method : "");
                            r->path_match = has_method ? RM_PATH_MATCH_EXACT : RM_PATH_MATCH_PREFIX;
                        }
                    }
                    if (set_headers(b, r, m->headers, m->n_headers, what) != 0)
                        return -1;
                }
                if (set_backends(b, r, svc, rule->backend_refs, rule->n_backend_refs, rns, what) != 0 ||
                    set_timeout(b, r, rule->timeouts, what) != 0)
                    return -1;
            }
        }
    }
    return 0;
}

static int
build(builder_t *b)
{
    const Remora__V1__Snapshot *snap = b->snap;
    rm_config_t *c = b->config;
    c->clusters = rm_calloc(snap->n_services, sizeof(*c->clusters));
    for (size_t i = 0; i != snap->n_services; ++i)
        if (add_cluster(b, snap->services[i]) != 0)
            return -1;
    for (size_t i = 0; i != snap->n_services; ++i) {
        const Remora__V1__Service *svc = snap->services[i];
        if (add_http_routes(b, svc) != 0 || add_grpc_routes(b, svc) != 0)
            return -1;
        rm_config_route_t *r = new_route(b, svc, "default");
        r->cluster_name = cluster_name(name_of(svc->metadata), ns_of(svc->metadata));
    }
    return 0;
}

static char *
dup_or_null(const char *s)
{
    return s != NULL ? rm_strdup(s) : NULL;
}

static void
copy_route(rm_config_route_t *to, const rm_config_route_t *from)
{
    *to = *from;
    to->name = dup_or_null(from->name);
    to->authorities = rm_calloc(from->num_authorities, sizeof(char *));
    for (size_t i = 0; i != from->num_authorities; ++i)
        to->authorities[i] = rm_strdup(from->authorities[i]);
    to->path = dup_or_null(from->path);
    to->headers = rm_calloc(from->num_headers, sizeof(*to->headers));
    for (size_t i = 0; i != from->num_headers; ++i) {
        to->headers[i].name = rm_strdup(from->headers[i].name);
        to->headers[i].value = dup_or_null(from->headers[i].value);
    }
    to->method = dup_or_null(from->method);
    to->backends = rm_calloc(from->num_backends, sizeof(*to->backends));
    for (size_t i = 0; i != from->num_backends; ++i) {
        to->backends[i] = from->backends[i];
        to->backends[i].cluster_name = dup_or_null(from->backends[i].cluster_name);
    }
    to->cluster_name = dup_or_null(from->cluster_name);
}

static void
free_routes(rm_config_route_t *routes, size_t n)
{
    /* a throwaway config owns them for a moment so that one function frees routes */
    rm_config_t *tmp = rm_config_create_defaults();
    tmp->listeners = rm_calloc(1, sizeof(*tmp->listeners));
    tmp->num_listeners = 1;
    tmp->listeners[0].routes = routes;
    tmp->listeners[0].num_routes = n;
    rm_config_unref(tmp);
}

rm_config_t *
rm_translate_snapshot(const uint8_t *bytes, size_t len, const rm_config_t *base, char *err, size_t errlen)
{
    Remora__V1__Snapshot *snap = remora__v1__snapshot__unpack(NULL, len, bytes);
    if (snap == NULL) {
        snprintf(err, errlen, "the snapshot does not parse as remora.v1.Snapshot");
        return NULL;
    }
    builder_t b = {.config = rm_config_create_defaults(), .snap = snap, .err = err, .errlen = errlen};
    char buf[64];
    snprintf(buf, sizeof(buf), "%llu", (unsigned long long)snap->version);
    b.config->version = rm_strdup(buf);
    b.config->source = rm_strdup("control plane");
    rm_config_t *ret = NULL;
    if (copy_base(&b, base) != 0 || build(&b) != 0)
        goto Exit;
    /* every listener serves the same routes */
    for (size_t i = 0; i != b.config->num_listeners; ++i) {
        rm_config_listener_t *l = &b.config->listeners[i];
        l->routes = rm_calloc(b.num_routes, sizeof(*l->routes));
        for (size_t j = 0; j != b.num_routes; ++j)
            copy_route(&l->routes[j], &b.routes[j]);
        l->num_routes = b.num_routes;
    }
    rm_config_error_t verr;
    if (rm_config_validate(b.config, &verr) != 0) {
        snprintf(err, errlen, "%s", verr.message);
        goto Exit;
    }
    ret = b.config;
    b.config = NULL;
Exit:
    if (b.routes != NULL)
        free_routes(b.routes, b.num_routes);
    if (b.config != NULL)
        rm_config_unref(b.config);
    remora__v1__snapshot__free_unpacked(snap, NULL);
    return ret;
}

uint64_t
rm_translate_snapshot_version(const uint8_t *bytes, size_t len)
{
    Remora__V1__Snapshot *snap = remora__v1__snapshot__unpack(NULL, len, bytes);
    if (snap == NULL)
        return 0;
    uint64_t v = snap->version;
    remora__v1__snapshot__free_unpacked(snap, NULL);
    return v;
}
