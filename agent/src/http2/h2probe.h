/*
 * The HTTP/2 half of active health checks: one request, one response on a fresh nghttp2 client
 * session, without I/O (upstream/health.h, rm_health_h2_codec_t). The checker owns the socket.
 */
#ifndef remora__h2probe_h
#define remora__h2probe_h

/** Registers the HTTP/2 health-check codec with the checker. Main thread, once, at start. */
void rm_h2probe_register(void);

#endif
