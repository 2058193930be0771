/*
 * Authorization (an AuthorizationPolicy; the bootstrap's per-route and per-cluster `authorization`):
 * who may call a target, by the caller's mTLS identity or namespace and by the request's method,
 * path or gRPC method.
 *
 * Targets: a route (this filter, on the matched route's `authz`) and a Service (the router calls
 * rm_authz_apply with the picked cluster's `authz` before the first attempt, on every listener but
 * an OUTBOUND transparent one: the Service is protected where it is served, by the inbound side of
 * the serving agent, or in explicit-listener mode by the agent that routes to it). A request must
 * pass the policies of both targets when both have some. On one target:
 *   1. DENY: a request matching a rule of a DENY policy is refused (counted `deny` on that policy);
 *   2. AUDIT: a request that matches no rule of an AUDIT policy is what the policy would deny: it is
 *      logged (at most RM_AUTHZ_AUDIT_LOGS_PER_S lines per second per worker) and counted
 *      `audit_deny`, and goes on; a matching one is counted `allow`;
 *   3. ALLOW: with at least one ALLOW policy, a request must match a rule of one of them (the first
 *      that matches counts `allow`); one that matches none is refused (counted `deny` on every ALLOW
 *      policy of the target). With none, the request is allowed: whatever MeshTLS admits.
 * A policy matches when one of its rules does (a policy without rules matches nothing). A rule
 * matches when one of its `from` entries matches the caller (none: any caller) and one of its `to`
 * entries matches the request (none: any request). `from`: the peer identity (stream->peer_identity)
 * is one of `identities`, or its namespace (the "ns" segment of spiffe://<td>/ns/<ns>/sa/<sa>) is one
 * of `namespaces`; a caller without an identity (plaintext) matches no `from` entry. `to`: each
 * non-empty list matches: `methods` (exact), `paths` (the path without its query, exact or a prefix
 * ending in '*'; compared as sent, without percent-decoding or dot-segment removal), `grpc_methods`
 * ("pkg.Service/Method", or a prefix such as "pkg.Service/" followed by a star; gRPC requests only).
 *
 * Refused: 403, or a trailers-only PERMISSION_DENIED for gRPC; local reply cause RM_LOCAL_DENIED
 * ("denied", response flag UAEX in access logs and spans). Counted per policy and decision in
 * remora_authz_decisions_total{policy,decision="allow|deny|audit_deny"} (bounded by the number of
 * policies: three series each, under limits.max_series_per_family).
 *
 * Opaque TCP connections (tcp/tcp_proxy.c, on the serving side) are decided against their Service's
 * policies in the same order by rm_authz_evaluate_connection, with the caller's SPIFFE ID alone: a
 * connection has no method or path, so an ALLOW or AUDIT rule with `to` conditions matches no
 * connection and a DENY rule's `to` conditions are ignored (the stricter reading both ways, as Istio
 * does for TCP). Their decisions go into the same family with the same labels (rm_authz_count).
 *
 * Thread: the stream's worker, except rm_authz_register (main thread, at start). The matcher
 * (rm_authz_evaluate) is pure: any thread.
 */
#ifndef remora__filters_authz_h
#define remora__filters_authz_h

#include <stddef.h>
#include "config/config.h"
#include "core/worker.h"
#include "proxy/filter.h"

#define RM_AUTHZ_AUDIT_LOGS_PER_S 10

extern const rm_filter_t rm_authz_filter;

typedef enum en_rm_authz_decision_t {
    RM_AUTHZ_DECISION_ALLOW = 0,
    RM_AUTHZ_DECISION_DENY = 1,
    RM_AUTHZ_DECISION_AUDIT_DENY = 2,
} rm_authz_decision_t;

/** What the matcher sees of a request (borrowed pointers). */
typedef struct st_rm_authz_request_t {
    const char *method;
    size_t method_len;
    /** the request path; anything from '?' on is ignored */
    const char *path;
    size_t path_len;
    /** content-type application/grpc */
    int is_grpc;
    /** the caller's SPIFFE ID (NUL-terminated), NULL for none */
    const char *identity;
} rm_authz_request_t;

/** Called for each counted decision of rm_authz_evaluate. */
typedef void (*rm_authz_record_fn)(void *ctx, const rm_config_authz_policy_t *policy, rm_authz_decision_t decision);

/** 1 if `policy` matches the request (one of its rules does), else 0. Pure. */
int rm_authz_policy_matches(const rm_config_authz_policy_t *policy, const rm_authz_request_t *req);

/**
 * Decides a request against the policies of one target (the order above). Returns 1 if allowed, 0
 * if refused; `record` (may be NULL) is told every counted decision. Pure (but for `record`).
 */
int rm_authz_evaluate(const rm_config_authz_t *authz, const rm_authz_request_t *req, rm_authz_record_fn record, void *ctx);

/**
 * Decides an opaque connection from `identity` (the caller's SPIFFE ID, NULL for plaintext) against the policies of
 * one target, in the order above with the connection matching described above. Returns 1 if allowed, 0 if refused;
 * `record` (may be NULL) is told every counted decision. Pure (but for `record`).
 */
int rm_authz_evaluate_connection(const rm_config_authz_t *authz, const char *identity, rm_authz_record_fn record, void *ctx);

/**
 * Counts one decision in remora_authz_decisions_total on `worker`'s stats; `policy` belongs to `config` (the
 * snapshot the decision was taken with). The worker's thread.
 */
void rm_authz_count(rm_worker_t *worker, const rm_config_t *config, const rm_config_authz_policy_t *policy,
                    rm_authz_decision_t decision);

/**
 * Logs an opaque connection an AUDIT policy would deny (`peer` the caller's address, `target` where it goes), within
 * the RM_AUTHZ_AUDIT_LOGS_PER_S lines per second per worker that requests share. The worker's thread.
 */
void rm_authz_audit_connection(const rm_config_authz_policy_t *policy, const char *identity, const char *peer, const char *target);

/**
 * The namespace of a SPIFFE ID "spiffe://<td>/ns/<ns>/sa/<sa>": sets *ns / *len and returns 1, or
 * returns 0 when `identity` is not of that shape.
 */
int rm_authz_identity_namespace(const char *identity, const char **ns, size_t *len);

/** Registers the decision counters. Main thread, before workers start. */
void rm_authz_register(void);

/**
 * Decides the stream's request against `authz` (a route's or cluster's, in s->config). Returns 0 if
 * allowed; -1 if refused, the stream having been answered locally (the caller stops).
 */
int rm_authz_apply(rm_stream_t *s, const rm_config_authz_t *authz);

#endif
