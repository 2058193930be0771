/*
 * Output side of an HTTP/1.1 connection (downstream or upstream): bytes are appended to `out`
 * and written once per loop iteration; at most one h2o write is in flight, so bytes produced
 * meanwhile collect in `out`. Producers check rm_h1io_pending() against RM_H1_OUT_HIGH_WATER and
 * stop pulling body bytes past it; `on_written` tells them to pull again.
 *
 * Thread: the owning worker.
 */
#ifndef remora__h1io_h
#define remora__h1io_h

#include <h2o.h>
#include "core/worker.h"

#define RM_H1_OUT_HIGH_WATER (64 * 1024)

typedef struct st_rm_h1io_t rm_h1io_t;
struct st_rm_h1io_t {
    rm_worker_t *worker;
    h2o_socket_t *sock;
    h2o_buffer_t *out;
    h2o_buffer_t *_inflight;
    rm_flushable_t _flush;
    uint64_t *bytes_tx_stat;
    /** a write finished (err != NULL: it failed, the connection is broken) */
    void (*on_written)(rm_h1io_t *io, const char *err);
};

void rm_h1io_init(rm_h1io_t *io, rm_worker_t *worker, h2o_socket_t *sock, void (*on_written)(rm_h1io_t *, const char *));
void rm_h1io_schedule_flush(rm_h1io_t *io);
/** Bytes waiting or being written. */
size_t rm_h1io_pending(rm_h1io_t *io);
/**
 * Half-closes the sending side of a cleartext socket (TCP FIN: a tunnel's end of one direction). Call it once nothing is
 * pending. Over TLS it does nothing (a FIN under TLS would cut the record stream): the close of the connection ends both
 * directions there.
 */
void rm_h1io_shutdown_write(rm_h1io_t *io);
/** Releases the buffers and unschedules the flush; the socket is the owner's to close. */
void rm_h1io_dispose(rm_h1io_t *io);

#endif
