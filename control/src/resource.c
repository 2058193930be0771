#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "remora/strutil.h"
#include "remora/v1/policy.pb-c.h"
#include "remora/v1/route.pb-c.h"
#include "remora/v1/service.pb-c.h"
#include "resource.h"

static const struct {
    const char *name, *lower, *field;
    const char *aliases[4];
} kinds[RM_KIND__ALL] = {
    [RM_KIND_SERVICE] = {"Service", "service", "services", {"service", "services", "svc", NULL}},
    [RM_KIND_HTTP_ROUTE] = {"HTTPRoute", "httproute", "http_routes", {"httproute", "httproutes", NULL}},
    [RM_KIND_GRPC_ROUTE] = {"GRPCRoute", "grpcroute", "grpc_routes", {"grpcroute", "grpcroutes", NULL}},
    [RM_KIND_FAULT_INJECTION] = {"FaultInjection",
                                 "faultinjection",
                                 "fault_injections",
                                 {"faultinjection", "faultinjections", NULL}},
    [RM_KIND_BACKEND_TRAFFIC_POLICY] = {"BackendTrafficPolicy",
                                        "backendtrafficpolicy",
                                        "backend_traffic_policies",
                                        {"backendtrafficpolicy", "backendtrafficpolicies", "btp", NULL}},
    [RM_KIND_RATE_LIMIT_POLICY] = {"RateLimitPolicy",
                                   "ratelimitpolicy",
                                   "rate_limit_policies",
                                   {"ratelimitpolicy", "ratelimitpolicies", "rlp", NULL}},
    [RM_KIND_TELEMETRY] = {"Telemetry", "telemetry", "telemetries", {"telemetry", "telemetries", NULL}},
    [RM_KIND_AUTHORIZATION_POLICY] = {"AuthorizationPolicy",
                                      "authorizationpolicy",
                                      "authorization_policies",
                                      {"authorizationpolicy", "authorizationpolicies", "authz", NULL}},
    [RM_KIND_MESH_TLS] = {"MeshTLS", "meshtls", "mesh_tls", {"meshtls", "meshtlses", NULL}},
    [RM_KIND_EGRESS_POLICY] = {"EgressPolicy",
                               "egresspolicy",
                               "egress_policies",
                               {"egresspolicy", "egresspolicies", "egress", NULL}},
};

int
rm_kind_parse(const char *s, rm_kind_t *kind)
{
    for (int k = 0; k != RM_KIND__ALL; ++k) {
        for (const char *const *a = kinds[k].aliases; *a != NULL; ++a) {
            if (strcasecmp(s, *a) == 0) {
                *kind = (rm_kind_t)k;
                return 0;
            }
        }
    }
    return -1;
}

const char *
rm_kind_name(rm_kind_t kind)
{
    return kinds[kind].name;
}

const char *
rm_kind_lower(rm_kind_t kind)
{
    return kinds[kind].lower;
}

const char *
rm_kind_list(void)
{
    return "Service (services, svc), HTTPRoute (httproutes), GRPCRoute (grpcroutes), FaultInjection (faultinjections), "
           "BackendTrafficPolicy (backendtrafficpolicies, btp), RateLimitPolicy (ratelimitpolicies, rlp), Telemetry (telemetries), "
           "AuthorizationPolicy (authorizationpolicies, authz), MeshTLS (meshtls), EgressPolicy (egresspolicies, egress)";
}

const char *
rm_kind_field(rm_kind_t kind)
{
    return kinds[kind].field;
}

const ProtobufCMessageDescriptor *
rm_kind_descriptor(rm_kind_t kind)
{
    switch (kind) {
    case RM_KIND_SERVICE:
        return &remora__v1__service__descriptor;
    case RM_KIND_HTTP_ROUTE:
        return &remora__v1__httproute__descriptor;
    case RM_KIND_GRPC_ROUTE:
        return &remora__v1__grpcroute__descriptor;
    case RM_KIND_FAULT_INJECTION:
        return &remora__v1__fault_injection__descriptor;
    case RM_KIND_BACKEND_TRAFFIC_POLICY:
        return &remora__v1__backend_traffic_policy__descriptor;
    case RM_KIND_RATE_LIMIT_POLICY:
        return &remora__v1__rate_limit_policy__descriptor;
    case RM_KIND_TELEMETRY:
        return &remora__v1__telemetry__descriptor;
    case RM_KIND_AUTHORIZATION_POLICY:
        return &remora__v1__authorization_policy__descriptor;
    case RM_KIND_MESH_TLS:
        return &remora__v1__mesh_tls__descriptor;
    case RM_KIND_EGRESS_POLICY:
        return &remora__v1__egress_policy__descriptor;
    default:
        break;
    }
    return NULL;
}

Remora__V1__ResourceKind
rm_kind_to_proto(rm_kind_t kind)
{
    switch (kind) {
    case RM_KIND_SERVICE:
        return REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_SERVICE;
    case RM_KIND_HTTP_ROUTE:
        return REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_HTTP_ROUTE;
    case RM_KIND_GRPC_ROUTE:
        return REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_GRPC_ROUTE;
    case RM_KIND_FAULT_INJECTION:
        return REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_FAULT_INJECTION;
    case RM_KIND_BACKEND_TRAFFIC_POLICY:
        return REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_BACKEND_TRAFFIC_POLICY;
    case RM_KIND_RATE_LIMIT_POLICY:
        return REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_RATE_LIMIT_POLICY;
    case RM_KIND_TELEMETRY:
        return REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_TELEMETRY;
    case RM_KIND_AUTHORIZATION_POLICY:
        return REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_AUTHORIZATION_POLICY;
    case RM_KIND_MESH_TLS:
        return REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_MESH_TLS;
    case RM_KIND_EGRESS_POLICY:
        return REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_EGRESS_POLICY;
    default:
        break;
    }
    return REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_UNSPECIFIED;
}

int
rm_kind_from_proto(Remora__V1__ResourceKind pk, rm_kind_t *kind)
{
    switch (pk) {
    case REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_SERVICE:
        *kind = RM_KIND_SERVICE;
        return 0;
    case REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_HTTP_ROUTE:
        *kind = RM_KIND_HTTP_ROUTE;
        return 0;
    case REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_GRPC_ROUTE:
        *kind = RM_KIND_GRPC_ROUTE;
        return 0;
    case REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_FAULT_INJECTION:
        *kind = RM_KIND_FAULT_INJECTION;
        return 0;
    case REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_BACKEND_TRAFFIC_POLICY:
        *kind = RM_KIND_BACKEND_TRAFFIC_POLICY;
        return 0;
    case REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_RATE_LIMIT_POLICY:
        *kind = RM_KIND_RATE_LIMIT_POLICY;
        return 0;
    case REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_TELEMETRY:
        *kind = RM_KIND_TELEMETRY;
        return 0;
    case REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_AUTHORIZATION_POLICY:
        *kind = RM_KIND_AUTHORIZATION_POLICY;
        return 0;
    case REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_MESH_TLS:
        *kind = RM_KIND_MESH_TLS;
        return 0;
    case REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_EGRESS_POLICY:
        *kind = RM_KIND_EGRESS_POLICY;
        return 0;
    default:
        break;
    }
    return -1;
}

const Remora__V1__ObjectMeta *
rm_resource_meta(rm_kind_t kind, const ProtobufCMessage *msg)
{
    switch (kind) {
    case RM_KIND_SERVICE:
        return ((const Remora__V1__Service *)msg)->metadata;
    case RM_KIND_HTTP_ROUTE:
        return ((const Remora__V1__HTTPRoute *)msg)->metadata;
    case RM_KIND_GRPC_ROUTE:
        return ((const Remora__V1__GRPCRoute *)msg)->metadata;
    case RM_KIND_FAULT_INJECTION:
        return ((const Remora__V1__FaultInjection *)msg)->metadata;
    case RM_KIND_BACKEND_TRAFFIC_POLICY:
        return ((const Remora__V1__BackendTrafficPolicy *)msg)->metadata;
    case RM_KIND_RATE_LIMIT_POLICY:
        return ((const Remora__V1__RateLimitPolicy *)msg)->metadata;
    case RM_KIND_TELEMETRY:
        return ((const Remora__V1__Telemetry *)msg)->metadata;
    case RM_KIND_AUTHORIZATION_POLICY:
        return ((const Remora__V1__AuthorizationPolicy *)msg)->metadata;
    case RM_KIND_MESH_TLS:
        return ((const Remora__V1__MeshTLS *)msg)->metadata;
    case RM_KIND_EGRESS_POLICY:
        return ((const Remora__V1__EgressPolicy *)msg)->metadata;
    default:
        break;
    }
    return NULL;
}

rm_resource_t *
rm_resource_create(rm_kind_t kind, const void *bytes, size_t len)
{
    ProtobufCMessage *msg = protobuf_c_message_unpack(rm_kind_descriptor(kind), NULL, len, bytes);
    if (msg == NULL)
        return NULL;
    const Remora__V1__ObjectMeta *meta = rm_resource_meta(kind, msg);
    if (meta == NULL || meta->name[0] == '\0' || meta->namespace_[0] == '\0') {
        protobuf_c_message_free_unpacked(msg, NULL);
        return NULL;
    }
    rm_resource_t *r = rm_calloc(1, sizeof(*r));
    r->kind = kind;
    r->msg = msg;
    r->ns = meta->namespace_;
    r->name = meta->name;
    r->bytes = rm_malloc(len);
    memcpy(r->bytes, bytes, len);
    r->len = len;
    return r;
}

void
rm_resource_destroy(rm_resource_t *r)
{
    if (r == NULL)
        return;
    protobuf_c_message_free_unpacked(r->msg, NULL);
    free(r->bytes);
    free(r->file);
    free(r);
}

int
rm_resource_cmp(const void *a, const void *b)
{
    const rm_resource_t *x = *(rm_resource_t *const *)a, *y = *(rm_resource_t *const *)b;
    if (x->kind != y->kind)
        return x->kind < y->kind ? -1 : 1;
    int c = strcmp(x->ns, y->ns);
    return c != 0 ? c : strcmp(x->name, y->name);
}

void
rm_doc_errors_add(rm_doc_errors_t *errs, const char *file, unsigned line, const char *fmt, ...)
{
    if (errs->size > RM_DOC_ERRORS_MAX)
        return;
    errs->entries = rm_realloc(errs->entries, (errs->size + 1) * sizeof(errs->entries[0]));
    rm_doc_error_t *e = &errs->entries[errs->size++];
    e->file = rm_strdup(file);
    if (errs->size > RM_DOC_ERRORS_MAX) {
        e->line = 0;
        e->message = rm_strdup("too many errors; stopped reporting here");
        return;
    }
    e->line = line;
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    e->message = rm_strdup(buf);
}

void
rm_doc_errors_dispose(rm_doc_errors_t *errs)
{
    for (size_t i = 0; i != errs->size; ++i) {
        free(errs->entries[i].file);
        free(errs->entries[i].message);
    }
    free(errs->entries);
    errs->entries = NULL;
    errs->size = 0;
}

void
rm_resource_list_push(rm_resource_list_t *list, rm_resource_t *r)
{
    if (list->size == list->capacity) {
        list->capacity = list->capacity != 0 ? list->capacity * 2 : 8;
        list->entries = rm_realloc(list->entries, list->capacity * sizeof(list->entries[0]));
    }
    list->entries[list->size++] = r;
}

void
rm_resource_list_dispose(rm_resource_list_t *list)
{
    for (size_t i = 0; i != list->size; ++i)
        rm_resource_destroy(list->entries[i]);
    free(list->entries);
    list->entries = NULL;
    list->size = list->capacity = 0;
}

void
rm_route_filter_refs(const void *filter, int grpc, const Remora__V1__HTTPRequestMirrorFilter **mirror,
                     const Remora__V1__LocalObjectReference **ext)
{
    *mirror = NULL;
    *ext = NULL;
    if (grpc) {
        const Remora__V1__GRPCRouteFilter *f = filter;
        if (f->filter_case == REMORA__V1__GRPCROUTE_FILTER__FILTER_REQUEST_MIRROR)
            *mirror = f->request_mirror;
        else if (f->filter_case == REMORA__V1__GRPCROUTE_FILTER__FILTER_EXTENSION_REF)
            *ext = f->extension_ref;
    } else {
        const Remora__V1__HTTPRouteFilter *f = filter;
        if (f->filter_case == REMORA__V1__HTTPROUTE_FILTER__FILTER_REQUEST_MIRROR)
            *mirror = f->request_mirror;
        else if (f->filter_case == REMORA__V1__HTTPROUTE_FILTER__FILTER_EXTENSION_REF)
            *ext = f->extension_ref;
    }
}

int
rm_route_refs(const rm_resource_t *route, size_t *n_parents, Remora__V1__ParentReference ***parents, size_t *n_rules, void ***rules)
{
    if (route->kind == RM_KIND_GRPC_ROUTE) {
        const Remora__V1__GRPCRouteSpec *spec = ((const Remora__V1__GRPCRoute *)route->msg)->spec;
        if (spec == NULL)
            return 0;
        *n_parents = spec->n_parent_refs, *parents = spec->parent_refs, *n_rules = spec->n_rules, *rules = (void **)spec->rules;
    } else {
        const Remora__V1__HTTPRouteSpec *spec = ((const Remora__V1__HTTPRoute *)route->msg)->spec;
        if (spec == NULL)
            return 0;
        *n_parents = spec->n_parent_refs, *parents = spec->parent_refs, *n_rules = spec->n_rules, *rules = (void **)spec->rules;
    }
    return 1;
}

void
rm_route_rule_refs(const void *rule, int grpc, size_t *n_backends, Remora__V1__BackendReference ***backends, size_t *n_filters,
                   void ***filters)
{
    if (grpc) {
        const Remora__V1__GRPCRouteRule *r = rule;
        *n_backends = r->n_backend_refs, *backends = r->backend_refs, *n_filters = r->n_filters, *filters = (void **)r->filters;
    } else {
        const Remora__V1__HTTPRouteRule *r = rule;
        *n_backends = r->n_backend_refs, *backends = r->backend_refs, *n_filters = r->n_filters, *filters = (void **)r->filters;
    }
}
