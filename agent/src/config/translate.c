#define _GNU_SOURCE /* mremap */
#include <arpa/inet.h>
#include <stdarg.h>
#include <sys/types.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "remora/v1/discovery.pb-c.h"
#include "config/translate.h"

typedef struct st_builder_t {
    rm_config_t *config;
    const Remora__V1__Snapshot *snap;
    char *err;
    size_t errlen;
    /* routes being built for the listeners (every listener gets the same list), in pages of their own
     * (grow_routes) until they are copied into the config's arena */
    rm_config_route_t *routes;
    size_t num_routes, cap_routes;
    /* the Service whose routes are being built (its index in clusters): its routes share one list of
     * authorities, owned by the first (rm_config_route_t.authorities_borrowed) */
    size_t svc_index;
    size_t svc_first_route;
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

/* The config's arena (rm_config_arena_alloc): the small objects of thousands of Services, without a
 * malloc chunk each and returned to the system with the config */
static void *
aalloc(builder_t *b, size_t size)
{
    return rm_config_arena_alloc(b->config, size);
}

static char *
astrdup(builder_t *b, const char *s)
{
    return rm_config_arena_strdup(b->config, s);
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
    /* the bootstrap's telemetry stays in force unless the snapshot carries a Telemetry (apply_telemetry) */
    c->telemetry = base->telemetry;
    c->telemetry.tracing.otlp_endpoint =
        base->telemetry.tracing.otlp_endpoint != NULL ? rm_strdup(base->telemetry.tracing.otlp_endpoint) : NULL;
    c->telemetry.tracing.service_name =
        base->telemetry.tracing.service_name != NULL ? rm_strdup(base->telemetry.tracing.service_name) : NULL;
    c->telemetry.access_log.path = base->telemetry.access_log.path != NULL ? rm_strdup(base->telemetry.access_log.path) : NULL;
    c->agent_namespace = base->agent_namespace != NULL ? rm_strdup(base->agent_namespace) : NULL;
    /* the bootstrap's mesh_tls stays in force unless the snapshot carries a MeshTLS (apply_mesh_tls) */
    c->mesh_tls.mode = base->mesh_tls.mode;
    c->mesh_tls.identity_dir = base->mesh_tls.identity_dir != NULL ? rm_strdup(base->mesh_tls.identity_dir) : NULL;
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
        to->direction = from->direction;
        to->inbound_to_localhost = from->inbound_to_localhost;
        to->max_connections = from->max_connections;
        if (from->num_opaque_ports != 0) {
            to->opaque_ports = rm_calloc(from->num_opaque_ports, sizeof(uint16_t));
            memcpy(to->opaque_ports, from->opaque_ports, from->num_opaque_ports * sizeof(uint16_t));
            to->num_opaque_ports = from->num_opaque_ports;
        }
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
    char *cname = cluster_name(name, ns);
    cl->name = astrdup(b, cname);
    free(cname);
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
    case REMORA__V1__PROTOCOL__PROTOCOL_TCP:
        cl->protocol = RM_UPSTREAM_TCP;
        break;
    default:
        return fail(b, "service %s/%s: protocol is not set", ns, name);
    }
    cl->meshed = spec->meshed;
    if (spec->meshed) {
        /* the identity the endpoints' agents present, in the mesh's trust domain (the agent's own: tls/mesh.h) */
        const char *sa = spec->service_account != NULL && spec->service_account[0] != '\0' ? spec->service_account : "default";
        char id[300];
        snprintf(id, sizeof(id), "/ns/%s/sa/%s", ns, sa);
        cl->peer_identity = astrdup(b, id);
    }
    /* virtual addresses: the original destinations of intercepted connections that mean this Service */
    if (spec->n_addresses != 0) {
        cl->addresses = aalloc(b, spec->n_addresses * sizeof(*cl->addresses));
        for (size_t i = 0; i != spec->n_addresses; ++i) {
            const char *why;
            if (rm_parse_ip_port(spec->addresses[i], &cl->addresses[i].addr, &cl->addresses[i].addrlen, &why) != 0)
                return fail(b, "service %s/%s: address '%s': %s", ns, name, spec->addresses[i], why);
            cl->num_addresses = i + 1;
        }
    }
    size_t n = spec->n_endpoints;
    cl->endpoints = aalloc(b, n * sizeof(*cl->endpoints));
    for (size_t i = 0; i != n; ++i) {
        const Remora__V1__Endpoint *ep = spec->endpoints[i];
        const char *target = ep->target_case == REMORA__V1__ENDPOINT__TARGET_ADDRESS ? ep->address
                             : ep->target_case == REMORA__V1__ENDPOINT__TARGET_DNS   ? ep->dns
                                                                                     : NULL;
        if (target == NULL)
            return fail(b, "service %s/%s: endpoint #%zu has neither address nor dns", ns, name, i + 1);
        rm_config_endpoint_t *e = &cl->endpoints[i];
        const char *why;
        char *host = NULL;
        if (rm_split_host_port(target, &host, &e->port, &why) != 0) {
            free(host);
            return fail(b, "service %s/%s: endpoint '%s': %s", ns, name, target, why);
        }
        e->host = astrdup(b, host);
        free(host);
        cl->num_endpoints = i + 1;
        if (ep->target_case == REMORA__V1__ENDPOINT__TARGET_ADDRESS) {
            struct sockaddr_storage ss;
            socklen_t sslen;
            if (rm_parse_ip_port(target, &ss, &sslen, &why) != 0)
                return fail(b, "service %s/%s: endpoint '%s': %s", ns, name, target, why);
            if (rm_config_ip_set(&e->addr, (const struct sockaddr *)&ss) != 0)
                return fail(b, "service %s/%s: endpoint '%s': not an IPv4 or IPv6 address", ns, name, target);
            e->is_ip = 1;
        }
        if (e->port == 0)
            return fail(b, "service %s/%s: endpoint '%s': port must be 1-65535", ns, name, target);
        e->weight = ep->weight != 0 ? ep->weight : 1;
        /* an endpoint whose workload runs as another service account than the Service's: its own expected identity */
        if (spec->meshed && ep->service_account != NULL && ep->service_account[0] != '\0') {
            char id[300];
            snprintf(id, sizeof(id), "/ns/%s/sa/%s", ns, ep->service_account);
            if (strcmp(id, cl->peer_identity) != 0)
                e->peer_identity = astrdup(b, id);
        }
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

static int
has_upper(const char *s)
{
    for (; *s != '\0'; ++s)
        if (*s >= 'A' && *s <= 'Z')
            return 1;
    return 0;
}

/*
 * The scratch list of routes grows by mremap rather than realloc: a large realloc'ed buffer, once freed,
 * raises glibc's mmap and trim thresholds, and this thread's malloc arena then keeps more of the next
 * snapshot's freed memory resident (docs/BENCHMARKS.md "Scale").
 */
static void
grow_routes(builder_t *b)
{
    size_t cap = b->cap_routes == 0 ? 16 : b->cap_routes * 2;
    void *p = b->routes == NULL ? mmap(NULL, cap * sizeof(*b->routes), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                                : mremap(b->routes, b->cap_routes * sizeof(*b->routes), cap * sizeof(*b->routes), MREMAP_MAYMOVE);
    if (p == MAP_FAILED)
        rm_fatal("out of memory (%zu routes)", cap);
    b->routes = p;
    b->cap_routes = cap;
}

static void
drop_routes(builder_t *b)
{
    if (b->routes != NULL)
        munmap(b->routes, b->cap_routes * sizeof(*b->routes));
    b->routes = NULL;
    b->num_routes = b->cap_routes = 0;
}

static rm_config_route_t *
new_route(builder_t *b, const Remora__V1__Service *svc, const char *route_name)
{
    if (b->num_routes == b->cap_routes)
        grow_routes(b);
    rm_config_route_t *r = &b->routes[b->num_routes++];
    memset(r, 0, sizeof(*r));
    const char *name = name_of(svc->metadata), *ns = ns_of(svc->metadata);
    char buf[600];
    snprintf(buf, sizeof(buf), "%s.%s/%s/%zu", name, ns, route_name, b->num_routes);
    r->name = astrdup(b, buf);
    if (b->num_routes - 1 != b->svc_first_route) {
        /* the same names as the Service's first route: one list (routes grow by realloc: by index) */
        const rm_config_route_t *first = &b->routes[b->svc_first_route];
        r->authorities = first->authorities;
        r->num_authorities = first->num_authorities;
        r->authorities_borrowed = 1;
        return r;
    }
    const char *suffixes[] = {"", ".svc", ".svc.cluster.local"};
    int in_default = strcmp(ns, "default") == 0;
    r->authorities = aalloc(b, (3 + in_default) * sizeof(char *));
    const char *cname = b->config->clusters[b->svc_index].name;
    for (size_t i = 0; i != 3; ++i) {
        snprintf(buf, sizeof(buf), "%s.%s%s", name, ns, suffixes[i]);
        /* "name.ns" is the cluster's name too: one string (both in the arena; validation lower-cases
         * authorities in place, so only a name that is lower-case already) */
        r->authorities[r->num_authorities++] =
            i == 0 && strcmp(buf, cname) == 0 && !has_upper(cname) ? (char *)cname : astrdup(b, buf);
    }
    if (in_default)
        r->authorities[r->num_authorities++] = astrdup(b, name);
    return r;
}

/* A snapshot from a newer control plane may carry policy fields this agent does not know; applying
 * the rest would silently drop part of what the user asked for, so it is refused. */
static int
check_known(builder_t *b, const ProtobufCMessage *m, const char *what, const char *part)
{
    if (m == NULL || m->n_unknown_fields == 0)
        return 0;
    return fail(b, "%s: %s carries field %u, which this agent does not know (upgrade the agent)", what, part,
                (unsigned)m->unknown_fields[0].tag);
}

/* Milliseconds of a Duration; durations are at most 24 h (the control plane checks tighter bounds). */
static int
duration_ms(builder_t *b, const Remora__V1__Duration *d, const char *what, const char *field, uint32_t *ms)
{
    if (d->seconds < 0 || d->nanos < 0 || d->seconds > 86400)
        return fail(b, "%s: %s must be between 0 and 24h", what, field);
    uint64_t v = (uint64_t)d->seconds * 1000 + (uint64_t)d->nanos / 1000000;
    /* a sub-millisecond duration is not "none" */
    if (v == 0 && (d->seconds != 0 || d->nanos != 0))
        v = 1;
    *ms = (uint32_t)v;
    return 0;
}

static int
set_headers(builder_t *b, rm_config_route_t *r, Remora__V1__HeaderMatch *const *headers, size_t n, const char *what)
{
    if (n == 0)
        return 0;
    r->headers = aalloc(b, n * sizeof(*r->headers));
    for (size_t i = 0; i != n; ++i) {
        const Remora__V1__HeaderMatch *h = headers[i];
        rm_config_header_match_t *m = &r->headers[r->num_headers++];
        m->name = astrdup(b, h->name != NULL ? h->name : "");
        switch (h->match_case) {
        case REMORA__V1__HEADER_MATCH__MATCH_EXACT:
            m->value = astrdup(b, h->exact);
            break;
        case REMORA__V1__HEADER_MATCH__MATCH_REGULAR_EXPRESSION:
            m->value = astrdup(b, h->regular_expression);
            m->is_regex = 1;
            break;
        default:
            break;
        }
    }
    return 0;
}

/* request bounds the whole exchange, retries included; backendRequest each try. */
static int
set_timeout(builder_t *b, rm_config_route_t *r, const Remora__V1__RouteTimeouts *t, const char *what)
{
    if (t == NULL)
        return 0;
    if (t->request != NULL && duration_ms(b, t->request, what, "timeouts.request", &r->timeout_ms) != 0)
        return -1;
    if (t->backend_request != NULL &&
        duration_ms(b, t->backend_request, what, "timeouts.backendRequest", &r->per_try_timeout_ms) != 0)
        return -1;
    return 0;
}

static int
set_backends(builder_t *b, rm_config_route_t *r, const Remora__V1__Service *svc, Remora__V1__BackendReference *const *refs,
             size_t n, const char *route_ns, const char *what)
{
    const Remora__V1__ObjectMeta *meta = svc->metadata;
    if (n == 0 || (n == 1 && refs[0]->weight != 0 &&
                   (refs[0]->kind == NULL || refs[0]->kind[0] == '\0' || strcasecmp(refs[0]->kind, "Service") == 0) &&
                   refs[0]->name != NULL && strcmp(refs[0]->name, name_of(meta)) == 0 &&
                   strcmp(refs[0]->namespace_ != NULL && refs[0]->namespace_[0] != '\0' ? refs[0]->namespace_ : route_ns,
                          ns_of(meta)) == 0)) {
        /* the Service itself (no backendRefs, or the one backendRef names it): resolved here (cluster i is service i),
         * no name for validation to look up and no one-entry split to keep per route */
        r->cluster_index = b->svc_index;
        return 0;
    }
    r->backends = aalloc(b, n * sizeof(*r->backends));
    for (size_t i = 0; i != n; ++i) {
        const Remora__V1__BackendReference *ref = refs[i];
        const char *ns = ref->namespace_ != NULL && ref->namespace_[0] != '\0' ? ref->namespace_ : route_ns;
        if (ref->kind != NULL && ref->kind[0] != '\0' && strcasecmp(ref->kind, "Service") != 0)
            return fail(b, "%s: backendRef kind '%s' is not supported (only Service)", what, ref->kind);
        if (find_service(b->snap, ref->name, ns) == NULL)
            return fail(b, "%s: backendRef names service %s/%s, which does not exist", what, ns, ref->name);
        char *cname = cluster_name(ref->name, ns);
        r->backends[i].cluster_name = astrdup(b, cname);
        free(cname);
        r->backends[i].weight = ref->weight;
        r->num_backends = i + 1;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ retry */

/* The parts of HTTPRouteRetry and GRPCRouteRetry that are the same. */
static int
set_retry_common(builder_t *b, rm_config_route_t *r, uint32_t attempts, const Remora__V1__Duration *backoff, size_t n_conditions,
                 const Remora__V1__RetryCondition *conditions, const char *what)
{
    /* the defaults first (replay buffer, backoff), then what the rule says; the cap stays 10x the base */
    rm_config_retry_t *rt = rm_config_route_retry(b->config, r);
    rm_config_retry_set_defaults(rt);
    rt->attempts = attempts;
    uint32_t base_ms = 0;
    if (backoff != NULL && duration_ms(b, backoff, what, "retry.backoff", &base_ms) != 0)
        return -1;
    if (base_ms != 0)
        rt->backoff_base_ms = base_ms;
    rt->backoff_max_ms = rt->backoff_base_ms * 10;
    for (size_t i = 0; i != n_conditions; ++i) {
        switch (conditions[i]) {
        case REMORA__V1__RETRY_CONDITION__RETRY_CONDITION_CONNECT_FAILURE:
            rt->conditions |= RM_RETRY_ON_CONNECT_FAILURE;
            break;
        case REMORA__V1__RETRY_CONDITION__RETRY_CONDITION_REFUSED_STREAM:
            rt->conditions |= RM_RETRY_ON_REFUSED_STREAM;
            break;
        case REMORA__V1__RETRY_CONDITION__RETRY_CONDITION_RESET:
            rt->conditions |= RM_RETRY_ON_RESET;
            break;
        default:
            return fail(b, "%s: retry condition %d is not supported by this agent", what, (int)conditions[i]);
        }
    }
    return 0;
}

static int
set_http_retry(builder_t *b, rm_config_route_t *r, const Remora__V1__HTTPRouteRetry *retry, const char *what)
{
    if (retry == NULL)
        return 0;
    if (check_known(b, &retry->base, what, "retry") != 0 ||
        set_retry_common(b, r, retry->attempts, retry->backoff, retry->n_conditions, retry->conditions, what) != 0)
        return -1;
    r->retry->http_statuses = aalloc(b, (retry->n_codes + 1) * sizeof(r->retry->http_statuses[0]));
    for (size_t i = 0; i != retry->n_codes; ++i) {
        if (retry->codes[i] < 100 || retry->codes[i] > 599)
            return fail(b, "%s: retry code %u is not an HTTP status", what, retry->codes[i]);
        r->retry->http_statuses[r->retry->num_http_statuses++] = (uint16_t)retry->codes[i];
    }
    return 0;
}

static int
set_grpc_retry(builder_t *b, rm_config_route_t *r, const Remora__V1__GRPCRouteRetry *retry, const char *what)
{
    if (retry == NULL)
        return 0;
    if (check_known(b, &retry->base, what, "retry") != 0 ||
        set_retry_common(b, r, retry->attempts, retry->backoff, retry->n_conditions, retry->conditions, what) != 0)
        return -1;
    for (size_t i = 0; i != retry->n_codes; ++i) {
        if ((unsigned)retry->codes[i] > 16)
            return fail(b, "%s: retry code %d is not a gRPC status", what, (int)retry->codes[i]);
        r->retry->grpc_status_mask |= 1u << (unsigned)retry->codes[i];
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- filters */

static void
copy_headers(rm_config_header_t **to, size_t *n_to, Remora__V1__HTTPHeader *const *from, size_t n)
{
    *to = n != 0 ? rm_calloc(n, sizeof(**to)) : NULL;
    for (size_t i = 0; i != n; ++i) {
        (*to)[i].name = rm_strdup(from[i]->name);
        (*to)[i].value = rm_strdup(from[i]->value);
    }
    *n_to = n;
}

static int
set_header_mod(builder_t *b, rm_config_route_t *r, int response, const Remora__V1__HTTPHeaderFilter *f, const char *what,
               const char *filter)
{
    const rm_config_header_mod_t *had = response ? r->response_headers : r->request_headers;
    if (had != NULL && (had->num_set != 0 || had->num_add != 0 || had->num_remove != 0))
        return fail(b, "%s: more than one %s filter in a rule", what, filter);
    if (check_known(b, &f->base, what, filter) != 0)
        return -1;
    rm_config_header_mod_t *mod = rm_config_route_header_mod(b->config, r, response);
    copy_headers(&mod->set, &mod->num_set, f->set_headers, f->n_set_headers);
    copy_headers(&mod->add, &mod->num_add, f->add_headers, f->n_add_headers);
    mod->remove = f->n_remove_headers != 0 ? rm_calloc(f->n_remove_headers, sizeof(*mod->remove)) : NULL;
    for (size_t i = 0; i != f->n_remove_headers; ++i)
        mod->remove[i] = rm_strdup(f->remove_headers[i]);
    mod->num_remove = f->n_remove_headers;
    return 0;
}

static int
add_mirror(builder_t *b, rm_config_route_t *r, const Remora__V1__HTTPRequestMirrorFilter *m, const char *route_ns, const char *what)
{
    const Remora__V1__BackendReference *ref = m->backend_ref;
    if (check_known(b, &m->base, what, "RequestMirror") != 0)
        return -1;
    if (ref == NULL || ref->name == NULL || ref->name[0] == '\0')
        return fail(b, "%s: RequestMirror has no backendRef", what);
    const char *ns = ref->namespace_ != NULL && ref->namespace_[0] != '\0' ? ref->namespace_ : route_ns;
    if (ref->kind != NULL && ref->kind[0] != '\0' && strcasecmp(ref->kind, "Service") != 0)
        return fail(b, "%s: RequestMirror backendRef kind '%s' is not supported (only Service)", what, ref->kind);
    if (find_service(b->snap, ref->name, ns) == NULL)
        return fail(b, "%s: RequestMirror names service %s/%s, which does not exist", what, ns, ref->name);
    if (ref->port != 0)
        return fail(b, "%s: RequestMirror backendRef port is not supported by this agent (the Service's endpoints are used)", what);
    uint32_t per_million;
    switch (m->share_case) {
    case REMORA__V1__HTTPREQUEST_MIRROR_FILTER__SHARE_PERCENT:
        if (m->percent > 100)
            return fail(b, "%s: RequestMirror percent %u is above 100", what, m->percent);
        per_million = m->percent * 10000;
        break;
    case REMORA__V1__HTTPREQUEST_MIRROR_FILTER__SHARE_FRACTION:
        if (m->fraction->denominator == 0 || m->fraction->numerator > m->fraction->denominator)
            return fail(b, "%s: RequestMirror fraction %u/%u is not a fraction of at most 1", what, m->fraction->numerator,
                        m->fraction->denominator);
        per_million = (uint32_t)((uint64_t)m->fraction->numerator * 1000000 / m->fraction->denominator);
        break;
    default:
        per_million = 1000000;
        break;
    }
    r->mirrors = rm_realloc(r->mirrors, (r->num_mirrors + 1) * sizeof(*r->mirrors));
    rm_config_mirror_t *mi = &r->mirrors[r->num_mirrors++];
    memset(mi, 0, sizeof(*mi));
    mi->cluster_name = cluster_name(ref->name, ns);
    mi->per_million = per_million;
    return 0;
}

static const Remora__V1__FaultInjection *
find_fault(const Remora__V1__Snapshot *snap, const char *name, const char *ns)
{
    for (size_t i = 0; i != snap->n_fault_injections; ++i) {
        const Remora__V1__FaultInjection *f = snap->fault_injections[i];
        if (strcmp(name_of(f->metadata), name) == 0 && strcmp(ns_of(f->metadata), ns) == 0)
            return f;
    }
    return NULL;
}

static int
set_fault(builder_t *b, rm_config_route_t *r, const Remora__V1__LocalObjectReference *ref, const char *route_ns, const char *what)
{
    if (check_known(b, &ref->base, what, "ExtensionRef") != 0)
        return -1;
    if ((ref->group[0] != '\0' && strcmp(ref->group, "remora.dev") != 0) ||
        (ref->kind[0] != '\0' && strcmp(ref->kind, "FaultInjection") != 0))
        return fail(b, "%s: ExtensionRef to %s %s is not supported by this agent (only remora.dev FaultInjection)", what,
                    ref->group, ref->kind);
    if (r->fault != NULL)
        return fail(b, "%s: more than one FaultInjection in a rule", what);
    const Remora__V1__FaultInjection *fi = find_fault(b->snap, ref->name, route_ns);
    if (fi == NULL)
        return fail(b, "%s: ExtensionRef names FaultInjection %s/%s, which does not exist", what, route_ns, ref->name);
    char fwhat[400];
    snprintf(fwhat, sizeof(fwhat), "%s: FaultInjection %s/%s", what, route_ns, ref->name);
    const Remora__V1__FaultInjectionSpec *spec = fi->spec;
    if (spec == NULL || (spec->delay == NULL && spec->abort == NULL))
        return fail(b, "%s has neither a delay nor an abort", fwhat);
    if (check_known(b, &spec->base, fwhat, "spec") != 0)
        return -1;
    rm_config_fault_t *f = rm_calloc(1, sizeof(*f));
    r->fault = f;
    f->abort_grpc_status = -1;
    if (spec->delay != NULL) {
        if (spec->delay->fixed_delay == NULL || spec->delay->percent > 100)
            return fail(b, "%s: delay needs a fixedDelay and a percent of at most 100", fwhat);
        if (check_known(b, &spec->delay->base, fwhat, "delay") != 0 ||
            duration_ms(b, spec->delay->fixed_delay, fwhat, "delay.fixedDelay", &f->delay_ms) != 0)
            return -1;
        f->delay_per_million = spec->delay->percent * 10000;
    }
    if (spec->abort != NULL) {
        const Remora__V1__FaultAbort *a = spec->abort;
        if (check_known(b, &a->base, fwhat, "abort") != 0)
            return -1;
        if (a->percent > 100)
            return fail(b, "%s: abort percent %u is above 100", fwhat, a->percent);
        switch (a->status_case) {
        case REMORA__V1__FAULT_ABORT__STATUS_HTTP_STATUS:
            if (a->http_status < 200 || a->http_status > 599)
                return fail(b, "%s: abort httpStatus %u is not 200-599", fwhat, a->http_status);
            f->abort_http_status = (uint16_t)a->http_status;
            break;
        case REMORA__V1__FAULT_ABORT__STATUS_GRPC_STATUS:
            if ((unsigned)a->grpc_status < 1 || (unsigned)a->grpc_status > 16)
                return fail(b, "%s: abort grpcStatus %d is not a gRPC error status", fwhat, (int)a->grpc_status);
            f->abort_grpc_status = (int)a->grpc_status;
            break;
        default:
            return fail(b, "%s: abort has neither httpStatus nor grpcStatus", fwhat);
        }
        f->abort_per_million = a->percent * 10000;
    }
    return 0;
}

static int
set_path_rewrite(builder_t *b, rm_config_route_t *r, const Remora__V1__HTTPPathModifier *pm, rm_path_rewrite_t *type, char **path,
                 const char *what, const char *filter)
{
    if (pm == NULL)
        return 0;
    if (check_known(b, &pm->base, what, filter) != 0)
        return -1;
    switch (pm->modifier_case) {
    case REMORA__V1__HTTPPATH_MODIFIER__MODIFIER_REPLACE_FULL_PATH:
        *type = RM_PATH_REWRITE_FULL;
        *path = rm_strdup(pm->replace_full_path);
        return 0;
    case REMORA__V1__HTTPPATH_MODIFIER__MODIFIER_REPLACE_PREFIX_MATCH:
        /* no matches is the Gateway API's default match, PathPrefix "/" */
        if (r->path_match == RM_PATH_MATCH_ANY) {
            r->path_match = RM_PATH_MATCH_PREFIX;
            r->path = rm_strdup("/");
        } else if (r->path_match != RM_PATH_MATCH_PREFIX) {
            return fail(b, "%s: %s path.replacePrefixMatch needs a PathPrefix match", what, filter);
        }
        *type = RM_PATH_REWRITE_PREFIX;
        /* the Gateway API's empty replacement removes the prefix, as "/" does */
        *path = rm_strdup(pm->replace_prefix_match[0] != '\0' ? pm->replace_prefix_match : "/");
        return 0;
    default:
        return fail(b, "%s: %s path has neither replaceFullPath nor replacePrefixMatch", what, filter);
    }
}

static int
set_redirect(builder_t *b, rm_config_route_t *r, const Remora__V1__HTTPRequestRedirectFilter *f, const char *what)
{
    if (r->redirect != NULL || r->url_rewrite != NULL)
        return fail(b, "%s: a rule takes one RequestRedirect or one URLRewrite", what);
    if (check_known(b, &f->base, what, "RequestRedirect") != 0)
        return -1;
    if (f->port > 65535)
        return fail(b, "%s: RequestRedirect port %u is out of range", what, f->port);
    rm_config_redirect_t *rd = rm_calloc(1, sizeof(*rd));
    r->redirect = rd;
    rd->scheme = f->scheme[0] != '\0' ? rm_strdup(f->scheme) : NULL;
    rd->hostname = f->hostname[0] != '\0' ? rm_strdup(f->hostname) : NULL;
    rd->port = (int)f->port;
    rd->status_code = (uint16_t)(f->status_code != 0 ? f->status_code : 302);
    return set_path_rewrite(b, r, f->path, &rd->path_type, &rd->path, what, "RequestRedirect");
}

static int
set_url_rewrite(builder_t *b, rm_config_route_t *r, const Remora__V1__HTTPURLRewriteFilter *f, const char *what)
{
    if (r->redirect != NULL || r->url_rewrite != NULL)
        return fail(b, "%s: a rule takes one RequestRedirect or one URLRewrite", what);
    if (check_known(b, &f->base, what, "URLRewrite") != 0)
        return -1;
    rm_config_url_rewrite_t *rw = rm_calloc(1, sizeof(*rw));
    r->url_rewrite = rw;
    rw->hostname = f->hostname[0] != '\0' ? rm_strdup(f->hostname) : NULL;
    return set_path_rewrite(b, r, f->path, &rw->path_type, &rw->path, what, "URLRewrite");
}

static int
set_http_filters(builder_t *b, rm_config_route_t *r, Remora__V1__HTTPRouteFilter *const *fs, size_t n, const char *route_ns,
                 const char *what)
{
    for (size_t i = 0; i != n; ++i) {
        const Remora__V1__HTTPRouteFilter *f = fs[i];
        int rc;
        if (check_known(b, &f->base, what, "a filter") != 0)
            return -1;
        switch (f->filter_case) {
        case REMORA__V1__HTTPROUTE_FILTER__FILTER_REQUEST_HEADER_MODIFIER:
            rc = set_header_mod(b, r, 0, f->request_header_modifier, what, "RequestHeaderModifier");
            break;
        case REMORA__V1__HTTPROUTE_FILTER__FILTER_RESPONSE_HEADER_MODIFIER:
            rc = set_header_mod(b, r, 1, f->response_header_modifier, what, "ResponseHeaderModifier");
            break;
        case REMORA__V1__HTTPROUTE_FILTER__FILTER_REQUEST_MIRROR:
            rc = add_mirror(b, r, f->request_mirror, route_ns, what);
            break;
        case REMORA__V1__HTTPROUTE_FILTER__FILTER_REQUEST_REDIRECT:
            rc = set_redirect(b, r, f->request_redirect, what);
            break;
        case REMORA__V1__HTTPROUTE_FILTER__FILTER_URL_REWRITE:
            rc = set_url_rewrite(b, r, f->url_rewrite, what);
            break;
        case REMORA__V1__HTTPROUTE_FILTER__FILTER_EXTENSION_REF:
            rc = set_fault(b, r, f->extension_ref, route_ns, what);
            break;
        default:
            rc = fail(b, "%s: filter #%zu has no type this agent knows", what, i + 1);
            break;
        }
        if (rc != 0)
            return -1;
    }
    return 0;
}

static int
set_grpc_filters(builder_t *b, rm_config_route_t *r, Remora__V1__GRPCRouteFilter *const *fs, size_t n, const char *route_ns,
                 const char *what)
{
    for (size_t i = 0; i != n; ++i) {
        const Remora__V1__GRPCRouteFilter *f = fs[i];
        int rc;
        if (check_known(b, &f->base, what, "a filter") != 0)
            return -1;
        switch (f->filter_case) {
        case REMORA__V1__GRPCROUTE_FILTER__FILTER_REQUEST_HEADER_MODIFIER:
            rc = set_header_mod(b, r, 0, f->request_header_modifier, what, "RequestHeaderModifier");
            break;
        case REMORA__V1__GRPCROUTE_FILTER__FILTER_RESPONSE_HEADER_MODIFIER:
            rc = set_header_mod(b, r, 1, f->response_header_modifier, what, "ResponseHeaderModifier");
            break;
        case REMORA__V1__GRPCROUTE_FILTER__FILTER_REQUEST_MIRROR:
            rc = add_mirror(b, r, f->request_mirror, route_ns, what);
            break;
        case REMORA__V1__GRPCROUTE_FILTER__FILTER_EXTENSION_REF:
            rc = set_fault(b, r, f->extension_ref, route_ns, what);
            break;
        default:
            rc = fail(b, "%s: filter #%zu has no type this agent knows", what, i + 1);
            break;
        }
        if (rc != 0)
            return -1;
    }
    return 0;
}

/* ----------------------------------------------------------------------------------------- routes */

/* GEP-1619 on a route: the key of the consistent hash that picks the endpoint. */
static int
set_session_persistence(builder_t *b, rm_config_route_t *r, const Remora__V1__SessionPersistence *sp, const char *what)
{
    if (sp == NULL)
        return 0;
    if (check_known(b, &sp->base, what, "sessionPersistence") != 0)
        return -1;
    switch (sp->type) {
    case REMORA__V1__SESSION_PERSISTENCE_TYPE__SESSION_PERSISTENCE_TYPE_HEADER:
        r->session_persistence = RM_SESSION_HEADER;
        break;
    case REMORA__V1__SESSION_PERSISTENCE_TYPE__SESSION_PERSISTENCE_TYPE_COOKIE:
        r->session_persistence = RM_SESSION_COOKIE;
        break;
    default:
        return fail(b, "%s: sessionPersistence type %d is not supported by this agent", what, (int)sp->type);
    }
    if (sp->session_name == NULL || sp->session_name[0] == '\0')
        return fail(b, "%s: sessionPersistence has no sessionName", what);
    r->session_name = rm_strdup(sp->session_name);
    if (r->session_persistence == RM_SESSION_HEADER)
        for (char *c = r->session_name; *c != '\0'; ++c)
            if (*c >= 'A' && *c <= 'Z')
                *c = (char)(*c - 'A' + 'a');
    return 0;
}

static void
free_rate_limit(rm_config_rate_limit_t *rl)
{
    if (rl == NULL)
        return;
    free(rl->name);
    free(rl->client_header);
    for (size_t i = 0; i != rl->num_overrides; ++i) {
        for (size_t j = 0; j != rl->overrides[i].num_clients; ++j)
            free(rl->overrides[i].clients[j]);
        free(rl->overrides[i].clients);
    }
    free(rl->overrides);
    free(rl);
}

/* A RateLimitPolicy as the agent's limit, named "<namespace>/<name>" (its buckets' and counters' key). */
static rm_config_rate_limit_t *
make_rate_limit(builder_t *b, const Remora__V1__RateLimitPolicy *p, const char *what)
{
    const Remora__V1__RateLimitPolicySpec *spec = p->spec;
    if (spec->total == NULL && spec->per_client == NULL) {
        fail(b, "%s: neither total nor perClient is set", what);
        return NULL;
    }
    const Remora__V1__RateLimit *rates[] = {spec->total, spec->per_client};
    for (size_t i = 0; i != 2; ++i) {
        if (rates[i] == NULL)
            continue;
        if (check_known(b, &rates[i]->base, what, i == 0 ? "total" : "perClient") != 0)
            return NULL;
        if (rates[i]->requests_per_second == 0) {
            fail(b, "%s: %s.requestsPerSecond must be above 0", what, i == 0 ? "total" : "perClient");
            return NULL;
        }
    }
    rm_config_rate_limit_t *rl = rm_calloc(1, sizeof(*rl));
    char name[300];
    snprintf(name, sizeof(name), "%s/%s", ns_of(p->metadata), name_of(p->metadata));
    rl->name = rm_strdup(name);
    rl->max_clients = 10000;
    if (spec->total != NULL) {
        rl->total_rps = spec->total->requests_per_second;
        rl->total_burst = spec->total->burst;
    }
    if (spec->per_client != NULL) {
        rl->per_client_rps = spec->per_client->requests_per_second;
        rl->per_client_burst = spec->per_client->burst;
    }
    const Remora__V1__ClientKey *ck = spec->client_key;
    if (ck != NULL) {
        if (check_known(b, &ck->base, what, "clientKey") != 0)
            goto Fail;
        switch (ck->type) {
        case REMORA__V1__CLIENT_KEY_TYPE__CLIENT_KEY_TYPE_IDENTITY:
            rl->client_key = RM_CLIENT_KEY_IDENTITY;
            break;
        case REMORA__V1__CLIENT_KEY_TYPE__CLIENT_KEY_TYPE_SOURCE_ADDRESS:
            rl->client_key = RM_CLIENT_KEY_SOURCE;
            break;
        case REMORA__V1__CLIENT_KEY_TYPE__CLIENT_KEY_TYPE_HEADER:
            if (ck->header == NULL || ck->header[0] == '\0') {
                fail(b, "%s: clientKey type Header has no header", what);
                goto Fail;
            }
            rl->client_key = RM_CLIENT_KEY_HEADER;
            rl->client_header = rm_strdup(ck->header);
            for (char *c = rl->client_header; *c != '\0'; ++c)
                if (*c >= 'A' && *c <= 'Z')
                    *c = (char)(*c - 'A' + 'a');
            break;
        default:
            fail(b, "%s: clientKey type %d is not supported by this agent", what, (int)ck->type);
            goto Fail;
        }
    }
    if (spec->n_overrides != 0 && spec->per_client == NULL) {
        fail(b, "%s: overrides without perClient", what);
        goto Fail;
    }
    rl->overrides = spec->n_overrides != 0 ? rm_calloc(spec->n_overrides, sizeof(*rl->overrides)) : NULL;
    for (size_t i = 0; i != spec->n_overrides; ++i) {
        const Remora__V1__RateLimitOverride *o = spec->overrides[i];
        rm_config_rate_override_t *to = &rl->overrides[i];
        rl->num_overrides = i + 1;
        if (check_known(b, &o->base, what, "an override") != 0)
            goto Fail;
        if (o->requests_per_second == 0 || o->n_clients == 0) {
            fail(b, "%s: override #%zu needs requestsPerSecond above 0 and at least one client", what, i + 1);
            goto Fail;
        }
        to->requests_per_second = o->requests_per_second;
        to->burst = o->burst;
        to->clients = rm_calloc(o->n_clients + 1, sizeof(char *));
        for (size_t j = 0; j != o->n_clients; ++j)
            to->clients[j] = rm_strdup(o->clients[j]);
        to->num_clients = o->n_clients;
    }
    return rl;
Fail:
    free_rate_limit(rl);
    return NULL;
}

/*
 * The RateLimitPolicy in force on a target (kind "Service", "HTTPRoute" or "GRPCRoute" in namespace
 * `ns`): the first by namespace and name (the snapshot's order), as for BackendTrafficPolicies.
 */
static const Remora__V1__RateLimitPolicy *
rate_limit_for(const Remora__V1__Snapshot *snap, const char *kind, const char *ns, const char *name)
{
    for (size_t i = 0; i != snap->n_rate_limit_policies; ++i) {
        const Remora__V1__RateLimitPolicy *p = snap->rate_limit_policies[i];
        if (p->spec == NULL || strcmp(ns_of(p->metadata), ns) != 0)
            continue;
        for (size_t j = 0; j != p->spec->n_target_refs; ++j) {
            const Remora__V1__PolicyTargetReference *t = p->spec->target_refs[j];
            const char *tk = t->kind[0] != '\0' ? t->kind : "Service";
            if (strcasecmp(tk, kind) == 0 && strcmp(t->name, name) == 0)
                return p;
        }
    }
    return NULL;
}

/* A route's own RateLimitPolicy, if any; its Service's applies through the cluster otherwise. */
static int
set_route_rate_limit(builder_t *b, rm_config_route_t *r, const char *kind, const char *ns, const char *name)
{
    const Remora__V1__RateLimitPolicy *p = rate_limit_for(b->snap, kind, ns, name);
    if (p == NULL)
        return 0;
    char what[300];
    snprintf(what, sizeof(what), "RateLimitPolicy %s/%s", ns, name_of(p->metadata));
    return (r->rate_limit = make_rate_limit(b, p, what)) != NULL ? 0 : -1;
}

static char **
copy_proto_strings(char *const *v, size_t n)
{
    if (n == 0)
        return NULL;
    char **out = rm_calloc(n, sizeof(*out));
    for (size_t i = 0; i != n; ++i)
        out[i] = rm_strdup(v[i]);
    return out;
}

/* Appends AuthorizationPolicy `p` to `a` as the agent's policy named "<namespace>/<name>" (its counters' label). */
static int
add_authz_policy(builder_t *b, rm_config_authz_t *a, const Remora__V1__AuthorizationPolicy *p, const char *what)
{
    const Remora__V1__AuthorizationPolicySpec *spec = p->spec;
    rm_config_authz_policy_t *pol = &a->policies[a->num_policies++];
    char name[300];
    snprintf(name, sizeof(name), "%s/%s", ns_of(p->metadata), name_of(p->metadata));
    pol->name = rm_strdup(name);
    switch (spec->action) {
    case REMORA__V1__AUTHORIZATION_ACTION__AUTHORIZATION_ACTION_ALLOW:
        pol->action = RM_AUTHZ_ALLOW;
        break;
    case REMORA__V1__AUTHORIZATION_ACTION__AUTHORIZATION_ACTION_DENY:
        pol->action = RM_AUTHZ_DENY;
        break;
    case REMORA__V1__AUTHORIZATION_ACTION__AUTHORIZATION_ACTION_AUDIT:
        pol->action = RM_AUTHZ_AUDIT;
        break;
    default:
        /* refusing beats guessing: an unknown action read as ALLOW or DENY would change who gets in */
        return fail(b, "%s: action %d is not supported by this agent", what, (int)spec->action);
    }
    pol->rules = rm_calloc(spec->n_rules + 1, sizeof(*pol->rules));
    for (size_t i = 0; i != spec->n_rules; ++i) {
        const Remora__V1__AuthorizationRule *pr = spec->rules[i];
        rm_config_authz_rule_t *r = &pol->rules[i];
        pol->num_rules = i + 1;
        if (check_known(b, &pr->base, what, "a rule") != 0)
            return -1;
        r->from = rm_calloc(pr->n_from + 1, sizeof(*r->from));
        for (size_t j = 0; j != pr->n_from; ++j) {
            const Remora__V1__AuthorizationSource *f = pr->from[j];
            r->num_from = j + 1;
            if (check_known(b, &f->base, what, "a from entry") != 0)
                return -1;
            r->from[j].identities = copy_proto_strings(f->identities, f->n_identities);
            r->from[j].num_identities = f->n_identities;
            r->from[j].namespaces = copy_proto_strings(f->namespaces, f->n_namespaces);
            r->from[j].num_namespaces = f->n_namespaces;
        }
        r->to = rm_calloc(pr->n_to + 1, sizeof(*r->to));
        for (size_t j = 0; j != pr->n_to; ++j) {
            const Remora__V1__AuthorizationOperation *t = pr->to[j];
            r->num_to = j + 1;
            if (check_known(b, &t->base, what, "a to entry") != 0)
                return -1;
            r->to[j].methods = copy_proto_strings(t->methods, t->n_methods);
            r->to[j].num_methods = t->n_methods;
            r->to[j].paths = copy_proto_strings(t->paths, t->n_paths);
            r->to[j].num_paths = t->n_paths;
            r->to[j].grpc_methods = copy_proto_strings(t->grpc_methods, t->n_grpc_methods);
            r->to[j].num_grpc_methods = t->n_grpc_methods;
        }
    }
    return 0;
}

static int
authz_targets(const Remora__V1__AuthorizationPolicy *p, const char *kind, const char *ns, const char *name)
{
    if (p->spec == NULL || strcmp(ns_of(p->metadata), ns) != 0)
        return 0;
    for (size_t j = 0; j != p->spec->n_target_refs; ++j) {
        const Remora__V1__PolicyTargetReference *t = p->spec->target_refs[j];
        const char *tk = t->kind[0] != '\0' ? t->kind : "Service";
        if (strcasecmp(tk, kind) == 0 && strcmp(t->name, name) == 0)
            return 1;
    }
    return 0;
}

/*
 * Every AuthorizationPolicy that targets (kind, ns, name), in the snapshot's order, into *out (left
 * NULL when none): unlike the other policy kinds, they all apply (filters/authz.h).
 */
static int
set_authz(builder_t *b, rm_config_authz_t **out, const char *kind, const char *ns, const char *name)
{
    const Remora__V1__Snapshot *snap = b->snap;
    size_t n = 0;
    for (size_t i = 0; i != snap->n_authorization_policies; ++i)
        n += authz_targets(snap->authorization_policies[i], kind, ns, name);
    if (n == 0)
        return 0;
    rm_config_authz_t *a = *out = rm_calloc(1, sizeof(*a));
    a->policies = rm_calloc(n, sizeof(*a->policies));
    for (size_t i = 0; i != snap->n_authorization_policies; ++i) {
        const Remora__V1__AuthorizationPolicy *p = snap->authorization_policies[i];
        if (!authz_targets(p, kind, ns, name))
            continue;
        char what[300];
        snprintf(what, sizeof(what), "AuthorizationPolicy %s/%s", ns, name_of(p->metadata));
        if (check_known(b, &p->spec->base, what, "spec") != 0 || add_authz_policy(b, a, p, what) != 0)
            return -1;
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
            if (check_known(b, &rule->base, what, "a rule") != 0)
                return -1;
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
                            r->path = astrdup(b, pm->exact);
                            break;
                        case REMORA__V1__HTTPPATH_MATCH__MATCH_PREFIX:
                            r->path_match = RM_PATH_MATCH_PREFIX;
                            r->path = astrdup(b, pm->prefix);
                            break;
                        case REMORA__V1__HTTPPATH_MATCH__MATCH_REGULAR_EXPRESSION:
                            r->path_match = RM_PATH_MATCH_REGEX;
                            r->path = astrdup(b, pm->regular_expression);
                            break;
                        default:
                            break;
                        }
                    }
                    if (set_headers(b, r, m->headers, m->n_headers, what) != 0)
                        return -1;
                    if (m->method != NULL && m->method[0] != '\0')
                        r->method = astrdup(b, m->method);
                }
                if (set_backends(b, r, svc, rule->backend_refs, rule->n_backend_refs, rns, what) != 0 ||
                    set_timeout(b, r, rule->timeouts, what) != 0 || set_http_retry(b, r, rule->retry, what) != 0 ||
                    set_http_filters(b, r, rule->filters, rule->n_filters, rns, what) != 0 ||
                    set_session_persistence(b, r, rule->session_persistence, what) != 0 ||
                    set_route_rate_limit(b, r, "HTTPRoute", rns, name_of(hr->metadata)) != 0 ||
                    set_authz(b, &r->authz, "HTTPRoute", rns, name_of(hr->metadata)) != 0)
                    return -1;
                if (r->redirect != NULL && r->num_backends == 0 && rule->n_backend_refs != 0) {
                    /* a redirect with a backendRef to its own Service (set_backends kept no split): the backend stays
                     * named, as for any other backendRef (rm_config_validate resolves it) */
                    r->backends = aalloc(b, sizeof(*r->backends));
                    r->backends[0].cluster_name = b->config->clusters[b->svc_index].name;
                    r->backends[0].weight = rule->backend_refs[0]->weight;
                    r->num_backends = 1;
                } else if (r->redirect != NULL && r->num_backends == 0) {
                    /* answered by the agent itself: no cluster */
                    free(r->cluster_name);
                    r->cluster_name = NULL;
                }
            }
        }
    }
    return 0;
}

/* A PCRE2 pattern for one part of a gRPC path: the whole part must match, so anchors the user wrote
 * around it are dropped (they would never match inside "/service/method"). */
static void
append_part(char *buf, size_t bufsz, const char *re)
{
    size_t len = strlen(re);
    if (len == 0) {
        strncat(buf, "[^/]+", bufsz - strlen(buf) - 1);
        return;
    }
    if (re[0] == '^')
        ++re, --len;
    if (len != 0 && re[len - 1] == '$') {
        size_t backslashes = 0;
        while (backslashes + 1 < len && re[len - 2 - backslashes] == '\\')
            ++backslashes;
        if (backslashes % 2 == 0)
            --len;
    }
    size_t off = strlen(buf);
    snprintf(buf + off, bufsz - off, "(?:%.*s)", (int)len, re);
}

static int
set_grpc_method(builder_t *b, rm_config_route_t *r, const Remora__V1__GRPCMethodMatch *mm, const char *what)
{
    int has_service = mm->service != NULL && mm->service[0] != '\0';
    int has_method = mm->method != NULL && mm->method[0] != '\0';
    size_t cap = (has_service ? strlen(mm->service) : 0) + (has_method ? strlen(mm->method) : 0) + 32;
    if (mm->type == REMORA__V1__GRPCMETHOD_MATCH__TYPE__TYPE_REGULAR_EXPRESSION) {
        if (!has_service && !has_method)
            return 0;
        r->path = rm_calloc(1, cap);
        strcpy(r->path, "/");
        append_part(r->path, cap, has_service ? mm->service : "");
        strcat(r->path, "/");
        append_part(r->path, cap, has_method ? mm->method : "");
        r->path_match = RM_PATH_MATCH_REGEX;
    } else if (has_service) {
        r->path = rm_malloc(cap);
        snprintf(r->path, cap, "/%s/%s", mm->service, has_method ? mm->method : "");
        r->path_match = has_method ? RM_PATH_MATCH_EXACT : RM_PATH_MATCH_PREFIX;
    } else if (has_method) {
        /* any service: method names are letters, digits and '_' (checked by the control plane), so
         * they need no escaping */
        for (const char *c = mm->method; *c != '\0'; ++c)
            if (!(('a' <= *c && *c <= 'z') || ('A' <= *c && *c <= 'Z') || ('0' <= *c && *c <= '9') || *c == '_'))
                return fail(b, "%s: '%s' is not a gRPC method name", what, mm->method);
        r->path = rm_malloc(cap);
        snprintf(r->path, cap, "/[^/]+/%s", mm->method);
        r->path_match = RM_PATH_MATCH_REGEX;
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
            if (check_known(b, &rule->base, what, "a rule") != 0)
                return -1;
            size_t nm = rule->n_matches != 0 ? rule->n_matches : 1;
            for (size_t k = 0; k != nm; ++k) {
                const Remora__V1__GRPCRouteMatch *m = rule->n_matches != 0 ? rule->matches[k] : NULL;
                rm_config_route_t *r = new_route(b, svc, name_of(gr->metadata));
                if (m != NULL) {
                    if (m->method != NULL && set_grpc_method(b, r, m->method, what) != 0)
                        return -1;
                    if (set_headers(b, r, m->headers, m->n_headers, what) != 0)
                        return -1;
                }
                if (set_backends(b, r, svc, rule->backend_refs, rule->n_backend_refs, rns, what) != 0 ||
                    set_timeout(b, r, rule->timeouts, what) != 0 || set_grpc_retry(b, r, rule->retry, what) != 0 ||
                    set_grpc_filters(b, r, rule->filters, rule->n_filters, rns, what) != 0 ||
                    set_session_persistence(b, r, rule->session_persistence, what) != 0 ||
                    set_route_rate_limit(b, r, "GRPCRoute", rns, name_of(gr->metadata)) != 0 ||
                    set_authz(b, &r->authz, "GRPCRoute", rns, name_of(gr->metadata)) != 0)
                    return -1;
            }
        }
    }
    return 0;
}

/* ----------------------------------------------------------------------------- backend policies */

static int
apply_backend_policy(builder_t *b, rm_config_cluster_t *cl, const Remora__V1__BackendTrafficPolicySpec *spec, const char *what)
{
    const Remora__V1__RetryConstraint *rc = spec->retry_constraint;
    if (rc != NULL) {
        if (check_known(b, &rc->base, what, "retryConstraint") != 0)
            return -1;
        if (rc->budget != NULL) {
            if (check_known(b, &rc->budget->base, what, "retryConstraint.budget") != 0)
                return -1;
            if (rc->budget->percent > 100)
                return fail(b, "%s: retryConstraint.budget.percent %u is above 100", what, rc->budget->percent);
            cl->budget_percent = rc->budget->percent;
            if (rc->budget->interval != NULL &&
                duration_ms(b, rc->budget->interval, what, "retryConstraint.budget.interval", &cl->budget_interval_ms) != 0)
                return -1;
        }
        if (rc->min_retry_rate != NULL) {
            if (check_known(b, &rc->min_retry_rate->base, what, "retryConstraint.minRetryRate") != 0)
                return -1;
            cl->min_retry_count = rc->min_retry_rate->count;
            if (rc->min_retry_rate->interval != NULL &&
                duration_ms(b, rc->min_retry_rate->interval, what, "retryConstraint.minRetryRate.interval",
                            &cl->min_retry_interval_ms) != 0)
                return -1;
        }
    }
    const Remora__V1__BackendConnectionPool *cp = spec->connection_pool;
    if (cp != NULL) {
        if (check_known(b, &cp->base, what, "connectionPool") != 0)
            return -1;
        if (cp->connect_timeout != NULL &&
            duration_ms(b, cp->connect_timeout, what, "connectionPool.connectTimeout", &cl->connect_timeout_ms) != 0)
            return -1;
        if (cp->idle_timeout != NULL &&
            duration_ms(b, cp->idle_timeout, what, "connectionPool.idleTimeout", &cl->pool_idle_timeout_ms) != 0)
            return -1;
        if (cp->stream_idle_timeout != NULL &&
            duration_ms(b, cp->stream_idle_timeout, what, "connectionPool.streamIdleTimeout", &cl->stream_idle_timeout_ms) != 0)
            return -1;
        /* 0: the agent's default */
        if (cp->max_connections != 0)
            cl->breakers.max_connections = cp->max_connections;
        if (cp->max_pending_requests != 0)
            cl->breakers.max_pending_requests = cp->max_pending_requests;
        if (cp->max_requests != 0)
            cl->breakers.max_requests = cp->max_requests;
        if (cp->max_retries != 0)
            cl->breakers.max_retries = cp->max_retries;
    }
    const Remora__V1__BackendLoadBalancer *lb = spec->load_balancer;
    if (lb != NULL) {
        if (check_known(b, &lb->base, what, "loadBalancer") != 0)
            return -1;
        switch (lb->type) {
        case REMORA__V1__LOAD_BALANCER_TYPE__LOAD_BALANCER_TYPE_UNSPECIFIED:
            cl->lb = RM_LB_DEFAULT;
            break;
        case REMORA__V1__LOAD_BALANCER_TYPE__LOAD_BALANCER_TYPE_ROUND_ROBIN:
            cl->lb = RM_LB_ROUND_ROBIN;
            break;
        case REMORA__V1__LOAD_BALANCER_TYPE__LOAD_BALANCER_TYPE_LEAST_REQUEST:
            cl->lb = RM_LB_LEAST_REQUEST;
            break;
        case REMORA__V1__LOAD_BALANCER_TYPE__LOAD_BALANCER_TYPE_PEAK_EWMA:
            cl->lb = RM_LB_PEAK_EWMA;
            break;
        case REMORA__V1__LOAD_BALANCER_TYPE__LOAD_BALANCER_TYPE_RING_HASH:
            cl->lb = RM_LB_RING_HASH;
            if (lb->minimum_ring_size > 8388608)
                return fail(b, "%s: loadBalancer.ringHash.minimumRingSize %u is above 8388608", what, lb->minimum_ring_size);
            if (lb->minimum_ring_size != 0)
                cl->ring_min_size = lb->minimum_ring_size;
            break;
        default:
            return fail(b, "%s: loadBalancer type %d is not supported by this agent", what, (int)lb->type);
        }
    }
    const Remora__V1__OutlierDetection *od = spec->outlier_detection;
    if (od != NULL) {
        if (check_known(b, &od->base, what, "outlierDetection") != 0)
            return -1;
        if (od->max_ejection_percent > 100)
            return fail(b, "%s: outlierDetection.maxEjectionPercent %u is above 100", what, od->max_ejection_percent);
        cl->outlier.enabled = 1;
        cl->outlier.consecutive_5xx = od->consecutive_5xx_errors;
        cl->outlier.consecutive_gateway_errors = od->consecutive_gateway_errors;
        cl->outlier.max_ejection_percent = od->max_ejection_percent;
        if ((od->interval != NULL &&
             duration_ms(b, od->interval, what, "outlierDetection.interval", &cl->outlier.interval_ms) != 0) ||
            (od->base_ejection_time != NULL && duration_ms(b, od->base_ejection_time, what, "outlierDetection.baseEjectionTime",
                                                           &cl->outlier.base_ejection_ms) != 0) ||
            (od->max_ejection_time != NULL &&
             duration_ms(b, od->max_ejection_time, what, "outlierDetection.maxEjectionTime", &cl->outlier.max_ejection_ms) != 0))
            return -1;
    }
    const Remora__V1__HealthCheck *hc = spec->health_check;
    if (hc != NULL) {
        if (check_known(b, &hc->base, what, "healthCheck") != 0 ||
            (hc->http != NULL && check_known(b, &hc->http->base, what, "healthCheck.http") != 0) ||
            (hc->grpc != NULL && check_known(b, &hc->grpc->base, what, "healthCheck.grpc") != 0))
            return -1;
        if ((hc->http != NULL) == (hc->grpc != NULL))
            return fail(b, "%s: healthCheck needs exactly one of http and grpc", what);
        rm_config_health_check_t *h = &cl->health_check;
        free(h->http_path);
        free(h->grpc_service);
        h->http_path = NULL;
        h->grpc_service = NULL;
        h->enabled = 1;
        h->grpc = hc->grpc != NULL;
        if (hc->http != NULL)
            h->http_path = rm_strdup(hc->http->path);
        else
            h->grpc_service = rm_strdup(hc->grpc->service);
        if (hc->healthy_threshold != 0)
            h->healthy_threshold = hc->healthy_threshold;
        if (hc->unhealthy_threshold != 0)
            h->unhealthy_threshold = hc->unhealthy_threshold;
        if ((hc->interval != NULL && duration_ms(b, hc->interval, what, "healthCheck.interval", &h->interval_ms) != 0) ||
            (hc->timeout != NULL && duration_ms(b, hc->timeout, what, "healthCheck.timeout", &h->timeout_ms) != 0))
            return -1;
    }
    return 0;
}

/*
 * BackendTrafficPolicies onto the clusters of the Services they target. Two policies targeting one
 * Service: the first by namespace and name (the snapshot's order) wins and the other is ignored for
 * that Service, GEP-713's rule for conflicts when creation times do not decide.
 */
static int
apply_backend_policies(builder_t *b)
{
    rm_config_t *c = b->config;
    const char **owner = rm_calloc(c->num_clusters + 1, sizeof(*owner));
    int ret = -1;
    for (size_t i = 0; i != b->snap->n_backend_traffic_policies; ++i) {
        const Remora__V1__BackendTrafficPolicy *p = b->snap->backend_traffic_policies[i];
        const char *ns = ns_of(p->metadata);
        char what[300];
        snprintf(what, sizeof(what), "BackendTrafficPolicy %s/%s", ns, name_of(p->metadata));
        if (p->spec == NULL)
            continue;
        if (check_known(b, &p->spec->base, what, "spec") != 0)
            goto Exit;
        for (size_t j = 0; j != p->spec->n_target_refs; ++j) {
            const Remora__V1__PolicyTargetReference *t = p->spec->target_refs[j];
            if ((t->kind[0] != '\0' && strcasecmp(t->kind, "Service") != 0) ||
                (t->group[0] != '\0' && strcmp(t->group, "core") != 0)) {
                fail(b, "%s: targetRef %s %s is not supported by this agent (only Service)", what, t->group, t->kind);
                goto Exit;
            }
            char *name = cluster_name(t->name, ns);
            ssize_t ci = rm_config_find_cluster(c, name);
            free(name);
            if (ci < 0) {
                fail(b, "%s: targetRef names service %s/%s, which does not exist", what, ns, t->name);
                goto Exit;
            }
            if (owner[ci] != NULL)
                continue;
            owner[ci] = name_of(p->metadata);
            if (apply_backend_policy(b, &c->clusters[ci], p->spec, what) != 0)
                goto Exit;
        }
    }
    ret = 0;
Exit:
    free(owner);
    return ret;
}

/* 1 if the snapshot has the HTTPRoute or GRPCRoute (`kind`, any case) `ns`/`name`: a policy's targetRef */
static int
route_exists(const Remora__V1__Snapshot *snap, const char *kind, const char *ns, const char *name)
{
    if (strcasecmp(kind, "HTTPRoute") == 0) {
        for (size_t k = 0; k != snap->n_http_routes; ++k)
            if (strcmp(ns_of(snap->http_routes[k]->metadata), ns) == 0 &&
                strcmp(name_of(snap->http_routes[k]->metadata), name) == 0)
                return 1;
    } else {
        for (size_t k = 0; k != snap->n_grpc_routes; ++k)
            if (strcmp(ns_of(snap->grpc_routes[k]->metadata), ns) == 0 &&
                strcmp(name_of(snap->grpc_routes[k]->metadata), name) == 0)
                return 1;
    }
    return 0;
}

/*
 * A policy's targetRef `t` in namespace `ns`: a Service sets *cluster_index to its cluster, a route that
 * exists sets it to -1; 0. A kind this agent does not take, or a target that does not exist: -1 with
 * the error (`what` names the policy).
 */
static int
resolve_target(builder_t *b, const Remora__V1__PolicyTargetReference *t, const char *ns, const char *what, ssize_t *cluster_index)
{
    const char *kind = t->kind[0] != '\0' ? t->kind : "Service";
    int found;
    *cluster_index = -1;
    if (strcasecmp(kind, "HTTPRoute") == 0 || strcasecmp(kind, "GRPCRoute") == 0) {
        found = route_exists(b->snap, kind, ns, t->name);
    } else if (strcasecmp(kind, "Service") == 0) {
        char *name = cluster_name(t->name, ns);
        *cluster_index = rm_config_find_cluster(b->config, name);
        free(name);
        found = *cluster_index >= 0;
    } else {
        return fail(b, "%s: targetRef %s %s is not supported by this agent (only Service, HTTPRoute, GRPCRoute)", what, t->group,
                    t->kind);
    }
    if (!found)
        return fail(b, "%s: targetRef names %s %s/%s, which does not exist", what, kind, ns, t->name);
    return 0;
}

/*
 * RateLimitPolicies that target Services onto their clusters: requests routed to the Service are
 * limited there, unless the route has its own (set in add_*_routes). Targets that do not exist are
 * refused as a BackendTrafficPolicy's are.
 */
static int
apply_rate_limit_policies(builder_t *b)
{
    rm_config_t *c = b->config;
    const Remora__V1__Snapshot *snap = b->snap;
    for (size_t i = 0; i != snap->n_rate_limit_policies; ++i) {
        const Remora__V1__RateLimitPolicy *p = snap->rate_limit_policies[i];
        const char *ns = ns_of(p->metadata);
        char what[300];
        snprintf(what, sizeof(what), "RateLimitPolicy %s/%s", ns, name_of(p->metadata));
        if (p->spec == NULL)
            continue;
        if (check_known(b, &p->spec->base, what, "spec") != 0)
            return -1;
        for (size_t j = 0; j != p->spec->n_target_refs; ++j) {
            const Remora__V1__PolicyTargetReference *t = p->spec->target_refs[j];
            ssize_t ci;
            if (resolve_target(b, t, ns, what, &ci) != 0)
                return -1;
            if (ci >= 0 && c->clusters[ci].rate_limit == NULL && rate_limit_for(snap, "Service", ns, t->name) == p &&
                (c->clusters[ci].rate_limit = make_rate_limit(b, p, what)) == NULL)
                return -1;
        }
    }
    return 0;
}

/*
 * AuthorizationPolicies that target Services onto their clusters (the router applies them where the
 * Service is served); a route's are set in add_*_routes. Targets that do not exist are refused as a
 * RateLimitPolicy's are.
 */
static int
apply_authz_policies(builder_t *b)
{
    rm_config_t *c = b->config;
    const Remora__V1__Snapshot *snap = b->snap;
    for (size_t i = 0; i != snap->n_authorization_policies; ++i) {
        const Remora__V1__AuthorizationPolicy *p = snap->authorization_policies[i];
        const char *ns = ns_of(p->metadata);
        char what[300];
        snprintf(what, sizeof(what), "AuthorizationPolicy %s/%s", ns, name_of(p->metadata));
        if (p->spec == NULL)
            continue;
        for (size_t j = 0; j != p->spec->n_target_refs; ++j) {
            const Remora__V1__PolicyTargetReference *t = p->spec->target_refs[j];
            ssize_t ci;
            if (resolve_target(b, t, ns, what, &ci) != 0)
                return -1;
            if (ci >= 0 && c->clusters[ci].authz == NULL && set_authz(b, &c->clusters[ci].authz, "Service", ns, t->name) != 0)
                return -1;
        }
    }
    return 0;
}

/* The namespace whose Telemetry applies mesh-wide (POLICY.md). */
#define ROOT_NAMESPACE "remora-system"

/*
 * Telemetry: the first (by name) in the agent's namespace (`--namespace`; NULL: unknown), else the
 * first in the root namespace, replaces the bootstrap's whole `telemetry` block; with neither, the
 * bootstrap's stays.
 */
static int
apply_telemetry(builder_t *b, const char *agent_ns)
{
    const Remora__V1__Snapshot *snap = b->snap;
    const Remora__V1__Telemetry *chosen = NULL;
    for (size_t i = 0; i != snap->n_telemetries && agent_ns != NULL; ++i)
        if (strcmp(ns_of(snap->telemetries[i]->metadata), agent_ns) == 0) {
            chosen = snap->telemetries[i];
            break;
        }
    for (size_t i = 0; i != snap->n_telemetries && chosen == NULL; ++i)
        if (strcmp(ns_of(snap->telemetries[i]->metadata), ROOT_NAMESPACE) == 0)
            chosen = snap->telemetries[i];
    if (chosen == NULL)
        return 0;
    char what[300];
    snprintf(what, sizeof(what), "Telemetry %s/%s", ns_of(chosen->metadata), name_of(chosen->metadata));
    const Remora__V1__TelemetrySpec *spec = chosen->spec;
    if (spec != NULL && check_known(b, &spec->base, what, "spec") != 0)
        return -1;
    /* what the Telemetry kind does not say (service name, batching, queue and buffer sizes) keeps the
     * bootstrap's values, which are the defaults when the bootstrap has no `telemetry` */
    rm_config_telemetry_t *tm = &b->config->telemetry;
    free(tm->tracing.otlp_endpoint);
    free(tm->access_log.path);
    tm->tracing.otlp_endpoint = NULL;
    tm->access_log.path = NULL;
    tm->tracing.enabled = 0;
    tm->tracing.protocol = RM_OTLP_GRPC;
    tm->tracing.sampling_percent = 0;
    tm->tracing.propagate_w3c = tm->tracing.propagate_b3 = 1;
    tm->tracing.line = 0;
    tm->access_log.enabled = 0;
    tm->access_log.line = 0;
    const Remora__V1__TelemetryTracing *t = spec != NULL ? spec->tracing : NULL;
    if (t != NULL) {
        if (check_known(b, &t->base, what, "spec.tracing") != 0 ||
            (t->otlp != NULL && check_known(b, &t->otlp->base, what, "spec.tracing.otlp") != 0))
            return -1;
        if (t->otlp == NULL || t->otlp->endpoint == NULL || t->otlp->endpoint[0] == '\0')
            return fail(b, "%s: spec.tracing.otlp.endpoint is required", what);
        tm->tracing.enabled = 1;
        tm->tracing.otlp_endpoint = rm_strdup(t->otlp->endpoint);
        switch (t->otlp->protocol) {
        case REMORA__V1__OTLP_PROTOCOL__OTLP_PROTOCOL_GRPC:
            tm->tracing.protocol = RM_OTLP_GRPC;
            break;
        case REMORA__V1__OTLP_PROTOCOL__OTLP_PROTOCOL_HTTP:
            tm->tracing.protocol = RM_OTLP_HTTP;
            break;
        default:
            return fail(b, "%s: spec.tracing.otlp.protocol %d is not known to this agent", what, (int)t->otlp->protocol);
        }
        tm->tracing.sampling_percent = t->sampling_percent;
        if (t->n_propagation != 0) {
            tm->tracing.propagate_w3c = tm->tracing.propagate_b3 = 0;
            for (size_t i = 0; i != t->n_propagation; ++i) {
                if (t->propagation[i] == REMORA__V1__TRACE_PROPAGATION__TRACE_PROPAGATION_W3C)
                    tm->tracing.propagate_w3c = 1;
                else if (t->propagation[i] == REMORA__V1__TRACE_PROPAGATION__TRACE_PROPAGATION_B3)
                    tm->tracing.propagate_b3 = 1;
                else
                    return fail(b, "%s: spec.tracing.propagation %d is not known to this agent", what, (int)t->propagation[i]);
            }
        }
    }
    const Remora__V1__TelemetryAccessLog *a = spec != NULL ? spec->access_log : NULL;
    if (a != NULL) {
        if (check_known(b, &a->base, what, "spec.accessLog") != 0)
            return -1;
        if (a->format != REMORA__V1__ACCESS_LOG_FORMAT__ACCESS_LOG_FORMAT_JSON)
            return fail(b, "%s: spec.accessLog.format %d is not known to this agent", what, (int)a->format);
        tm->access_log.enabled = 1;
        tm->access_log.path = rm_strdup(a->path != NULL && a->path[0] != '\0' ? a->path : "stdout");
    }
    return 0;
}

/*
 * MeshTLS (docs/mesh-tls.md): the first (by name) in the root namespace sets the mesh-wide mode; those of
 * other namespaces are ignored (the control plane refuses them); with none, the bootstrap's (PERMISSIVE).
 */
static int
apply_mesh_tls(builder_t *b)
{
    const Remora__V1__Snapshot *snap = b->snap;
    for (size_t i = 0; i != snap->n_mesh_tls; ++i) {
        const Remora__V1__MeshTLS *m = snap->mesh_tls[i];
        if (strcmp(ns_of(m->metadata), ROOT_NAMESPACE) != 0)
            continue;
        switch (m->spec != NULL ? m->spec->mode : REMORA__V1__MESH_TLSMODE__MESH_TLS_MODE_UNSPECIFIED) {
        case REMORA__V1__MESH_TLSMODE__MESH_TLS_MODE_STRICT:
            b->config->mesh_tls.mode = RM_MESH_TLS_STRICT;
            break;
        case REMORA__V1__MESH_TLSMODE__MESH_TLS_MODE_PERMISSIVE:
            b->config->mesh_tls.mode = RM_MESH_TLS_PERMISSIVE;
            break;
        case REMORA__V1__MESH_TLSMODE__MESH_TLS_MODE_DISABLE:
            b->config->mesh_tls.mode = RM_MESH_TLS_DISABLE;
            break;
        default:
            return fail(b, "MeshTLS %s/%s: spec.mode %d is not known to this agent", ns_of(m->metadata), name_of(m->metadata),
                        m->spec != NULL ? (int)m->spec->mode : 0);
        }
        return 0;
    }
    return 0;
}

/* At most how many inbound clusters rm_config_validate adds: each local IP endpoint on each inbound listener of
 * its family. */
static size_t
count_inbound_clusters(const rm_config_t *c, const Remora__V1__Snapshot *snap)
{
    size_t inbound4 = 0, inbound6 = 0, n = 0;
    for (size_t i = 0; i != c->num_listeners; ++i) {
        if (c->listeners[i].direction == RM_DIRECTION_INBOUND) {
            inbound4 += c->listeners[i].addr.addr.ss_family == AF_INET;
            inbound6 += c->listeners[i].addr.addr.ss_family == AF_INET6;
        }
    }
    for (size_t i = 0; i != snap->n_services && inbound4 + inbound6 != 0; ++i) {
        const Remora__V1__ServiceSpec *spec = snap->services[i]->spec;
        for (size_t j = 0; spec != NULL && j != spec->n_endpoints; ++j) {
            struct sockaddr_storage ss;
            socklen_t len;
            const char *why;
            if (spec->endpoints[j]->target_case == REMORA__V1__ENDPOINT__TARGET_ADDRESS &&
                rm_parse_ip_port(spec->endpoints[j]->address, &ss, &len, &why) == 0 &&
                rm_config_addr_is_local(c, (const struct sockaddr *)&ss))
                n += ss.ss_family == AF_INET ? inbound4 : inbound6;
        }
    }
    return n;
}

static int
build(builder_t *b)
{
    const Remora__V1__Snapshot *snap = b->snap;
    rm_config_t *c = b->config;
    /* in the arena (not in this thread's malloc arena, among the decoded snapshot's chunks), with room for the
     * inbound clusters that validation appends (one per inbound listener of its family and endpoint of this
     * agent's, rm_config_addr_is_local): the arena's pages that room leaves unused are never touched */
    c->_clusters_capacity = snap->n_services + count_inbound_clusters(c, snap);
    c->clusters = aalloc(b, (c->_clusters_capacity + 1) * sizeof(*c->clusters));
    for (size_t i = 0; i != snap->n_services; ++i)
        if (add_cluster(b, snap->services[i]) != 0)
            return -1;
    if (apply_backend_policies(b) != 0 || apply_rate_limit_policies(b) != 0 || apply_authz_policies(b) != 0 ||
        apply_telemetry(b, b->config->agent_namespace) != 0 || apply_mesh_tls(b) != 0)
        return -1;
    for (size_t i = 0; i != snap->n_services; ++i) {
        const Remora__V1__Service *svc = snap->services[i];
        size_t first = b->num_routes;
        b->svc_index = i;
        b->svc_first_route = first;
        if (add_http_routes(b, svc) != 0 || add_grpc_routes(b, svc) != 0)
            return -1;
        /* the Service's own route catches what its routes do not; after a route that matches every
         * request of the Service (no method, header or path condition but "/") it would never match */
        int covered = 0;
        for (size_t j = first; j != b->num_routes && !covered; ++j) {
            const rm_config_route_t *x = &b->routes[j];
            covered = x->method == NULL && x->num_headers == 0 &&
                      (x->path_match == RM_PATH_MATCH_ANY ||
                       (x->path_match == RM_PATH_MATCH_PREFIX && x->path != NULL && strcmp(x->path, "/") == 0));
        }
        if (!covered) {
            rm_config_route_t *r = new_route(b, svc, "default");
            r->cluster_index = i;
        }
        /* cluster i is service i (add_cluster): a virtual address of it selects these routes */
        for (size_t j = first; j != b->num_routes; ++j) {
            b->routes[j].service_cluster = i;
            b->routes[j].has_service = 1;
        }
    }
    return 0;
}

/*
 * The decoded snapshot lives in pages of its own (protobuf-c's allocator hook), returned at once when it is
 * freed: decoded with malloc, its hundred thousand small chunks (for thousands of Services) and the few that
 * outlive them in this thread's malloc arena left that arena fragmented and resident after every snapshot
 * (docs/BENCHMARKS.md "Scale"). Blocks of 64 KiB doubling to 1 MiB; at most SCRATCH_PER_BYTE bytes per byte of
 * the message plus 1 MiB (more: the allocation fails and the snapshot does not parse).
 */
#define SCRATCH_MIN_BLOCK (64u * 1024)
#define SCRATCH_MAX_BLOCK (1024u * 1024)
#define SCRATCH_PER_BYTE 128

typedef struct st_scratch_block_t {
    struct st_scratch_block_t *next;
    size_t size, used;
} scratch_block_t;

typedef struct st_scratch_t {
    scratch_block_t *blocks;
    size_t total, limit;
} scratch_t;

static size_t
round_up(size_t n, size_t a)
{
    return (n + a - 1) / a * a;
}

static void *
scratch_alloc(void *data, size_t size)
{
    scratch_t *s = data;
    scratch_block_t *b = s->blocks;
    size = round_up(size != 0 ? size : 1, 16);
    if (b == NULL || b->used + size > b->size) {
        size_t want = s->total < SCRATCH_MIN_BLOCK   ? SCRATCH_MIN_BLOCK
                      : s->total > SCRATCH_MAX_BLOCK ? SCRATCH_MAX_BLOCK
                                                     : s->total;
        size_t need = round_up(sizeof(*b), 16) + size;
        if (want < need)
            want = round_up(need, 4096);
        if (s->total + want > s->limit)
            return NULL;
        void *p = mmap(NULL, want, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            return NULL;
        b = p;
        b->size = want;
        b->used = round_up(sizeof(*b), 16);
        b->next = s->blocks;
        s->blocks = b;
        s->total += want;
    }
    void *p = (char *)b + b->used;
    b->used += size;
    return p;
}

static void
scratch_free(void *data, void *p)
{
    /* everything goes at once, in scratch_destroy */
}

static void
scratch_destroy(scratch_t *s)
{
    while (s->blocks != NULL) {
        scratch_block_t *b = s->blocks;
        s->blocks = b->next;
        munmap(b, b->size);
    }
    s->total = 0;
}

rm_config_t *
rm_translate_snapshot(const uint8_t *bytes, size_t len, const rm_config_t *base, char *err, size_t errlen)
{
    scratch_t scratch = {.limit = SCRATCH_PER_BYTE * len + SCRATCH_MAX_BLOCK};
    ProtobufCAllocator decoded = {.alloc = scratch_alloc, .free = scratch_free, .allocator_data = &scratch};
    Remora__V1__Snapshot *snap = remora__v1__snapshot__unpack(&decoded, len, bytes);
    if (snap == NULL) {
        scratch_destroy(&scratch);
        snprintf(err, errlen, "the snapshot does not parse as remora.v1.Snapshot");
        return NULL;
    }
    builder_t b = {.config = rm_config_create_defaults(), .snap = snap, .err = err, .errlen = errlen};
    char buf[64];
    snprintf(buf, sizeof(buf), "%llu", (unsigned long long)snap->version);
    b.config->version = rm_strdup(buf);
    b.config->source = rm_strdup("control plane");
    b.config->scoped = snap->scoped;
    rm_config_t *ret = NULL;
    if (copy_base(&b, base) != 0)
        goto Exit;
    /* a snapshot lists the whole mesh's endpoints: inbound Service listeners only for this agent's own
     * (when its addresses cannot be read, for every endpoint, as a bootstrap file gets) */
    for (size_t i = 0; i != b.config->num_listeners; ++i) {
        if (b.config->listeners[i].direction == RM_DIRECTION_INBOUND) {
            if (rm_config_learn_local_addresses(b.config) != 0)
                rm_log_warn("config",
                            "the agent's own addresses are unknown (getifaddrs failed or over %d): an inbound "
                            "Service listener for every endpoint of the mesh",
                            RM_CONFIG_MAX_LOCAL_ADDRS);
            break;
        }
    }
    if (build(&b) != 0)
        goto Exit;
    /* everything is copied out of the decoded snapshot: free it before validation adds to the peak */
    scratch_destroy(&scratch);
    snap = NULL;
    /* every listener serves the same routes: the first owns the list, the others borrow it (one copy
     * whatever the number of listeners: 4 in transparent mode) */
    rm_config_route_t *routes = NULL;
    if (b.num_routes != 0 && b.config->num_listeners != 0) {
        routes = aalloc(&b, b.num_routes * sizeof(*routes));
        memcpy(routes, b.routes, b.num_routes * sizeof(*routes));
    }
    for (size_t i = 0; i != b.config->num_listeners; ++i) {
        rm_config_listener_t *l = &b.config->listeners[i];
        l->routes = routes;
        l->num_routes = routes != NULL ? b.num_routes : 0;
        l->routes_borrowed = i != 0 && routes != NULL;
    }
    if (b.config->num_listeners != 0)
        drop_routes(&b);
    rm_config_error_t verr;
    if (rm_config_validate(b.config, &verr) != 0) {
        snprintf(err, errlen, "%s", verr.message);
        goto Exit;
    }
    ret = b.config;
    b.config = NULL;
Exit:
    if (b.routes != NULL) { /* not taken by a listener: what the routes own, then the scratch pages */
        if (b.num_routes != 0) {
            rm_config_route_t *owned = rm_calloc(b.num_routes, sizeof(*owned));
            memcpy(owned, b.routes, b.num_routes * sizeof(*owned));
            rm_config_free_routes(b.config != NULL ? b.config : ret, owned, b.num_routes);
        }
        drop_routes(&b);
    }
    if (b.config != NULL)
        rm_config_unref(b.config);
    scratch_destroy(&scratch);
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
