#include <stdint.h>
#include <string.h>
#include <time.h>
#include "remora/log.h"
#include "filters/authz.h"
#include "obs/series.h"
#include "proxy/stream.h"

/* ---------------------------------------------------------------------------------------- matcher */

/* `pattern` matches s[0..len): equal, or a prefix of it when the pattern ends in '*'. */
static int
pattern_matches(const char *pattern, const char *s, size_t len)
{
    size_t plen = strlen(pattern);
    if (plen != 0 && pattern[plen - 1] == '*')
        return len >= plen - 1 && memcmp(pattern, s, plen - 1) == 0;
    return len == plen && memcmp(pattern, s, len) == 0;
}

static int
any_matches(char *const *patterns, size_t n, const char *s, size_t len)
{
    for (size_t i = 0; i != n; ++i)
        if (pattern_matches(patterns[i], s, len))
            return 1;
    return 0;
}

int
rm_authz_identity_namespace(const char *identity, const char **ns, size_t *len)
{
    if (identity == NULL || strncmp(identity, "spiffe://", 9) != 0)
        return 0;
    const char *td_end = strchr(identity + 9, '/');
    if (td_end == NULL || td_end == identity + 9 || strncmp(td_end, "/ns/", 4) != 0)
        return 0;
    const char *start = td_end + 4, *end = strchr(start, '/');
    if (end == NULL || end == start || strncmp(end, "/sa/", 4) != 0 || end[4] == '\0' || strchr(end + 4, '/') != NULL)
        return 0;
    *ns = start;
    *len = (size_t)(end - start);
    return 1;
}

static int
from_matches(const rm_config_authz_from_t *f, const rm_authz_request_t *req)
{
    if (req->identity == NULL)
        return 0;
    if (f->num_identities != 0 && any_matches(f->identities, f->num_identities, req->identity, strlen(req->identity)))
        return 1;
    const char *ns;
    size_t ns_len;
    if (f->num_namespaces != 0 && rm_authz_identity_namespace(req->identity, &ns, &ns_len)) {
        for (size_t i = 0; i != f->num_namespaces; ++i)
            if (strlen(f->namespaces[i]) == ns_len && memcmp(f->namespaces[i], ns, ns_len) == 0)
                return 1;
    }
    return 0;
}

static int
to_matches(const rm_config_authz_to_t *t, const rm_authz_request_t *req)
{
    size_t path_len = req->path_len;
    const char *q = req->path != NULL ? memchr(req->path, '?', req->path_len) : NULL;
    if (q != NULL)
        path_len = (size_t)(q - req->path);
    if (t->num_methods != 0) {
        size_t i;
        for (i = 0; i != t->num_methods; ++i)
            if (strlen(t->methods[i]) == req->method_len && memcmp(t->methods[i], req->method, req->method_len) == 0)
                break;
        if (i == t->num_methods)
            return 0;
    }
    if (t->num_paths != 0 && !any_matches(t->paths, t->num_paths, req->path, path_len))
        return 0;
    if (t->num_grpc_methods != 0) {
        /* a gRPC method is the path "/pkg.Service/Method" */
        if (!req->is_grpc || path_len < 2 || req->path[0] != '/' ||
            !any_matches(t->grpc_methods, t->num_grpc_methods, req->path + 1, path_len - 1))
            return 0;
    }
    return 1;
}

static int
rule_matches(const rm_config_authz_rule_t *r, const rm_authz_request_t *req)
{
    if (r->num_from != 0) {
        size_t i;
        for (i = 0; i != r->num_from; ++i)
            if (from_matches(&r->from[i], req))
                break;
        if (i == r->num_from)
            return 0;
    }
    if (r->num_to != 0) {
        size_t i;
        for (i = 0; i != r->num_to; ++i)
            if (to_matches(&r->to[i], req))
                break;
        if (i == r->num_to)
            return 0;
    }
    return 1;
}

int
rm_authz_policy_matches(const rm_config_authz_policy_t *policy, const rm_authz_request_t *req)
{
    for (size_t i = 0; i != policy->num_rules; ++i)
        if (rule_matches(&policy->rules[i], req))
            return 1;
    return 0;
}

/* A connection has no method or path: an ALLOW or AUDIT rule with `to` conditions matches none, a DENY rule's `to`
 * conditions are ignored (the stricter reading both ways, as Istio does for TCP). */
static int
connection_policy_matches(const rm_config_authz_policy_t *policy, const rm_authz_request_t *req)
{
    for (size_t i = 0; i != policy->num_rules; ++i) {
        const rm_config_authz_rule_t *r = &policy->rules[i];
        if (r->num_to != 0 && policy->action != RM_AUTHZ_DENY)
            continue;
        size_t j = 0;
        while (j != r->num_from && !from_matches(&r->from[j], req))
            ++j;
        if (r->num_from == 0 || j != r->num_from)
            return 1;
    }
    return 0;
}

typedef int (*policy_matcher_t)(const rm_config_authz_policy_t *policy, const rm_authz_request_t *req);

/* The decision order of authz.h, with the matcher of a request or of a connection. */
static int
evaluate(const rm_config_authz_t *authz, policy_matcher_t matches, const rm_authz_request_t *req, rm_authz_record_fn record,
         void *ctx)
{
    for (size_t i = 0; i != authz->num_policies; ++i) {
        const rm_config_authz_policy_t *p = &authz->policies[i];
        if (p->action == RM_AUTHZ_DENY && matches(p, req)) {
            if (record != NULL)
                record(ctx, p, RM_AUTHZ_DECISION_DENY);
            return 0;
        }
    }
    for (size_t i = 0; i != authz->num_policies; ++i) {
        const rm_config_authz_policy_t *p = &authz->policies[i];
        if (p->action == RM_AUTHZ_AUDIT && record != NULL)
            record(ctx, p, matches(p, req) ? RM_AUTHZ_DECISION_ALLOW : RM_AUTHZ_DECISION_AUDIT_DENY);
    }
    int has_allow = 0;
    for (size_t i = 0; i != authz->num_policies; ++i) {
        const rm_config_authz_policy_t *p = &authz->policies[i];
        if (p->action != RM_AUTHZ_ALLOW)
            continue;
        has_allow = 1;
        if (matches(p, req)) {
            if (record != NULL)
                record(ctx, p, RM_AUTHZ_DECISION_ALLOW);
            return 1;
        }
    }
    if (!has_allow)
        return 1;
    for (size_t i = 0; i != authz->num_policies && record != NULL; ++i)
        if (authz->policies[i].action == RM_AUTHZ_ALLOW)
            record(ctx, &authz->policies[i], RM_AUTHZ_DECISION_DENY);
    return 0;
}

int
rm_authz_evaluate(const rm_config_authz_t *authz, const rm_authz_request_t *req, rm_authz_record_fn record, void *ctx)
{
    return evaluate(authz, rm_authz_policy_matches, req, record, ctx);
}

int
rm_authz_evaluate_connection(const rm_config_authz_t *authz, const char *identity, rm_authz_record_fn record, void *ctx)
{
    rm_authz_request_t req = {.identity = identity};
    return evaluate(authz, connection_policy_matches, &req, record, ctx);
}

/* ------------------------------------------------------------------------------------ data path */

static rm_series_family_t *family;
static const rm_series_family_spec_t spec = {
    .name = "remora_authz_decisions_total",
    .help = "Authorization decisions by policy: allow, deny, audit_deny (what an AUDIT policy would have denied).",
    .kind = RM_SERIES_COUNTER,
    .labels = {"policy", "decision"},
    .num_labels = 2,
};
static const char *const decision_names[] = {"allow", "deny", "audit_deny"};

/* audit log lines: at most RM_AUTHZ_AUDIT_LOGS_PER_S per second per worker, the rest counted only */
static __thread uint64_t audit_window_s;
static __thread unsigned audit_lines, audit_suppressed;

void
rm_authz_register(void)
{
    family = rm_series_family_register(&spec);
}

/* 1 if an audit line may be logged now, else the line is counted as suppressed */
static int
audit_may_log(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    if ((uint64_t)ts.tv_sec != audit_window_s) {
        if (audit_suppressed != 0)
            rm_log_info("authz", "audit: %u more requests or connections an AUDIT policy would deny were not logged",
                        audit_suppressed);
        audit_window_s = (uint64_t)ts.tv_sec;
        audit_lines = 0;
        audit_suppressed = 0;
    }
    if (audit_lines == RM_AUTHZ_AUDIT_LOGS_PER_S) {
        ++audit_suppressed;
        return 0;
    }
    ++audit_lines;
    return 1;
}

static void
audit_log(rm_stream_t *s, const rm_config_authz_policy_t *p)
{
    if (!audit_may_log())
        return;
    int path_len = (int)(s->req.path.len > 256 ? 256 : s->req.path.len);
    rm_log_info("authz", "audit: policy '%s' would deny %.*s %.*s from %s (listener %s)", p->name, (int)s->req.method.len,
                s->req.method.base, path_len, s->req.path.base, s->peer_identity != NULL ? s->peer_identity : "<no identity>",
                s->listener != NULL && s->listener->name != NULL ? s->listener->name : "-");
}

void
rm_authz_count(rm_worker_t *worker, const rm_config_t *config, const rm_config_authz_policy_t *p, rm_authz_decision_t d)
{
    if (family == NULL)
        return;
    /* the name belongs to the snapshot, whose generation is never reused */
    uint64_t ident[RM_SERIES_IDENT_WORDS] = {config->generation, (uintptr_t)p->name, (uint64_t)d + 1, 0, 0};
    rm_series_t *series = rm_series_cached(worker->stats, family, ident);
    if (series == NULL) {
        const char *values[2] = {p->name, decision_names[d]};
        if ((series = rm_series_get_cached(worker->stats, family, ident, values)) == NULL)
            return;
    }
    rm_series_add(series, 1);
}

void
rm_authz_audit_connection(const rm_config_authz_policy_t *p, const char *identity, const char *peer, const char *target)
{
    if (audit_may_log())
        rm_log_info("authz", "audit: policy '%s' would deny opaque TCP from %s (%s) to %s", p->name, peer,
                    identity != NULL ? identity : "<no identity>", target);
}

static void
record(void *ctx, const rm_config_authz_policy_t *p, rm_authz_decision_t d)
{
    rm_stream_t *s = ctx;
    if (d == RM_AUTHZ_DECISION_AUDIT_DENY)
        audit_log(s, p);
    rm_authz_count(s->worker, s->config, p, d);
}

int
rm_authz_apply(rm_stream_t *s, const rm_config_authz_t *authz)
{
    rm_authz_request_t req = {
        .method = s->req.method.base,
        .method_len = s->req.method.len,
        .path = s->req.path.base,
        .path_len = s->req.path.len,
        .is_grpc = s->req.is_grpc,
        .identity = s->peer_identity,
    };
    if (rm_authz_evaluate(authz, &req, record, s))
        return 0;
    rm_stream_reply(s, RM_LOCAL_DENIED, NULL);
    return -1;
}

static rm_filter_status_t
authz_on_request_head(rm_stream_t *s, void *state)
{
    const rm_config_authz_t *authz = s->route->authz;
    if (authz == NULL)
        return RM_FILTER_CONTINUE;
    return rm_authz_apply(s, authz) == 0 ? RM_FILTER_CONTINUE : RM_FILTER_STOP;
}

const rm_filter_t rm_authz_filter = {
    .name = "authz",
    .on_request_head = authz_on_request_head,
};
