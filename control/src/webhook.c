#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "cp_metrics.h"
#include "httpd.h"
#include "webhook.h"

#define LOG "webhook"
#define IN_BUF_BYTES 16384
#define MAX_URL_BYTES 2048
#define RETRY_CERT_MS 10000

struct st_rm_webhook_t {
    const rm_inject_config_t *config;
    rm_ca_t *ca;
    char **dns_names;
    size_t num_dns_names;
    rm_httpd_t *httpd;
    SSL_CTX *ctx;
    uint64_t renew_at_ms;
    unsigned long served;
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

/* The label of inject.c's reason code for not injecting (remora_control_webhook_skips_total). */
static rm_cp_skip_reason_t
skip_reason(rm_inject_skip_t skip)
{
    switch (skip) {
    case RM_INJECT_SKIP_DISABLED:
        return RM_CP_SKIP_DISABLED;
    case RM_INJECT_SKIP_ALREADY_INJECTED:
        return RM_CP_SKIP_ALREADY_INJECTED;
    case RM_INJECT_SKIP_HOST_NETWORK:
        return RM_CP_SKIP_HOST_NETWORK;
    case RM_INJECT_SKIP_NONE:
        break;
    }
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
        rm_inject_skip_t skip;
        rm_inject_result_t r = rm_inject_pod_why(cfg, pod, &patch, warnings, reason, sizeof(reason), &skip);
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
            rm_cp_metrics_review(RM_CP_REVIEW_SKIPPED, skip_reason(skip));
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
        rm_httpd_tls_error(why, sizeof(why));
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

static void
error_response(rm_httpd_conn_t *c, int status, const char *msg, unsigned flags)
{
    char body[512];
    snprintf(body, sizeof(body), "%s\n", msg);
    rm_httpd_respond(c, status, "text/plain; charset=utf-8", body, strlen(body), flags, NULL);
}

static void
text_response(rm_httpd_conn_t *c, int status, const char *text, const char *extra_headers)
{
    rm_httpd_respond(c, status, "text/plain; charset=utf-8", text, strlen(text), 0, extra_headers);
}

/* A request, whole or refused by a bound or the parser: the response to send. */
static void
handle_request(void *arg, rm_httpd_conn_t *c, const rm_httpd_request_t *req)
{
    rm_webhook_t *wh = arg;
    if (req->error != RM_HTTPD_OK) {
        if (req->error == RM_HTTPD_INPUT_FULL) {
            rm_cp_metrics_webhook_error(RM_CP_WEBHOOK_MALFORMED_HTTP);
            error_response(c, 400, "malformed HTTP/1.1 request", 0);
            return;
        }
        char msg[256];
        int too_large = req->error == RM_HTTPD_BODY_TOO_LARGE;
        if (too_large)
            snprintf(msg, sizeof(msg), "the request body is larger than %u bytes", RM_WEBHOOK_MAX_BODY_BYTES);
        else
            snprintf(msg, sizeof(msg), "malformed HTTP/1.1 request: %s", req->error_text != NULL ? req->error_text : "?");
        rm_cp_metrics_webhook_error(too_large ? RM_CP_WEBHOOK_BODY_TOO_LARGE : RM_CP_WEBHOOK_MALFORMED_HTTP);
        error_response(c, too_large ? 413 : 400, msg, 0);
        rm_log_warn(LOG, "%s", msg);
        return;
    }
    size_t plen = strcspn(req->url, "?"); /* the API server appends ?timeout=10s */
    const char *ctype = req->content_type;
    if (req->url_too_long) {
        rm_cp_metrics_webhook_error(RM_CP_WEBHOOK_MALFORMED_HTTP);
        error_response(c, 400, "the request target is too long", RM_HTTPD_CLOSE);
    } else if (plen == 8 && memcmp(req->url, "/healthz", 8) == 0) {
        if (req->method != RM_HTTPD_GET)
            text_response(c, 405, "use GET\n", "Allow: GET\r\n");
        else
            text_response(c, 200, "ok\n", NULL);
    } else if (plen != 7 || memcmp(req->url, "/inject", 7) != 0) {
        rm_cp_metrics_webhook_error(RM_CP_WEBHOOK_NOT_FOUND);
        error_response(c, 404, "not found: the webhook serves POST /inject and GET /healthz", 0);
    } else if (req->method != RM_HTTPD_POST) {
        rm_cp_metrics_webhook_error(RM_CP_WEBHOOK_BAD_METHOD);
        text_response(c, 405, "use POST with an AdmissionReview\n", "Allow: POST\r\n");
    } else if (req->content_type_len < 16 || strncasecmp(ctype, "application/json", 16) != 0 ||
               (ctype[16] != '\0' && ctype[16] != ';' && ctype[16] != ' ')) {
        rm_cp_metrics_webhook_error(RM_CP_WEBHOOK_BAD_CONTENT_TYPE);
        error_response(c, 415, "Content-Type must be application/json", 0);
    } else {
        int status;
        char line[800];
        char *body = rm_webhook_review(wh->config, req->body != NULL ? req->body : "", req->body_len, &status, line, sizeof(line));
        if (status == 200) {
            rm_log_info(LOG, "%s", line);
            rm_httpd_respond(c, 200, "application/json", body, strlen(body), 0, NULL);
        } else {
            rm_log_warn(LOG, "bad request: %.*s", (int)strcspn(body, "\n"), body); /* one line */
            text_response(c, status, body, NULL);
        }
        free(body);
    }
    ++wh->served;
}

static void
on_event(void *arg, rm_httpd_event_t ev, const char *detail)
{
    (void)arg;
    switch (ev) {
    case RM_HTTPD_EV_REFUSED:
        rm_cp_metrics_webhook_error(RM_CP_WEBHOOK_CONN_REFUSED);
        break;
    case RM_HTTPD_EV_TLS_FAILED:
        rm_log_debug(LOG, "TLS handshake failed: %s", detail);
        rm_cp_metrics_webhook_error(RM_CP_WEBHOOK_TLS_FAILED);
        break;
    case RM_HTTPD_EV_HANDSHAKE_TIMEOUT:
        rm_cp_metrics_webhook_error(RM_CP_WEBHOOK_TLS_FAILED);
        rm_log_debug(LOG, "closing a connection: %s timed out", "the TLS handshake");
        break;
    case RM_HTTPD_EV_RESPONSE_TIMEOUT:
        rm_log_debug(LOG, "closing a connection: %s timed out", "sending the response");
        break;
    case RM_HTTPD_EV_REQUEST_TIMEOUT:
        rm_log_debug(LOG, "closing a connection: %s timed out", "the request");
        break;
    }
}

/* Renews the certificate when it is due; the loop comes back by the next renewal. */
static uint64_t
tick(void *arg, uint64_t now)
{
    rm_webhook_t *wh = arg;
    if (now >= wh->renew_at_ms) {
        char err[512];
        if (renew_cert(wh, err, sizeof(err)) != 0) {
            rm_log_error(LOG, "%s; retrying in %u s", err, RETRY_CERT_MS / 1000);
            wh->renew_at_ms = now + RETRY_CERT_MS;
        }
    }
    return wh->renew_at_ms;
}

static SSL_CTX *
tls_ctx(void *arg)
{
    return ((rm_webhook_t *)arg)->ctx;
}

/* ---------------------------------------------------------------------------------- lifecycle */

rm_webhook_t *
rm_webhook_start(const rm_webhook_options_t *opts, char *err, size_t errsz)
{
    rm_webhook_t *wh = rm_calloc(1, sizeof(*wh));
    rm_httpd_config_t cfg = {
        .listen = opts->listen,
        .listen_flag = "--webhook-listen",
        .listen_example = "0.0.0.0:15017",
        .log_tag = LOG,
        .thread_name = "the webhook's thread",
        .max_conns = RM_WEBHOOK_MAX_CONNS,
        .backlog = 128,
        .in_buf_bytes = IN_BUF_BYTES,
        .max_url_bytes = MAX_URL_BYTES,
        .max_head_bytes = 0, /* http_parser's 80 KiB */
        .max_body_bytes = RM_WEBHOOK_MAX_BODY_BYTES,
        .read_timeout_ms = RM_WEBHOOK_READ_TIMEOUT_MS,
        .idle_timeout_ms = RM_WEBHOOK_IDLE_TIMEOUT_MS,
        .handler = handle_request,
        .on_event = on_event,
        .tick = tick,
        .tls_ctx = tls_ctx,
        .arg = wh,
    };
    if ((wh->httpd = rm_httpd_create(&cfg, err, errsz)) == NULL) {
        free(wh);
        return NULL;
    }
    if (opts->num_dns_names > RM_CA_MAX_SERVING_NAMES) {
        snprintf(err, errsz, "--webhook-dns: at most %u names", RM_CA_MAX_SERVING_NAMES);
        rm_httpd_destroy(wh->httpd);
        free(wh);
        return NULL;
    }
    wh->config = opts->config;
    wh->ca = opts->ca;
    wh->num_dns_names = opts->num_dns_names != 0 ? opts->num_dns_names : 1;
    wh->dns_names = rm_calloc(wh->num_dns_names, sizeof(char *));
    for (size_t i = 0; i != wh->num_dns_names; ++i)
        wh->dns_names[i] = rm_strdup(opts->num_dns_names != 0 ? opts->dns_names[i] : RM_WEBHOOK_DEFAULT_DNS_NAME);
    char inner[512];
    if (renew_cert(wh, inner, sizeof(inner)) != 0) {
        snprintf(err, errsz, "the webhook's certificate: %s", inner);
        goto Fail;
    }
    if (rm_httpd_start(wh->httpd, err, errsz) != 0)
        goto Fail;
    return wh;
Fail:
    rm_httpd_destroy(wh->httpd);
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
    return rm_httpd_port(wh->httpd);
}

void
rm_webhook_destroy(rm_webhook_t *wh)
{
    if (wh == NULL)
        return;
    rm_httpd_destroy(wh->httpd); /* joins the thread: nothing below runs concurrently */
    SSL_CTX_free(wh->ctx);
    for (size_t i = 0; i != wh->num_dns_names; ++i)
        free(wh->dns_names[i]);
    free(wh->dns_names);
    rm_log_info(LOG, "stopped after %lu requests", wh->served);
    free(wh);
}
