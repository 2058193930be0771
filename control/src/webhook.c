#define _GNU_SOURCE /* accept4 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>
#include <sys/socket.h>
#include <http_parser.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "cp_metrics.h"
#include "webhook.h"

#define LOG "webhook"
#define IN_BUF_BYTES 16384
#define MAX_URL_BYTES 2048
#define MAX_CTYPE_BYTES 256
#define RETRY_CERT_MS 10000
#define POLL_MAX_MS 1000

typedef enum en_conn_state_t {
    CONN_HANDSHAKE,
    CONN_READING,
    CONN_WRITING,
} conn_state_t;

typedef struct st_conn_t {
    int fd;
    SSL *ssl;
    conn_state_t state;
    /* the last SSL call wants the socket writable (else readable) */
    int want_write;
    uint64_t deadline_ms;
    http_parser parser;
    /* unparsed input (what follows a complete request waits here while its response is written) */
    char in[IN_BUF_BYTES];
    size_t in_len;
    char url[MAX_URL_BYTES + 1];
    size_t url_len;
    int url_too_long;
    char field[32];
    size_t field_len;
    int in_value, field_is_ctype;
    char ctype[MAX_CTYPE_BYTES + 1];
    size_t ctype_len;
    char *body;
    size_t body_len, body_cap;
    int message_complete;
    /* set by a callback that refuses the request (413...) */
    int error_status;
    char *out;
    size_t out_len, out_off;
    int close_after;
} conn_t;

struct st_rm_webhook_t {
    const rm_inject_config_t *config;
    rm_ca_t *ca;
    char **dns_names;
    size_t num_dns_names;
    int listen_fd, port;
    int wake[2];
    pthread_t thread;
    SSL_CTX *ctx;
    uint64_t renew_at_ms;
    conn_t *conns[RM_WEBHOOK_MAX_CONNS];
    size_t num_conns;
    unsigned long served, refused;
};

/* ------------------------------------------------------------------------------ the review */

static char *text_status(int *status, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static char *
text_status(int *status, int code, const char *fmt, ...)
{
    char buf[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf) - 1, fmt, ap);
    va_end(ap);
    strcat(buf, "\n");
    *status = code;
    return rm_strdup(buf);
}

/* The class of inject.c's reason for not injecting (remora_control_webhook_skips_total): the reasons are
 * sentences made for people, these are their fixed beginnings. */
static rm_cp_skip_reason_t
skip_reason(const char *reason)
{
    static const struct {
        const char *prefix;
        rm_cp_skip_reason_t reason;
    } classes[] = {
        {"pod annotation " RM_INJECT_ANNOTATION_INJECT ": disabled", RM_CP_SKIP_DISABLED},
        {"already injected", RM_CP_SKIP_ALREADY_INJECTED},
        {"hostNetwork", RM_CP_SKIP_HOST_NETWORK},
    };
    for (size_t i = 0; i != sizeof(classes) / sizeof(classes[0]); ++i)
        if (strncmp(reason, classes[i].prefix, strlen(classes[i].prefix)) == 0)
            return classes[i].reason;
    return RM_CP_SKIP_OTHER;
}

static char *
base64(const char *s, size_t len)
{
    char *out = rm_malloc(4 * ((len + 2) / 3) + 1);
    EVP_EncodeBlock((unsigned char *)out, (const unsigned char *)s, (int)len);
    return out;
}

char *
rm_webhook_review(const rm_inject_config_t *cfg, const char *body, size_t len, int *status, char *log_line, size_t log_linesz)
{
    char dummy[8];
    if (log_line == NULL)
        log_line = dummy, log_linesz = sizeof(dummy);
    log_line[0] = '\0';
    json_error_t jerr;
    json_t *review = json_loadb(body, len, JSON_REJECT_DUPLICATES, &jerr);
    if (review == NULL) {
        rm_cp_metrics_webhook_error(RM_CP_WEBHOOK_BAD_REVIEW);
        return text_status(status, 400, "malformed JSON at line %d, column %d: %s", jerr.line, jerr.column, jerr.text);
    }
    const char *api = json_string_value(json_object_get(review, "apiVersion"));
    const char *kind = json_string_value(json_object_get(review, "kind"));
    json_t *req = json_object_get(review, "request");
    const char *uid = json_string_value(json_object_get(req, "uid"));
    char *resp_body = NULL;
    if (!json_is_object(review) || kind == NULL || strcmp(kind, "AdmissionReview") != 0 || api == NULL ||
        strcmp(api, "admission.k8s.io/v1") != 0) {
        resp_body = text_status(status, 400, "not an AdmissionReview (apiVersion admission.k8s.io/v1, kind AdmissionReview)");
        rm_cp_metrics_webhook_error(RM_CP_WEBHOOK_BAD_REVIEW);
        goto Exit;
    }
    if (!json_is_object(req) || uid == NULL || uid[0] == '\0') {
        resp_body = text_status(status, 400, "the AdmissionReview has no request with a uid");
        rm_cp_metrics_webhook_error(RM_CP_WEBHOOK_BAD_REVIEW);
        goto Exit;
    }
    json_t *pod = json_object_get(req, "object");
    const char *op = json_string_value(json_object_get(req, "operation"));
    const char *rkind = json_string_value(json_object_get(json_object_get(req, "kind"), "kind"));
    const char *ns = json_string_value(json_object_get(req, "namespace"));
    json_t *resp = json_pack("{s:s,s:b}", "uid", uid, "allowed", 1);
    if (rkind != NULL && strcmp(rkind, "Pod") != 0) {
        snprintf(log_line, log_linesz, "%.64s: not a Pod, allowed unchanged", rkind);
        rm_cp_metrics_review(RM_CP_REVIEW_SKIPPED, RM_CP_SKIP_NOT_POD);
    } else if (op != NULL && strcmp(op, "CREATE") != 0) {
        snprintf(log_line, log_linesz, "%.32s of a Pod: allowed unchanged (injection happens at CREATE)", op);
        rm_cp_metrics_review(RM_CP_REVIEW_SKIPPED, RM_CP_SKIP_NOT_CREATE);
    } else if (!json_is_object(pod)) {
        json_decref(resp);
        resp_body = text_status(status, 400, "the AdmissionReview's request has no object (the Pod)");
        rm_cp_metrics_webhook_error(RM_CP_WEBHOOK_BAD_REVIEW);
        goto Exit;
    } else {
        json_t *md = json_object_get(pod, "metadata");
        const char *name = json_string_value(json_object_get(md, "name"));
        const char *gen = json_string_value(json_object_get(md, "generateName"));
        if (ns == NULL)
            ns = json_string_value(json_object_get(md, "namespace"));
        char who[300];
        snprintf(who, sizeof(who), "pod %s/%s%s", ns != NULL ? ns : "?",
                 name != NULL  ? name
                 : gen != NULL ? gen
                               : "?",
                 name == NULL && gen != NULL ? "*" : "");
        json_t *patch = NULL, *warnings = json_array();
        char reason[600];
        rm_inject_result_t r = rm_inject_pod(cfg, pod, &patch, warnings, reason, sizeof(reason));
        if (r == RM_INJECT_PATCH) {
            char *p = json_dumps(patch, JSON_COMPACT);
            char *b64 = base64(p, strlen(p));
            json_object_set_new(resp, "patchType", json_string("JSONPatch"));
            json_object_set_new(resp, "patch", json_string(b64));
            snprintf(log_line, log_linesz, "%s: injected (%zu patch operations)", who, json_array_size(patch));
            rm_cp_metrics_review(RM_CP_REVIEW_INJECTED, RM_CP_SKIP_OTHER);
            free(b64);
            free(p);
            json_decref(patch);
        } else if (r == RM_INJECT_SKIP) {
            json_array_append_new(warnings, json_sprintf("remora: sidecar not injected: %s", reason));
            snprintf(log_line, log_linesz, "%s: not injected: %s", who, reason);
            rm_cp_metrics_review(RM_CP_REVIEW_SKIPPED, skip_reason(reason));
        } else {
            char msg[700];
            snprintf(msg, sizeof(msg), "remora: cannot inject the sidecar: %s", reason);
            json_object_set_new(resp, "allowed", json_false());
            json_object_set_new(resp, "status", json_pack("{s:i,s:s,s:s}", "code", 400, "reason", "BadRequest", "message", msg));
            snprintf(log_line, log_linesz, "%s: refused: %s", who, reason);
            rm_cp_metrics_review(RM_CP_REVIEW_REFUSED, RM_CP_SKIP_OTHER);
        }
        if (json_array_size(warnings) != 0)
            json_object_set(resp, "warnings", warnings);
        json_decref(warnings);
    }
    json_t *out = json_pack("{s:s,s:s,s:o}", "apiVersion", "admission.k8s.io/v1", "kind", "AdmissionReview", "response", resp);
    resp_body = json_dumps(out, JSON_COMPACT);
    json_decref(out);
    *status = 200;
Exit:
    json_decref(review);
    return resp_body;
}

/* ------------------------------------------------------------------------------------ TLS */

/* Only HTTP/1.1 is spoken: a client offering h2 alone goes on without ALPN. */
static int
select_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in, unsigned int inlen, void *arg)
{
    for (unsigned i = 0; i < inlen;) {
        unsigned n = in[i];
        if (i + 1 + n > inlen)
            break;
        if (n == 8 && memcmp(in + i + 1, "http/1.1", 8) == 0) {
            *out = in + i + 1;
            *outlen = 8;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + n;
    }
    return SSL_TLSEXT_ERR_NOACK;
}

static void
openssl_reason(char *buf, size_t bufsz)
{
    unsigned long e = ERR_get_error();
    if (e == 0)
        snprintf(buf, bufsz, "unknown OpenSSL error");
    else
        ERR_error_string_n(e, buf, bufsz);
    ERR_clear_error();
}

/* Issues a certificate and makes the context the next connections use. */
static int
renew_cert(rm_webhook_t *wh, char *err, size_t errsz)
{
    char *chain = NULL, *key = NULL;
    int64_t nb, na;
    if (rm_ca_issue_serving(wh->ca, (const char *const *)wh->dns_names, wh->num_dns_names, &chain, &key, &nb, &na, err, errsz) != 0)
        return -1;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    BIO *cb = BIO_new_mem_buf(chain, -1), *kb = BIO_new_mem_buf(key, -1);
    X509 *leaf = PEM_read_bio_X509(cb, NULL, NULL, NULL);
    EVP_PKEY *pkey = PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL);
    int ok = ctx != NULL && leaf != NULL && pkey != NULL && SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) == 1 &&
             SSL_CTX_use_certificate(ctx, leaf) == 1 && SSL_CTX_use_PrivateKey(ctx, pkey) == 1;
    X509 *extra;
    while (ok && (extra = PEM_read_bio_X509(cb, NULL, NULL, NULL)) != NULL) {
        if (SSL_CTX_add_extra_chain_cert(ctx, extra) != 1) {
            X509_free(extra);
            ok = 0;
        }
    }
    ERR_clear_error(); /* the end of the PEM chain */
    if (ok)
        ok = SSL_CTX_check_private_key(ctx) == 1;
    X509_free(leaf);
    EVP_PKEY_free(pkey);
    BIO_free(cb);
    BIO_free(kb);
    OPENSSL_cleanse(key, strlen(key));
    free(key);
    free(chain);
    if (!ok) {
        char why[256];
        openssl_reason(why, sizeof(why));
        snprintf(err, errsz, "cannot load the webhook's certificate: %s", why);
        SSL_CTX_free(ctx);
        return -1;
    }
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_alpn_select_cb(ctx, select_alpn, NULL);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_free(wh->ctx); /* connections hold their own reference */
    wh->ctx = ctx;
    rm_cp_metrics_cert(RM_CP_CERT_WEBHOOK, na);
    int64_t now = (int64_t)time(NULL), renew = nb + (na - nb) / 2;
    wh->renew_at_ms = rm_now_ms() + (uint64_t)(renew > now ? renew - now : 1) * 1000;
    rm_log_info(LOG, "serving certificate for %s%s issued, valid until %lld, renewed in %lld s", wh->dns_names[0],
                wh->num_dns_names > 1 ? " (and more names)" : "", (long long)na, (long long)(renew - now));
    return 0;
}

/* --------------------------------------------------------------------------------- HTTP/1.1 */

static int
on_message_begin(http_parser *p)
{
    conn_t *c = p->data;
    c->url_len = 0;
    c->url_too_long = 0;
    c->field_len = 0;
    c->in_value = 0;
    c->field_is_ctype = 0;
    c->ctype_len = 0;
    c->ctype[0] = '\0';
    free(c->body);
    c->body = NULL;
    c->body_len = c->body_cap = 0;
    c->deadline_ms = rm_now_ms() + RM_WEBHOOK_READ_TIMEOUT_MS;
    return 0;
}

static int
on_url(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    if (c->url_len + len > MAX_URL_BYTES) {
        c->url_too_long = 1;
        return 0;
    }
    memcpy(c->url + c->url_len, at, len);
    c->url_len += len;
    c->url[c->url_len] = '\0';
    return 0;
}

static int
on_header_field(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    if (c->in_value) {
        c->in_value = 0;
        c->field_len = 0;
    }
    for (size_t i = 0; i != len; ++i) {
        if (c->field_len < sizeof(c->field) - 1)
            c->field[c->field_len] = at[i];
        ++c->field_len;
    }
    return 0;
}

static int
on_header_value(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    if (!c->in_value) {
        c->in_value = 1;
        c->field_is_ctype = rm_lcstreq(c->field, c->field_len < sizeof(c->field) ? c->field_len : 0, "content-type");
    }
    if (c->field_is_ctype) {
        size_t n = c->ctype_len + len > MAX_CTYPE_BYTES ? MAX_CTYPE_BYTES - c->ctype_len : len;
        memcpy(c->ctype + c->ctype_len, at, n);
        c->ctype_len += n;
        c->ctype[c->ctype_len] = '\0';
    }
    return 0;
}

static int
on_headers_complete(http_parser *p)
{
    conn_t *c = p->data;
    if (p->content_length != ULLONG_MAX && (p->flags & F_CONTENTLENGTH) && p->content_length > RM_WEBHOOK_MAX_BODY_BYTES) {
        c->error_status = 413;
        return -1;
    }
    return 0;
}

static int
on_body(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    if (c->body_len + len > RM_WEBHOOK_MAX_BODY_BYTES) {
        c->error_status = 413;
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
    conn_t *c = p->data;
    c->message_complete = 1;
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
    default:
        return "Internal Server Error";
    }
}

static void
set_response(conn_t *c, int status, const char *ctype, const char *body, const char *extra_headers)
{
    size_t blen = strlen(body);
    char head[512];
    int n = snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s\r\n", status,
                     status_text(status), ctype, blen, c->close_after ? "Connection: close\r\n" : "",
                     extra_headers != NULL ? extra_headers : "");
    free(c->out);
    c->out = rm_malloc((size_t)n + blen);
    memcpy(c->out, head, (size_t)n);
    memcpy(c->out + n, body, blen);
    c->out_len = (size_t)n + blen;
    c->out_off = 0;
    c->state = CONN_WRITING;
    c->want_write = 1;
    c->deadline_ms = rm_now_ms() + RM_WEBHOOK_READ_TIMEOUT_MS;
}

static void
error_response(conn_t *c, int status, const char *msg)
{
    char body[512];
    snprintf(body, sizeof(body), "%s\n", msg);
    set_response(c, status, "text/plain; charset=utf-8", body, NULL);
}

/* A complete request: the response to send. */
static void
handle_request(rm_webhook_t *wh, conn_t *c)
{
    c->close_after = !http_should_keep_alive(&c->parser);
    size_t plen = strcspn(c->url, "?"); /* the API server appends ?timeout=10s */
    int method = c->parser.method;
    if (c->url_too_long) {
        c->close_after = 1;
        rm_cp_metrics_webhook_error(RM_CP_WEBHOOK_MALFORMED_HTTP);
        error_response(c, 400, "the request target is too long");
    } else if (plen == 8 && memcmp(c->url, "/healthz", 8) == 0) {
        if (method != HTTP_GET)
            set_response(c, 405, "text/plain; charset=utf-8", "use GET\n", "Allow: GET\r\n");
        else
            set_response(c, 200, "text/plain; charset=utf-8", "ok\n", NULL);
    } else if (plen != 7 || memcmp(c->url, "/inject", 7) != 0) {
        rm_cp_metrics_webhook_error(RM_CP_WEBHOOK_NOT_FOUND);
        error_response(c, 404, "not found: the webhook serves POST /inject and GET /healthz");
    } else if (method != HTTP_POST) {
        rm_cp_metrics_webhook_error(RM_CP_WEBHOOK_BAD_METHOD);
        set_response(c, 405, "text/plain; charset=utf-8", "use POST with an AdmissionReview\n", "Allow: POST\r\n");
    } else if (c->ctype_len < 16 || strncasecmp(c->ctype, "application/json", 16) != 0 ||
               (c->ctype[16] != '\0' && c->ctype[16] != ';' && c->ctype[16] != ' ')) {
        rm_cp_metrics_webhook_error(RM_CP_WEBHOOK_BAD_CONTENT_TYPE);
        error_response(c, 415, "Content-Type must be application/json");
    } else {
        int status;
        char line[800];
        char *body = rm_webhook_review(wh->config, c->body != NULL ? c->body : "", c->body_len, &status, line, sizeof(line));
        if (status == 200) {
            rm_log_info(LOG, "%s", line);
            set_response(c, 200, "application/json", body, NULL);
        } else {
            rm_log_warn(LOG, "bad request: %.*s", (int)strcspn(body, "\n"), body); /* one line */
            set_response(c, status, "text/plain; charset=utf-8", body, NULL);
        }
        free(body);
    }
    ++wh->served;
}

/* --------------------------------------------------------------------------------- connections */

static void
conn_free(conn_t *c)
{
    if (c->ssl != NULL)
        SSL_free(c->ssl);
    close(c->fd);
    free(c->body);
    free(c->out);
    free(c);
}

/* Feeds buffered input to the parser; a complete or broken request gets its response. */
static void
parse_input(rm_webhook_t *wh, conn_t *c)
{
    if (c->in_len == 0)
        return;
    size_t n = http_parser_execute(&c->parser, &parser_settings, c->in, c->in_len);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (e == HPE_PAUSED) {
        /* on_message_complete paused the parser after consuming the final byte */
        memmove(c->in, c->in + n, c->in_len - n);
        c->in_len -= n;
        http_parser_pause(&c->parser, 0);
        c->message_complete = 0;
        handle_request(wh, c);
        return;
    }
    c->in_len = 0;
    if (e != HPE_OK) {
        c->close_after = 1;
        char msg[256];
        if (c->error_status == 413)
            snprintf(msg, sizeof(msg), "the request body is larger than %u bytes", RM_WEBHOOK_MAX_BODY_BYTES);
        else
            snprintf(msg, sizeof(msg), "malformed HTTP/1.1 request: %s", http_errno_description(e));
        rm_cp_metrics_webhook_error(c->error_status == 413 ? RM_CP_WEBHOOK_BODY_TOO_LARGE : RM_CP_WEBHOOK_MALFORMED_HTTP);
        error_response(c, c->error_status == 413 ? 413 : 400, msg);
        rm_log_warn(LOG, "%s", msg);
    }
}

/* Makes whatever progress the socket allows. Returns -1 when the connection is done. */
static int
conn_progress(rm_webhook_t *wh, conn_t *c)
{
    for (;;) {
        ERR_clear_error();
        if (c->state == CONN_HANDSHAKE) {
            int r = SSL_accept(c->ssl);
            if (r == 1) {
                c->state = CONN_READING;
                c->deadline_ms = rm_now_ms() + RM_WEBHOOK_IDLE_TIMEOUT_MS;
                continue;
            }
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                c->want_write = e == SSL_ERROR_WANT_WRITE;
                return 0;
            }
            char why[256];
            openssl_reason(why, sizeof(why));
            rm_log_debug(LOG, "TLS handshake failed: %s", why);
            rm_cp_metrics_webhook_error(RM_CP_WEBHOOK_TLS_FAILED);
            return -1;
        }
        if (c->state == CONN_WRITING) {
            if (c->out_off == c->out_len) {
                if (c->close_after) {
                    SSL_shutdown(c->ssl);
                    return -1;
                }
                free(c->out);
                c->out = NULL;
                c->out_len = c->out_off = 0;
                c->state = CONN_READING;
                c->want_write = 0;
                c->deadline_ms = rm_now_ms() + RM_WEBHOOK_IDLE_TIMEOUT_MS;
                parse_input(wh, c); /* a request that came along with the last one */
                continue;
            }
            int r = SSL_write(c->ssl, c->out + c->out_off, (int)(c->out_len - c->out_off));
            if (r > 0) {
                c->out_off += (size_t)r;
                continue;
            }
            int e = SSL_get_error(c->ssl, r);
            if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
                c->want_write = e == SSL_ERROR_WANT_WRITE;
                return 0;
            }
            return -1;
        }
        /* reading */
        if (c->in_len == sizeof(c->in)) {
            /* the parser took nothing from a full buffer: it cannot, so it will not */
            c->close_after = 1;
            rm_cp_metrics_webhook_error(RM_CP_WEBHOOK_MALFORMED_HTTP);
            error_response(c, 400, "malformed HTTP/1.1 request");
            continue;
        }
        int r = SSL_read(c->ssl, c->in + c->in_len, (int)(sizeof(c->in) - c->in_len));
        if (r > 0) {
            c->in_len += (size_t)r;
            parse_input(wh, c);
            continue;
        }
        int e = SSL_get_error(c->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            c->want_write = e == SSL_ERROR_WANT_WRITE;
            return 0;
        }
        return -1; /* closed by the peer, or an error */
    }
}

static void
accept_conns(rm_webhook_t *wh)
{
    for (;;) {
        int fd = accept4(wh->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        if (wh->num_conns == RM_WEBHOOK_MAX_CONNS) {
            /* logged at the 1st, 2nd, 4th, 8th... so that a flood does not flood the log */
            ++wh->refused;
            rm_cp_metrics_webhook_error(RM_CP_WEBHOOK_CONN_REFUSED);
            if ((wh->refused & (wh->refused - 1)) == 0)
                rm_log_warn(LOG, "%u connections open: closing a new one (%lu so far)", RM_WEBHOOK_MAX_CONNS, wh->refused);
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        conn_t *c = rm_calloc(1, sizeof(*c));
        c->fd = fd;
        c->ssl = SSL_new(wh->ctx);
        if (c->ssl == NULL || SSL_set_fd(c->ssl, fd) != 1) {
            ERR_clear_error();
            conn_free(c);
            continue;
        }
        c->state = CONN_HANDSHAKE;
        c->deadline_ms = rm_now_ms() + RM_WEBHOOK_READ_TIMEOUT_MS;
        http_parser_init(&c->parser, HTTP_REQUEST);
        c->parser.data = c;
        wh->conns[wh->num_conns++] = c;
        if (conn_progress(wh, c) != 0) {
            conn_free(c);
            --wh->num_conns;
        }
    }
}

static void *
run(void *arg)
{
    rm_webhook_t *wh = arg;
    struct pollfd fds[RM_WEBHOOK_MAX_CONNS + 2];
    for (;;) {
        uint64_t now = rm_now_ms();
        if (now >= wh->renew_at_ms) {
            char err[512];
            if (renew_cert(wh, err, sizeof(err)) != 0) {
                rm_log_error(LOG, "%s; retrying in %u s", err, RETRY_CERT_MS / 1000);
                wh->renew_at_ms = now + RETRY_CERT_MS;
            }
        }
        /* expired connections */
        for (size_t i = 0; i < wh->num_conns;) {
            if (wh->conns[i]->deadline_ms <= now) {
                if (wh->conns[i]->state == CONN_HANDSHAKE)
                    rm_cp_metrics_webhook_error(RM_CP_WEBHOOK_TLS_FAILED);
                rm_log_debug(LOG, "closing a connection: %s timed out",
                             wh->conns[i]->state == CONN_HANDSHAKE ? "the TLS handshake"
                             : wh->conns[i]->state == CONN_WRITING ? "sending the response"
                                                                   : "the request");
                conn_free(wh->conns[i]);
                wh->conns[i] = wh->conns[--wh->num_conns];
                continue;
            }
            ++i;
        }
        uint64_t next = wh->renew_at_ms;
        fds[0] = (struct pollfd){.fd = wh->wake[0], .events = POLLIN};
        fds[1] = (struct pollfd){.fd = wh->listen_fd, .events = POLLIN};
        for (size_t i = 0; i != wh->num_conns; ++i) {
            fds[i + 2] = (struct pollfd){.fd = wh->conns[i]->fd, .events = wh->conns[i]->want_write ? POLLOUT : POLLIN};
            if (wh->conns[i]->deadline_ms < next)
                next = wh->conns[i]->deadline_ms;
        }
        int timeout = next <= now ? 0 : next - now > POLL_MAX_MS ? POLL_MAX_MS : (int)(next - now);
        size_t n = wh->num_conns;
        int r = poll(fds, n + 2, timeout);
        if (r < 0 && errno != EINTR) {
            rm_log_error(LOG, "poll: %s", strerror(errno));
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
            if (conn_progress(wh, wh->conns[i]) != 0) {
                conn_free(wh->conns[i]);
                wh->conns[i] = wh->conns[--wh->num_conns];
            }
        }
        if (fds[1].revents != 0)
            accept_conns(wh);
    }
    for (size_t i = 0; i != wh->num_conns; ++i)
        conn_free(wh->conns[i]);
    wh->num_conns = 0;
    return NULL;
}

/* ---------------------------------------------------------------------------------- lifecycle */

rm_webhook_t *
rm_webhook_start(const rm_webhook_options_t *opts, char *err, size_t errsz)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    const char *why;
    if (rm_parse_ip_port(opts->listen, &ss, &sslen, &why) != 0) {
        snprintf(err, errsz, "--webhook-listen %s: %s (write ADDR:PORT with an IP address, e.g. 0.0.0.0:15017)", opts->listen, why);
        return NULL;
    }
    if (opts->num_dns_names > RM_CA_MAX_SERVING_NAMES) {
        snprintf(err, errsz, "--webhook-dns: at most %u names", RM_CA_MAX_SERVING_NAMES);
        return NULL;
    }
    rm_webhook_t *wh = rm_calloc(1, sizeof(*wh));
    wh->config = opts->config;
    wh->ca = opts->ca;
    wh->listen_fd = -1;
    wh->wake[0] = wh->wake[1] = -1;
    wh->num_dns_names = opts->num_dns_names != 0 ? opts->num_dns_names : 1;
    wh->dns_names = rm_calloc(wh->num_dns_names, sizeof(char *));
    for (size_t i = 0; i != wh->num_dns_names; ++i)
        wh->dns_names[i] = rm_strdup(opts->num_dns_names != 0 ? opts->dns_names[i] : RM_WEBHOOK_DEFAULT_DNS_NAME);
    char inner[512];
    if (renew_cert(wh, inner, sizeof(inner)) != 0) {
        snprintf(err, errsz, "the webhook's certificate: %s", inner);
        goto Fail;
    }
    wh->listen_fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (wh->listen_fd < 0 || setsockopt(wh->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(wh->listen_fd, (struct sockaddr *)&ss, sslen) != 0 || listen(wh->listen_fd, 128) != 0) {
        snprintf(err, errsz, "--webhook-listen %s: %s", opts->listen, strerror(errno));
        goto Fail;
    }
    sslen = sizeof(ss);
    getsockname(wh->listen_fd, (struct sockaddr *)&ss, &sslen);
    wh->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
    if (pipe2(wh->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        snprintf(err, errsz, "pipe: %s", strerror(errno));
        goto Fail;
    }
    if (pthread_create(&wh->thread, NULL, run, wh) != 0) {
        snprintf(err, errsz, "cannot start the webhook's thread");
        goto Fail;
    }
    return wh;
Fail:
    if (wh->listen_fd >= 0)
        close(wh->listen_fd);
    if (wh->wake[0] >= 0) {
        close(wh->wake[0]);
        close(wh->wake[1]);
    }
    SSL_CTX_free(wh->ctx);
    for (size_t i = 0; i != wh->num_dns_names; ++i)
        free(wh->dns_names[i]);
    free(wh->dns_names);
    free(wh);
    return NULL;
}

int
rm_webhook_port(const rm_webhook_t *wh)
{
    return wh->port;
}

void
rm_webhook_destroy(rm_webhook_t *wh)
{
    if (wh == NULL)
        return;
    ssize_t r;
    do
        r = write(wh->wake[1], "x", 1);
    while (r < 0 && errno == EINTR);
    pthread_join(wh->thread, NULL);
    close(wh->listen_fd);
    close(wh->wake[0]);
    close(wh->wake[1]);
    SSL_CTX_free(wh->ctx);
    for (size_t i = 0; i != wh->num_dns_names; ++i)
        free(wh->dns_names[i]);
    free(wh->dns_names);
    rm_log_info(LOG, "stopped after %lu requests", wh->served);
    free(wh);
}
