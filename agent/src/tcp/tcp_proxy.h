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
 * Flow control: each direction has at most one write in flight, made straight from the reading
 * socket's input buffer; the reading side is paused until that write completes, so a direction holds
 * at most one read's worth of bytes (h2o reads at most a few tens of KiB at a time) whatever the
 * speeds of the two peers. End of stream is passed on as a half-close (shutdown(SHUT_WR)) once the
 * bytes before it are written; the connection closes when both directions have ended, on any write
 * error, at the idle timeout (limits.idle_timeout_ms with no byte either way) or when the upstream
 * cannot be reached (the cluster's connect_timeout_ms, 10 s for a passthrough).
 *
 * Counted per listener: remora_tcp_connections_total / _active, remora_tcp_bytes_total{direction},
 * remora_tcp_connect_failures_total, remora_tcp_idle_timeouts_total (obs/stats.h).
 *
 * Thread: the worker that owns the downstream connection.
 */
#ifndef remora__tcp_proxy_h
#define remora__tcp_proxy_h

#include "net/listener.h"

/** Connect timeout of a passthrough (original destination) connection: Istio's default connect timeout. */
#define RM_TCP_PASSTHROUGH_CONNECT_TIMEOUT_MS 10000

/* rm_tcp_proxy_accept(rm_dconn_t *dc) is declared in net/listener.h, whose detection calls it. */

#endif
