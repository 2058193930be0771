#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <h2o/socket.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "proxy/attempt.h"
#include "proxy/stream.h"

static __thread rm_recycle_t stream_allocator = RM_RECYCLE_INITIALIZER(rm_stream_t, 1024);
static const rm_filter_chain_t *default_chain;
static const rm_filter_chain_t *(*chain_for_listener)(const rm_config_listener_t *listener);
static const rm_stream_observer_t *observers[RM_STREAM_MAX_OBSERVERS];
static unsigned num_observers;

unsigned
rm_stream_register_observer(const rm_stream_observer_t *observer)
{
    if (num_observers == RM_STREAM_MAX_OBSERVERS)
        rm_fatal("more than %d stream observers", RM_STREAM_MAX_OBSERVERS);
    observers[num_observers] = observer;
    return num_observers++;
}

const char *
rm_stream_direction(const rm_stream_t *s)
{
    const rm_config_listener_t *l = s->listener;
    if (l == NULL)
        return "";
    if (l->direction != RM_DIRECTION_NONE)
        return rm_config_direction_name(l->direction);
    return l->name != NULL ? l->name : "";
}

void
rm_stream_attempt_started(rm_stream_t *s, rm_attempt_t *a)
{
    for (unsigned i = 0; i != num_observers; ++i)
        if (observers[i]->on_attempt_start != NULL)
            observers[i]->on_attempt_start(s, a);
}

void
rm_stream_attempt_ended(rm_stream_t *s, rm_attempt_t *a)
{
    if (!a->mirror && a->endpoint_name[0] != '\0') {
        /* the last try that reached an endpoint is the one the response (or the failure) came from */
        memcpy(s->info.upstream_addr, a->endpoint_name, sizeof(s->info.upstream_addr));
        s->info.upstream_addr[sizeof(s->info.upstream_addr) - 1] = '\0';
    }
    for (unsigned i = 0; i != num_observers; ++i)
        if (observers[i]->on_attempt_end != NULL)
            observers[i]->on_attempt_end(s, a);
}

void
rm_stream_set_default_chain(const rm_filter_chain_t *chain)
{
    default_chain = chain;
}

void
rm_stream_set_chain_selector(const rm_filter_chain_t *(*select)(const rm_config_listener_t *listener))
{
    chain_for_listener = select;
}

rm_stream_t *
rm_stream_create(rm_worker_t *worker, rm_config_t *config, const rm_config_listener_t *listener, rm_listener_stats_t *lstats,
                 const rm_stream_down_ops_t *down, void *down_ctx)
{
    rm_stream_t *s = rm_recycle_alloc(&stream_allocator);
    s->worker = worker;
    s->config = rm_config_ref(config);
    s->listener = listener;
    s->lstats = lstats;
    rm_pool_init(&s->pool);
    h2o_buffer_init(&s->req_body.buf, &rm_pipe_buffer_prototype);
    h2o_buffer_init(&s->resp_body.buf, &rm_pipe_buffer_prototype);
    s->req.content_length = -1;
    s->resp.content_length = -1;
    s->down = down;
    s->down_ctx = down_ctx;
    s->chain = chain_for_listener != NULL && listener != NULL ? chain_for_listener(listener) : default_chain;
    s->started_at_us = rm_clock_now_us();
    s->info.grpc_status = -1;
    s->info.protocol = down != NULL ? down->protocol : NULL;
    return s;
}

void
rm_stream_set_peer(rm_stream_t *s, const struct sockaddr *addr, socklen_t len)
{
    if (len > sizeof(s->peer))
        len = 0;
    if (len != 0)
        memcpy(&s->peer, addr, len);
    s->peerlen = len;
}

void
rm_stream_set_peer_identity(rm_stream_t *s, const char *identity, uint64_t hash)
{
    if (identity == NULL)
        return;
    size_t len = strlen(identity) + 1;
    char *copy = h2o_mem_alloc_pool(&s->pool, len);
    memcpy(copy, identity, len);
    s->peer_identity = copy;
    s->peer_identity_hash = hash;
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
destroy(rm_stream_t *s)
{
    if (s->counted && num_observers != 0) {
        s->info.ended_at_us = rm_clock_now_us();
        for (unsigned i = 0; i != num_observers; ++i)
            if (observers[i]->on_end != NULL)
                observers[i]->on_end(s);
    }
    if (s->filter_state != NULL) {
        for (size_t i = 0; i != s->chain->num_filters; ++i) {
            const rm_filter_t *f = s->chain->filters[i];
            if (f->on_destroy != NULL && i < s->chain_pos)
                f->on_destroy(s, s->filter_state[i]);
        }
    }
    if (s->counted)
        RM_STAT_DEC(s->lstats->rq_active);
    h2o_buffer_dispose(&s->req_body.buf);
    h2o_buffer_dispose(&s->resp_body.buf);
    rm_pool_clear(&s->pool);
    rm_config_unref(s->config);
    rm_recycle_free(&stream_allocator, s);
}

static void
maybe_destroy(rm_stream_t *s)
{
    if (s->down_detached && s->num_attempts == 0)
        destroy(s);
}

void
rm_stream_attempt_added(rm_stream_t *s)
{
    ++s->num_attempts;
}

void
rm_stream_attempt_removed(rm_stream_t *s)
{
    --s->num_attempts;
    maybe_destroy(s);
}

/* Tells the filters that ran to stop their upstream work (attempts, timers). Once. */
static void
abort_filters(rm_stream_t *s)
{
    if (s->aborted)
        return;
    s->aborted = 1;
    s->req_discard = 1;
    if (s->filter_state == NULL)
        return;
    /* the stream must survive the attempts' cancellation, which may drop their references */
    ++s->num_attempts;
    for (size_t i = s->chain_pos; i != 0; --i) {
        const rm_filter_t *f = s->chain->filters[i - 1];
        if (f->on_abort != NULL)
            f->on_abort(s, s->filter_state[i - 1]);
    }
    --s->num_attempts;
}

void
rm_stream_detach_downstream(rm_stream_t *s)
{
    s->down_detached = 1;
    s->down = NULL;
    if (s->num_attempts != 0)
        abort_filters(s);
    maybe_destroy(s);
}

void *
rm_stream_filter_state(rm_stream_t *s, const rm_filter_t *filter)
{
    if (s->filter_state == NULL)
        return NULL;
    for (size_t i = 0; i != s->chain->num_filters; ++i)
        if (s->chain->filters[i] == filter)
            return s->filter_state[i];
    return NULL;
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

/*
 * Filter chain
 */

/* Allocates the per-stream state of the chain's filters from `from` on (zeroed, pool memory). */
static void
alloc_filter_state(rm_stream_t *s, size_t from)
{
    const rm_filter_chain_t *chain = s->chain;
    /* one allocation and one memset for every filter's state: this runs once per request */
    size_t total = 0;
    for (size_t i = from; i != chain->num_filters; ++i)
        total += (chain->filters[i]->state_size + 15) & ~(size_t)15;
    char *p = total != 0 ? h2o_mem_alloc_pool(&s->pool, total) : NULL;
    if (p != NULL)
        memset(p, 0, total);
    for (size_t i = from; i != chain->num_filters; ++i) {
        size_t sz = (chain->filters[i]->state_size + 15) & ~(size_t)15;
        s->filter_state[i] = sz != 0 ? p : NULL;
        p += sz;
    }
}

void
rm_stream_reselect_chain(rm_stream_t *s)
{
    const rm_filter_chain_t *chain = chain_for_listener != NULL && s->listener != NULL ? chain_for_listener(s->listener) : s->chain;
    if (chain == s->chain)
        return;
    assert(s->chain_pos <= 1 && chain->filters[0] == s->chain->filters[0]);
    void **state = h2o_mem_alloc_pool(&s->pool, sizeof(void *) * (chain->num_filters + 1));
    state[0] = s->filter_state != NULL ? s->filter_state[0] : NULL;
    s->chain = chain;
    s->filter_state = state;
    alloc_filter_state(s, s->chain_pos);
}

static void note_cause(rm_stream_t *s, rm_local_reply_t cause);

static void
run_chain(rm_stream_t *s)
{
    const rm_filter_chain_t *chain = s->chain;
    if (s->filter_state == NULL) {
        s->filter_state = h2o_mem_alloc_pool(&s->pool, sizeof(void *) * (chain->num_filters + 1));
        alloc_filter_state(s, 0);
    }
    while (s->chain_pos < chain->num_filters && !s->aborted && !s->resp_head_sent) {
        size_t i = s->chain_pos++;
        const rm_filter_t *f = chain->filters[i];
        if (f->on_request_head != NULL && f->on_request_head(s, s->filter_state[i]) == RM_FILTER_STOP)
            return;
    }
}

void
rm_stream_resume(rm_stream_t *s)
{
    run_chain(s);
}

static void
notify_request_body(rm_stream_t *s)
{
    for (size_t i = 0; i != s->chain_pos; ++i) {
        const rm_filter_t *f = s->chain->filters[i];
        if (f->on_request_body != NULL)
            f->on_request_body(s, s->filter_state[i]);
    }
}

/*
 * Downstream side
 */

void
rm_stream_on_request_head(rm_stream_t *s)
{
    count_request(s);
    for (unsigned i = 0; i != num_observers; ++i)
        if (observers[i]->on_request_head != NULL)
            observers[i]->on_request_head(s);
    /* request limits (docs/hardening.md), before anything is routed: the HTTP/1.1 codec refuses a long target itself
     * (414 at the byte that crosses the limit), so this catches HTTP/2's :path; a declared length over the body limit
     * is refused before a byte goes upstream */
    const rm_config_limits_t *limits = &s->config->limits;
    if (limits->max_request_uri_bytes != 0 && s->req.path.len > limits->max_request_uri_bytes) {
        RM_STAT_INC(s->lstats->limit[RM_STAT_LIMIT_URI_TOO_LONG]);
        rm_stream_reply(s, RM_LOCAL_URI_TOO_LONG, NULL);
        return;
    }
    if (limits->max_request_body_bytes != 0 && s->req.content_length > (int64_t)limits->max_request_body_bytes) {
        RM_STAT_INC(s->lstats->limit[RM_STAT_LIMIT_BODY_TOO_LARGE]);
        rm_stream_reply(s, RM_LOCAL_BODY_TOO_LARGE, NULL);
        return;
    }
    run_chain(s);
}

void
rm_stream_on_request_body(rm_stream_t *s, const void *data, size_t len)
{
    if (len == 0)
        return;
    uint32_t max_body = s->config->limits.max_request_body_bytes;
    /* an upgraded (WebSocket) stream's bytes are a tunnel, not a request body: no limit */
    if (max_body != 0 && !s->req_discard && s->req.upgrade.len == 0 && s->req_body.bytes_in + len > max_body) {
        /* a body without a length (chunked, or HTTP/2 DATA beyond what content-length said) grew over the limit: 413
         * while no response has started, else the downstream half is reset (HTTP/1.1: the connection is closed) */
        RM_STAT_INC(s->lstats->limit[RM_STAT_LIMIT_BODY_TOO_LARGE]);
        if (s->resp_head_sent) {
            note_cause(s, RM_LOCAL_BODY_TOO_LARGE);
            abort_filters(s);
            if (s->down != NULL)
                s->down->reset(s, rm_local_replies[RM_LOCAL_BODY_TOO_LARGE].h2_error);
            return; /* the reset may have freed the stream */
        }
        rm_stream_reply(s, RM_LOCAL_BODY_TOO_LARGE, NULL);
        /* req_discard is set now: these bytes are dropped and acknowledged below */
    }
    if (s->req_discard) {
        /* nobody will read it (local reply, or the upstream exchange is over): drop it, but keep the
         * window open so the connection's other streams are not starved */
        s->req_body.bytes_in += len;
        s->req_base += len;
        s->req_acked += len;
        if (s->down != NULL)
            s->down->req_body_consumed(s, len);
        return;
    }
    pipe_write(&s->req_body, data, len);
    notify_request_body(s);
}

void
rm_stream_on_request_end(rm_stream_t *s, rm_headers_t *trailers)
{
    s->req_done = 1;
    s->req_body.eos = 1;
    s->req_body.trailers = trailers;
    if (!s->req_discard)
        notify_request_body(s);
}

void
rm_stream_on_downstream_abort(rm_stream_t *s)
{
    RM_STAT_INC(s->lstats->rs_reset);
    if (!s->resp_body.eos || s->resp_body.buf->size != 0)
        s->info.flag = "DC"; /* the downstream went away before the whole response */
    s->down = NULL;
    abort_filters(s);
}

size_t
rm_stream_read_response_body(rm_stream_t *s, void *dst, size_t max)
{
    size_t n = pipe_read(&s->resp_body, dst, max);
    if (n != 0) {
        s->info.resp_bytes += n;
        for (size_t i = s->chain_pos; i != 0; --i) {
            const rm_filter_t *f = s->chain->filters[i - 1];
            if (f->on_response_consumed != NULL)
                f->on_response_consumed(s, s->filter_state[i - 1], n);
        }
    }
    return n;
}

size_t
rm_stream_read_request_at(rm_stream_t *s, uint64_t off, void *dst, size_t max)
{
    uint64_t avail = s->req_body.bytes_in - off;
    size_t n = avail < max ? (size_t)avail : max;
    if (n == 0)
        return 0;
    memcpy(dst, s->req_body.buf->bytes + (off - s->req_base), n);
    if (off + n > s->req_acked) {
        size_t delta = off + n - s->req_acked;
        s->req_acked = off + n;
        if (s->down != NULL)
            s->down->req_body_consumed(s, delta);
    }
    return n;
}

void
rm_stream_drop_request_before(rm_stream_t *s, uint64_t off)
{
    if (off <= s->req_base)
        return;
    h2o_buffer_consume(&s->req_body.buf, off - s->req_base);
    s->req_base = off;
}

/*
 * Response side
 */

static void
count_response(rm_stream_t *s)
{
    RM_STAT_INC(s->lstats->rs_by_class[rm_stat_status_class(s->resp.status)]);
}

static void
send_head(rm_stream_t *s)
{
    for (size_t i = s->chain_pos; i != 0; --i) {
        const rm_filter_t *f = s->chain->filters[i - 1];
        if (f->on_response_head != NULL)
            f->on_response_head(s, s->filter_state[i - 1]);
    }
    s->resp_head_sent = 1;
    s->info.status = s->resp.status;
    if (s->resp_body.eos && s->req.is_grpc)
        s->info.grpc_status = rm_headers_grpc_status(&s->resp.headers); /* trailers-only */
    count_response(s);
    s->down->send_response_head(s);
}

void
rm_stream_on_response_head(rm_stream_t *s)
{
    if (s->down == NULL)
        return;
    send_head(s);
}

void
rm_stream_on_response_body(rm_stream_t *s, const void *data, size_t len)
{
    if (len == 0)
        return;
    if (s->down == NULL) {
        for (size_t i = s->chain_pos; i != 0; --i) {
            const rm_filter_t *f = s->chain->filters[i - 1];
            if (f->on_response_consumed != NULL)
                f->on_response_consumed(s, s->filter_state[i - 1], len);
        }
        return;
    }
    pipe_write(&s->resp_body, data, len);
    s->down->resp_body_ready(s);
}

void
rm_stream_on_response_end(rm_stream_t *s, rm_headers_t *trailers)
{
    s->resp_body.eos = 1;
    s->resp_body.trailers = trailers;
    if (trailers != NULL && s->req.is_grpc)
        s->info.grpc_status = rm_headers_grpc_status(trailers);
    if (s->down != NULL)
        s->down->resp_body_ready(s);
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
rm_stream_abort_response(rm_stream_t *s, int grpc_status, uint32_t h2_error, const char *message)
{
    if (s->down == NULL || s->resp_body.eos)
        return;
    if (s->req.is_grpc) {
        /* the response started: end it with trailers carrying the status, after whatever body bytes
         * are still buffered */
        rm_headers_t *trailers = h2o_mem_alloc_pool(&s->pool, sizeof(*trailers));
        memset(trailers, 0, sizeof(*trailers));
        set_grpc_status(s, trailers, grpc_status, message);
        rm_stream_on_response_end(s, trailers);
        return;
    }
    if (s->info.flag == NULL)
        s->info.flag = "UR"; /* the upstream failed mid-response */
    s->down->reset(s, h2_error);
}

static void send_local_reply(rm_stream_t *s, int http_status, int grpc_status, const char *message, const rm_headers_t *extra);

void
rm_stream_send_local_reply(rm_stream_t *s, int http_status, int grpc_status, const char *message)
{
    send_local_reply(s, http_status, grpc_status, message, NULL);
}

static void
send_local_reply(rm_stream_t *s, int http_status, int grpc_status, const char *message, const rm_headers_t *extra)
{
    if (s->resp_head_sent)
        return;
    abort_filters(s);
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
    if (extra != NULL)
        for (size_t i = 0; i != extra->size; ++i)
            rm_headers_add(&s->pool, &s->resp.headers, extra->entries[i].name, extra->entries[i].value);
    s->resp_body.eos = 1;
    send_head(s);
}

static void
note_cause(rm_stream_t *s, rm_local_reply_t cause)
{
    s->info.cause = cause;
    s->info.flag = rm_local_replies[cause].flag;
}

void
rm_stream_reply_status(rm_stream_t *s, rm_local_reply_t cause, int http_status, int grpc_status, const char *message)
{
    if (s->resp_head_sent)
        return;
    RM_STAT_INC(s->lstats->local_replies[cause]);
    note_cause(s, cause);
    rm_stream_send_local_reply(s, http_status, grpc_status, message);
}

void
rm_stream_reply_with_headers(rm_stream_t *s, rm_local_reply_t cause, int http_status, int grpc_status, const char *message,
                             const rm_headers_t *extra)
{
    if (s->resp_head_sent)
        return;
    RM_STAT_INC(s->lstats->local_replies[cause]);
    note_cause(s, cause);
    send_local_reply(s, http_status, grpc_status, message, extra);
}

void
rm_stream_reply(rm_stream_t *s, rm_local_reply_t cause, const char *detail)
{
    const rm_local_reply_row_t *row = &rm_local_replies[cause];
    char msg[768];
    if (detail != NULL && detail[0] != '\0')
        snprintf(msg, sizeof(msg), "%s: %s", row->message, detail);
    else
        snprintf(msg, sizeof(msg), "%s", row->message);
    rm_stream_reply_status(s, cause, row->http_status, row->grpc_status, msg);
}
