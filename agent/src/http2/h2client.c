/*
 * Upstream HTTP/2: a few multiplexed connections per endpoint per worker (cluster h2_connections),
 * each an nghttp2 client session. Streams queue on a connection while it connects. Response bodies
 * are acknowledged upstream only once the downstream side has taken the bytes.
 *
 * Circuit breakers: every connection holds a max_connections slot from conn_create to destroy_conn
 * (unless ALPN hands its socket, and the slot with it, to the HTTP/1.1 client); when no slot is left
 * an attempt goes on an existing connection of the endpoint whatever its stream count. A stream
 * queued on a connection still connecting holds a max_pending_requests slot until it is submitted
 * or freed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "core/alloc.h"
#include "http2/h2client.h"
#include "http2/h2conn.h"
#include "proxy/attempt.h"
#include "upstream/breaker.h"
#include "upstream/cluster.h"
#include "net/sockio.h"

typedef struct st_h2c_conn_t {
    rm_h2conn_t h2;
    rm_endpoint_t *ep;
    rm_upconn_link_t reg;
    h2o_linklist_t ep_link; /* in ep->h2_conns */
    rm_connect_t *connecting;
    /** streams submitted or waiting for the connection */
    h2o_linklist_t streams;
    size_t num_streams;
    rm_timer_t idle_timeout;
    rm_deferred_t destroy_later;
    unsigned goaway : 1; /* no new streams: GOAWAY received or sent */
    unsigned dying : 1;
    unsigned holds_slot : 1;    /* a max_connections slot, given back in destroy_conn */
    unsigned idle_released : 1; /* idle_timeout's first step (RM_H2_IDLE_RELEASE_MS) has run */
    /* the stream of the last header field (on_header is called once per field: this saves nghttp2's stream lookup for
     * all but the first of a block); cleared when that stream is freed */
    struct st_h2c_stream_t *hdr_stream;
} h2c_conn_t;

typedef struct st_h2c_stream_t {
    h2c_conn_t *conn;
    rm_attempt_t *a;
    int32_t id; /* 0 until submitted */
    h2o_linklist_t link;
    rm_headers_t *trailers;
    uint32_t num_headers;
    uint32_t header_bytes;
    /** response bytes handed to the stream and not yet consumed by the downstream side */
    size_t unconsumed;
    unsigned final_head : 1;
    unsigned too_large : 1;
    unsigned resp_done : 1;
    unsigned pending : 1; /* holds a max_pending_requests slot: queued while the connection connects */
} h2c_stream_t;

static __thread rm_recycle_t stream_allocator = RM_RECYCLE_INITIALIZER(h2c_stream_t, 1024);

static const rm_attempt_up_ops_t up_ops;
static void submit_stream(h2c_stream_t *hc);

/* the endpoint is another agent's inbound listener (`peer: agent`, or a meshed Service): markers go both ways */
static int
to_agent(h2c_conn_t *conn)
{
    const rm_config_cluster_t *cfg = rm_cluster_config(conn->ep->cluster);
    return cfg->peer_agent || cfg->agent_hop;
}

static void
update_idle(h2c_conn_t *conn)
{
    rm_worker_t *worker = conn->h2.worker;
    if (conn->num_streams == 0 && !conn->dying && conn->connecting == NULL) {
        /* two steps: the buffers are given back after RM_H2_IDLE_RELEASE_MS, the connection closed at pool_idle_timeout_ms */
        if (!rm_timer_is_linked(&conn->idle_timeout)) {
            uint32_t idle_ms = rm_cluster_config(conn->ep->cluster)->pool_idle_timeout_ms;
            conn->idle_released = idle_ms <= RM_H2_IDLE_RELEASE_MS;
            rm_worker_timer_start(worker, &conn->idle_timeout, conn->idle_released ? idle_ms : RM_H2_IDLE_RELEASE_MS);
        }
    } else if (rm_timer_is_linked(&conn->idle_timeout)) {
        rm_timer_unlink(&conn->idle_timeout);
    }
}

/* Gives back the stream's pending slot, once. */
static void
stream_unpend(h2c_stream_t *hc)
{
    if (!hc->pending)
        return;
    hc->pending = 0;
    rm_breaker_release(rm_cluster_breaker(hc->conn->ep->cluster), RM_BREAKER_PENDING);
}

static void
stream_free(h2c_stream_t *hc)
{
    h2c_conn_t *conn = hc->conn;
    stream_unpend(hc);
    h2o_linklist_unlink(&hc->link);
    --conn->num_streams;
    if (conn->hdr_stream == hc)
        conn->hdr_stream = NULL;
    rm_recycle_free(&stream_allocator, hc);
    update_idle(conn);
    if (conn->num_streams == 0 && (conn->ep->removed || conn->goaway) && !conn->dying)
        rm_h2conn_fail(&conn->h2, "idle after GOAWAY or endpoint removal");
}

/* The attempt ends here; the h2c_stream_t lives on until nghttp2 closes it. Bytes still in the
 * response pipe will never be reported consumed: give them back to the connection window now, or
 * the connection stalls once closed streams have leaked a window's worth. */
static rm_attempt_t *
take_stream(h2c_stream_t *hc)
{
    rm_attempt_t *s = hc->a;
    hc->a = NULL;
    if (hc->unconsumed != 0 && hc->conn->h2.ng != NULL) {
        nghttp2_session_consume_connection(hc->conn->h2.ng, hc->unconsumed);
        rm_h2conn_schedule_flush(&hc->conn->h2);
    }
    hc->unconsumed = 0;
    return s;
}

/*
 * nghttp2 callbacks
 */

static int
on_header(nghttp2_session *ng, const nghttp2_frame *frame, nghttp2_rcbuf *name_rc, nghttp2_rcbuf *value_rc, uint8_t flags,
          void *user_data)
{
    h2c_conn_t *conn = user_data;
    nghttp2_vec name_v = nghttp2_rcbuf_get_buf(name_rc), value_v = nghttp2_rcbuf_get_buf(value_rc);
    const uint8_t *name = name_v.base, *value = value_v.base;
    size_t namelen = name_v.len, valuelen = value_v.len;
    h2c_stream_t *hc = conn->hdr_stream;
    if (hc == NULL || hc->id != frame->hd.stream_id)
        conn->hdr_stream = hc = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
    if (hc == NULL || hc->a == NULL)
        return 0;
    rm_attempt_t *s = hc->a;
    const rm_config_limits_t *limits = s->limits;
    hc->header_bytes += namelen + valuelen + 32;
    if (++hc->num_headers > limits->max_headers || hc->header_bytes > limits->max_header_bytes) {
        hc->too_large = 1;
        return 0;
    }
    if (frame->headers.cat == NGHTTP2_HCAT_HEADERS && hc->final_head) {
        if (hc->trailers == NULL) {
            hc->trailers = h2o_mem_alloc_pool(s->pool, sizeof(*hc->trailers));
            memset(hc->trailers, 0, sizeof(*hc->trailers));
        }
        rm_headers_add(s->pool, hc->trailers, rm_h2_field_copy(s->pool, name_rc, name_v),
                       rm_h2_field_copy(s->pool, value_rc, value_v));
        return 0;
    }
    /* nghttp2 (HTTP messaging on) passes lower-case names only: names compare byte for byte */
    if (h2o_memis(name, namelen, H2O_STRLIT(":status"))) {
        int status = 0;
        for (size_t i = 0; i != valuelen; ++i)
            status = status * 10 + (value[i] - '0');
        s->resp.status = status;
        /* a new head (after an interim response) starts over */
        s->resp.headers.size = 0;
        s->resp.content_length = -1;
        return 0;
    }
    if (h2o_memis(name, namelen, H2O_STRLIT("content-length"))) {
        int64_t cl = 0;
        for (size_t i = 0; i != valuelen; ++i)
            cl = cl * 10 + (value[i] - '0');
        s->resp.content_length = cl;
        return 0;
    }
    rm_headers_add(s->pool, &s->resp.headers, rm_h2_field_copy(s->pool, name_rc, name_v),
                   rm_h2_field_copy(s->pool, value_rc, value_v));
    return 0;
}

static int
on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *user_data)
{
    h2c_conn_t *conn = user_data;
    h2c_stream_t *hc;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        /* the stream of the block's fields, unless the block had none that reached on_header */
        if (((hc = conn->hdr_stream) == NULL || hc->id != frame->hd.stream_id) &&
            (hc = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id)) == NULL)
            return 0;
        if (hc->a == NULL)
            return 0;
        if (hc->too_large) {
            nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, hc->id, NGHTTP2_CANCEL);
            rm_attempt_on_error(take_stream(hc), RM_UPSTREAM_ERR_PROTOCOL, 0, "response header fields too large");
            return 0;
        }
        if (!hc->final_head) {
            if (hc->a->resp.status < 100 || hc->a->resp.status > 599) {
                /* nghttp2 checks three digits only (RFC 9110 15: 100-599), as the HTTP/1.1 client's parser does */
                nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, hc->id, NGHTTP2_PROTOCOL_ERROR);
                rm_attempt_on_error(take_stream(hc), RM_UPSTREAM_ERR_PROTOCOL, 0, "upstream :status is not 100-599");
                return 0;
            }
            if (hc->a->resp.status >= 100 && hc->a->resp.status < 200)
                return 0; /* interim response: not forwarded */
            hc->final_head = 1;
            h2o_iovec_t case_marker;
            rm_headers_take_markers(&hc->a->resp.headers, &case_marker, NULL);
            if (case_marker.len != 0 && to_agent(conn))
                rm_resp_apply_case_marker(&hc->a->resp, case_marker);
            if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0)
                /* no body follows: the downstream sends one HEADERS frame too (a gRPC trailers-only
                 * response stays trailers-only) */
                hc->a->resp_no_body = 1;
            rm_attempt_on_response_head(hc->a);
            if (hc->a == NULL)
                return 0;
        }
        if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) {
            hc->resp_done = 1;
            rm_attempt_on_response_end(hc->a, hc->trailers);
        }
        break;
    case NGHTTP2_DATA:
        if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0 &&
            (hc = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id)) != NULL && hc->a != NULL) {
            hc->resp_done = 1;
            rm_attempt_on_response_end(hc->a, NULL);
        }
        break;
    case NGHTTP2_GOAWAY:
        /* streams above last_stream_id are closed by nghttp2 with REFUSED_STREAM */
        conn->goaway = 1;
        break;
    default:
        break;
    }
    return 0;
}

static int
on_data_chunk_recv(nghttp2_session *ng, uint8_t flags, int32_t stream_id, const uint8_t *data, size_t len, void *user_data)
{
    h2c_stream_t *hc = nghttp2_session_get_stream_user_data(ng, stream_id);
    if (hc == NULL || hc->a == NULL) {
        nghttp2_session_consume(ng, stream_id, len);
        return 0;
    }
    RM_STAT_ADD(hc->a->cstats->bytes_rx, len);
    hc->unconsumed += len;
    rm_attempt_on_response_body(hc->a, data, len);
    return 0;
}

static int
on_stream_close(nghttp2_session *ng, int32_t stream_id, uint32_t error_code, void *user_data)
{
    h2c_stream_t *hc = nghttp2_session_get_stream_user_data(ng, stream_id);
    if (hc == NULL)
        return 0;
    /* its user data needs no clearing: a client session keeps no closed stream, the stream object goes once this returns */
    if (hc->a != NULL) {
        rm_attempt_t *a = take_stream(hc);
        if (hc->resp_done) {
            rm_attempt_detach(a);
        } else {
            char detail[64];
            snprintf(detail, sizeof(detail), "RST_STREAM %s", nghttp2_http2_strerror(error_code));
            rm_attempt_on_error(a, RM_UPSTREAM_ERR_RESET, error_code, detail);
        }
    }
    stream_free(hc);
    return 0;
}

/*
 * Request side
 */

static ssize_t
read_request_body(nghttp2_session *ng, int32_t stream_id, uint8_t *buf, size_t length, uint32_t *data_flags,
                  nghttp2_data_source *source, void *user_data)
{
    h2c_stream_t *hc = source->ptr;
    rm_attempt_t *a = hc->a;
    if (a == NULL) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        return 0;
    }
    size_t n = rm_attempt_read_request_body(a, buf, length);
    RM_STAT_ADD(a->cstats->bytes_tx, n);
    if (rm_attempt_req_pending(a) == 0 && rm_attempt_req_eos(a)) {
        rm_h2_end_data(ng, stream_id, a->pool, rm_attempt_req_trailers(a), 1, data_flags);
        return n;
    }
    if (n == 0)
        return NGHTTP2_ERR_DEFERRED;
    return n;
}

static void
submit_stream(h2c_stream_t *hc)
{
    h2c_conn_t *conn = hc->conn;
    rm_attempt_t *s = hc->a;
    const rm_req_head_t *req = s->req;
    /* the values (in the stream's pool, its configuration, the endpoint's name) live until the stream is destroyed, which
     * cancels (up_cancel: RST_STREAM) a HEADERS frame that has not gone out: nghttp2 then never reads them. The names
     * are copied: nghttp2 lower-cases them on the way. */
    rm_h2_nvs_t nvs;
    rm_h2_nvs_init(&nvs, RM_H2_NVS_COPY_NAMES);
    stream_unpend(hc);
    rm_h2_nvs_add(s->pool, &nvs, H2O_STRLIT(":method"), req->method.base, req->method.len);
    const char *scheme = rm_cluster_ssl_ctx(conn->ep->cluster) != NULL ? "https" : "http";
    rm_h2_nvs_add(s->pool, &nvs, H2O_STRLIT(":scheme"), scheme, strlen(scheme));
    if (req->authority.len != 0)
        rm_h2_nvs_add(s->pool, &nvs, H2O_STRLIT(":authority"), req->authority.base, req->authority.len);
    else
        rm_h2_nvs_add(s->pool, &nvs, H2O_STRLIT(":authority"), conn->ep->name, strlen(conn->ep->name));
    rm_h2_nvs_add(s->pool, &nvs, H2O_STRLIT(":path"), req->path.base, req->path.len);
    int grpc_timeout_sent = 0;
    for (size_t i = 0; i != req->headers.size; ++i) {
        const rm_header_t *h = &req->headers.entries[i];
        if (s->grpc_timeout.base != NULL && h2o_memis(h->name.base, h->name.len, H2O_STRLIT("grpc-timeout"))) {
            if (!grpc_timeout_sent)
                rm_h2_nvs_add(s->pool, &nvs, h->name.base, h->name.len, s->grpc_timeout.base, s->grpc_timeout.len);
            grpc_timeout_sent = 1;
            continue;
        }
        if (s->extra_headers != NULL && rm_headers_find(s->extra_headers, h->name.base, h->name.len, -1) >= 0)
            continue; /* replaced by this attempt's own field (its span's trace context) */
        rm_h2_nvs_add(s->pool, &nvs, h->name.base, h->name.len, h->value.base, h->value.len);
    }
    if (s->extra_headers != NULL)
        for (size_t i = 0; i != s->extra_headers->size; ++i) {
            const rm_header_t *h = &s->extra_headers->entries[i];
            rm_h2_nvs_add(s->pool, &nvs, h->name.base, h->name.len, h->value.base, h->value.len);
        }
    if (s->grpc_timeout.base != NULL && !grpc_timeout_sent)
        rm_h2_nvs_add(s->pool, &nvs, H2O_STRLIT("grpc-timeout"), s->grpc_timeout.base, s->grpc_timeout.len);
    if (to_agent(conn) && req->orig_h1) {
        /* HTTP/1.1 riding HTTP/2 to another agent: what HTTP/2 cannot say travels in marker fields */
        rm_h2_nvs_add(s->pool, &nvs, H2O_STRLIT(RM_MARKER_ORIG_PROTO), H2O_STRLIT("HTTP/1.1"));
        h2o_iovec_t marker = rm_req_case_marker(s->pool, req);
        if (marker.len != 0)
            rm_h2_nvs_add(s->pool, &nvs, H2O_STRLIT(RM_MARKER_H1_CASE), marker.base, marker.len);
    }
    if (req->content_length >= 0) {
        char *cl = h2o_mem_alloc_pool(s->pool, 24);
        size_t n = rm_h2_format_u64(cl, (uint64_t)req->content_length);
        rm_h2_nvs_add(s->pool, &nvs, H2O_STRLIT("content-length"), cl, n);
    }
    int32_t id;
    rm_headers_t *req_trailers = rm_attempt_req_trailers(s);
    /* a request the HTTP/1.1 parser framed without a body (GET...) ends with its HEADERS even if its end is not in the
     * pipe yet: an empty DATA frame would make the next hop see a body of unknown length (chunked in HTTP/1.1) */
    int bodyless_h1 = req->orig_h1 && !req->has_body && req->content_length <= 0 && rm_attempt_req_pending(s) == 0;
    if (bodyless_h1 ||
        (rm_attempt_req_eos(s) && rm_attempt_req_pending(s) == 0 && (req_trailers == NULL || req_trailers->size == 0))) {
        id = nghttp2_submit_request(conn->h2.ng, NULL, nvs.nva, nvs.len, NULL, hc);
    } else {
        nghttp2_data_provider prd = {.source.ptr = hc, .read_callback = read_request_body};
        id = nghttp2_submit_request(conn->h2.ng, NULL, nvs.nva, nvs.len, &prd, hc);
    }
    if (id < 0) {
        /* stream ids exhausted or the session is going away: this connection takes no more */
        conn->goaway = 1;
        rm_attempt_on_error(take_stream(hc), RM_UPSTREAM_ERR_REFUSED, RM_H2_REFUSED_STREAM, nghttp2_strerror(id));
        stream_free(hc);
        return;
    }
    hc->id = id;
    rm_h2conn_schedule_flush(&conn->h2);
}

static void
up_req_body_ready(rm_attempt_t *s)
{
    h2c_stream_t *hc = s->up_ctx;
    if (hc->id == 0)
        return; /* still connecting: the body waits in the pipe */
    nghttp2_session_resume_data(hc->conn->h2.ng, hc->id);
    rm_h2conn_schedule_flush(&hc->conn->h2);
}

static void
up_resp_body_consumed(rm_attempt_t *s, size_t n)
{
    h2c_stream_t *hc = s->up_ctx;
    hc->unconsumed -= n;
    nghttp2_session_consume(hc->conn->h2.ng, hc->id, n);
    rm_h2conn_schedule_flush(&hc->conn->h2);
}

static void
up_cancel(rm_attempt_t *s)
{
    h2c_stream_t *hc = s->up_ctx;
    take_stream(hc);
    if (hc->id == 0) {
        stream_free(hc);
    } else {
        nghttp2_submit_rst_stream(hc->conn->h2.ng, NGHTTP2_FLAG_NONE, hc->id, NGHTTP2_CANCEL);
        rm_h2conn_schedule_flush(&hc->conn->h2);
    }
    rm_attempt_detach(s);
}

static const rm_attempt_up_ops_t up_ops = {up_req_body_ready, up_resp_body_consumed, up_cancel};

/*
 * Connection lifecycle
 */

static void
fail_all_streams(h2c_conn_t *conn, rm_upstream_error_t err, const char *reason)
{
    while (!h2o_linklist_is_empty(&conn->streams)) {
        h2c_stream_t *hc = H2O_STRUCT_FROM_MEMBER(h2c_stream_t, link, conn->streams.next);
        if (hc->id != 0 && conn->h2.ng != NULL)
            nghttp2_session_set_stream_user_data(conn->h2.ng, hc->id, NULL);
        if (hc->a != NULL) {
            rm_attempt_t *a = take_stream(hc);
            if (hc->resp_done)
                rm_attempt_detach(a);
            else
                rm_attempt_on_error(a, err, 0, reason);
        }
        stream_free(hc);
    }
}

static void
destroy_conn(rm_deferred_t *d)
{
    h2c_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h2c_conn_t, destroy_later, d);
    conn->dying = 1;
    fail_all_streams(conn, RM_UPSTREAM_ERR_CLOSED, "upstream connection closed");
    if (conn->connecting != NULL)
        rm_connect_cancel(conn->connecting);
    if (rm_timer_is_linked(&conn->idle_timeout))
        rm_timer_unlink(&conn->idle_timeout);
    if (h2o_linklist_is_linked(&conn->ep_link)) {
        h2o_linklist_unlink(&conn->ep_link);
        --conn->ep->num_h2_conns;
    }
    rm_upconn_unregister(&conn->reg);
    if (conn->h2.sock != NULL || conn->h2.ng != NULL)
        RM_STAT_DEC(rm_cluster_stats(conn->ep->cluster)->cx_active);
    rm_h2conn_dispose(&conn->h2);
    if (conn->holds_slot)
        rm_endpoint_conn_release(conn->ep);
    rm_endpoint_unref(conn->ep);
    free(conn);
}

static void
on_dead(rm_h2conn_t *h2, const char *reason)
{
    h2c_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h2c_conn_t, h2, h2);
    rm_log_debug("h2c", "upstream connection to %s closing: %s", conn->ep->name, reason);
    conn->goaway = 1;
    conn->dying = 1;
    rm_worker_defer(h2->worker, &conn->destroy_later);
}

static void
close_registered(rm_upconn_link_t *u)
{
    h2c_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h2c_conn_t, reg, u);
    rm_worker_cancel_deferred(conn->h2.worker, &conn->destroy_later);
    destroy_conn(&conn->destroy_later);
}

static void
on_idle_timeout(rm_timer_t *entry)
{
    h2c_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h2c_conn_t, idle_timeout, entry);
    if (!conn->idle_released) {
        uint32_t idle_ms = rm_cluster_config(conn->ep->cluster)->pool_idle_timeout_ms;
        conn->idle_released = 1;
        rm_h2conn_release_idle(&conn->h2);
        if (idle_ms > RM_H2_IDLE_RELEASE_MS) {
            rm_worker_timer_start(conn->h2.worker, &conn->idle_timeout, idle_ms - RM_H2_IDLE_RELEASE_MS);
            return;
        }
    }
    rm_h2conn_fail(&conn->h2, "idle timeout");
}

static nghttp2_session_callbacks *client_callbacks;
static nghttp2_option *client_options;

static void
init_callbacks(void)
{
    nghttp2_session_callbacks_new(&client_callbacks);
    nghttp2_session_callbacks_set_on_header_callback2(client_callbacks, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(client_callbacks, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(client_callbacks, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(client_callbacks, on_stream_close);
    nghttp2_option_new(&client_options);
    nghttp2_option_set_no_auto_window_update(client_options, 1);
    nghttp2_option_set_peer_max_concurrent_streams(client_options, 100);
}

static void
start_session(h2c_conn_t *conn, h2o_socket_t *sock)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, init_callbacks);
    const rm_config_limits_t *limits = &conn->h2.worker->config->limits;
    conn->h2.sock = sock;
    if (rm_h2conn_session_new(&conn->h2, 0, client_callbacks, conn, client_options) != 0)
        rm_fatal("out of memory");
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, limits->stream_window_bytes},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, limits->max_header_bytes},
    };
    nghttp2_submit_settings(conn->h2.ng, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    nghttp2_session_set_local_window_size(conn->h2.ng, NGHTTP2_FLAG_NONE, 0, limits->connection_window_bytes);
    RM_STAT_INC(rm_cluster_stats(conn->ep->cluster)->cx_total);
    RM_STAT_INC(rm_cluster_stats(conn->ep->cluster)->cx_active);
    rm_h2conn_start_reading(&conn->h2);
    /* streams that queued while connecting go now, in order */
    for (h2o_linklist_t *n = conn->streams.next; n != &conn->streams;) {
        h2c_stream_t *hc = H2O_STRUCT_FROM_MEMBER(h2c_stream_t, link, n);
        n = n->next; /* submit_stream may free hc */
        if (hc->a != NULL && hc->id == 0)
            submit_stream(hc);
    }
    update_idle(conn); /* every stream went while it connected (cancelled, or refused by a breaker) */
    rm_h2conn_schedule_flush(&conn->h2);
}

static void
on_connected(rm_connect_t *unused, h2o_socket_t *sock, int err_kind, const char *err, rm_wire_protocol_t alpn, void *data)
{
    h2c_conn_t *conn = data;
    conn->connecting = NULL;
    if (sock == NULL) {
        conn->dying = 1;
        fail_all_streams(conn, err_kind, err);
        rm_worker_defer(conn->h2.worker, &conn->destroy_later);
        return;
    }
    const rm_config_cluster_t *cc = rm_cluster_config(conn->ep->cluster);
    if (cc->protocol == RM_UPSTREAM_AUTO && alpn != RM_WIRE_H2) {
        /* ALPN chose HTTP/1.1: this socket becomes an HTTP/1.1 connection for the first stream;
         * the others go through the HTTP/1.1 pool */
        conn->ep->learned = RM_WIRE_HTTP1;
        conn->dying = 1;
        int first = 1;
        while (!h2o_linklist_is_empty(&conn->streams)) {
            h2c_stream_t *hc = H2O_STRUCT_FROM_MEMBER(h2c_stream_t, link, conn->streams.next);
            rm_attempt_t *a = take_stream(hc);
            stream_free(hc);
            if (a == NULL)
                continue;
            rm_attempt_unattach(a);
            const rm_client_codec_t *h1 = rm_upstream_codec(RM_WIRE_HTTP1);
            if (first) {
                first = 0;
                conn->holds_slot = 0; /* the HTTP/1.1 connection takes the socket and its slot */
                h1->start_on_socket(conn->ep, sock, a);
                sock = NULL;
            } else {
                h1->dispatch(conn->ep, a);
            }
        }
        if (sock != NULL)
            rm_socket_close(sock);
        rm_worker_defer(conn->h2.worker, &conn->destroy_later);
        return;
    }
    if (cc->protocol == RM_UPSTREAM_AUTO)
        conn->ep->learned = RM_WIRE_H2;
    start_session(conn, sock);
}

/* A new connection to `ep`, whose max_connections slot the caller has taken. */
static h2c_conn_t *
conn_create(rm_endpoint_t *ep)
{
    rm_worker_t *worker = rm_cluster_worker(ep->cluster);
    h2c_conn_t *conn = rm_calloc(1, sizeof(*conn));
    conn->holds_slot = 1;
    conn->ep = ep;
    rm_endpoint_ref(ep);
    h2o_linklist_init_anchor(&conn->streams);
    conn->idle_timeout.cb = on_idle_timeout;
    conn->destroy_later.cb = destroy_conn;
    conn->reg.close = close_registered;
    rm_upconn_register(worker, &conn->reg);
    rm_h2conn_init(&conn->h2, worker, NULL, on_dead);
    conn->h2.bytes_rx_stat = NULL;
    h2o_linklist_insert(&ep->h2_conns, &conn->ep_link);
    ++ep->num_h2_conns;
    conn->connecting = rm_connect_start_proto(ep, RM_WIRE_H2, on_connected, conn);
    if (conn->connecting == NULL) {
        conn->dying = 1;
        rm_worker_defer(worker, &conn->destroy_later);
    }
    return conn;
}

static void
h2client_dispatch(rm_endpoint_t *ep, rm_attempt_t *s)
{
    const rm_config_cluster_t *cc = rm_cluster_config(ep->cluster);
    h2c_conn_t *best = NULL;
    /* a re-sent refused request goes on a new connection: the one that refused it may be going away */
    for (h2o_linklist_t *n = s->fresh_connection ? &ep->h2_conns : ep->h2_conns.next; n != &ep->h2_conns; n = n->next) {
        h2c_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h2c_conn_t, ep_link, n);
        if (conn->goaway || conn->dying)
            continue;
        if (best == NULL || conn->num_streams < best->num_streams)
            best = conn;
    }
    if (best == NULL || (ep->num_h2_conns < cc->h2_connections && best->num_streams != 0)) {
        if (rm_endpoint_conn_acquire(ep)) {
            h2c_conn_t *fresh = conn_create(ep);
            if (!fresh->dying)
                best = fresh;
        } else if (best == NULL) {
            /* max_connections reached, agent-wide: a re-send that wanted a fresh connection takes the
             * least busy open one; with none, the attempt is refused */
            for (h2o_linklist_t *n = ep->h2_conns.next; n != &ep->h2_conns; n = n->next) {
                h2c_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h2c_conn_t, ep_link, n);
                if (!conn->goaway && !conn->dying && (best == NULL || conn->num_streams < best->num_streams))
                    best = conn;
            }
            if (best == NULL) {
                rm_cluster_overflow(ep->cluster, s, RM_BREAKER_CONNECTIONS, "upstream overflow: max_connections reached");
                return;
            }
        }
        /* else: over the preferred stream count on an open connection rather than a new one */
    }
    if (best == NULL) {
        rm_attempt_on_error(s, RM_UPSTREAM_ERR_CONNECT, 0, "cannot open a connection");
        return;
    }
    int waits = best->h2.ng == NULL;
    if (waits && !rm_breaker_try_acquire(rm_cluster_breaker(ep->cluster), RM_BREAKER_PENDING)) {
        rm_cluster_overflow(ep->cluster, s, RM_BREAKER_PENDING,
                            "upstream overflow: max_pending_requests reached (waiting for a connection)");
        return;
    }
    h2c_stream_t *hc = rm_recycle_alloc(&stream_allocator);
    hc->conn = best;
    hc->a = s;
    hc->pending = waits;
    h2o_linklist_insert(&best->streams, &hc->link);
    ++best->num_streams;
    update_idle(best);
    rm_attempt_attach(s, &up_ops, hc);
    if (best->h2.ng != NULL)
        submit_stream(hc);
}

static void
h2client_close_idle(rm_endpoint_t *ep, int all)
{
    for (h2o_linklist_t *n = ep->h2_conns.next; n != &ep->h2_conns;) {
        h2c_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h2c_conn_t, ep_link, n);
        n = n->next;
        conn->goaway = 1;
        if ((all || conn->num_streams == 0) && !conn->dying) {
            conn->dying = 1;
            rm_worker_defer(conn->h2.worker, &conn->destroy_later);
        }
    }
}

static void
h2client_start_on_socket(rm_endpoint_t *ep, h2o_socket_t *sock, rm_attempt_t *a)
{
    /* HTTP/2 is never chosen after the handshake: the HTTP/2 client asks for it by ALPN itself. The
     * socket came with its max_connections slot: give it back with the socket. */
    rm_socket_close(sock);
    rm_endpoint_conn_release(ep);
    rm_attempt_on_error(a, RM_UPSTREAM_ERR_CONNECT, 0, "unexpected HTTP/2 start on a negotiated socket");
}

static const rm_client_codec_t h2client_codec = {"h2", h2client_dispatch, h2client_start_on_socket, h2client_close_idle};

void
rm_h2client_register(void)
{
    rm_upstream_register_codec(RM_WIRE_H2, &h2client_codec);
}
