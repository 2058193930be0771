/*
 * Control-plane snapshots (remora.v1.Snapshot) -> the agent's runtime config snapshot.
 *
 * The translation produces the same immutable rm_config_t the bootstrap file does; protobuf types
 * never leave translate.c and control_client.c (the header takes serialized bytes).
 *
 * Mapping, per Service `name` in namespace `ns`:
 *   - a cluster "name.ns" with the service's endpoints (IP literals, or DNS names resolved by
 *     c-ares) speaking HTTP/2 (protocol grpc or http2), HTTP/1.1 (http1) or opaque TCP (tcp), its
 *     virtual `addresses` (the original destinations that mean it on transparent listeners,
 *     docs/transparent.md), with the settings of the
 *     BackendTrafficPolicy that targets it (retryConstraint -> budget_*, min_retry_*; connectionPool
 *     -> connect_timeout_ms, pool_idle_timeout_ms, stream_idle_timeout_ms). When several target one
 *     Service, the first by namespace and name wins there (GEP-713's tie-break);
 *   - on every listener of the base config, routes answering the authorities "name.ns",
 *     "name.ns.svc", "name.ns.svc.cluster.local" (and plain "name" for namespace "default"), with or
 *     without a port: first the rules of every HTTPRoute and GRPCRoute whose parentRefs name the
 *     service (in the snapshot's order; a rule without matches matches everything), each match one
 *     route with its weighted backendRefs, then a catch-all route to the service itself. Per rule:
 *     path exact / prefix / regex (RM_PATH_MATCH_REGEX), header exact / regex (is_regex); GRPCRoute
 *     methods as an exact path, a prefix ("/svc/"), or a regex ("/(?:svc)/(?:method)", "[^/]+" for
 *     an empty part); timeouts.request -> timeout_ms, timeouts.backendRequest -> per_try_timeout_ms;
 *     retry -> rm_config_retry_t (defaults left to rm_config_validate); filters -> request_headers /
 *     response_headers, mirrors (cluster "svc.ns", per_million), redirect, url_rewrite, and an
 *     ExtensionRef's FaultInjection -> fault.
 * An authority no service answers gets no route: 404, or for gRPC a trailers-only UNIMPLEMENTED.
 * What the agent cannot apply is refused (the snapshot is NACKed with the reason): references to
 * resources the snapshot lacks, a mirror with a port override, values out of range, and policy
 * fields this agent does not know (a newer control plane's).
 *
 * Inbound Service listeners (docs/transparent.md) are built only for the endpoints at this agent's own
 * addresses (rm_config_learn_local_addresses, read once per translation when `base` has an INBOUND listener).
 *
 * Thread: any; a function of its inputs and of the addresses of the calling thread's network namespace.
 */
#ifndef remora__translate_h
#define remora__translate_h

#include <stddef.h>
#include <stdint.h>
#include "config/config.h"

/**
 * Builds a snapshot from the serialized remora.v1.Snapshot in `bytes`: listeners, workers, admin,
 * health, limits and DNS servers come from `base` (copied), routes and clusters from the snapshot.
 * Returns a validated snapshot (refcount 1) with `version` set to the control plane's version, or
 * NULL with a reason in `err` (which names the resource at fault).
 */
rm_config_t *rm_translate_snapshot(const uint8_t *bytes, size_t len, const rm_config_t *base, char *err, size_t errlen);

/** The version field of a serialized snapshot, or 0 if it does not parse. */
uint64_t rm_translate_snapshot_version(const uint8_t *bytes, size_t len);

#endif
