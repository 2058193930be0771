/*
 * The control plane's identity service (see identity.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "remora/log.h"
#include "remora/rpc.h"
#include "remora/strutil.h"
#include "identity.h"

#define LOG "identity"
#define MAX_CSR_BYTES 4096

enum { R_UNKNOWN_TOKEN, R_EXPIRED_TOKEN, R_TOKEN_IN_USE, R_BAD_CSR, R_INTERNAL, R__COUNT };
static const char *const reason_names[R__COUNT] = {"unknown_token", "expired_token", "token_in_use", "bad_csr", "internal"};

struct st_rm_identity_service_t {
    rm_ca_t *ca;
    rm_tokens_t *tokens;
    uint64_t issued;
    uint64_t refused[R__COUNT];
};

rm_identity_service_t *
rm_identity_service_create(rm_ca_t *ca, rm_tokens_t *tokens)
{
    rm_identity_service_t *svc = rm_calloc(1, sizeof(*svc));
    svc->ca = ca;
    svc->tokens = tokens;
    return svc;
}

void
rm_identity_service_destroy(rm_identity_service_t *svc)
{
    free(svc);
}

static grpc_status_code
refuse(rm_identity_service_t *svc, int reason, const char *node, grpc_status_code code, char *msg, size_t msgsz, const char *why)
{
    ++svc->refused[reason];
    snprintf(msg, msgsz, "%s", why);
    rm_log_warn(LOG, "Certify from node '%.253s' refused (%s): %s", node, reason_names[reason], why);
    return code;
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
    if (rm_tokens_record(svc->tokens, req->token, node, not_after, why, sizeof(why)) != 0) {
        free(leaf);
        return refuse(svc, R_INTERNAL, node, GRPC_STATUS_INTERNAL, msg, msgsz, why);
    }
    ++svc->issued;
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
    *resp = rm_rpc_pack(&out.base);
    return GRPC_STATUS_OK;
}
