/*
 * Opaque TCP proxying: a downstream connection that detection (net/listener.c) did not hand to an
 * HTTP codec is relayed byte for byte to one upstream connection.
 *
 * Where to: an explicit `protocol: tcp` listener's cluster; on an OUTBOUND transparent listener, the
 * Service whose virtual address is the original destination (an endpoint picked by the cluster's
 * balancer, with its outlier and health state), else the original destination itself (passthrough);
 * on an INBOUND one, the original destination (or 127.0.0.1 / ::1 at its port with
 * `inbound_to_localhost`).
 *
 * Mesh mTLS (docs/mesh-tls.md): between agents the relay is TLS 1.3 with ALPN remora.mesh/tcp, run by
 * tls/mesh_relay.h over the plain sockets. The calling agent wraps a relay to an endpoint that runs an
 * agent under the rules of the HTTP hops (a `peer: agent` cluster, a meshed Service's agent hop, or a
 * meshed Service reached through an OUTBOUND transparent listener; an expected identity; no `tls:` of
 * the cluster's; MeshTLS not DISABLE; an identity in service), except the application's own TLS
 * (rm_dconn_t.app_tls), which is relayed as it is. It connects, handshakes (bounded by the cluster's
 * connect_timeout_ms; a peer that is not the expected SPIFFE ID fails it) and relays. The serving agent
 * gets the connections whose ClientHello offers remora.mesh/tcp (rm_dconn_t.mesh_tcp), handshakes
 * (bounded by limits.detect_timeout_ms; client certificate required), keeps the caller's SPIFFE ID in
 * rm_dconn_t.peer_identity, and relays the plaintext to the destination as for any inbound connection.
 * Half-close: a FIN from the plaintext side becomes close_notify (then the FIN) on the TLS side, a
 * received close_notify becomes shutdown(SHUT_WR) on the plaintext side; the other way goes on. A TLS
 * error, or a peer agent that closes without close_notify (a truncation), resets the plaintext side.
 *
 * Authorization: on every listener but an OUTBOUND transparent one, the policies of the destination
 * cluster (a Service's AuthorizationPolicy; a bootstrap cluster's `authorization`) decide by the
 * caller's SPIFFE ID (none for plaintext): an ALLOW rule with `to` conditions matches no connection, a
 * DENY rule's `to` conditions are ignored. A refused connection is closed before any upstream connect,
 * counted in remora_tcp_authz_denied_total and logged at most once per worker per
 * RM_TCP_DENIED_LOG_INTERVAL_MS.
 *
 * Flow control: each direction has at most one write in flight. Plaintext to plaintext, the write is
 * of the reading socket's whole input buffer, taken over (no copy); the source reads on into a second
 * buffer up to RM_TCP_READ_AHEAD while the write is in flight, and is paused past it until the write
 * completes, so a direction holds at most 2 x (RM_TCP_READ_AHEAD + one read: h2o reads at most a few
 * tens of KiB at a time) whatever the speeds of the two peers. Into TLS, what the source has read is encrypted
 * once the previous records are written; meanwhile it reads on up to RM_TCP_READ_AHEAD. Out of TLS, at
 * most RM_TCP_TLS_PLAIN_MAX bytes are decrypted per write, the ciphertext after them left in the
 * socket's input buffer, which may grow to RM_TCP_READ_AHEAD (+ one read) while the write is in flight. End of stream is passed on
 * as a half-close once the bytes before it are written; the connection closes when both directions have ended, on any write error,
 * at the idle timeout (limits.idle_timeout_ms with no byte either way) or when the upstream cannot be reached (the cluster's
 * connect_timeout_ms, 10 s for a passthrough).
 *
 * Counted per listener: remora_tcp_connections_total / _active, remora_tcp_bytes_total{direction}
 * (application bytes, before encryption), remora_tcp_connect_failures_total (mesh handshake failures
 * included), remora_tcp_idle_timeouts_total (obs/stats.h); mesh handshakes and hops in
 * remora_mesh_tls_handshakes_total / remora_mesh_tls_connections_total (tls/mesh.h).
 *
 * Thread: the worker that owns the downstream connection.
 */
#ifndef remora__tcp_proxy_h
#define remora__tcp_proxy_h

#include "net/listener.h"

/** Connect timeout of a passthrough (original destination) connection: Istio's default connect timeout. */
#define RM_TCP_PASSTHROUGH_CONNECT_TIMEOUT_MS 10000
/** Plaintext to plaintext: how much a source may read on while the previous bytes are being written. */
#define RM_TCP_READ_AHEAD (64 * 1024)
/** Out of mesh mTLS: the most plaintext decrypted ahead of one write to the application. */
#define RM_TCP_TLS_PLAIN_MAX (64 * 1024)
/** Connections refused by authorization are logged at most once per worker per this interval. */
#define RM_TCP_DENIED_LOG_INTERVAL_MS 10000

/* rm_tcp_proxy_accept(rm_dconn_t *dc) is declared in net/listener.h, whose detection calls it. */

#endif
