/*
 * Listeners and downstream connections.
 *
 * The main thread opens one SO_REUSEPORT socket per listener per worker (so bind errors are
 * reported before anything starts) and hands the descriptors to the workers; each worker accepts
 * on its own sockets. An accepted connection first goes through protocol detection (bounded by
 * limits.detect_timeout_ms): a TLS ClientHello on a listener with a certificate starts a TLS
 * handshake whose ALPN picks the codec, the HTTP/2 connection preface picks HTTP/2, anything else
 * is HTTP/1.1 (whose parser rejects what is not HTTP).
 *
 * Transparent listeners (rm_config_listener_t.direction, docs/transparent.md) read each connection's
 * original destination (SO_ORIGINAL_DST / IP6T_SO_ORIGINAL_DST) and detect differently: an HTTP/1.x
 * method token and a space, the HTTP/2 preface, a TLS ClientHello (relayed opaque: the application's
 * TLS is not ours to end), else opaque TCP; a detection timeout also ends in opaque TCP, and ports in
 * the listener's opaque_ports skip detection. An explicit `protocol: tcp` listener relays at once.
 * Results are counted in remora_detect_total{listener,result}.
 *
 * Mesh mTLS (docs/mesh-tls.md): on INBOUND transparent listeners and explicit `peer: agent` ones, a
 * ClientHello whose ALPN offers a remora.mesh/ id (rm_detect_mesh_alpn) is terminated with the
 * agent's identity (tls/mesh.h); the caller's SPIFFE ID is kept in rm_dconn_t.peer_identity and the
 * negotiated id picks the HTTP/2 or HTTP/1.1 server. A ClientHello offering remora.mesh/tcp is a peer
 * agent's opaque relay: handed to tcp/tcp_proxy.c (rm_dconn_t.mesh_tcp), which terminates it. Opaque
 * destinations of those listeners (a `protocol: tcp` Service or an opaque port this node serves; an
 * explicit `protocol: tcp` + `peer: agent` listener) skip HTTP detection but wait up to
 * limits.mesh_sniff_timeout_ms for a mesh ClientHello; other bytes, or none (a server-speaks-first
 * client), are plaintext. Under MeshTLS STRICT, plaintext (HTTP, opaque bytes, or silence at an opaque
 * destination) on those listeners is refused: closed, counted in remora_mesh_tls_plaintext_refused_total,
 * logged at most once per source address per RM_MESH_REFUSED_LOG_INTERVAL_MS.
 *
 * Connection limit: every worker's socket of a listener address shares one count of open connections (an atomic in a
 * process-wide registry entry keyed by the address, held by each worker's rm_listener_t and by each connection). A
 * connection accepted while the listener's `max_connections` are open is closed at once (accepting it keeps the
 * kernel's accept queue from filling, as Envoy does) and counted in
 * remora_downstream_connections_refused_total{reason="max_connections"}.
 *
 * `protocol: h2` listeners: what is not a TLS ClientHello goes to the HTTP/2 server as it is (prior knowledge; a bad
 * preface gets GOAWAY PROTOCOL_ERROR from nghttp2), and a TLS connection speaks HTTP/2 whatever ALPN chose (the
 * listener offers only h2).
 *
 * Thread: rm_listen_fd_open and rm_listener_new on the main thread; the rest on the owning worker.
 */
#ifndef remora__listener_h
#define remora__listener_h

#include <h2o.h>
#include <openssl/ssl.h>
#include "config/config.h"
#include "core/worker.h"
#include "obs/stats.h"
#include "tls/mesh.h"

/** The open-connection count of a listener address, shared by the workers (opaque; listener.c). */
typedef struct st_rm_listener_conns_t rm_listener_conns_t;

struct st_rm_listener_t {
    rm_worker_t *worker;
    /** shared by every worker's listener of this address (one reference each) */
    rm_listener_conns_t *conns;
    rm_config_addr_t addr;
    /** index of this listener in worker->config->listeners (updated on reload) */
    size_t config_index;
    int fd;
    uv_tcp_t *tcp;
    rm_listener_stats_t *stats;
    rm_listener_t *next;
};

typedef struct st_rm_dconn_t rm_dconn_t;

/** What a downstream codec provides to the connection registry (drain, forced close). */
typedef struct st_rm_dconn_ops_t {
    /** begin a graceful close: GOAWAY / close when idle */
    void (*drain)(rm_dconn_t *dc);
    /** close now */
    void (*close)(rm_dconn_t *dc);
} rm_dconn_ops_t;

/** A downstream connection: the socket plus the codec that took it after detection. */
struct st_rm_dconn_t {
    rm_worker_t *worker;
    h2o_socket_t *sock;
    rm_listener_stats_t *stats;
    /** index of the listener config in the snapshot in service when the connection was accepted */
    size_t listener_index;
    /** the listening address, to find the listener again in a new snapshot */
    rm_config_addr_t listen_addr;
    /** the client's address (peerlen 0 if unknown) */
    struct sockaddr_storage peer;
    socklen_t peerlen;
    h2o_linklist_t _link;
    rm_timer_t _detect_timeout;
    /** the listener's connection count this connection is in (a reference; released by rm_dconn_destroy) */
    rm_listener_conns_t *_conns;
    const rm_dconn_ops_t *ops;
    void *impl;
    unsigned is_tls : 1;
    /** the listener's direction (NONE for explicit listeners) */
    rm_direction_t direction;
    /** transparent listeners: the destination the client asked for (SO_ORIGINAL_DST), orig_dstlen 0 if unknown */
    struct sockaddr_storage orig_dst;
    socklen_t orig_dstlen;
    /** OUTBOUND: index in config->service_listeners when orig_dst is a Service's virtual address, else
     * SIZE_MAX (then rm_dconn_listener returns the Service listener, whose routes are that Service's) */
    size_t service_listener_index;
    /** mesh mTLS (docs/mesh-tls.md): the handshake in progress, then the caller's verified SPIFFE ID (owned,
     * NULL for plaintext and the application's TLS) and its hash (rm_fnv1a), computed once here; streams take
     * both (rm_stream_set_peer_identity) */
    rm_mesh_handshake_t mesh_hs;
    char *peer_identity;
    uint64_t peer_identity_hash;
    /** the ClientHello offers remora.mesh/tcp: a peer agent's opaque relay, whose mesh mTLS tcp/tcp_proxy.c terminates */
    unsigned mesh_tcp : 1;
    /** the application's own TLS (a ClientHello that is not mesh mTLS): relayed as it is, never wrapped in mesh mTLS */
    unsigned app_tls : 1;
    /** an opaque destination (INBOUND: a `protocol: tcp` Service or an opaque port this node serves; an explicit
     * `protocol: tcp` + `peer: agent` listener): detection only waits for a mesh ClientHello (limits.mesh_sniff_timeout_ms) */
    unsigned _opaque_wait : 1;
};

/** STRICT refusals are logged at most once per source address per this interval (per worker, 64 sources tracked);
 * mesh mTLS closed for want of an identity at most once per worker per interval */
#define RM_MESH_REFUSED_LOG_INTERVAL_MS 10000

/** Connections refused by max_connections are logged at most once per worker per this interval */
#define RM_LISTENER_REFUSED_LOG_INTERVAL_MS 10000

/** Main thread: socket(), SO_REUSEPORT, bind, listen. Returns the fd or -1 with a message. */
int rm_listen_fd_open(const rm_config_addr_t *addr, char *err, size_t errlen);
/** Main thread: a listener for `fd` to hand to a worker (appended to worker->listeners before it starts). */
rm_listener_t *rm_listener_new(rm_worker_t *worker, int fd, const rm_config_addr_t *addr);

/** Worker: start accepting on every listener not yet started. Returns 0 or -1. */
int rm_listeners_start(rm_worker_t *worker);
/** The listeners and downstream connections of every worker, as a worker module (registered by the assembly). */
extern const rm_worker_module_t rm_net_module;
/** Worker: map listeners to the new worker->config by address; close those it no longer has. */
void rm_listeners_apply_config(rm_worker_t *worker);
/** Worker: stop accepting (drain). */
void rm_listeners_close(rm_worker_t *worker);

/**
 * Worker: the first half of an outbound grace (remora-agent --outbound-grace-ms, docs/lifecycle.md): stop accepting on the
 * listeners whose callers are other agents (INBOUND transparent ones and explicit `peer: agent` ones) and drain their
 * connections; OUTBOUND and other explicit listeners keep accepting until rm_worker_start_drain.
 */
void rm_listeners_drain_inbound(rm_worker_t *worker);
/** Worker: drain / close every downstream connection. */
void rm_downstream_drain_all(rm_worker_t *worker);
void rm_downstream_close_all(rm_worker_t *worker);

/** Codecs: the connection is closing; unlinks it and frees it. The socket must already be closed. */
void rm_dconn_destroy(rm_dconn_t *dc);
/** The listener config this connection serves under the snapshot in service (NULL if it was removed). */
const rm_config_listener_t *rm_dconn_listener(rm_dconn_t *dc, rm_config_t *config);

/* codec entry points after detection */
void rm_h1server_accept(rm_dconn_t *dc);
void rm_h2server_accept(rm_dconn_t *dc);
/** opaque TCP (tcp/tcp_proxy.c): relays the connection's bytes, starting with those already in
 * dc->sock->input, to the destination its listener and original destination choose */
void rm_tcp_proxy_accept(rm_dconn_t *dc);

/** Detection outcomes, the `result` label of remora_detect_total (RM_DETECT_* index rm_listener_stats_t.detect). */
typedef enum en_rm_detect_result_t {
    RM_DETECT_HTTP1 = 0,
    RM_DETECT_H2 = 1,
    RM_DETECT_TLS = 2,     /* a ClientHello: handshake on an explicit TLS listener, relayed opaque on a transparent one */
    RM_DETECT_OPAQUE = 3,  /* bytes that are none of the above */
    RM_DETECT_TIMEOUT = 4, /* nothing detectable before limits.detect_timeout_ms */
    RM_DETECT_SKIPPED = 5, /* no detection: an opaque port, a `protocol: tcp` listener or Service, an unknown destination */
} rm_detect_result_t;

#endif
