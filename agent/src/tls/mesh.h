/*
 * Mesh mTLS between agents (docs/mesh-tls.md).
 *
 * The hop from an agent to a peer agent (a cluster with agent_hop or `peer: agent`) is TLS 1.3 with
 * both agents' workload certificates (tls/identity.h). It is told apart from an application's own
 * TLS by its ALPN protocol ids:
 *   remora.mesh/h2     the agent-to-agent HTTP/2 (requests with the `peer: agent` markers)
 *   remora.mesh/http1  HTTP/1.1 requests that keep HTTP/1.1 on the hop (Upgrade, WebSocket; http1 clusters)
 *   remora.mesh/tcp    the opaque relay (tcp/tcp_proxy.c): bytes as the application sent them, inside TLS
 *                      driven by tls/mesh_relay.h over the relay's plain sockets (half-close by close_notify)
 * A ClientHello that offers none of them is the application's and is relayed opaque (net/listener.c).
 *
 * Contexts: one server SSL_CTX (requires and verifies a client certificate from the trust bundle)
 * and one client SSL_CTX per (expected peer SPIFFE ID, protocol), built from the identity in service
 * on first use and rebuilt when the identity rotates (new connections use the new certificate;
 * connections made earlier keep theirs). At most RM_MESH_MAX_CLIENT_CTX client contexts are kept;
 * past it the cache starts over (contexts in use keep their references).
 *
 * Peer verification: the chain against the trust bundle (expiry included), then the leaf's URI SAN:
 * the client compares it with the cluster's expected SPIFFE ID (mismatch: the handshake fails, the
 * message names both IDs), the server records it as the connection's peer identity. The callbacks
 * find the connection's rm_mesh_handshake_t through the handshake registry (rm_mesh_handshake_start
 * before h2o_socket_ssl_handshake, rm_mesh_handshake_end in the handshake callback or on close).
 *
 * Resumption: the client keeps TLS 1.3 session tickets keyed by the endpoint address, the expected
 * SPIFFE ID and the serial of the agent's own certificate, at most RM_MESH_MAX_SESSIONS (the oldest
 * goes first; a rotation of the agent's certificate drops them all, as no key could match again);
 * the server's tickets live RM_MESH_TICKET_LIFETIME_S. A resumed handshake is counted as
 * result="resumed"; remora_mesh_tls_client_sessions is the number kept.
 *
 * Metrics (rm_mesh_tls_init): remora_mesh_tls_handshakes_total{direction,result},
 * remora_mesh_tls_plaintext_refused_total, remora_mesh_tls_connections_total{direction,tls}.
 *
 * Threads: contexts and counters from any thread (mutex); the registry is per thread (each worker's).
 */
#ifndef remora__tls_mesh_h
#define remora__tls_mesh_h

#include <stddef.h>
#include <stdint.h>
#include <h2o.h>
#include <openssl/ssl.h>

#define RM_MESH_ALPN_H2 "remora.mesh/h2"
#define RM_MESH_ALPN_HTTP1 "remora.mesh/http1"
#define RM_MESH_ALPN_TCP "remora.mesh/tcp"
#define RM_MESH_MAX_CLIENT_CTX 256
#define RM_MESH_MAX_SESSIONS 1024
#define RM_MESH_TICKET_LIFETIME_S 3600
/** the longest SPIFFE ID kept (longer URI SANs are refused) */
#define RM_MESH_MAX_ID 256

typedef enum en_rm_mesh_proto_t {
    RM_MESH_PROTO_H2 = 0,
    RM_MESH_PROTO_HTTP1 = 1,
    RM_MESH_PROTO_TCP = 2,
} rm_mesh_proto_t;

typedef enum en_rm_mesh_direction_t {
    RM_MESH_OUTBOUND = 0,
    RM_MESH_INBOUND = 1,
} rm_mesh_direction_t;

/** The `result` label of remora_mesh_tls_handshakes_total. */
typedef enum en_rm_mesh_result_t {
    RM_MESH_SUCCESS = 0,
    RM_MESH_RESUMED = 1,
    RM_MESH_PEER_IDENTITY_MISMATCH = 2,
    RM_MESH_UNTRUSTED = 3,   /* the chain does not verify against the trust bundle (another CA, expired, ...) */
    RM_MESH_NO_IDENTITY = 4, /* this agent has no identity (a mesh ClientHello arrived; or none to originate with) */
    RM_MESH_ERROR = 5,       /* anything else: no certificate, no SPIFFE ID, TLS alert, I/O */
    RM_MESH_NUM_RESULTS
} rm_mesh_result_t;

/** The state of one mesh handshake, embedded in the connection (the downstream connection or the connect). */
typedef struct st_rm_mesh_handshake_t {
    h2o_linklist_t _link;
    h2o_socket_t *sock;
    /** client: the SPIFFE ID the peer must present (not owned; lives as long as the connect) */
    const char *expected;
    /** the peer's SPIFFE ID once its certificate was seen ("" before) */
    char peer_id[RM_MESH_MAX_ID];
    /** what went wrong (RM_MESH_SUCCESS while nothing did) and a message */
    rm_mesh_result_t failure;
    char why[640];
    unsigned resumed : 1;
} rm_mesh_handshake_t;

/** Registers the metrics and the OpenSSL indexes. Main thread, once, before workers start. */
void rm_mesh_tls_init(void);

/** The server context (a new reference, SSL_CTX_free when done), or NULL when the agent has no identity. */
SSL_CTX *rm_mesh_tls_server_ctx(void);
/** A client context offering `proto`'s ALPN id and checking the peer's SPIFFE ID against `expected` (a new
 * reference), or NULL when the agent has no identity. */
SSL_CTX *rm_mesh_tls_client_ctx(const char *expected, rm_mesh_proto_t proto);

/**
 * The SPIFFE ID a peer must present for a cluster's configured identity (rm_config_cluster_t.peer_identity):
 * a whole spiffe:// ID as it is, "/ns/NS/sa/SA" in the trust domain of the agent's own identity. Returns 0,
 * or -1 when it cannot be made (no identity of our own for a relative one, too long).
 */
int rm_mesh_expected_id(const char *configured, char *out, size_t outlen);

/** Worker: links `hs` for the callbacks of the handshake about to start on `sock` (`expected`: client side). */
void rm_mesh_handshake_start(rm_mesh_handshake_t *hs, h2o_socket_t *sock, const char *expected);
/**
 * tls/ only (tls/mesh_relay.c): ties `hs` to `ssl` itself (SSL ex_data) for a handshake driven over memory BIOs, where
 * no h2o socket is the BIO's; `sock` (the plain socket to the peer) keys the client's session cache. No registry link:
 * the callbacks find `hs` through the SSL for its whole life.
 */
void rm_mesh_handshake_attach(rm_mesh_handshake_t *hs, SSL *ssl, h2o_socket_t *sock, const char *expected);
/** Worker: unlinks `hs` (idempotent). */
void rm_mesh_handshake_end(rm_mesh_handshake_t *hs);
/** Classifies a finished handshake: `err` is h2o's error (NULL on success). Counts it and returns the result. */
rm_mesh_result_t rm_mesh_handshake_result(rm_mesh_handshake_t *hs, rm_mesh_direction_t dir, const char *err);

/** The selected mesh protocol of a finished handshake (-1 if the ALPN is not a mesh id). */
int rm_mesh_alpn_proto(h2o_iovec_t alpn);

/** Counters. */
void rm_mesh_count_handshake(rm_mesh_direction_t dir, rm_mesh_result_t result);
void rm_mesh_count_plaintext_refused(void);
void rm_mesh_count_connection(rm_mesh_direction_t dir, int tls);
/** remora_tcp_authz_denied_total: opaque TCP connections refused by authorization (tcp/tcp_proxy.c; rendered here, with
 * the relay's other mesh counters). */
void rm_mesh_count_tcp_denied(void);

const char *rm_mesh_result_name(rm_mesh_result_t result);

#endif
