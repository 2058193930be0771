/*
 * The control plane's identity service (docs/identity.md): Identity.Certify and
 * Identity.GetTrustBundle for agents, Admin.CreateToken and Admin.IdentityStatus for remoractl.
 * Built on the CA (ca.h) and the bootstrap-token store (token.h); the gRPC server (server.c) only
 * unpacks requests and sends what these functions answer.
 *
 * Thread: the server's thread only, like the store. Each function returns a gRPC status code: OK
 * with *resp set (a packed message the caller sends and destroys), anything else with the reason
 * in `msg` (peer input is never fatal). Every Certify refusal is counted by reason.
 */
#ifndef remora_control__identity_h
#define remora_control__identity_h

#include <stddef.h>
#include <grpc/grpc.h>
#include "remora/v1/identity.pb-c.h"
#include "ca.h"
#include "token.h"

typedef struct st_rm_identity_service_t rm_identity_service_t;

/** Both borrowed: they must outlive the service. */
rm_identity_service_t *rm_identity_service_create(rm_ca_t *ca, rm_tokens_t *tokens);
void rm_identity_service_destroy(rm_identity_service_t *svc);

grpc_status_code rm_identity_certify(rm_identity_service_t *svc, const Remora__V1__CertifyRequest *req, grpc_byte_buffer **resp,
                                     char *msg, size_t msgsz);
/**
 * Certify for a token the Kubernetes API reviewed (remora-control --kubernetes, docs/kubernetes-mode.md):
 * `refusal` NULL when the TokenReview authenticated service account `sa` of namespace `ns` (then the
 * certificate names spiffe://TD/ns/NS/sa/SA), else why not (`unavailable`: the API did not answer).
 * `pod_name` (the token's pod, "" or NULL when the token names none) must match the node id
 * "POD.NAMESPACE".
 */
grpc_status_code rm_identity_certify_reviewed(rm_identity_service_t *svc, const Remora__V1__CertifyRequest *req, const char *ns,
                                              const char *sa, const char *pod_name, const char *refusal, int unavailable,
                                              grpc_byte_buffer **resp, char *msg, size_t msgsz);
grpc_status_code rm_identity_trust_bundle(rm_identity_service_t *svc, grpc_byte_buffer **resp, char *msg, size_t msgsz);
grpc_status_code rm_identity_create_token(rm_identity_service_t *svc, const Remora__V1__CreateTokenRequest *req,
                                          grpc_byte_buffer **resp, char *msg, size_t msgsz);
grpc_status_code rm_identity_status(rm_identity_service_t *svc, grpc_byte_buffer **resp, char *msg, size_t msgsz);

/*
 * Authentication of the control plane's callers (docs/identity.md, "The control plane's own doors").
 * The server extracts the caller's credentials from the call; these functions decide, count every
 * refusal by API and status (IdentityStatusResponse.auth_refusals) and log it once per caller (node
 * id, else peer address; at most 4096 callers are remembered, further refusals are only counted).
 */
typedef enum en_rm_auth_api_t { RM_AUTH_API_ADMIN, RM_AUTH_API_DISCOVERY, RM_AUTH_API_IDENTITY, RM_AUTH_API__COUNT } rm_auth_api_t;

typedef struct st_rm_auth_caller_t {
    /** the token of `authorization: Bearer <token>`, NULL for none */
    const char *bearer;
    /** the SPIFFE ID of the TLS client certificate (verified against the trust bundle by TLS), NULL for none */
    const char *spiffe_id;
    /** who is calling, for the log: the node id, else the peer address */
    const char *who;
} rm_auth_caller_t;

/** The CA (borrowed from creation). */
rm_ca_t *rm_identity_ca(rm_identity_service_t *svc);

/** The admin credential (token.h) the Admin service requires (copied). */
void rm_identity_set_admin_token(rm_identity_service_t *svc, const char *token);

/** The admin API: OK for the admin credential; UNAUTHENTICATED or PERMISSION_DENIED (a workload credential) with the reason. */
grpc_status_code rm_identity_authenticate_admin(rm_identity_service_t *svc, const rm_auth_caller_t *caller, char *msg,
                                                size_t msgsz);

/**
 * The discovery and identity APIs: OK for a workload certificate of this trust domain or a bootstrap
 * token usable by `node_id` (NULL: by any node; a bound token names its node), and, when
 * `allow_admin`, for the admin credential. Else UNAUTHENTICATED or PERMISSION_DENIED with the reason.
 */
grpc_status_code rm_identity_authenticate_workload(rm_identity_service_t *svc, rm_auth_api_t api, const rm_auth_caller_t *caller,
                                                   const char *node_id, int allow_admin, char *msg, size_t msgsz);

/** The workload a caller authenticated as: its namespace and service account, both "" when not known. */
typedef struct st_rm_auth_workload_t {
    char ns[64], sa[64];
} rm_auth_workload_t;

/**
 * rm_identity_authenticate_workload, telling on OK which workload the accepted credential names (`wl` may be NULL):
 * a workload certificate of this trust domain, its SPIFFE ID spiffe://TD/ns/NS/sa/SA; else a bootstrap token this
 * control plane made and checked (tokens.db), the namespace and service account it was created for; else (the admin
 * credential, or a SPIFFE ID of another shape) none. Server thread.
 */
grpc_status_code rm_identity_authenticate_workload_as(rm_identity_service_t *svc, rm_auth_api_t api, const rm_auth_caller_t *caller,
                                                      const char *node_id, int allow_admin, rm_auth_workload_t *wl, char *msg,
                                                      size_t msgsz);

/** Counts (and logs once per caller) a refusal made elsewhere. */
void rm_identity_auth_refused(rm_identity_service_t *svc, rm_auth_api_t api, grpc_status_code code, const char *who,
                              const char *why);

/** The control plane's serving certificate was (re-)issued: for IdentityStatus. */
void rm_identity_server_cert_issued(rm_identity_service_t *svc, int64_t not_after);

#endif
