/*
 * The control plane's gRPC server: the Admin service used by remoractl, the Discovery stream
 * held by every agent and the Identity service agents get their certificates from
 * (proto/remora/v1/admin.proto, discovery.proto, identity.proto).
 *
 * Threads: one thread, started here, drives the server's completion queue and owns everything the
 * server touches, the store included: admin calls, agent streams, pushes and waiters all run on it,
 * in completion order, so there is no locking. gRPC runs its own I/O threads besides.
 */
#ifndef remora_control__server_h
#define remora_control__server_h

#include <stddef.h>
#include "store.h"

typedef struct st_rm_control_server_t rm_control_server_t;

/**
 * Binds `listen` ("127.0.0.1:15010", "[::1]:15010", "0.0.0.0:15010"; port 0 picks a free port) and
 * starts serving, plaintext and without authentication (the unit tests; see below for the real thing). The server uses `store` from
 * its own thread until rm_control_server_destroy() returns; the caller keeps ownership and must not touch it meanwhile. Returns
 * NULL with the reason in `err` when the address cannot be bound. Call rm_rpc_init() first. Main thread.
 */
rm_control_server_t *rm_control_server_start(const char *listen, rm_store_t *store, char *err, size_t errsz);

typedef struct st_rm_identity_service_t rm_identity_service_t;
/**
 * The same, serving the Identity service and the Admin identity methods from `identity`
 * (identity.h; borrowed and used from the server's thread, like the store). With NULL those
 * methods answer FAILED_PRECONDITION.
 *
 * Unless `insecure` (plaintext, no authentication: development only; required when `identity` is
 * NULL), the port speaks TLS only (docs/identity.md, "The control plane's own doors"): the
 * certificate is issued at start by the identity's CA (rm_ca_issue_server) and re-issued at half
 * its lifetime on the server's thread without a restart; a client certificate is asked for and
 * verified against the trust bundle when sent. Each call is authenticated (identity.h): the Admin
 * service needs the admin credential, StreamSnapshots a workload identity valid for its Hello's
 * node id, GetTrustBundle a workload identity or the admin credential, Certify its bootstrap token.
 * Refusals end the call with UNAUTHENTICATED or PERMISSION_DENIED and a message saying what to fix.
 */
rm_control_server_t *rm_control_server_start_with_identity(const char *listen, rm_store_t *store, rm_identity_service_t *identity,
                                                           int insecure, char *err, size_t errsz);

typedef struct st_rm_kube_source_t rm_kube_source_t;
/**
 * The same, with the state read from the Kubernetes API (remora-control --kubernetes,
 * docs/kubernetes-mode.md): `store` is an in-memory one (rm_store_open_memory) that the server
 * replaces with every state `kube` builds (polled every 50 ms on the server's thread); versions are
 * content hashes; Apply and Delete write through the API and answer once the watch shows the change;
 * Certify checks projected service-account tokens with a TokenReview. `kube` is borrowed and must
 * be stopped (rm_kube_source_stop) before the server is destroyed and freed after.
 */
rm_control_server_t *rm_control_server_start_kubernetes(const char *listen, rm_store_t *store, rm_identity_service_t *identity,
                                                        int insecure, rm_kube_source_t *kube, char *err, size_t errsz);

/** The bound port. */
int rm_control_server_port(const rm_control_server_t *server);

/**
 * Where the injection webhook listens ("0.0.0.0:15017", the port as bound) and the DNS names of its
 * certificate, reported by Admin.Status for `remoractl check`; NULL address: no webhook. Copied. Any
 * thread.
 */
void rm_control_server_set_webhook(rm_control_server_t *server, const char *address, const char *const *dns_names,
                                   size_t num_dns_names);

/**
 * Starts shutting down: stops accepting calls and cancels every call in progress (agents see their
 * stream end and reconnect elsewhere or later). Returns at once; any thread except the server's;
 * not async-signal-safe. Calling it twice is harmless.
 */
void rm_control_server_stop(rm_control_server_t *server);

/** Stops the server if needed, waits for its thread and frees it. Main thread. */
void rm_control_server_destroy(rm_control_server_t *server);

#endif
