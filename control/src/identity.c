/*
 * The control plane's identity service (see identity.h).
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <openssl/crypto.h>
#include "remora/log.h"
#include "remora/rpc.h"
#include "remora/strutil.h"
#include "cp_metrics.h"
#include "identity.h"

#define LOG "identity"
#define MAX_CSR_BYTES 4096

enum { R_UNKNOWN_TOKEN, R_EXPIRED_TOKEN, R_TOKEN_IN_USE, R_BAD_CSR, R_INTERNAL, R__COUNT };
static const char *const reason_names[R__COUNT] = {"unknown_token", "expired_token", "token_in_use", "bad_csr", "internal"};
/* the metrics' reasons are these, in this order (remora_control_certify_refusals_total) */
_Static_assert((int)R__COUNT == (int)RM_CP_CERTIFY__COUNT && (int)R_UNKNOWN_TOKEN == (int)RM_CP_CERTIFY_UNKNOWN_TOKEN &&
                   (int)R_EXPIRED_TOKEN == (int)RM_CP_CERTIFY_EXPIRED_TOKEN &&
                   (int)R_TOKEN_IN_USE == (int)RM_CP_CERTIFY_TOKEN_IN_USE && (int)R_BAD_CSR == (int)RM_CP_CERTIFY_BAD_CSR &&
                   (int)R_INTERNAL == (int)RM_CP_CERTIFY_INTERNAL,
               "identity.c's refusal reasons and cp_metrics.h's differ");

/* callers whose refusal was logged, at most this many */
#define MAX_LOGGED_CALLERS 4096

static const char *const api_names[RM_AUTH_API__COUNT] = {"admin", "discovery", "identity"};

struct st_rm_identity_service_t {
    rm_ca_t *ca;
    rm_tokens_t *tokens;
    uint64_t issued;
    uint64_t refused[R__COUNT];
    char admin_token[RM_ADMIN_TOKEN_LEN + 1];
    /* [api][0]: UNAUTHENTICATED, [api][1]: PERMISSION_DENIED */
    uint64_t auth_refused[RM_AUTH_API__COUNT][2];
    char **logged;
    size_t num_logged;
    int64_t server_cert_not_after;
    uint64_t server_cert_issued;
};

rm_identity_service_t *
rm_identity_service_create(rm_ca_t *ca, rm_tokens_t *tokens)
{
    rm_identity_service_t *svc = rm_calloc(1, sizeof(*svc));
    svc->ca = ca;
    svc->tokens = tokens;
    rm_cp_metrics_cert(RM_CP_CERT_ISSUER, rm_ca_issuer_not_after(ca));
    return svc;
}

void
rm_identity_service_destroy(rm_identity_service_t *svc)
{
    for (size_t i = 0; i != svc->num_logged; ++i)
        free(svc->logged[i]);
    free(svc->logged);
    OPENSSL_cleanse(svc->admin_token, sizeof(svc->admin_token));
    free(svc);
}

rm_ca_t *
rm_identity_ca(rm_identity_service_t *svc)
{
    return svc->ca;
}

void
rm_identity_set_admin_token(rm_identity_service_t *svc, const char *token)
{
    snprintf(svc->admin_token, sizeof(svc->admin_token), "%s", token);
}

void
rm_identity_server_cert_issued(rm_identity_service_t *svc, int64_t not_after)
{
    svc->server_cert_not_after = not_after;
    ++svc->server_cert_issued;
    rm_cp_metrics_cert(RM_CP_CERT_SERVER, not_after);
}

void
rm_identity_auth_refused(rm_identity_service_t *svc, rm_auth_api_t api, grpc_status_code code, const char *who, const char *why)
{
    int denied = code == GRPC_STATUS_PERMISSION_DENIED;
    ++svc->auth_refused[api][denied];
    rm_cp_metrics_auth_refused((int)api, denied);
    char key[400];
    snprintf(key, sizeof(key), "%s %d %.300s", api_names[api], denied, who);
    for (size_t i = 0; i != svc->num_logged; ++i)
        if (strcmp(svc->logged[i], key) == 0)
            return;
    if (svc->num_logged == MAX_LOGGED_CALLERS)
        return;
    svc->logged = rm_realloc(svc->logged, (svc->num_logged + 1) * sizeof(svc->logged[0]));
    svc->logged[svc->num_logged++] = rm_strdup(key);
    rm_log_warn(LOG, "%s API: refused %.300s with %s: %s (further refusals of this caller are counted, not logged)", api_names[api],
                who, denied ? "PERMISSION_DENIED" : "UNAUTHENTICATED", why);
    if (svc->num_logged == MAX_LOGGED_CALLERS)
        rm_log_warn(LOG, "%d callers refused: refusals of new callers are counted, not logged", MAX_LOGGED_CALLERS);
}

static grpc_status_code auth_refuse(rm_identity_service_t *svc, rm_auth_api_t api, const rm_auth_caller_t *caller,
                                    grpc_status_code code, char *msg, size_t msgsz, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

static grpc_status_code
auth_refuse(rm_identity_service_t *svc, rm_auth_api_t api, const rm_auth_caller_t *caller, grpc_status_code code, char *msg,
            size_t msgsz, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, msgsz, fmt, ap);
    va_end(ap);
    rm_identity_auth_refused(svc, api, code, caller->who, msg);
    return code;
}

grpc_status_code
rm_identity_authenticate_admin(rm_identity_service_t *svc, const rm_auth_caller_t *caller, char *msg, size_t msgsz)
{
    const char *b = caller->bearer;
    if (b != NULL && strncmp(b, RM_ADMIN_TOKEN_PREFIX, strlen(RM_ADMIN_TOKEN_PREFIX)) == 0) {
        if (svc->admin_token[0] != '\0' && rm_token_equal(b, svc->admin_token))
            return GRPC_STATUS_OK;
        return auth_refuse(svc, RM_AUTH_API_ADMIN, caller, GRPC_STATUS_UNAUTHENTICATED, msg, msgsz,
                           "the admin credential is not this control plane's (compare with remora-control's "
                           "<state-dir>/" RM_ADMIN_TOKEN_FILE " or --admin-token-file)");
    }
    if (b != NULL && strncmp(b, RM_TOKEN_PREFIX, strlen(RM_TOKEN_PREFIX)) == 0)
        return auth_refuse(svc, RM_AUTH_API_ADMIN, caller, GRPC_STATUS_PERMISSION_DENIED, msg, msgsz,
                           "a workload's bootstrap token cannot be used on the admin API: use the admin credential "
                           "(remoractl --admin-token FILE)");
    if (b != NULL)
        return auth_refuse(svc, RM_AUTH_API_ADMIN, caller, GRPC_STATUS_UNAUTHENTICATED, msg, msgsz,
                           "the bearer token is not an admin credential (\"" RM_ADMIN_TOKEN_PREFIX "...\")");
    if (caller->spiffe_id != NULL)
        return auth_refuse(svc, RM_AUTH_API_ADMIN, caller, GRPC_STATUS_PERMISSION_DENIED, msg, msgsz,
                           "a workload certificate (%.300s) cannot be used on the admin API: use the admin credential "
                           "(remoractl --admin-token FILE)",
                           caller->spiffe_id);
    return auth_refuse(svc, RM_AUTH_API_ADMIN, caller, GRPC_STATUS_UNAUTHENTICATED, msg, msgsz,
                       "the admin API needs the admin credential: remoractl --admin-token FILE or REMORA_ADMIN_TOKEN_FILE "
                       "(remora-control writes <state-dir>/" RM_ADMIN_TOKEN_FILE " at first start)");
}

/* "ns/NS/sa/SA" (the path of a SPIFFE ID) into `wl`; left empty for any other shape */
static void
workload_of_path(const char *path, rm_auth_workload_t *wl)
{
    if (strncmp(path, "ns/", 3) != 0)
        return;
    const char *n = path + 3, *s = strstr(n, "/sa/");
    if (s == NULL || s == n || (size_t)(s - n) >= sizeof(wl->ns) || s[4] == '\0' || strlen(s + 4) >= sizeof(wl->sa) ||
        strchr(s + 4, '/') != NULL)
        return;
    memcpy(wl->ns, n, (size_t)(s - n));
    wl->ns[s - n] = '\0';
    strcpy(wl->sa, s + 4);
}

grpc_status_code
rm_identity_authenticate_workload(rm_identity_service_t *svc, rm_auth_api_t api, const rm_auth_caller_t *caller,
                                  const char *node_id, int allow_admin, char *msg, size_t msgsz)
{
    return rm_identity_authenticate_workload_as(svc, api, caller, node_id, allow_admin, NULL, msg, msgsz);
}

grpc_status_code
rm_identity_authenticate_workload_as(rm_identity_service_t *svc, rm_auth_api_t api, const rm_auth_caller_t *caller,
                                     const char *node_id, int allow_admin, rm_auth_workload_t *wl, char *msg, size_t msgsz)
{
    rm_auth_workload_t unused;
    if (wl == NULL)
        wl = &unused;
    wl->ns[0] = wl->sa[0] = '\0';
    /* a workload certificate of this trust domain is enough, whatever token comes with it */
    char prefix[300];
    snprintf(prefix, sizeof(prefix), "spiffe://%s/", rm_ca_trust_domain(svc->ca));
    if (caller->spiffe_id != NULL && strncmp(caller->spiffe_id, prefix, strlen(prefix)) == 0) {
        workload_of_path(caller->spiffe_id + strlen(prefix), wl);
        return GRPC_STATUS_OK;
    }
    const char *b = caller->bearer;
    if (b != NULL && strncmp(b, RM_ADMIN_TOKEN_PREFIX, strlen(RM_ADMIN_TOKEN_PREFIX)) == 0) {
        if (allow_admin && svc->admin_token[0] != '\0' && rm_token_equal(b, svc->admin_token))
            return GRPC_STATUS_OK;
        return auth_refuse(svc, api, caller, GRPC_STATUS_PERMISSION_DENIED, msg, msgsz,
                           "the admin credential is not a workload identity: the %s API takes a bootstrap token "
                           "(remora-agent --identity-token FILE) or a workload certificate",
                           api_names[api]);
    }
    if (b != NULL) {
        const char *ns, *sa;
        char why[512];
        switch (rm_tokens_check(svc->tokens, b, node_id, &ns, &sa, why, sizeof(why))) {
        case RM_TOKEN_OK:
            /* the token's names were checked when it was made (rm_token_valid_name: a DNS label, under 64 bytes) */
            if (strlen(ns) < sizeof(wl->ns) && strlen(sa) < sizeof(wl->sa)) {
                strcpy(wl->ns, ns);
                strcpy(wl->sa, sa);
            }
            return GRPC_STATUS_OK;
        case RM_TOKEN_IN_USE:
            return auth_refuse(svc, api, caller, GRPC_STATUS_PERMISSION_DENIED, msg, msgsz, "%s", why);
        default:
            return auth_refuse(svc, api, caller, GRPC_STATUS_UNAUTHENTICATED, msg, msgsz, "%s", why);
        }
    }
    if (caller->spiffe_id != NULL)
        return auth_refuse(svc, api, caller, GRPC_STATUS_PERMISSION_DENIED, msg, msgsz,
                           "the client certificate's identity %.300s is not in the trust domain %s", caller->spiffe_id,
                           rm_ca_trust_domain(svc->ca));
    return auth_refuse(svc, api, caller, GRPC_STATUS_UNAUTHENTICATED, msg, msgsz,
                       "the %s API needs a workload identity: a bootstrap token (authorization: Bearer rmt1..., "
                       "remora-agent --identity-token FILE) or a workload certificate as TLS client certificate",
                       api_names[api]);
}

static grpc_status_code
refuse(rm_identity_service_t *svc, int reason, const char *node, grpc_status_code code, char *msg, size_t msgsz, const char *why)
{
    ++svc->refused[reason];
    rm_cp_metrics_certify_refused((rm_cp_certify_refusal_t)reason);
    snprintf(msg, msgsz, "%s", why);
    rm_log_warn(LOG, "Certify from node '%.253s' refused (%s): %s", node, reason_names[reason], why);
    if (code == GRPC_STATUS_UNAUTHENTICATED || code == GRPC_STATUS_PERMISSION_DENIED) {
        ++svc->auth_refused[RM_AUTH_API_IDENTITY][code == GRPC_STATUS_PERMISSION_DENIED];
        rm_cp_metrics_auth_refused(RM_AUTH_API_IDENTITY, code == GRPC_STATUS_PERMISSION_DENIED);
    }
    return code;
}

/* Issues the certificate of (ns, sa) for the request's CSR; `token` (a bootstrap token, NULL for none) is bound to the node. */
static grpc_status_code
issue(rm_identity_service_t *svc, const Remora__V1__CertifyRequest *req, const char *ns, const char *sa, const char *token,
      grpc_byte_buffer **resp, char *msg, size_t msgsz)
{
    char why[512];
    const char *node = req->node_id;
    uint64_t t0 = rm_now_us();
    if (req->csr_der.len == 0 || req->csr_der.len > MAX_CSR_BYTES)
        return refuse(svc, R_BAD_CSR, node, GRPC_STATUS_INVALID_ARGUMENT, msg, msgsz, "the CSR is empty or larger than 4096 bytes");
    /* the names are copied: recording the binding below rewrites the token table */
    char ns_copy[64], sa_copy[64];
    snprintf(ns_copy, sizeof(ns_copy), "%s", ns);
    snprintf(sa_copy, sizeof(sa_copy), "%s", sa);
    uint8_t *leaf = NULL;
    size_t leaf_len;
    int64_t not_after;
    int r =
        rm_ca_issue(svc->ca, req->csr_der.data, req->csr_der.len, ns_copy, sa_copy, &leaf, &leaf_len, &not_after, why, sizeof(why));
    if (r == -1)
        return refuse(svc, R_BAD_CSR, node, GRPC_STATUS_INVALID_ARGUMENT, msg, msgsz, why);
    if (r != 0)
        return refuse(svc, R_INTERNAL, node, GRPC_STATUS_INTERNAL, msg, msgsz, why);
    if (token != NULL && rm_tokens_record(svc->tokens, token, node, not_after, why, sizeof(why)) != 0) {
        free(leaf);
        return refuse(svc, R_INTERNAL, node, GRPC_STATUS_INTERNAL, msg, msgsz, why);
    }
    ++svc->issued;
    rm_cp_metrics_certify_issued(rm_now_us() - t0);
    char id[512];
    rm_ca_spiffe_id(svc->ca, ns_copy, sa_copy, id, sizeof(id));
    Remora__V1__CertifyResponse out = REMORA__V1__CERTIFY_RESPONSE__INIT;
    Remora__V1__Timestamp expires = REMORA__V1__TIMESTAMP__INIT;
    ProtobufCBinaryData chain[2];
    chain[0].data = leaf;
    chain[0].len = leaf_len;
    chain[1].data = (uint8_t *)rm_ca_issuer_der(svc->ca, &chain[1].len);
    out.n_cert_chain_der = 2;
    out.cert_chain_der = chain;
    out.trust_bundle_pem = (char *)rm_ca_bundle_pem(svc->ca);
    expires.seconds = not_after;
    out.expires = &expires;
    out.spiffe_id = id;
    *resp = rm_rpc_pack(&out.base);
    free(leaf);
    rm_log_info(LOG, "issued %s to node %s (valid for %lld s)", id, node, (long long)(not_after - (int64_t)time(NULL)));
    return GRPC_STATUS_OK;
}

grpc_status_code
rm_identity_certify(rm_identity_service_t *svc, const Remora__V1__CertifyRequest *req, grpc_byte_buffer **resp, char *msg,
                    size_t msgsz)
{
    char why[512];
    const char *node = req->node_id;
    size_t node_len = strlen(node);
    if (node_len == 0 || node_len > 253 || strchr(node, ' ') != NULL)
        return refuse(svc, R_BAD_CSR, node, GRPC_STATUS_INVALID_ARGUMENT, msg, msgsz,
                      "CertifyRequest.node_id must be 1-253 characters without spaces");
    if (req->token[0] == '\0')
        return refuse(svc, R_UNKNOWN_TOKEN, node, GRPC_STATUS_UNAUTHENTICATED, msg, msgsz,
                      "no bootstrap token in the request (remora-agent --identity-token FILE)");
    const char *ns, *sa;
    switch (rm_tokens_check(svc->tokens, req->token, node, &ns, &sa, why, sizeof(why))) {
    case RM_TOKEN_OK:
        break;
    case RM_TOKEN_UNKNOWN:
        return refuse(svc, R_UNKNOWN_TOKEN, node, GRPC_STATUS_UNAUTHENTICATED, msg, msgsz, why);
    case RM_TOKEN_EXPIRED:
    case RM_TOKEN_LAPSED:
        return refuse(svc, R_EXPIRED_TOKEN, node, GRPC_STATUS_UNAUTHENTICATED, msg, msgsz, why);
    case RM_TOKEN_IN_USE:
        return refuse(svc, R_TOKEN_IN_USE, node, GRPC_STATUS_PERMISSION_DENIED, msg, msgsz, why);
    }
    return issue(svc, req, ns, sa, req->token, resp, msg, msgsz);
}

grpc_status_code
rm_identity_certify_reviewed(rm_identity_service_t *svc, const Remora__V1__CertifyRequest *req, const char *ns, const char *sa,
                             const char *pod_name, const char *refusal, int unavailable, grpc_byte_buffer **resp, char *msg,
                             size_t msgsz)
{
    const char *node = req->node_id;
    size_t node_len = strlen(node);
    /* the review is done whatever comes of the Certify call */
    rm_cp_metrics_token_review(refusal == NULL ? RM_CP_TOKEN_REVIEW_AUTHENTICATED
                               : unavailable   ? RM_CP_TOKEN_REVIEW_ERROR
                                               : RM_CP_TOKEN_REVIEW_REJECTED);
    if (node_len == 0 || node_len > 253 || strchr(node, ' ') != NULL)
        return refuse(svc, R_BAD_CSR, node, GRPC_STATUS_INVALID_ARGUMENT, msg, msgsz,
                      "CertifyRequest.node_id must be 1-253 characters without spaces");
    if (refusal != NULL) {
        if (unavailable)
            return refuse(svc, R_INTERNAL, node, GRPC_STATUS_UNAVAILABLE, msg, msgsz, refusal);
        return refuse(svc, R_UNKNOWN_TOKEN, node, GRPC_STATUS_UNAUTHENTICATED, msg, msgsz, refusal);
    }
    if (pod_name != NULL && pod_name[0] != '\0') {
        /* a pod's token certifies that pod's node id only (remora-agent: REMORA_NODE_ID=$(POD_NAME).$(POD_NAMESPACE)) */
        char want[320];
        snprintf(want, sizeof(want), "%s.%s", pod_name, ns);
        if (strcmp(node, want) != 0) {
            char why[1024];
            snprintf(why, sizeof(why), "the token belongs to pod %.200s in namespace %.63s: its node id is %.270s, not %.200s",
                     pod_name, ns, want, node);
            return refuse(svc, R_TOKEN_IN_USE, node, GRPC_STATUS_PERMISSION_DENIED, msg, msgsz, why);
        }
    }
    return issue(svc, req, ns, sa, NULL, resp, msg, msgsz);
}

grpc_status_code
rm_identity_trust_bundle(rm_identity_service_t *svc, grpc_byte_buffer **resp, char *msg, size_t msgsz)
{
    Remora__V1__GetTrustBundleResponse out = REMORA__V1__GET_TRUST_BUNDLE_RESPONSE__INIT;
    out.trust_bundle_pem = (char *)rm_ca_bundle_pem(svc->ca);
    out.trust_domain = (char *)rm_ca_trust_domain(svc->ca);
    *resp = rm_rpc_pack(&out.base);
    return GRPC_STATUS_OK;
}

grpc_status_code
rm_identity_create_token(rm_identity_service_t *svc, const Remora__V1__CreateTokenRequest *req, grpc_byte_buffer **resp, char *msg,
                         size_t msgsz)
{
    if (!rm_token_valid_name(req->namespace_)) {
        snprintf(msg, msgsz, "namespace '%.100s' is not a DNS-1123 label", req->namespace_);
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    if (!rm_token_valid_name(req->service_account)) {
        snprintf(msg, msgsz, "service account '%.100s' is not a DNS-1123 label", req->service_account);
        return GRPC_STATUS_INVALID_ARGUMENT;
    }
    int64_t ttl = RM_TOKEN_DEFAULT_TTL_S;
    if (req->ttl != NULL && (req->ttl->seconds != 0 || req->ttl->nanos != 0)) {
        if (req->ttl->seconds < 1 || req->ttl->seconds > RM_TOKEN_MAX_TTL_S) {
            snprintf(msg, msgsz, "the ttl must be from 1s to %dh", RM_TOKEN_MAX_TTL_S / 3600);
            return GRPC_STATUS_INVALID_ARGUMENT;
        }
        ttl = req->ttl->seconds;
    }
    char token[RM_TOKEN_LEN + 1], id[512];
    int64_t expires;
    if (rm_tokens_create(svc->tokens, req->namespace_, req->service_account, (uint32_t)ttl, token, &expires, msg, msgsz) != 0)
        return GRPC_STATUS_UNAVAILABLE;
    rm_ca_spiffe_id(svc->ca, req->namespace_, req->service_account, id, sizeof(id));
    Remora__V1__CreateTokenResponse out = REMORA__V1__CREATE_TOKEN_RESPONSE__INIT;
    Remora__V1__Timestamp ts = REMORA__V1__TIMESTAMP__INIT;
    ts.seconds = expires;
    out.token = token;
    out.expires = &ts;
    out.spiffe_id = id;
    *resp = rm_rpc_pack(&out.base);
    rm_cp_metrics_token_created();
    rm_log_info(LOG, "created a bootstrap token for %s (first use within %lld s)", id, (long long)ttl);
    return GRPC_STATUS_OK;
}

grpc_status_code
rm_identity_status(rm_identity_service_t *svc, grpc_byte_buffer **resp, char *msg, size_t msgsz)
{
    Remora__V1__IdentityStatusResponse out = REMORA__V1__IDENTITY_STATUS_RESPONSE__INIT;
    Remora__V1__Timestamp ts = REMORA__V1__TIMESTAMP__INIT;
    Remora__V1__IdentityStatusResponse__RefusalsEntry entries[R__COUNT], *ptrs[R__COUNT];
    out.trust_domain = (char *)rm_ca_trust_domain(svc->ca);
    out.issuer_subject = (char *)rm_ca_issuer_subject(svc->ca);
    ts.seconds = rm_ca_issuer_not_after(svc->ca);
    out.issuer_expires = &ts;
    out.trust_anchors = (uint32_t)rm_ca_num_anchors(svc->ca);
    out.certificates_issued = svc->issued;
    for (int i = 0; i != R__COUNT; ++i) {
        remora__v1__identity_status_response__refusals_entry__init(&entries[i]);
        entries[i].key = (char *)reason_names[i];
        entries[i].value = svc->refused[i];
        ptrs[i] = &entries[i];
    }
    out.n_refusals = R__COUNT;
    out.refusals = ptrs;
    out.tokens = (uint32_t)rm_tokens_count(svc->tokens);
    out.cert_lifetime_seconds = rm_ca_cert_lifetime(svc->ca);
    Remora__V1__IdentityStatusResponse__AuthRefusalsEntry auth[RM_AUTH_API__COUNT * 2], *auth_ptrs[RM_AUTH_API__COUNT * 2];
    char auth_keys[RM_AUTH_API__COUNT * 2][48];
    for (int api = 0; api != RM_AUTH_API__COUNT; ++api) {
        for (int denied = 0; denied != 2; ++denied) {
            int i = api * 2 + denied;
            remora__v1__identity_status_response__auth_refusals_entry__init(&auth[i]);
            snprintf(auth_keys[i], sizeof(auth_keys[i]), "%s_%s", api_names[api], denied ? "permission_denied" : "unauthenticated");
            auth[i].key = auth_keys[i];
            auth[i].value = svc->auth_refused[api][denied];
            auth_ptrs[i] = &auth[i];
        }
    }
    out.n_auth_refusals = RM_AUTH_API__COUNT * 2;
    out.auth_refusals = auth_ptrs;
    Remora__V1__Timestamp server_ts = REMORA__V1__TIMESTAMP__INIT;
    server_ts.seconds = svc->server_cert_not_after;
    if (svc->server_cert_issued != 0)
        out.server_cert_expires = &server_ts;
    out.server_cert_issued = svc->server_cert_issued;
    out.issuer_der.data = (uint8_t *)rm_ca_issuer_der(svc->ca, &out.issuer_der.len);
    *resp = rm_rpc_pack(&out.base);
    return GRPC_STATUS_OK;
}
