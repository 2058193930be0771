/*
 * Fuzz target for scoping (control/src/scope.c: rm_scope_policy, rm_scope_view, rm_scope_view_discovered,
 * rm_scope_resolve, rm_scope_host_matches): which resources the agent of a workload receives under an EgressPolicy.
 *
 * Input: policy YAML (`remoractl apply`), parsed and checked as one batch (control/src/document.c). A batch without
 * errors is applied to an in-memory store as the control plane applies it; otherwise its resources, the first of
 * each name, replace the store's content (rm_store_replace, as --kubernetes does, but without its filter of
 * resources whose references do not resolve: scope.c is driven over dangling references too, which the control
 * plane never stores). Lines "#discover HOST" of the input (YAML comments: the parser skips them; at most MAX_DISCOVER)
 * are names an agent asked for (on-demand discovery): each goes through rm_scope_resolve, and what it names (or, for
 * "NS/NAME", that pair whether stored or not) makes the discovered set. Then, for up to MAX_WORKLOADS workloads (each
 * EgressPolicy's namespace with its targets' ServiceAccounts, "default", and no ServiceAccount at all), the policy
 * and the view are computed.
 *
 * Besides "no crash, no leak, no UB" it checks, against a model written from docs/control-plane.md "Scoping":
 *   - rm_scope_policy: an EgressPolicy of the workload's namespace; one that targets the ServiceAccount when there is
 *     one, else the first without targets; NULL only when neither exists;
 *   - rm_scope_host_matches agrees with the host grammar ("NS/NAME", "./NAME", "* /NAME", "NS/ *");
 *   - rm_scope_resolve: a Service it returns has the host (lower-cased) among its authorities ("NAME.NS",
 *     "NAME.NS.svc", "NAME.NS.svc.cluster.local", "NAME" in namespace default), and each of these authorities of
 *     each stored Service resolves to it;
 *   - the view: every existing Service a host names, the workload serves or the discovered set holds is in it; every
 *     Telemetry and MeshTLS, no EgressPolicy; a route is in it when one of its (existing) parents is, and only then
 *     or as a target of a policy in it, and then its parents, backends, mirrors' Services and ExtensionRef
 *     FaultInjections are (regress_route_target_missing_parent: a route whose only parent is missing, a store only
 *     this harness makes, enters as a policy's target); a policy is in it exactly
 *     when one of its targets is, and then all its targets are; nothing else (each Service, FaultInjection in it
 *     has one of these reasons); the count returned is the number of resources in it;
 *   - idempotent: computing the view again gives the same view; the view without the discovered set
 *     (rm_scope_view) is inside it, and the same when the set is empty;
 *   - the store's encoding of the view (rm_store_snapshot_view) unpacks and holds exactly that many resources.
 * A violated property aborts. FUZZ_SCOPE_TRACE=1 in the environment prints the store and each view computed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "document.h"
#include "fuzz_common.h"
#include "remora/v1/discovery.pb-c.h"
#include "remora/v1/policy.pb-c.h"
#include "remora/v1/route.pb-c.h"
#include "remora/v1/service.pb-c.h"
#include "scope.h"
#include "store.h"

#define MAX_WORKLOADS 16
#define MAX_DISCOVER 32
/* the longest host a Discover carries (discovery.proto) */
#define MAX_HOST 253

typedef struct st_world_t {
    const rm_store_t *store;
    rm_resource_t *const *lists[RM_KIND__ALL];
    size_t len[RM_KIND__ALL];
    rm_scope_service_t discovered[MAX_DISCOVER];
    size_t num_discovered;
} world_t;

static int
in_view(const world_t *w, uint8_t *const view[], rm_kind_t kind, const char *ns, const char *name)
{
    ssize_t at = rm_store_index(w->store, kind, ns, name);
    return at >= 0 && view[kind][at];
}

static int
exists(const world_t *w, rm_kind_t kind, const char *ns, const char *name)
{
    return rm_store_index(w->store, kind, ns, name) >= 0;
}

/* The host grammar of docs/control-plane.md, written apart from scope.c. */
static int
model_host_matches(const char *host, const char *policy_ns, const char *ns, const char *name)
{
    const char *slash = strchr(host, '/');
    if (slash == NULL)
        return 0;
    size_t nslen = (size_t)(slash - host);
    int ns_ok;
    if (nslen == 1 && host[0] == '*')
        ns_ok = 1;
    else if (nslen == 1 && host[0] == '.')
        ns_ok = strcmp(ns, policy_ns) == 0;
    else
        ns_ok = strlen(ns) == nslen && strncmp(host, ns, nslen) == 0;
    return ns_ok && (strcmp(slash + 1, "*") == 0 || strcmp(slash + 1, name) == 0);
}

static int
model_serves(const rm_resource_t *svc, const char *ns, const char *sa)
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

static void
policy_targets(const rm_resource_t *p, Remora__V1__PolicyTargetReference ***refs, size_t *n, int *has_spec)
{
    *refs = NULL, *n = 0, *has_spec = 0;
    switch (p->kind) {
    case RM_KIND_BACKEND_TRAFFIC_POLICY: {
        const Remora__V1__BackendTrafficPolicySpec *s = ((const Remora__V1__BackendTrafficPolicy *)p->msg)->spec;
        if (s != NULL)
            *refs = s->target_refs, *n = s->n_target_refs, *has_spec = 1;
    } break;
    case RM_KIND_RATE_LIMIT_POLICY: {
        const Remora__V1__RateLimitPolicySpec *s = ((const Remora__V1__RateLimitPolicy *)p->msg)->spec;
        if (s != NULL)
            *refs = s->target_refs, *n = s->n_target_refs, *has_spec = 1;
    } break;
    case RM_KIND_AUTHORIZATION_POLICY: {
        const Remora__V1__AuthorizationPolicySpec *s = ((const Remora__V1__AuthorizationPolicy *)p->msg)->spec;
        if (s != NULL)
            *refs = s->target_refs, *n = s->n_target_refs, *has_spec = 1;
    } break;
    default:
        break;
    }
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

/* Visits what a route refers to: fn(kind, ns, name) for its parents (which 0), backends and mirrors (1), FaultInjections (2). */
typedef void (*ref_fn)(void *ctx, int which, rm_kind_t kind, const char *ns, const char *name);

static void
route_refs(const rm_resource_t *route, ref_fn fn, void *ctx)
{
    size_t n_parents, n_rules;
    Remora__V1__ParentReference **parents;
    void **rules;
    int grpc = route->kind == RM_KIND_GRPC_ROUTE;
    if (!rm_route_refs(route, &n_parents, &parents, &n_rules, &rules))
        return;
    for (size_t i = 0; i != n_parents; ++i)
        fn(ctx, 0, RM_KIND_SERVICE, parents[i]->namespace_, parents[i]->name);
    for (size_t i = 0; i != n_rules; ++i) {
        size_t n_backends, n_filters;
        Remora__V1__BackendReference **backends;
        void **filters;
        rm_route_rule_refs(rules[i], grpc, &n_backends, &backends, &n_filters, &filters);
        for (size_t j = 0; j != n_backends; ++j)
            fn(ctx, 1, RM_KIND_SERVICE, backends[j]->namespace_, backends[j]->name);
        for (size_t j = 0; j != n_filters; ++j) {
            const Remora__V1__HTTPRequestMirrorFilter *mirror;
            const Remora__V1__LocalObjectReference *ext;
            rm_route_filter_refs(filters[j], grpc, &mirror, &ext);
            if (mirror != NULL && mirror->backend_ref != NULL)
                fn(ctx, 1, RM_KIND_SERVICE, mirror->backend_ref->namespace_, mirror->backend_ref->name);
            if (ext != NULL)
                fn(ctx, 2, RM_KIND_FAULT_INJECTION, route->ns, ext->name);
        }
    }
}

typedef struct st_route_ctx_t {
    const world_t *w;
    uint8_t *const *view;
    /* a parent that exists is in the view */
    int parent_in;
    /* every reference that exists is in the view */
    int all_in;
    /* reasons: set `reason[kind][i]` for what the route refers to */
    uint8_t **reason;
} route_ctx_t;

static void
route_ref(void *p, int which, rm_kind_t kind, const char *ns, const char *name)
{
    route_ctx_t *c = p;
    ssize_t at = rm_store_index(c->w->store, kind, ns, name);
    if (at < 0)
        return;
    if (which == 0 && c->view[kind][at])
        c->parent_in = 1;
    if (!c->view[kind][at])
        c->all_in = 0;
    if (c->reason != NULL)
        c->reason[kind][at] = 1;
}

static void
check_policy_choice(const world_t *w, const rm_resource_t *chosen, const char *ns, const char *sa)
{
    const rm_resource_t *targeted = NULL, *wide = NULL;
    for (size_t i = 0; i != w->len[RM_KIND_EGRESS_POLICY]; ++i) {
        const rm_resource_t *p = w->lists[RM_KIND_EGRESS_POLICY][i];
        const Remora__V1__EgressPolicySpec *spec = ((const Remora__V1__EgressPolicy *)p->msg)->spec;
        if (strcmp(p->ns, ns) != 0 || spec == NULL)
            continue;
        if (spec->n_target_refs == 0 && wide == NULL)
            wide = p;
        for (size_t t = 0; t != spec->n_target_refs && targeted == NULL; ++t)
            if (sa != NULL && strcmp(spec->target_refs[t]->name, sa) == 0)
                targeted = p;
    }
    FUZZ_CHECK(chosen == (targeted != NULL ? targeted : wide), "the EgressPolicy that applies: the first targeting the "
                                                               "ServiceAccount, else the first without targets");
}

static size_t
snapshot_count(const Remora__V1__Snapshot *snap)
{
    size_t n = 0;
    for (int k = 0; k != RM_KIND__ALL; ++k) {
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(&remora__v1__snapshot__descriptor, rm_kind_field((rm_kind_t)k));
        FUZZ_CHECK(f != NULL, "every kind has a Snapshot field");
        n += *(const size_t *)((const char *)snap + f->quantifier_offset);
    }
    return n;
}

static void
check_view(const world_t *w, const rm_resource_t *policy, const char *sa, uint8_t *view[], size_t count)
{
    const Remora__V1__EgressPolicySpec *spec = ((const Remora__V1__EgressPolicy *)policy->msg)->spec;
    uint8_t *reason[RM_KIND__ALL];
    size_t total = 0;
    for (int k = 0; k != RM_KIND__ALL; ++k) {
        reason[k] = calloc(w->len[k] + 1, 1);
        for (size_t i = 0; i != w->len[k]; ++i)
            total += view[k][i] != 0;
    }
    FUZZ_CHECK(total == count, "the count is the number of resources in the view");
    /* Services the hosts name or the workload serves */
    for (size_t i = 0; i != w->len[RM_KIND_SERVICE]; ++i) {
        const rm_resource_t *svc = w->lists[RM_KIND_SERVICE][i];
        int named = 0;
        for (size_t h = 0; spec != NULL && h != spec->n_hosts; ++h) {
            int m = rm_scope_host_matches(spec->hosts[h], policy->ns, svc->ns, svc->name);
            FUZZ_CHECK(m == model_host_matches(spec->hosts[h], policy->ns, svc->ns, svc->name), "the host grammar");
            named |= m;
        }
        for (size_t d = 0; d != w->num_discovered && !named; ++d)
            named = strcmp(w->discovered[d].ns, svc->ns) == 0 && strcmp(w->discovered[d].name, svc->name) == 0;
        if (named || model_serves(svc, policy->ns, sa)) {
            FUZZ_CHECK(view[RM_KIND_SERVICE][i], "a Service a host names, the workload serves or was discovered is in the view");
            reason[RM_KIND_SERVICE][i] = 1;
        }
    }
    for (size_t i = 0; i != w->len[RM_KIND_TELEMETRY]; ++i)
        FUZZ_CHECK(view[RM_KIND_TELEMETRY][i], "every Telemetry is in the view");
    for (size_t i = 0; i != w->len[RM_KIND_MESH_TLS]; ++i)
        FUZZ_CHECK(view[RM_KIND_MESH_TLS][i], "every MeshTLS is in the view");
    for (size_t i = 0; i != w->len[RM_KIND_EGRESS_POLICY]; ++i)
        FUZZ_CHECK(!view[RM_KIND_EGRESS_POLICY][i], "no EgressPolicy is in the view");
    /* policies: in the view exactly when a target is, and then with all their targets */
    static const rm_kind_t policies[] = {RM_KIND_BACKEND_TRAFFIC_POLICY, RM_KIND_RATE_LIMIT_POLICY, RM_KIND_AUTHORIZATION_POLICY};
    for (size_t p = 0; p != 3; ++p) {
        for (size_t i = 0; i != w->len[policies[p]]; ++i) {
            const rm_resource_t *pol = w->lists[policies[p]][i];
            Remora__V1__PolicyTargetReference **refs;
            size_t n;
            int has_spec, target_in = 0, all_in = 1, in = view[policies[p]][i] != 0;
            policy_targets(pol, &refs, &n, &has_spec);
            for (size_t t = 0; t != n; ++t) {
                rm_kind_t k = target_kind(refs[t]);
                if (!exists(w, k, pol->ns, refs[t]->name))
                    continue;
                int tin = in_view(w, view, k, pol->ns, refs[t]->name);
                target_in |= tin;
                all_in &= tin;
                if (in)
                    reason[k][rm_store_index(w->store, k, pol->ns, refs[t]->name)] = 1;
            }
            FUZZ_CHECK(in == target_in, "a policy is in the view exactly when one of its targets is");
            if (in)
                FUZZ_CHECK(all_in, "a policy in the view brings all its targets");
        }
    }
    /* routes: in the view when a parent is, and then with everything they refer to; in it only so, or as the target
     * of a policy in it (when its parents are missing, which only the replaced store above allows) */
    static const rm_kind_t routes[] = {RM_KIND_HTTP_ROUTE, RM_KIND_GRPC_ROUTE};
    for (size_t r = 0; r != 2; ++r) {
        for (size_t i = 0; i != w->len[routes[r]]; ++i) {
            int in = view[routes[r]][i] != 0;
            route_ctx_t c = {w, view, 0, 1, in ? reason : NULL};
            route_refs(w->lists[routes[r]][i], route_ref, &c);
            FUZZ_CHECK(!c.parent_in || in, "a route one of whose parents is in the view is in it");
            FUZZ_CHECK(!in || c.parent_in || reason[routes[r]][i],
                       "a route in the view has a parent in it, or a policy in it targets it");
            if (in)
                FUZZ_CHECK(c.all_in, "a route in the view brings its parents, backends, mirrors and FaultInjections");
        }
    }
    /* nothing without a reason */
    for (size_t i = 0; i != w->len[RM_KIND_SERVICE]; ++i)
        FUZZ_CHECK(!view[RM_KIND_SERVICE][i] || reason[RM_KIND_SERVICE][i], "a Service in the view has a reason to be");
    for (size_t i = 0; i != w->len[RM_KIND_FAULT_INJECTION]; ++i)
        FUZZ_CHECK(!view[RM_KIND_FAULT_INJECTION][i] || reason[RM_KIND_FAULT_INJECTION][i],
                   "a FaultInjection in the view is one a route in it refers to");
    for (int k = 0; k != RM_KIND__ALL; ++k)
        free(reason[k]);
    /* the encoding of the view */
    size_t len;
    uint8_t *bytes = rm_store_snapshot_view(w->store, (const uint8_t *const *)view, NULL, &len);
    Remora__V1__Snapshot *snap = remora__v1__snapshot__unpack(NULL, len, bytes);
    FUZZ_CHECK(snap != NULL, "the view's encoding unpacks");
    FUZZ_CHECK(snapshot_count(snap) == count, "the view's encoding holds the view");
    remora__v1__snapshot__free_unpacked(snap, NULL);
    free(bytes);
}

static void
scope(const world_t *w, const char *ns, const char *sa)
{
    const rm_resource_t *policy = rm_scope_policy(w->store, ns, sa);
    check_policy_choice(w, policy, ns, sa);
    if (policy == NULL)
        return;
    uint8_t *view[RM_KIND__ALL], *again[RM_KIND__ALL];
    size_t n = rm_scope_view_discovered(w->store, policy, sa, w->discovered, w->num_discovered, view);
    if (getenv("FUZZ_SCOPE_TRACE") != NULL)
        fprintf(stderr, "fuzz_scope: %s/%s under egresspolicy/%s: %zu resources, %zu discovered\n", ns, sa != NULL ? sa : "-",
                policy->name, n, w->num_discovered);
    check_view(w, policy, sa, view, n);
    size_t n2 = rm_scope_view_discovered(w->store, policy, sa, w->discovered, w->num_discovered, again);
    FUZZ_CHECK(n2 == n, "idempotent: the same count");
    for (int k = 0; k != RM_KIND__ALL; ++k) {
        FUZZ_CHECK(memcmp(view[k], again[k], w->len[k]) == 0, "idempotent: the same view");
        free(again[k]);
    }
    /* without the discovered set: the view of the policy alone, inside the other */
    size_t n3 = rm_scope_view(w->store, policy, sa, again);
    FUZZ_CHECK(n3 <= n, "the discovered set only adds");
    for (int k = 0; k != RM_KIND__ALL; ++k) {
        for (size_t i = 0; i != w->len[k]; ++i)
            FUZZ_CHECK(!again[k][i] || view[k][i], "the discovered set only adds");
        if (w->num_discovered == 0)
            FUZZ_CHECK(memcmp(view[k], again[k], w->len[k]) == 0, "an empty discovered set changes nothing");
        free(view[k]);
        free(again[k]);
    }
}

/* Whether `host` (any case) is one of the authorities of the Service (ns, name). */
static int
is_authority(const char *host, const char *ns, const char *name)
{
    char forms[4][MAX_HOST + 64];
    snprintf(forms[0], sizeof(forms[0]), "%s.%s", name, ns);
    snprintf(forms[1], sizeof(forms[1]), "%s.%s.svc", name, ns);
    snprintf(forms[2], sizeof(forms[2]), "%s.%s.svc.cluster.local", name, ns);
    snprintf(forms[3], sizeof(forms[3]), "%s", strcmp(ns, "default") == 0 ? name : "");
    for (int i = 0; i != 4; ++i)
        if (forms[i][0] != '\0' && strcasecmp(host, forms[i]) == 0)
            return 1;
    return 0;
}

static void
check_resolve(const world_t *w)
{
    /* every authority of every stored Service (the first 64) resolves to it */
    for (size_t i = 0; i != w->len[RM_KIND_SERVICE] && i != 64; ++i) {
        const rm_resource_t *svc = w->lists[RM_KIND_SERVICE][i];
        char host[MAX_HOST + 64];
        static const char *const suffixes[] = {"", ".svc", ".svc.cluster.local"};
        for (size_t f = 0; f != 3; ++f) {
            snprintf(host, sizeof(host), "%s.%s%s", svc->name, svc->ns, suffixes[f]);
            if (strlen(host) <= MAX_HOST)
                FUZZ_CHECK(rm_scope_resolve(w->store, host) == svc, "a Service's authority resolves to it");
        }
        if (strcmp(svc->ns, "default") == 0)
            FUZZ_CHECK(rm_scope_resolve(w->store, svc->name) == svc, "a plain name resolves in namespace default");
    }
}

/* The discovered set: the "#discover HOST" lines of the input. `names` keeps the strings the set points at. */
static void
discover(world_t *w, const uint8_t *data, size_t size, char names[][2][MAX_HOST + 1])
{
    static const char tag[] = "#discover ";
    const char *p = (const char *)data, *end = p + size;
    while (p < end && w->num_discovered != MAX_DISCOVER) {
        const char *nl = memchr(p, '\n', (size_t)(end - p)), *eol = nl != NULL ? nl : end;
        size_t len = (size_t)(eol - p);
        if (len > sizeof(tag) - 1 && memcmp(p, tag, sizeof(tag) - 1) == 0 && len - (sizeof(tag) - 1) <= MAX_HOST &&
            memchr(p, '\0', len) == NULL) {
            char host[MAX_HOST + 1];
            memcpy(host, p + sizeof(tag) - 1, len - (sizeof(tag) - 1));
            host[len - (sizeof(tag) - 1)] = '\0';
            char(*slot)[MAX_HOST + 1] = names[w->num_discovered];
            const rm_resource_t *svc = rm_scope_resolve(w->store, host);
            if (svc != NULL) {
                FUZZ_CHECK(is_authority(host, svc->ns, svc->name), "a Service resolved has the host among its authorities");
                snprintf(slot[0], MAX_HOST + 1, "%s", svc->ns);
                snprintf(slot[1], MAX_HOST + 1, "%s", svc->name);
            } else {
                const char *slash = strchr(host, '/');
                if (slash == NULL) {
                    p = eol + 1;
                    continue;
                }
                snprintf(slot[0], MAX_HOST + 1, "%.*s", (int)(slash - host), host);
                snprintf(slot[1], MAX_HOST + 1, "%s", slash + 1);
            }
            w->discovered[w->num_discovered++] = (rm_scope_service_t){slot[0], slot[1]};
        }
        p = eol + 1;
    }
}

/* The store: the batch applied when it is valid, else its resources (first of each name) as its whole content. */
static rm_store_t *
make_store(rm_batch_t *batch)
{
    rm_store_t *store = rm_store_open_memory();
    if (batch->errors.size == 0) {
        rm_store_action_t *actions = calloc(batch->resources.size + 1, sizeof(*actions));
        int changed;
        char err[512];
        FUZZ_CHECK(rm_store_apply(store, batch, 0, actions, &changed, err, sizeof(err)) == 0, "the memory store applies");
        free(actions);
        return store;
    }
    rm_resource_list_t list = {NULL, 0, 0};
    for (size_t i = 0; i != batch->resources.size; ++i) {
        rm_resource_t *r = batch->resources.entries[i];
        int dup = 0;
        for (size_t j = 0; j != list.size && !dup; ++j)
            dup = list.entries[j]->kind == r->kind && strcmp(list.entries[j]->ns, r->ns) == 0 &&
                  strcmp(list.entries[j]->name, r->name) == 0;
        if (!dup) {
            rm_resource_list_push(&list, r);
            batch->resources.entries[i] = NULL;
        }
    }
    rm_store_replace(store, &list, 1);
    rm_resource_list_dispose(&list);
    return store;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rm_batch_t batch;
    rm_batch_init(&batch);
    rm_batch_parse(&batch, "fuzz.yaml", data, size);
    rm_batch_check(&batch, NULL, NULL);
    if (getenv("FUZZ_SCOPE_TRACE") != NULL)
        fprintf(stderr, "fuzz_scope: %zu resources, %zu errors (%s)\n", batch.resources.size, batch.errors.size,
                batch.errors.size == 0 ? "applied" : "replaced");
    rm_store_t *store = make_store(&batch);
    rm_batch_dispose(&batch);
    world_t w = {.store = store};
    for (int k = 0; k != RM_KIND__ALL; ++k)
        w.lists[k] = rm_store_list(store, (rm_kind_t)k, &w.len[k]);
    check_resolve(&w);
    static char names[MAX_DISCOVER][2][MAX_HOST + 1];
    discover(&w, data, size, names);
    /* the workloads: each EgressPolicy's namespace, with its targets, "default" and no ServiceAccount */
    size_t done = 0;
    for (size_t i = 0; i != w.len[RM_KIND_EGRESS_POLICY] && done < MAX_WORKLOADS; ++i) {
        const rm_resource_t *p = w.lists[RM_KIND_EGRESS_POLICY][i];
        const Remora__V1__EgressPolicySpec *spec = ((const Remora__V1__EgressPolicy *)p->msg)->spec;
        scope(&w, p->ns, NULL);
        scope(&w, p->ns, "default");
        done += 2;
        for (size_t t = 0; spec != NULL && t != spec->n_target_refs && done < MAX_WORKLOADS; ++t, ++done)
            scope(&w, p->ns, spec->target_refs[t]->name);
    }
    rm_store_close(store);
    return 0;
}
