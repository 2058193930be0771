/*
 * Resources as the control plane holds them: the kind, the identity (namespace, name) and the
 * protobuf encoding that is stored and sent to agents, plus the unpacked message for the checks
 * that need to look inside (references between resources).
 *
 * Plain data, no threads: a resource is owned by exactly one container at a time (an apply batch,
 * then the store). Functions abort on OOM and report nothing else.
 */
#ifndef remora_control__resource_h
#define remora_control__resource_h

#include <stddef.h>
#include <stdint.h>
#include <protobuf-c/protobuf-c.h>
#include "remora/v1/meta.pb-c.h"

/* Also the order of kinds in snapshots, listings and tables. */
typedef enum en_rm_kind_t {
    RM_KIND_SERVICE = 0,
    RM_KIND_HTTP_ROUTE,
    RM_KIND_GRPC_ROUTE,
    RM_KIND_FAULT_INJECTION,
    RM_KIND_BACKEND_TRAFFIC_POLICY,
    RM_KIND_RATE_LIMIT_POLICY,
    RM_KIND_TELEMETRY,
    RM_KIND_AUTHORIZATION_POLICY,
    RM_KIND_MESH_TLS,
    RM_KIND_EGRESS_POLICY,
    /* the number of kinds: the store, documents, the Admin API, the custom resources of --kubernetes, remoractl get */
    RM_KIND__ALL
} rm_kind_t;

/**
 * Resolves a kind as kubectl does: case-insensitive, singular or plural, or a short name ("svc").
 * Returns 0, or -1 when `s` names no kind.
 */
int rm_kind_parse(const char *s, rm_kind_t *kind);
/** "Service", "HTTPRoute", "GRPCRoute", "FaultInjection", "BackendTrafficPolicy", "RateLimitPolicy": the `kind:` of a document. */
const char *rm_kind_name(rm_kind_t kind);
/** "service", "httproute", "grpcroute", "faultinjection", "backendtrafficpolicy": used in "service/echo" messages. */
const char *rm_kind_lower(rm_kind_t kind);
/** The kinds a user may type, for error messages ("Service (services, svc), HTTPRoute (httproutes), ..."). */
const char *rm_kind_list(void);
/**
 * The repeated field of remora.v1.Snapshot and remora.v1.GetResponse that holds the kind's resources
 * ("services", "http_routes", "grpc_routes", "fault_injections", "backend_traffic_policies").
 */
const char *rm_kind_field(rm_kind_t kind);
/** The protobuf descriptor of the kind's resource message (Remora__V1__Service, ...). */
const ProtobufCMessageDescriptor *rm_kind_descriptor(rm_kind_t kind);
/** Conversions to and from Remora__V1__ResourceKind. From returns -1 for UNSPECIFIED or unknown values. */
Remora__V1__ResourceKind rm_kind_to_proto(rm_kind_t kind);
int rm_kind_from_proto(Remora__V1__ResourceKind pk, rm_kind_t *kind);

typedef struct st_rm_resource_t {
    rm_kind_t kind;
    /** Point into `msg` (its metadata). */
    const char *ns, *name;
    /** The resource message (Remora__V1__Service *, ...), unpacked with protobuf-c's default allocator. */
    ProtobufCMessage *msg;
    /** Its encoding; what the store persists and agents receive. */
    uint8_t *bytes;
    size_t len;
    /** Where a resource from a document was defined (NULL / 0 for resources loaded from the store). */
    char *file;
    unsigned line;
} rm_resource_t;

/**
 * Creates a resource from its encoding (copied). Returns NULL when the bytes are not a valid
 * message of the kind or lack metadata.name / metadata.namespace (corrupt input, not fatal).
 */
rm_resource_t *rm_resource_create(rm_kind_t kind, const void *bytes, size_t len);
void rm_resource_destroy(rm_resource_t *r);
/** The metadata of a resource message of any kind. */
const Remora__V1__ObjectMeta *rm_resource_meta(rm_kind_t kind, const ProtobufCMessage *msg);
/** Orders resources by kind, namespace, name (for qsort over rm_resource_t *). */
int rm_resource_cmp(const void *a, const void *b);

/** One error in a document: "FILE:LINE: message". */
typedef struct st_rm_doc_error_t {
    char *file;
    unsigned line;
    char *message;
} rm_doc_error_t;

typedef struct st_rm_doc_errors_t {
    rm_doc_error_t *entries;
    size_t size;
} rm_doc_errors_t;

/** Appends an error (strings copied). At most RM_DOC_ERRORS_MAX are kept; later ones are counted in one last entry. */
void rm_doc_errors_add(rm_doc_errors_t *errs, const char *file, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void rm_doc_errors_dispose(rm_doc_errors_t *errs);
#define RM_DOC_ERRORS_MAX 100

/** A growable list of owned resources (entries may be set to NULL when moved elsewhere). */
typedef struct st_rm_resource_list_t {
    rm_resource_t **entries;
    size_t size, capacity;
} rm_resource_list_t;

void rm_resource_list_push(rm_resource_list_t *list, rm_resource_t *r);
/** Destroys every remaining entry and frees the list. */
void rm_resource_list_dispose(rm_resource_list_t *list);

struct Remora__V1__ParentReference;
struct Remora__V1__BackendReference;
/**
 * The parents and rules of an HTTPRoute or GRPCRoute resource (`rules` are HTTPRouteRule or GRPCRouteRule pointers, as
 * the route's kind says). Returns 0 when the route has no spec.
 */
int rm_route_refs(const rm_resource_t *route, size_t *n_parents, struct Remora__V1__ParentReference ***parents, size_t *n_rules,
                  void ***rules);
/** The backends and filters of one rule of rm_route_refs (`grpc`: a GRPCRouteRule, else an HTTPRouteRule). */
void rm_route_rule_refs(const void *rule, int grpc, size_t *n_backends, struct Remora__V1__BackendReference ***backends,
                        size_t *n_filters, void ***filters);
struct Remora__V1__HTTPRequestMirrorFilter;
struct Remora__V1__LocalObjectReference;
/**
 * What a route rule's filter refers to: a RequestMirror's filter (`*mirror`) or an ExtensionRef (`*ext`, a
 * FaultInjection in the route's namespace); NULL for what it is not. `grpc`: `filter` is a GRPCRouteFilter, else an
 * HTTPRouteFilter.
 */
void rm_route_filter_refs(const void *filter, int grpc, const struct Remora__V1__HTTPRequestMirrorFilter **mirror,
                          const struct Remora__V1__LocalObjectReference **ext);

#endif
