/*
 * One write in flight per probe connection (upstream/health_out.h).
 */
#include <string.h>
#include "upstream/health_out.h"

void
rm_health_out_init(rm_health_out_t *o)
{
    h2o_buffer_init(&o->out, &h2o_socket_buffer_prototype);
    h2o_buffer_init(&o->inflight, &h2o_socket_buffer_prototype);
}

void
rm_health_out_dispose(rm_health_out_t *o)
{
    if (o->out != NULL) {
        h2o_buffer_dispose(&o->out);
        h2o_buffer_dispose(&o->inflight);
        o->out = o->inflight = NULL;
    }
    o->writing = 0;
}

int
rm_health_out_append(rm_health_out_t *o, const void *data, size_t len)
{
    h2o_iovec_t dst = h2o_buffer_reserve(&o->out, len);
    if (dst.base == NULL)
        return -1;
    memcpy(dst.base, data, len);
    o->out->size += len;
    return 0;
}

int
rm_health_out_flush(rm_health_out_t *o, h2o_socket_t *sock, const rm_health_h2_codec_t *codec, void *session,
                    h2o_socket_cb on_write)
{
    if (o->writing || sock == NULL)
        return 0;
    if (session != NULL && codec->send(session, &o->out) != 0)
        return -1;
    if (o->out->size == 0)
        return 0;
    /* the bytes handed to h2o must stay put until the callback: swap, and produce into the other buffer meanwhile */
    h2o_buffer_t *t = o->out;
    o->out = o->inflight;
    o->inflight = t;
    o->writing = 1;
    h2o_iovec_t buf = h2o_iovec_init(o->inflight->bytes, o->inflight->size);
    h2o_socket_write(sock, &buf, 1, on_write);
    return 0;
}

void
rm_health_out_written(rm_health_out_t *o)
{
    o->writing = 0;
    h2o_buffer_consume(&o->inflight, o->inflight->size);
}
