#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "remora/strutil.h"
#include "remora/v1/policy.pb-c.h"
#include "remora/v1/route.pb-c.h"
#include "remora/v1/service.pb-c.h"
#include "scope.h"

const rm_resource_t *
rm_scope_policy(const rm_store_t *store, const char *ns, const char *sa)
{
    size_t n;
    rm_resource_t *const *list = rm_store_list(store, RM_KIND_EGRESS_POLICY, &n);
    const rm_resource_t *wide = NULL;
    /* sorted by namespace and name: the first that targets the ServiceAccount, else the first without targets */
    for (size_t i = 0; i != n; ++i) {
        if (strcmp(list[i]->ns, ns) != 0)
            continue;
        const Remora__V1__EgressPolicySpec *spec = ((const Remora__V1__EgressPolicy *)list[i]->msg)->spec;
        if (spec == NULL)
            continue;
        if (spec->n_target_refs == 0) {
            if (wide == NULL)
                wide = list[i];
            continue;
        }
        for (size_t t = 0; t != spec->n_target_refs; ++t)
            if (sa != NULL && strcmp(spec->target_refs[t]->name, sa) == 0)
                return list[i];
    }
    return wide;
}

int
rm_scope_host_matches(const char *host, const char *policy_ns, const char *ns, const char *name)
{
    const char *slash = strchr(host, '/');
    if (slash == NULL)
        return 0;
    size_t nslen = (size_t)(slash - host);
    int ns_ok = (nslen == 1 && host[0] == '*') ||
                (nslen == 1 && host[0] == '.' ? strcmp(ns, policy_ns) == 0 : strlen(ns) == nslen && memcmp(host, ns, nslen) == 0);
    return ns_ok && (strcmp(slash + 1, "*") == 0 || strcmp(slash + 1, name) == 0);
}

/* Puts a resource into the view; 1 when it was not in it yet. */
static int
mark(const rm_store_t *store, uint8_t *view[], rm_kind_t kind, const char *ns, const char *name)
{
    ssize_t at = rm_store_index(store, kind, ns, name);
    if (at < 0 || view[kind][at])
        return 0;
    view[kind][at] = 1;
    return 1;
}

static int
in_view(const rm_store_t *store, uint8_t *view[], rm_kind_t kind, const char *ns, const char *name)
{
    ssize_t at = rm_store_index(store, kind, ns, name);
    return at >= 0 && view[kind][at];
}

/* The filters of a route rule: a mirror's Service, an ExtensionRef's FaultInjection (in the route's namespace). */
static int
mark_filters(const rm_store_t *store, uint8_t *view[], void *const *filters, size_t n, int grpc, const char *route_ns)
{
    int changed = 0;
    for (size_t i = 0; i != n; ++i) {
        const Remora__V1__HTTPRequestMirrorFilter *mirror;
        const Remora__V1__LocalObjectReference *ext;
        rm_route_filter_refs(filters[i], grpc, &mirror, &ext);
        if (mirror != NULL && mirror->backend_ref != NULL)
            changed |= mark(store, view, RM_KIND_SERVICE, mirror->backend_ref->namespace_, mirror->backend_ref->name);
        if (ext != NULL)
            changed |= mark(store, view, RM_KIND_FAULT_INJECTION, route_ns, ext->name);
    }
    return changed;
}

/* A route joins the view when one of its parents is in it; a route in the view brings everything it refers to. */
static int
close_route(const rm_store_t *store, uint8_t *view[], const rm_resource_t *route, uint8_t *flag)
{
    size_t n_parents, n_rules;
    Remora__V1__ParentReference **parents;
    void **rules;
    int grpc = route->kind == RM_KIND_GRPC_ROUTE, changed = 0;
    if (!rm_route_refs(route, &n_parents, &parents, &n_rules, &rules))
        return 0;
    if (!*flag) {
        for (size_t i = 0; i != n_parents && !*flag; ++i)
            if (in_view(store, view, RM_KIND_SERVICE, parents[i]->namespace_, parents[i]->name))
                *flag = 1, changed = 1;
        if (!*flag)
            return 0;
    }
    for (size_t i = 0; i != n_parents; ++i)
        changed |= mark(store, view, RM_KIND_SERVICE, parents[i]->namespace_, parents[i]->name);
    for (size_t i = 0; i != n_rules; ++i) {
        size_t n_backends, n_filters;
        Remora__V1__BackendReference **backends;
        void **filters;
        rm_route_rule_refs(rules[i], grpc, &n_backends, &backends, &n_filters, &filters);
        for (size_t j = 0; j != n_backends; ++j)
            changed |= mark(store, view, RM_KIND_SERVICE, backends[j]->namespace_, backends[j]->name);
        changed |= mark_filters(store, view, filters, n_filters, grpc, route->ns);
    }
    return changed;
}

static rm_kind_t
target_kind(const Remora__V1__PolicyTargetReference *t)
{
    if (strcasecmp(t->kind, "HTTPRoute") == 0)
        return RM_KIND_HTTP_ROUTE;
    if (strcasecmp(t->kind, "GRPCRoute") == 0)
        return RM_KIND_GRPC_ROUTE;
    return RM_KIND_SERVICE;
}

/* A policy joins the view when one of its targets is in it, and brings its other targets: the agent refuses a
 * policy whose target it does not have. */
static int
close_policy(const rm_store_t *store, uint8_t *view[], const rm_resource_t *policy, uint8_t *flag)
{
    Remora__V1__PolicyTargetReference **refs;
    size_t n;
    switch (policy->kind) {
    case RM_KIND_BACKEND_TRAFFIC_POLICY: {
        const Remora__V1__BackendTrafficPolicySpec *spec = ((const Remora__V1__BackendTrafficPolicy *)policy->msg)->spec;
        if (spec == NULL)
            return 0;
        refs = spec->target_refs, n = spec->n_target_refs;
    } break;
    case RM_KIND_RATE_LIMIT_POLICY: {
        const Remora__V1__RateLimitPolicySpec *spec = ((const Remora__V1__RateLimitPolicy *)policy->msg)->spec;
        if (spec == NULL)
            return 0;
        refs = spec->target_refs, n = spec->n_target_refs;
    } break;
    case RM_KIND_AUTHORIZATION_POLICY: {
        const Remora__V1__AuthorizationPolicySpec *spec = ((const Remora__V1__AuthorizationPolicy *)policy->msg)->spec;
        if (spec == NULL)
            return 0;
        refs = spec->target_refs, n = spec->n_target_refs;
    } break;
    default:
        return 0;
    }
    int changed = 0;
    if (!*flag) {
        for (size_t i = 0; i != n && !*flag; ++i)
            if (in_view(store, view, target_kind(refs[i]), policy->ns, refs[i]->name))
                *flag = 1, changed = 1;
        if (!*flag)
            return 0;
    }
    for (size_t i = 0; i != n; ++i)
        changed |= mark(store, view, target_kind(refs[i]), policy->ns, refs[i]->name);
    return changed;
}

/* Does the workload (ns, sa) serve the Service: the Service's or one of its endpoints' ServiceAccount? */
static int
serves(const rm_resource_t *svc, const char *ns, const char *sa)
{
    const Remora__V1__ServiceSpec *spec = ((const Remora__V1__Service *)svc->msg)->spec;
    if (spec == NULL || sa == NULL || strcmp(svc->ns, ns) != 0)
        return 0;
    if (strcmp(spec->service_account[0] != '\0' ? spec->service_account : "default", sa) == 0)
        return 1;
    for (size_t i = 0; i != spec->n_endpoints; ++i)
        if (spec->endpoints[i]->service_account[0] != '\0' && strcmp(spec->endpoints[i]->service_account, sa) == 0)
            return 1;
    return 0;
}

size_t
rm_scope_view(const rm_store_t *store, const rm_resource_t *policy, const char *sa, uint8_t *view[])
{
    return rm_scope_view_discovered(store, policy, sa, NULL, 0, view);
}

size_t
rm_scope_view_discovered(const rm_store_t *store, const rm_resource_t *policy, const char *sa, const rm_scope_service_t *discovered,
                         size_t num_discovered, uint8_t *view[])
{
    const Remora__V1__EgressPolicySpec *spec = ((const Remora__V1__EgressPolicy *)policy->msg)->spec;
    size_t len[RM_KIND__ALL];
    rm_resource_t *const *lists[RM_KIND__ALL];
    for (int k = 0; k != RM_KIND__ALL; ++k) {
        lists[k] = rm_store_list(store, (rm_kind_t)k, &len[k]);
        view[k] = rm_calloc(len[k] + 1, 1);
    }
    for (size_t i = 0; i != len[RM_KIND_SERVICE]; ++i) {
        const rm_resource_t *svc = lists[RM_KIND_SERVICE][i];
        int in = serves(svc, policy->ns, sa);
        for (size_t h = 0; spec != NULL && h != spec->n_hosts && !in; ++h)
            in = rm_scope_host_matches(spec->hosts[h], policy->ns, svc->ns, svc->name);
        view[RM_KIND_SERVICE][i] = (uint8_t)in;
    }
    /* what its agents asked for on demand enters as a host of the policy would, closure included */
    for (size_t i = 0; i != num_discovered; ++i)
        mark(store, view, RM_KIND_SERVICE, discovered[i].ns, discovered[i].name);
    /* mesh-wide kinds: every agent needs them whatever it calls */
    memset(view[RM_KIND_TELEMETRY], 1, len[RM_KIND_TELEMETRY]);
    memset(view[RM_KIND_MESH_TLS], 1, len[RM_KIND_MESH_TLS]);
    /* the closure over references; each round only adds, so it ends after at most as many rounds as resources (in
     * practice 2 or 3: routes, then what their backends' policies target) */
    static const rm_kind_t routes[] = {RM_KIND_HTTP_ROUTE, RM_KIND_GRPC_ROUTE};
    static const rm_kind_t policies[] = {RM_KIND_BACKEND_TRAFFIC_POLICY, RM_KIND_RATE_LIMIT_POLICY, RM_KIND_AUTHORIZATION_POLICY};
    int changed = 1;
    while (changed) {
        changed = 0;
        for (size_t r = 0; r != sizeof(routes) / sizeof(routes[0]); ++r)
            for (size_t i = 0; i != len[routes[r]]; ++i)
                changed |= close_route(store, view, lists[routes[r]][i], &view[routes[r]][i]);
        for (size_t p = 0; p != sizeof(policies) / sizeof(policies[0]); ++p)
            for (size_t i = 0; i != len[policies[p]]; ++i)
                changed |= close_policy(store, view, lists[policies[p]][i], &view[policies[p]][i]);
    }
    size_t n = 0;
    for (int k = 0; k != RM_KIND__ALL; ++k)
        for (size_t i = 0; i != len[k]; ++i)
            n += view[k][i] != 0;
    return n;
}

const rm_resource_t *
rm_scope_resolve(const rm_store_t *store, const char *host)
{
    /* the longest authority the agent builds is a 253-byte DNS name; names and namespaces are DNS labels (no dot) */
    char buf[254];
    size_t len = strnlen(host, sizeof(buf) + 1);
    if (len != 0 && host[len - 1] == '.') /* a fully qualified name is the same name */
        --len;
    if (len == 0 || len >= sizeof(buf))
        return NULL;
    for (size_t i = 0; i != len; ++i) {
        char ch = host[i];
        if (ch >= 'A' && ch <= 'Z')
            ch = (char)(ch - 'A' + 'a');
        if (!((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '.'))
            return NULL;
        buf[i] = ch;
    }
    buf[len] = '\0';
    char *dot = strchr(buf, '.');
    if (dot == NULL)
        return rm_store_find(store, RM_KIND_SERVICE, "default", buf);
    *dot = '\0';
    char *ns = dot + 1;
    size_t nslen = strlen(ns);
    static const char *const suffixes[] = {".svc.cluster.local", ".svc"};
    for (size_t i = 0; i != sizeof(suffixes) / sizeof(suffixes[0]); ++i) {
        size_t slen = strlen(suffixes[i]);
        if (nslen > slen && strcmp(ns + nslen - slen, suffixes[i]) == 0) {
            ns[nslen - slen] = '\0';
            break;
        }
    }
    if (buf[0] == '\0' || ns[0] == '\0' || strchr(ns, '.') != NULL)
        return NULL;
    return rm_store_find(store, RM_KIND_SERVICE, ns, buf);
}
