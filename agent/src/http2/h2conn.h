/*
 * The I/O half shared by the HTTP/2 server (downstream) and client (upstream) connections:
 * nghttp2 driven without I/O (mem_recv / mem_send) on an h2o socket.
 *
 * Output is produced lazily: anything that submits frames calls rm_h2conn_schedule_flush, and the
 * worker runs the flush once per loop iteration, so frames from many events leave in one write.
 * At most one write is in flight (an h2o rule); while it is, new frames wait inside nghttp2 rather
 * than in a growing buffer: a flush stops pulling from nghttp2 once `RM_H2_OUT_HIGH_WATER` bytes
 * are pending, which bounds a connection's output memory.
 *
 * Only this module and the two codecs include nghttp2.h. Thread: the owning worker.
 */
#ifndef remora__h2conn_h
#define remora__h2conn_h

#include <nghttp2/nghttp2.h>
#include <h2o.h>
#include "core/worker.h"
#include "proxy/message.h"
#include "http2/h2mem.h"

/* A header field's bytes for a message: names and values of HPACK's static table are static storage in nghttp2 and are
 * used in place (nothing writes into field bytes); the others are copied into the message's pool. `v` is
 * nghttp2_rcbuf_get_buf(rc), which the caller has already read. */
static inline h2o_iovec_t
rm_h2_field_copy(h2o_mem_pool_t *pool, nghttp2_rcbuf *rc, nghttp2_vec v)
{
    if (nghttp2_rcbuf_is_static(rc))
        return h2o_iovec_init(v.base, v.len);
    return h2o_strdup(pool, (const char *)v.base, v.len);
}

#define RM_H2_OUT_HIGH_WATER (64 * 1024)
/**
 * A connection with no stream for this long gives back what it holds only while it works (rm_h2conn_release_idle); its
 * idle timer runs in two steps, this one first (docs/hardening.md, "Memory per connection").
 */
#define RM_H2_IDLE_RELEASE_MS 100

typedef struct st_rm_h2conn_t rm_h2conn_t;

/**
 * RFC 9113 5.1 for streams the client closed, kept by the server connection instead of nghttp2: nghttp2 would keep a
 * stream object for each of up to SETTINGS_MAX_CONCURRENT_STREAMS closed streams to answer such frames (a malloc'd
 * object per request while the set fills, and hundreds of KiB per busy connection), so the server session runs with
 * nghttp2_option_set_no_closed_streams and this answers instead. A stream whose client side ended (END_STREAM or the
 * client's RST_STREAM) is noted by id; DATA or HEADERS that the client sends on a noted id afterwards is a connection
 * error STREAM_CLOSED, raised by the connection's read (rm_h2conn_t.closed) at that frame: the frames before it are
 * parsed, it and what follows are not. Frames on streams the agent reset while the client was still sending are not
 * noted and nghttp2 ignores them, as RFC 9113 5.1 asks.
 *
 * Bound: RM_H2_CLOSED_IDS ids per connection, by slot (id >> 1) % RM_H2_CLOSED_IDS: an id shares its slot with the ids
 * 64, 128, ... above it and is forgotten once one of those closes, after which frames on it are ignored (nghttp2 forgets
 * the closed streams beyond its own bound the same way). About 40 instructions per request (docs/BENCHMARKS.md).
 */
#define RM_H2_CLOSED_IDS 32
typedef struct st_rm_h2_closed_t {
    int32_t ids[RM_H2_CLOSED_IDS];
    /** bytes of input to pass over before the next frame header: the client preface, then the rest of a payload */
    uint32_t skip;
    /** a frame header split between reads: its first hdr_len bytes */
    uint8_t hdr_len;
    uint8_t hdr[9];
} rm_h2_closed_t;

/** Starts the scan of a server connection's input (at the client preface). */
void rm_h2_closed_init(rm_h2_closed_t *c);
/** Notes that the client side of stream `id` is closed. */
static inline void
rm_h2_closed_note(rm_h2_closed_t *c, int32_t id)
{
    c->ids[((uint32_t)id >> 1) % RM_H2_CLOSED_IDS] = id;
}
/**
 * Reads the frame headers in `len` bytes of input (following the previous call's); notes the streams of RST_STREAM
 * frames. Returns the offset where DATA or HEADERS on a noted stream starts (0 if its header began in an earlier read),
 * or `len` if there is none.
 */
size_t rm_h2_closed_scan(rm_h2_closed_t *c, const uint8_t *data, size_t len);

/** Kinds of HTTP/2 abuse (docs/hardening.md); the index of rm_listener_stats_t.h2_abuse. */
typedef enum en_rm_h2_abuse_t {
    RM_H2_ABUSE_PREMATURE_RESET = 0,  /* most streams reset early (rapid reset, MadeYouReset) */
    RM_H2_ABUSE_EMPTY_FRAMES = 1,     /* consecutive DATA/HEADERS/CONTINUATION frames without payload */
    RM_H2_ABUSE_PRIORITY = 2,         /* PRIORITY frames over limits.h2_max_priority_frames_per_stream */
    RM_H2_ABUSE_WINDOW_UPDATE = 3,    /* WINDOW_UPDATE frames out of proportion to the DATA frames sent */
    RM_H2_ABUSE_OUTBOUND_CONTROL = 4, /* SETTINGS/PING ACKs and RST_STREAMs queued for a peer that does not read */
    RM_H2_ABUSE_OUTBOUND_FRAMES = 5,  /* frames of any type queued and not written */
    RM_H2_ABUSE_KINDS = 6,
} rm_h2_abuse_t;

/** The metric label of each kind (kind="..." of remora_downstream_h2_abuse_total). */
extern const char *const rm_h2_abuse_names[RM_H2_ABUSE_KINDS];

struct st_rm_h2conn_t {
    rm_worker_t *worker;
    h2o_socket_t *sock;
    nghttp2_session *ng;
    h2o_buffer_t *_out;
    h2o_buffer_t *_inflight;
    rm_flushable_t _flush;
    /** counters to add transferred bytes to (may be NULL) */
    uint64_t *bytes_rx_stat, *bytes_tx_stat;
    /** called once the connection must end (I/O error, protocol error, or nothing left to do);
     * the owner closes the socket and frees the connection, possibly later */
    void (*on_dead)(rm_h2conn_t *conn, const char *reason);
    /** called when the peer floods the outbound queue (may be NULL: the connection just fails); the callee
     * counts and ends the connection */
    void (*on_abuse)(rm_h2conn_t *conn, rm_h2_abuse_t kind);
    /** called after each read has been parsed without a connection error (may be NULL) */
    void (*after_recv)(rm_h2conn_t *conn);
    /** a server connection's closed streams (rm_h2_closed_t; NULL on the client side): its input is scanned before
     * nghttp2 parses it, and a frame on a closed stream ends the connection with STREAM_CLOSED */
    rm_h2_closed_t *closed;
    /** the session's frame buffer when it is a slot that can be given back (rm_h2conn_session_new), else NULL */
    void *_framebuf;
    /** frames pulled from nghttp2 and not yet written (in _out, in _inflight); over max_out_frames (0: no bound)
     * the connection is flooded */
    uint32_t _out_frames, _inflight_frames, max_out_frames;
    unsigned dead : 1;
    /** nghttp2_session_mem_send said it had nothing more: the frame buffer holds nothing live */
    unsigned _send_idle : 1;
    /** rm_h2conn_linger: input is read and dropped, and a finished session waits for the owner or the peer's close */
    unsigned lingering : 1;
};

/** Binds `conn` to `sock` (the session is created by the owner). */
void rm_h2conn_init(rm_h2conn_t *conn, rm_worker_t *worker, h2o_socket_t *sock, void (*on_dead)(rm_h2conn_t *, const char *));
/**
 * Creates conn->ng (nghttp2_session_server_new3 or _client_new3 with rm_h2_mem()), its frame buffer in a slot that
 * rm_h2conn_release_idle can give back. Returns nghttp2's error code.
 */
int rm_h2conn_session_new(rm_h2conn_t *conn, int server, const nghttp2_session_callbacks *callbacks, void *user_data,
                          const nghttp2_option *options);
/**
 * For an idle connection (no stream open; the owner's timer, RM_H2_IDLE_RELEASE_MS): gives back the pages of the
 * session's frame buffer and an empty input buffer, once everything is written. They are taken again when needed.
 */
void rm_h2conn_release_idle(rm_h2conn_t *conn);
/** Starts reading; input goes to nghttp2_session_mem_recv. */
void rm_h2conn_start_reading(rm_h2conn_t *conn);
void rm_h2conn_schedule_flush(rm_h2conn_t *conn);
/** Closes the socket and releases buffers and the session. Not from inside nghttp2 callbacks. */
void rm_h2conn_dispose(rm_h2conn_t *conn);
/** Marks the connection dead and calls on_dead once. */
void rm_h2conn_fail(rm_h2conn_t *conn, const char *reason);
/**
 * A lingering close, for a connection ended with a GOAWAY while the peer may still be sending: from now on input is
 * read and dropped (not parsed), and a session with nothing left to write no longer ends the connection; the owner
 * ends it (its timer) unless the peer closes first. Closing a socket with unread input makes the kernel send a
 * reset, which can destroy the GOAWAY before the peer reads it.
 */
void rm_h2conn_linger(rm_h2conn_t *conn);

/**
 * The allocator every session of this process uses: small blocks come from per-thread free lists
 * by size class (nghttp2 allocates per stream, per frame and per header field), larger ones from
 * malloc. A session allocates and frees on its worker's thread only, which this relies on.
 */
nghttp2_mem *rm_h2_mem(void);
/** Frees the calling worker's allocator caches at thread exit, as a worker module (registered by the assembly). */
extern const rm_worker_module_t rm_http2_module;

/** Writes the decimal form of `v` into buf (at least 21 bytes); returns the length. */
size_t rm_h2_format_u64(char *buf, uint64_t v);

/**
 * Called from a data provider at the end of the body: submits `trailers` (if any) for `stream_id`
 * and sets the provider flags (EOF, plus NO_END_STREAM when trailers end the stream). `copy`: see
 * rm_h2_nvs_t.
 */
void rm_h2_end_data(nghttp2_session *ng, int32_t stream_id, h2o_mem_pool_t *pool, const rm_headers_t *trailers, int copy,
                    uint32_t *data_flags);

/* fields of a head built in place (on the caller's stack): nghttp2 copies the array itself when a head is submitted, so only
 * a head with more fields than this takes an array from the pool */
#define RM_H2_NVS_INLINE 16
#define RM_H2_NVS_COPY 1
#define RM_H2_NVS_COPY_NAMES 2
/** Builds an nghttp2_nv array from the message model in `pool`; `extra` pseudo headers first. */
typedef struct st_rm_h2_nvs_t {
    nghttp2_nv *nva; /* `inline_`, or an array in the pool once there are more fields */
    size_t len, cap;
    /** RM_H2_NVS_COPY (1): nghttp2 copies the strings (use when `pool` may be released before the frame is sent);
     * RM_H2_NVS_COPY_NAMES: only the names (nghttp2 lower-cases what it copies; the values must outlive the frame or
     * its cancellation); 0: neither (lower-case names that outlive the frame) */
    int copy;
    uint8_t flags; /* of every field, from `copy` */
    nghttp2_nv inline_[RM_H2_NVS_INLINE];
} rm_h2_nvs_t;
/* not `= {...}`: that would zero the inline array */
static inline void
rm_h2_nvs_init(rm_h2_nvs_t *nvs, int copy)
{
    nvs->nva = nvs->inline_;
    nvs->len = 0;
    nvs->cap = RM_H2_NVS_INLINE;
    nvs->copy = copy;
    nvs->flags = copy == RM_H2_NVS_COPY         ? NGHTTP2_NV_FLAG_NONE
                 : copy == RM_H2_NVS_COPY_NAMES ? NGHTTP2_NV_FLAG_NO_COPY_VALUE
                                                : NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE;
}
/* doubles the array, in `pool` */
void rm_h2_nvs_grow(h2o_mem_pool_t *pool, rm_h2_nvs_t *nvs);
static inline void
rm_h2_nvs_add(h2o_mem_pool_t *pool, rm_h2_nvs_t *nvs, const char *name, size_t nlen, const char *value, size_t vlen)
{
    if (nvs->len == nvs->cap)
        rm_h2_nvs_grow(pool, nvs);
    nghttp2_nv *nv = &nvs->nva[nvs->len++];
    nv->name = (uint8_t *)name;
    nv->namelen = nlen;
    nv->value = (uint8_t *)value;
    nv->valuelen = vlen;
    nv->flags = nvs->flags;
}

#endif
