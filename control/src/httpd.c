/*
 * The side ports' HTTP/1.1 server (see httpd.h). A connection is a small state machine (TLS
 * handshake, reading a request, writing its response) advanced by conn_progress whenever poll()
 * says its socket is ready; the transport is plain send/recv or non-blocking OpenSSL, and nothing
 * else differs between the two.
 */
#define _GNU_SOURCE /* accept4 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <http_parser.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "httpd.h"

#define POLL_MAX_MS 1000
#define MAX_FIELD_BYTES 31 /* enough to tell Content-Type from other header names */

typedef enum en_conn_state_t {
    CONN_HANDSHAKE,
    CONN_READING,
    CONN_WRITING,
} conn_state_t;

struct st_rm_httpd_conn_t {
    rm_httpd_t *server;
    int fd;
    SSL *ssl; /* NULL: plaintext */
    conn_state_t state;
    /* poll for POLLOUT (the response, or the last SSL call wants the socket writable), else POLLIN */
    int want_write;
    uint64_t deadline_ms;
    http_parser parser;
    /* the request being parsed */
    char *url; /* max_url_bytes + 1, after `in` */
    size_t url_len;
    int url_too_long;
    size_t head_bytes;
    char field[MAX_FIELD_BYTES + 1];
    size_t field_len;
    int in_value, field_is_ctype;
    char ctype[RM_HTTPD_MAX_CTYPE_BYTES + 1];
    size_t ctype_len;
    char *body;
    size_t body_len, body_cap;
    /* set by a callback that refuses the request */
    rm_httpd_error_t error;
    char *out;
    size_t out_len, out_off;
    int close_after;
    /* unparsed input (what follows a complete request waits here while its response is written); in_buf_bytes */
    size_t in_len;
    char in[];
};

struct st_rm_httpd_t {
    rm_httpd_config_t cfg;
    struct sockaddr_storage addr;
    socklen_t addr_len;
    int listen_fd, port;
    int wake[2];
    int started;
    pthread_t thread;
    rm_httpd_conn_t **conns;
    size_t num_conns;
    unsigned long refused;
};

static void
event(rm_httpd_t *s, rm_httpd_event_t ev, const char *detail)
{
    if (s->cfg.on_event != NULL)
        s->cfg.on_event(s->cfg.arg, ev, detail);
}

void
rm_httpd_tls_error(char *buf, size_t bufsz)
{
    unsigned long e = ERR_get_error();
    if (e == 0)
        snprintf(buf, bufsz, "unknown OpenSSL error");
    else
        ERR_error_string_n(e, buf, bufsz);
    ERR_clear_error();
}

/* ------------------------------------------------------------------------------------ parsing */

static int
count_head(rm_httpd_conn_t *c, size_t len)
{
    size_t max = c->server->cfg.max_head_bytes;
    c->head_bytes += len;
    if (max != 0 && c->head_bytes > max) {
        c->error = RM_HTTPD_HEAD_TOO_LARGE;
        return -1;
    }
    return 0;
}

static int
on_message_begin(http_parser *p)
{
    rm_httpd_conn_t *c = p->data;
    c->url_len = 0;
    c->url[0] = '\0';
    c->url_too_long = 0;
    c->head_bytes = 0;
    c->field_len = 0;
    c->in_value = 0;
    c->field_is_ctype = 0;
    c->ctype_len = 0;
    c->ctype[0] = '\0';
    free(c->body);
    c->body = NULL;
    c->body_len = c->body_cap = 0;
    c->deadline_ms = rm_now_ms() + c->server->cfg.read_timeout_ms;
    return 0;
}

static int
on_url(http_parser *p, const char *at, size_t len)
{
    rm_httpd_conn_t *c = p->data;
    size_t room = c->server->cfg.max_url_bytes - c->url_len, n = len;
    if (n > room) {
        n = room;
        c->url_too_long = 1;
    }
    memcpy(c->url + c->url_len, at, n);
    c->url_len += n;
    c->url[c->url_len] = '\0';
    return count_head(c, len);
}

static int
on_header_field(http_parser *p, const char *at, size_t len)
{
    rm_httpd_conn_t *c = p->data;
    if (c->in_value) {
        c->in_value = 0;
        c->field_len = 0;
    }
    for (size_t i = 0; i != len; ++i) {
        if (c->field_len < sizeof(c->field) - 1)
            c->field[c->field_len] = at[i];
        ++c->field_len;
    }
    return count_head(c, len);
}

static int
on_header_value(http_parser *p, const char *at, size_t len)
{
    rm_httpd_conn_t *c = p->data;
    if (!c->in_value) {
        c->in_value = 1;
        c->field_is_ctype = rm_lcstreq(c->field, c->field_len < sizeof(c->field) ? c->field_len : 0, "content-type");
    }
    if (c->field_is_ctype) {
        size_t n = c->ctype_len + len > RM_HTTPD_MAX_CTYPE_BYTES ? RM_HTTPD_MAX_CTYPE_BYTES - c->ctype_len : len;
        memcpy(c->ctype + c->ctype_len, at, n);
        c->ctype_len += n;
        c->ctype[c->ctype_len] = '\0';
    }
    return count_head(c, len);
}

static int
on_headers_complete(http_parser *p)
{
    rm_httpd_conn_t *c = p->data;
    size_t max = c->server->cfg.max_body_bytes;
    if (max != 0 && p->content_length != ULLONG_MAX && (p->flags & F_CONTENTLENGTH) && p->content_length > max) {
        c->error = RM_HTTPD_BODY_TOO_LARGE;
        return -1;
    }
    return 0;
}

/* Without a body bound a body is read and dropped: its bytes cost no memory, its time counts against the deadline. */
static int
on_body(http_parser *p, const char *at, size_t len)
{
    rm_httpd_conn_t *c = p->data;
    size_t max = c->server->cfg.max_body_bytes;
    if (max == 0)
        return 0;
    if (c->body_len + len > max) {
        c->error = RM_HTTPD_BODY_TOO_LARGE;
        return -1;
    }
    if (c->body_len + len > c->body_cap) {
        size_t cap = c->body_cap != 0 ? c->body_cap : 16384;
        while (cap < c->body_len + len)
            cap *= 2;
        c->body = rm_realloc(c->body, cap);
        c->body_cap = cap;
    }
    memcpy(c->body + c->body_len, at, len);
    c->body_len += len;
    return 0;
}

static int
on_message_complete(http_parser *p)
{
    http_parser_pause(p, 1); /* one request at a time: what follows waits for this response */
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* ----------------------------------------------------------------------------------- responses */

static const char *
status_text(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 413:
        return "Payload Too Large";
    case 415:
        return "Unsupported Media Type";
    case 431:
        return "Request Header Fields Too Large";
    case 503:
        return "Service Unavailable";
    default:
        return "Internal Server Error";
    }
}

void
rm_httpd_respond(rm_httpd_conn_t *c, int status, const char *ctype, const char *body, size_t blen, unsigned flags,
                 const char *extra_headers)
{
    if (flags & RM_HTTPD_CLOSE)
        c->close_after = 1;
    char head[512];
    int n = snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s\r\n", status,
                     status_text(status), ctype, blen, c->close_after ? "Connection: close\r\n" : "",
                     extra_headers != NULL ? extra_headers : "");
    if (n < 0 || (size_t)n >= sizeof(head))
        rm_fatal("httpd: a response head over %zu bytes", sizeof(head)); /* the callers' headers are fixed and short */
    size_t send_body = (flags & RM_HTTPD_HEAD_ONLY) ? 0 : blen;
    free(c->out);
    c->out = rm_malloc((size_t)n + send_body + 1);
    memcpy(c->out, head, (size_t)n);
    if (send_body != 0)
        memcpy(c->out + n, body, send_body);
    c->out_len = (size_t)n + send_body;
    c->out_off = 0;
    c->state = CONN_WRITING;
    c->want_write = 1;
    c->deadline_ms = rm_now_ms() + c->server->cfg.read_timeout_ms;
}

const char *
rm_httpd_response(const rm_httpd_conn_t *c, size_t *len)
{
    *len = c->out != NULL ? c->out_len : 0;
    return c->out != NULL ? c->out : "";
}

/* --------------------------------------------------------------------------------- connections */

static rm_httpd_method_t
method_of(const http_parser *p)
{
    switch (p->method) {
    case HTTP_GET:
        return RM_HTTPD_GET;
    case HTTP_HEAD:
        return RM_HTTPD_HEAD;
    case HTTP_POST:
        return RM_HTTPD_POST;
    default:
        return RM_HTTPD_OTHER;
    }
}

/* The handler's turn; returns -1 when it gave no response (the connection closes). */
static int
handle(rm_httpd_conn_t *c, rm_httpd_error_t error, const char *error_text)
{
    rm_httpd_request_t req = {
        .error = error,
        .error_text = error_text,
        .method = method_of(&c->parser),
        .url = c->url,
        .url_len = c->url_len,
        .url_too_long = c->url_too_long,
        .content_type = c->ctype,
        .content_type_len = c->ctype_len,
        .body = c->body,
        .body_len = c->body_len,
    };
    c->close_after = error != RM_HTTPD_OK || !http_should_keep_alive(&c->parser);
    c->state = CONN_READING; /* rm_httpd_respond moves it on */
    c->server->cfg.handler(c->server->cfg.arg, c, &req);
    return c->state == CONN_WRITING ? 0 : -1;
}

/* Feeds buffered input to the parser; a complete or broken request gets its response. Returns -1 to close. */
static int
parse_input(rm_httpd_conn_t *c)
{
    if (c->in_len == 0)
        return 0;
    size_t n = http_parser_execute(&c->parser, &parser_settings, c->in, c->in_len);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (e == HPE_PAUSED) {
        /* on_message_complete paused the parser after consuming the final byte */
        memmove(c->in, c->in + n, c->in_len - n);
        c->in_len -= n;
        http_parser_pause(&c->parser, 0);
        return handle(c, RM_HTTPD_OK, NULL);
    }
    c->in_len = 0;
    if (e == HPE_OK)
        return 0;
    if (c->error != RM_HTTPD_OK)
        return handle(c, c->error, NULL);
    if (e == HPE_HEADER_OVERFLOW && c->server->cfg.max_head_bytes != 0)
        return handle(c, RM_HTTPD_HEAD_TOO_LARGE, NULL);
    return handle(c, RM_HTTPD_MALFORMED, http_errno_description(e));
}

static void
conn_free(rm_httpd_conn_t *c)
{
    if (c->ssl != NULL)
        SSL_free(c->ssl);
    close(c->fd);
    free(c->body);
    free(c->out);
    free(c);
}

/* 1: the call would block (want_write says on what), -1: the connection is done (closed, reset, broken TLS). */
static int
io_wait(rm_httpd_conn_t *c, ssize_t r)
{
    if (c->ssl != NULL) {
        int e = SSL_get_error(c->ssl, (int)r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            c->want_write = e == SSL_ERROR_WANT_WRITE;
            return 1;
        }
        return -1;
    }
    return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR) ? 1 : -1;
}

/* Makes whatever progress the socket allows. Returns -1 when the connection is done. */
static int
conn_progress(rm_httpd_conn_t *c)
{
    rm_httpd_t *s = c->server;
    for (;;) {
        if (c->ssl != NULL)
            ERR_clear_error();
        if (c->state == CONN_HANDSHAKE) {
            int r = SSL_accept(c->ssl);
            if (r == 1) {
                c->state = CONN_READING;
                c->deadline_ms = rm_now_ms() + s->cfg.idle_timeout_ms;
                continue;
            }
            if (io_wait(c, r) > 0)
                return 0;
            char why[256];
            rm_httpd_tls_error(why, sizeof(why));
            event(s, RM_HTTPD_EV_TLS_FAILED, why);
            return -1;
        }
        if (c->state == CONN_WRITING) {
            if (c->out_off == c->out_len) {
                if (c->close_after) {
                    if (c->ssl != NULL)
                        SSL_shutdown(c->ssl);
                    else
                        shutdown(c->fd, SHUT_WR);
                    return -1;
                }
                free(c->out);
                c->out = NULL;
                c->out_len = c->out_off = 0;
                c->state = CONN_READING;
                c->want_write = 0;
                c->deadline_ms = rm_now_ms() + s->cfg.idle_timeout_ms;
                if (parse_input(c) != 0) /* a request that came along with the last one */
                    return -1;
                continue;
            }
            ssize_t r = c->ssl != NULL ? SSL_write(c->ssl, c->out + c->out_off, (int)(c->out_len - c->out_off))
                                       : send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
            if (r > 0) {
                c->out_off += (size_t)r;
                continue;
            }
            return io_wait(c, r) > 0 ? 0 : -1;
        }
        /* reading */
        size_t room = s->cfg.in_buf_bytes - c->in_len;
        if (room == 0) {
            /* the parser took nothing from a full buffer: it cannot, so it will not */
            if (handle(c, RM_HTTPD_INPUT_FULL, NULL) != 0)
                return -1;
            continue;
        }
        ssize_t r = c->ssl != NULL ? SSL_read(c->ssl, c->in + c->in_len, (int)room) : recv(c->fd, c->in + c->in_len, room, 0);
        if (r > 0) {
            c->in_len += (size_t)r;
            if (parse_input(c) != 0)
                return -1;
            continue;
        }
        return io_wait(c, r) > 0 ? 0 : -1; /* 0 from recv: closed by the peer */
    }
}

static void
accept_conns(rm_httpd_t *s)
{
    for (;;) {
        int fd = accept4(s->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        if (s->num_conns == s->cfg.max_conns) {
            /* logged at the 1st, 2nd, 4th, 8th... so that a flood does not flood the log */
            ++s->refused;
            event(s, RM_HTTPD_EV_REFUSED, NULL);
            if ((s->refused & (s->refused - 1)) == 0)
                rm_log_warn(s->cfg.log_tag, "%zu connections open: closing a new one (%lu so far)", s->cfg.max_conns, s->refused);
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        rm_httpd_conn_t *c = rm_calloc(1, sizeof(*c) + s->cfg.in_buf_bytes + s->cfg.max_url_bytes + 1);
        c->server = s;
        c->fd = fd;
        c->url = c->in + s->cfg.in_buf_bytes;
        c->state = CONN_READING;
        if (s->cfg.tls_ctx != NULL) {
            c->ssl = SSL_new(s->cfg.tls_ctx(s->cfg.arg));
            if (c->ssl == NULL || SSL_set_fd(c->ssl, fd) != 1) {
                ERR_clear_error();
                conn_free(c);
                continue;
            }
            c->state = CONN_HANDSHAKE;
        }
        c->deadline_ms = rm_now_ms() + s->cfg.read_timeout_ms;
        http_parser_init(&c->parser, HTTP_REQUEST);
        c->parser.data = c;
        s->conns[s->num_conns++] = c;
        /* a TLS server speaks second, but the ClientHello is often there already */
        if (c->ssl != NULL && conn_progress(c) != 0) {
            conn_free(c);
            --s->num_conns;
        }
    }
}

static void *
run(void *arg)
{
    rm_httpd_t *s = arg;
    struct pollfd *fds = rm_calloc(s->cfg.max_conns + 2, sizeof(*fds));
    for (;;) {
        uint64_t now = rm_now_ms(), next = now + POLL_MAX_MS;
        if (s->cfg.tick != NULL) {
            uint64_t t = s->cfg.tick(s->cfg.arg, now);
            if (t < next)
                next = t;
        }
        /* expired connections */
        for (size_t i = 0; i < s->num_conns;) {
            rm_httpd_conn_t *c = s->conns[i];
            if (c->deadline_ms <= now) {
                event(s,
                      c->state == CONN_HANDSHAKE ? RM_HTTPD_EV_HANDSHAKE_TIMEOUT
                      : c->state == CONN_WRITING ? RM_HTTPD_EV_RESPONSE_TIMEOUT
                                                 : RM_HTTPD_EV_REQUEST_TIMEOUT,
                      NULL);
                conn_free(c);
                s->conns[i] = s->conns[--s->num_conns];
                continue;
            }
            ++i;
        }
        fds[0] = (struct pollfd){.fd = s->wake[0], .events = POLLIN};
        fds[1] = (struct pollfd){.fd = s->listen_fd, .events = POLLIN};
        for (size_t i = 0; i != s->num_conns; ++i) {
            fds[i + 2] = (struct pollfd){.fd = s->conns[i]->fd, .events = s->conns[i]->want_write ? POLLOUT : POLLIN};
            if (s->conns[i]->deadline_ms < next)
                next = s->conns[i]->deadline_ms;
        }
        size_t n = s->num_conns;
        int r = poll(fds, n + 2, next <= now ? 0 : (int)(next - now));
        if (r < 0 && errno != EINTR) {
            rm_log_error(s->cfg.log_tag, "poll: %s", strerror(errno));
            break;
        }
        if (r <= 0)
            continue;
        if (fds[0].revents != 0)
            break;
        /* connections first (the array is as polled), then new ones */
        for (size_t i = n; i-- > 0;) {
            if (fds[i + 2].revents == 0)
                continue;
            if (conn_progress(s->conns[i]) != 0) {
                conn_free(s->conns[i]);
                s->conns[i] = s->conns[--s->num_conns];
            }
        }
        if (fds[1].revents != 0)
            accept_conns(s);
    }
    for (size_t i = 0; i != s->num_conns; ++i)
        conn_free(s->conns[i]);
    s->num_conns = 0;
    free(fds);
    return NULL;
}

/* ---------------------------------------------------------------------------------- lifecycle */

rm_httpd_t *
rm_httpd_create(const rm_httpd_config_t *cfg, char *err, size_t errsz)
{
    rm_httpd_t *s = rm_calloc(1, sizeof(*s));
    const char *why;
    if (rm_parse_ip_port(cfg->listen, &s->addr, &s->addr_len, &why) != 0) {
        snprintf(err, errsz, "%s %s: %s (write ADDR:PORT with an IP address, e.g. %s)", cfg->listen_flag, cfg->listen, why,
                 cfg->listen_example);
        free(s);
        return NULL;
    }
    s->cfg = *cfg;
    s->listen_fd = -1;
    s->wake[0] = s->wake[1] = -1;
    s->conns = rm_calloc(cfg->max_conns, sizeof(*s->conns));
    return s;
}

int
rm_httpd_start(rm_httpd_t *s, char *err, size_t errsz)
{
    s->listen_fd = socket(s->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (s->listen_fd < 0 || setsockopt(s->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(s->listen_fd, (struct sockaddr *)&s->addr, s->addr_len) != 0 || listen(s->listen_fd, s->cfg.backlog) != 0) {
        snprintf(err, errsz, "%s %s: %s", s->cfg.listen_flag, s->cfg.listen, strerror(errno));
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t sslen = sizeof(ss);
    getsockname(s->listen_fd, (struct sockaddr *)&ss, &sslen);
    s->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
    if (pipe2(s->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        snprintf(err, errsz, "pipe: %s", strerror(errno));
        return -1;
    }
    if (pthread_create(&s->thread, NULL, run, s) != 0) {
        snprintf(err, errsz, "cannot start %s", s->cfg.thread_name);
        return -1;
    }
    s->started = 1;
    return 0;
}

int
rm_httpd_port(const rm_httpd_t *s)
{
    return s->port;
}

void
rm_httpd_destroy(rm_httpd_t *s)
{
    if (s == NULL)
        return;
    if (s->started) {
        ssize_t r;
        do
            r = write(s->wake[1], "x", 1);
        while (r < 0 && errno == EINTR);
        pthread_join(s->thread, NULL);
    }
    if (s->listen_fd >= 0)
        close(s->listen_fd);
    if (s->wake[0] >= 0) {
        close(s->wake[0]);
        close(s->wake[1]);
    }
    free(s->conns);
    free(s);
}
