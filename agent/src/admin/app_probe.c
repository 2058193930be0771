/*
 * Application probes on the health port (admin/app_probe.h). The description is read once with jansson; the HTTP/1.1
 * answer's status line is read with http_parser, the gRPC exchange goes through the health checker's one-request
 * HTTP/2 codec. Every run owns one socket and one timer on the main loop and is freed in the timer's close callback.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <http_parser.h>
#include <jansson.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "admin/app_probe.h"
#include "upstream/health_out.h"
#include "net/sockio.h"

#define PREFIX "/app-health/"
#define MAX_PATH_BYTES 256
#define MAX_HEADERS 16
#define MAX_HEADER_BYTES 1024
#define MAX_SERVICE_BYTES 512
#define MAX_TIMEOUT_MS 60000
/* an HTTP/1.1 answer's head must arrive within this many bytes */
#define MAX_RESPONSE_HEAD_BYTES 65536

typedef struct st_probe_def_t {
    char *path; /* "/app-health/<container>/<kind>" */
    int grpc;
    int https;
    uint16_t port;
    char *target;  /* httpGet: the path requested; grpc: the service name */
    char *headers; /* httpGet: extra header lines, "name: value\r\n"... */
    uint32_t timeout_ms;
} probe_def_t;

typedef struct st_run_ref_t run_ref_t;

typedef struct st_run_t {
    rm_app_probes_t *owner;
    const probe_def_t *def;
    h2o_req_t *req; /* NULL once the request went away */
    run_ref_t *ref;
    h2o_socket_t *sock;
    void *h2;
    rm_health_out_t output;
    int done;
    http_parser parser;
    int status;
    uv_timer_t timer;
    h2o_linklist_t link;
} run_t;

/* lives in the request's pool: its dispose detaches the run from a request that went away */
struct st_run_ref_t {
    run_t *run;
};

struct st_rm_app_probes_t {
    uv_loop_t *loop;
    const rm_health_h2_codec_t *h2;
    int (*serving_status)(const uint8_t *body, size_t len);
    probe_def_t *defs;
    size_t num_defs;
    h2o_linklist_t running;
    size_t num_running;
    int destroyed;
};

/* -- the description ------------------------------------------------------------------------------------------------------ */

static int
bad(char *err, size_t errlen, const char *path, const char *what)
{
    snprintf(err, errlen, "REMORA_APP_PROBES: \"%.256s\": %s", path, what);
    return -1;
}

static int
get_port(json_t *obj, uint16_t *port)
{
    json_t *p = json_object_get(obj, "port");
    json_int_t v;
    if (json_is_integer(p)) {
        v = json_integer_value(p);
    } else if (json_is_string(p)) {
        char *end;
        v = strtol(json_string_value(p), &end, 10);
        if (*end != '\0' || end == json_string_value(p))
            return -1; /* a named port: the injector resolves those to numbers */
    } else {
        return -1;
    }
    if (v < 1 || v > 65535)
        return -1;
    *port = (uint16_t)v;
    return 0;
}

static int
parse_def(probe_def_t *d, const char *path, json_t *v, char *err, size_t errlen)
{
    if (strncmp(path, PREFIX, strlen(PREFIX)) != 0 || strlen(path) > MAX_PATH_BYTES)
        return bad(err, errlen, path, "the key must be a path under /app-health/ of at most 256 bytes");
    if (!json_is_object(v))
        return bad(err, errlen, path, "must be an object with httpGet or grpc");
    d->path = rm_strdup(path);
    d->timeout_ms = 1000;
    json_t *t = json_object_get(v, "timeoutSeconds");
    if (t != NULL) {
        if (!json_is_integer(t) || json_integer_value(t) < 1 || json_integer_value(t) * 1000 > MAX_TIMEOUT_MS)
            return bad(err, errlen, path, "timeoutSeconds must be a whole number from 1 to 60");
        d->timeout_ms = (uint32_t)json_integer_value(t) * 1000;
    }
    json_t *http = json_object_get(v, "httpGet"), *grpc = json_object_get(v, "grpc");
    if ((http == NULL) == (grpc == NULL))
        return bad(err, errlen, path, "must have exactly one of httpGet and grpc");
    if (grpc != NULL) {
        d->grpc = 1;
        if (!json_is_object(grpc) || get_port(grpc, &d->port) != 0)
            return bad(err, errlen, path, "grpc.port must be a port number (1-65535)");
        json_t *svc = json_object_get(grpc, "service");
        if (svc != NULL && !json_is_string(svc) && !json_is_null(svc))
            return bad(err, errlen, path, "grpc.service must be a string");
        const char *s = json_is_string(svc) ? json_string_value(svc) : "";
        if (strlen(s) > MAX_SERVICE_BYTES)
            return bad(err, errlen, path, "grpc.service is longer than 512 bytes");
        d->target = rm_strdup(s);
        return 0;
    }
    if (!json_is_object(http) || get_port(http, &d->port) != 0)
        return bad(err, errlen, path, "httpGet.port must be a port number (1-65535)");
    json_t *p = json_object_get(http, "path"), *scheme = json_object_get(http, "scheme"),
           *hdrs = json_object_get(http, "httpHeaders");
    const char *target = json_is_string(p) ? json_string_value(p) : "/";
    if ((p != NULL && !json_is_string(p)) || target[0] != '/' || strlen(target) > 2048 || strpbrk(target, " \r\n") != NULL)
        return bad(err, errlen, path, "httpGet.path must be an absolute path without spaces, at most 2048 bytes");
    d->target = rm_strdup(target);
    if (scheme != NULL) {
        if (!json_is_string(scheme) ||
            (strcmp(json_string_value(scheme), "HTTP") != 0 && strcmp(json_string_value(scheme), "HTTPS") != 0))
            return bad(err, errlen, path, "httpGet.scheme must be HTTP or HTTPS");
        d->https = strcmp(json_string_value(scheme), "HTTPS") == 0;
    }
    char buf[MAX_HEADERS * (MAX_HEADER_BYTES + 4)];
    size_t len = 0;
    buf[0] = '\0';
    if (hdrs != NULL) {
        if (!json_is_array(hdrs) || json_array_size(hdrs) > MAX_HEADERS)
            return bad(err, errlen, path, "httpGet.httpHeaders must be a list of at most 16 {name, value}");
        size_t i;
        json_t *h;
        json_array_foreach(hdrs, i, h)
        {
            json_t *name = json_object_get(h, "name"), *value = json_object_get(h, "value");
            if (!json_is_string(name) || !json_is_string(value) || json_string_length(name) == 0 ||
                json_string_length(name) + json_string_length(value) > MAX_HEADER_BYTES ||
                strpbrk(json_string_value(name), " :\r\n") != NULL || strpbrk(json_string_value(value), "\r\n") != NULL)
                return bad(err, errlen, path, "httpGet.httpHeaders: each needs a name (a token) and a value of one line");
            len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s: %s\r\n", json_string_value(name), json_string_value(value));
        }
    }
    d->headers = rm_strdup(buf);
    return 0;
}

static void
free_defs(rm_app_probes_t *probes)
{
    for (size_t i = 0; i != probes->num_defs; ++i) {
        free(probes->defs[i].path);
        free(probes->defs[i].target);
        free(probes->defs[i].headers);
    }
    free(probes->defs);
}

rm_app_probes_t *
rm_app_probes_create(uv_loop_t *loop, const char *json, const rm_health_h2_codec_t *h2,
                     int (*serving_status)(const uint8_t *body, size_t len), char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *root = json_loads(json, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        snprintf(err, errlen, "REMORA_APP_PROBES: invalid JSON at line %d column %d: %s", jerr.line, jerr.column, jerr.text);
        return NULL;
    }
    if (!json_is_object(root) || json_object_size(root) > RM_APP_PROBES_MAX) {
        snprintf(err, errlen, "REMORA_APP_PROBES: must be an object of at most %d probes keyed by path", RM_APP_PROBES_MAX);
        json_decref(root);
        return NULL;
    }
    rm_app_probes_t *probes = rm_calloc(1, sizeof(*probes));
    probes->loop = loop;
    probes->h2 = h2;
    probes->serving_status = serving_status;
    h2o_linklist_init_anchor(&probes->running);
    probes->defs = rm_calloc(json_object_size(root) + 1, sizeof(*probes->defs));
    const char *key;
    json_t *v;
    json_object_foreach(root, key, v)
    {
        probe_def_t *d = &probes->defs[probes->num_defs++];
        if (parse_def(d, key, v, err, errlen) != 0) {
            free_defs(probes);
            free(probes);
            json_decref(root);
            return NULL;
        }
        if (d->https)
            rm_log_warn("app-probe", "%s: scheme HTTPS is not supported; the probe will answer 501", d->path);
    }
    json_decref(root);
    return probes;
}

size_t
rm_app_probes_count(const rm_app_probes_t *probes)
{
    return probes->num_defs;
}

/* -- answering ------------------------------------------------------------------------------------------------------------ */

static void
respond(h2o_req_t *req, int status, const char *text)
{
    static h2o_generator_t generator = {NULL, NULL};
    h2o_iovec_t body = h2o_strdup(&req->pool, text, SIZE_MAX);
    req->res.status = status;
    req->res.reason = status < 400 ? "OK" : status == 404 ? "Not Found" : status == 501 ? "Not Implemented" : "Service Unavailable";
    req->res.content_length = body.len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, H2O_STRLIT("text/plain; charset=utf-8"));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    h2o_start_response(req, &generator);
    if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD")))
        h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
    else
        h2o_send(req, &body, 1, H2O_SEND_STATE_FINAL);
}

static void
on_timer_closed(uv_handle_t *handle)
{
    run_t *run = handle->data;
    rm_app_probes_t *owner = run->owner;
    free(run);
    if (--owner->num_running == 0 && owner->destroyed) {
        free_defs(owner);
        free(owner);
    }
}

/* Answers (if the request is still there) and releases the run. Safe to call once per run. */
static void
finish(run_t *run, int status, const char *text)
{
    if (run->done)
        return;
    run->done = 1;
    if (run->req != NULL) {
        rm_log_debug("app-probe", "%s: %d %s", run->def->path, status, text);
        run->ref->run = NULL;
        respond(run->req, status, text);
        run->req = NULL;
    }
    if (run->sock != NULL) {
        rm_socket_close(run->sock);
        run->sock = NULL;
    }
    if (run->h2 != NULL) {
        run->owner->h2->destroy(run->h2);
        run->h2 = NULL;
    }
    rm_health_out_dispose(&run->output);
    h2o_linklist_unlink(&run->link);
    uv_timer_stop(&run->timer);
    uv_close((uv_handle_t *)&run->timer, on_timer_closed);
}

static void
on_req_dispose(void *p)
{
    run_ref_t *ref = p;
    if (ref->run != NULL) {
        ref->run->req = NULL;
        ref->run->ref = NULL;
    }
}

static void
on_timeout(uv_timer_t *timer)
{
    run_t *run = timer->data;
    char text[128];
    snprintf(text, sizeof(text), "probe timed out after %u ms\n", run->def->timeout_ms);
    finish(run, 503, text);
}

/* -- the exchange --------------------------------------------------------------------------------------------------------- */

static void flush(run_t *run);

static void
on_write(h2o_socket_t *sock, const char *err)
{
    run_t *run = sock->data;
    rm_health_out_written(&run->output);
    if (err != NULL) {
        finish(run, 503, "the application closed the connection\n");
        return;
    }
    flush(run);
}

static void
flush(run_t *run)
{
    if (rm_health_out_flush(&run->output, run->sock, run->owner->h2, run->h2, on_write) != 0)
        finish(run, 503, "HTTP/2 session error\n");
}

static int
on_headers_complete(http_parser *parser)
{
    run_t *run = parser->data;
    run->status = (int)parser->status_code;
    return 1; /* no body wanted: the status is all a probe needs */
}

static void
grpc_done(run_t *run)
{
    int status, grpc_status;
    const uint8_t *body;
    size_t body_len;
    char text[128];
    run->owner->h2->result(run->h2, &status, &grpc_status, &body, &body_len);
    if (status != 200 || grpc_status != 0) {
        snprintf(text, sizeof(text), "gRPC health check failed: HTTP status %d, grpc-status %d\n", status, grpc_status);
        finish(run, 503, text);
        return;
    }
    int serving = run->owner->serving_status(body, body_len);
    if (serving == 1) {
        finish(run, 200, "SERVING\n");
        return;
    }
    snprintf(text, sizeof(text), serving < 0 ? "malformed HealthCheckResponse\n" : "not serving (status %d)\n", serving);
    finish(run, 503, text);
}

static void
on_read(h2o_socket_t *sock, const char *err)
{
    run_t *run = sock->data;
    char text[128];
    if (!run->def->grpc) {
        static const http_parser_settings settings = {.on_headers_complete = on_headers_complete};
        size_t n = http_parser_execute(&run->parser, &settings, sock->input->bytes, sock->input->size);
        h2o_buffer_consume(&sock->input, n);
        if (run->status != 0) {
            snprintf(text, sizeof(text), "application answered %d\n", run->status);
            finish(run, run->status, text);
        } else if (HTTP_PARSER_ERRNO(&run->parser) != HPE_OK || run->parser.nread > MAX_RESPONSE_HEAD_BYTES) {
            finish(run, 503, "the application's answer is not HTTP/1.x\n");
        } else if (err != NULL) {
            finish(run, 503, "the application closed the connection before answering\n");
        }
        return;
    }
    if (sock->input->size != 0) {
        int r = run->owner->h2->recv(run->h2, sock->input->bytes, sock->input->size);
        h2o_buffer_consume(&sock->input, sock->input->size);
        if (r < 0) {
            finish(run, 503, "HTTP/2 protocol error\n");
            return;
        }
        if (r == 2) {
            finish(run, 503, "GOAWAY before the answer\n");
            return;
        }
        if (r == 1) {
            grpc_done(run);
            return;
        }
    }
    if (err != NULL) {
        finish(run, 503, "the application closed the connection before answering\n");
        return;
    }
    flush(run);
}

static void
on_connect(h2o_socket_t *sock, const char *err)
{
    run_t *run = sock->data;
    const probe_def_t *d = run->def;
    char text[256];
    if (err != NULL) {
        snprintf(text, sizeof(text), "cannot connect to 127.0.0.1:%u: %s\n", (unsigned)d->port, err);
        finish(run, 503, text);
        return;
    }
    int on = 1;
    setsockopt(h2o_socket_get_fd(sock), IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    rm_health_out_init(&run->output);
    char authority[32];
    snprintf(authority, sizeof(authority), "127.0.0.1:%u", (unsigned)d->port);
    if (!d->grpc) {
        char head[4096 + MAX_HEADERS * (MAX_HEADER_BYTES + 4)];
        int n = snprintf(head, sizeof(head),
                         "GET %s HTTP/1.1\r\nhost: %s\r\nuser-agent: kube-probe/remora\r\n%sconnection: close\r\n\r\n", d->target,
                         authority, d->headers);
        if (n < 0 || (size_t)n >= sizeof(head) || rm_health_out_append(&run->output, head, (size_t)n) != 0) {
            finish(run, 503, "request too long\n");
            return;
        }
        http_parser_init(&run->parser, HTTP_RESPONSE);
        run->parser.data = run;
    } else {
        /* HealthCheckRequest{service = 1 (string)}, gRPC-framed and uncompressed */
        uint8_t body[5 + 3 + MAX_SERVICE_BYTES];
        size_t slen = strlen(d->target), m = 0;
        uint8_t *msg = body + 5;
        if (slen != 0) {
            msg[m++] = 0x0a;
            if (slen < 0x80) {
                msg[m++] = (uint8_t)slen;
            } else {
                msg[m++] = (uint8_t)(slen | 0x80);
                msg[m++] = (uint8_t)(slen >> 7);
            }
            memcpy(msg + m, d->target, slen);
            m += slen;
        }
        body[0] = 0;
        body[1] = (uint8_t)(m >> 24);
        body[2] = (uint8_t)(m >> 16);
        body[3] = (uint8_t)(m >> 8);
        body[4] = (uint8_t)m;
        rm_health_h2_request_t req = {.method = "POST",
                                      .path = "/grpc.health.v1.Health/Check",
                                      .authority = authority,
                                      .grpc = 1,
                                      .body = body,
                                      .body_len = 5 + m};
        if (run->owner->h2 == NULL || (run->h2 = run->owner->h2->create(&req)) == NULL) {
            finish(run, 503, "HTTP/2 session could not be created\n");
            return;
        }
    }
    h2o_socket_read_start(sock, on_read);
    flush(run);
}

void
rm_app_probes_serve(rm_app_probes_t *probes, h2o_req_t *req)
{
    const probe_def_t *d = NULL;
    for (size_t i = 0; i != probes->num_defs; ++i)
        if (h2o_memis(req->path_normalized.base, req->path_normalized.len, probes->defs[i].path, strlen(probes->defs[i].path)))
            d = &probes->defs[i];
    if (d == NULL) {
        respond(req, 404, "no such application probe (REMORA_APP_PROBES)\n");
        return;
    }
    if (d->https) {
        respond(req, 501, "httpGet scheme HTTPS is not supported by the agent's probe rewrite\n");
        return;
    }
    if (probes->destroyed || probes->num_running >= RM_APP_PROBES_MAX_RUNNING) {
        respond(req, 503, "too many probes running\n");
        return;
    }
    run_t *run = rm_calloc(1, sizeof(*run));
    run->owner = probes;
    run->def = d;
    run->req = req;
    run->ref = h2o_mem_alloc_shared(&req->pool, sizeof(*run->ref), on_req_dispose);
    run->ref->run = run;
    h2o_linklist_insert(&probes->running, &run->link);
    ++probes->num_running;
    uv_timer_init(probes->loop, &run->timer);
    run->timer.data = run;
    uv_timer_start(&run->timer, on_timeout, d->timeout_ms, 0);
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(d->port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if ((run->sock = h2o_socket_connect(probes->loop, (struct sockaddr *)&sin, sizeof(sin), on_connect)) == NULL) {
        finish(run, 503, "cannot open a socket\n");
        return;
    }
    run->sock->data = run;
}

void
rm_app_probes_destroy(rm_app_probes_t *probes)
{
    if (probes == NULL || probes->destroyed)
        return;
    probes->destroyed = 1;
    while (!h2o_linklist_is_empty(&probes->running))
        finish(H2O_STRUCT_FROM_MEMBER(run_t, link, probes->running.next), 503, "shutting down\n");
    if (probes->num_running == 0) {
        free_defs(probes);
        free(probes);
    }
}
