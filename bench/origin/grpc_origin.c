/*
 * rm-bench-origin: the benchmark's origin server. One single-threaded epoll loop serves, on one port,
 * HTTP/2 cleartext with prior knowledge and HTTP/1.1 (told apart by the connection preface):
 *   - GET or HEAD, any path: 200 with a small fixed body (--body-bytes, default 64);
 *   - POST with content-type application/grpc...: gRPC unary echo (the request's length-prefixed messages are
 *     returned as the response's, then trailers "grpc-status: 0");
 *   - any other POST: 200 echoing the request body;
 *   - GET /.bench/count: the number of responses started so far, as decimal text (the benchmark samples it to see
 *     whether requests keep reaching the origin during a run, i.e. whether a proxy stalled);
 *   - bulk mode, HTTP/2 only: GET /.bench/bulk/N answers N bytes (at most BULK_MAX_BYTES, made from one static
 *     pattern buffer, nothing allocated per byte); a request with a body to /.bench/sink (POST or PUT) has its body
 *     counted and discarded as it arrives (nothing kept), then is answered with the byte count as decimal text.
 * It exists so that the origin is never the bottleneck of a proxy benchmark: no logging, no file I/O, no
 * per-request syscalls beyond one read and one write per batch. It is a benchmark fixture, not a server: it
 * trusts its (loopback) clients, and it has no timeouts.
 *
 * Usage: rm-bench-origin [--listen ADDR:PORT] [--body-bytes N]   (default 127.0.0.1:8080, 64)
 * Prints "listening ADDR:PORT" on stdout once it accepts; SIGTERM/SIGINT exit 0.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <nghttp2/nghttp2.h>

#define H2_PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define H2_PREFACE_LEN (sizeof(H2_PREFACE) - 1)
/* an h1 request head larger than this is refused: the clients are h2load and proxies, not browsers */
#define H1_MAX_HEAD_BYTES (64 * 1024)
/* stop pulling frames from nghttp2 once this much is queued, so a slow reader bounds our memory */
#define OUT_HIGH_WATER_BYTES (256 * 1024)
#define READ_CHUNK_BYTES (64 * 1024)

enum { PROTO_UNKNOWN, PROTO_H1, PROTO_H2 };

typedef struct st_buf_t {
    uint8_t *base;
    size_t off, len, cap; /* valid bytes are base[off .. off+len) */
} buf_t;

typedef struct st_conn_t {
    int fd;
    int proto;
    int want_close; /* h1 "Connection: close" seen, or a fatal error: close once out is flushed */
    int polling_out;
    nghttp2_session *h2;
    buf_t in;  /* detection bytes, then h1 input */
    buf_t out; /* bytes not yet accepted by the socket */
} conn_t;

typedef struct st_stream_t {
    int is_grpc, is_post, is_count, is_sink;
    uint64_t bulk_len; /* GET /.bench/bulk/N: N bytes to send from bulk_pattern (0: not a bulk download) */
    uint64_t bulk_sent, sunk;
    uint8_t *body; /* owned unless it is the static response body */
    size_t len, cap, sent;
    int owns_body;
} stream_t;

#define COUNT_PATH "/.bench/count"
#define BULK_PATH "/.bench/bulk/"
#define SINK_PATH "/.bench/sink"
/* the largest bulk download (a typo must not stream for hours) and the pattern it repeats */
#define BULK_MAX_BYTES (4ULL << 30)
#define BULK_PATTERN_BYTES (64 * 1024)
static uint8_t bulk_pattern[BULK_PATTERN_BYTES];

static uint64_t responses_started;
static uint8_t *static_body;
static size_t static_body_len;
static int epfd;
static volatile sig_atomic_t stop_requested;

static void
die(const char *what)
{
    perror(what);
    exit(1);
}

static void
buf_reserve(buf_t *b, size_t extra)
{
    if (b->off + b->len + extra <= b->cap)
        return;
    if (b->off != 0) {
        memmove(b->base, b->base + b->off, b->len);
        b->off = 0;
        if (b->len + extra <= b->cap)
            return;
    }
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + extra)
        cap *= 2;
    if ((b->base = realloc(b->base, cap)) == NULL)
        die("realloc");
    b->cap = cap;
}

static void
buf_append(buf_t *b, const void *p, size_t n)
{
    buf_reserve(b, n);
    memcpy(b->base + b->off + b->len, p, n);
    b->len += n;
}

static void
buf_consume(buf_t *b, size_t n)
{
    b->off += n;
    b->len -= n;
    if (b->len == 0)
        b->off = 0;
}

static void
conn_free(conn_t *c)
{
    epoll_ctl(epfd, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if (c->h2 != NULL)
        nghttp2_session_del(c->h2);
    free(c->in.base);
    free(c->out.base);
    free(c);
}

/* Writes as much of c->out as the socket takes. Returns -1 if the connection is dead. */
static int
conn_flush(conn_t *c)
{
    while (c->out.len != 0) {
        ssize_t n = write(c->fd, c->out.base + c->out.off, c->out.len);
        if (n > 0) {
            buf_consume(&c->out, (size_t)n);
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            break;
        } else {
            return -1;
        }
    }
    int need_out = c->out.len != 0;
    if (need_out != c->polling_out) {
        struct epoll_event ev = {.events = EPOLLIN | (need_out ? EPOLLOUT : 0), .data.ptr = c};
        epoll_ctl(epfd, EPOLL_CTL_MOD, c->fd, &ev);
        c->polling_out = need_out;
    }
    return 0;
}

/* ---- HTTP/2 ---- */

#define NV(n, v)                                                                                                                   \
    {                                                                                                                              \
        (uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, sizeof(v) - 1, NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE \
    }

static ssize_t
h2_read_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length, uint32_t *data_flags,
             nghttp2_data_source *source, void *user_data)
{
    stream_t *st = source->ptr;
    if (st->bulk_len != 0) {
        uint64_t left = st->bulk_len - st->bulk_sent;
        size_t n = length < BULK_PATTERN_BYTES ? length : BULK_PATTERN_BYTES;
        if (n > left)
            n = (size_t)left;
        memcpy(buf, bulk_pattern, n);
        st->bulk_sent += n;
        if (st->bulk_sent == st->bulk_len)
            *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        return (ssize_t)n;
    }
    size_t n = st->len - st->sent;
    if (n > length)
        n = length;
    memcpy(buf, st->body + st->sent, n);
    st->sent += n;
    if (st->sent == st->len) {
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        if (st->is_grpc) {
            static const nghttp2_nv trailers[] = {NV("grpc-status", "0")};
            *data_flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            nghttp2_submit_trailer(session, stream_id, trailers, 1);
        }
    }
    return (ssize_t)n;
}

static int
h2_respond(nghttp2_session *session, int32_t stream_id, stream_t *st)
{
    nghttp2_data_provider dp = {.source.ptr = st, .read_callback = h2_read_body};
    ++responses_started;
    if (st->is_grpc) {
        static const nghttp2_nv hdrs[] = {NV(":status", "200"), NV("content-type", "application/grpc")};
        return nghttp2_submit_response(session, stream_id, hdrs, 2, &dp);
    }
    if (st->is_count || st->is_sink) {
        free(st->body);
        if ((st->body = malloc(24)) == NULL)
            die("malloc");
        st->len =
            (size_t)snprintf((char *)st->body, 24, "%llu\n", (unsigned long long)(st->is_sink ? st->sunk : responses_started));
    } else if (st->bulk_len != 0) {
        char blen[24];
        int blen_len = snprintf(blen, sizeof(blen), "%llu", (unsigned long long)st->bulk_len);
        nghttp2_nv bhdrs[] = {NV(":status", "200"),
                              NV("content-type", "application/octet-stream"),
                              {(uint8_t *)"content-length", (uint8_t *)blen, 14, (size_t)blen_len, NGHTTP2_NV_FLAG_NO_COPY_NAME}};
        return nghttp2_submit_response(session, stream_id, bhdrs, 3, &dp);
    } else if (!st->is_post) {
        st->body = static_body;
        st->len = static_body_len;
        st->owns_body = 0;
    }
    char clen[24];
    int clen_len = snprintf(clen, sizeof(clen), "%zu", st->len);
    nghttp2_nv hdrs[] = {NV(":status", "200"),
                         NV("content-type", "text/plain"),
                         {(uint8_t *)"content-length", (uint8_t *)clen, 14, (size_t)clen_len, NGHTTP2_NV_FLAG_NO_COPY_NAME}};
    return nghttp2_submit_response(session, stream_id, hdrs, 3, &dp);
}

static int
h2_on_begin_headers(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    stream_t *st = calloc(1, sizeof(*st));
    if (st == NULL)
        die("calloc");
    st->owns_body = 1;
    nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, st);
    return 0;
}

static int
h2_on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name, size_t namelen, const uint8_t *value,
             size_t valuelen, uint8_t flags, void *user_data)
{
    stream_t *st = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (st == NULL || frame->hd.type != NGHTTP2_HEADERS)
        return 0;
    if (namelen == 7 && memcmp(name, ":method", 7) == 0) {
        st->is_post = valuelen == 4 && memcmp(value, "POST", 4) == 0;
    } else if (namelen == 5 && memcmp(name, ":path", 5) == 0) {
        st->is_count = valuelen == sizeof(COUNT_PATH) - 1 && memcmp(value, COUNT_PATH, valuelen) == 0;
        st->is_sink = valuelen == sizeof(SINK_PATH) - 1 && memcmp(value, SINK_PATH, valuelen) == 0;
        if (valuelen > sizeof(BULK_PATH) - 1 && valuelen < sizeof(BULK_PATH) + 20 &&
            memcmp(value, BULK_PATH, sizeof(BULK_PATH) - 1) == 0) {
            char num[24];
            size_t len = valuelen - (sizeof(BULK_PATH) - 1);
            memcpy(num, value + sizeof(BULK_PATH) - 1, len);
            num[len] = '\0';
            char *end;
            unsigned long long n = strtoull(num, &end, 10);
            st->bulk_len = (*end == '\0' && n <= BULK_MAX_BYTES) ? n : 0;
        }
    } else if (namelen == 12 && memcmp(name, "content-type", 12) == 0) {
        st->is_grpc = valuelen >= 16 && memcmp(value, "application/grpc", 16) == 0;
    }
    return 0;
}

static int
h2_on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data, size_t len, void *user_data)
{
    stream_t *st = nghttp2_session_get_stream_user_data(session, stream_id);
    if (st == NULL)
        return 0;
    if (st->is_sink) {
        st->sunk += len; /* counted and dropped: nghttp2 returns the window as the bytes are consumed */
        return 0;
    }
    if (st->len + len > st->cap) {
        size_t cap = st->cap ? st->cap : 256;
        while (cap < st->len + len)
            cap *= 2;
        if ((st->body = realloc(st->body, cap)) == NULL)
            die("realloc");
        st->cap = cap;
    }
    memcpy(st->body + st->len, data, len);
    st->len += len;
    return 0;
}

static int
h2_on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    if ((frame->hd.type != NGHTTP2_HEADERS && frame->hd.type != NGHTTP2_DATA) || (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) == 0)
        return 0;
    stream_t *st = nghttp2_session_get_stream_user_data(session, frame->hd.stream_id);
    if (st == NULL)
        return 0;
    if (h2_respond(session, frame->hd.stream_id, st) != 0)
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, frame->hd.stream_id, NGHTTP2_INTERNAL_ERROR);
    return 0;
}

static int
h2_on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user_data)
{
    stream_t *st = nghttp2_session_get_stream_user_data(session, stream_id);
    if (st == NULL)
        return 0;
    if (st->owns_body)
        free(st->body);
    free(st);
    return 0;
}

static nghttp2_session_callbacks *h2_callbacks;
static nghttp2_option *h2_option;

static void
h2_setup(void)
{
    if (nghttp2_session_callbacks_new(&h2_callbacks) != 0 || nghttp2_option_new(&h2_option) != 0)
        die("nghttp2 setup");
    nghttp2_session_callbacks_set_on_begin_headers_callback(h2_callbacks, h2_on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(h2_callbacks, h2_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(h2_callbacks, h2_on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(h2_callbacks, h2_on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(h2_callbacks, h2_on_stream_close);
}

static int
h2_start(conn_t *c)
{
    if (nghttp2_session_server_new2(&c->h2, h2_callbacks, c, h2_option) != 0)
        return -1;
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 4096},
                                   {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20}};
    if (nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, iv, 2) != 0)
        return -1;
    /* the connection window is what limits a proxy multiplexing many uploads onto one connection */
    if (nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, 16 << 20) != 0)
        return -1;
    return 0;
}

/* Moves frames from nghttp2 into c->out. Returns the number of bytes moved, or -1 on a fatal session error. */
static ssize_t
h2_collect(conn_t *c)
{
    size_t moved = 0;
    while (c->out.len < OUT_HIGH_WATER_BYTES) {
        const uint8_t *data;
        ssize_t n = nghttp2_session_mem_send(c->h2, &data);
        if (n < 0)
            return -1;
        if (n == 0)
            break;
        buf_append(&c->out, data, (size_t)n);
        moved += (size_t)n;
    }
    return (ssize_t)moved;
}

static int
h2_feed(conn_t *c, const uint8_t *p, size_t n)
{
    ssize_t r = nghttp2_session_mem_recv(c->h2, p, n);
    if (r < 0 || (size_t)r != n)
        c->want_close = 1;
    return 0;
}

/* ---- HTTP/1.1 ---- */

static const char *
find_crlfcrlf(const char *p, size_t n)
{
    return memmem(p, n, "\r\n\r\n", 4);
}

/* Answers every complete request in c->in. Bodies of POSTs are echoed; chunked requests are refused. */
static void
h1_process(conn_t *c)
{
    while (c->in.len != 0 && !c->want_close) {
        const char *head = (const char *)c->in.base + c->in.off;
        const char *end = find_crlfcrlf(head, c->in.len);
        if (end == NULL) {
            if (c->in.len > H1_MAX_HEAD_BYTES)
                c->want_close = 1;
            return;
        }
        size_t head_len = (size_t)(end - head) + 4;
        size_t content_length = 0;
        int is_post = head_len >= 5 && memcmp(head, "POST ", 5) == 0;
        int is_head = head_len >= 5 && memcmp(head, "HEAD ", 5) == 0;
        int close_after = 0, chunked = 0;
        const char *eol = memmem(head, head_len, "\r\n", 2);
        if (eol != NULL && eol - head >= 8 && memcmp(eol - 8, "HTTP/1.0", 8) == 0)
            close_after = 1;
        for (const char *line = eol + 2; line < end;) {
            const char *next = memmem(line, (size_t)(end + 2 - line), "\r\n", 2);
            size_t line_len = (size_t)(next - line);
            if (line_len > 15 && strncasecmp(line, "content-length:", 15) == 0) {
                content_length = strtoull(line + 15, NULL, 10);
            } else if (line_len > 11 && strncasecmp(line, "connection:", 11) == 0) {
                if (memmem(line, line_len, "close", 5) != NULL)
                    close_after = 1;
                else if (memmem(line, line_len, "eep-alive", 9) != NULL)
                    close_after = 0;
            } else if (line_len > 18 && strncasecmp(line, "transfer-encoding:", 18) == 0) {
                chunked = 1;
            }
            line = next + 2;
        }
        if (chunked) {
            static const char resp[] = "HTTP/1.1 501 Not Implemented\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
            buf_append(&c->out, resp, sizeof(resp) - 1);
            c->want_close = 1;
            return;
        }
        if (c->in.len < head_len + content_length)
            return; /* wait for the rest of the body */
        const uint8_t *body = is_post ? c->in.base + c->in.off + head_len : static_body;
        size_t body_len = is_post ? content_length : static_body_len;
        char count[24];
        const char *sp = memchr(head, ' ', head_len);
        if (!is_post && sp != NULL && (size_t)(end - sp) > sizeof(COUNT_PATH) &&
            memcmp(sp + 1, COUNT_PATH " ", sizeof(COUNT_PATH)) == 0) {
            body_len = (size_t)snprintf(count, sizeof(count), "%llu\n", (unsigned long long)responses_started);
            body = (const uint8_t *)count;
        }
        ++responses_started;
        char hdr[160];
        int hdr_len = snprintf(hdr, sizeof(hdr), "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %zu\r\n%s\r\n",
                               body_len, close_after ? "Connection: close\r\n" : "");
        buf_append(&c->out, hdr, (size_t)hdr_len);
        if (!is_head)
            buf_append(&c->out, body, body_len);
        buf_consume(&c->in, head_len + content_length);
        if (close_after)
            c->want_close = 1;
    }
}

/* ---- connections ---- */

static void
conn_on_bytes(conn_t *c, const uint8_t *p, size_t n)
{
    if (c->proto == PROTO_UNKNOWN) {
        buf_append(&c->in, p, n);
        size_t cmp = c->in.len < H2_PREFACE_LEN ? c->in.len : H2_PREFACE_LEN;
        if (memcmp(c->in.base + c->in.off, H2_PREFACE, cmp) != 0) {
            c->proto = PROTO_H1;
        } else if (c->in.len >= H2_PREFACE_LEN) {
            c->proto = PROTO_H2;
            if (h2_start(c) != 0) {
                c->want_close = 1;
                return;
            }
            h2_feed(c, c->in.base + c->in.off, c->in.len);
            buf_consume(&c->in, c->in.len);
            return;
        } else {
            return;
        }
        h1_process(c);
        return;
    }
    if (c->proto == PROTO_H2) {
        h2_feed(c, p, n);
    } else {
        buf_append(&c->in, p, n);
        h1_process(c);
    }
}

/* Handles readiness on a connection; frees it when it is done. */
static void
conn_on_event(conn_t *c, uint32_t events)
{
    int peer_closed = 0;
    if (events & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
        /* bounded so that one busy connection cannot starve the others */
        for (int i = 0; i < 4; ++i) {
            uint8_t buf[READ_CHUNK_BYTES];
            ssize_t n = read(c->fd, buf, sizeof(buf));
            if (n > 0) {
                conn_on_bytes(c, buf, (size_t)n);
                if ((size_t)n < sizeof(buf))
                    break;
            } else if (n < 0 && errno == EINTR) {
                continue;
            } else if (n < 0 && errno == EAGAIN) {
                break;
            } else {
                peer_closed = 1;
                break;
            }
        }
    }
    /* collect and flush until the socket blocks or nghttp2 has nothing more: stopping at the high-water mark
     * with an empty socket buffer would otherwise leave frames queued with no event to send them */
    for (;;) {
        ssize_t moved = 0;
        /* a collect that found out at the high-water mark moved nothing but says nothing about nghttp2's queue:
         * only one that had room and moved nothing means that nghttp2 has nothing more (a large response body
         * stalled here once, with EPOLLOUT off and frames left in nghttp2) */
        int had_room = c->out.len < OUT_HIGH_WATER_BYTES;
        if (c->proto == PROTO_H2 && c->h2 != NULL && (moved = h2_collect(c)) < 0)
            c->want_close = 1;
        if (conn_flush(c) != 0 || peer_closed) {
            conn_free(c);
            return;
        }
        if (c->out.len != 0 || c->want_close || (moved <= 0 && had_room))
            break;
    }
    if (c->proto == PROTO_H2 && c->h2 != NULL && !nghttp2_session_want_read(c->h2) && !nghttp2_session_want_write(c->h2) &&
        c->out.len == 0) {
        conn_free(c);
        return;
    }
    if (c->want_close && c->out.len == 0) {
        conn_free(c);
        return;
    }
}

static void
on_accept(int lfd)
{
    for (int i = 0; i < 64; ++i) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        conn_t *c = calloc(1, sizeof(*c));
        if (c == NULL)
            die("calloc");
        c->fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
            close(fd);
            free(c);
        }
    }
}

static void
on_signal(int sig)
{
    stop_requested = 1;
}

static int
parse_addr(const char *s, struct sockaddr_in *sin)
{
    char host[64];
    const char *colon = strrchr(s, ':');
    if (colon == NULL || (size_t)(colon - s) >= sizeof(host))
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    memset(sin, 0, sizeof(*sin));
    sin->sin_family = AF_INET;
    sin->sin_port = htons((uint16_t)atoi(colon + 1));
    return inet_pton(AF_INET, host, &sin->sin_addr) == 1 ? 0 : -1;
}

int
main(int argc, char **argv)
{
    const char *listen_addr = "127.0.0.1:8080";
    size_t body_bytes = 64;
    for (int i = 1; i < argc; ++i) {
        if (strcmp(argv[i], "--listen") == 0 && i + 1 < argc) {
            listen_addr = argv[++i];
        } else if (strcmp(argv[i], "--body-bytes") == 0 && i + 1 < argc) {
            body_bytes = strtoull(argv[++i], NULL, 10);
        } else {
            fprintf(stderr, "usage: %s [--listen ADDR:PORT] [--body-bytes N]\n", argv[0]);
            return 2;
        }
    }
    if ((static_body = malloc(body_bytes + 1)) == NULL)
        die("malloc");
    for (size_t i = 0; i < body_bytes; ++i)
        static_body[i] = (uint8_t)('a' + i % 26);
    if (body_bytes != 0)
        static_body[body_bytes - 1] = '\n';
    static_body_len = body_bytes;
    for (size_t i = 0; i < BULK_PATTERN_BYTES; ++i)
        bulk_pattern[i] = (uint8_t)('a' + i % 26);

    struct sockaddr_in sin;
    if (parse_addr(listen_addr, &sin) != 0) {
        fprintf(stderr, "bad --listen address: %s\n", listen_addr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_signal};
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);

    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0)
        die("socket");
    if (bind(lfd, (struct sockaddr *)&sin, sizeof(sin)) != 0 || listen(lfd, 4096) != 0)
        die("bind/listen");
    if ((epfd = epoll_create1(EPOLL_CLOEXEC)) < 0)
        die("epoll_create1");
    struct epoll_event lev = {.events = EPOLLIN, .data.ptr = NULL};
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, lfd, &lev) != 0)
        die("epoll_ctl");
    h2_setup();
    printf("listening %s\n", listen_addr);
    fflush(stdout);

    while (!stop_requested) {
        struct epoll_event evs[256];
        int n = epoll_wait(epfd, evs, 256, -1);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            die("epoll_wait");
        }
        for (int i = 0; i < n; ++i) {
            if (evs[i].data.ptr == NULL)
                on_accept(lfd);
            else
                conn_on_event(evs[i].data.ptr, evs[i].events);
        }
    }
    return 0;
}
