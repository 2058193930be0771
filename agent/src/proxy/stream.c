#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <h2o/socket.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "core/alloc.h"
#include "proxy/stream.h"
#include "router/router.h"
#include "upstream/cluster.h"

static __thread rm_recycle_t stream_allocator = RM_RECYCLE_INITIALIZER(rm_stream_t, 1024);

rm_stream_t *
rm_stream_create(rm_worker_t *worker, rm_config_t *config, const rm_config_listener_t *listener, rm_listener_stats_t *lstats,
                 const rm_stream_down_ops_t *down, void *down_ctx)
{
    rm_stream_t *s = rm_recycle_alloc(&stream_allocator);
    s->worker = worker;
    s->config = rm_config_ref(config);
    s->listener = listener;
    s->lstats = lstats;
    h2o_mem_init_pool(&s->pool);
    h2o_buffer_init(&s->req_body.buf, &rm_pipe_buffer_prototype);
    h2o_buffer_init(&s->resp_body.buf, &rm_pipe_buffer_prototype);
    s->req.content_length = -1;
    s->resp.content_length = -1;
    s->down = down;
    s->down_ctx = down_ctx;
    s->up_detached = 1;
    s->started_at_us = rm_now_us();
    return s;
}

static void
count_request(rm_stream_t *s)
{
    if (s->counted)
        return;
    s->counted = 1;
    RM_STAT_INC(s->lstats->rq_total);
    RM_STAT_INC(s->lstats->rq_active);
}

static void
stop_timeout(rm_stream_t *s)
{
    if (h2o_timeout_is_linked(&s->_timeout))
        h2o_timeout_unlink(&s->_timeout);
}

static void
destroy(rm_stream_t *s)
{
    stop_timeout(s);
    if (s->counted)
        RM_STAT_DEC(s->lstats->rq_active);
    h2o_buffer_dispose(&s->req_body.buf);
    h2o_buffer_dispose(&s->resp_body.buf);
    h2o_mem_clear_pool(&s->pool);
    if (s->cluster != NULL)
        rm_cluster_release(s->cluster);
    rm_config_unref(s->config);
    rm_recycle_free(&stream_allocator, s);
}

void
rm_stream_detach_downstream(rm_stream_t *s)
{
    s->down_detached = 1;
    s->down = NULL;
    if (s->up_detached)
        destroy(s);
}

void
rm_stream_detach_upstream(rm_stream_t *s)
{
    if (s->up_detached)
        return;
    s->up_detached = 1;
    s->up = NULL;
    if (s->upstream_counted) {
        RM_STAT_DEC(s->cstats->rq_active);
        s->upstream_counted = 0;
    }
    if (s->down_detached)
        destroy(s);
}

void
rm_stream_attach_upstream(rm_stream_t *s, const rm_stream_up_ops_t *ops, void *ctx)
{
    s->up = ops;
    s->up_ctx = ctx;
    s->up_detached = 0;
    if (s->cstats != NULL && !s->upstream_counted) {
        RM_STAT_INC(s->cstats->rq_total);
        RM_STAT_INC(s->cstats->rq_active);
        s->upstream_counted = 1;
    }
}

static void
pipe_write(rm_pipe_t *p, const void *data, size_t len)
{
    h2o_iovec_t dst = h2o_buffer_reserve(&p->buf, len);
    if (dst.base == NULL)
        rm_fatal("out of memory growing a body buffer");
    memcpy(dst.base, data, len);
    p->buf->size += len;
    p->bytes_in += len;
}

static size_t
pipe_read(rm_pipe_t *p, void *dst, size_t max)
{
    size_t n = p->buf->size < max ? p->buf->size : max;
    if (n != 0) {
        memcpy(dst, p->buf->bytes, n);
        h2o_buffer_consume(&p->buf, n);
    }
    return n;
}

static void on_timeout(h2o_timeout_entry_t *entry);

/*
 * Downstream side
 */

void
rm_stream_on_request_head(rm_stream_t *s)
{
    count_request(s);
    if (s->config->awaiting_snapshot) {
        rm_stream_send_local_reply(s, 503, RM_GRPC_UNAVAILABLE,
                                   "not configured yet: waiting for the first snapshot from the control plane");
        return;
    }
    s->route = rm_router_match(s->listener, &s->req);
    if (s->route == NULL) {
        RM_STAT_INC(s->lstats->rq_no_route);
        char msg[512];
        snprintf(msg, sizeof(msg), "no route for authority '%.*s' path '%.*s'",
                 (int)(s->req.authority.len < 200 ? s->req.authority.len : 200), s->req.authority.base,
                 (int)(s->req.path.len < 200 ? s->req.path.len : 200), s->req.path.base);
        if (s->config->num_clusters == 0)
            snprintf(msg + strlen(msg), sizeof(msg) - strlen(msg), ": no services are configured%s",
                     s->config->version == NULL ? "" : " in the control plane's snapshot");
        rm_stream_send_local_reply(s, 404, RM_GRPC_UNIMPLEMENTED, msg);
        return;
    }
    rm_cluster_t *cluster = NULL;
    if (s->config == s->worker->config)
        cluster = rm_worker_cluster(s->worker, rm_router_pick_cluster(s->route, rm_worker_random(s->worker)));
    if (cluster == NULL) {
        rm_stream_send_local_reply(s, 503, RM_GRPC_UNAVAILABLE, "configuration is being replaced; retry");
        return;
    }
    s->cluster = rm_cluster_acquire(cluster);
    s->cstats = rm_cluster_stats(cluster);
    if (s->route->timeout_ms != 0) {
        s->_timeout.cb = on_timeout;
        h2o_timeout_link(&s->worker->loop, rm_worker_get_timeout(s->worker, s->route->timeout_ms), &s->_timeout);
    }
    rm_cluster_dispatch(cluster, s);
}

void
rm_stream_on_request_body(rm_stream_t *s, const void *data, size_t len)
{
    if (len == 0)
        return;
    if (s->up_detached) {
        /* nobody will read it (local reply or upstream gone): drop it, but keep the window open so
         * the connection's other streams are not starved */
        s->req_body.bytes_in += len;
        if (s->down != NULL)
            s->down->req_body_consumed(s, len);
        return;
    }
    pipe_write(&s->req_body, data, len);
    s->up->req_body_ready(s);
}

void
rm_stream_on_request_end(rm_stream_t *s, rm_headers_t *trailers)
{
    s->req_done = 1;
    s->req_body.eos = 1;
    s->req_body.trailers = trailers;
    if (!s->up_detached)
        s->up->req_body_ready(s);
}

void
rm_stream_on_downstream_abort(rm_stream_t *s)
{
    RM_STAT_INC(s->lstats->rs_reset);
    s->down = NULL;
    if (!s->up_detached)
        s->up->cancel(s);
}

size_t
rm_stream_read_response_body(rm_stream_t *s, void *dst, size_t max)
{
    size_t n = pipe_read(&s->resp_body, dst, max);
    if (n != 0 && !s->up_detached)
        s->up->resp_body_consumed(s, n);
    return n;
}

/*
 * Upstream side
 */

static void
count_response(rm_stream_t *s)
{
    RM_STAT_INC(s->lstats->rs_by_class[rm_stat_status_class(s->resp.status)]);
}

void
rm_stream_on_response_head(rm_stream_t *s)
{
    if (s->cstats != NULL)
        RM_STAT_INC(s->cstats->rs_by_class[rm_stat_status_class(s->resp.status)]);
    if (s->down == NULL)
        return;
    s->resp_head_sent = 1;
    count_response(s);
    s->down->send_response_head(s);
}

void
rm_stream_on_response_body(rm_stream_t *s, const void *data, size_t len)
{
    if (len == 0)
        return;
    if (s->down == NULL) {
        if (!s->up_detached)
            s->up->resp_body_consumed(s, len);
        return;
    }
    pipe_write(&s->resp_body, data, len);
    s->down->resp_body_ready(s);
}

void
rm_stream_on_response_end(rm_stream_t *s, rm_headers_t *trailers)
{
    stop_timeout(s);
    s->resp_body.eos = 1;
    s->resp_body.trailers = trailers;
    if (s->down != NULL)
        s->down->resp_body_ready(s);
}

size_t
rm_stream_read_request_body(rm_stream_t *s, void *dst, size_t max)
{
    size_t n = pipe_read(&s->req_body, dst, max);
    if (n != 0 && s->down != NULL)
        s->down->req_body_consumed(s, n);
    return n;
}

static void
set_grpc_status(rm_stream_t *s, rm_headers_t *headers, int grpc_status, const char *message)
{
    char buf[16];
    int n = snprintf(buf, sizeof(buf), "%d", grpc_status);
    rm_headers_add_copy(&s->pool, headers, H2O_STRLIT("grpc-status"), buf, n);
    if (message != NULL && message[0] != '\0') {
        h2o_iovec_t m = rm_grpc_encode_message(&s->pool, message, strlen(message));
        rm_headers_add(&s->pool, headers, h2o_iovec_init(H2O_STRLIT("grpc-message")), m);
    }
}

void
rm_stream_on_upstream_error(rm_stream_t *s, rm_upstream_error_t err, uint32_t h2_error, const char *detail)
{
    /* the upstream side is gone from here on */
    if (!s->up_detached) {
        s->up_detached = 1;
        s->up = NULL;
        if (s->upstream_counted) {
            RM_STAT_DEC(s->cstats->rq_active);
            s->upstream_counted = 0;
        }
    }
    if (s->cstats != NULL) {
        if (err == RM_UPSTREAM_ERR_RESET || err == RM_UPSTREAM_ERR_CLOSED || err == RM_UPSTREAM_ERR_PROTOCOL)
            RM_STAT_INC(s->cstats->rq_reset);
        else
            RM_STAT_INC(s->cstats->rq_unavailable);
    }
    if (s->down == NULL) {
        if (s->down_detached)
            destroy(s);
        return;
    }
    char msg[512];
    if (!s->resp_head_sent) {
        int http_status = 503, grpc_status = RM_GRPC_UNAVAILABLE;
        const char *what = "upstream connect error";
        switch (err) {
        case RM_UPSTREAM_ERR_CONNECT:
            break;
        case RM_UPSTREAM_ERR_TIMEOUT:
            what = "upstream connect timeout";
            break;
        case RM_UPSTREAM_ERR_RESET:
            what = "upstream reset before response headers";
            if (h2_error != RM_H2_REFUSED_STREAM) {
                http_status = 502;
                grpc_status = rm_grpc_status_from_h2_error(h2_error);
            }
            break;
        case RM_UPSTREAM_ERR_CLOSED:
            what = "upstream connection closed before response headers";
            http_status = 502;
            break;
        case RM_UPSTREAM_ERR_PROTOCOL:
            what = "upstream protocol error";
            http_status = 502;
            grpc_status = RM_GRPC_INTERNAL;
            break;
        }
        snprintf(msg, sizeof(msg), "%s%s%s", what, detail != NULL ? ": " : "", detail != NULL ? detail : "");
        rm_stream_send_local_reply(s, http_status, grpc_status, msg);
        return;
    }
    if (s->resp_body.eos)
        return;
    if (s->req.is_grpc) {
        /* the response started: end it with trailers carrying the status the gRPC spec maps the
         * failure to, after whatever body bytes are still buffered */
        int grpc_status = err == RM_UPSTREAM_ERR_RESET    ? rm_grpc_status_from_h2_error(h2_error)
                          : err == RM_UPSTREAM_ERR_CLOSED ? RM_GRPC_UNAVAILABLE
                                                          : RM_GRPC_INTERNAL;
        snprintf(msg, sizeof(msg), "upstream %s mid-stream%s%s", err == RM_UPSTREAM_ERR_RESET ? "reset" : "connection lost",
                 detail != NULL ? ": " : "", detail != NULL ? detail : "");
        rm_headers_t *trailers = h2o_mem_alloc_pool(&s->pool, sizeof(*trailers));
        memset(trailers, 0, sizeof(*trailers));
        set_grpc_status(s, trailers, grpc_status, msg);
        rm_stream_on_response_end(s, trailers);
        return;
    }
    s->down->reset(s, err == RM_UPSTREAM_ERR_RESET && h2_error != RM_H2_NO_ERROR ? h2_error : RM_H2_INTERNAL_ERROR);
}

void
rm_stream_send_local_reply(rm_stream_t *s, int http_status, int grpc_status, const char *message)
{
    if (s->resp_head_sent)
        return;
    stop_timeout(s);
    if (!s->up_detached)
        s->up->cancel(s);
    if (s->down == NULL)
        return;
    count_request(s);
    s->local_reply = 1;
    memset(&s->resp, 0, sizeof(s->resp));
    if (s->req.is_grpc) {
        /* trailers-only response: one HEADERS frame with END_STREAM */
        s->resp.status = 200;
        s->resp.content_length = -1;
        rm_headers_add(&s->pool, &s->resp.headers, h2o_iovec_init(H2O_STRLIT("content-type")),
                       h2o_iovec_init(H2O_STRLIT("application/grpc")));
        set_grpc_status(s, &s->resp.headers, grpc_status, message);
    } else {
        s->resp.status = http_status;
        rm_headers_add(&s->pool, &s->resp.headers, h2o_iovec_init(H2O_STRLIT("content-type")),
                       h2o_iovec_init(H2O_STRLIT("text/plain; charset=utf-8")));
        size_t len = strlen(message);
        s->resp.content_length = len + 1;
        pipe_write(&s->resp_body, message, len);
        pipe_write(&s->resp_body, "\n", 1);
    }
    rm_headers_add(&s->pool, &s->resp.headers, h2o_iovec_init(H2O_STRLIT("server")), h2o_iovec_init(H2O_STRLIT("remora")));
    s->resp_body.eos = 1;
    s->resp_head_sent = 1;
    count_response(s);
    s->down->send_response_head(s);
}

static void
on_timeout(h2o_timeout_entry_t *entry)
{
    rm_stream_t *s = H2O_STRUCT_FROM_MEMBER(rm_stream_t, _timeout, entry);
    if (s->resp_body.eos)
        return;
    if (s->down == NULL) {
        /* nobody is waiting: just stop the upstream (which may free the stream) */
        if (!s->up_detached)
            s->up->cancel(s);
        return;
    }
    RM_STAT_INC(s->lstats->rq_timeout);
    if (!s->up_detached)
        s->up->cancel(s);
    if (!s->resp_head_sent) {
        rm_stream_send_local_reply(s, 504, RM_GRPC_DEADLINE_EXCEEDED, "request timeout: the upstream did not respond in time");
        return;
    }
    if (s->req.is_grpc) {
        rm_headers_t *trailers = h2o_mem_alloc_pool(&s->pool, sizeof(*trailers));
        memset(trailers, 0, sizeof(*trailers));
        set_grpc_status(s, trailers, RM_GRPC_DEADLINE_EXCEEDED, "request timeout: the response did not complete in time");
        rm_stream_on_response_end(s, trailers);
        return;
    }
    s->down->reset(s, RM_H2_CANCEL);
}
