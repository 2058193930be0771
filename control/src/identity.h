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
grpc_status_code rm_identity_trust_bundle(rm_identity_service_t *svc, grpc_byte_buffer **resp, char *msg, size_t msgsz);
grpc_status_code rm_identity_create_token(rm_identity_service_t *svc, const Remora__V1__CreateTokenRequest *req,
                                          grpc_byte_buffer **resp, char *msg, size_t msgsz);
grpc_status_code rm_identity_status(rm_identity_service_t *svc, grpc_byte_buffer **resp, char *msg, size_t msgsz);

#endif
