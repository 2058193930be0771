/*
 * A blocking gRPC client over libnghttp2 and OpenSSL (see h2rpc.h).
 *
 * One call is one connection and one HTTP/2 stream. Every operation runs the same loop (pump): write
 * what nghttp2 has to send, stop when the operation's condition holds, else poll the socket and the
 * cancel eventfd until the operation's deadline and feed what arrives to nghttp2. The connection is
 * a small state machine (resolve, TCP connect, TLS handshake, open) advanced by that loop, so an
 * operation that times out resumes where it stopped.
 */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "config/h2rpc.h"

#define READ_CHUNK 16384
/* bytes read per pump round before the loop looks at its conditions again */
#define READ_ROUND_MAX (256 * 1024)
#define GRPC_HEADER_BYTES 5
/* a buffer emptied is freed when bigger than this */
#define KEEP_BUFFER_BYTES 16384

enum { ST_INIT, ST_CONNECTING, ST_HANDSHAKE, ST_OPEN };

typedef struct st_bytes_t {
    uint8_t *base;
    size_t len, off, cap;
} bytes_t;

struct st_rm_h2rpc_call_t {
    char *addr, *host, *port, *method, *authority;
    int insecure;
    char *root_pem, *chain_pem, *key_pem, *token;
    int state;
    int fd, wakefd;
    atomic_int cancelled;
    /* rm_h2rpc_wake: a receive that is waiting returns TIMEOUT at once */
    atomic_int woken;
    struct addrinfo *ai_list, *ai_next;
    char last_connect_err[200];
    uint64_t connect_deadline_ms, last_recv_ms;
    SSL_CTX *ssl_ctx;
    SSL *ssl;
    int ssl_want_write;
    nghttp2_session *h2;
    int32_t stream_id;
    /* outbound: the frame bytes nghttp2 handed over and not yet written (nghttp2's own buffer) */
    const uint8_t *out;
    size_t out_len, out_off;
    int write_blocked;
    /* framed messages not yet taken by nghttp2's data provider (at most one message: sends wait for the previous) */
    bytes_t sendbuf;
    int close_requested, eof_sent;
    /* inbound: received DATA; [off, scan) are complete messages, scan onwards the one being assembled */
    bytes_t inbuf;
    size_t scan, unconsumed;
    int http_status, grpc_status, headers_checked;
    char content_type[64];
    char grpc_message[512];
    char goaway[200];
    /* the call has ended: every operation returns CLOSED with `final` once no message is left to take */
    int ended;
    rm_h2rpc_status_t final;
};

/*
 * Status
 */

const char *
rm_h2rpc_code_name(int code)
{
    return rm_grpc_status_name((int)code);
}

static void set_status(rm_h2rpc_status_t *st, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
set_status(rm_h2rpc_status_t *st, int code, const char *fmt, ...)
{
    if (st == NULL)
        return;
    va_list ap;
    st->code = code;
    va_start(ap, fmt);
    vsnprintf(st->message, sizeof(st->message), fmt, ap);
    va_end(ap);
}

/* Ends the call with a status (the first one wins). */
static void end_call(rm_h2rpc_call_t *c, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
end_call(rm_h2rpc_call_t *c, int code, const char *fmt, ...)
{
    if (c->ended)
        return;
    c->ended = 1;
    va_list ap;
    c->final.code = code;
    va_start(ap, fmt);
    vsnprintf(c->final.message, sizeof(c->final.message), fmt, ap);
    va_end(ap);
}

/* Resets the stream (best effort: written by the next flush, if any) and ends the call. */
static void
abort_stream(rm_h2rpc_call_t *c, uint32_t h2_error)
{
    if (c->h2 != NULL && c->stream_id > 0 && nghttp2_session_find_stream(c->h2, c->stream_id) != NULL)
        nghttp2_submit_rst_stream(c->h2, NGHTTP2_FLAG_NONE, c->stream_id, h2_error);
}

/* gRPC's mapping of an HTTP status without grpc-status (doc/http-grpc-status-mapping.md). */
static int
code_of_http_status(int status)
{
    switch (status) {
    case 400:
        return RM_H2RPC_INTERNAL;
    case 401:
        return RM_H2RPC_UNAUTHENTICATED;
    case 403:
        return RM_H2RPC_PERMISSION_DENIED;
    case 404:
        return RM_H2RPC_UNIMPLEMENTED;
    case 429:
    case 502:
    case 503:
    case 504:
        return RM_H2RPC_UNAVAILABLE;
    default:
        return RM_H2RPC_UNKNOWN;
    }
}

/* gRPC core's mapping of a RST_STREAM error code (doc/PROTOCOL-HTTP2.md, "Errors"). */
static int
code_of_h2_error(uint32_t err)
{
    switch (err) {
    case NGHTTP2_REFUSED_STREAM:
        return RM_H2RPC_UNAVAILABLE;
    case NGHTTP2_CANCEL:
        return RM_H2RPC_CANCELLED;
    case NGHTTP2_ENHANCE_YOUR_CALM:
        return RM_H2RPC_RESOURCE_EXHAUSTED;
    case NGHTTP2_INADEQUATE_SECURITY:
        return RM_H2RPC_PERMISSION_DENIED;
    default:
        return RM_H2RPC_INTERNAL;
    }
}

static int
hex_digit(uint8_t ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* grpc-message is percent-encoded (PROTOCOL-HTTP2.md); decodes into dst, truncating. */
static void
percent_decode(char *dst, size_t dstsz, const uint8_t *src, size_t len)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 1 < dstsz; ++i) {
        int hi, lo;
        if (src[i] == '%' && i + 2 < len && (hi = hex_digit(src[i + 1])) >= 0 && (lo = hex_digit(src[i + 2])) >= 0) {
            dst[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            dst[o++] = (char)src[i];
        }
    }
    dst[o] = '\0';
}

/*
 * Buffers
 */

static void
bytes_reserve(bytes_t *b, size_t extra)
{
    if (b->off != 0 && b->off == b->len)
        b->off = b->len = 0;
    if (b->len + extra <= b->cap)
        return;
    if (b->off != 0) {
        memmove(b->base, b->base + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->len + extra <= b->cap)
            return;
    }
    size_t cap = b->cap != 0 ? b->cap : 4096;
    while (cap < b->len + extra)
        cap *= 2;
    b->base = rm_realloc(b->base, cap);
    b->cap = cap;
}

/*
 * nghttp2 callbacks
 */

static ssize_t
read_body(nghttp2_session *session, int32_t stream_id, uint8_t *buf, size_t length, uint32_t *data_flags,
          nghttp2_data_source *source, void *user_data)
{
    rm_h2rpc_call_t *c = user_data;
    size_t avail = c->sendbuf.len - c->sendbuf.off;
    if (avail == 0) {
        if (!c->close_requested)
            return NGHTTP2_ERR_DEFERRED;
        *data_flags |= NGHTTP2_DATA_FLAG_EOF;
        return 0;
    }
    size_t n = avail < length ? avail : length;
    memcpy(buf, c->sendbuf.base + c->sendbuf.off, n);
    c->sendbuf.off += n;
    if (c->sendbuf.off == c->sendbuf.len) {
        c->sendbuf.off = c->sendbuf.len = 0;
        if (c->close_requested)
            *data_flags |= NGHTTP2_DATA_FLAG_EOF;
    }
    return (ssize_t)n;
}

/* Gives back to the peer's flow-control window what is no longer held: everything, unless a complete
 * message is waiting for rm_h2rpc_recv (then the window stays closed until it is taken). */
static void
settle_window(rm_h2rpc_call_t *c)
{
    if (c->unconsumed == 0 || c->scan != c->inbuf.off || c->h2 == NULL)
        return;
    nghttp2_session_consume(c->h2, c->stream_id, c->unconsumed);
    c->unconsumed = 0;
}

static int
on_data_chunk(nghttp2_session *session, uint8_t flags, int32_t stream_id, const uint8_t *data, size_t len, void *user_data)
{
    rm_h2rpc_call_t *c = user_data;
    if (stream_id != c->stream_id || c->ended) {
        nghttp2_session_consume(session, stream_id, len);
        return 0;
    }
    bytes_reserve(&c->inbuf, len);
    memcpy(c->inbuf.base + c->inbuf.len, data, len);
    c->inbuf.len += len;
    c->unconsumed += len;
    /* checks every message header as soon as it is complete: the size bound holds before the bytes arrive */
    while (c->inbuf.len - c->scan >= GRPC_HEADER_BYTES) {
        const uint8_t *h = c->inbuf.base + c->scan;
        uint32_t mlen = (uint32_t)h[1] << 24 | (uint32_t)h[2] << 16 | (uint32_t)h[3] << 8 | h[4];
        if (h[0] != 0) {
            abort_stream(c, NGHTTP2_CANCEL);
            end_call(c, RM_H2RPC_INTERNAL,
                     "the server sent a compressed message (flag %u): this client does not accept compression", h[0]);
            nghttp2_session_consume(session, stream_id, c->unconsumed);
            c->unconsumed = 0;
            return 0;
        }
        if (mlen > RM_H2RPC_MAX_MESSAGE_BYTES) {
            abort_stream(c, NGHTTP2_CANCEL);
            end_call(c, RM_H2RPC_RESOURCE_EXHAUSTED, "the server sent a message of %u bytes, over the bound of %u bytes", mlen,
                     RM_H2RPC_MAX_MESSAGE_BYTES);
            nghttp2_session_consume(session, stream_id, c->unconsumed);
            c->unconsumed = 0;
            return 0;
        }
        if (c->inbuf.len - c->scan < GRPC_HEADER_BYTES + (size_t)mlen)
            break;
        c->scan += GRPC_HEADER_BYTES + mlen;
    }
    settle_window(c);
    return 0;
}

static int
on_header(nghttp2_session *session, const nghttp2_frame *frame, const uint8_t *name, size_t namelen, const uint8_t *value,
          size_t valuelen, uint8_t flags, void *user_data)
{
    rm_h2rpc_call_t *c = user_data;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->hd.stream_id != c->stream_id)
        return 0;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        int s = 0;
        for (size_t i = 0; i != valuelen && i < 3 && value[i] >= '0' && value[i] <= '9'; ++i)
            s = s * 10 + (value[i] - '0');
        c->http_status = s;
    } else if (namelen == 11 && memcmp(name, "grpc-status", 11) == 0) {
        int s = 0;
        for (size_t i = 0; i != valuelen && i < 4 && value[i] >= '0' && value[i] <= '9'; ++i)
            s = s * 10 + (value[i] - '0');
        c->grpc_status = valuelen != 0 && valuelen <= 4 ? s : RM_H2RPC_UNKNOWN;
    } else if (namelen == 12 && memcmp(name, "grpc-message", 12) == 0) {
        percent_decode(c->grpc_message, sizeof(c->grpc_message), value, valuelen);
    } else if (namelen == 12 && memcmp(name, "content-type", 12) == 0) {
        snprintf(c->content_type, sizeof(c->content_type), "%.*s", (int)(valuelen < 63 ? valuelen : 63), (const char *)value);
    }
    return 0;
}

/* The final status of a stream that closed (h2_error: the RST_STREAM code, or NO_ERROR). */
static void
end_from_stream(rm_h2rpc_call_t *c, uint32_t h2_error)
{
    if (c->grpc_status >= 0) {
        end_call(c, c->grpc_status, "%s", c->grpc_message);
    } else if (c->http_status != 0 && c->http_status != 200) {
        end_call(c, code_of_http_status(c->http_status), "the control plane at %s answered HTTP status %d", c->addr,
                 c->http_status);
    } else if (h2_error != NGHTTP2_NO_ERROR) {
        end_call(c, code_of_h2_error(h2_error), "the stream was reset by the control plane at %s (HTTP/2 error %s)%s%s", c->addr,
                 nghttp2_http2_strerror(h2_error), c->goaway[0] != '\0' ? "; " : "", c->goaway);
    } else {
        end_call(c, RM_H2RPC_UNKNOWN, "the control plane at %s ended the stream without a grpc-status", c->addr);
    }
    if (c->final.code == RM_H2RPC_OK && c->inbuf.len != c->scan) {
        c->final.code = RM_H2RPC_INTERNAL;
        snprintf(c->final.message, sizeof(c->final.message), "the stream ended inside a message (%zu bytes of it received)",
                 c->inbuf.len - c->scan);
    }
}

static int
on_frame_recv(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    rm_h2rpc_call_t *c = user_data;
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        snprintf(c->goaway, sizeof(c->goaway), "GOAWAY %s%s%.*s", nghttp2_http2_strerror(frame->goaway.error_code),
                 frame->goaway.opaque_data_len != 0 ? ": " : "",
                 (int)(frame->goaway.opaque_data_len < 120 ? frame->goaway.opaque_data_len : 120),
                 (const char *)frame->goaway.opaque_data);
        return 0;
    }
    if (frame->hd.stream_id != c->stream_id)
        return 0;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_RESPONSE && !c->headers_checked) {
        c->headers_checked = 1;
        /* a 200 that is not gRPC: what gRPC core calls an invalid content-type (a proxy's page, most likely) */
        if (c->http_status == 200 && c->grpc_status < 0 && strncmp(c->content_type, "application/grpc", 16) != 0) {
            abort_stream(c, NGHTTP2_CANCEL);
            end_call(c, RM_H2RPC_UNKNOWN, "the server at %s is not a gRPC server (content-type '%s')", c->addr, c->content_type);
        }
    }
    if ((frame->hd.type == NGHTTP2_HEADERS || frame->hd.type == NGHTTP2_DATA) && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
        /* the server's END_STREAM ends the call (gRPC semantics), whether or not this side has half-closed */
        end_from_stream(c, NGHTTP2_NO_ERROR);
        if (!c->eof_sent)
            nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, c->stream_id, NGHTTP2_NO_ERROR);
    }
    return 0;
}

static int
on_frame_send(nghttp2_session *session, const nghttp2_frame *frame, void *user_data)
{
    rm_h2rpc_call_t *c = user_data;
    if (frame->hd.stream_id == c->stream_id && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        c->eof_sent = 1;
    return 0;
}

static int
on_stream_close(nghttp2_session *session, int32_t stream_id, uint32_t error_code, void *user_data)
{
    rm_h2rpc_call_t *c = user_data;
    if (stream_id == c->stream_id)
        end_from_stream(c, error_code);
    return 0;
}

static nghttp2_session *
new_session(rm_h2rpc_call_t *c)
{
    nghttp2_session_callbacks *cb;
    nghttp2_option *opt;
    nghttp2_session *s;
    if (nghttp2_session_callbacks_new(&cb) != 0 || nghttp2_option_new(&opt) != 0)
        rm_fatal("out of memory");
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    /* the window is given back as messages are taken (settle_window): explicit backpressure */
    nghttp2_option_set_no_auto_window_update(opt, 1);
    if (nghttp2_session_client_new2(&s, cb, c, opt) != 0)
        rm_fatal("out of memory");
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    return s;
}

/*
 * Opening
 */

/* Splits "host:port" or "[v6]:port" into host and port (malloc'ed). Returns 0, or -1. */
static int
split_addr(const char *addr, char **host, char **port)
{
    const char *colon;
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (close == NULL || close[1] != ':' || close[2] == '\0')
            return -1;
        *host = rm_strndup(addr + 1, (size_t)(close - addr - 1));
        *port = rm_strdup(close + 2);
        return 0;
    }
    if ((colon = strrchr(addr, ':')) == NULL || colon == addr || colon[1] == '\0' || strchr(addr, ':') != colon)
        return -1;
    *host = rm_strndup(addr, (size_t)(colon - addr));
    *port = rm_strdup(colon + 1);
    return 0;
}

rm_h2rpc_call_t *
rm_h2rpc_open(const char *addr, const rm_h2rpc_security_t *sec, const char *method)
{
    rm_h2rpc_call_t *c = rm_calloc(1, sizeof(*c));
    c->addr = rm_strdup(addr);
    c->method = rm_strdup(method);
    c->fd = -1;
    c->grpc_status = -1;
    c->insecure = sec->insecure;
    if (!sec->insecure) {
        c->root_pem = sec->root_pem != NULL ? rm_strdup(sec->root_pem) : NULL;
        if (sec->cert_chain_pem != NULL && sec->key_pem != NULL) {
            c->chain_pem = rm_strdup(sec->cert_chain_pem);
            c->key_pem = rm_strdup(sec->key_pem);
        }
        c->token = sec->bearer_token != NULL ? rm_strdup(sec->bearer_token) : NULL;
    }
    if ((c->wakefd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) < 0) {
        end_call(c, RM_H2RPC_INTERNAL, "eventfd: %s", strerror(errno));
        return c;
    }
    if (split_addr(addr, &c->host, &c->port) != 0) {
        end_call(c, RM_H2RPC_UNAVAILABLE, "%s: not an address (HOST:PORT or [IPv6]:PORT)", addr);
        return c;
    }
    /* :authority: the name gRPC core used with its target name override over TLS, the address in cleartext */
    c->authority = rm_strdup(c->insecure ? addr : RM_H2RPC_SERVER_NAME);

    c->h2 = new_session(c);
    nghttp2_settings_entry settings[] = {
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, RM_H2RPC_WINDOW_BYTES},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 16384},
    };
    nghttp2_submit_settings(c->h2, NGHTTP2_FLAG_NONE, settings, sizeof(settings) / sizeof(settings[0]));
    nghttp2_session_set_local_window_size(c->h2, NGHTTP2_FLAG_NONE, 0, RM_H2RPC_WINDOW_BYTES);
    char bearer[8200];
    nghttp2_nv nva[8];
    size_t n = 0;
#define NV(N, V)                                                                                                                   \
    do {                                                                                                                           \
        nva[n].name = (uint8_t *)(N);                                                                                              \
        nva[n].namelen = strlen(N);                                                                                                \
        nva[n].value = (uint8_t *)(V);                                                                                             \
        nva[n].valuelen = strlen(V);                                                                                               \
        nva[n].flags = NGHTTP2_NV_FLAG_NONE;                                                                                       \
        ++n;                                                                                                                       \
    } while (0)
    NV(":method", "POST");
    NV(":scheme", c->insecure ? "http" : "https");
    NV(":path", c->method);
    NV(":authority", c->authority);
    NV("te", "trailers");
    NV("content-type", "application/grpc");
    NV("user-agent", "remora-agent h2rpc");
    if (c->token != NULL) {
        snprintf(bearer, sizeof(bearer), "Bearer %s", c->token);
        NV("authorization", bearer);
        nva[n - 1].flags = NGHTTP2_NV_FLAG_NO_INDEX;
    }
#undef NV
    nghttp2_data_provider body = {.read_callback = read_body};
    c->stream_id = nghttp2_submit_request(c->h2, NULL, nva, n, &body, NULL);
    memset(bearer, 0, sizeof(bearer));
    if (c->stream_id < 0)
        end_call(c, RM_H2RPC_INTERNAL, "cannot start the request: %s", nghttp2_strerror(c->stream_id));
    return c;
}

static void
close_socket(rm_h2rpc_call_t *c)
{
    if (c->ssl != NULL) {
        SSL_free(c->ssl);
        c->ssl = NULL;
    }
    if (c->fd >= 0) {
        close(c->fd);
        c->fd = -1;
    }
}

/* Starts a TCP connect to the next resolved address; ends the call when none is left. */
static void
connect_next(rm_h2rpc_call_t *c)
{
    close_socket(c);
    for (; c->ai_next != NULL; c->ai_next = c->ai_next->ai_next) {
        struct addrinfo *ai = c->ai_next;
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            snprintf(c->last_connect_err, sizeof(c->last_connect_err), "socket: %s", strerror(errno));
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0 || errno == EINPROGRESS) {
            c->fd = fd;
            c->state = ST_CONNECTING;
            c->ai_next = ai->ai_next;
            return;
        }
        snprintf(c->last_connect_err, sizeof(c->last_connect_err), "%s", strerror(errno));
        close(fd);
    }
    end_call(c, RM_H2RPC_UNAVAILABLE, "cannot connect to the control plane at %s: %s", c->addr, c->last_connect_err);
}

static int
load_pem_certs(X509_STORE *store, const char *pem)
{
    BIO *bio = BIO_new_mem_buf(pem, -1);
    X509 *x;
    int n = 0;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (X509_STORE_add_cert(store, x) == 1)
            ++n;
        X509_free(x);
    }
    ERR_clear_error();
    BIO_free(bio);
    return n;
}

static int
use_client_identity(SSL_CTX *ctx, const char *chain_pem, const char *key_pem)
{
    BIO *bio = BIO_new_mem_buf(chain_pem, -1);
    X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    int ok = x != NULL && SSL_CTX_use_certificate(ctx, x) == 1;
    X509_free(x);
    while (ok && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        ok = SSL_CTX_add1_chain_cert(ctx, x) == 1;
        X509_free(x);
    }
    BIO_free(bio);
    bio = BIO_new_mem_buf(key_pem, -1);
    EVP_PKEY *key = ok ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    ok = key != NULL && SSL_CTX_use_PrivateKey(ctx, key) == 1 && SSL_CTX_check_private_key(ctx) == 1;
    EVP_PKEY_free(key);
    BIO_free(bio);
    ERR_clear_error();
    return ok ? 0 : -1;
}

static void
start_tls(rm_h2rpc_call_t *c)
{
    if (c->ssl_ctx == NULL) {
        c->ssl_ctx = SSL_CTX_new(TLS_client_method());
        if (c->ssl_ctx == NULL) {
            end_call(c, RM_H2RPC_INTERNAL, "cannot create a TLS context");
            return;
        }
        SSL_CTX_set_min_proto_version(c->ssl_ctx, TLS1_2_VERSION);
        SSL_CTX_set_verify(c->ssl_ctx, SSL_VERIFY_PEER, NULL);
        static const unsigned char alpn[] = "\x02h2";
        SSL_CTX_set_alpn_protos(c->ssl_ctx, alpn, sizeof(alpn) - 1);
        if (c->root_pem == NULL || load_pem_certs(SSL_CTX_get_cert_store(c->ssl_ctx), c->root_pem) == 0) {
            end_call(c, RM_H2RPC_FAILED_PRECONDITION, "the trust anchor holds no usable PEM certificate");
            return;
        }
        /* a client identity that does not load is left out, as gRPC core did with a bad pair: the bearer token may suffice */
        if (c->chain_pem != NULL && use_client_identity(c->ssl_ctx, c->chain_pem, c->key_pem) != 0)
            rm_log_warn("control", "the workload certificate and key do not load; connecting to %s without them", c->addr);
    }
    c->ssl = SSL_new(c->ssl_ctx);
    SSL_set_fd(c->ssl, c->fd);
    /* RELEASE_BUFFERS: the idle stream (hours between snapshots) does not hold two 16 KiB record buffers */
    SSL_set_mode(c->ssl, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
    SSL_set_tlsext_host_name(c->ssl, RM_H2RPC_SERVER_NAME);
    SSL_set1_host(c->ssl, RM_H2RPC_SERVER_NAME);
    SSL_set_connect_state(c->ssl);
    c->state = ST_HANDSHAKE;
}

/* The TCP connect finished (the socket is writable): go on with TLS, or open cleartext. */
static void
on_connected(rm_h2rpc_call_t *c)
{
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
    if (err != 0) {
        snprintf(c->last_connect_err, sizeof(c->last_connect_err), "%s", strerror(err));
        connect_next(c);
        return;
    }
    if (c->insecure) {
        c->state = ST_OPEN;
        c->last_recv_ms = rm_now_ms();
    } else {
        start_tls(c);
    }
}

/* Advances the TLS handshake; returns the poll events it waits for (0 when done or failed). */
static short
handshake(rm_h2rpc_call_t *c)
{
    ERR_clear_error();
    int r = SSL_do_handshake(c->ssl);
    if (r == 1) {
        const unsigned char *proto;
        unsigned int plen;
        SSL_get0_alpn_selected(c->ssl, &proto, &plen);
        if (plen != 2 || memcmp(proto, "h2", 2) != 0) {
            end_call(c, RM_H2RPC_UNAVAILABLE, "TLS handshake with %s failed: the server did not select ALPN h2 (not a gRPC server)",
                     c->addr);
            return 0;
        }
        c->state = ST_OPEN;
        c->last_recv_ms = rm_now_ms();
        return 0;
    }
    int e = SSL_get_error(c->ssl, r);
    if (e == SSL_ERROR_WANT_READ)
        return POLLIN;
    if (e == SSL_ERROR_WANT_WRITE)
        return POLLOUT;
    long vr = SSL_get_verify_result(c->ssl);
    if (vr != X509_V_OK) {
        end_call(c, RM_H2RPC_UNAVAILABLE, "TLS handshake with %s failed: certificate verify failed: %s%s", c->addr,
                 X509_verify_cert_error_string(vr),
                 vr == X509_V_ERR_HOSTNAME_MISMATCH ? " (the certificate is not for " RM_H2RPC_SERVER_NAME ")" : "");
        return 0;
    }
    unsigned long ossl = ERR_peek_last_error();
    char buf[256];
    if (ossl != 0)
        ERR_error_string_n(ossl, buf, sizeof(buf));
    else
        snprintf(buf, sizeof(buf), "%s", e == SSL_ERROR_SYSCALL && errno != 0 ? strerror(errno) : "the connection was closed");
    ERR_clear_error();
    end_call(c, RM_H2RPC_UNAVAILABLE, "TLS handshake with %s failed: %s", c->addr, buf);
    return 0;
}

/*
 * I/O on the open connection
 */

/* Returns bytes written, 0 when the socket would block, -1 on error (the call ended). */
static ssize_t
transport_write(rm_h2rpc_call_t *c, const uint8_t *p, size_t len)
{
    if (c->ssl != NULL) {
        size_t n;
        ERR_clear_error();
        if (SSL_write_ex(c->ssl, p, len, &n) == 1)
            return (ssize_t)n;
        int e = SSL_get_error(c->ssl, 0);
        if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ)
            return 0;
        end_call(c, RM_H2RPC_UNAVAILABLE, "writing to the control plane at %s: %s", c->addr,
                 e == SSL_ERROR_SYSCALL && errno != 0 ? strerror(errno) : "TLS error");
        ERR_clear_error();
        return -1;
    }
    ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
    if (n >= 0)
        return n;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return 0;
    end_call(c, RM_H2RPC_UNAVAILABLE, "writing to the control plane at %s: %s", c->addr, strerror(errno));
    return -1;
}

/* Returns bytes read, 0 when the socket would block, -1 on EOF or error (the call ended). */
static ssize_t
transport_read(rm_h2rpc_call_t *c, uint8_t *p, size_t len)
{
    const char *why;
    if (c->ssl != NULL) {
        size_t n;
        ERR_clear_error();
        c->ssl_want_write = 0;
        if (SSL_read_ex(c->ssl, p, len, &n) == 1)
            return (ssize_t)n;
        int e = SSL_get_error(c->ssl, 0);
        if (e == SSL_ERROR_WANT_READ)
            return 0;
        if (e == SSL_ERROR_WANT_WRITE) {
            c->ssl_want_write = 1;
            return 0;
        }
        why = e == SSL_ERROR_ZERO_RETURN || e == SSL_ERROR_SSL ? "the connection was closed"
              : errno != 0                                     ? strerror(errno)
                                                               : "the connection was closed";
        ERR_clear_error();
    } else {
        ssize_t n = recv(c->fd, p, len, 0);
        if (n > 0)
            return n;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return 0;
        why = n == 0 ? "the connection was closed" : strerror(errno);
    }
    end_call(c, RM_H2RPC_UNAVAILABLE, "the control plane at %s: %s%s%s", c->addr, why, c->goaway[0] != '\0' ? " after " : "",
             c->goaway);
    return -1;
}

/* Writes what nghttp2 has to send until done or the socket blocks. Returns -1 when the call ended. */
static int
flush(rm_h2rpc_call_t *c)
{
    for (;;) {
        if (c->out_off == c->out_len) {
            const uint8_t *data;
            ssize_t n = nghttp2_session_mem_send(c->h2, &data);
            if (n < 0) {
                end_call(c, RM_H2RPC_INTERNAL, "HTTP/2 error: %s", nghttp2_strerror((int)n));
                return -1;
            }
            c->write_blocked = 0;
            if (n == 0)
                return 0;
            c->out = data;
            c->out_len = (size_t)n;
            c->out_off = 0;
        }
        ssize_t w = transport_write(c, c->out + c->out_off, c->out_len - c->out_off);
        if (w < 0)
            return -1;
        if (w == 0) {
            c->write_blocked = 1;
            return 0;
        }
        c->out_off += (size_t)w;
    }
}

/* Reads what the socket has (READ_ROUND_MAX at most) into nghttp2. Returns 1 when more may be
 * waiting, 0, or -1 when the call ended. */
static int
read_some(rm_h2rpc_call_t *c)
{
    uint8_t buf[READ_CHUNK];
    size_t total = 0;
    while (total < READ_ROUND_MAX) {
        ssize_t n = transport_read(c, buf, sizeof(buf));
        if (n < 0)
            return -1;
        if (n == 0)
            return 0;
        c->last_recv_ms = rm_now_ms();
        total += (size_t)n;
        ssize_t r = nghttp2_session_mem_recv(c->h2, buf, (size_t)n);
        if (r < 0) {
            end_call(c, RM_H2RPC_INTERNAL, "HTTP/2 error from the control plane at %s: %s", c->addr, nghttp2_strerror((int)r));
            return -1;
        }
        if (c->ended)
            return 0;
    }
    return 1;
}

/*
 * The loop
 */

enum { WANT_OPEN, WANT_SENT, WANT_EOF_SENT, WANT_MESSAGE };

static int
satisfied(rm_h2rpc_call_t *c, int want)
{
    switch (want) {
    case WANT_OPEN:
        return c->state == ST_OPEN;
    case WANT_SENT:
        return c->state == ST_OPEN && c->sendbuf.len == c->sendbuf.off && c->out_off == c->out_len;
    case WANT_EOF_SENT:
        return c->state == ST_OPEN && c->eof_sent && c->out_off == c->out_len;
    default:
        return c->scan != c->inbuf.off;
    }
}

/* Runs the connection until `want` holds (1), the deadline passes (0) or the call ends (-1). */
static int
pump(rm_h2rpc_call_t *c, int want, int64_t timeout_ms)
{
    uint64_t start = rm_now_ms(), deadline = timeout_ms < 0 ? UINT64_MAX : start + (uint64_t)timeout_ms;
    for (;;) {
        if (atomic_load(&c->cancelled) && !c->ended) {
            abort_stream(c, NGHTTP2_CANCEL);
            if (c->state == ST_OPEN)
                flush(c);
            end_call(c, RM_H2RPC_CANCELLED, "the call was cancelled");
        }
        short events = 0;
        int more = 0;
        if (!c->ended) {
            switch (c->state) {
            case ST_INIT: {
                struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
                int r = getaddrinfo(c->host, c->port, &hints, &c->ai_list);
                if (r != 0) {
                    end_call(c, RM_H2RPC_UNAVAILABLE, "cannot resolve the control plane's address %s: %s", c->addr,
                             r == EAI_SYSTEM ? strerror(errno) : gai_strerror(r));
                    break;
                }
                c->ai_next = c->ai_list;
                c->connect_deadline_ms = rm_now_ms() + RM_H2RPC_CONNECT_TIMEOUT_MS;
                snprintf(c->last_connect_err, sizeof(c->last_connect_err), "no address");
                connect_next(c);
                continue;
            }
            case ST_CONNECTING:
                events = POLLOUT;
                break;
            case ST_HANDSHAKE:
                if ((events = handshake(c)) == 0)
                    continue;
                break;
            case ST_OPEN:
                if (flush(c) < 0)
                    break;
                events = POLLIN | (c->write_blocked || c->ssl_want_write ? POLLOUT : 0);
                /* records OpenSSL already decrypted do not wake poll */
                more = c->ssl != NULL && SSL_pending(c->ssl) > 0;
                break;
            }
        }
        if (satisfied(c, want))
            return 1;
        if (c->ended)
            return -1;
        if (want == WANT_MESSAGE && atomic_exchange(&c->woken, 0))
            return 0;
        uint64_t now = rm_now_ms();
        if (c->state != ST_OPEN && now >= c->connect_deadline_ms) {
            end_call(c, RM_H2RPC_UNAVAILABLE, "cannot connect to the control plane at %s: %s not done within %d ms", c->addr,
                     c->state == ST_HANDSHAKE ? "the TLS handshake was" : "the TCP connection was", RM_H2RPC_CONNECT_TIMEOUT_MS);
            continue;
        }
        if (c->state == ST_OPEN && now >= c->last_recv_ms + RM_H2RPC_IDLE_TIMEOUT_MS) {
            end_call(c, RM_H2RPC_UNAVAILABLE, "the control plane at %s sent nothing for %d s (it pings every 20 s)", c->addr,
                     RM_H2RPC_IDLE_TIMEOUT_MS / 1000);
            continue;
        }
        if (now >= deadline)
            return 0;
        uint64_t until = deadline;
        if (c->state != ST_OPEN && c->connect_deadline_ms < until)
            until = c->connect_deadline_ms;
        if (c->state == ST_OPEN && c->last_recv_ms + RM_H2RPC_IDLE_TIMEOUT_MS < until)
            until = c->last_recv_ms + RM_H2RPC_IDLE_TIMEOUT_MS;
        int wait = until - now > 60000 ? 60000 : (int)(until - now);
        if (more)
            wait = 0;
        struct pollfd pfd[2] = {{.fd = c->wakefd, .events = POLLIN}, {.fd = c->fd, .events = events}};
        int pr = poll(pfd, 2, wait);
        if (pr < 0) {
            if (errno == EINTR)
                continue;
            end_call(c, RM_H2RPC_INTERNAL, "poll: %s", strerror(errno));
            continue;
        }
        if (pfd[0].revents & POLLIN) {
            uint64_t v;
            if (read(c->wakefd, &v, sizeof(v)) < 0 && errno != EAGAIN)
                rm_log_debug("control", "eventfd read: %s", strerror(errno));
        }
        if (more)
            pfd[1].revents |= POLLIN;
        if (pfd[1].revents == 0)
            continue;
        switch (c->state) {
        case ST_CONNECTING:
            on_connected(c);
            break;
        case ST_OPEN:
            /* one round (READ_ROUND_MAX): the loop writes what the input asked for (SETTINGS and PING
             * acknowledgements, WINDOW_UPDATEs) before reading more */
            if ((pfd[1].revents & (POLLIN | POLLHUP | POLLERR)) || c->ssl_want_write)
                read_some(c);
            break;
        default:
            break;
        }
    }
}

/*
 * Operations
 */

static rm_h2rpc_result_t
closed(rm_h2rpc_call_t *c, rm_h2rpc_status_t *st)
{
    if (st != NULL)
        *st = c->final;
    return RM_H2RPC_CLOSED;
}

rm_h2rpc_result_t
rm_h2rpc_send(rm_h2rpc_call_t *c, const ProtobufCMessage *msg, int64_t timeout_ms, rm_h2rpc_status_t *st)
{
    uint64_t start = rm_now_ms();
    if (c->ended)
        return closed(c, st);
    /* a send that timed out earlier goes first */
    if (c->sendbuf.len != c->sendbuf.off) {
        int r = pump(c, WANT_SENT, timeout_ms);
        if (r < 0)
            return closed(c, st);
        if (r == 0)
            return RM_H2RPC_TIMEOUT;
    }
    /* connecting first: a message is queued only on an open connection, so a send that times out while
     * connecting is not sent twice by the caller's retry */
    if (c->state != ST_OPEN) {
        int r = pump(c, WANT_OPEN, timeout_ms);
        if (r < 0)
            return closed(c, st);
        if (r == 0)
            return RM_H2RPC_TIMEOUT;
    }
    if (c->close_requested) {
        set_status(st, RM_H2RPC_INTERNAL, "send after close_send");
        return RM_H2RPC_CLOSED;
    }
    size_t len = protobuf_c_message_get_packed_size(msg);
    if (len > RM_H2RPC_MAX_MESSAGE_BYTES) {
        set_status(st, RM_H2RPC_RESOURCE_EXHAUSTED, "a message of %zu bytes is over the bound of %u bytes", len,
                   RM_H2RPC_MAX_MESSAGE_BYTES);
        return RM_H2RPC_CLOSED;
    }
    bytes_reserve(&c->sendbuf, GRPC_HEADER_BYTES + len);
    uint8_t *h = c->sendbuf.base + c->sendbuf.len;
    h[0] = 0;
    h[1] = (uint8_t)(len >> 24);
    h[2] = (uint8_t)(len >> 16);
    h[3] = (uint8_t)(len >> 8);
    h[4] = (uint8_t)len;
    protobuf_c_message_pack(msg, h + GRPC_HEADER_BYTES);
    c->sendbuf.len += GRPC_HEADER_BYTES + len;
    nghttp2_session_resume_data(c->h2, c->stream_id);
    int64_t left = timeout_ms;
    if (timeout_ms >= 0) {
        uint64_t spent = rm_now_ms() - start;
        left = spent >= (uint64_t)timeout_ms ? 0 : timeout_ms - (int64_t)spent;
    }
    int r = pump(c, WANT_SENT, left);
    if (r < 0)
        return closed(c, st);
    if (r == 0)
        return RM_H2RPC_TIMEOUT;
    if (c->sendbuf.len == 0 && c->sendbuf.cap > KEEP_BUFFER_BYTES) {
        free(c->sendbuf.base);
        c->sendbuf.base = NULL;
        c->sendbuf.cap = 0;
    }
    set_status(st, RM_H2RPC_OK, "%s", "");
    return RM_H2RPC_DONE;
}

rm_h2rpc_result_t
rm_h2rpc_close_send(rm_h2rpc_call_t *c, int64_t timeout_ms, rm_h2rpc_status_t *st)
{
    if (c->ended)
        return closed(c, st);
    if (!c->close_requested) {
        c->close_requested = 1;
        nghttp2_session_resume_data(c->h2, c->stream_id);
    }
    int r = pump(c, WANT_EOF_SENT, timeout_ms);
    if (r < 0)
        return closed(c, st);
    if (r == 0)
        return RM_H2RPC_TIMEOUT;
    set_status(st, RM_H2RPC_OK, "%s", "");
    return RM_H2RPC_DONE;
}

rm_h2rpc_result_t
rm_h2rpc_recv(rm_h2rpc_call_t *c, const ProtobufCMessageDescriptor *desc, int64_t timeout_ms, ProtobufCMessage **msg,
              rm_h2rpc_status_t *st)
{
    *msg = NULL;
    int r = pump(c, WANT_MESSAGE, timeout_ms);
    if (r == 0)
        return RM_H2RPC_TIMEOUT;
    if (r < 0 && c->scan == c->inbuf.off)
        return closed(c, st);
    const uint8_t *h = c->inbuf.base + c->inbuf.off;
    size_t mlen = (size_t)h[1] << 24 | (size_t)h[2] << 16 | (size_t)h[3] << 8 | h[4];
    *msg = protobuf_c_message_unpack(desc, NULL, mlen, h + GRPC_HEADER_BYTES);
    c->inbuf.off += GRPC_HEADER_BYTES + mlen;
    if (c->inbuf.off == c->inbuf.len) {
        c->inbuf.off = c->inbuf.len = c->scan = 0;
        /* a big snapshot's buffer is not kept for the idle hours until the next one */
        if (c->inbuf.cap > KEEP_BUFFER_BYTES) {
            free(c->inbuf.base);
            c->inbuf.base = NULL;
            c->inbuf.cap = 0;
        }
    }
    settle_window(c);
    if (*msg == NULL) {
        abort_stream(c, NGHTTP2_CANCEL);
        if (c->state == ST_OPEN && !c->ended)
            flush(c);
        end_call(c, RM_H2RPC_INTERNAL, "the server sent a message that does not parse");
        set_status(st, RM_H2RPC_INTERNAL, "the server sent a message that does not parse");
        return RM_H2RPC_CLOSED;
    }
    set_status(st, RM_H2RPC_OK, "%s", "");
    return RM_H2RPC_DONE;
}

void
rm_h2rpc_cancel(rm_h2rpc_call_t *c)
{
    atomic_store(&c->cancelled, 1);
    uint64_t one = 1;
    if (c->wakefd >= 0 && write(c->wakefd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        rm_log_debug("control", "eventfd write: %s", strerror(errno));
}

void
rm_h2rpc_wake(rm_h2rpc_call_t *c)
{
    atomic_store(&c->woken, 1);
    uint64_t one = 1;
    if (c->wakefd >= 0 && write(c->wakefd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        rm_log_debug("control", "eventfd write: %s", strerror(errno));
}

void
rm_h2rpc_destroy(rm_h2rpc_call_t *c)
{
    if (c == NULL)
        return;
    if (c->state == ST_OPEN && c->h2 != NULL) {
        /* best effort, without waiting: tell the server the call is over */
        if (!c->ended)
            abort_stream(c, NGHTTP2_CANCEL);
        nghttp2_submit_goaway(c->h2, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0);
        c->ended = 1;
        flush(c);
        if (c->ssl != NULL) {
            ERR_clear_error();
            SSL_shutdown(c->ssl);
            ERR_clear_error();
        }
    }
    close_socket(c);
    if (c->ssl_ctx != NULL)
        SSL_CTX_free(c->ssl_ctx);
    if (c->h2 != NULL)
        nghttp2_session_del(c->h2);
    if (c->ai_list != NULL)
        freeaddrinfo(c->ai_list);
    if (c->wakefd >= 0)
        close(c->wakefd);
    free(c->sendbuf.base);
    free(c->inbuf.base);
    free(c->addr);
    free(c->host);
    free(c->port);
    free(c->method);
    free(c->authority);
    free(c->root_pem);
    free(c->chain_pem);
    if (c->key_pem != NULL) {
        memset(c->key_pem, 0, strlen(c->key_pem));
        free(c->key_pem);
    }
    if (c->token != NULL) {
        memset(c->token, 0, strlen(c->token));
        free(c->token);
    }
    free(c);
}
