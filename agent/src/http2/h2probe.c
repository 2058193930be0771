#include <stdlib.h>
#include <string.h>
#include <nghttp2/nghttp2.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "http2/h2probe.h"
#include "upstream/health.h"

/* a health answer is tiny: more than this is not read */
#define MAX_BODY (64 * 1024)

typedef struct st_probe_t {
    nghttp2_session *ng;
    int32_t stream_id;
    int status, grpc_status;
    uint8_t *body;
    size_t body_len;
    const uint8_t *req_body;
    size_t req_body_len, req_body_sent;
    uint8_t *req_body_copy;
    unsigned done : 1;
} probe_t;

static int
parse_int(const uint8_t *v, size_t len)
{
    if (len == 0 || len > 6)
        return -2;
    int n = 0;
    for (size_t i = 0; i != len; ++i) {
        if (v[i] < '0' || v[i] > '9')
            return -2;
        n = n * 10 + (v[i] - '0');
    }
    return n;
}

static int
on_header(nghttp2_session *ng, const nghttp2_frame *frame, const uint8_t *name, size_t namelen, const uint8_t *value,
          size_t valuelen, uint8_t flags, void *user_data)
{
    probe_t *p = user_data;
    if (frame->hd.stream_id != p->stream_id)
        return 0;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        int s = parse_int(value, valuelen);
        /* an interim 1xx head is followed by the final one */
        if (s >= 200)
            p->status = s;
    } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        int s = parse_int(value, valuelen);
        p->grpc_status = s >= 0 ? s : 2 /* UNKNOWN */;
    }
    return 0;
}

static int
on_data_chunk_recv(nghttp2_session *ng, uint8_t flags, int32_t stream_id, const uint8_t *data, size_t len, void *user_data)
{
    probe_t *p = user_data;
    if (stream_id != p->stream_id)
        return 0;
    size_t room = MAX_BODY - p->body_len;
    if (len > room)
        len = room;
    if (len != 0) {
        memcpy(p->body + p->body_len, data, len);
        p->body_len += len;
    }
    return 0;
}

static int
on_stream_close(nghttp2_session *ng, int32_t stream_id, uint32_t error_code, void *user_data)
{
    probe_t *p = user_data;
    if (stream_id == p->stream_id) {
        p->done = 1;
        if (error_code != NGHTTP2_NO_ERROR && p->status == 0)
            p->status = 0; /* reset before any head: a failure */
    }
    return 0;
}

static ssize_t
read_body(nghttp2_session *ng, int32_t stream_id, uint8_t *buf, size_t length, uint32_t *data_flags, nghttp2_data_source *source,
          void *user_data)
{
    probe_t *p = user_data;
    size_t n = p->req_body_len - p->req_body_sent;
    if (n > length)
        n = length;
    memcpy(buf, p->req_body + p->req_body_sent, n);
    p->req_body_sent += n;
    if (p->req_body_sent == p->req_body_len)
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

#define NV(n, v)                                                                                                                   \
    {                                                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE                                                 \
    }

static void probe_destroy(void *session);

static void *
probe_create(const rm_health_h2_request_t *req)
{
    probe_t *p = rm_calloc(1, sizeof(*p));
    p->grpc_status = -1;
    p->body = rm_calloc(1, MAX_BODY);
    nghttp2_session_callbacks *cbs;
    if (nghttp2_session_callbacks_new(&cbs) != 0)
        rm_fatal("nghttp2_session_callbacks_new failed");
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_stream_close);
    int r = nghttp2_session_client_new(&p->ng, cbs, p);
    nghttp2_session_callbacks_del(cbs);
    if (r != 0) {
        free(p->body);
        free(p);
        return NULL;
    }
    nghttp2_settings_entry settings[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
    nghttp2_submit_settings(p->ng, NGHTTP2_FLAG_NONE, settings, 1);
    nghttp2_nv nva[] = {
        NV(":method", req->method),
        NV(":scheme", "http"),
        NV(":path", req->path),
        NV(":authority", req->authority),
        NV("user-agent", "remora-health-check"),
        NV("content-type", "application/grpc"),
        NV("te", "trailers"),
    };
    size_t nvlen = req->grpc ? 7 : 5;
    nghttp2_data_provider prd, *pprd = NULL;
    if (req->body_len != 0) {
        p->req_body_copy = rm_calloc(1, req->body_len);
        memcpy(p->req_body_copy, req->body, req->body_len);
        p->req_body = p->req_body_copy;
        p->req_body_len = req->body_len;
        prd.source.ptr = NULL;
        prd.read_callback = read_body;
        pprd = &prd;
    }
    p->stream_id = nghttp2_submit_request(p->ng, NULL, nva, nvlen, pprd, NULL);
    if (p->stream_id < 0) {
        probe_destroy(p);
        return NULL;
    }
    return p;
}

static int
probe_send(void *session, h2o_buffer_t **out)
{
    probe_t *p = session;
    for (;;) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(p->ng, &data);
        if (n < 0)
            return -1;
        if (n == 0)
            return 0;
        h2o_iovec_t dst = h2o_buffer_reserve(out, (size_t)n);
        memcpy(dst.base, data, (size_t)n);
        (*out)->size += (size_t)n;
    }
}

static int
probe_recv(void *session, const void *data, size_t len)
{
    probe_t *p = session;
    ssize_t n = nghttp2_session_mem_recv(p->ng, data, len);
    if (n < 0)
        return -1;
    if (p->done)
        return 1;
    /* a GOAWAY ends the session before our stream: as if the connection closed */
    if (!nghttp2_session_want_read(p->ng) && !nghttp2_session_want_write(p->ng))
        return 2;
    return 0;
}

static void
probe_result(void *session, int *status, int *grpc_status, const uint8_t **body, size_t *body_len)
{
    probe_t *p = session;
    *status = p->status;
    *grpc_status = p->grpc_status;
    *body = p->body;
    *body_len = p->body_len;
}

static void
probe_destroy(void *session)
{
    probe_t *p = session;
    nghttp2_session_del(p->ng);
    free(p->req_body_copy);
    free(p->body);
    free(p);
}

static const rm_health_h2_codec_t codec = {probe_create, probe_send, probe_recv, probe_result, probe_destroy};

const rm_health_h2_codec_t *
rm_h2probe_codec(void)
{
    return &codec;
}

void
rm_h2probe_register(void)
{
    rm_health_register_h2(&codec);
}
