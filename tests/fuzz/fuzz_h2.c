/*
 * Fuzz targets for the HTTP/2 paths: the downstream server (http2/h2server.c: nghttp2 plus the agent's callbacks, its
 * abuse counters and its stream-id check) and, with -DFUZZ_H2_CLIENT, the upstream client (http2/h2client.c).
 *
 * The real agent runs in this process: one worker thread assembled as remora-agent's main does (listener, route and
 * router filters, the HTTP/1.1 and HTTP/2 client codecs), with one explicit listener on a loopback port, and a route to
 * a cluster whose single endpoint is an "origin" socket this thread serves. Each input is one connection:
 *   - h2_server: the input is the client's bytes after the connection preface (a sequence of raw frames). The harness
 *     connects, writes preface + input + a GOAWAY(NO_ERROR) in one write, reads the agent's answer, and the origin
 *     (HTTP/1.1, cluster protocol http1) answers every request "200 ok" with `connection: close`.
 *   - h2_client: the first byte picks a downstream HTTP/1.1 request (GET, POST with a small body, POST with a body
 *     larger than the initial window); the rest is what the origin (cluster protocol h2) sends on each upstream
 *     connection once the agent's request header block has arrived (raw frames: the server preface SETTINGS is part
 *     of the input).
 * When nothing happens for QUIET_MS the harness half-closes (the origin side first for h2_client, then downstream), so
 * that every connection ends whatever the input leaves open.
 *
 * Properties checked beyond "no crash, no leak, no UB" (a violation aborts):
 *   - every connection ends (downstream and upstream sockets closed by the agent) within DEADLINE_MS of the input;
 *   - the agent's output is well-formed HTTP/2: the client magic first (upstream), a SETTINGS frame first; frame
 *     lengths within the largest SETTINGS_MAX_FRAME_SIZE the peer announced (16384 before any); known frame types and
 *     never PUSH_PROMISE; the reserved bit clear; per type the stream id (zero or not) and the payload length RFC 9113
 *     fixes; a header block's CONTINUATION frames follow it on its stream and nothing comes between; GOAWAY last
 *     stream ids never increase; WINDOW_UPDATE increments non-zero;
 *   - server: responses (HEADERS, DATA) only on odd stream ids up to the highest of the client's HEADERS frames; the
 *     abuse counters of the listener grow by at most one per connection, and a connection counted for an abuse kind
 *     that lingers (not the outbound-queue kinds) sent GOAWAY ENHANCE_YOUR_CALM;
 *   - server: a stream whose request head and RST_STREAM both came in the same read never reaches the origin. Checked
 *     when preface + input fit in one read (SAME_READ_MAX bytes, written at once) and the input's requests have
 *     distinct plain paths (decoded with nghttp2's HPACK inflater; the origin records each request target);
 *   - server: a HEADERS frame on a stream id the client skipped (h2server.c's rule, mirrored: its first MAX_GAPS
 *     ranges) ends the connection: neither its request nor any later one reaches the origin;
 *   - client: the agent opens streams with increasing odd ids and sends DATA only on streams it opened; the downstream
 *     answer is an HTTP/1.1 response.
 * FUZZ_H2_TRACE=1 in the environment prints one line per input (frames each way, GOAWAYs, origin requests, time).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* accept4, memmem */
#endif
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <nghttp2/nghttp2.h>
#include "remora/log.h"
#include "config/config.h"
#include "core/worker.h"
#include "http1/h1client.h"
#include "http2/h2client.h"
#include "http2/h2conn.h"
#include "net/listener.h"
#include "obs/stats.h"
#include "proxy/stream.h"
#include "router/router_filter.h"
#include "tls/mesh.h"
#include "tls/tls.h"
#include "upstream/cluster.h"
#include "fuzz_common.h"

#define H2_MAX_INPUT 65536
#define QUIET_MS 5
#define DEADLINE_MS 5000
#define MAX_ORIGIN_CONNS 64
#define ORIGIN_HEAD_MAX 8192
#define SAME_READ_MAX 4000
#define MAX_TRACKED_STREAMS 256
#define MAX_PATH_LEN 64
#define LISTENER_NAME "fuzz"
#define H2S_MAX_GAPS 8 /* MAX_GAPS of http2/h2server.c */

static const char PREFACE[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define PREFACE_LEN 24

/* ---- a growable byte buffer ---- */

typedef struct st_buf_t {
    uint8_t *bytes;
    size_t len, cap;
} buf_t;

static void
buf_append(buf_t *b, const void *p, size_t n)
{
    if (n == 0)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap == 0 ? 4096 : b->cap;
        while (cap < b->len + n)
            cap *= 2;
        b->bytes = realloc(b->bytes, cap);
        FUZZ_CHECK(b->bytes != NULL, "out of memory");
        b->cap = cap;
    }
    memcpy(b->bytes + b->len, p, n);
    b->len += n;
}

static void
buf_consume(buf_t *b, size_t n)
{
    if (n == 0)
        return;
    memmove(b->bytes, b->bytes + n, b->len - n);
    b->len -= n;
}

static void
buf_free(buf_t *b)
{
    free(b->bytes);
    *b = (buf_t){NULL, 0, 0};
}

static uint32_t
get24(const uint8_t *p)
{
    return (uint32_t)p[0] << 16 | (uint32_t)p[1] << 8 | p[2];
}

static uint32_t
get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* ---- what the input announces (walked as nghttp2 would frame it) ---- */

typedef struct st_input_info_t {
    uint32_t max_frame_size;    /* the largest valid SETTINGS_MAX_FRAME_SIZE announced, at least 16384 */
    int32_t max_headers_stream; /* the highest stream id of a HEADERS frame */
    /* server: request streams and their paths, for the same-read reset property */
    size_t num_streams;
    struct {
        int32_t id;
        char path[MAX_PATH_LEN + 1];
        unsigned has_path : 1;
        unsigned reset : 1;   /* RST_STREAM after the head */
        unsigned refused : 1; /* at or after a HEADERS frame on a skipped stream id: never processed */
    } streams[MAX_TRACKED_STREAMS];
    /* h2server.c's stream-id rule (RFC 9113 5.1.1), mirrored: the highest odd id of a HEADERS frame, the first
     * H2S_MAX_GAPS ranges of ids skipped below it, and whether a HEADERS frame came on one of them */
    int32_t max_odd;
    int32_t gaps[H2S_MAX_GAPS][2];
    size_t num_gaps;
    int skipped_id_used;
    int paths_usable; /* every request's :path decoded, plain and distinct */
} input_info_t;

static int
plain_path(const uint8_t *p, size_t n)
{
    if (n == 0 || n > MAX_PATH_LEN || p[0] != '/')
        return 0;
    for (size_t i = 0; i != n; ++i) {
        uint8_t c = p[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
                 (c == '/' && (i == 0 || p[i - 1] != '/'));
        if (!ok)
            return 0;
    }
    return 1;
}

/* Decodes one complete header block of `stream`; returns 0, or -1 if the block does not decode. */
static int
decode_block(nghttp2_hd_inflater *inf, input_info_t *info, int32_t stream, const uint8_t *in, size_t len)
{
    size_t idx = SIZE_MAX;
    for (size_t i = 0; i != info->num_streams; ++i)
        if (info->streams[i].id == stream)
            idx = i;
    int first = idx == SIZE_MAX;
    if (first) {
        if (info->num_streams == MAX_TRACKED_STREAMS)
            return -1;
        idx = info->num_streams++;
        info->streams[idx].id = stream;
        info->streams[idx].has_path = 0;
        info->streams[idx].reset = 0;
        info->streams[idx].refused = info->skipped_id_used != 0;
    }
    static const uint8_t empty[1];
    if (in == NULL)
        in = empty; /* an empty block */
    for (;;) {
        nghttp2_nv nv;
        int flags = 0;
        ssize_t r = nghttp2_hd_inflate_hd2(inf, &nv, &flags, in, len, 1);
        if (r < 0)
            return -1;
        in += r;
        len -= (size_t)r;
        if (flags & NGHTTP2_HD_INFLATE_EMIT) {
            if (first && nv.namelen == 5 && memcmp(nv.name, ":path", 5) == 0) {
                if (info->streams[idx].has_path || !plain_path(nv.value, nv.valuelen))
                    return -1;
                memcpy(info->streams[idx].path, nv.value, nv.valuelen);
                info->streams[idx].path[nv.valuelen] = '\0';
                info->streams[idx].has_path = 1;
            }
        }
        if (flags & NGHTTP2_HD_INFLATE_FINAL) {
            nghttp2_hd_inflate_end_headers(inf);
            return 0;
        }
        if (r == 0 && len == 0)
            return -1;
    }
}

static void
scan_input(const uint8_t *p, size_t len, int decode, input_info_t *info)
{
    memset(info, 0, sizeof(*info));
    info->max_frame_size = 16384;
    info->paths_usable = decode;
    nghttp2_hd_inflater *inf = NULL;
    if (decode && nghttp2_hd_inflate_new(&inf) != 0)
        info->paths_usable = 0;
    buf_t block = {NULL, 0, 0};
    int32_t block_stream = 0;
    int in_block = 0;
    size_t off = 0;
    while (len - off >= 9) {
        uint32_t flen = get24(p + off);
        uint8_t type = p[off + 3], flags = p[off + 4];
        int32_t stream = (int32_t)(get32(p + off + 5) & 0x7fffffff);
        if (len - off - 9 < flen)
            break;
        const uint8_t *pl = p + off + 9;
        off += 9 + flen;
        if (in_block && type != NGHTTP2_CONTINUATION)
            info->paths_usable = 0; /* a connection error for nghttp2: the rest is not parsed */
        switch (type) {
        case NGHTTP2_HEADERS: {
            if (stream > info->max_headers_stream)
                info->max_headers_stream = stream;
            if ((stream & 1) != 0) {
                if (stream > info->max_odd) {
                    if ((int64_t)stream > (int64_t)info->max_odd + 2 && info->num_gaps < H2S_MAX_GAPS) {
                        info->gaps[info->num_gaps][0] = info->max_odd + 1;
                        info->gaps[info->num_gaps++][1] = stream - 1;
                    }
                    info->max_odd = stream;
                } else {
                    for (size_t i = 0; i != info->num_gaps; ++i)
                        if (stream >= info->gaps[i][0] && stream <= info->gaps[i][1])
                            info->skipped_id_used = 1;
                }
            }
            size_t skip = 0, pad = 0;
            if (flags & NGHTTP2_FLAG_PADDED) {
                if (flen < 1) {
                    info->paths_usable = 0;
                    break;
                }
                pad = pl[0];
                skip = 1;
            }
            if (flags & NGHTTP2_FLAG_PRIORITY)
                skip += 5;
            if (skip + pad > flen) {
                info->paths_usable = 0;
                break;
            }
            block.len = 0;
            buf_append(&block, pl + skip, flen - skip - pad);
            block_stream = stream;
            in_block = 1;
            break;
        }
        case NGHTTP2_CONTINUATION:
            if (!in_block || stream != block_stream) {
                info->paths_usable = 0;
                break;
            }
            buf_append(&block, pl, flen);
            break;
        case NGHTTP2_RST_STREAM:
            for (size_t i = 0; i != info->num_streams; ++i)
                if (info->streams[i].id == stream)
                    info->streams[i].reset = 1;
            break;
        case NGHTTP2_SETTINGS:
            if (!(flags & NGHTTP2_FLAG_ACK) && stream == 0 && flen % 6 == 0)
                for (size_t i = 0; i + 6 <= flen; i += 6) {
                    uint16_t id = (uint16_t)(pl[i] << 8 | pl[i + 1]);
                    uint32_t v = get32(pl + i + 2);
                    if (id == NGHTTP2_SETTINGS_MAX_FRAME_SIZE && v >= 16384 && v <= 16777215 && v > info->max_frame_size)
                        info->max_frame_size = v;
                }
            break;
        default:
            break;
        }
        if ((type == NGHTTP2_HEADERS || type == NGHTTP2_CONTINUATION) && in_block && (flags & NGHTTP2_FLAG_END_HEADERS)) {
            in_block = 0;
            if (info->paths_usable && decode_block(inf, info, block_stream, block.bytes, block.len) != 0)
                info->paths_usable = 0;
        }
    }
    buf_free(&block);
    if (inf != NULL)
        nghttp2_hd_inflate_del(inf);
    /* only distinct paths say which stream reached the origin */
    for (size_t i = 0; info->paths_usable && i != info->num_streams; ++i) {
        if (!info->streams[i].has_path) {
            info->paths_usable = 0;
            break;
        }
        for (size_t j = 0; j != i; ++j)
            if (strcmp(info->streams[i].path, info->streams[j].path) == 0)
                info->paths_usable = 0;
    }
}

/* ---- a walker over the agent's output frames ---- */

typedef struct st_walker_t {
    const char *who;
    int agent_is_client;
    size_t magic_seen;
    size_t frames;
    buf_t in;
    const input_info_t *peer;
    int32_t cont_stream; /* a header block is open on this stream (0: none) */
    int32_t max_own_stream;
    uint32_t last_goaway, goaway_error;
    size_t goaways;
    int calm_goaway;  /* a GOAWAY ENHANCE_YOUR_CALM was seen */
    int request_head; /* agent_is_client: a request header block ended */
} walker_t;

static void
walk_frame(walker_t *w, const uint8_t *h, const uint8_t *pl)
{
    uint32_t len = get24(h);
    uint8_t type = h[3], flags = h[4];
    uint32_t sid_raw = get32(h + 5);
    int32_t sid = (int32_t)(sid_raw & 0x7fffffff);
    FUZZ_CHECK((sid_raw & 0x80000000u) == 0, "reserved bit of a stream id set");
    FUZZ_CHECK(len <= w->peer->max_frame_size, "frame longer than the peer's SETTINGS_MAX_FRAME_SIZE");
    FUZZ_CHECK(type <= NGHTTP2_CONTINUATION, "unknown frame type sent");
    FUZZ_CHECK(type != NGHTTP2_PUSH_PROMISE, "PUSH_PROMISE sent");
    if (w->frames++ == 0)
        FUZZ_CHECK(type == NGHTTP2_SETTINGS && !(flags & NGHTTP2_FLAG_ACK), "the first frame is not SETTINGS");
    if (w->cont_stream != 0)
        FUZZ_CHECK(type == NGHTTP2_CONTINUATION && sid == w->cont_stream, "a frame inside a header block");
    else
        FUZZ_CHECK(type != NGHTTP2_CONTINUATION, "CONTINUATION without a header block");
    switch (type) {
    case NGHTTP2_DATA:
    case NGHTTP2_HEADERS:
        FUZZ_CHECK(sid != 0, "DATA or HEADERS on stream 0");
        FUZZ_CHECK((sid & 1) == 1, "DATA or HEADERS on an even stream id");
        if (w->agent_is_client) {
            if (type == NGHTTP2_HEADERS && sid > w->max_own_stream)
                w->max_own_stream = sid;
            FUZZ_CHECK(sid <= w->max_own_stream, "DATA on a stream the agent did not open");
        } else {
            FUZZ_CHECK(sid <= w->peer->max_headers_stream, "a response on a stream the client never opened");
        }
        if (type == NGHTTP2_HEADERS && !(flags & NGHTTP2_FLAG_END_HEADERS))
            w->cont_stream = sid;
        else if (type == NGHTTP2_HEADERS)
            w->request_head = 1;
        break;
    case NGHTTP2_CONTINUATION:
        if (flags & NGHTTP2_FLAG_END_HEADERS) {
            w->cont_stream = 0;
            w->request_head = 1;
        }
        break;
    case NGHTTP2_PRIORITY:
        FUZZ_CHECK(sid != 0 && len == 5, "malformed PRIORITY");
        break;
    case NGHTTP2_RST_STREAM:
        FUZZ_CHECK(sid != 0 && len == 4, "malformed RST_STREAM");
        break;
    case NGHTTP2_SETTINGS:
        FUZZ_CHECK(sid == 0 && len % 6 == 0, "malformed SETTINGS");
        FUZZ_CHECK(!(flags & NGHTTP2_FLAG_ACK) || len == 0, "SETTINGS ACK with a payload");
        break;
    case NGHTTP2_PING:
        FUZZ_CHECK(sid == 0 && len == 8, "malformed PING");
        break;
    case NGHTTP2_GOAWAY: {
        FUZZ_CHECK(sid == 0 && len >= 8, "malformed GOAWAY");
        uint32_t last = get32(pl) & 0x7fffffff;
        FUZZ_CHECK(w->goaways == 0 || last <= w->last_goaway, "GOAWAY last stream id increased");
        w->last_goaway = last;
        ++w->goaways;
        w->goaway_error = get32(pl + 4);
        if (w->goaway_error == NGHTTP2_ENHANCE_YOUR_CALM)
            w->calm_goaway = 1;
        break;
    }
    case NGHTTP2_WINDOW_UPDATE:
        FUZZ_CHECK(len == 4 && (get32(pl) & 0x7fffffff) != 0, "malformed WINDOW_UPDATE");
        break;
    default:
        break;
    }
}

static void
walker_feed(walker_t *w, const uint8_t *p, size_t n)
{
    if (w->agent_is_client && w->magic_seen < PREFACE_LEN) {
        size_t k = PREFACE_LEN - w->magic_seen < n ? PREFACE_LEN - w->magic_seen : n;
        FUZZ_CHECK(memcmp(p, PREFACE + w->magic_seen, k) == 0, "the upstream connection does not start with the preface");
        w->magic_seen += k;
        p += k;
        n -= k;
    }
    buf_append(&w->in, p, n);
    size_t off = 0;
    while (w->in.len - off >= 9) {
        uint32_t len = get24(w->in.bytes + off);
        FUZZ_CHECK(len <= w->peer->max_frame_size, "frame longer than the peer's SETTINGS_MAX_FRAME_SIZE");
        if (w->in.len - off - 9 < len)
            break;
        walk_frame(w, w->in.bytes + off, w->in.bytes + off + 9);
        off += 9 + len;
    }
    buf_consume(&w->in, off);
}

/* ---- the agent, in this process ---- */

static rm_worker_t worker;
static rm_stats_t *worker_stats;
static struct sockaddr_in agent_addr;
static int origin_listen_fd = -1;

static const rm_filter_t *chain_filters[2];
static rm_filter_chain_t chain = {chain_filters, 2};

static const rm_filter_chain_t *
select_chain(const rm_config_listener_t *listener)
{
    return &chain;
}

static int
listen_loopback(struct sockaddr_in *sin)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    FUZZ_CHECK(fd >= 0, "socket");
    memset(sin, 0, sizeof(*sin));
    sin->sin_family = AF_INET;
    sin->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof(*sin);
    FUZZ_CHECK(bind(fd, (struct sockaddr *)sin, sizeof(*sin)) == 0 && listen(fd, 128) == 0, "bind/listen on loopback");
    FUZZ_CHECK(getsockname(fd, (struct sockaddr *)sin, &sl) == 0, "getsockname");
    return fd;
}

static void
setup(void)
{
    signal(SIGPIPE, SIG_IGN);
    rm_log_current_level = RM_LOG_ERROR; /* abuse and protocol errors are warnings: not for every input */
    rm_tls_init();
    rm_worker_register_module(&rm_net_module);
    rm_upstream_module_register();
    rm_worker_register_module(&rm_http2_module);
    rm_route_module_register();
    rm_h1client_register();
    rm_h2client_register();
    chain_filters[0] = &rm_route_filter;
    chain_filters[1] = &rm_router_filter;
    rm_stream_set_default_chain(&chain);
    rm_stream_set_chain_selector(select_chain);
    rm_mesh_tls_init();

    struct sockaddr_in origin;
    origin_listen_fd = listen_loopback(&origin);
    FUZZ_CHECK(fcntl(origin_listen_fd, F_SETFL, O_NONBLOCK) == 0, "fcntl");
    /* a free port for the agent's listener (rm_listen_fd_open binds it again with SO_REUSEPORT) */
    int probe = listen_loopback(&agent_addr);
    close(probe);

    char yaml[2048];
    snprintf(yaml, sizeof(yaml),
             "workers: 1\n"
             "dns: {servers: [\"127.0.0.1:5353\"]}\n"
             "limits: {idle_timeout_ms: 2000, detect_timeout_ms: 1000, h2_max_concurrent_streams: 100}\n"
             "listeners:\n"
             "  - name: " LISTENER_NAME "\n"
             "    address: 127.0.0.1:%u\n"
             "    routes:\n"
             "      - cluster: origin\n"
             "clusters:\n"
             "  - name: origin\n"
             "    protocol: %s\n"
             "    endpoints: [\"127.0.0.1:%u\"]\n"
             "    connect_timeout_ms: 1000\n",
             ntohs(agent_addr.sin_port),
#ifdef FUZZ_H2_CLIENT
             "h2",
#else
             "http1",
#endif
             ntohs(origin.sin_port));
    rm_config_error_t cerr;
    rm_config_t *config = rm_config_load_string(yaml, strlen(yaml), "fuzz_h2", &cerr);
    if (config == NULL) {
        fprintf(stderr, "fuzz_h2: config: %s:%u: %s\n", cerr.file, cerr.line, cerr.message);
        abort();
    }
    char err[512];
    rm_tls_set_t *tls = rm_tls_set_create(config, err, sizeof(err));
    FUZZ_CHECK(tls != NULL, err);
    worker_stats = rm_stats_create(0);
    rm_worker_init(&worker, 0, config, tls, rm_tls_set_unref, worker_stats);
    int fd = rm_listen_fd_open(&config->listeners[0].addr, err, sizeof(err));
    FUZZ_CHECK(fd >= 0, err);
    rm_listener_new(&worker, fd, &config->listeners[0].addr);
    rm_config_unref(config);
    FUZZ_CHECK(rm_worker_start(&worker) == 0, "worker start");
}

#ifndef FUZZ_H2_CLIENT
/* The listener's abuse counters (created by the worker when it starts the listener). */
static void
load_abuse(uint64_t out[RM_STAT_H2_ABUSE_KINDS])
{
    memset(out, 0, sizeof(uint64_t) * RM_STAT_H2_ABUSE_KINDS);
    pthread_mutex_lock(&worker_stats->_mutex);
    for (rm_listener_stats_t *l = worker_stats->_listeners; l != NULL; l = l->_next)
        if (strcmp(l->name, LISTENER_NAME) == 0)
            for (size_t k = 0; k != RM_STAT_H2_ABUSE_KINDS; ++k)
                out[k] = RM_STAT_LOAD(l->h2_abuse[k]);
    pthread_mutex_unlock(&worker_stats->_mutex);
}
#endif

/* ---- one input ---- */

typedef struct st_peer_t {
    int fd;
    buf_t out; /* bytes still to write */
    size_t out_off;
    unsigned shut_wr : 1; /* shutdown(SHUT_WR) once `out` is written */
    unsigned wr_done : 1;
    unsigned eof : 1;
    /* origin connections */
    buf_t head; /* h2_server: the request head read so far */
    unsigned answered : 1;
    unsigned input_sent : 1;
    walker_t walk; /* h2_client: the agent's frames */
} peer_t;

static uint64_t
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void
peer_flush(peer_t *p)
{
    while (p->out_off < p->out.len) {
        ssize_t n = send(p->fd, p->out.bytes + p->out_off, p->out.len - p->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
                return;
            p->out_off = p->out.len; /* the agent closed: nothing more to say */
            break;
        }
        p->out_off += (size_t)n;
    }
    if (p->shut_wr && !p->wr_done) {
        shutdown(p->fd, SHUT_WR);
        p->wr_done = 1;
    }
}

static void
peer_send(peer_t *p, const void *data, size_t n)
{
    buf_append(&p->out, data, n);
    peer_flush(p);
}

static void
peer_shut(peer_t *p)
{
    p->shut_wr = 1;
    peer_flush(p);
}

/* Reads what is there; returns the bytes read into `got` (0 and eof set at the end). */
static size_t
peer_read(peer_t *p, uint8_t *got, size_t cap)
{
    ssize_t n = recv(p->fd, got, cap, 0);
    if (n > 0)
        return (size_t)n;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    p->eof = 1; /* end of stream or reset: the agent closed */
    return 0;
}

/* Closes with a reset: the harness opens a few connections per input, hundreds per second, and closing normally would
 * leave each in TIME-WAIT (on this side or the agent's) until the loopback port space runs out. Only once the agent
 * has closed its side, so nothing it says is lost. */
static void
close_abort(int fd)
{
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    close(fd);
}

static void
peer_free(peer_t *p)
{
    if (p->fd >= 0)
        close_abort(p->fd);
    buf_free(&p->out);
    buf_free(&p->head);
    buf_free(&p->walk.in);
    p->fd = -1;
}

static int
nonblock(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fcntl(fd, F_SETFL, O_NONBLOCK);
}

typedef struct st_run_t {
    const uint8_t *input;
    size_t input_len;
    input_info_t *info;
    peer_t down;
    peer_t origins[MAX_ORIGIN_CONNS];
    size_t num_origins, open_origins;
    walker_t down_walk; /* h2_server: the agent's frames to the client */
    buf_t down_head;    /* h2_client: the start of the downstream answer */
    /* h2_server: request targets the origin saw */
    size_t num_targets;
    char targets[MAX_TRACKED_STREAMS][MAX_PATH_LEN + 1];
} run_t;

/* Drops the connections left over by an earlier input (accepted late). */
static void
sweep_origin(void)
{
    int fd;
    while ((fd = accept4(origin_listen_fd, NULL, NULL, SOCK_CLOEXEC)) >= 0)
        close_abort(fd);
}

static void
origin_accept(run_t *r)
{
    int fd;
    while ((fd = accept4(origin_listen_fd, NULL, NULL, SOCK_CLOEXEC)) >= 0) {
        if (r->num_origins == MAX_ORIGIN_CONNS) {
            close_abort(fd);
            continue;
        }
        peer_t *p = &r->origins[r->num_origins++];
        memset(p, 0, sizeof(*p));
        p->fd = fd;
        FUZZ_CHECK(nonblock(fd) == 0, "fcntl");
        p->walk.who = "upstream";
        p->walk.agent_is_client = 1;
        p->walk.peer = r->info;
        ++r->open_origins;
    }
}

#ifndef FUZZ_H2_CLIENT
static void
origin_request(run_t *r, peer_t *p, const uint8_t *data, size_t n)
{
    if (p->answered || n == 0)
        return;
    size_t room = ORIGIN_HEAD_MAX - p->head.len;
    buf_append(&p->head, data, n < room ? n : room);
    const uint8_t *end = memmem(p->head.bytes, p->head.len, "\r\n\r\n", 4);
    if (end == NULL && p->head.len < ORIGIN_HEAD_MAX)
        return;
    /* the request target: between the first two spaces of the request line */
    const uint8_t *sp1 = memchr(p->head.bytes, ' ', p->head.len);
    if (sp1 != NULL) {
        const uint8_t *sp2 = memchr(sp1 + 1, ' ', p->head.len - (size_t)(sp1 + 1 - p->head.bytes));
        size_t tlen = sp2 != NULL ? (size_t)(sp2 - sp1 - 1) : 0;
        if (tlen != 0 && tlen <= MAX_PATH_LEN && r->num_targets != MAX_TRACKED_STREAMS) {
            memcpy(r->targets[r->num_targets], sp1 + 1, tlen);
            r->targets[r->num_targets++][tlen] = '\0';
        }
    }
    static const char resp[] = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok";
    p->answered = 1;
    /* the agent closes first (connection: close), so that the reset in close_abort leaves no TIME-WAIT */
    peer_send(p, resp, sizeof(resp) - 1);
}
#endif

/* The harness's side of each socket; returns 1 if anything happened. */
static int
pump(run_t *r, int timeout_ms)
{
    struct pollfd pfd[MAX_ORIGIN_CONNS + 2];
    peer_t *who[MAX_ORIGIN_CONNS + 2];
    size_t n = 0;
    pfd[n] = (struct pollfd){origin_listen_fd, POLLIN, 0};
    who[n++] = NULL;
    if (!r->down.eof) {
        pfd[n] = (struct pollfd){r->down.fd, POLLIN | (r->down.out_off < r->down.out.len ? POLLOUT : 0), 0};
        who[n++] = &r->down;
    }
    for (size_t i = 0; i != r->num_origins; ++i) {
        peer_t *p = &r->origins[i];
        if (p->fd >= 0 && !p->eof) {
            pfd[n] = (struct pollfd){p->fd, POLLIN | (p->out_off < p->out.len ? POLLOUT : 0), 0};
            who[n++] = p;
        }
    }
    int k = poll(pfd, n, timeout_ms);
    if (k < 0 && errno == EINTR)
        return 1; /* a signal (libFuzzer's timer) is not a quiet period */
    if (k <= 0)
        return 0;
    static uint8_t chunk[65536];
    for (size_t i = 0; i != n; ++i) {
        if (pfd[i].revents == 0)
            continue;
        peer_t *p = who[i];
        if (p == NULL) {
            origin_accept(r);
            continue;
        }
        if (pfd[i].revents & POLLOUT)
            peer_flush(p);
        if (!(pfd[i].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        size_t got = peer_read(p, chunk, sizeof(chunk));
        if (p == &r->down) {
#ifdef FUZZ_H2_CLIENT
            if (r->down_head.len < 16)
                buf_append(&r->down_head, chunk, got < 16 - r->down_head.len ? got : 16 - r->down_head.len);
#else
            walker_feed(&r->down_walk, chunk, got);
#endif
        } else {
#ifdef FUZZ_H2_CLIENT
            walker_feed(&p->walk, chunk, got);
            if (p->walk.request_head && !p->input_sent) {
                /* the agent's request is in: the origin answers with the input */
                p->input_sent = 1;
                peer_send(p, r->input, r->input_len);
            }
#else
            origin_request(r, p, chunk, got);
#endif
            if (p->eof) {
                close_abort(p->fd);
                p->fd = -1;
                --r->open_origins;
            }
        }
    }
    return 1;
}

static int
origin_pending(void)
{
    struct pollfd pfd = {origin_listen_fd, POLLIN, 0};
    return poll(&pfd, 1, 0) == 1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int ready;
    if (!ready) {
        setup();
        ready = 1;
    }
    if (size > H2_MAX_INPUT)
        return 0;
    sweep_origin();

    static input_info_t info;
    static run_t run;
    run_t *r = &run;
    memset(r, 0, sizeof(*r));
    r->info = &info;
#ifdef FUZZ_H2_CLIENT
    if (size == 0)
        return 0;
    uint8_t shape = data[0];
    r->input = data + 1;
    r->input_len = size - 1;
    scan_input(r->input, r->input_len, 0, &info);
#else
    /* preface + input + GOAWAY(NO_ERROR), in one write: the agent ends the connection once its streams are done. The
     * input is scanned with the GOAWAY, as the agent frames it (a truncated last frame takes the GOAWAY's bytes). */
    static const uint8_t goaway[17] = {0, 0, 8, NGHTTP2_GOAWAY, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    static buf_t client_bytes;
    client_bytes.len = 0;
    buf_append(&client_bytes, PREFACE, PREFACE_LEN);
    buf_append(&client_bytes, data, size);
    buf_append(&client_bytes, goaway, sizeof(goaway));
    r->input = client_bytes.bytes;
    r->input_len = client_bytes.len;
    scan_input(client_bytes.bytes + PREFACE_LEN, client_bytes.len - PREFACE_LEN, 1, &info);
    uint64_t abuse_before[RM_STAT_H2_ABUSE_KINDS];
    load_abuse(abuse_before);
    r->down_walk.who = "downstream";
    r->down_walk.peer = &info;
#endif

    r->down.fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    FUZZ_CHECK(r->down.fd >= 0, "socket");
    /* from a rotating source address in 127.1.0.0/16: the loopback port space is shared with everything else on the
     * machine, and hundreds of connections a second would otherwise compete for it */
    static uint32_t source;
    struct sockaddr_in src = {.sin_family = AF_INET};
    src.sin_addr.s_addr = htonl(0x7f010000u | (1 + source / 254 % 254) << 8 | (1 + source % 254));
    ++source;
    int one = 1;
    setsockopt(r->down.fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
    if (bind(r->down.fd, (struct sockaddr *)&src, sizeof(src)) != 0) {
        fprintf(stderr, "fuzz_h2: bind to a loopback source address: %s\n", strerror(errno));
        FUZZ_CHECK(0, "bind to a loopback source address");
    }
    /* non-blocking: libFuzzer's timer signal interrupts blocking calls */
    FUZZ_CHECK(nonblock(r->down.fd) == 0, "fcntl");
    int err = 0;
    if (connect(r->down.fd, (struct sockaddr *)&agent_addr, sizeof(agent_addr)) != 0) {
        err = errno;
        if (err == EINPROGRESS || err == EINTR) {
            struct pollfd cp = {r->down.fd, POLLOUT, 0};
            int k;
            while ((k = poll(&cp, 1, DEADLINE_MS)) < 0 && errno == EINTR)
                ;
            socklen_t el = sizeof(err);
            if (k != 1 || getsockopt(r->down.fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0)
                err = k == 0 ? ETIMEDOUT : errno;
        }
    }
    if (err != 0) {
        fprintf(stderr, "fuzz_h2: connect to the agent: %s\n", strerror(err));
        FUZZ_CHECK(0, "connect to the agent");
    }

#ifdef FUZZ_H2_CLIENT
    static const char get[] = "GET /c HTTP/1.1\r\nhost: origin\r\nconnection: close\r\n\r\n";
    static const char post[] = "POST /c HTTP/1.1\r\nhost: origin\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello";
    switch (shape % 3) {
    case 0:
        peer_send(&r->down, get, sizeof(get) - 1);
        break;
    case 1:
        peer_send(&r->down, post, sizeof(post) - 1);
        break;
    default: {
        /* larger than the initial stream window: the agent waits for the origin's WINDOW_UPDATE frames */
        char head[160];
        size_t body = 70000;
        int hl = snprintf(head, sizeof(head),
                          "POST /c HTTP/1.1\r\nhost: origin\r\ncontent-length: %zu\r\nconnection: close\r\n\r\n", body);
        buf_append(&r->down.out, head, (size_t)hl);
        static uint8_t zeros[70000];
        buf_append(&r->down.out, zeros, body);
        peer_flush(&r->down);
        break;
    }
    }
#else
    buf_append(&r->down.out, r->input, r->input_len);
    int same_read = r->down.out.len <= SAME_READ_MAX;
    peer_flush(&r->down);
    same_read = same_read && r->down.out_off == r->down.out.len;
#endif

    uint64_t started = now_ms(), deadline = started + DEADLINE_MS;
    int stage = 0;
    for (;;) {
        if (r->down.eof && r->open_origins == 0 && !origin_pending())
            break;
#ifdef FUZZ_H2_CLIENT
        /* the downstream answer is complete (connection: close): the origin ends its connections */
        if (r->down.eof)
            for (size_t i = 0; i != r->num_origins; ++i)
                if (r->origins[i].fd >= 0 && !r->origins[i].shut_wr)
                    peer_shut(&r->origins[i]);
#endif
        uint64_t now = now_ms();
        if (now >= deadline) {
            fprintf(stderr, "fuzz_h2: downstream %s, %zu upstream connections open after %d ms\n", r->down.eof ? "closed" : "open",
                    r->open_origins, DEADLINE_MS);
            FUZZ_CHECK(0, "the connection did not end");
        }
        if (pump(r, QUIET_MS))
            continue;
        /* quiet: half-close, upstream first (the agent then fails what waits for the origin), then downstream */
        for (size_t i = 0; i != r->num_origins; ++i)
            if (r->origins[i].fd >= 0 && !r->origins[i].shut_wr)
                peer_shut(&r->origins[i]);
        if (++stage >= 2 && !r->down.shut_wr)
            peer_shut(&r->down);
    }

#ifdef FUZZ_H2_CLIENT
    if (r->down_head.len != 0 && (r->down_head.len < 9 || memcmp(r->down_head.bytes, "HTTP/1.1 ", 9) != 0)) {
        fprintf(stderr, "fuzz_h2: the downstream answer starts with");
        for (size_t i = 0; i != r->down_head.len; ++i)
            fprintf(stderr, " %02x", r->down_head.bytes[i]);
        fprintf(stderr, "\n");
        FUZZ_CHECK(0, "the downstream answer is not an HTTP/1.1 response");
    }
#else
    /* abuse: at most one count per connection; a lingering abuse close sent its GOAWAY */
    uint64_t abuse_after[RM_STAT_H2_ABUSE_KINDS];
    load_abuse(abuse_after);
    uint64_t counted = 0;
    int lingering_kind = 0;
    for (size_t k = 0; k != RM_STAT_H2_ABUSE_KINDS; ++k) {
        counted += abuse_after[k] - abuse_before[k];
        if (abuse_after[k] != abuse_before[k] && k != RM_H2_ABUSE_OUTBOUND_CONTROL && k != RM_H2_ABUSE_OUTBOUND_FRAMES)
            lingering_kind = 1;
    }
    FUZZ_CHECK(counted <= 1, "a connection counted for abuse more than once");
    if (lingering_kind)
        FUZZ_CHECK(r->down_walk.calm_goaway, "closed for abuse without GOAWAY ENHANCE_YOUR_CALM");
    /* a stream reset in the read that brought its head never reaches the origin */
    if (same_read && info.paths_usable)
        for (size_t i = 0; i != info.num_streams; ++i)
            if (info.streams[i].reset)
                for (size_t t = 0; t != r->num_targets; ++t)
                    if (strcmp(info.streams[i].path, r->targets[t]) == 0) {
                        fprintf(stderr, "fuzz_h2: stream %d (%s) reset in the same read was sent upstream\n", info.streams[i].id,
                                info.streams[i].path);
                        FUZZ_CHECK(0, "a stream reset in the same read reached the origin");
                    }
    /* a HEADERS frame on a skipped stream id ends the connection: neither it nor anything after it is routed */
    if (info.paths_usable)
        for (size_t i = 0; i != info.num_streams; ++i)
            if (info.streams[i].refused)
                for (size_t t = 0; t != r->num_targets; ++t)
                    if (strcmp(info.streams[i].path, r->targets[t]) == 0) {
                        fprintf(stderr, "fuzz_h2: stream %d (%s) was routed after a HEADERS frame on a skipped stream id\n",
                                info.streams[i].id, info.streams[i].path);
                        FUZZ_CHECK(0, "a HEADERS frame on a skipped stream id (or a later one) reached the origin");
                    }
#endif

    if (getenv("FUZZ_H2_TRACE") != NULL)
        fprintf(
            stderr,
            "fuzz_h2: %zu input bytes, %llu ms: %zu frames downstream (GOAWAY %zu, last %u, error %u), %zu upstream connections, "
            "%zu requests at the origin, %zu upstream frames (GOAWAY error %u), downstream answer \"%.*s\", %d quiet periods\n",
            size, (unsigned long long)(now_ms() - started), r->down_walk.frames, r->down_walk.goaways, r->down_walk.last_goaway,
            r->down_walk.goaway_error, r->num_origins, r->num_targets, r->num_origins != 0 ? r->origins[0].walk.frames : 0,
            r->num_origins != 0 ? r->origins[0].walk.goaway_error : 0, (int)(r->down_head.len < 12 ? r->down_head.len : 12),
            r->down_head.len != 0 ? (const char *)r->down_head.bytes : "", stage);
    peer_free(&r->down);
    buf_free(&r->down_walk.in);
    buf_free(&r->down_head);
    for (size_t i = 0; i != r->num_origins; ++i)
        peer_free(&r->origins[i]);
    return 0;
}
