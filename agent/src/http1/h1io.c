#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include "remora/log.h"
#include "core/alloc.h"
#include "http1/h1io.h"
#include "obs/stats.h"
#include "net/sockio.h"

static void
on_write_complete(h2o_socket_t *sock, const char *err)
{
    /* owners embed the rm_h1io_t as their first member and set sock->data to themselves */
    rm_h1io_t *io = sock->data;
    h2o_buffer_consume(&io->_inflight, io->_inflight->size);
    if (err == NULL && io->out->size != 0)
        rm_h1io_schedule_flush(io);
    io->on_written(io, err);
}

static void
do_flush(rm_flushable_t *f)
{
    rm_h1io_t *io = H2O_STRUCT_FROM_MEMBER(rm_h1io_t, _flush, f);
    if (io->sock == NULL || h2o_socket_is_writing(io->sock) || io->out->size == 0)
        return;
    h2o_buffer_t *tmp = io->_inflight;
    io->_inflight = io->out;
    io->out = tmp;
    if (io->bytes_tx_stat != NULL)
        RM_STAT_ADD(*io->bytes_tx_stat, io->_inflight->size);
    size_t done = rm_socket_write_now(io->sock, io->_inflight->bytes, io->_inflight->size);
    if (done == io->_inflight->size) {
        /* all taken: complete now (on_written may schedule the next flush; the worker runs flushes until quiet, and
         * what it can write is bounded by what the producers have buffered) */
        on_write_complete(io->sock, NULL);
        return;
    }
    h2o_buffer_consume(&io->_inflight, done);
    h2o_iovec_t buf = h2o_iovec_init(io->_inflight->bytes, io->_inflight->size);
    h2o_socket_write(io->sock, &buf, 1, on_write_complete);
}

void
rm_h1io_init(rm_h1io_t *io, rm_worker_t *worker, h2o_socket_t *sock, void (*on_written)(rm_h1io_t *, const char *))
{
    memset(io, 0, sizeof(*io));
    io->worker = worker;
    io->sock = sock;
    io->on_written = on_written;
    io->_flush.cb = do_flush;
    h2o_buffer_init(&io->out, &rm_pipe_buffer_prototype);
    h2o_buffer_init(&io->_inflight, &rm_pipe_buffer_prototype);
}

void
rm_h1io_schedule_flush(rm_h1io_t *io)
{
    if (io->sock != NULL)
        rm_worker_schedule_flush(io->worker, &io->_flush);
}

size_t
rm_h1io_pending(rm_h1io_t *io)
{
    return io->out->size + io->_inflight->size;
}

void
rm_h1io_dispose(rm_h1io_t *io)
{
    rm_worker_cancel_flush(io->worker, &io->_flush);
    h2o_buffer_dispose(&io->out);
    h2o_buffer_dispose(&io->_inflight);
    io->sock = NULL;
}

void
rm_h1io_shutdown_write(rm_h1io_t *io)
{
    if (io->sock == NULL || io->sock->ssl != NULL)
        return;
    shutdown(h2o_socket_get_fd(io->sock), SHUT_WR);
}
