/*
 * Scoping (docs/control-plane.md, "Scoping"): which resources of the store the agent of a workload
 * receives. An EgressPolicy of the workload's namespace that targets its ServiceAccount (else one without
 * targetRefs) names, as Istio's Sidecar egress hosts do, the Services the workload calls; its agent then
 * receives those Services, the routes whose parents they are, what those routes refer to (backends,
 * mirrors, FaultInjections, their other parents), the policies attached to any of these (and their other
 * targets), the Services the workload itself serves (its namespace and ServiceAccount), and every
 * Telemetry and MeshTLS. A workload no EgressPolicy applies to receives everything.
 *
 * Plain functions over the store, on the thread that owns it. Errors: none (OOM aborts).
 */
#ifndef remora_control__scope_h
#define remora_control__scope_h

#include <stddef.h>
#include <stdint.h>
#include "store.h"

/** The EgressPolicy that applies to the workload (ns, sa): owned by the store, valid until its next change; NULL: none. */
const rm_resource_t *rm_scope_policy(const rm_store_t *store, const char *ns, const char *sa);

/**
 * A Service of a scope's discovered set (on-demand discovery, docs/control-plane.md "On-demand discovery"): one an
 * agent of the scope asked for by name beyond the policy's hosts. Strings owned by whoever holds the set.
 */
typedef struct st_rm_scope_service_t {
    char *ns, *name;
} rm_scope_service_t;

/**
 * Fills `view` (RM_KIND__ALL arrays, malloc'ed here, each as long as rm_store_list(kind); the caller frees
 * them) with the resources the workload (policy's namespace, `sa`) under `policy` receives (store.h, "Views").
 * Returns how many resources the view holds.
 */
size_t rm_scope_view(const rm_store_t *store, const rm_resource_t *policy, const char *sa, uint8_t *view[]);
/**
 * The same for a scope with a discovered set: the Services the policy's hosts name and the `num_discovered`
 * Services of `discovered` (borrowed; one that is not stored is skipped) enter the view alike, with everything
 * they bring.
 */
size_t rm_scope_view_discovered(const rm_store_t *store, const rm_resource_t *policy, const char *sa,
                                const rm_scope_service_t *discovered, size_t num_discovered, uint8_t *view[]);

/**
 * The Service a request's host names, as the agent's translation gives a Service its authorities
 * (agent/src/config/translate.c): "NAME.NS", "NAME.NS.svc", "NAME.NS.svc.cluster.local", and plain "NAME" for
 * namespace "default". `host` as the agent sends it in a Discover: lowercase, without a port (an upper-case
 * letter is folded and a trailing dot dropped; a port, or anything longer than 253 bytes, names nothing). Owned by the store, valid
 * until its next change; NULL: no such Service.
 */
const rm_resource_t *rm_scope_resolve(const rm_store_t *store, const char *host);

/** Whether a host of an EgressPolicy ("NS/NAME", "./NAME", "* /NAME", "NS/ *") names the Service (ns, name); policy_ns for ".". */
int rm_scope_host_matches(const char *host, const char *policy_ns, const char *ns, const char *name);

#endif
