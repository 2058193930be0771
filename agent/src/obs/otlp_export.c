/*
 * The OTLP exporter module (remora-agent-otlp.so): encodes span records as an OTLP
 * ExportTraceServiceRequest with protobuf-c and sends it over OTLP/gRPC (gRPC C core, unary
 * TraceService/Export) or OTLP/HTTP (POST /v1/traces, application/x-protobuf, on a plain socket).
 * The only agent code that sees the OTLP protobuf types; everything runs on the telemetry thread.
 * Logging comes from the executable (it exports its symbols).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <grpc/grpc.h>
#include "remora/rpc.h"
#include "remora/strutil.h"
#include "opentelemetry/proto/collector/trace/v1/trace_service.pb-c.h"
#include "obs/otlp.h"

#define EXPORT_METHOD "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
#define SCOPE_NAME "remora-agent"
/* a response larger than this is not read further (only its status line matters) */
#define HTTP_RESPONSE_MAX 65536

struct st_rm_otlp_exporter_t {
    rm_otlp_transport_t transport;
    char *endpoint;
    char *service_name;
    /* gRPC */
    rm_rpc_client_t *client;
    /* HTTP: the parsed endpoint */
    struct sockaddr_storage addr;
    socklen_t addrlen;
};

static int
parse_endpoint(const char *ep, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[128];
    const char *colon;
    if (ep[0] == '[') {
        const char *close = strchr(ep, ']');
        if (close == NULL || close[1] != ':' || (size_t)(close - ep - 1) >= sizeof(host))
            return -1;
        memcpy(host, ep + 1, (size_t)(close - ep - 1));
        host[close - ep - 1] = '\0';
        colon = close + 1;
    } else {
        colon = strrchr(ep, ':');
        if (colon == NULL || (size_t)(colon - ep) >= sizeof(host))
            return -1;
        memcpy(host, ep, (size_t)(colon - ep));
        host[colon - ep] = '\0';
    }
    char *end;
    long port = strtol(colon + 1, &end, 10);
    if (*end != '\0' || port <= 0 || port > 65535)
        return -1;
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *sin = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)port);
        *len = sizeof(*sin);
    } else if (inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)port);
        *len = sizeof(*sin6);
    } else {
        return -1;
    }
    return 0;
}

static rm_otlp_exporter_t *
exporter_create(const rm_otlp_settings_t *settings, char *err, size_t errlen)
{
    rm_otlp_exporter_t *e = rm_calloc(1, sizeof(*e));
    e->transport = settings->transport;
    e->endpoint = rm_strdup(settings->endpoint);
    e->service_name = rm_strdup(settings->service_name);
    if (e->transport == RM_OTLP_TRANSPORT_HTTP) {
        if (parse_endpoint(e->endpoint, &e->addr, &e->addrlen) != 0) {
            snprintf(err, errlen, "endpoint '%s' is not IP:PORT", e->endpoint);
            goto fail;
        }
    } else {
        rm_rpc_init();
        /* reconnect soon after a receiver comes back (gRPC's default backoff grows to 120 s) */
        grpc_arg args[] = {
            {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, .value.integer = 500},
            {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, .value.integer = 2000},
        };
        grpc_channel_args cargs = {.num_args = sizeof(args) / sizeof(args[0]), .args = args};
        e->client = rm_rpc_client_create(e->endpoint, &cargs);
    }
    return e;
fail:
    free(e->endpoint);
    free(e->service_name);
    free(e);
    return NULL;
}

static void
exporter_destroy(rm_otlp_exporter_t *e)
{
    if (e->client != NULL) {
        rm_rpc_client_destroy(e->client);
        rm_rpc_shutdown();
    }
    free(e->endpoint);
    free(e->service_name);
    free(e);
}

/*
 * Encoding: the request's messages are built in arrays sized for the batch and point into the span
 * records; nothing is copied until protobuf-c packs.
 */
typedef struct st_encoded_t {
    Opentelemetry__Proto__Collector__Trace__V1__ExportTraceServiceRequest req;
    Opentelemetry__Proto__Trace__V1__ResourceSpans rs, *rs_ptr;
    Opentelemetry__Proto__Resource__V1__Resource resource;
    Opentelemetry__Proto__Common__V1__KeyValue service_kv, *service_kv_ptr;
    Opentelemetry__Proto__Common__V1__AnyValue service_value;
    Opentelemetry__Proto__Trace__V1__ScopeSpans ss, *ss_ptr;
    Opentelemetry__Proto__Common__V1__InstrumentationScope scope;
    Opentelemetry__Proto__Trace__V1__Span *spans, **span_ptrs;
    Opentelemetry__Proto__Trace__V1__Status *statuses;
    Opentelemetry__Proto__Common__V1__KeyValue *kvs, **kv_ptrs;
    Opentelemetry__Proto__Common__V1__AnyValue *values;
    /* NUL-terminated copies of names, tracestates and string values (protobuf-c wants C strings) */
    char *strings;
} encoded_t;

static void
encode(encoded_t *enc, const char *service_name, rm_otlp_span_t *const *spans, size_t n)
{
    size_t num_attrs = 0, string_bytes = 0;
    for (size_t i = 0; i != n; ++i) {
        num_attrs += spans[i]->num_attrs;
        string_bytes += spans[i]->strings_used + 2 + spans[i]->num_attrs;
    }
    enc->spans = rm_calloc(n, sizeof(*enc->spans));
    enc->span_ptrs = rm_calloc(n, sizeof(*enc->span_ptrs));
    enc->statuses = rm_calloc(n, sizeof(*enc->statuses));
    enc->kvs = rm_calloc(num_attrs + 1, sizeof(*enc->kvs));
    enc->kv_ptrs = rm_calloc(num_attrs + 1, sizeof(*enc->kv_ptrs));
    enc->values = rm_calloc(num_attrs + 1, sizeof(*enc->values));
    enc->strings = rm_malloc(string_bytes + 1);
    char *sp = enc->strings;
#define CSTR(base, len)                                                                                                            \
    ({                                                                                                                             \
        char *_s = sp;                                                                                                             \
        memcpy(sp, (base), (len));                                                                                                 \
        sp[(len)] = '\0';                                                                                                          \
        sp += (len) + 1;                                                                                                           \
        _s;                                                                                                                        \
    })

    size_t k = 0;
    for (size_t i = 0; i != n; ++i) {
        const rm_otlp_span_t *s = spans[i];
        Opentelemetry__Proto__Trace__V1__Span *o = &enc->spans[i];
        opentelemetry__proto__trace__v1__span__init(o);
        o->trace_id = (ProtobufCBinaryData){16, (uint8_t *)s->trace_id};
        o->span_id = (ProtobufCBinaryData){8, (uint8_t *)s->span_id};
        static const uint8_t zero[8];
        if (memcmp(s->parent_span_id, zero, 8) != 0)
            o->parent_span_id = (ProtobufCBinaryData){8, (uint8_t *)s->parent_span_id};
        o->name = CSTR(rm_otlp_span_str(s, s->name_off), s->name_len);
        o->trace_state = CSTR(rm_otlp_span_str(s, s->tracestate_off), s->tracestate_len);
        o->kind = s->kind == RM_OTLP_SPAN_SERVER ? OPENTELEMETRY__PROTO__TRACE__V1__SPAN__SPAN_KIND__SPAN_KIND_SERVER
                                                 : OPENTELEMETRY__PROTO__TRACE__V1__SPAN__SPAN_KIND__SPAN_KIND_CLIENT;
        o->start_time_unix_nano = s->start_ns;
        o->end_time_unix_nano = s->end_ns;
        o->flags = s->flags;
        o->dropped_attributes_count = s->dropped_attrs;
        opentelemetry__proto__trace__v1__status__init(&enc->statuses[i]);
        enc->statuses[i].code = (Opentelemetry__Proto__Trace__V1__Status__StatusCode)s->status;
        o->status = &enc->statuses[i];
        o->n_attributes = s->num_attrs;
        o->attributes = &enc->kv_ptrs[k];
        for (uint32_t j = 0; j != s->num_attrs; ++j, ++k) {
            const rm_otlp_attr_t *a = &s->attrs[j];
            Opentelemetry__Proto__Common__V1__KeyValue *kv = &enc->kvs[k];
            Opentelemetry__Proto__Common__V1__AnyValue *v = &enc->values[k];
            opentelemetry__proto__common__v1__key_value__init(kv);
            opentelemetry__proto__common__v1__any_value__init(v);
            kv->key = (char *)a->key;
            kv->value = v;
            switch (a->type) {
            case RM_OTLP_ATTR_STRING:
                v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
                v->string_value = CSTR(rm_otlp_span_str(s, a->v.str.off), a->v.str.len);
                break;
            case RM_OTLP_ATTR_INT:
                v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_INT_VALUE;
                v->int_value = a->v.i;
                break;
            case RM_OTLP_ATTR_BOOL:
                v->value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_BOOL_VALUE;
                v->bool_value = a->v.b != 0;
                break;
            }
            enc->kv_ptrs[k] = kv;
        }
        enc->span_ptrs[i] = o;
    }
#undef CSTR

    opentelemetry__proto__common__v1__any_value__init(&enc->service_value);
    enc->service_value.value_case = OPENTELEMETRY__PROTO__COMMON__V1__ANY_VALUE__VALUE_STRING_VALUE;
    enc->service_value.string_value = (char *)service_name;
    opentelemetry__proto__common__v1__key_value__init(&enc->service_kv);
    enc->service_kv.key = "service.name";
    enc->service_kv.value = &enc->service_value;
    enc->service_kv_ptr = &enc->service_kv;
    opentelemetry__proto__resource__v1__resource__init(&enc->resource);
    enc->resource.n_attributes = 1;
    enc->resource.attributes = &enc->service_kv_ptr;

    opentelemetry__proto__common__v1__instrumentation_scope__init(&enc->scope);
    enc->scope.name = SCOPE_NAME;
    opentelemetry__proto__trace__v1__scope_spans__init(&enc->ss);
    enc->ss.scope = &enc->scope;
    enc->ss.n_spans = n;
    enc->ss.spans = enc->span_ptrs;
    enc->ss_ptr = &enc->ss;

    opentelemetry__proto__trace__v1__resource_spans__init(&enc->rs);
    enc->rs.resource = &enc->resource;
    enc->rs.n_scope_spans = 1;
    enc->rs.scope_spans = &enc->ss_ptr;
    enc->rs_ptr = &enc->rs;

    opentelemetry__proto__collector__trace__v1__export_trace_service_request__init(&enc->req);
    enc->req.n_resource_spans = 1;
    enc->req.resource_spans = &enc->rs_ptr;
}

static void
encoded_dispose(encoded_t *enc)
{
    free(enc->spans);
    free(enc->span_ptrs);
    free(enc->statuses);
    free(enc->kvs);
    free(enc->kv_ptrs);
    free(enc->values);
    free(enc->strings);
}

static int
export_grpc(rm_otlp_exporter_t *e, encoded_t *enc, uint32_t timeout_ms, char *err, size_t errlen)
{
    ProtobufCMessage *resp = NULL;
    rm_rpc_status_t status;
    if (rm_rpc_unary(e->client, EXPORT_METHOD, &enc->req.base,
                     &opentelemetry__proto__collector__trace__v1__export_trace_service_response__descriptor, timeout_ms, &resp,
                     &status) != 0) {
        snprintf(err, errlen, "gRPC %s: %s", rm_rpc_status_name(status.code), status.message);
        return -1;
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return 0;
}

static uint64_t
mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Waits for `events` on fd until the deadline; 0 ready, -1 timed out or failed. */
static int
wait_fd(int fd, short events, uint64_t deadline_ms)
{
    for (;;) {
        uint64_t now = mono_ms();
        if (now >= deadline_ms)
            return -1;
        struct pollfd pfd = {.fd = fd, .events = events};
        int r = poll(&pfd, 1, (int)(deadline_ms - now));
        if (r > 0)
            return 0;
        if (r < 0 && errno != EINTR)
            return -1;
    }
}

static int
export_http(rm_otlp_exporter_t *e, encoded_t *enc, uint32_t timeout_ms, char *err, size_t errlen)
{
    uint64_t deadline = mono_ms() + timeout_ms;
    size_t body_len = protobuf_c_message_get_packed_size(&enc->req.base);
    char head[512];
    int head_len = snprintf(head, sizeof(head),
                            "POST /v1/traces HTTP/1.1\r\nHost: %s\r\nContent-Type: application/x-protobuf\r\nContent-Length: "
                            "%zu\r\nUser-Agent: remora-agent\r\nConnection: close\r\n\r\n",
                            e->endpoint, body_len);
    size_t total = (size_t)head_len + body_len;
    uint8_t *msg = rm_malloc(total);
    memcpy(msg, head, (size_t)head_len);
    protobuf_c_message_pack(&enc->req.base, msg + head_len);

    int ret = -1;
    char *resp = NULL;
    int fd = socket(e->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        goto done;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (struct sockaddr *)&e->addr, e->addrlen) != 0) {
        if (errno != EINPROGRESS) {
            snprintf(err, errlen, "connect: %s", strerror(errno));
            goto done;
        }
        if (wait_fd(fd, POLLOUT, deadline) != 0) {
            snprintf(err, errlen, "connect: timed out");
            goto done;
        }
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        if (soerr != 0) {
            snprintf(err, errlen, "connect: %s", strerror(soerr));
            goto done;
        }
    }
    for (size_t off = 0; off < total;) {
        ssize_t w = send(fd, msg + off, total - off, MSG_NOSIGNAL);
        if (w > 0) {
            off += (size_t)w;
        } else if (w < 0 && (errno == EAGAIN || errno == EINTR)) {
            if (wait_fd(fd, POLLOUT, deadline) != 0) {
                snprintf(err, errlen, "send: timed out");
                goto done;
            }
        } else {
            snprintf(err, errlen, "send: %s", strerror(errno));
            goto done;
        }
    }
    /* Connection: close: the response ends with the connection; only the status line is needed,
     * but the whole (bounded) response is read so the receiver is not reset mid-write */
    resp = rm_malloc(HTTP_RESPONSE_MAX + 1);
    size_t got = 0;
    for (;;) {
        ssize_t r = recv(fd, resp + got, HTTP_RESPONSE_MAX - got, 0);
        if (r > 0) {
            got += (size_t)r;
            if (got == HTTP_RESPONSE_MAX)
                break;
        } else if (r == 0) {
            break;
        } else if (errno == EAGAIN || errno == EINTR) {
            if (wait_fd(fd, POLLIN, deadline) != 0) {
                if (got >= 12)
                    break; /* the status is in: do not wait for a lingering close */
                snprintf(err, errlen, "no response within %u ms", timeout_ms);
                goto done;
            }
        } else {
            snprintf(err, errlen, "recv: %s", strerror(errno));
            goto done;
        }
    }
    resp[got] = '\0';
    int status = 0;
    if (got < 12 || sscanf(resp, "HTTP/1.%*1d %3d", &status) != 1) {
        snprintf(err, errlen, "not an HTTP response");
        goto done;
    }
    if (status < 200 || status > 299) {
        snprintf(err, errlen, "HTTP status %d", status);
        goto done;
    }
    ret = 0;
done:
    if (fd >= 0)
        close(fd);
    free(msg);
    free(resp);
    return ret;
}

static int
exporter_export(rm_otlp_exporter_t *e, rm_otlp_span_t *const *spans, size_t n, uint32_t timeout_ms, char *err, size_t errlen)
{
    encoded_t enc;
    encode(&enc, e->service_name, spans, n);
    int r = e->transport == RM_OTLP_TRANSPORT_GRPC ? export_grpc(e, &enc, timeout_ms, err, errlen)
                                                   : export_http(e, &enc, timeout_ms, err, errlen);
    encoded_dispose(&enc);
    return r;
}

__attribute__((visibility("default"))) const rm_otlp_module_t rm_otlp_module = {
    .create = exporter_create,
    .export_spans = exporter_export,
    .destroy = exporter_destroy,
};
