#include <string.h>
#include "remora/strutil.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "proxy/attempt.h"
#include "proxy/stream.h"

static __thread rm_recycle_t attempt_allocator = RM_RECYCLE_INITIALIZER(rm_attempt_t, 1024);

rm_attempt_t *
rm_attempt_create(rm_stream_t *s, const rm_attempt_owner_ops_t *owner, void *owner_ctx, rm_cluster_stats_t *cstats)
{
    rm_attempt_t *a = rm_recycle_alloc(&attempt_allocator);
    memset(a, 0, sizeof(*a));
    a->stream = s;
    a->pool = &s->pool;
    a->req = &s->req;
    a->limits = &s->config->limits;
    a->cstats = cstats;
    a->resp.content_length = -1;
    a->owner = owner;
    a->owner_ctx = owner_ctx;
    a->started_at_us = rm_clock_now_us();
    a->grpc_status = -1;
    rm_stream_attempt_added(s);
    return a;
}

static void
uncount(rm_attempt_t *a)
{
    if (a->counted) {
        RM_STAT_DEC(a->cstats->rq_active);
        a->counted = 0;
    }
}

/* Frees the attempt once neither its owner nor a codec holds it; never while a codec callback of
 * this attempt is still on the stack (`busy`). */
static void
maybe_free(rm_attempt_t *a)
{
    if (!a->released || a->attached || a->busy != 0)
        return;
    if (a->lb_done != NULL)
        a->lb_done(a); /* failed or cancelled before a head: the balancer's pick ends here */
    if (h2o_linklist_is_linked(&a->owner_link))
        h2o_linklist_unlink(&a->owner_link);
    rm_stream_t *s = a->stream;
    rm_stream_attempt_ended(s, a);
    rm_recycle_free(&attempt_allocator, a);
    rm_stream_attempt_removed(s);
}

/*
 * Owner side
 */

void
rm_attempt_start(rm_attempt_t *a)
{
    rm_stream_attempt_started(a->stream, a);
}

void
rm_attempt_commit(rm_attempt_t *a)
{
    rm_stream_t *s = a->stream;
    a->committed = 1;
    s->resp = a->resp;
    if (a->resp_no_body)
        s->resp_body.eos = 1;
    rm_stream_on_response_head(s);
}

void
rm_attempt_cancel(rm_attempt_t *a)
{
    if (a->released)
        return;
    a->released = 1;
    if (a->attached) {
        ++a->busy;
        a->up->cancel(a);
        --a->busy;
    }
    maybe_free(a);
}

void
rm_attempt_release(rm_attempt_t *a)
{
    a->released = 1;
    maybe_free(a);
}

void
rm_attempt_notify_req_body(rm_attempt_t *a)
{
    if (a->attached)
        a->up->req_body_ready(a);
}

void
rm_attempt_notify_resp_consumed(rm_attempt_t *a, size_t n)
{
    if (a->attached)
        a->up->resp_body_consumed(a, n);
}

/*
 * Codec side
 */

void
rm_attempt_attach(rm_attempt_t *a, const rm_attempt_up_ops_t *ops, void *ctx)
{
    a->up = ops;
    a->up_ctx = ctx;
    a->attached = 1;
    if (!a->counted) {
        RM_STAT_INC(a->cstats->rq_total);
        RM_STAT_INC(a->cstats->rq_active);
        a->counted = 1;
    }
}

void
rm_attempt_unattach(rm_attempt_t *a)
{
    a->attached = 0;
    a->up = NULL;
    a->up_ctx = NULL;
    uncount(a);
}

void
rm_attempt_detach(rm_attempt_t *a)
{
    if (!a->attached)
        return;
    rm_attempt_unattach(a);
    maybe_free(a);
}

size_t
rm_attempt_req_pending(const rm_attempt_t *a)
{
    return a->stream->req_body.bytes_in - a->req_off;
}

int
rm_attempt_req_eos(const rm_attempt_t *a)
{
    return a->stream->req_body.eos;
}

rm_headers_t *
rm_attempt_req_trailers(const rm_attempt_t *a)
{
    return a->stream->req_body.trailers;
}

size_t
rm_attempt_read_request_body(rm_attempt_t *a, void *dst, size_t max)
{
    rm_stream_t *s = a->stream;
    size_t n = rm_stream_read_request_at(s, a->req_off, dst, max);
    a->req_off += n;
    if (!s->req_keep)
        rm_stream_drop_request_before(s, a->req_off);
    return n;
}

size_t
rm_attempt_resp_buffered(const rm_attempt_t *a)
{
    return a->committed ? a->stream->resp_body.buf->size : 0;
}

/* an attempt nobody will commit (abandoned, or a mirror): its bytes are acknowledged and dropped */
static int
discarding(const rm_attempt_t *a)
{
    return a->released || a->mirror;
}

void
rm_attempt_on_response_head(rm_attempt_t *a)
{
    a->head_received = 1;
    if (a->resp_no_body)
        a->grpc_status = rm_headers_grpc_status(&a->resp.headers);
    if (a->lb_done != NULL)
        a->lb_done(a);
    RM_STAT_INC(a->cstats->rs_by_class[rm_stat_status_class(a->resp.status)]);
    if (discarding(a))
        return;
    ++a->busy;
    a->owner->on_head(a);
    --a->busy;
    maybe_free(a);
}

void
rm_attempt_on_response_body(rm_attempt_t *a, const void *data, size_t len)
{
    if (len == 0)
        return;
    ++a->busy;
    if (!a->committed && !discarding(a))
        a->owner->on_body_start(a);
    if (a->committed && !a->released)
        rm_stream_on_response_body(a->stream, data, len);
    else if (a->attached)
        a->up->resp_body_consumed(a, len);
    --a->busy;
    maybe_free(a);
}

void
rm_attempt_on_response_end(rm_attempt_t *a, rm_headers_t *trailers)
{
    a->resp_done = 1;
    if (trailers != NULL)
        a->grpc_status = rm_headers_grpc_status(trailers);
    if (a->released)
        return;
    ++a->busy;
    if (a->committed) {
        rm_stream_on_response_end(a->stream, trailers);
        a->owner->on_complete(a);
    } else {
        a->owner->on_end(a, trailers);
    }
    --a->busy;
    maybe_free(a);
}

void
rm_attempt_on_error(rm_attempt_t *a, rm_upstream_error_t err, uint32_t h2_error, const char *detail)
{
    if (err == RM_UPSTREAM_ERR_RESET || err == RM_UPSTREAM_ERR_CLOSED || err == RM_UPSTREAM_ERR_PROTOCOL)
        RM_STAT_INC(a->cstats->rq_reset);
    else
        RM_STAT_INC(a->cstats->rq_unavailable);
    a->upstream_failed = 1;
    a->error = err;
    rm_attempt_unattach(a);
    if (!a->released) {
        ++a->busy;
        a->owner->on_error(a, err, h2_error, detail);
        --a->busy;
    }
    maybe_free(a);
}
