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

/** The bound port. */
int rm_control_server_port(const rm_control_server_t *server);

/**
 * Starts shutting down: stops accepting calls and cancels every call in progress (agents see their
 * stream end and reconnect elsewhere or later). Returns at once; any thread except the server's;
 * not async-signal-safe. Calling it twice is harmless.
 */
void rm_control_server_stop(rm_control_server_t *server);

/** Stops the server if needed, waits for its thread and frees it. Main thread. */
void rm_control_server_destroy(rm_control_server_t *server);

#endif
