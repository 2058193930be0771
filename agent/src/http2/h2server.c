/*
 * Downstream HTTP/2: an nghttp2 server session per connection, translating each stream into an
 * rm_stream_t. Request bodies are not acknowledged (WINDOW_UPDATE) until the upstream side has
 * taken the bytes, so the client's window is the bound on what the proxy holds per stream.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "core/alloc.h"
#include "http2/h2conn.h"
#include "net/listener.h"
#include "proxy/stream.h"
#include "net/sockio.h"

#define MAX_GAPS 8
/* how long a connection closed for abuse may take to write its GOAWAY before the socket is closed anyway */
#define ABUSE_LINGER_MS 1000

typedef struct st_h2s_conn_t {
    rm_h2conn_t h2;
    rm_dconn_t *dc;
    h2o_linklist_t streams;
    size_t num_streams;
    /* streams whose request head arrived in the read being parsed: started once the whole read is parsed, so that a
     * RST_STREAM in the same read ends them before anything is routed or sent upstream */
    h2o_linklist_t pending_heads;
    rm_timer_t idle_timeout;
    uv_timer_t *goaway_timer;
    rm_deferred_t destroy_later;
    /* abuse accounting (docs/hardening.md): a few integer operations per frame */
    uint32_t streams_opened, streams_closed, premature_resets;
    uint32_t empty_frames, priority_frames, window_update_frames, data_frames_sent;
    /* the highest client stream id seen, and the ids the client skipped below it (RFC 9113 5.1.1: they are closed
     * and may never be opened): up to MAX_GAPS ranges, the rest is not judged */
    int32_t max_stream_id;
    int32_t gaps[MAX_GAPS][2];
    uint8_t num_gaps;
    unsigned draining : 1;
    unsigned goaway_sent : 1;
    unsigned dying : 1;
    unsigned abused : 1;        /* GOAWAY ENHANCE_YOUR_CALM queued: input is read and dropped (rm_h2conn_linger) */
    unsigned idle_released : 1; /* idle_timeout's first step (RM_H2_IDLE_RELEASE_MS) has run */
    /* the stream of the last header field (on_header is called once per field: this saves nghttp2's stream lookup for
     * all but the first of a block); cleared when that stream is freed */
    struct st_h2s_stream_t *hdr_stream;
    /* streams the client closed (RFC 9113 5.1), answered here rather than by nghttp2 (rm_h2_closed_t) */
    rm_h2_closed_t closed;
    /* streams with reset_after_end set: while there is none, a frame sent needs no stream lookup */
    uint32_t num_reset_after_end;
} h2s_conn_t;

typedef struct st_h2s_stream_t {
    h2s_conn_t *conn;
    rm_stream_t *s;
    int32_t id;
    h2o_linklist_t link;
    h2o_linklist_t pending_link; /* in conn->pending_heads */
    uint64_t started_ms;         /* loop time of its HEADERS (premature resets) */
    uint32_t num_headers;
    uint32_t header_bytes;
    /** request bytes handed to the stream and not yet consumed by the upstream side */
    size_t unconsumed;
    rm_headers_t *trailers;
    unsigned too_large : 1;
    unsigned head_done : 1;
    unsigned has_markers : 1; /* a request field is named x-remora-...: take_markers has work */
    unsigned resp_done : 1;   /* END_STREAM or RST_STREAM submitted */
    unsigned client_done : 1; /* END_STREAM received: the client's side is closed */
    /* the response ended before the request: reset the stream once the END_STREAM frame is out */
    unsigned reset_after_end : 1;
} h2s_stream_t;

static __thread rm_recycle_t stream_allocator = RM_RECYCLE_INITIALIZER(h2s_stream_t, 1024);

static const rm_stream_down_ops_t down_ops;
static void on_goaway_timer(uv_timer_t *timer);

/* Ends the connection for abuse: GOAWAY ENHANCE_YOUR_CALM, no more reading, counted and logged once. A peer that
 * floods the outbound queue is not reading: its connection closes at once. */
static void
abuse(h2s_conn_t *conn, rm_h2_abuse_t kind)
{
    if (conn->abused || conn->dying)
        return;
    conn->abused = 1;
    RM_STAT_INC(conn->dc->stats->h2_abuse[kind]);
    rm_log_warn("h2", "closing a downstream HTTP/2 connection: %s over its limit (streams %u, premature resets %u)",
                rm_h2_abuse_names[kind], conn->streams_closed, conn->premature_resets);
    nghttp2_session_terminate_session(conn->h2.ng, NGHTTP2_ENHANCE_YOUR_CALM);
    if (kind == RM_H2_ABUSE_OUTBOUND_CONTROL || kind == RM_H2_ABUSE_OUTBOUND_FRAMES) {
        rm_h2conn_fail(&conn->h2, rm_h2_abuse_names[kind]);
        return;
    }
    /* the peer may still be sending: its input is read and dropped until the timer below, so that closing does not
     * reset the connection under the GOAWAY */
    rm_h2conn_linger(&conn->h2);
    if (conn->goaway_timer == NULL) {
        conn->goaway_timer = rm_malloc(sizeof(*conn->goaway_timer));
        uv_timer_init(&conn->h2.worker->loop, conn->goaway_timer);
        conn->goaway_timer->data = conn;
    }
    uv_timer_start(conn->goaway_timer, on_goaway_timer, ABUSE_LINGER_MS, 0);
    rm_h2conn_schedule_flush(&conn->h2);
}

static void
on_conn_abuse(rm_h2conn_t *h2, rm_h2_abuse_t kind)
{
    abuse(H2O_STRUCT_FROM_MEMBER(h2s_conn_t, h2, h2), kind);
}

/* RFC 9113 5.1.1: a new stream's id must exceed every id the client used; nghttp2 ignores a HEADERS frame on an id it
 * skipped instead of failing the connection. Returns 0 if `id` may start or continue a stream. */
static int
check_stream_id(h2s_conn_t *conn, int32_t id)
{
    if (id > conn->max_stream_id) {
        if ((int64_t)id > (int64_t)conn->max_stream_id + 2 && conn->num_gaps < MAX_GAPS) {
            conn->gaps[conn->num_gaps][0] = conn->max_stream_id + 1;
            conn->gaps[conn->num_gaps][1] = id - 1;
            ++conn->num_gaps;
        }
        conn->max_stream_id = id;
        return 0;
    }
    for (uint8_t i = 0; i != conn->num_gaps; ++i)
        if (id >= conn->gaps[i][0] && id <= conn->gaps[i][1])
            return -1;
    return 0;
}

static int
on_begin_frame(nghttp2_session *ng, const nghttp2_frame_hd *hd, void *user_data)
{
    h2s_conn_t *conn = user_data;
    if (conn->abused)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    const rm_config_limits_t *limits = &conn->h2.worker->config->limits;
    switch (hd->type) {
    case NGHTTP2_HEADERS:
        if ((hd->stream_id & 1) != 0 && check_stream_id(conn, hd->stream_id) != 0) {
            RM_STAT_INC(conn->dc->stats->rq_protocol_error);
            rm_log_debug("h2", "HEADERS on stream %d, below the client's last stream %d", hd->stream_id, conn->max_stream_id);
            nghttp2_session_terminate_session(ng, NGHTTP2_PROTOCOL_ERROR);
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        __attribute__((fallthrough));
    case NGHTTP2_DATA:
    case NGHTTP2_CONTINUATION:
        if (hd->length == 0 && (hd->flags & NGHTTP2_FLAG_END_STREAM) == 0) {
            if (++conn->empty_frames > limits->h2_max_consecutive_empty_frames)
                goto Abuse_empty;
        } else if (hd->type != NGHTTP2_DATA || (hd->flags & NGHTTP2_FLAG_PADDED) == 0) {
            conn->empty_frames = 0;
        } /* else a padded DATA frame: judged by its payload without the padding, in on_frame_recv */
        break;
    case NGHTTP2_PRIORITY:
        if (++conn->priority_frames > (uint64_t)limits->h2_max_priority_frames_per_stream * (1 + conn->streams_opened)) {
            abuse(conn, RM_H2_ABUSE_PRIORITY);
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        break;
    case NGHTTP2_WINDOW_UPDATE:
        /* Envoy's rule: a peer needs about one WINDOW_UPDATE per DATA frame it receives, plus a few per stream */
        if (++conn->window_update_frames >
            5 + 2 * ((uint64_t)conn->streams_opened +
                     (uint64_t)limits->h2_max_window_update_frames_per_data_frame_sent * conn->data_frames_sent)) {
            abuse(conn, RM_H2_ABUSE_WINDOW_UPDATE);
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        break;
    default:
        break;
    }
    return 0;
Abuse_empty:
    abuse(conn, RM_H2_ABUSE_EMPTY_FRAMES);
    return NGHTTP2_ERR_CALLBACK_FAILURE;
}

/* The idle timer runs in two steps: after RM_H2_IDLE_RELEASE_MS the connection gives back its buffers
 * (rm_h2conn_release_idle), at limits.idle_timeout_ms it is closed (on_idle_timeout). */
static void
update_idle(h2s_conn_t *conn)
{
    if (conn->num_streams == 0 && !conn->dying) {
        if (!rm_timer_is_linked(&conn->idle_timeout)) {
            uint32_t idle_ms = conn->h2.worker->config->limits.idle_timeout_ms;
            conn->idle_released = idle_ms <= RM_H2_IDLE_RELEASE_MS;
            rm_worker_timer_start(conn->h2.worker, &conn->idle_timeout, conn->idle_released ? idle_ms : RM_H2_IDLE_RELEASE_MS);
        }
    } else if (rm_timer_is_linked(&conn->idle_timeout)) {
        rm_timer_unlink(&conn->idle_timeout);
    }
}

static void
stream_free(h2s_stream_t *hs)
{
    h2o_linklist_unlink(&hs->link);
    if (h2o_linklist_is_linked(&hs->pending_link))
        h2o_linklist_unlink(&hs->pending_link);
    --hs->conn->num_streams;
    if (hs->conn->hdr_stream == hs)
        hs->conn->hdr_stream = NULL;
    if (hs->reset_after_end)
        --hs->conn->num_reset_after_end;
    update_idle(hs->conn);
    rm_recycle_free(&stream_allocator, hs);
}

/*
 * nghttp2 callbacks
 */

static int
on_begin_headers(nghttp2_session *ng, const nghttp2_frame *frame, void *user_data)
{
    h2s_conn_t *conn = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    rm_worker_t *worker = conn->h2.worker;
    const rm_config_listener_t *listener = rm_dconn_listener(conn->dc, worker->config);
    if (listener == NULL) {
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_REFUSED_STREAM);
        return 0;
    }
    h2s_stream_t *hs = rm_recycle_alloc(&stream_allocator);
    hs->conn = conn;
    hs->id = frame->hd.stream_id;
    hs->started_ms = uv_now(&worker->loop);
    ++conn->streams_opened;
    hs->s = rm_stream_create(worker, worker->config, listener, conn->dc->stats, &down_ops, hs);
    rm_stream_set_peer(hs->s, (struct sockaddr *)&conn->dc->peer, conn->dc->peerlen);
    rm_stream_set_peer_identity(hs->s, conn->dc->peer_identity, conn->dc->peer_identity_hash);
    /* mesh mTLS is the agents' hop, not the client's scheme: the calling agent's client spoke http */
    hs->s->req.scheme = conn->dc->is_tls && conn->dc->peer_identity == NULL ? h2o_iovec_init(H2O_STRLIT("https"))
                                                                            : h2o_iovec_init(H2O_STRLIT("http"));
    h2o_linklist_insert(&conn->streams, &hs->link);
    ++conn->num_streams;
    update_idle(conn);
    nghttp2_session_set_stream_user_data(ng, hs->id, hs);
    return 0;
}

static int
on_header(nghttp2_session *ng, const nghttp2_frame *frame, nghttp2_rcbuf *name_rc, nghttp2_rcbuf *value_rc, uint8_t flags,
          void *user_data)
{
    h2s_conn_t *conn = user_data;
    nghttp2_vec name_v = nghttp2_rcbuf_get_buf(name_rc), value_v = nghttp2_rcbuf_get_buf(value_rc);
    const uint8_t *name = name_v.base, *value = value_v.base;
    size_t namelen = name_v.len, valuelen = value_v.len;
    h2s_stream_t *hs = conn->hdr_stream;
    if (hs == NULL || hs->id != frame->hd.stream_id)
        conn->hdr_stream = hs = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
    if (hs == NULL || hs->s == NULL)
        return 0;
    const rm_config_limits_t *limits = &hs->s->config->limits;
    hs->header_bytes += namelen + valuelen + 32;
    if (++hs->num_headers > limits->max_headers || hs->header_bytes > limits->max_header_bytes) {
        hs->too_large = 1;
        return 0;
    }
    if (hs->too_large)
        return 0;
    rm_stream_t *s = hs->s;
    if (frame->headers.cat == NGHTTP2_HCAT_HEADERS) {
        /* trailers (nghttp2 has already rejected pseudo-headers in them) */
        if (hs->trailers == NULL) {
            hs->trailers = h2o_mem_alloc_pool(&s->pool, sizeof(*hs->trailers));
            memset(hs->trailers, 0, sizeof(*hs->trailers));
        }
        rm_headers_add(&s->pool, hs->trailers, rm_h2_field_copy(&s->pool, name_rc, name_v),
                       rm_h2_field_copy(&s->pool, value_rc, value_v));
        return 0;
    }
    rm_req_head_t *req = &s->req;
    /* nghttp2 (HTTP messaging on) passes lower-case names only, an upper-case one goes to on_invalid_header: names
     * compare byte for byte */
    const char *n = (const char *)name;
    if (namelen != 0 && name[0] == ':') {
        h2o_iovec_t v = rm_h2_field_copy(&s->pool, value_rc, value_v);
        if (h2o_memis(n, namelen, H2O_STRLIT(":method")))
            req->method = v;
        else if (h2o_memis(n, namelen, H2O_STRLIT(":path")))
            req->path = v;
        else if (h2o_memis(n, namelen, H2O_STRLIT(":authority")))
            req->authority = v;
        else if (h2o_memis(n, namelen, H2O_STRLIT(":scheme")))
            req->scheme = v;
        return 0;
    }
    if (h2o_memis(n, namelen, H2O_STRLIT("host"))) {
        /* :authority wins when both are present (RFC 9113 8.3.1) */
        if (req->authority.len == 0)
            req->authority = rm_h2_field_copy(&s->pool, value_rc, value_v);
        return 0;
    }
    if (h2o_memis(n, namelen, H2O_STRLIT("content-length"))) {
        /* nghttp2 has validated it against the DATA it counts */
        int64_t cl = 0;
        for (size_t i = 0; i != valuelen; ++i)
            cl = cl * 10 + (value[i] - '0');
        req->content_length = cl;
        return 0;
    }
    if (h2o_memis(n, namelen, H2O_STRLIT("te")))
        req->te_trailers = 1; /* nghttp2 rejects any other value */
    else if (h2o_memis(n, namelen, H2O_STRLIT("content-type")) && valuelen >= 16 && memcmp(value, "application/grpc", 16) == 0)
        req->is_grpc = 1;
    else if (namelen > 9 && n[0] == 'x' && memcmp(n, "x-remora-", 9) == 0)
        hs->has_markers = 1; /* the prefix rm_headers_take_markers looks for */
    rm_headers_add(&s->pool, &req->headers, rm_h2_field_copy(&s->pool, name_rc, name_v),
                   rm_h2_field_copy(&s->pool, value_rc, value_v));
    return 0;
}

/* 1 if the stream's callers are agents, whose marker fields are honoured (docs/architecture.md, "Names to keep") */
static int
from_agent(const rm_stream_t *s)
{
    return s->listener != NULL && (s->listener->peer_agent || s->listener->direction == RM_DIRECTION_INBOUND);
}

/* Marker fields are removed from every request; from an agent they restore what HTTP/2 cannot carry: that the request
 * was HTTP/1.1 at the edge of the mesh and how its field names were spelled. */
static void
take_markers(rm_stream_t *s)
{
    h2o_iovec_t case_marker, orig_proto;
    rm_headers_take_markers(&s->req.headers, &case_marker, &orig_proto);
    if (!from_agent(s))
        return;
    if (h2o_memis(orig_proto.base, orig_proto.len, H2O_STRLIT("HTTP/1.1")))
        s->req.orig_h1 = 1;
    if (case_marker.len != 0)
        rm_req_apply_case_marker(&s->req, case_marker);
}

static int
on_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, void *user_data)
{
    h2s_stream_t *hs;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        /* the stream of the block's fields, unless the block had none that reached on_header */
        if (((hs = ((h2s_conn_t *)user_data)->hdr_stream) == NULL || hs->id != frame->hd.stream_id) &&
            (hs = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id)) == NULL)
            return 0;
        if (hs->s == NULL)
            return 0;
        if (!hs->head_done) {
            hs->head_done = 1;
            hs->s->req.has_body = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) == 0;
            /* started by start_pending_heads; body and end may reach the stream's pipe before */
            h2o_linklist_insert(&((h2s_conn_t *)user_data)->pending_heads, &hs->pending_link);
        } else if (hs->too_large) {
            nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, hs->id, NGHTTP2_PROTOCOL_ERROR);
            return 0;
        }
        if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) {
            hs->client_done = 1;
            if (hs->s != NULL)
                rm_stream_on_request_end(hs->s, hs->trailers);
        }
        break;
    case NGHTTP2_DATA:
        if ((frame->hd.flags & NGHTTP2_FLAG_PADDED) != 0 && frame->hd.length != 0) {
            h2s_conn_t *conn = user_data;
            if (frame->hd.length > frame->data.padlen || (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) {
                conn->empty_frames = 0;
            } else if (++conn->empty_frames > conn->h2.worker->config->limits.h2_max_consecutive_empty_frames) {
                abuse(conn, RM_H2_ABUSE_EMPTY_FRAMES); /* nothing but padding */
                return NGHTTP2_ERR_CALLBACK_FAILURE;
            }
        }
        if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0 &&
            (hs = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id)) != NULL) {
            hs->client_done = 1;
            if (hs->s != NULL)
                rm_stream_on_request_end(hs->s, NULL);
        }
        break;
    default:
        break;
    }
    return 0;
}

/* After a read is parsed: routes the requests whose streams are still open. */
static void
start_pending_heads(rm_h2conn_t *h2)
{
    h2s_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h2s_conn_t, h2, h2);
    while (!h2o_linklist_is_empty(&conn->pending_heads)) {
        h2s_stream_t *hs = H2O_STRUCT_FROM_MEMBER(h2s_stream_t, pending_link, conn->pending_heads.next);
        h2o_linklist_unlink(&hs->pending_link);
        rm_stream_t *s = hs->s;
        if (s == NULL || conn->abused)
            continue; /* a connection closed for abuse routes nothing more; its streams are aborted with it */
        if (hs->too_large) {
            RM_STAT_INC(s->lstats->rq_protocol_error);
            RM_STAT_INC(s->lstats->limit[RM_STAT_LIMIT_HEADERS_TOO_LARGE]);
            rm_stream_send_local_reply(s, 431, RM_GRPC_RESOURCE_EXHAUSTED, "request header fields too large");
        } else {
            if (hs->has_markers)
                take_markers(s);
            rm_stream_on_request_head(s);
        }
    }
}

static int
on_data_chunk_recv(nghttp2_session *ng, uint8_t flags, int32_t stream_id, const uint8_t *data, size_t len, void *user_data)
{
    h2s_stream_t *hs = nghttp2_session_get_stream_user_data(ng, stream_id);
    if (hs == NULL || hs->s == NULL) {
        nghttp2_session_consume(ng, stream_id, len);
        return 0;
    }
    hs->unconsumed += len;
    rm_stream_on_request_body(hs->s, data, len);
    return 0;
}

static int
on_stream_close(nghttp2_session *ng, int32_t stream_id, uint32_t error_code, void *user_data)
{
    h2s_stream_t *hs = nghttp2_session_get_stream_user_data(ng, stream_id);
    if (hs == NULL)
        return 0;
    /* its user data needs no clearing: nghttp2 keeps no closed stream (nghttp2_option_set_no_closed_streams), the stream
     * object goes once this returns */
    rm_stream_t *s = hs->s;
    hs->s = NULL;
    /* Envoy's premature-reset rule: a stream reset before any response head within the window, by the client
     * (rapid reset, whatever its error code) or by nghttp2 because of the client's frames (MadeYouReset,
     * CVE-2025-8671). A stream closes without resp_done only by a reset: the agent's own resets set it. Judged once
     * enough streams have closed */
    h2s_conn_t *conn = hs->conn;
    const rm_config_limits_t *limits = &conn->h2.worker->config->limits;
    /* the client's RST_STREAM was noted by the scan of the input */
    if (hs->client_done)
        rm_h2_closed_note(&conn->closed, stream_id);
    ++conn->streams_closed;
    if (!hs->resp_done && (s == NULL || !s->resp_head_sent) &&
        uv_now(&conn->h2.worker->loop) - hs->started_ms < limits->h2_premature_reset_window_ms)
        ++conn->premature_resets;
    if (conn->streams_closed >= limits->h2_premature_reset_min_streams && conn->premature_resets * 2 > conn->streams_closed)
        abuse(conn, RM_H2_ABUSE_PREMATURE_RESET);
    if (hs->unconsumed != 0) {
        /* the upstream side will not report these any more: reopen the connection window */
        nghttp2_session_consume_connection(ng, hs->unconsumed);
        hs->unconsumed = 0;
    }
    if (s != NULL) {
        if (!hs->resp_done)
            rm_stream_on_downstream_abort(s);
        rm_stream_detach_downstream(s);
    }
    stream_free(hs);
    return 0;
}

static int
on_frame_send(nghttp2_session *ng, const nghttp2_frame *frame, void *user_data)
{
    if (frame->hd.type == NGHTTP2_DATA)
        ++((h2s_conn_t *)user_data)->data_frames_sent;
    if ((frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) || (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) == 0 ||
        ((h2s_conn_t *)user_data)->num_reset_after_end == 0)
        return 0;
    h2s_stream_t *hs = nghttp2_session_get_stream_user_data(ng, frame->hd.stream_id);
    if (hs != NULL && hs->reset_after_end && (hs->s == NULL || !hs->s->req_done))
        nghttp2_submit_rst_stream(ng, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_NO_ERROR);
    return 0;
}

static int
on_invalid_frame_recv(nghttp2_session *ng, const nghttp2_frame *frame, int lib_error_code, void *user_data)
{
    h2s_conn_t *conn = user_data;
    RM_STAT_INC(conn->dc->stats->rq_protocol_error);
    rm_log_debug("h2", "invalid frame on stream %d: %s", frame->hd.stream_id, nghttp2_strerror(lib_error_code));
    return 0;
}

static int
on_invalid_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name, size_t namelen, const uint8_t *value,
                  size_t valuelen, uint8_t flags, void *user_data)
{
    /* RFC 9113 8.2.1: a malformed field makes the request malformed: reset the stream */
    h2s_conn_t *conn = user_data;
    RM_STAT_INC(conn->dc->stats->rq_protocol_error);
    /* resets this stream with PROTOCOL_ERROR; any other error code would kill the whole session */
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

/*
 * Response side
 */

static void
set_reset_after_end(h2s_stream_t *hs)
{
    if (!hs->reset_after_end) {
        hs->reset_after_end = 1;
        ++hs->conn->num_reset_after_end;
    }
}

static ssize_t
read_response_body(nghttp2_session *ng, int32_t stream_id, uint8_t *buf, size_t length, uint32_t *data_flags,
                   nghttp2_data_source *source, void *user_data)
{
    h2s_stream_t *hs = source->ptr;
    rm_stream_t *s = hs->s;
    if (s == NULL) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        return 0;
    }
    size_t n = rm_stream_read_response_body(s, buf, length);
    if (s->resp_body.buf->size == 0 && s->resp_body.eos) {
        hs->resp_done = 1;
        rm_h2_end_data(ng, stream_id, &s->pool, s->resp_body.trailers, 0, data_flags);
        if (!s->req_done)
            /* the response is complete but the client is still sending: tell it to stop (RFC 9113
             * 8.1), after the frame that ends the response (nghttp2 would send a reset first) */
            set_reset_after_end(hs);
        return n;
    }
    if (n == 0)
        return NGHTTP2_ERR_DEFERRED;
    return n;
}

static void
down_send_response_head(rm_stream_t *s)
{
    h2s_stream_t *hs = s->down_ctx;
    h2s_conn_t *conn = hs->conn;
    rm_h2_nvs_t nvs;
    rm_h2_nvs_init(&nvs, 0);
    char *status = h2o_mem_alloc_pool(&s->pool, 24);
    size_t status_len = rm_h2_format_u64(status, (uint64_t)s->resp.status);
    rm_h2_nvs_add(&s->pool, &nvs, H2O_STRLIT(":status"), status, status_len);
    for (size_t i = 0; i != s->resp.headers.size; ++i) {
        rm_header_t *h = &s->resp.headers.entries[i];
        rm_h2_nvs_add(&s->pool, &nvs, h->name.base, h->name.len, h->value.base, h->value.len);
    }
    if (s->req.orig_h1 && from_agent(s)) {
        /* the agent that sent the request restores the response's name case for its HTTP/1.1 client */
        h2o_iovec_t marker = rm_resp_case_marker(&s->pool, &s->resp);
        if (marker.len != 0)
            rm_h2_nvs_add(&s->pool, &nvs, H2O_STRLIT(RM_MARKER_H1_CASE), marker.base, marker.len);
    }
    if (s->resp.content_length >= 0) {
        char *cl = h2o_mem_alloc_pool(&s->pool, 24);
        size_t n = rm_h2_format_u64(cl, (uint64_t)s->resp.content_length);
        rm_h2_nvs_add(&s->pool, &nvs, H2O_STRLIT("content-length"), cl, n);
    }
    int r;
    if (s->resp_body.eos && s->resp_body.buf->size == 0 && (s->resp_body.trailers == NULL || s->resp_body.trailers->size == 0)) {
        /* no body: END_STREAM on HEADERS (this is also how a gRPC trailers-only response goes out) */
        hs->resp_done = 1;
        r = nghttp2_submit_response(conn->h2.ng, hs->id, nvs.nva, nvs.len, NULL);
        if (r == 0 && !s->req_done)
            set_reset_after_end(hs);
    } else {
        nghttp2_data_provider prd = {.source.ptr = hs, .read_callback = read_response_body};
        r = nghttp2_submit_response(conn->h2.ng, hs->id, nvs.nva, nvs.len, &prd);
    }
    if (r != 0)
        rm_log_debug("h2", "submit_response on stream %d: %s", hs->id, nghttp2_strerror(r));
    rm_h2conn_schedule_flush(&conn->h2);
}

static void
down_resp_body_ready(rm_stream_t *s)
{
    h2s_stream_t *hs = s->down_ctx;
    nghttp2_session_resume_data(hs->conn->h2.ng, hs->id);
    rm_h2conn_schedule_flush(&hs->conn->h2);
}

static void
down_req_body_consumed(rm_stream_t *s, size_t n)
{
    h2s_stream_t *hs = s->down_ctx;
    hs->unconsumed -= n;
    nghttp2_session_consume(hs->conn->h2.ng, hs->id, n);
    rm_h2conn_schedule_flush(&hs->conn->h2);
}

static void
down_reset(rm_stream_t *s, uint32_t h2_error)
{
    h2s_stream_t *hs = s->down_ctx;
    hs->resp_done = 1;
    nghttp2_submit_rst_stream(hs->conn->h2.ng, NGHTTP2_FLAG_NONE, hs->id, h2_error);
    rm_h2conn_schedule_flush(&hs->conn->h2);
}

static const rm_stream_down_ops_t down_ops = {down_send_response_head, down_resp_body_ready, down_req_body_consumed, down_reset,
                                              "HTTP/2"};

/*
 * Connection lifecycle
 */

static void
destroy_conn(rm_deferred_t *d)
{
    h2s_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h2s_conn_t, destroy_later, d);
    /* streams still open: their upstream halves must be told */
    while (!h2o_linklist_is_empty(&conn->streams)) {
        h2s_stream_t *hs = H2O_STRUCT_FROM_MEMBER(h2s_stream_t, link, conn->streams.next);
        rm_stream_t *s = hs->s;
        hs->s = NULL;
        if (s != NULL) {
            if (!hs->resp_done)
                rm_stream_on_downstream_abort(s);
            rm_stream_detach_downstream(s);
        }
        stream_free(hs);
    }
    if (rm_timer_is_linked(&conn->idle_timeout))
        rm_timer_unlink(&conn->idle_timeout);
    if (conn->goaway_timer != NULL)
        uv_close((uv_handle_t *)conn->goaway_timer, (uv_close_cb)free);
    conn->h2.sock = NULL; /* closed with the dconn */
    rm_h2conn_dispose(&conn->h2);
    rm_socket_close(conn->dc->sock);
    rm_dconn_destroy(conn->dc);
    free(conn);
}

static void
on_dead(rm_h2conn_t *h2, const char *reason)
{
    h2s_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h2s_conn_t, h2, h2);
    rm_log_debug("h2", "downstream connection closing: %s", reason);
    conn->dying = 1;
    /* possibly inside nghttp2 callbacks: destroy after this iteration */
    rm_worker_defer(h2->worker, &conn->destroy_later);
}

static void
on_idle_timeout(rm_timer_t *entry)
{
    h2s_conn_t *conn = H2O_STRUCT_FROM_MEMBER(h2s_conn_t, idle_timeout, entry);
    if (!conn->idle_released) {
        uint32_t idle_ms = conn->h2.worker->config->limits.idle_timeout_ms;
        conn->idle_released = 1;
        rm_h2conn_release_idle(&conn->h2);
        if (idle_ms > RM_H2_IDLE_RELEASE_MS) {
            rm_worker_timer_start(conn->h2.worker, &conn->idle_timeout, idle_ms - RM_H2_IDLE_RELEASE_MS);
            return;
        }
    }
    nghttp2_submit_goaway(conn->h2.ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(conn->h2.ng), NGHTTP2_NO_ERROR,
                          (const uint8_t *)"idle", 4);
    conn->goaway_sent = 1;
    rm_h2conn_schedule_flush(&conn->h2);
}

static void
on_goaway_timer(uv_timer_t *timer)
{
    h2s_conn_t *conn = timer->data;
    if (conn->dying)
        return;
    if (conn->abused) {
        /* the GOAWAY had its time to leave */
        rm_h2conn_fail(&conn->h2, "closed for abuse");
        return;
    }
    /* second phase of a graceful shutdown: the client has had a round trip to see the notice */
    nghttp2_submit_goaway(conn->h2.ng, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(conn->h2.ng), NGHTTP2_NO_ERROR,
                          NULL, 0);
    conn->goaway_sent = 1;
    rm_h2conn_schedule_flush(&conn->h2);
}

static void
drain(rm_dconn_t *dc)
{
    h2s_conn_t *conn = dc->impl;
    if (conn->draining || conn->dying)
        return;
    conn->draining = 1;
    if (conn->abused)
        return; /* already closing, on its own timer */
    nghttp2_submit_shutdown_notice(conn->h2.ng);
    if (conn->goaway_timer == NULL) {
        conn->goaway_timer = rm_malloc(sizeof(*conn->goaway_timer));
        uv_timer_init(&conn->h2.worker->loop, conn->goaway_timer);
        conn->goaway_timer->data = conn;
    }
    uv_timer_start(conn->goaway_timer, on_goaway_timer, 200, 0);
    rm_h2conn_schedule_flush(&conn->h2);
}

static void
close_now(rm_dconn_t *dc)
{
    h2s_conn_t *conn = dc->impl;
    conn->dying = 1;
    rm_worker_cancel_deferred(conn->h2.worker, &conn->destroy_later);
    destroy_conn(&conn->destroy_later);
}

static const rm_dconn_ops_t dconn_ops = {drain, close_now};

static nghttp2_session_callbacks *server_callbacks;

static void
init_callbacks(void)
{
    nghttp2_session_callbacks_new(&server_callbacks);
    nghttp2_session_callbacks_set_on_begin_headers_callback(server_callbacks, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback2(server_callbacks, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(server_callbacks, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(server_callbacks, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(server_callbacks, on_stream_close);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(server_callbacks, on_invalid_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(server_callbacks, on_frame_send);
    nghttp2_session_callbacks_set_on_invalid_header_callback(server_callbacks, on_invalid_header);
    nghttp2_session_callbacks_set_on_begin_frame_callback(server_callbacks, on_begin_frame);
}

void
rm_h2server_accept(rm_dconn_t *dc)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, init_callbacks);

    rm_worker_t *worker = dc->worker;
    const rm_config_limits_t *limits = &worker->config->limits;
    h2s_conn_t *conn = rm_calloc(1, sizeof(*conn));
    conn->dc = dc;
    dc->impl = conn;
    dc->ops = &dconn_ops;
    h2o_linklist_init_anchor(&conn->streams);
    h2o_linklist_init_anchor(&conn->pending_heads);
    conn->idle_timeout.cb = on_idle_timeout;
    conn->destroy_later.cb = destroy_conn;
    rm_h2conn_init(&conn->h2, worker, dc->sock, on_dead);
    conn->h2.bytes_rx_stat = &dc->stats->bytes_rx;
    conn->h2.bytes_tx_stat = &dc->stats->bytes_tx;
    conn->h2.on_abuse = on_conn_abuse;
    conn->h2.after_recv = start_pending_heads;
    conn->h2.max_out_frames = limits->h2_max_outbound_frames;
    rm_h2_closed_init(&conn->closed);
    conn->h2.closed = &conn->closed;
    /* options per session: the outbound-ACK bound is a limit of the current config */
    nghttp2_option *options;
    if (nghttp2_option_new(&options) != 0)
        rm_fatal("out of memory");
    nghttp2_option_set_no_auto_window_update(options, 1);
    nghttp2_option_set_max_deflate_dynamic_table_size(options, 4096);
    nghttp2_option_set_max_outbound_ack(options, limits->h2_max_outbound_control_frames);
    /* closed streams are the connection's (conn->closed): nghttp2 would keep an object per closed stream */
    nghttp2_option_set_no_closed_streams(options, 1);
    int r = rm_h2conn_session_new(&conn->h2, 1, server_callbacks, conn, options);
    nghttp2_option_del(options);
    if (r != 0)
        rm_fatal("nghttp2_session_server_new3: %s", nghttp2_strerror(r));
    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, limits->h2_max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, limits->stream_window_bytes},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, limits->max_header_bytes},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
    };
    nghttp2_submit_settings(conn->h2.ng, NGHTTP2_FLAG_NONE, iv, sizeof(iv) / sizeof(iv[0]));
    nghttp2_session_set_local_window_size(conn->h2.ng, NGHTTP2_FLAG_NONE, 0, limits->connection_window_bytes);
    update_idle(conn);
    if (worker->draining)
        drain(dc);
    rm_h2conn_start_reading(&conn->h2);
    rm_h2conn_schedule_flush(&conn->h2);
}
