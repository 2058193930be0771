#include <stdlib.h>
#include <string.h>
#include "remora/log.h"
#include "core/alloc.h"
#include "http2/h2conn.h"
#include "obs/stats.h"

static void do_flush(rm_flushable_t *f);

const char *const rm_h2_abuse_names[RM_H2_ABUSE_KINDS] = {"premature_reset", "empty_frames",     "priority",
                                                          "window_update",   "outbound_control", "outbound_frames"};

/*
 * nghttp2's allocator: size classes of 32 << k bytes (k < NUM_CLASSES) with a 16-byte header that
 * records the class, so free and realloc need no lookup.
 */
#define NUM_CLASSES 8 /* 32 .. 4096 */
#define BLOCK_HEADER 16
#define LARGE_CLASS 0xff
#define MAX_CACHED_PER_CLASS 512

static __thread struct {
    void *head[NUM_CLASSES];
    size_t count[NUM_CLASSES];
} block_cache;

static unsigned
class_of(size_t total)
{
    unsigned k = 0;
    while (k < NUM_CLASSES && ((size_t)32 << k) < total)
        ++k;
    return k < NUM_CLASSES ? k : LARGE_CLASS;
}

static void *
mem_malloc(size_t size, void *user)
{
    size_t total = size + BLOCK_HEADER;
    unsigned k = class_of(total);
    unsigned char *block;
    if (k != LARGE_CLASS && block_cache.head[k] != NULL) {
        block = block_cache.head[k];
        block_cache.head[k] = *(void **)block;
        --block_cache.count[k];
    } else if ((block = malloc(k != LARGE_CLASS ? (size_t)32 << k : total)) == NULL) {
        return NULL; /* nghttp2 reports NGHTTP2_ERR_NOMEM */
    }
    *(size_t *)block = k == LARGE_CLASS ? total : k;
    block[sizeof(size_t)] = (unsigned char)(k == LARGE_CLASS);
    return block + BLOCK_HEADER;
}

static void
mem_free(void *ptr, void *user)
{
    if (ptr == NULL)
        return;
    unsigned char *block = (unsigned char *)ptr - BLOCK_HEADER;
    if (block[sizeof(size_t)]) {
        free(block);
        return;
    }
    size_t k = *(size_t *)block;
    if (block_cache.count[k] >= MAX_CACHED_PER_CLASS || RM_SANITIZING) {
        free(block);
        return;
    }
    *(void **)block = block_cache.head[k];
    block_cache.head[k] = block;
    ++block_cache.count[k];
}

static void *
mem_calloc(size_t n, size_t size, void *user)
{
    if (size != 0 && n > SIZE_MAX / size)
        return NULL;
    void *p = mem_malloc(n * size, user);
    if (p != NULL)
        memset(p, 0, n * size);
    return p;
}

static void *
mem_realloc(void *ptr, size_t size, void *user)
{
    if (ptr == NULL)
        return mem_malloc(size, user);
    unsigned char *block = (unsigned char *)ptr - BLOCK_HEADER;
    size_t capacity = block[sizeof(size_t)] ? *(size_t *)block - BLOCK_HEADER : ((size_t)32 << *(size_t *)block) - BLOCK_HEADER;
    if (size <= capacity)
        return ptr;
    void *p = mem_malloc(size, user);
    if (p == NULL)
        return NULL;
    memcpy(p, ptr, capacity);
    mem_free(ptr, user);
    return p;
}

static nghttp2_mem h2_mem = {NULL, mem_malloc, mem_free, mem_calloc, mem_realloc};

nghttp2_mem *
rm_h2_mem(void)
{
    return &h2_mem;
}

void
rm_h2_mem_thread_exit(void)
{
    for (unsigned k = 0; k != NUM_CLASSES; ++k) {
        while (block_cache.head[k] != NULL) {
            void *next = *(void **)block_cache.head[k];
            free(block_cache.head[k]);
            block_cache.head[k] = next;
        }
        block_cache.count[k] = 0;
    }
}

size_t
rm_h2_format_u64(char *buf, uint64_t v)
{
    char tmp[21];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (size_t i = 0; i != n; ++i)
        buf[i] = tmp[n - 1 - i];
    buf[n] = '\0';
    return n;
}

void
rm_h2conn_init(rm_h2conn_t *conn, rm_worker_t *worker, h2o_socket_t *sock, void (*on_dead)(rm_h2conn_t *, const char *))
{
    conn->worker = worker;
    conn->sock = sock;
    conn->on_dead = on_dead;
    h2o_buffer_init(&conn->_out, &rm_pipe_buffer_prototype);
    h2o_buffer_init(&conn->_inflight, &rm_pipe_buffer_prototype);
    conn->_flush.cb = do_flush;
}

void
rm_h2conn_fail(rm_h2conn_t *conn, const char *reason)
{
    if (conn->dead)
        return;
    conn->dead = 1;
    if (conn->sock != NULL)
        h2o_socket_read_stop(conn->sock);
    conn->on_dead(conn, reason);
}

static void
on_read(h2o_socket_t *sock, const char *err)
{
    rm_h2conn_t *conn = sock->data;
    if (err != NULL) {
        rm_h2conn_fail(conn, err);
        return;
    }
    size_t len = sock->input->size;
    if (conn->bytes_rx_stat != NULL)
        RM_STAT_ADD(*conn->bytes_rx_stat, len);
    ssize_t r = nghttp2_session_mem_recv(conn->ng, (const uint8_t *)sock->input->bytes, len);
    if (r < 0) {
        /* a connection error: make sure a GOAWAY is queued (nghttp2 queues one itself for protocol
         * errors, not for callback failures), send it, then end once nothing is left to write */
        rm_log_debug("h2", "session error: %s", nghttp2_strerror((int)r));
        if (r == NGHTTP2_ERR_FLOODED && conn->on_abuse != NULL) {
            /* nghttp2's queue of ACKs and RST_STREAMs (nghttp2_option_set_max_outbound_ack) is full: the peer
             * sends SETTINGS, PINGs or reset-provoking frames and does not read the answers */
            h2o_buffer_consume(&sock->input, len);
            conn->on_abuse(conn, RM_H2_ABUSE_OUTBOUND_CONTROL);
            return;
        }
        nghttp2_session_terminate_session(conn->ng, r == NGHTTP2_ERR_BAD_CLIENT_MAGIC || r == NGHTTP2_ERR_FLOODED
                                                        ? NGHTTP2_PROTOCOL_ERROR
                                                        : NGHTTP2_INTERNAL_ERROR);
        h2o_buffer_consume(&sock->input, len);
        if (!conn->lingering) /* else a callback chose to linger: input goes on being read and dropped */
            h2o_socket_read_stop(sock);
        rm_h2conn_schedule_flush(conn);
        return;
    }
    h2o_buffer_consume(&sock->input, (size_t)r);
    if (conn->after_recv != NULL && !conn->dead)
        conn->after_recv(conn);
    /* replies queued inside nghttp2 (HEADERS, RST_STREAM, ACKs, WINDOW_UPDATE) plus those pulled and not written */
    if (conn->max_out_frames != 0 && conn->on_abuse != NULL && !conn->dead &&
        nghttp2_session_get_outbound_queue_size(conn->ng) + conn->_out_frames + conn->_inflight_frames > conn->max_out_frames) {
        conn->on_abuse(conn, RM_H2_ABUSE_OUTBOUND_FRAMES);
        return;
    }
    rm_h2conn_schedule_flush(conn);
}

static void
on_read_discard(h2o_socket_t *sock, const char *err)
{
    rm_h2conn_t *conn = sock->data;
    if (err != NULL) {
        rm_h2conn_fail(conn, err); /* the peer closed (or failed): nothing left to wait for */
        return;
    }
    h2o_buffer_consume(&sock->input, sock->input->size);
}

void
rm_h2conn_linger(rm_h2conn_t *conn)
{
    if (conn->dead || conn->lingering || conn->sock == NULL)
        return;
    conn->lingering = 1;
    conn->sock->data = conn;
    h2o_socket_read_start(conn->sock, on_read_discard);
}

void
rm_h2conn_start_reading(rm_h2conn_t *conn)
{
    conn->sock->data = conn;
    h2o_socket_read_start(conn->sock, on_read);
    if (conn->sock->input->size != 0)
        on_read(conn->sock, NULL);
}

void
rm_h2conn_schedule_flush(rm_h2conn_t *conn)
{
    if (!conn->dead)
        rm_worker_schedule_flush(conn->worker, &conn->_flush);
}

static void
on_write_complete(h2o_socket_t *sock, const char *err)
{
    rm_h2conn_t *conn = sock->data;
    h2o_buffer_consume(&conn->_inflight, conn->_inflight->size);
    conn->_inflight_frames = 0;
    if (err != NULL) {
        rm_h2conn_fail(conn, err);
        return;
    }
    do_flush(&conn->_flush);
}

static void
do_flush(rm_flushable_t *f)
{
    rm_h2conn_t *conn = H2O_STRUCT_FROM_MEMBER(rm_h2conn_t, _flush, f);
    if (conn->dead || h2o_socket_is_writing(conn->sock))
        return; /* the write callback flushes again */
    while (conn->_out->size < RM_H2_OUT_HIGH_WATER) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(conn->ng, &data);
        if (n < 0) {
            rm_h2conn_fail(conn, nghttp2_strerror((int)n));
            return;
        }
        if (n == 0)
            break;
        h2o_iovec_t dst = h2o_buffer_reserve(&conn->_out, n);
        if (dst.base == NULL)
            rm_fatal("out of memory");
        memcpy(dst.base, data, n);
        conn->_out->size += n;
        /* nghttp2_session_mem_send returns one frame per call */
        if (++conn->_out_frames + conn->_inflight_frames > conn->max_out_frames && conn->max_out_frames != 0 &&
            conn->on_abuse != NULL) {
            conn->on_abuse(conn, RM_H2_ABUSE_OUTBOUND_FRAMES);
            return;
        }
    }
    if (conn->_out->size != 0) {
        /* swap: the filled buffer goes out, the empty one collects the next frames */
        h2o_buffer_t *tmp = conn->_inflight;
        conn->_inflight = conn->_out;
        conn->_out = tmp;
        conn->_inflight_frames = conn->_out_frames;
        conn->_out_frames = 0;
        if (conn->bytes_tx_stat != NULL)
            RM_STAT_ADD(*conn->bytes_tx_stat, conn->_inflight->size);
        h2o_iovec_t buf = h2o_iovec_init(conn->_inflight->bytes, conn->_inflight->size);
        h2o_socket_write(conn->sock, &buf, 1, on_write_complete);
        return;
    }
    if (!nghttp2_session_want_read(conn->ng) && !nghttp2_session_want_write(conn->ng) && !conn->lingering)
        rm_h2conn_fail(conn, "session finished");
}

void
rm_h2conn_dispose(rm_h2conn_t *conn)
{
    conn->dead = 1;
    rm_worker_cancel_flush(conn->worker, &conn->_flush);
    if (conn->sock != NULL) {
        h2o_socket_close(conn->sock);
        conn->sock = NULL;
    }
    if (conn->ng != NULL) {
        nghttp2_session_del(conn->ng);
        conn->ng = NULL;
    }
    h2o_buffer_dispose(&conn->_out);
    h2o_buffer_dispose(&conn->_inflight);
}

void
rm_h2_nvs_add(h2o_mem_pool_t *pool, rm_h2_nvs_t *nvs, const char *name, size_t nlen, const char *value, size_t vlen)
{
    if (nvs->len == nvs->cap) {
        size_t cap = nvs->cap == 0 ? 16 : nvs->cap * 2;
        nghttp2_nv *nva = h2o_mem_alloc_pool(pool, cap * sizeof(*nva));
        if (nvs->len != 0)
            memcpy(nva, nvs->nva, nvs->len * sizeof(*nva));
        nvs->nva = nva;
        nvs->cap = cap;
    }
    nghttp2_nv *nv = &nvs->nva[nvs->len++];
    nv->name = (uint8_t *)name;
    nv->namelen = nlen;
    nv->value = (uint8_t *)value;
    nv->valuelen = vlen;
    nv->flags = nvs->copy ? NGHTTP2_NV_FLAG_NONE : NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE;
}

void
rm_h2_end_data(nghttp2_session *ng, int32_t stream_id, h2o_mem_pool_t *pool, const rm_headers_t *trailers, int copy,
               uint32_t *data_flags)
{
    *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    if (trailers == NULL || trailers->size == 0)
        return;
    rm_h2_nvs_t nvs = {.copy = copy};
    for (size_t i = 0; i != trailers->size; ++i)
        rm_h2_nvs_add(pool, &nvs, trailers->entries[i].name.base, trailers->entries[i].name.len, trailers->entries[i].value.base,
                      trailers->entries[i].value.len);
    if (nghttp2_submit_trailer(ng, stream_id, nvs.nva, nvs.len) == 0)
        *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
}

static void
h2_thread_exit(rm_worker_t *worker, void *state)
{
    rm_h2_mem_thread_exit();
}

const rm_worker_module_t rm_http2_module = {
    .name = "http2",
    .thread_exit = h2_thread_exit,
};
