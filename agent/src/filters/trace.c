#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "remora/log.h"
#include "filters/trace.h"
#include "obs/otlp.h"
#include "obs/stats.h"
#include "obs/trace.h"
#include "proxy/attempt.h"

/* one open CLIENT span: its attempt and when it started (pool memory) */
typedef struct st_client_span_t {
    rm_attempt_t *attempt;
    uint8_t span_id[8];
    uint64_t start_ns;
    struct st_client_span_t *next;
} client_span_t;

/* per-stream state (pool memory), only when the stream's snapshot has tracing on */
typedef struct st_trace_state_t {
    rm_trace_ctx_t in;
    uint8_t server_span_id[8];
    uint64_t start_ns;
    unsigned sampled : 1;
    /* the caller's span is our parent */
    unsigned has_parent : 1;
    /* which trace headers the request carried: they are rewritten on every attempt so that no stale
     * context passes through next to ours */
    unsigned had_traceparent : 1;
    unsigned had_b3_single : 1;
    unsigned had_b3_multi : 1;
    unsigned had_b3_sampled : 1;
    client_span_t *clients;
} trace_state_t;

static unsigned slot;

static rm_trace_str_t
find(const rm_headers_t *h, const char *name, size_t len)
{
    ssize_t i = rm_headers_find(h, name, len, 0);
    if (i < 0)
        return (rm_trace_str_t){NULL, 0};
    return (rm_trace_str_t){h->entries[i].value.base, h->entries[i].value.len};
}
#define FIND(h, lit) find((h), (lit), sizeof(lit) - 1)

static int
sample(double percent)
{
    if (percent <= 0)
        return 0;
    if (percent >= 100)
        return 1;
    /* 53 random bits as a double in [0, 100) */
    return (double)(rm_trace_random_u64() >> 11) * (100.0 / 9007199254740992.0) < percent;
}

static void
on_request_head(rm_stream_t *s)
{
    const rm_config_tracing_t *cfg = &s->config->telemetry.tracing;
    if (!cfg->enabled)
        return;
    trace_state_t *t = h2o_mem_alloc_pool(&s->pool, sizeof(*t));
    memset(t, 0, sizeof(*t));
    const rm_headers_t *h = &s->req.headers;
    rm_trace_carrier_t c = {
        .traceparent = FIND(h, "traceparent"),
        .tracestate = FIND(h, "tracestate"),
        .b3 = FIND(h, "b3"),
        .x_b3_traceid = FIND(h, "x-b3-traceid"),
        .x_b3_spanid = FIND(h, "x-b3-spanid"),
        .x_b3_parentspanid = FIND(h, "x-b3-parentspanid"),
        .x_b3_sampled = FIND(h, "x-b3-sampled"),
        .x_b3_flags = FIND(h, "x-b3-flags"),
    };
    t->had_traceparent = c.traceparent.base != NULL;
    t->had_b3_single = c.b3.base != NULL;
    t->had_b3_sampled = c.x_b3_sampled.base != NULL;
    t->had_b3_multi = c.x_b3_traceid.base != NULL || c.x_b3_spanid.base != NULL || c.x_b3_sampled.base != NULL ||
                      c.x_b3_flags.base != NULL || c.x_b3_parentspanid.base != NULL;
    rm_trace_source_t src = rm_trace_extract(&c, &t->in);
    if (t->in.invalid_w3c)
        rm_trace_count_invalid(RM_TRACE_FORMAT_W3C);
    if (t->in.invalid_b3)
        rm_trace_count_invalid(RM_TRACE_FORMAT_B3);
    if (src == RM_TRACE_SOURCE_NONE) {
        rm_trace_new_trace_id(t->in.trace_id);
    } else {
        t->has_parent = 1;
    }
    t->sampled = t->in.has_decision ? t->in.sampled : sample(cfg->sampling_percent);
    rm_trace_new_span_id(t->server_span_id);
    t->start_ns = rm_otlp_now_ns();
    s->observer_state[slot] = t;
}

static void
add_header(rm_attempt_t *a, const char *name, const char *value, size_t len)
{
    rm_headers_add_copy(a->pool, a->extra_headers, name, strlen(name), value, len);
}

static void
on_attempt_start(rm_stream_t *s, rm_attempt_t *a)
{
    trace_state_t *t = s->observer_state[slot];
    if (t == NULL)
        return;
    client_span_t *cs = h2o_mem_alloc_pool(&s->pool, sizeof(*cs));
    cs->attempt = a;
    rm_trace_new_span_id(cs->span_id);
    cs->start_ns = rm_otlp_now_ns();
    cs->next = t->clients;
    t->clients = cs;

    const rm_config_tracing_t *cfg = &s->config->telemetry.tracing;
    if (a->extra_headers == NULL) {
        a->extra_headers = h2o_mem_alloc_pool(&s->pool, sizeof(*a->extra_headers));
        memset(a->extra_headers, 0, sizeof(*a->extra_headers));
    }
    int sampled = t->sampled;
    if (cfg->propagate_w3c || t->had_traceparent) {
        char tp[RM_TRACE_TRACEPARENT_LEN + 1];
        rm_trace_format_traceparent(tp, t->in.trace_id, cs->span_id, sampled);
        add_header(a, "traceparent", tp, RM_TRACE_TRACEPARENT_LEN);
        if (t->in.tracestate_len != 0)
            add_header(a, "tracestate", t->in.tracestate, t->in.tracestate_len);
    }
    if ((cfg->propagate_b3 && !t->had_b3_single) || t->had_b3_multi) {
        char hex[33];
        rm_trace_hex(hex, t->in.trace_id, 16);
        add_header(a, "x-b3-traceid", hex, 32);
        rm_trace_hex(hex, cs->span_id, 8);
        add_header(a, "x-b3-spanid", hex, 16);
        rm_trace_hex(hex, t->server_span_id, 8);
        add_header(a, "x-b3-parentspanid", hex, 16);
        /* B3: debug implies accept, X-B3-Sampled is left out with it (unless the caller's must be replaced) */
        if (!t->in.debug || t->had_b3_sampled)
            add_header(a, "x-b3-sampled", sampled ? "1" : "0", 1);
        if (t->in.debug)
            add_header(a, "x-b3-flags", "1", 1);
    }
    if (t->had_b3_single) {
        char b3[RM_TRACE_B3_MAX];
        size_t n = rm_trace_format_b3(b3, t->in.trace_id, cs->span_id, sampled, t->in.debug, t->server_span_id);
        add_header(a, "b3", b3, n);
    }
}

/* "pkg.Service/Method" from a gRPC path "/pkg.Service/Method"; 0 if it is not of that shape */
static int
grpc_names(const rm_req_head_t *req, const char **svc, size_t *svc_len, const char **method, size_t *method_len)
{
    if (!req->is_grpc || req->path.len < 4 || req->path.base[0] != '/')
        return 0;
    const char *p = req->path.base + 1, *end = req->path.base + req->path.len;
    const char *slash = memchr(p, '/', (size_t)(end - p));
    if (slash == NULL || slash == p || slash + 1 == end)
        return 0;
    *svc = p;
    *svc_len = (size_t)(slash - p);
    *method = slash + 1;
    *method_len = (size_t)(end - slash - 1);
    return 1;
}

/* span name: "pkg.Service/Method" for gRPC, else the HTTP method (OpenTelemetry semantic conventions) */
static void
set_name(rm_otlp_span_t *span, const rm_req_head_t *req)
{
    const char *svc, *m;
    size_t svc_len, m_len;
    if (grpc_names(req, &svc, &svc_len, &m, &m_len))
        rm_otlp_span_set_name(span, req->path.base + 1, req->path.len - 1);
    else
        rm_otlp_span_set_name(span, req->method.base, req->method.len);
}

/* `protocol`: "HTTP/1.1" or "HTTP/2" (NULL: unknown) */
static void
add_request_attrs(rm_otlp_span_t *span, const rm_req_head_t *req, const char *protocol)
{
    rm_otlp_span_add_str(span, "http.request.method", req->method.base, req->method.len);
    const char *q = memchr(req->path.base, '?', req->path.len);
    size_t path_len = q != NULL ? (size_t)(q - req->path.base) : req->path.len;
    rm_otlp_span_add_str(span, "url.path", req->path.base, path_len);
    if (q != NULL)
        rm_otlp_span_add_str(span, "url.query", q + 1, req->path.len - path_len - 1);
    if (req->scheme.len != 0)
        rm_otlp_span_add_str(span, "url.scheme", req->scheme.base, req->scheme.len);
    const char *svc, *m;
    size_t svc_len, m_len;
    if (grpc_names(req, &svc, &svc_len, &m, &m_len)) {
        rm_otlp_span_add_str(span, "rpc.system", "grpc", 4);
        rm_otlp_span_add_str(span, "rpc.service", svc, svc_len);
        rm_otlp_span_add_str(span, "rpc.method", m, m_len);
        /* gRPC runs on HTTP/2 only */
        if (protocol == NULL)
            protocol = "HTTP/2";
    }
    if (protocol != NULL && strncmp(protocol, "HTTP/", 5) == 0)
        rm_otlp_span_add_str(span, "network.protocol.version", protocol + 5, strlen(protocol + 5));
}

static rm_otlp_span_t *
new_span(const trace_state_t *t, rm_otlp_span_kind_t kind, const uint8_t span_id[8], const uint8_t *parent, uint64_t start_ns)
{
    rm_otlp_span_t *span = rm_otlp_span_new();
    memcpy(span->trace_id, t->in.trace_id, 16);
    memcpy(span->span_id, span_id, 8);
    if (parent != NULL)
        memcpy(span->parent_span_id, parent, 8);
    span->kind = kind;
    span->flags = 1; /* sampled */
    span->start_ns = start_ns;
    span->end_ns = rm_otlp_now_ns();
    if (t->in.tracestate_len != 0)
        rm_otlp_span_set_tracestate(span, t->in.tracestate, t->in.tracestate_len);
    return span;
}

static const char *
error_type(rm_upstream_error_t err)
{
    switch (err) {
    case RM_UPSTREAM_ERR_CONNECT:
        return "connect_failure";
    case RM_UPSTREAM_ERR_TIMEOUT:
        return "connect_timeout";
    case RM_UPSTREAM_ERR_RESET:
        return "reset";
    case RM_UPSTREAM_ERR_CLOSED:
        return "connection_closed";
    case RM_UPSTREAM_ERR_PROTOCOL:
        return "protocol_error";
    case RM_UPSTREAM_ERR_REFUSED:
        return "refused_stream";
    case RM_UPSTREAM_ERR_OVERFLOW:
        return "overflow";
    }
    return "error";
}

/* gRPC codes a server reports as span errors (OpenTelemetry RPC conventions) */
static int
grpc_server_error(int code)
{
    return code == 2 || code == 4 || code == 12 || code == 13 || code == 14 || code == 15;
}

static void
on_attempt_end(rm_stream_t *s, rm_attempt_t *a)
{
    trace_state_t *t = s->observer_state[slot];
    if (t == NULL)
        return;
    client_span_t **pp = &t->clients, *cs;
    while ((cs = *pp) != NULL && cs->attempt != a)
        pp = &cs->next;
    if (cs == NULL)
        return;
    *pp = cs->next;
    if (!t->sampled)
        return;
    if (!rm_otlp_accepting()) {
        rm_otlp_count_dropped(1); /* not even built */
        return;
    }
    rm_otlp_span_t *span = new_span(t, RM_OTLP_SPAN_CLIENT, cs->span_id, t->server_span_id, cs->start_ns);
    set_name(span, &s->req);
    add_request_attrs(span, &s->req, NULL);
    int failed = 0;
    if (a->head_received && a->resp.status != 0) {
        rm_otlp_span_add_int(span, "http.response.status_code", a->resp.status);
        if (a->resp.status >= 400)
            failed = 1;
    }
    if (a->grpc_status >= 0) {
        rm_otlp_span_add_int(span, "rpc.grpc.status_code", a->grpc_status);
        if (a->grpc_status != 0)
            failed = 1;
    }
    if (a->endpoint_name[0] != '\0') {
        const char *addr = a->endpoint_name, *colon = strrchr(addr, ':');
        if (colon != NULL) {
            const char *host = addr;
            size_t host_len = (size_t)(colon - addr);
            if (host_len >= 2 && host[0] == '[') {
                ++host;
                host_len -= 2;
            }
            rm_otlp_span_add_str(span, "server.address", host, host_len);
            rm_otlp_span_add_int(span, "server.port", strtol(colon + 1, NULL, 10));
        }
    }
    const char *backend = a->backend != NULL ? a->backend : a->cstats != NULL ? a->cstats->name : NULL;
    if (backend != NULL)
        rm_otlp_span_add_str(span, "remora.backend", backend, strlen(backend));
    if (a->number != 0)
        rm_otlp_span_add_int(span, "http.request.resend_count", a->number);
    rm_otlp_span_add_int(span, "remora.attempt", a->number);
    if (a->mirror)
        rm_otlp_span_add_bool(span, "remora.mirror", 1);
    if (a->error != 0) {
        const char *et = error_type(a->error);
        rm_otlp_span_add_str(span, "error.type", et, strlen(et));
        failed = 1;
    } else if (!a->head_received) {
        rm_otlp_span_add_str(span, "error.type", "cancelled", 9);
        failed = 1;
    }
    span->status = failed ? RM_OTLP_STATUS_ERROR : RM_OTLP_STATUS_UNSET;
    rm_otlp_submit(span);
}

static void
on_end(rm_stream_t *s)
{
    trace_state_t *t = s->observer_state[slot];
    if (t == NULL || !t->sampled)
        return;
    if (!rm_otlp_accepting()) {
        rm_otlp_count_dropped(1);
        return;
    }
    rm_otlp_span_t *span = new_span(t, RM_OTLP_SPAN_SERVER, t->server_span_id, t->has_parent ? t->in.span_id : NULL, t->start_ns);
    set_name(span, &s->req);
    add_request_attrs(span, &s->req, s->info.protocol);
    if (s->req.authority.len != 0) {
        const char *a = s->req.authority.base, *end = a + s->req.authority.len, *colon = NULL;
        for (const char *p = end; p != a; --p)
            if (p[-1] == ':') {
                colon = p - 1;
                break;
            } else if (p[-1] == ']') {
                break;
            }
        size_t host_len = (size_t)((colon != NULL ? colon : end) - a);
        rm_otlp_span_add_str(span, "server.address", a, host_len);
    }
    int failed = 0;
    const rm_stream_info_t *info = &s->info;
    if (info->status > 0) {
        rm_otlp_span_add_int(span, "http.response.status_code", info->status);
        if (info->status >= 500)
            failed = 1;
    } else {
        rm_otlp_span_add_str(span, "error.type", "reset", 5);
        failed = 1;
    }
    if (info->grpc_status >= 0) {
        rm_otlp_span_add_int(span, "rpc.grpc.status_code", info->grpc_status);
        if (grpc_server_error(info->grpc_status))
            failed = 1;
    }
    if (s->route != NULL && s->route->name != NULL)
        rm_otlp_span_add_str(span, "remora.route", s->route->name, strlen(s->route->name));
    if (info->backend != NULL)
        rm_otlp_span_add_str(span, "remora.backend", info->backend, strlen(info->backend));
    if (info->flag != NULL)
        rm_otlp_span_add_str(span, "remora.response_flag", info->flag, strlen(info->flag));
    rm_otlp_span_add_int(span, "remora.attempts", info->attempts);
    if (s->listener != NULL && s->listener->name != NULL)
        rm_otlp_span_add_str(span, "remora.listener", s->listener->name, strlen(s->listener->name));
    if (s->peer_identity != NULL) /* the caller's SPIFFE ID, verified by the mesh mTLS handshake */
        rm_otlp_span_add_str(span, "remora.peer_identity", s->peer_identity, strlen(s->peer_identity));
    span->status = failed ? RM_OTLP_STATUS_ERROR : RM_OTLP_STATUS_UNSET;
    rm_otlp_submit(span);
}

static const rm_stream_observer_t observer = {
    .on_request_head = on_request_head,
    .on_attempt_start = on_attempt_start,
    .on_attempt_end = on_attempt_end,
    .on_end = on_end,
};

void
rm_trace_filter_register(void)
{
    slot = rm_stream_register_observer(&observer);
    rm_stats_register_renderer(rm_otlp_render);
}

void
rm_trace_filter_configure(const rm_config_t *config)
{
    const rm_config_tracing_t *cfg = &config->telemetry.tracing;
    rm_otlp_settings_t settings = {
        .enabled = cfg->enabled && cfg->otlp_endpoint != NULL && cfg->otlp_endpoint[0] != '\0',
        .endpoint = cfg->otlp_endpoint,
        .transport = cfg->protocol == RM_OTLP_HTTP ? RM_OTLP_TRANSPORT_HTTP : RM_OTLP_TRANSPORT_GRPC,
        .service_name = cfg->service_name != NULL ? cfg->service_name : "remora-agent",
        .batch_size = cfg->batch_size,
        .batch_timeout_ms = cfg->batch_timeout_ms,
        .queue_size = cfg->queue_size,
    };
    char err[1024];
    if (rm_otlp_configure(&settings, err, sizeof(err)) != 0)
        rm_log_error("otlp", "tracing is configured but spans cannot be exported: %s", err);
}

void
rm_trace_filter_shutdown(uint32_t flush_timeout_ms)
{
    rm_otlp_shutdown(flush_timeout_ms);
}

int
rm_trace_stream_sampled_id(rm_stream_t *s, uint8_t out[16])
{
    trace_state_t *t = s->observer_state[slot];
    if (t == NULL || !t->sampled)
        return 0;
    memcpy(out, t->in.trace_id, 16);
    return 1;
}

int
rm_trace_stream_trace_id(rm_stream_t *s, char out[33], int *sampled)
{
    trace_state_t *t = s->observer_state[slot];
    if (t == NULL) {
        out[0] = '\0';
        if (sampled != NULL)
            *sampled = 0;
        return 0;
    }
    rm_trace_hex(out, t->in.trace_id, 16);
    if (sampled != NULL)
        *sampled = t->sampled;
    return 1;
}
