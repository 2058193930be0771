/*
 * Health and admin HTTP servers on h2o's HTTP/1 server.
 *
 * Both listeners share one h2o context; each listener gets its own hostconf whose single handler
 * knows which endpoint table applies, so the routing never depends on the Host header.
 *
 * Connections are not kept alive: probes and scrapes arrive every few seconds, and a connection
 * that closes after its response can never sit idle holding buffers, which keeps the per-sidecar
 * cost to the listening sockets plus whatever is in flight (at most MAX_CONNS connections).
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <h2o.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "admin/admin.h"
#include "admin/app_probe.h"

#define MAX_CONNS 64
#define LISTEN_BACKLOG 128
#define REQ_TIMEOUT_MS 5000
#define MAX_REQUEST_BODY_BYTES 16384

enum { LISTENER_HEALTH, LISTENER_ADMIN, NUM_LISTENERS };

enum { METHOD_GET = 1, METHOD_POST = 2 };

typedef struct st_admin_listener_t {
    uv_tcp_t tcp;
    rm_admin_t *admin;
    h2o_accept_ctx_t accept_ctx;
    h2o_hostconf_t *hosts[2];
    int in_use;
} admin_listener_t;

typedef struct st_admin_conn_t {
    uv_tcp_t tcp;
    rm_admin_t *admin;
    h2o_linklist_t link;
} admin_conn_t;

typedef struct st_admin_handler_t {
    h2o_handler_t super;
    rm_admin_t *admin;
    unsigned listener;
} admin_handler_t;

struct st_rm_admin_t {
    uv_loop_t *loop;
    rm_admin_callbacks_t cb;
    void *cb_ctx;
    h2o_globalconf_t globalconf;
    h2o_context_t ctx;
    admin_listener_t listeners[NUM_LISTENERS];
    h2o_linklist_t conns;
    size_t num_conns;
    /* listeners plus connections not yet through their close callback; the context outlives all of them */
    size_t num_open_handles;
    int stopping, disposed;
    /* set while a callback runs, so that a stop from inside it lets the current response be queued first */
    int in_request, shutdown_pending;
    /* see finish(): two hops through the closing queue before the memory can go */
    uv_idle_t fin[2];
};

typedef struct st_endpoint_t {
    const char *path;
    unsigned listeners; /* bit per LISTENER_* */
    unsigned methods;
    void (*serve)(rm_admin_t *admin, h2o_req_t *req);
} endpoint_t;

/* -- responses ------------------------------------------------------------------------------------------------------------ */

static void
free_owned_body(void *p)
{
    free(*(char **)p);
}

/* `owned` bodies are malloc'ed by a callback; the request pool frees them once the response has been written */
static void
respond(h2o_req_t *req, int status, const char *reason, const char *content_type, char *body, size_t len, int owned)
{
    static h2o_generator_t generator = {NULL, NULL};
    h2o_iovec_t buf = h2o_iovec_init(body, len);

    if (owned) {
        char **holder = h2o_mem_alloc_shared(&req->pool, sizeof(*holder), free_owned_body);
        *holder = body;
    }
    req->res.status = status;
    req->res.reason = reason;
    req->res.content_length = len;
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CONTENT_TYPE, NULL, content_type, strlen(content_type));
    h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_CACHE_CONTROL, NULL, H2O_STRLIT("no-store"));
    h2o_start_response(req, &generator);
    if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("HEAD")))
        h2o_send(req, NULL, 0, H2O_SEND_STATE_FINAL);
    else
        h2o_send(req, &buf, 1, H2O_SEND_STATE_FINAL);
}

static void
respond_text(h2o_req_t *req, int status, const char *reason, const char *text)
{
    respond(req, status, reason, "text/plain; charset=utf-8", (char *)text, strlen(text), 0);
}

/* -- endpoints ------------------------------------------------------------------------------------------------------------ */

static void
serve_live(rm_admin_t *admin, h2o_req_t *req)
{
    respond_text(req, 200, "OK", "live\n");
}

static void
serve_ready(rm_admin_t *admin, h2o_req_t *req)
{
    if (admin->cb.is_draining != NULL && admin->cb.is_draining(admin->cb_ctx))
        respond_text(req, 503, "Service Unavailable", "draining\n");
    else if (admin->cb.is_ready == NULL || admin->cb.is_ready(admin->cb_ctx))
        respond_text(req, 200, "OK", "ready\n");
    else
        respond_text(req, 503, "Service Unavailable", "not ready\n");
}

static void
serve_owned(h2o_req_t *req, char *body, const char *content_type)
{
    if (body == NULL) {
        respond_text(req, 500, "Internal Server Error", "unavailable\n");
        return;
    }
    respond(req, 200, "OK", content_type, body, strlen(body), 1);
}

/* The q-value of one media range's parameters (";q=0.5;version=1.0.0"); 1 when absent, 0 when malformed. */
static double
accept_q(const char *params, size_t len)
{
    for (size_t i = 0; i + 1 < len; ++i) {
        if (params[i] != ';')
            continue;
        size_t j = i + 1;
        while (j < len && (params[j] == ' ' || params[j] == '\t'))
            ++j;
        if (j + 1 < len && (params[j] == 'q' || params[j] == 'Q') && params[j + 1] == '=') {
            char buf[16];
            size_t n = 0;
            for (j += 2; j < len && n + 1 < sizeof(buf) && params[j] != ';' && params[j] != ' '; ++j)
                buf[n++] = params[j];
            buf[n] = '\0';
            char *end;
            double q = strtod(buf, &end);
            return end != buf && *end == '\0' && q >= 0 && q <= 1 ? q : 0;
        }
    }
    return 1;
}

/*
 * 1 if the Accept header prefers OpenMetrics to the 0.0.4 text: an application/openmetrics-text range
 * with a q-value above zero and at least that of text/plain (or of any wildcard when text/plain is
 * not named). Prometheus sends "application/openmetrics-text;version=1.0.0,...,text/plain;version=0.0.4;q=0.5,...".
 */
static int
wants_openmetrics(h2o_req_t *req)
{
    ssize_t i = h2o_find_header(&req->headers, H2O_TOKEN_ACCEPT, -1);
    double om = 0, text = 0;
    for (; i != -1; i = h2o_find_header(&req->headers, H2O_TOKEN_ACCEPT, i)) {
        h2o_iovec_t v = req->headers.entries[i].value;
        size_t pos = 0;
        while (pos < v.len) {
            const char *comma = memchr(v.base + pos, ',', v.len - pos);
            size_t end = comma != NULL ? (size_t)(comma - v.base) : v.len;
            const char *r = v.base + pos;
            size_t rlen = end - pos;
            while (rlen != 0 && (*r == ' ' || *r == '\t'))
                ++r, --rlen;
            const char *semi = memchr(r, ';', rlen);
            size_t tlen = semi != NULL ? (size_t)(semi - r) : rlen;
            while (tlen != 0 && (r[tlen - 1] == ' ' || r[tlen - 1] == '\t'))
                --tlen;
            double q = accept_q(r + tlen, rlen - tlen);
            if (rm_lcstreq(r, tlen, "application/openmetrics-text")) {
                if (q > om)
                    om = q;
            } else if (rm_lcstreq(r, tlen, "text/plain") || rm_lcstreq(r, tlen, "text/*") || rm_lcstreq(r, tlen, "*/*")) {
                if (q > text)
                    text = q;
            }
            pos = end + 1;
        }
    }
    return om > 0 && om >= text;
}

static void
serve_metrics(rm_admin_t *admin, h2o_req_t *req)
{
    if (admin->cb.render_openmetrics != NULL && wants_openmetrics(req)) {
        serve_owned(req, admin->cb.render_openmetrics(admin->cb_ctx), "application/openmetrics-text; version=1.0.0; charset=utf-8");
        return;
    }
    char *body = admin->cb.render_metrics != NULL ? admin->cb.render_metrics(admin->cb_ctx) : NULL;
    serve_owned(req, body, "text/plain; version=0.0.4; charset=utf-8");
}

static void
serve_config_dump(rm_admin_t *admin, h2o_req_t *req)
{
    char *body = admin->cb.config_dump != NULL ? admin->cb.config_dump(admin->cb_ctx) : NULL;
    serve_owned(req, body, "application/json");
}

static void
serve_clusters(rm_admin_t *admin, h2o_req_t *req)
{
    char *body = admin->cb.clusters != NULL ? admin->cb.clusters(admin->cb_ctx) : NULL;
    serve_owned(req, body, "text/plain; charset=utf-8");
}

static void
serve_drain(rm_admin_t *admin, h2o_req_t *req)
{
    rm_log_info("admin", "drain requested through the admin API");
    if (admin->cb.start_drain != NULL)
        admin->cb.start_drain(admin->cb_ctx);
    respond_text(req, 200, "OK", "draining\n");
}

static void
serve_shutdown(rm_admin_t *admin, h2o_req_t *req)
{
    if (admin->cb.shutdown == NULL) {
        respond_text(req, 404, "Not Found", "not found\n");
        return;
    }
    admin->cb.shutdown(admin->cb_ctx);
    respond_text(req, 200, "OK", "shutting down: draining, the agent exits when drained\n");
}

/* Finds `name=value` in an application/x-www-form-urlencoded string; values here are plain words, so no decoding. */
static int
find_param(h2o_iovec_t s, const char *name, char *value, size_t value_size)
{
    size_t name_len = strlen(name), pos = 0;

    while (pos < s.len) {
        const char *amp = memchr(s.base + pos, '&', s.len - pos);
        size_t end = amp != NULL ? (size_t)(amp - s.base) : s.len;
        if (end - pos > name_len && memcmp(s.base + pos, name, name_len) == 0 && s.base[pos + name_len] == '=') {
            size_t vlen = end - pos - name_len - 1;
            if (vlen >= value_size)
                return 0;
            memcpy(value, s.base + pos + name_len + 1, vlen);
            value[vlen] = '\0';
            return 1;
        }
        pos = end + 1;
    }
    return 0;
}

static void
serve_logging(rm_admin_t *admin, h2o_req_t *req)
{
    char level[16], body[64];

    if (h2o_memis(req->method.base, req->method.len, H2O_STRLIT("POST"))) {
        h2o_iovec_t query = h2o_iovec_init(NULL, 0);
        if (req->query_at != SIZE_MAX)
            query = h2o_iovec_init(req->path.base + req->query_at + 1, req->path.len - req->query_at - 1);
        if (!find_param(query, "level", level, sizeof(level)) &&
            (req->entity.base == NULL || !find_param(req->entity, "level", level, sizeof(level)))) {
            respond_text(req, 400, "Bad Request", "missing level=error|warn|info|debug\n");
            return;
        }
        if (rm_log_set_level_by_name(level) != 0) {
            respond_text(req, 400, "Bad Request", "unknown level: use error|warn|info|debug\n");
            return;
        }
        rm_log_info("admin", "log level set to %s", level);
    }
    snprintf(body, sizeof(body), "%s\n", rm_log_level_name((rm_log_level_t)rm_log_current_level));
    respond(req, 200, "OK", "text/plain; charset=utf-8", h2o_strdup(&req->pool, body, SIZE_MAX).base, strlen(body), 0);
}

void
rm_admin_command(rm_admin_t *admin, const char *command, const char *argument, unsigned *status, const char **content_type,
                 char **body, size_t *body_len)
{
    const char *text = "text/plain; charset=utf-8";
    char *out = NULL, msg[128];
    *status = 200;
    *content_type = text;
    if (admin == NULL || admin->stopping) {
        *status = 503;
        out = rm_strdup("stopping\n");
    } else if (strcmp(command, "stats") == 0) {
        out = admin->cb.render_metrics != NULL ? admin->cb.render_metrics(admin->cb_ctx) : NULL;
        *content_type = "text/plain; version=0.0.4; charset=utf-8";
    } else if (strcmp(command, "config") == 0) {
        out = admin->cb.config_dump != NULL ? admin->cb.config_dump(admin->cb_ctx) : NULL;
        *content_type = "application/json";
    } else if (strcmp(command, "clusters") == 0) {
        out = admin->cb.clusters != NULL ? admin->cb.clusters(admin->cb_ctx) : NULL;
    } else if (strcmp(command, "log-level") == 0) {
        if (argument != NULL && argument[0] != '\0') {
            if (rm_log_set_level_by_name(argument) != 0) {
                *status = 400;
                out = rm_strdup("unknown level: use error|warn|info|debug\n");
            } else {
                rm_log_info("admin", "log level set to %s (through the control plane)", argument);
            }
        }
        if (out == NULL) {
            snprintf(msg, sizeof(msg), "%s\n", rm_log_level_name((rm_log_level_t)rm_log_current_level));
            out = rm_strdup(msg);
        }
    } else {
        *status = 404;
        snprintf(msg, sizeof(msg), "unknown admin command '%.60s'\n", command);
        out = rm_strdup(msg);
    }
    if (out == NULL) {
        *status = 500;
        *content_type = text;
        out = rm_strdup("unavailable\n");
    }
    *body = out;
    *body_len = strlen(out);
}

static void
serve_identity(rm_admin_t *admin, h2o_req_t *req)
{
    if (admin->cb.identity == NULL) {
        respond_text(req, 404, "Not Found", "no workload identity configured (remora-agent --identity-token)\n");
        return;
    }
    serve_owned(req, admin->cb.identity(admin->cb_ctx), "text/plain; charset=utf-8");
}

static void
serve_index(rm_admin_t *admin, h2o_req_t *req)
{
    respond_text(req, 200, "OK",
                 "GET  /config_dump          JSON of the running configuration snapshot\n"
                 "GET  /clusters             outlier detection and health checks per cluster and endpoint\n"
                 "GET  /identity             the workload identity in service (SPIFFE ID, serial, validity)\n"
                 "GET  /ready                200 when ready to serve traffic, 503 otherwise\n"
                 "GET  /logging              current log level\n"
                 "POST /logging?level=LEVEL  set the log level (error|warn|info|debug)\n"
                 "POST /drain                start a graceful drain\n"
                 "POST /shutdown             end the outbound grace or start the drain; exit when drained\n");
}

#define HEALTH (1u << LISTENER_HEALTH)
#define ADMIN (1u << LISTENER_ADMIN)

static const endpoint_t endpoints[] = {
    {"/live", HEALTH, METHOD_GET, serve_live},        {"/ready", HEALTH | ADMIN, METHOD_GET, serve_ready},
    {"/metrics", HEALTH, METHOD_GET, serve_metrics},  {"/config_dump", ADMIN, METHOD_GET, serve_config_dump},
    {"/clusters", ADMIN, METHOD_GET, serve_clusters}, {"/logging", ADMIN, METHOD_GET | METHOD_POST, serve_logging},
    {"/drain", ADMIN, METHOD_POST, serve_drain},      {"/shutdown", ADMIN, METHOD_POST, serve_shutdown},
    {"/identity", ADMIN, METHOD_GET, serve_identity}, {"/", ADMIN, METHOD_GET, serve_index},
};

static unsigned
method_bit(h2o_iovec_t m)
{
    /* HEAD is answered like GET; respond() drops the body */
    if (h2o_memis(m.base, m.len, H2O_STRLIT("GET")) || h2o_memis(m.base, m.len, H2O_STRLIT("HEAD")))
        return METHOD_GET;
    if (h2o_memis(m.base, m.len, H2O_STRLIT("POST")))
        return METHOD_POST;
    return 0;
}

/* h2o 2.2.5 has no call that closes an HTTP/1 connection from outside. Shutting the socket down makes h2o see EOF (or a failed
 * write) on its next event and close the connection itself, through its normal path; a response already handed to the kernel
 * still goes out before the FIN. */
static void
shutdown_conns(rm_admin_t *admin)
{
    h2o_linklist_t *node;

    admin->shutdown_pending = 0;
    for (node = admin->conns.next; node != &admin->conns; node = node->next) {
        admin_conn_t *conn = H2O_STRUCT_FROM_MEMBER(admin_conn_t, link, node);
        uv_os_fd_t fd;
        if (uv_fileno((uv_handle_t *)&conn->tcp, &fd) == 0)
            shutdown(fd, SHUT_RDWR);
    }
}

static int
on_req(h2o_handler_t *_self, h2o_req_t *req)
{
    admin_handler_t *self = (admin_handler_t *)_self;
    rm_admin_t *admin = self->admin;
    const endpoint_t *ep = NULL;
    size_t i;

    req->http1_is_persistent = 0;

    if (self->listener == LISTENER_HEALTH && req->path_normalized.len > sizeof("/app-health/") - 1 &&
        memcmp(req->path_normalized.base, "/app-health/", sizeof("/app-health/") - 1) == 0) {
        if (method_bit(req->method) != METHOD_GET) {
            h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, H2O_STRLIT("GET"));
            respond_text(req, 405, "Method Not Allowed", "method not allowed\n");
        } else if (admin->stopping || admin->cb.app_probes == NULL) {
            respond_text(req, 404, "Not Found", "no application probes (REMORA_APP_PROBES)\n");
        } else {
            rm_app_probes_serve(admin->cb.app_probes, req); /* answers when the probe ends */
        }
        return 0;
    }
    for (i = 0; i != sizeof(endpoints) / sizeof(endpoints[0]); ++i) {
        if ((endpoints[i].listeners & (1u << self->listener)) != 0 &&
            h2o_memis(req->path_normalized.base, req->path_normalized.len, endpoints[i].path, strlen(endpoints[i].path))) {
            ep = endpoints + i;
            break;
        }
    }
    if (ep == NULL) {
        respond_text(req, 404, "Not Found", "not found\n");
        return 0;
    }
    if ((method_bit(req->method) & ep->methods) == 0) {
        const char *allow = ep->methods == METHOD_POST ? "POST" : ep->methods == METHOD_GET ? "GET, HEAD" : "GET, HEAD, POST";
        h2o_add_header(&req->pool, &req->res.headers, H2O_TOKEN_ALLOW, NULL, allow, strlen(allow));
        respond_text(req, 405, "Method Not Allowed", "method not allowed\n");
        return 0;
    }
    /* after rm_admin_stop the owner may be tearing down what the callbacks look at */
    if (admin->stopping) {
        respond_text(req, 503, "Service Unavailable", "stopping\n");
        return 0;
    }
    admin->in_request = 1;
    ep->serve(admin, req);
    admin->in_request = 0;
    if (admin->shutdown_pending)
        shutdown_conns(admin);
    return 0;
}

/* -- teardown ------------------------------------------------------------------------------------------------------------- */

static void
find_embedded_handle(uv_handle_t *handle, void *arg)
{
    rm_admin_t *admin = arg;
    if ((char *)handle >= (char *)admin && (char *)handle < (char *)(admin + 1))
        rm_fatal("admin: handle of type %s still on the loop while freeing the admin server", uv_handle_type_name(handle->type));
}

static void
on_fin_closed(uv_handle_t *handle)
{
    rm_admin_t *admin = handle->data;

    if (handle == (uv_handle_t *)&admin->fin[0]) {
        /* Closes issued from inside a close callback run in the next loop iteration, after every handle that was closing
         * alongside fin[0] (h2o's context timers and queue among them) has been finished. */
        uv_close((uv_handle_t *)&admin->fin[1], on_fin_closed);
        return;
    }
    /* a handle leaves the loop's list before its close callback runs, so this walk sees only handles not yet finished */
    uv_walk(admin->loop, find_embedded_handle, admin);
    h2o_config_dispose(&admin->globalconf);
    free(admin);
}

/* The context's timers are embedded in `admin` and closed with no callback, so the memory is released only once the loop
 * has provably finished closing them: fin[0] is closed right after them, and its callback closes fin[1]. */
static void
finish(rm_admin_t *admin)
{
    if (!admin->stopping || admin->disposed || admin->num_open_handles != 0)
        return;
    admin->disposed = 1;
    h2o_context_dispose(&admin->ctx);
    uv_close((uv_handle_t *)&admin->fin[0], on_fin_closed);
}

static void
on_listener_closed(uv_handle_t *handle)
{
    admin_listener_t *l = (admin_listener_t *)((char *)handle - offsetof(admin_listener_t, tcp));
    rm_admin_t *admin = l->admin;

    --admin->num_open_handles;
    finish(admin);
}

static void
on_conn_closed(uv_handle_t *handle)
{
    admin_conn_t *conn = (admin_conn_t *)((char *)handle - offsetof(admin_conn_t, tcp));
    rm_admin_t *admin = conn->admin;

    h2o_linklist_unlink(&conn->link);
    --admin->num_conns;
    --admin->num_open_handles;
    free(conn);
    finish(admin);
}

void
rm_admin_stop(rm_admin_t *admin)
{
    size_t i;

    if (admin == NULL || admin->stopping)
        return;
    admin->stopping = 1;
    for (i = 0; i != NUM_LISTENERS; ++i)
        if (admin->listeners[i].in_use)
            uv_close((uv_handle_t *)&admin->listeners[i].tcp, on_listener_closed);
    if (admin->in_request)
        admin->shutdown_pending = 1;
    else
        shutdown_conns(admin);
    finish(admin);
}

/* -- accepting ------------------------------------------------------------------------------------------------------------ */

static void
on_accept(uv_stream_t *server, int status)
{
    admin_listener_t *l = (admin_listener_t *)((char *)server - offsetof(admin_listener_t, tcp));
    rm_admin_t *admin = l->admin;
    admin_conn_t *conn;
    h2o_socket_t *sock;

    if (status != 0) {
        rm_log_warn("admin", "accept: %s", uv_strerror(status));
        return;
    }
    conn = rm_calloc(1, sizeof(*conn));
    conn->admin = admin;
    uv_tcp_init(admin->loop, &conn->tcp);
    h2o_linklist_insert(&admin->conns, &conn->link);
    ++admin->num_conns;
    ++admin->num_open_handles;
    if (uv_accept(server, (uv_stream_t *)&conn->tcp) != 0) {
        uv_close((uv_handle_t *)&conn->tcp, on_conn_closed);
        return;
    }
    if (admin->num_conns > MAX_CONNS) {
        rm_log_warn("admin", "more than %d admin connections; closing a new one", MAX_CONNS);
        uv_close((uv_handle_t *)&conn->tcp, on_conn_closed);
        return;
    }
    uv_tcp_nodelay(&conn->tcp, 1);
    sock = h2o_uv_socket_create((uv_stream_t *)&conn->tcp, on_conn_closed);
    h2o_accept(&l->accept_ctx, sock);
}

static int
is_loopback(const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET)
        return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
    if (sa->sa_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
    }
    return 0;
}

/* Binding with plain syscalls before touching the loop means a failed start leaves nothing on the loop to close. */
static int
open_listen_fd(const struct sockaddr *sa, char *errbuf, size_t errbuf_size)
{
    char addrbuf[64];
    socklen_t len;
    int fd, on = 1;
    const char *step;

    switch (sa->sa_family) {
    case AF_INET:
        len = sizeof(struct sockaddr_in);
        break;
    case AF_INET6:
        len = sizeof(struct sockaddr_in6);
        break;
    default:
        snprintf(errbuf, errbuf_size, "listen: unsupported address family %d", (int)sa->sa_family);
        return -1;
    }
    step = "socket";
    if ((fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0)
        goto Error;
    step = "setsockopt";
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on)) != 0)
        goto Error;
    step = "bind";
    if (bind(fd, sa, len) != 0)
        goto Error;
    step = "listen";
    if (listen(fd, LISTEN_BACKLOG) != 0)
        goto Error;
    return fd;

Error:
    snprintf(errbuf, errbuf_size, "%s %s: %s", step, rm_format_sockaddr(sa, addrbuf, sizeof(addrbuf)), strerror(errno));
    if (fd >= 0)
        close(fd);
    return -1;
}

static void
register_handler(rm_admin_t *admin, unsigned listener, const char *hostname)
{
    h2o_hostconf_t *hostconf = h2o_config_register_host(&admin->globalconf, h2o_iovec_init(hostname, strlen(hostname)), 65535);
    h2o_pathconf_t *pathconf = h2o_config_register_path(hostconf, "/", 0);
    admin_handler_t *handler = (admin_handler_t *)h2o_create_handler(pathconf, sizeof(*handler));

    handler->super.on_req = on_req;
    handler->admin = admin;
    handler->listener = listener;
    admin->listeners[listener].hosts[0] = hostconf;
    admin->listeners[listener].hosts[1] = NULL;
}

rm_admin_t *
rm_admin_start(uv_loop_t *loop, const struct sockaddr *health, const struct sockaddr *admin_addr, const rm_admin_callbacks_t *cb,
               void *ctx, char *errbuf, size_t errbuf_size)
{
    const struct sockaddr *addrs[NUM_LISTENERS] = {health, admin_addr};
    int fds[NUM_LISTENERS] = {-1, -1};
    char addrbuf[64];
    rm_admin_t *admin;
    size_t i;
    int r;

    if (admin_addr != NULL && !is_loopback(admin_addr)) {
        snprintf(errbuf, errbuf_size, "admin listener %s refused: the admin API binds only a loopback address",
                 rm_format_sockaddr(admin_addr, addrbuf, sizeof(addrbuf)));
        return NULL;
    }
    for (i = 0; i != NUM_LISTENERS; ++i) {
        if (addrs[i] != NULL && (fds[i] = open_listen_fd(addrs[i], errbuf, errbuf_size)) < 0) {
            while (i-- != 0)
                if (fds[i] >= 0)
                    close(fds[i]);
            return NULL;
        }
    }

    admin = rm_calloc(1, sizeof(*admin));
    admin->loop = loop;
    if (cb != NULL)
        admin->cb = *cb;
    admin->cb_ctx = ctx;
    h2o_linklist_init_anchor(&admin->conns);

    h2o_config_init(&admin->globalconf);
    admin->globalconf.server_name = h2o_iovec_init(H2O_STRLIT("remora-agent"));
    admin->globalconf.max_request_entity_size = MAX_REQUEST_BODY_BYTES;
    admin->globalconf.http1.req_timeout = REQ_TIMEOUT_MS;
    admin->globalconf.http1.upgrade_to_http2 = 0;
    register_handler(admin, LISTENER_HEALTH, "health");
    register_handler(admin, LISTENER_ADMIN, "admin");
    h2o_context_init(&admin->ctx, loop, &admin->globalconf);
    for (i = 0; i != 2; ++i) {
        uv_idle_init(loop, &admin->fin[i]);
        admin->fin[i].data = admin;
    }

    for (i = 0; i != NUM_LISTENERS; ++i) {
        admin_listener_t *l = admin->listeners + i;
        l->admin = admin;
        l->accept_ctx.ctx = &admin->ctx;
        l->accept_ctx.hosts = l->hosts;
        if (fds[i] < 0)
            continue;
        uv_tcp_init(loop, &l->tcp);
        l->in_use = 1;
        ++admin->num_open_handles;
        if ((r = uv_tcp_open(&l->tcp, fds[i])) != 0) {
            close(fds[i]);
            fds[i] = -1;
            goto UvError;
        }
        fds[i] = -1;
        if ((r = uv_listen((uv_stream_t *)&l->tcp, LISTEN_BACKLOG, on_accept)) != 0)
            goto UvError;
        rm_log_info("admin", "%s listener on %s", i == LISTENER_HEALTH ? "health" : "admin",
                    rm_format_sockaddr(addrs[i], addrbuf, sizeof(addrbuf)));
    }
    return admin;

UvError:
    snprintf(errbuf, errbuf_size, "listen %s: %s", rm_format_sockaddr(addrs[i], addrbuf, sizeof(addrbuf)), uv_strerror(r));
    for (i = 0; i != NUM_LISTENERS; ++i)
        if (fds[i] >= 0)
            close(fds[i]);
    /* handles already on the loop are released by the loop's close callbacks, as after a normal stop */
    rm_admin_stop(admin);
    return NULL;
}
