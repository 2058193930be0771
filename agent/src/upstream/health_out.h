/*
 * The output side of a probe's connection, shared by the active health checks (upstream/health.c) and the
 * application probes on the health port (admin/app_probe.c). h2o allows one write in flight per socket, so what
 * is produced meanwhile (the request, an HTTP/2 session's frames) waits in `out` and leaves in the next write;
 * `inflight` holds the bytes of the write under way until its callback.
 *
 * Bound: a probe appends one request (at most a few KiB: the callers bound it) and its one-request HTTP/2 session
 * adds only the preface, SETTINGS, the request and acknowledgements; nothing received is kept here.
 *
 * Thread: the main thread (the probes' loop). Errors: return values, no logging.
 */
#ifndef remora__upstream_health_out_h
#define remora__upstream_health_out_h

#include <stddef.h>
#include <h2o.h>
#include "upstream/health.h"

typedef struct st_rm_health_out_t {
    /** bytes waiting for the next write (NULL before rm_health_out_init and after rm_health_out_dispose) */
    h2o_buffer_t *out;
    /** the bytes of the write in flight */
    h2o_buffer_t *inflight;
    /** 1 between h2o_socket_write and its callback */
    int writing;
} rm_health_out_t;

/** Gives `o` its two (empty) buffers, from h2o_socket_buffer_prototype. */
void rm_health_out_init(rm_health_out_t *o);
/** Frees the buffers if `o` has them (a write in flight must be over or its socket closed); `o` may be initialized
 * again. */
void rm_health_out_dispose(rm_health_out_t *o);
/** Copies `len` bytes to `out`. Returns 0, or -1 if the buffer could not grow. */
int rm_health_out_append(rm_health_out_t *o, const void *data, size_t len);
/**
 * Writes what waits on `sock`, after the HTTP/2 `session` (with its `codec`; session NULL: none, HTTP/1.x) has added
 * the frames it has ready; does nothing while a write is in flight or when `sock` is NULL. `on_write` is h2o's write
 * callback: it calls rm_health_out_written, then flushes again unless the write failed. Returns 0, or -1 if the
 * session reported an error (nothing written: the caller ends the exchange).
 */
int rm_health_out_flush(rm_health_out_t *o, h2o_socket_t *sock, const rm_health_h2_codec_t *codec, void *session,
                        h2o_socket_cb on_write);
/** In the write callback, first: the write in flight is over and its bytes are released. */
void rm_health_out_written(rm_health_out_t *o);

#endif
