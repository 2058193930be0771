/*
 * Downstream HTTP/1.1: one request at a time per connection (pipelined requests wait, the parser
 * paused: at most one read's worth in the input buffer, reading then stops and the rest waits in the
 * socket buffer), bodies streamed through the stream's pipes. Reading stops while the
 * request pipe holds more than the stream window, which is the end-to-end backpressure for
 * HTTP/1.1 clients.
 *
 * Upgrade (WebSocket): a request with rm_req_head_t.upgrade stays open after its head (the parser
 * stops there). A 101 answer turns the connection into a byte tunnel: the client's bytes are the
 * request body, the response body goes out raw; each direction ends with a FIN (half-close) and the
 * connection closes once both have. Any other answer ends the request and the connection goes on
 * as HTTP/1.1.
 *
 * Limits (docs/hardening.md "HTTP/1.1 limits"): a request head must be complete within
 * limits.request_headers_timeout_ms of its first byte (408 and close: the slowloris defence; the idle timeout does not
 * run while a head arrives); the codec answers a target over limits.max_request_uri_bytes with 414 and a head over
 * max_headers / max_header_bytes with 431; the stream answers a body over max_request_body_bytes with 413. A connection
 * closed after an error answer, or with request bytes possibly unread, lingers: its sending side is shut, what the
 * client still sends is read and dropped, and it is closed at the client's FIN or RM_H1_LINGER_MS later, so that the
 * answer is not destroyed by the reset a close with unread bytes would cause.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "http1/h1codec.h"
#include "http1/h1io.h"
#include "net/listener.h"
#include "proxy/stream.h"
#include "net/sockio.h"

/** How long a connection closed after an error answer keeps reading and dropping what the client still sends. */
#define RM_H1_LINGER_MS 1000

typedef struct st_h1s_conn_t {
    rm_h1io_t io; /* first: sock->data points here */
    rm_dconn_t *dc;
    rm_worker_t *worker;
    rm_h1_parser_t *parser;
    rm_stream_t *s;
    rm_headers_t *req_trailers;
    rm_timer_t idle_timeout;
    rm_timer_t head_timeout; /* limits.request_headers_timeout_ms, from the first byte of a head to its end */
    rm_deferred_t destroy_later;
    unsigned keep_alive : 1;
    unsigned req_complete : 1;
    unsigned resp_started : 1;
    unsigned resp_chunked : 1;
    unsigned resp_no_body : 1;
    unsigned resp_complete : 1;
    unsigned resp_close : 1;
    unsigned reading : 1;
    unsigned draining : 1;
    unsigned dead : 1;
    unsigned close_after_write : 1;
    unsigned upgrade_req : 1;  /* the current request asks for an upgrade: its end goes with the answer */
    unsigned upgrade_wait : 1; /* ... which has not come yet */
    unsigned tunnel : 1;       /* 101 sent: raw bytes both ways */
    unsigned tunnel_in_eof : 1;
    unsigned tunnel_out_shut : 1;
    unsigned head_done : 1; /* the current request's head is complete (no head timeout) */
    unsigned lingering : 1; /* answered and closing: reading and dropping until the client's FIN or RM_H1_LINGER_MS */
    unsigned peer_eof : 1;  /* the client's FIN came while a complete request waited for its response */
} h1s_conn_t;

static const rm_stream_down_ops_t down_ops;
static void on_read(h2o_socket_t *sock, const char *err);
static void pull_response_body(h1s_conn_t *conn);

static void
kill_conn(h1s_conn_t *conn)
{
    if (conn->dead)
        return;
    conn->dead = 1;
    if (conn->io.sock != NULL)
        h2o_socket_read_stop(conn->io.sock);
    if (conn->tunnel) {
        conn->tunnel = 0;
        RM_STAT_DEC(conn->dc->stats->upgrade_active);
    }
    if (conn->s != NULL) {
        rm_stream_t *s = conn->s;
        conn->s = NULL;
        if (!conn->resp_complete)
            rm_stream_on_downstream_abort(s);
        rm_stream_detach_downstream(s);
    }
    rm_worker_defer(conn->worker, &conn->destroy_later);
}

static void
destroy_conn(rm_deferred_t *d)
{
    h1s_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h1s_conn_t, destroy_later, d);
    if (rm_timer_is_linked(&conn->idle_timeout))
        rm_timer_unlink(&conn->idle_timeout);
    if (rm_timer_is_linked(&conn->head_timeout))
        rm_timer_unlink(&conn->head_timeout);
    rm_h1io_dispose(&conn->io);
    rm_h1_parser_destroy(conn->parser);
    rm_socket_close(conn->dc->sock);
    rm_dconn_destroy(conn->dc);
    free(conn);
}

static void
set_reading(h1s_conn_t *conn, int on)
{
    if (conn->dead || conn->lingering || conn->reading == (unsigned)on)
        return;
    conn->reading = on;
    if (on)
        h2o_socket_read_start(conn->io.sock, on_read);
    else
        h2o_socket_read_stop(conn->io.sock);
}

static void
link_idle(h1s_conn_t *conn)
{
    rm_worker_timer_start(conn->worker, &conn->idle_timeout, conn->worker->config->limits.idle_timeout_ms);
}

static void
on_idle_timeout(rm_timer_t *entry)
{
    h1s_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h1s_conn_t, idle_timeout, entry);
    kill_conn(conn);
}

static void
on_linger_read(h2o_socket_t *sock, const char *err)
{
    h1s_conn_t *conn = sock->data;
    if (err != NULL) {
        kill_conn(conn); /* the client's FIN (or reset): it has read what it wanted */
        return;
    }
    h2o_buffer_consume(&sock->input, sock->input->size);
}

/*
 * Closes a connection whose answer is out. If the client may still be sending (the request was not read to its end),
 * the connection lingers: closing with unread bytes in the socket would make the kernel send a reset, which can
 * destroy the answer before the client reads it.
 */
static void
close_answered(h1s_conn_t *conn)
{
    if (conn->dead || conn->lingering)
        return;
    if (conn->peer_eof || (conn->req_complete && conn->s == NULL && conn->io.sock->input->size == 0 && !conn->upgrade_req)) {
        kill_conn(conn); /* after the client's FIN nothing unread is left in the socket: no reset to fear */
        return;
    }
    if (rm_timer_is_linked(&conn->head_timeout))
        rm_timer_unlink(&conn->head_timeout);
    conn->lingering = 1;
    rm_h1io_shutdown_write(&conn->io); /* cleartext: our FIN tells the client the answer is complete */
    h2o_buffer_consume(&conn->io.sock->input, conn->io.sock->input->size);
    conn->reading = 1;
    h2o_socket_read_start(conn->io.sock, on_linger_read);
    rm_worker_timer_start(conn->worker, &conn->idle_timeout, RM_H1_LINGER_MS);
}

/* Answers a request the parser (or a limit) rejected, then closes. Callers count it. */
static void
send_error_and_close(h1s_conn_t *conn, int status, const char *reason)
{
    if (rm_timer_is_linked(&conn->head_timeout))
        rm_timer_unlink(&conn->head_timeout);
    if (conn->s != NULL && !conn->resp_started) {
        char msg[256];
        snprintf(msg, sizeof(msg), "%s", reason);
        conn->keep_alive = 0;
        conn->resp_close = 1;
        rm_stream_send_local_reply(conn->s, status, RM_GRPC_INTERNAL, msg);
        set_reading(conn, 0);
        return;
    }
    if (conn->s == NULL) {
        char body[256];
        int blen = snprintf(body, sizeof(body), "%s\n", reason);
        char head[256];
        int hlen = snprintf(head, sizeof(head),
                            "HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
                            "server: remora\r\nconnection: close\r\n\r\n",
                            status, rm_h1_reason_phrase(status), blen);
        rm_h1_append(&conn->io.out, head, hlen);
        rm_h1_append(&conn->io.out, body, blen);
        conn->close_after_write = 1;
        set_reading(conn, 0);
        rm_h1io_schedule_flush(&conn->io);
        return;
    }
    /* the response is already under way: all we can do is cut the connection */
    kill_conn(conn);
}

/* The head did not end within limits.request_headers_timeout_ms of its first byte: 408, then close (slowloris). */
static void
on_head_timeout(rm_timer_t *entry)
{
    h1s_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h1s_conn_t, head_timeout, entry);
    if (conn->dead || conn->head_done || conn->lingering)
        return;
    RM_STAT_INC(conn->dc->stats->limit[RM_STAT_LIMIT_HEADER_TIMEOUT]);
    char name[80] = "unknown";
    if (conn->dc->peerlen != 0)
        rm_format_sockaddr((struct sockaddr *)&conn->dc->peer, name, sizeof(name));
    rm_log_debug("http1", "request head from %s not complete in %" PRIu32 " ms; answering 408", name,
                 conn->worker->config->limits.request_headers_timeout_ms);
    send_error_and_close(conn, 408, "request header timeout");
}

/* A head is arriving (bytes are buffered and its end was not parsed yet): start its timeout if it is not running. */
static void
start_head_timeout(h1s_conn_t *conn)
{
    uint32_t ms = conn->worker->config->limits.request_headers_timeout_ms;
    if (ms == 0 || conn->head_done || conn->tunnel || conn->lingering || conn->close_after_write ||
        rm_timer_is_linked(&conn->head_timeout))
        return;
    /* while a head arrives the connection is not idle: the head timeout bounds it (on_message_begin unlinks the idle
     * timer as well, at the head's first non-empty byte) */
    if (rm_timer_is_linked(&conn->idle_timeout))
        rm_timer_unlink(&conn->idle_timeout);
    rm_worker_timer_start(conn->worker, &conn->head_timeout, ms);
}

/*
 * Parser callbacks
 */

static h2o_mem_pool_t *
on_message_begin(void *ctx)
{
    h1s_conn_t *conn = ctx;
    rm_worker_t *worker = conn->worker;
    const rm_config_listener_t *listener = rm_dconn_listener(conn->dc, worker->config);
    if (rm_timer_is_linked(&conn->idle_timeout))
        rm_timer_unlink(&conn->idle_timeout);
    conn->s = rm_stream_create(worker, worker->config, listener, conn->dc->stats, &down_ops, conn);
    rm_stream_set_peer(conn->s, (struct sockaddr *)&conn->dc->peer, conn->dc->peerlen);
    rm_stream_set_peer_identity(conn->s, conn->dc->peer_identity, conn->dc->peer_identity_hash);
    conn->req_complete = 0;
    conn->resp_started = 0;
    conn->resp_complete = 0;
    conn->resp_chunked = 0;
    conn->resp_no_body = 0;
    conn->upgrade_req = 0;
    conn->upgrade_wait = 0;
    conn->req_trailers = NULL;
    conn->head_done = 0;
    return &conn->s->pool;
}

static int
on_request_head(void *ctx, rm_req_head_t *head)
{
    h1s_conn_t *conn = ctx;
    rm_stream_t *s = conn->s;
    conn->head_done = 1;
    if (rm_timer_is_linked(&conn->head_timeout))
        rm_timer_unlink(&conn->head_timeout);
    s->req = *head;
    /* the length travels in content_length; encoders write it */
    rm_headers_remove_lit(&s->req.headers, "content-length");
    /* marker fields are for agents only: a client cannot inject them */
    rm_headers_take_markers(&s->req.headers, NULL, NULL);
    /* only WebSocket is tunnelled (docs/architecture.md): other Upgrade protocols (h2c...) are stripped and the request
     * goes on as plain HTTP/1.1, which RFC 9110 7.8 allows a server to do */
    if (s->req.upgrade.len != 0 && !h2o_lcstris(s->req.upgrade.base, s->req.upgrade.len, H2O_STRLIT("websocket")))
        s->req.upgrade = h2o_iovec_init(NULL, 0);
    conn->upgrade_req = conn->upgrade_wait = s->req.upgrade.len != 0;
    /* mesh mTLS is the agents' hop, not the client's scheme: the calling agent's client spoke http */
    s->req.scheme = conn->dc->is_tls && conn->dc->peer_identity == NULL ? h2o_iovec_init(H2O_STRLIT("https"))
                                                                        : h2o_iovec_init(H2O_STRLIT("http"));
    if (s->listener == NULL) {
        send_error_and_close(conn, 503, "listener removed by a configuration change");
        return 0;
    }
    if (h2o_memis(head->method.base, head->method.len, H2O_STRLIT("HEAD")))
        conn->resp_no_body = 1;
    rm_stream_on_request_head(s);
    if (head->expect_continue && conn->s != NULL && !s->resp_head_sent && !s->req_discard) {
        rm_h1_encode_continue(&conn->io.out);
        rm_h1io_schedule_flush(&conn->io);
    }
    return 0;
}

static int
on_body(void *ctx, const char *data, size_t len)
{
    h1s_conn_t *conn = ctx;
    if (conn->s != NULL)
        rm_stream_on_request_body(conn->s, data, len);
    return 0;
}

static int
on_trailers(void *ctx, rm_headers_t *trailers)
{
    h1s_conn_t *conn = ctx;
    conn->req_trailers = trailers;
    return 0;
}

static int
on_message_complete(void *ctx, int keep_alive)
{
    h1s_conn_t *conn = ctx;
    conn->keep_alive = keep_alive;
    conn->req_complete = 1;
    /* an upgrade request ends with its answer: after a 101 the client's bytes keep coming as the tunnel */
    if (conn->s != NULL && !conn->upgrade_req)
        rm_stream_on_request_end(conn->s, conn->req_trailers);
    return 0;
}

static const rm_h1_callbacks_t parser_callbacks = {
    .on_message_begin = on_message_begin,
    .on_request_head = on_request_head,
    .on_body = on_body,
    .on_trailers = on_trailers,
    .on_message_complete = on_message_complete,
};

/* Tunnel: the client's bytes go to the request pipe as they are, with the same backpressure as a body. */
static void
tunnel_input(h1s_conn_t *conn)
{
    h2o_socket_t *sock = conn->io.sock;
    rm_stream_t *s = conn->s;
    if (s == NULL || conn->tunnel_in_eof) {
        set_reading(conn, 0);
        return;
    }
    if (sock->input->size != 0) {
        size_t n = sock->input->size;
        rm_stream_on_request_body(s, sock->input->bytes, n);
        h2o_buffer_consume(&sock->input, n);
    }
    if (conn->dead || conn->s == NULL)
        return;
    set_reading(conn, conn->s->req_body.buf->size < conn->s->config->limits.stream_window_bytes);
}

static void
parse_input(h1s_conn_t *conn)
{
    h2o_socket_t *sock = conn->io.sock;
    if (conn->tunnel) {
        tunnel_input(conn);
        return;
    }
    while (!conn->dead && sock->input->size != 0) {
        if (conn->s != NULL && conn->req_complete)
            break; /* the next pipelined request waits for this response */
        if (!conn->head_done)
            start_head_timeout(conn);
        ssize_t n = rm_h1_parser_execute(conn->parser, sock->input->bytes, sock->input->size);
        if (n < 0) {
            int status = rm_h1_error_status((rm_h1_error_t)n);
            /* limits are counted as such; 431 stays a protocol error too (remora_downstream_protocol_errors_total) */
            if (n == RM_H1_ERR_URI_TOO_LONG)
                RM_STAT_INC(conn->dc->stats->limit[RM_STAT_LIMIT_URI_TOO_LONG]);
            else
                RM_STAT_INC(conn->dc->stats->rq_protocol_error);
            if (n == RM_H1_ERR_HEADERS_TOO_LARGE)
                RM_STAT_INC(conn->dc->stats->limit[RM_STAT_LIMIT_HEADERS_TOO_LARGE]);
            send_error_and_close(conn, status, rm_h1_parser_error_reason(conn->parser));
            return;
        }
        h2o_buffer_consume(&sock->input, n);
        if (n == 0)
            break;
    }
    if (conn->dead)
        return;
    /* backpressure: stop reading while the request pipe is full, or while a complete request waits for its response
     * and bytes of the next one are buffered (a client that pipelines without reading its responses gets one read's
     * worth buffered, the rest waits in the socket). Reading otherwise stays on across a keep-alive request: stopping
     * and restarting it costs two epoll_ctl per request (libuv drops the fd from epoll when nothing is watched). */
    if (conn->s != NULL && ((conn->req_complete && (sock->input->size != 0 || conn->upgrade_req || conn->peer_eof)) ||
                            conn->s->req_body.buf->size >= conn->s->config->limits.stream_window_bytes))
        set_reading(conn, 0);
    else if (!conn->close_after_write && !conn->peer_eof)
        set_reading(conn, 1);
}

static void
on_read(h2o_socket_t *sock, const char *err)
{
    h1s_conn_t *conn = sock->data;
    if (err != NULL && conn->tunnel && conn->s != NULL && !conn->tunnel_in_eof) {
        /* the client's FIN (or a reset, which the next write reveals): that direction of the tunnel ends */
        conn->tunnel_in_eof = 1;
        set_reading(conn, 0);
        rm_stream_on_request_end(conn->s, NULL);
        if (!conn->dead && conn->tunnel_out_shut)
            kill_conn(conn);
        return;
    }
    if (err == h2o_socket_error_closed && conn->s != NULL && conn->req_complete && !conn->tunnel) {
        /* the client's FIN after a complete request, read because reading stays on while its response is on its way:
         * the response still goes out, as it did when reading was off until then, and the connection then closes.
         * Only a FIN: after a reset (any other error) libuv marks the stream unwritable and h2o 2.2.5 drops the error
         * of a write to it, whose callback then never comes; the connection is killed at once, as it always was. */
        conn->peer_eof = 1;
        set_reading(conn, 0);
        return;
    }
    if (err != NULL) {
        kill_conn(conn);
        return;
    }
    RM_STAT_ADD(conn->dc->stats->bytes_rx, sock->input->size);
    parse_input(conn);
}

/*
 * Response side
 */

/* The upstream's side of the tunnel ended and its bytes are out: send our FIN; the connection ends with the client's. */
static void
tunnel_finish_out(h1s_conn_t *conn)
{
    if (!conn->tunnel_out_shut) {
        conn->tunnel_out_shut = 1;
        rm_h1io_shutdown_write(&conn->io);
    }
    if (conn->tunnel_in_eof || conn->io.sock->ssl != NULL)
        kill_conn(conn);
    else if (!rm_timer_is_linked(&conn->idle_timeout))
        link_idle(conn); /* the stream is over: a client that never sends its FIN is bounded by the connection's idle timeout */
}

static void
finish_exchange(h1s_conn_t *conn)
{
    rm_stream_t *s = conn->s;
    if (conn->tunnel) {
        tunnel_finish_out(conn);
        return;
    }
    int reusable = conn->keep_alive && conn->req_complete && !conn->resp_close && !conn->draining && !conn->peer_eof;
    conn->s = NULL;
    rm_stream_detach_downstream(s);
    if (!reusable) {
        conn->close_after_write = 1;
        if (rm_h1io_pending(&conn->io) == 0)
            close_answered(conn);
        return;
    }
    /* the next request has neither its head nor its end yet */
    conn->head_done = 0;
    conn->req_complete = 0;
    rm_h1_parser_resume(conn->parser);
    link_idle(conn);
    set_reading(conn, 1);
    parse_input(conn);
}

static void
pull_response_body(h1s_conn_t *conn)
{
    rm_stream_t *s = conn->s;
    if (s == NULL || !conn->resp_started || conn->resp_complete)
        return;
    while (rm_h1io_pending(&conn->io) < RM_H1_OUT_HIGH_WATER && s->resp_body.buf->size != 0) {
        size_t avail = s->resp_body.buf->size;
        size_t want = RM_H1_OUT_HIGH_WATER - rm_h1io_pending(&conn->io);
        if (want > avail)
            want = avail;
        if (conn->resp_no_body) {
            /* HEAD or 204/304: the upstream should send nothing; drop what it does */
            char sink[4096];
            rm_stream_read_response_body(s, sink, want < sizeof(sink) ? want : sizeof(sink));
            continue;
        }
        if (conn->resp_chunked)
            rm_h1_encode_chunk_header(&conn->io.out, want);
        h2o_iovec_t dst = h2o_buffer_reserve(&conn->io.out, want);
        size_t n = rm_stream_read_response_body(s, dst.base, want);
        conn->io.out->size += n;
        if (conn->resp_chunked)
            rm_h1_encode_chunk_end(&conn->io.out);
    }
    if (s->resp_body.eos && s->resp_body.buf->size == 0) {
        if (conn->resp_chunked)
            rm_h1_encode_last_chunk(&conn->io.out, s->resp_body.trailers);
        conn->resp_complete = 1;
    }
    rm_h1io_schedule_flush(&conn->io);
}

static void
on_written(rm_h1io_t *io, const char *err)
{
    h1s_conn_t *conn = (h1s_conn_t *)io;
    if (err != NULL) {
        kill_conn(conn);
        return;
    }
    if (conn->s != NULL) {
        pull_response_body(conn);
        if (conn->resp_complete && rm_h1io_pending(io) == 0)
            finish_exchange(conn);
    } else if (conn->close_after_write && rm_h1io_pending(io) == 0) {
        close_answered(conn);
    }
}

static void
down_send_response_head(rm_stream_t *s)
{
    h1s_conn_t *conn = s->down_ctx;
    int status = s->resp.status;
    conn->resp_started = 1;
    if (conn->upgrade_wait) {
        conn->upgrade_wait = 0;
        if (status == 101) {
            RM_STAT_INC(conn->dc->stats->upgrade_switched);
            RM_STAT_INC(conn->dc->stats->upgrade_active);
            conn->tunnel = 1;
            rm_resp_head_t head = s->resp;
            if (head.upgrade.len == 0)
                head.upgrade = s->req.upgrade;
            if (rm_h1_encode_response_head(&conn->io.out, &head, 0, 0) == 0) {
                kill_conn(conn);
                return;
            }
            pull_response_body(conn);
            if (conn->dead)
                return;
            /* bytes the client sent early wait in the socket buffer */
            set_reading(conn, 1);
            tunnel_input(conn);
            if (!conn->dead && conn->resp_complete && rm_h1io_pending(&conn->io) == 0)
                finish_exchange(conn);
            return;
        }
        /* refused: an ordinary response, and the request ends here */
        RM_STAT_INC(conn->dc->stats->upgrade_refused);
        rm_stream_on_request_end(s, NULL);
        if (conn->s != s)
            return;
    }
    if (status == 204 || status == 304 || (status >= 100 && status < 200))
        conn->resp_no_body = 1;
    int close = !conn->keep_alive && conn->req_complete;
    if (conn->draining || conn->resp_close)
        close = 1;
    if (!conn->resp_no_body && s->resp.content_length < 0) {
        if (rm_h1_parser_http_minor(conn->parser) == 0)
            close = 1; /* HTTP/1.0 has no chunked coding: the close delimits the body */
        else
            conn->resp_chunked = 1;
    }
    if (rm_h1_parser_http_minor(conn->parser) == 0)
        close = 1; /* no keep-alive for HTTP/1.0 clients: one request per connection */
    /* a response that comes before the request body is complete ends the connection: the rest of
     * the request cannot be skipped safely */
    if (!conn->req_complete && s->req.has_body) {
        close = 1;
        conn->resp_close = 1;
    }
    if (close)
        conn->resp_close = 1;
    if (rm_h1_encode_response_head(&conn->io.out, &s->resp, conn->resp_chunked, close) == 0) {
        /* a head HTTP/1.1 cannot carry (the upstream codecs refuse such statuses first): no body without it */
        rm_log_warn("h1", "response head with status %d cannot be written as HTTP/1.1; closing the connection", s->resp.status);
        kill_conn(conn);
        return;
    }
    pull_response_body(conn);
    if (conn->resp_complete && rm_h1io_pending(&conn->io) == 0)
        finish_exchange(conn);
}

static void
down_resp_body_ready(rm_stream_t *s)
{
    h1s_conn_t *conn = s->down_ctx;
    pull_response_body(conn);
    /* a tunnel's end may come after its last byte went out: no write completion will follow */
    if (conn->tunnel && !conn->dead && conn->resp_complete && rm_h1io_pending(&conn->io) == 0)
        finish_exchange(conn);
}

static void
down_req_body_consumed(rm_stream_t *s, size_t n)
{
    h1s_conn_t *conn = s->down_ctx;
    if (conn->tunnel) {
        if (!conn->reading && !conn->dead && !conn->tunnel_in_eof &&
            s->req_body.buf->size < s->config->limits.stream_window_bytes / 2) {
            set_reading(conn, 1);
            tunnel_input(conn);
        }
        return;
    }
    if (!conn->reading && !conn->req_complete && !conn->dead && !conn->close_after_write &&
        s->req_body.buf->size < s->config->limits.stream_window_bytes / 2) {
        set_reading(conn, 1);
        /* bytes that arrived before the pause are still in the socket buffer */
        parse_input(conn);
    }
}

static void
down_reset(rm_stream_t *s, uint32_t h2_error)
{
    h1s_conn_t *conn = s->down_ctx;
    conn->resp_complete = 1; /* not an abort from the client's side */
    kill_conn(conn);
}

static const rm_stream_down_ops_t down_ops = {down_send_response_head, down_resp_body_ready, down_req_body_consumed, down_reset,
                                              "HTTP/1.1"};

/*
 * Connection lifecycle
 */

static void
drain(rm_dconn_t *dc)
{
    h1s_conn_t *conn = dc->impl;
    conn->draining = 1;
    if (conn->s == NULL && rm_h1io_pending(&conn->io) == 0)
        kill_conn(conn);
}

static void
close_now(rm_dconn_t *dc)
{
    h1s_conn_t *conn = dc->impl;
    kill_conn(conn);
    rm_worker_cancel_deferred(conn->worker, &conn->destroy_later);
    destroy_conn(&conn->destroy_later);
}

static const rm_dconn_ops_t dconn_ops = {drain, close_now};

void
rm_h1server_accept(rm_dconn_t *dc)
{
    rm_worker_t *worker = dc->worker;
    const rm_config_limits_t *limits = &worker->config->limits;
    h1s_conn_t *conn = rm_calloc(1, sizeof(*conn));
    rm_h1io_init(&conn->io, worker, dc->sock, on_written);
    conn->io.bytes_tx_stat = &dc->stats->bytes_tx;
    conn->dc = dc;
    conn->worker = worker;
    conn->idle_timeout.cb = on_idle_timeout;
    conn->head_timeout.cb = on_head_timeout;
    conn->destroy_later.cb = destroy_conn;
    conn->parser =
        rm_h1_parser_create(RM_H1_PARSE_REQUESTS, &parser_callbacks, conn, limits->max_headers, limits->max_header_bytes);
    rm_h1_parser_set_max_uri_bytes(conn->parser, limits->max_request_uri_bytes);
    dc->impl = conn;
    dc->ops = &dconn_ops;
    dc->sock->data = conn;
    if (worker->draining)
        conn->draining = 1;
    link_idle(conn);
    /* the detection already read the first bytes */
    RM_STAT_ADD(dc->stats->bytes_rx, dc->sock->input->size);
    conn->reading = 0;
    set_reading(conn, 1);
    parse_input(conn);
}
