/*
 * The Kubernetes API client (see kube.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <curl/curl.h>
#include <jansson.h>
#include "remora/log.h"
#include "remora/rpc.h"
#include "remora/strutil.h"
#include "cp_metrics.h"
#include "kube.h"

#define LOG "kube"
#define MAX_TOKEN_BYTES 16384

struct st_rm_kube_client_t {
    char *url, *token_file, *ca_file;
    CURL *easy;
    CURLM *multi;
    rm_kube_watch_t *watches;
};

struct st_rm_kube_watch_t {
    rm_kube_client_t *client;
    CURL *easy;
    struct curl_slist *headers;
    rm_kube_event_cb on_event;
    rm_kube_end_cb on_end;
    void *ctx;
    char *line;
    size_t line_len, line_cap;
    int stopped, broken;
    char why[256];
    rm_kube_watch_t *next, **prev;
};

typedef struct st_body_t {
    char *data;
    size_t len, cap;
    int too_big;
} body_t;

static int curl_inited;

static char *
read_token(const rm_kube_client_t *c, char *err, size_t errsz)
{
    char why[256];
    char *t = rm_read_file(c->token_file, MAX_TOKEN_BYTES, why, sizeof(why));
    if (t == NULL) {
        snprintf(err, errsz, "the service account token %s", why);
        return NULL;
    }
    rm_trim_space(t);
    if (t[0] == '\0') {
        snprintf(err, errsz, "the service account token %s is empty", c->token_file);
        free(t);
        return NULL;
    }
    return t;
}

rm_kube_client_t *
rm_kube_client_create(const rm_kube_config_t *cfg, char *err, size_t errsz)
{
    char url[512];
    if (cfg->api_url != NULL) {
        snprintf(url, sizeof(url), "%s", cfg->api_url);
    } else {
        const char *host = getenv("KUBERNETES_SERVICE_HOST"), *port = getenv("KUBERNETES_SERVICE_PORT");
        if (host == NULL || host[0] == '\0') {
            snprintf(err, errsz, "not running in a Kubernetes pod (KUBERNETES_SERVICE_HOST is not set); give --kube-api URL");
            return NULL;
        }
        /* an IPv6 service host needs brackets in a URL */
        snprintf(url, sizeof(url), strchr(host, ':') != NULL ? "https://[%s]:%s" : "https://%s:%s", host,
                 port != NULL && port[0] != '\0' ? port : "443");
    }
    size_t n = strlen(url);
    while (n != 0 && url[n - 1] == '/')
        url[--n] = '\0';
    if (strncmp(url, "https://", 8) != 0 && strncmp(url, "http://", 7) != 0) {
        snprintf(err, errsz, "the API server URL '%s' must start with https:// (or http:// for tests)", url);
        return NULL;
    }
    if (!curl_inited) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        curl_inited = 1;
    }
    rm_kube_client_t *c = rm_calloc(1, sizeof(*c));
    c->url = rm_strdup(url);
    c->token_file = rm_strdup(cfg->token_file != NULL ? cfg->token_file : RM_KUBE_SA_DIR "/token");
    c->ca_file = rm_strdup(cfg->ca_file != NULL ? cfg->ca_file : RM_KUBE_SA_DIR "/ca.crt");
    char *t = read_token(c, err, errsz);
    if (t == NULL) {
        rm_kube_client_destroy(c);
        return NULL;
    }
    free(t);
    FILE *f = fopen(c->ca_file, "r");
    if (f == NULL && strncmp(url, "https://", 8) == 0) {
        snprintf(err, errsz, "the cluster CA %s cannot be read", c->ca_file);
        rm_kube_client_destroy(c);
        return NULL;
    }
    if (f != NULL)
        fclose(f);
    c->easy = curl_easy_init();
    c->multi = curl_multi_init();
    if (c->easy == NULL || c->multi == NULL)
        rm_fatal("libcurl: cannot create handles");
    return c;
}

void
rm_kube_client_destroy(rm_kube_client_t *c)
{
    if (c == NULL)
        return;
    while (c->watches != NULL)
        rm_kube_watch_cancel(c->watches);
    if (c->easy != NULL)
        curl_easy_cleanup(c->easy);
    if (c->multi != NULL)
        curl_multi_cleanup(c->multi);
    free(c->url);
    free(c->token_file);
    free(c->ca_file);
    free(c);
}

const char *
rm_kube_client_url(const rm_kube_client_t *c)
{
    return c->url;
}

const char *
rm_kube_escape(const char *s, char *buf, size_t bufsz)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (; *s != '\0' && o + 4 < bufsz; ++s) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' ||
            ch == '_' || ch == '~') {
            buf[o++] = (char)ch;
        } else {
            buf[o++] = '%';
            buf[o++] = hex[ch >> 4];
            buf[o++] = hex[ch & 15];
        }
    }
    buf[o] = '\0';
    return buf;
}

/* The headers of every request: the bearer token (read now) and JSON. NULL with `err` when the token cannot be read. */
static struct curl_slist *
make_headers(rm_kube_client_t *c, const char *content_type, char *err, size_t errsz)
{
    char *token = read_token(c, err, errsz);
    if (token == NULL)
        return NULL;
    size_t len = strlen(token) + 32;
    char *auth = rm_malloc(len);
    snprintf(auth, len, "Authorization: Bearer %s", token);
    free(token);
    struct curl_slist *h = curl_slist_append(NULL, auth);
    free(auth);
    h = curl_slist_append(h, "Accept: application/json");
    if (content_type != NULL) {
        char ct[128];
        snprintf(ct, sizeof(ct), "Content-Type: %s", content_type);
        h = curl_slist_append(h, ct);
    }
    if (h == NULL)
        rm_fatal("libcurl: out of memory");
    return h;
}

static void
setup(rm_kube_client_t *c, CURL *e, const char *path, struct curl_slist *headers)
{
    size_t len = strlen(c->url) + strlen(path) + 1;
    char *url = rm_malloc(len);
    snprintf(url, len, "%s%s", c->url, path);
    curl_easy_setopt(e, CURLOPT_URL, url);
    free(url);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(e, CURLOPT_CAINFO, c->ca_file);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    /* the API server is named by an address or a cluster name: never a proxy from the environment */
    curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
}

static size_t
on_body(char *p, size_t size, size_t n, void *arg)
{
    body_t *b = arg;
    size_t len = size * n;
    if (b->len + len > RM_KUBE_MAX_RESPONSE_BYTES) {
        b->too_big = 1;
        return 0;
    }
    if (b->len + len + 1 > b->cap) {
        b->cap = (b->len + len + 1) * 2;
        b->data = rm_realloc(b->data, b->cap);
    }
    memcpy(b->data + b->len, p, len);
    b->len += len;
    b->data[b->len] = '\0';
    return len;
}

long
rm_kube_request(rm_kube_client_t *c, const char *method, const char *path, const char *content_type, const char *body,
                json_t **resp, char *err, size_t errsz)
{
    *resp = NULL;
    struct curl_slist *headers =
        make_headers(c, body != NULL ? (content_type != NULL ? content_type : "application/json") : NULL, err, errsz);
    if (headers == NULL)
        return -1;
    CURL *e = c->easy;
    curl_easy_reset(e);
    setup(c, e, path, headers);
    body_t b = {0};
    curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, method);
    if (body != NULL) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(body));
    } else if (strcmp(method, "GET") == 0) {
        curl_easy_setopt(e, CURLOPT_HTTPGET, 1L);
    }
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)RM_KUBE_REQUEST_TIMEOUT_MS);
    CURLcode rc = curl_easy_perform(e);
    curl_slist_free_all(headers);
    long status = -1;
    if (b.too_big) {
        snprintf(err, errsz, "%s %s: the answer is larger than %d bytes", method, path, RM_KUBE_MAX_RESPONSE_BYTES);
    } else if (rc != CURLE_OK) {
        snprintf(err, errsz, "%s %s%s: %s", method, c->url, path, curl_easy_strerror(rc));
    } else {
        curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &status);
        if (b.len != 0) {
            json_error_t je;
            *resp = json_loadb(b.data, b.len, 0, &je);
        }
        if (status >= 300) {
            const char *msg = *resp != NULL ? json_string_value(json_object_get(*resp, "message")) : NULL;
            snprintf(err, errsz, "%s %s: HTTP %ld%s%.300s", method, path, status, msg != NULL ? ": " : "", msg != NULL ? msg : "");
        }
    }
    free(b.data);
    rm_cp_metrics_kube_request(method, status);
    return status;
}

/* ---------------------------------------------------------------------------------------- watches */

static void
watch_line(rm_kube_watch_t *w, const char *p, size_t len)
{
    if (len == 0 || w->stopped)
        return;
    json_error_t je;
    json_t *ev = json_loadb(p, len, 0, &je);
    if (ev == NULL || !json_is_object(ev)) {
        w->broken = 1;
        snprintf(w->why, sizeof(w->why), "a watch event does not parse as a JSON object: %s", je.text);
        json_decref(ev);
        return;
    }
    if (w->on_event(w->ctx, ev) != 0)
        w->stopped = 1;
    json_decref(ev);
}

static size_t
on_watch_data(char *p, size_t size, size_t n, void *arg)
{
    rm_kube_watch_t *w = arg;
    size_t len = size * n;
    if (w->stopped || w->broken)
        return 0;
    const char *end = p + len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t chunk = nl != NULL ? (size_t)(nl - p) : (size_t)(end - p);
        if (w->line_len + chunk > RM_KUBE_MAX_LINE_BYTES) {
            w->broken = 1;
            snprintf(w->why, sizeof(w->why), "a watch event is larger than %d bytes", RM_KUBE_MAX_LINE_BYTES);
            return 0;
        }
        if (nl != NULL && w->line_len == 0) {
            watch_line(w, p, chunk);
        } else {
            if (w->line_len + chunk + 1 > w->line_cap) {
                w->line_cap = (w->line_len + chunk + 1) * 2;
                w->line = rm_realloc(w->line, w->line_cap);
            }
            memcpy(w->line + w->line_len, p, chunk);
            w->line_len += chunk;
            if (nl != NULL) {
                watch_line(w, w->line, w->line_len);
                w->line_len = 0;
            }
        }
        if (w->stopped || w->broken)
            return 0;
        p += chunk + (nl != NULL);
    }
    return len;
}

rm_kube_watch_t *
rm_kube_watch_start(rm_kube_client_t *c, const char *path, rm_kube_event_cb on_event, rm_kube_end_cb on_end, void *ctx)
{
    rm_kube_watch_t *w = rm_calloc(1, sizeof(*w));
    char err[256];
    w->client = c;
    w->on_event = on_event;
    w->on_end = on_end;
    w->ctx = ctx;
    if ((w->headers = make_headers(c, NULL, err, sizeof(err))) == NULL) {
        /* reported as a broken watch at the next poll, so that the caller's backoff applies */
        w->broken = 1;
        snprintf(w->why, sizeof(w->why), "%s", err);
    }
    w->easy = curl_easy_init();
    if (w->easy == NULL)
        rm_fatal("libcurl: cannot create a handle");
    setup(c, w->easy, path, w->headers);
    curl_easy_setopt(w->easy, CURLOPT_HTTPGET, 1L);
    curl_easy_setopt(w->easy, CURLOPT_WRITEFUNCTION, on_watch_data);
    curl_easy_setopt(w->easy, CURLOPT_WRITEDATA, w);
    curl_easy_setopt(w->easy, CURLOPT_PRIVATE, w);
    /* a silent connection for this long is dead: the server sends bookmarks about every minute */
    curl_easy_setopt(w->easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(w->easy, CURLOPT_LOW_SPEED_TIME, 120L);
    curl_easy_setopt(w->easy, CURLOPT_TCP_KEEPALIVE, 1L);
    if (!w->broken)
        curl_multi_add_handle(c->multi, w->easy);
    w->next = c->watches;
    if (w->next != NULL)
        w->next->prev = &w->next;
    w->prev = &c->watches;
    c->watches = w;
    return w;
}

static void
watch_free(rm_kube_watch_t *w)
{
    *w->prev = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    curl_multi_remove_handle(w->client->multi, w->easy);
    curl_easy_cleanup(w->easy);
    curl_slist_free_all(w->headers);
    free(w->line);
    free(w);
}

void
rm_kube_watch_cancel(rm_kube_watch_t *w)
{
    watch_free(w);
}

static void
watch_finish(rm_kube_watch_t *w, CURLcode rc)
{
    long status = 0;
    curl_easy_getinfo(w->easy, CURLINFO_RESPONSE_CODE, &status);
    rm_kube_watch_end_t end;
    if (w->stopped) {
        end = RM_KUBE_WATCH_STOPPED;
    } else if (w->broken) {
        end = RM_KUBE_WATCH_BROKEN;
    } else if (rc != CURLE_OK) {
        end = RM_KUBE_WATCH_BROKEN;
        snprintf(w->why, sizeof(w->why), "%s", curl_easy_strerror(rc));
    } else if (status != 200) {
        end = RM_KUBE_WATCH_BROKEN;
        snprintf(w->why, sizeof(w->why), "HTTP %ld", status);
    } else {
        end = RM_KUBE_WATCH_CLEAN;
    }
    rm_kube_end_cb cb = w->on_end;
    void *ctx = w->ctx;
    char why[256];
    snprintf(why, sizeof(why), "%s", w->why);
    watch_free(w);
    cb(ctx, end, status, why);
}

void
rm_kube_poll(rm_kube_client_t *c, int timeout_ms)
{
    /* watches that failed before starting (no token) end here, in the poll, like any other */
    for (rm_kube_watch_t *w = c->watches, *next; w != NULL; w = next) {
        next = w->next;
        if (w->broken && w->line_len == 0 && w->headers == NULL) {
            watch_finish(w, CURLE_OK);
            return;
        }
    }
    int running;
    curl_multi_perform(c->multi, &running);
    curl_multi_poll(c->multi, NULL, 0, timeout_ms, NULL);
    curl_multi_perform(c->multi, &running);
    CURLMsg *m;
    int left;
    while ((m = curl_multi_info_read(c->multi, &left)) != NULL) {
        if (m->msg != CURLMSG_DONE)
            continue;
        rm_kube_watch_t *w = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&w);
        CURLcode rc = m->data.result;
        /* the message points into the handle, which watch_finish frees: read everything first */
        watch_finish(w, rc);
    }
}
