/*
 * Upstream HTTP/1.1: a keep-alive pool per endpoint per worker. A connection carries one exchange
 * at a time; it goes back to the idle list only when both the request and the response completed
 * cleanly, and idle connections keep reading so a close by the server is noticed at once.
 *
 * Every connection holds a max_connections slot (rm_endpoint_conn_acquire) from its creation to
 * destroy_conn. An attempt that finds no idle connection and may not open one waits on the endpoint
 * (ep->h1_waiting, holding a max_pending_requests slot) for the next connection released to the
 * pool, or for a slot freed by a connection of this endpoint that closes.
 *
 * Upgrade: a request with rm_req_head_t.upgrade is sent with "Connection: Upgrade"; a 101 answer
 * makes the connection a byte tunnel for the rest of its life (never pooled again): request pipe
 * bytes go out raw and the request's end is a FIN; the server's bytes are the response body and its
 * FIN ends the response (and the exchange: nothing more of the request is sent after it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "http1/h1client.h"
#include "http1/h1codec.h"
#include "http1/h1io.h"
#include "proxy/attempt.h"
#include "upstream/breaker.h"
#include "upstream/cluster.h"
#include "net/sockio.h"

typedef struct st_h1c_conn_t {
    rm_h1io_t io; /* first: sock->data points here */
    rm_endpoint_t *ep;
    rm_worker_t *worker;
    rm_connect_t *connecting;
    rm_h1_parser_t *parser;
    rm_attempt_t *s;
    rm_headers_t *resp_trailers;
    rm_upconn_link_t reg;
    h2o_linklist_t idle_link;
    h2o_linklist_t all_link;
    rm_timer_t idle_timeout;
    rm_deferred_t destroy_later;
    unsigned req_chunked : 1;
    unsigned req_sent : 1;
    unsigned resp_head : 1;
    unsigned resp_complete : 1;
    unsigned keep_alive : 1;
    unsigned reading : 1;
    /* the exchange runs on a connection taken from the idle pool, and no response byte came yet:
     * a close now means the server dropped the idle connection before reading the request */
    unsigned reused : 1;
    unsigned resp_bytes : 1;
    unsigned dead : 1;
    unsigned tunnel : 1; /* 101 received: raw bytes both ways */
    unsigned tunnel_out_shut : 1;
} h1c_conn_t;

static const rm_attempt_up_ops_t up_ops;
static void on_read(h2o_socket_t *sock, const char *err);
static void start_exchange(h1c_conn_t *conn);
static void serve_waiting(rm_endpoint_t *ep);

static void
set_reading(h1c_conn_t *conn, int on)
{
    if (conn->dead || conn->io.sock == NULL || conn->reading == (unsigned)on)
        return;
    conn->reading = on;
    if (on)
        h2o_socket_read_start(conn->io.sock, on_read);
    else
        h2o_socket_read_stop(conn->io.sock);
}

static void
destroy_conn(rm_deferred_t *d)
{
    h1c_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h1c_conn_t, destroy_later, d);
    if (conn->connecting != NULL)
        rm_connect_cancel(conn->connecting);
    if (rm_timer_is_linked(&conn->idle_timeout))
        rm_timer_unlink(&conn->idle_timeout);
    if (h2o_linklist_is_linked(&conn->idle_link)) {
        h2o_linklist_unlink(&conn->idle_link);
        --conn->ep->num_h1_idle;
    }
    h2o_linklist_unlink(&conn->all_link);
    rm_upconn_unregister(&conn->reg);
    h2o_socket_t *sock = conn->io.sock;
    rm_h1io_dispose(&conn->io);
    if (sock != NULL) {
        rm_socket_close(sock);
        RM_STAT_DEC(rm_cluster_stats(conn->ep->cluster)->cx_active);
    }
    rm_h1_parser_destroy(conn->parser);
    rm_endpoint_t *ep = conn->ep;
    free(conn);
    /* the slot this connection held may serve an attempt waiting on the endpoint (which it keeps alive) */
    rm_endpoint_conn_release(ep);
    serve_waiting(ep);
    rm_endpoint_unref(ep);
}

/* Ends the connection; a stream still on it gets `err`. */
static void
kill_conn(h1c_conn_t *conn, rm_upstream_error_t err, const char *reason)
{
    if (err == RM_UPSTREAM_ERR_CLOSED && conn->reused && !conn->resp_bytes && !conn->resp_head) {
        err = RM_UPSTREAM_ERR_REFUSED;
        reason = "stale keep-alive connection: closed before any response byte";
    }
    if (conn->dead)
        return;
    set_reading(conn, 0);
    conn->dead = 1;
    if (conn->s != NULL) {
        rm_attempt_t *s = conn->s;
        conn->s = NULL;
        if (conn->resp_complete)
            rm_attempt_detach(s);
        else
            rm_attempt_on_error(s, err, 0, reason);
    }
    rm_worker_defer(conn->worker, &conn->destroy_later);
}

static void
on_idle_timeout(rm_timer_t *entry)
{
    h1c_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h1c_conn_t, idle_timeout, entry);
    kill_conn(conn, RM_UPSTREAM_ERR_CLOSED, "idle timeout");
}

static void
release_to_pool(h1c_conn_t *conn)
{
    rm_endpoint_t *ep = conn->ep;
    const rm_config_cluster_t *cc = rm_cluster_config(ep->cluster);
    /* an attempt waiting for a connection takes it whatever h1_max_idle says */
    if (!conn->keep_alive || ep->removed || rm_cluster_worker(ep->cluster)->stopping ||
        (ep->num_h1_idle >= cc->h1_max_idle && h2o_linklist_is_empty(&ep->h1_waiting))) {
        kill_conn(conn, RM_UPSTREAM_ERR_CLOSED, "not reusable");
        return;
    }
    rm_h1_parser_resume(conn->parser);
    h2o_linklist_insert(&ep->h1_idle, &conn->idle_link);
    ++ep->num_h1_idle;
    rm_worker_timer_start(conn->worker, &conn->idle_timeout, cc->pool_idle_timeout_ms);
    set_reading(conn, 1);
    serve_waiting(ep);
}

static void
maybe_finish(h1c_conn_t *conn)
{
    if (conn->s == NULL || !conn->resp_complete)
        return;
    rm_attempt_t *s = conn->s;
    if (!conn->req_sent) {
        /* the server answered before reading the whole request: the connection cannot be reused */
        conn->keep_alive = 0;
    }
    conn->s = NULL;
    rm_attempt_detach(s);
    if (conn->req_sent)
        release_to_pool(conn);
    else
        kill_conn(conn, RM_UPSTREAM_ERR_CLOSED, "response before request end");
}

/*
 * Parser callbacks
 */

static h2o_mem_pool_t *
on_message_begin(void *ctx)
{
    h1c_conn_t *conn = ctx;
    return conn->s->pool;
}

static int
on_response_head(void *ctx, rm_resp_head_t *head)
{
    h1c_conn_t *conn = ctx;
    rm_attempt_t *s = conn->s;
    if (head->status == 101 && s->req->upgrade.len != 0) {
        /* the switch: the parser stops after this head (a 101 ends the HTTP/1.1 part of the connection) */
        conn->tunnel = 1;
    } else if (head->status < 200) {
        return 0; /* interim (100 Continue...): not forwarded; the final response follows */
    }
    conn->resp_head = 1;
    s->resp = *head;
    rm_headers_remove_lit(&s->resp.headers, "content-length");
    rm_headers_take_markers(&s->resp.headers, NULL, NULL); /* for agents only: an application cannot inject them */
    rm_attempt_on_response_head(s);
    return conn->s == NULL ? -1 : 0;
}

static int
on_body(void *ctx, const char *data, size_t len)
{
    h1c_conn_t *conn = ctx;
    if (conn->s == NULL)
        return -1;
    RM_STAT_ADD(conn->s->cstats->bytes_rx, len);
    rm_attempt_on_response_body(conn->s, data, len);
    return conn->s == NULL ? -1 : 0;
}

static int
on_trailers(void *ctx, rm_headers_t *trailers)
{
    h1c_conn_t *conn = ctx;
    conn->resp_trailers = trailers;
    return 0;
}

static int
on_message_complete(void *ctx, int keep_alive)
{
    h1c_conn_t *conn = ctx;
    conn->keep_alive = keep_alive;
    if (conn->tunnel) {
        conn->keep_alive = 0;
        return 0; /* the response goes on as the tunnel's bytes */
    }
    conn->resp_complete = 1;
    rm_attempt_on_response_end(conn->s, conn->resp_trailers);
    return 0;
}

static const rm_h1_callbacks_t parser_callbacks = {
    .on_message_begin = on_message_begin,
    .on_response_head = on_response_head,
    .on_body = on_body,
    .on_trailers = on_trailers,
    .on_message_complete = on_message_complete,
};

/* Tunnel: the server's bytes are the response body, with the same backpressure. */
static void
tunnel_input(h1c_conn_t *conn)
{
    h2o_socket_t *sock = conn->io.sock;
    if (conn->s != NULL && sock->input->size != 0) {
        size_t n = sock->input->size;
        RM_STAT_ADD(conn->s->cstats->bytes_rx, n);
        rm_attempt_on_response_body(conn->s, sock->input->bytes, n);
        h2o_buffer_consume(&sock->input, n);
    }
    if (conn->dead || conn->s == NULL)
        return;
    set_reading(conn, rm_attempt_resp_buffered(conn->s) < conn->s->limits->stream_window_bytes);
}

static void
parse_input(h1c_conn_t *conn)
{
    h2o_socket_t *sock = conn->io.sock;
    while (!conn->dead && conn->s != NULL && !conn->resp_complete && !conn->tunnel && sock->input->size != 0) {
        ssize_t n = rm_h1_parser_execute(conn->parser, sock->input->bytes, sock->input->size);
        if (n < 0) {
            if (conn->s == NULL)
                return; /* the stream went away during a callback */
            kill_conn(conn, RM_UPSTREAM_ERR_PROTOCOL, rm_h1_parser_error_reason(conn->parser));
            return;
        }
        if (n != 0)
            conn->resp_bytes = 1;
        h2o_buffer_consume(&sock->input, n);
        if (n == 0)
            break;
    }
    if (conn->dead)
        return;
    if (conn->tunnel) {
        tunnel_input(conn);
        return;
    }
    if (conn->resp_complete) {
        maybe_finish(conn);
        return;
    }
    if (conn->s != NULL && rm_attempt_resp_buffered(conn->s) >= conn->s->limits->stream_window_bytes)
        set_reading(conn, 0);
}

static void
on_read(h2o_socket_t *sock, const char *err)
{
    h1c_conn_t *conn = sock->data;
    if (conn->s == NULL) {
        /* idle: the server closed, or sent something unsolicited; either way the connection is done */
        kill_conn(conn, RM_UPSTREAM_ERR_CLOSED, err != NULL ? err : "unexpected bytes on an idle connection");
        return;
    }
    if (err != NULL && conn->tunnel && !conn->resp_complete) {
        /* the server's FIN ends its direction, and with it the exchange */
        conn->resp_complete = 1;
        conn->keep_alive = 0;
        conn->req_sent = 1;
        rm_attempt_on_response_end(conn->s, NULL);
        maybe_finish(conn);
        return;
    }
    if (err != NULL) {
        if (conn->resp_head && rm_h1_parser_finish(conn->parser) == 0 && conn->resp_complete) {
            /* a response delimited by the close */
            conn->keep_alive = 0;
            maybe_finish(conn);
            return;
        }
        kill_conn(conn, RM_UPSTREAM_ERR_CLOSED,
                  conn->resp_head ? "upstream closed mid-response" : "upstream closed the connection");
        return;
    }
    parse_input(conn);
}

/*
 * Request side
 */

/* The client's side of the tunnel ended and its bytes are out: pass the FIN on. */
static void
tunnel_maybe_shut(h1c_conn_t *conn)
{
    if (conn->tunnel && conn->req_sent && !conn->tunnel_out_shut && rm_h1io_pending(&conn->io) == 0) {
        conn->tunnel_out_shut = 1;
        rm_h1io_shutdown_write(&conn->io);
    }
}

static void
pull_request_body(h1c_conn_t *conn)
{
    rm_attempt_t *s = conn->s;
    if (s == NULL || conn->req_sent || conn->dead) {
        tunnel_maybe_shut(conn);
        return;
    }
    while (rm_h1io_pending(&conn->io) < RM_H1_OUT_HIGH_WATER && rm_attempt_req_pending(s) != 0) {
        size_t want = RM_H1_OUT_HIGH_WATER - rm_h1io_pending(&conn->io);
        if (want > rm_attempt_req_pending(s))
            want = rm_attempt_req_pending(s);
        if (conn->req_chunked)
            rm_h1_encode_chunk_header(&conn->io.out, want);
        h2o_iovec_t dst = h2o_buffer_reserve(&conn->io.out, want);
        size_t n = rm_attempt_read_request_body(s, dst.base, want);
        conn->io.out->size += n;
        RM_STAT_ADD(s->cstats->bytes_tx, n);
        if (conn->req_chunked)
            rm_h1_encode_chunk_end(&conn->io.out);
        if (conn->s == NULL)
            return;
    }
    if (rm_attempt_req_eos(s) && rm_attempt_req_pending(s) == 0) {
        if (conn->req_chunked)
            rm_h1_encode_last_chunk(&conn->io.out, rm_attempt_req_trailers(s));
        conn->req_sent = 1;
    }
    tunnel_maybe_shut(conn);
    rm_h1io_schedule_flush(&conn->io);
}

static void
on_written(rm_h1io_t *io, const char *err)
{
    h1c_conn_t *conn = (h1c_conn_t *)io;
    if (err != NULL) {
        kill_conn(conn, RM_UPSTREAM_ERR_CLOSED, err);
        return;
    }
    pull_request_body(conn);
    tunnel_maybe_shut(conn);
    if (conn->req_sent && conn->resp_complete)
        maybe_finish(conn);
}

/* HTTP/2 may split the cookie field into several; HTTP/1.1 allows only one (RFC 9113 8.2.3) */
static void
join_cookies(h2o_mem_pool_t *pool, rm_headers_t *headers)
{
    size_t first = SIZE_MAX, count = 0, total = 0;
    for (size_t i = 0; i != headers->size; ++i) {
        if (h2o_memis(headers->entries[i].name.base, headers->entries[i].name.len, H2O_STRLIT("cookie"))) {
            if (first == SIZE_MAX)
                first = i;
            ++count;
            total += headers->entries[i].value.len + 2;
        }
    }
    if (count < 2)
        return;
    char *joined = h2o_mem_alloc_pool(pool, total);
    size_t len = 0, w = 0;
    for (size_t r = 0; r != headers->size; ++r) {
        rm_header_t *h = &headers->entries[r];
        if (h2o_memis(h->name.base, h->name.len, H2O_STRLIT("cookie"))) {
            if (len != 0) {
                joined[len++] = ';';
                joined[len++] = ' ';
            }
            memcpy(joined + len, h->value.base, h->value.len);
            len += h->value.len;
            if (r != first)
                continue;
        }
        headers->entries[w++] = *h;
    }
    headers->size = w;
    for (size_t i = 0; i != w; ++i)
        if (h2o_memis(headers->entries[i].name.base, headers->entries[i].name.len, H2O_STRLIT("cookie")))
            headers->entries[i].value = h2o_iovec_init(joined, len);
}

static void
start_exchange(h1c_conn_t *conn)
{
    rm_attempt_t *s = conn->s;
    /* the request head belongs to the stream and may be sent again by a retry: work on a copy */
    rm_req_head_t req_copy = *s->req, *req = &req_copy;
    req_copy.headers.entries = h2o_mem_alloc_pool(s->pool, sizeof(rm_header_t) * (s->req->headers.size + 1));
    if (s->req->headers.size != 0)
        memcpy(req_copy.headers.entries, s->req->headers.entries, sizeof(rm_header_t) * s->req->headers.size);
    req_copy.headers.capacity = s->req->headers.size + 1;
    conn->req_sent = 0;
    conn->resp_bytes = 0;
    conn->resp_head = 0;
    conn->resp_complete = 0;
    conn->resp_trailers = NULL;
    conn->req_chunked = 0;
    rm_h1_parser_expect_head_response(conn->parser, h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD")));
    if (req->authority.len == 0)
        req->authority = h2o_strdup(s->pool, conn->ep->name, strlen(conn->ep->name));
    join_cookies(s->pool, &req->headers);
    if (s->grpc_timeout.base != NULL) {
        rm_headers_remove_lit(&req->headers, "grpc-timeout");
        rm_headers_add(s->pool, &req->headers, h2o_iovec_init(H2O_STRLIT("grpc-timeout")), s->grpc_timeout);
    }
    if (s->extra_headers != NULL) {
        /* this attempt's own fields (its span's trace context) replace the request's of the same names */
        for (size_t i = 0; i != s->extra_headers->size; ++i) {
            const rm_header_t *h = &s->extra_headers->entries[i];
            rm_headers_remove(&req->headers, h->name.base, h->name.len);
        }
        for (size_t i = 0; i != s->extra_headers->size; ++i)
            rm_headers_add(s->pool, &req->headers, s->extra_headers->entries[i].name, s->extra_headers->entries[i].value);
    }
    rm_headers_t *req_trailers = rm_attempt_req_trailers(s);
    if (req->content_length < 0 && (req->has_body || rm_attempt_req_pending(s) != 0)) {
        if (rm_attempt_req_eos(s) && (req_trailers == NULL || req_trailers->size == 0))
            req->content_length = rm_attempt_req_pending(s); /* the whole body is already here */
        else
            conn->req_chunked = 1;
    }
    if (rm_h1_encode_request_head(&conn->io.out, req, conn->req_chunked) == 0) {
        /* a field that cannot be written in HTTP/1.1 without breaking the framing (CR, LF, ...):
         * sending the body without its head would hand the client's bytes to the upstream raw */
        kill_conn(conn, RM_UPSTREAM_ERR_PROTOCOL, "request cannot be expressed in HTTP/1.1");
        return;
    }
    if (!req->has_body && !conn->req_chunked && req->content_length <= 0 && rm_attempt_req_eos(s))
        conn->req_sent = 1;
    pull_request_body(conn);
    set_reading(conn, 1);
    rm_h1io_schedule_flush(&conn->io);
}

static void
up_req_body_ready(rm_attempt_t *s)
{
    h1c_conn_t *conn = s->up_ctx;
    if (conn->io.sock == NULL)
        return; /* still connecting */
    pull_request_body(conn);
    if (conn->req_sent && conn->resp_complete)
        maybe_finish(conn);
}

static void
up_resp_body_consumed(rm_attempt_t *s, size_t n)
{
    h1c_conn_t *conn = s->up_ctx;
    if (!conn->reading && !conn->dead && rm_attempt_resp_buffered(s) < s->limits->stream_window_bytes / 2) {
        set_reading(conn, 1);
        parse_input(conn);
    }
}

static void
up_cancel(rm_attempt_t *s)
{
    h1c_conn_t *conn = s->up_ctx;
    conn->s = NULL;
    rm_attempt_detach(s);
    kill_conn(conn, RM_UPSTREAM_ERR_CLOSED, "cancelled");
}

static const rm_attempt_up_ops_t up_ops = {up_req_body_ready, up_resp_body_consumed, up_cancel};

/*
 * Connection lifecycle
 */

static void
close_registered(rm_upconn_link_t *u)
{
    h1c_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h1c_conn_t, reg, u);
    kill_conn(conn, RM_UPSTREAM_ERR_CLOSED, "shutting down");
    rm_worker_cancel_deferred(conn->worker, &conn->destroy_later);
    destroy_conn(&conn->destroy_later);
}

static h1c_conn_t *
conn_new(rm_endpoint_t *ep)
{
    rm_worker_t *worker = rm_cluster_worker(ep->cluster);
    const rm_config_limits_t *limits = &worker->config->limits;
    h1c_conn_t *conn = rm_calloc(1, sizeof(*conn));
    rm_h1io_init(&conn->io, worker, NULL, on_written);
    conn->ep = ep;
    rm_endpoint_ref(ep);
    conn->worker = worker;
    conn->parser =
        rm_h1_parser_create(RM_H1_PARSE_RESPONSES, &parser_callbacks, conn, limits->max_headers, limits->max_header_bytes);
    conn->idle_timeout.cb = on_idle_timeout;
    conn->destroy_later.cb = destroy_conn;
    conn->reg.close = close_registered;
    rm_upconn_register(worker, &conn->reg);
    h2o_linklist_insert(&ep->h1_all, &conn->all_link);
    return conn;
}

static void
attach_socket(h1c_conn_t *conn, h2o_socket_t *sock)
{
    conn->io.sock = sock;
    sock->data = conn;
    RM_STAT_INC(rm_cluster_stats(conn->ep->cluster)->cx_total);
    RM_STAT_INC(rm_cluster_stats(conn->ep->cluster)->cx_active);
}

static void
on_connected(rm_connect_t *unused, h2o_socket_t *sock, int err_kind, const char *err, rm_wire_protocol_t alpn, void *data)
{
    h1c_conn_t *conn = data;
    conn->connecting = NULL;
    if (sock == NULL) {
        kill_conn(conn, err_kind, err);
        return;
    }
    attach_socket(conn, sock);
    if (conn->s != NULL)
        start_exchange(conn);
    else
        release_to_pool(conn);
}

/* Starts `s` on the most recently used idle connection of `ep` (the likeliest to be still open on the server). */
static void
start_on_idle(rm_endpoint_t *ep, rm_attempt_t *s)
{
    h1c_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h1c_conn_t, idle_link, ep->h1_idle.prev);
    conn->reused = 1;
    h2o_linklist_unlink(&conn->idle_link);
    --ep->num_h1_idle;
    rm_timer_unlink(&conn->idle_timeout);
    conn->s = s;
    rm_attempt_attach(s, &up_ops, conn);
    start_exchange(conn);
}

/* Starts `s` on a new connection of `ep`, whose max_connections slot the caller has taken. */
static void
start_on_new(rm_endpoint_t *ep, rm_attempt_t *s)
{
    h1c_conn_t *conn = conn_new(ep);
    conn->s = s;
    rm_attempt_attach(s, &up_ops, conn);
    conn->connecting = rm_connect_start_proto(ep, RM_WIRE_HTTP1, on_connected, conn);
    if (conn->connecting == NULL)
        kill_conn(conn, RM_UPSTREAM_ERR_CONNECT, "cannot create a socket");
}

/* A waiting attempt: unlinked from the endpoint, its pending slot given back; it is still attached
 * with waiting_ops. */
static rm_attempt_t *
unwait(rm_attempt_t *s)
{
    rm_endpoint_t *ep = s->up_ctx;
    h2o_linklist_unlink(&s->pending_link);
    rm_breaker_release(rm_cluster_breaker(ep->cluster), RM_BREAKER_PENDING);
    return s;
}

static void
waiting_cancel(rm_attempt_t *s)
{
    unwait(s);
    rm_attempt_detach(s);
}

static void
waiting_noop(rm_attempt_t *s)
{
}

static void
waiting_noop_n(rm_attempt_t *s, size_t n)
{
}

static const rm_attempt_up_ops_t waiting_ops = {waiting_noop, waiting_noop_n, waiting_cancel};

/* Attempts waiting on `ep` go, in order, on idle connections or on new ones while slots allow;
 * they fail once nothing will serve them (endpoint removed, worker stopping). A connection just
 * released to the pool is known good, so a waiting re-send (fresh_connection) may take it too.
 * Bounded: each pass removes one waiter or stops. */
static void
serve_waiting(rm_endpoint_t *ep)
{
    while (!h2o_linklist_is_empty(&ep->h1_waiting)) {
        rm_attempt_t *s = H2O_STRUCT_FROM_MEMBER(rm_attempt_t, pending_link, ep->h1_waiting.next);
        if (ep->removed || rm_cluster_worker(ep->cluster)->stopping) {
            unwait(s);
            rm_attempt_on_error(s, RM_UPSTREAM_ERR_CONNECT, 0,
                                ep->removed ? "endpoint removed while waiting for a connection" : "shutting down");
            continue;
        }
        if (!h2o_linklist_is_empty(&ep->h1_idle)) {
            unwait(s); /* still attached (counted once): start_on_* re-attaches it */
            start_on_idle(ep, s);
            continue;
        }
        if (!rm_endpoint_conn_acquire(ep))
            return;
        unwait(s); /* still attached (counted once): start_on_* re-attaches it */
        start_on_new(ep, s);
    }
}

static void
h1client_dispatch(rm_endpoint_t *ep, rm_attempt_t *s)
{
    if (!h2o_linklist_is_empty(&ep->h1_idle) && !s->fresh_connection) {
        start_on_idle(ep, s);
        return;
    }
    if (rm_endpoint_conn_acquire(ep)) {
        start_on_new(ep, s);
        return;
    }
    /* max_connections reached, agent-wide */
    rm_cluster_t *c = ep->cluster;
    if (!h2o_linklist_is_empty(&ep->h1_idle)) {
        start_on_idle(ep, s); /* a re-send: an idle connection rather than none */
        return;
    }
    if (h2o_linklist_is_empty(&ep->h1_all)) {
        /* this worker's slots for the endpoint are HTTP/2 connections (ALPN): nothing to wait for */
        rm_cluster_overflow(c, s, RM_BREAKER_CONNECTIONS, "upstream overflow: max_connections reached");
        return;
    }
    if (!rm_breaker_try_acquire(rm_cluster_breaker(c), RM_BREAKER_PENDING)) {
        rm_cluster_overflow(c, s, RM_BREAKER_CONNECTIONS,
                            "upstream overflow: max_connections reached and max_pending_requests waiting");
        return;
    }
    rm_attempt_attach(s, &waiting_ops, ep);
    h2o_linklist_insert(&ep->h1_waiting, &s->pending_link);
}

/* The socket comes with the max_connections slot of the HTTP/2 connection that opened it (ALPN
 * chose HTTP/1.1): the new connection takes it over. */
static void
h1client_start_on_socket(rm_endpoint_t *ep, h2o_socket_t *sock, rm_attempt_t *s)
{
    h1c_conn_t *conn = conn_new(ep);
    attach_socket(conn, sock);
    conn->s = s;
    rm_attempt_attach(s, &up_ops, conn);
    start_exchange(conn);
}

static void
h1client_close_idle(rm_endpoint_t *ep, int all)
{
    while (!h2o_linklist_is_empty(&ep->h1_idle)) {
        h1c_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h1c_conn_t, idle_link, ep->h1_idle.next);
        h2o_linklist_unlink(&conn->idle_link);
        --ep->num_h1_idle;
        kill_conn(conn, RM_UPSTREAM_ERR_CLOSED, "endpoint removed");
    }
    if (all) {
        for (h2o_linklist_t *n = ep->h1_all.next; n != &ep->h1_all; n = n->next) {
            h1c_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h1c_conn_t, all_link, n);
            kill_conn(conn, RM_UPSTREAM_ERR_CLOSED, "shutting down");
        }
    }
    serve_waiting(ep); /* the endpoint is removed: attempts waiting on it fail */
}

static const rm_client_codec_t h1client_codec = {"http1", h1client_dispatch, h1client_start_on_socket, h1client_close_idle};

void
rm_h1client_register(void)
{
    rm_upstream_register_codec(RM_WIRE_HTTP1, &h1client_codec);
}
