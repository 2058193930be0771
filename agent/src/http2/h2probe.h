/*
 * The HTTP/2 half of active health checks: one request, one response on a fresh nghttp2 client
 * session, without I/O (upstream/health.h, rm_health_h2_codec_t). The checker owns the socket.
 */
#ifndef remora__h2probe_h
#define remora__h2probe_h

#include "upstream/health.h"

/** The same one-request HTTP/2 codec, for other main-thread probes (the app probes of admin/app_probe.h). Any thread. */
const rm_health_h2_codec_t *rm_h2probe_codec(void);
/** Registers the HTTP/2 health-check codec with the checker. Main thread, once, at start. */
void rm_h2probe_register(void);

#endif
