#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "tcp/tcp_proxy.h"
#include "upstream/cluster.h"

/* One direction of the relay: bytes read from `src` are written to `dst`. */
typedef struct st_pipe_t {
    h2o_socket_t **src, **dst;
    /* bytes of (*src)->input being written to *dst (0: no write in flight) */
    size_t inflight;
    unsigned eof : 1;  /* src ended (or failed) */
    unsigned shut : 1; /* dst's write side was shut down after the last byte */
    unsigned is_upstream_to_downstream : 1;
} pipe_t;

typedef struct st_tcp_conn_t {
    rm_dconn_t *dc;
    rm_worker_t *worker;
    rm_listener_stats_t *stats;
    h2o_socket_t *down; /* == dc->sock */
    h2o_socket_t *up;   /* NULL until connected */
    /* connecting: through a cluster endpoint (rm_connect_t), or a direct socket to the original destination */
    rm_connect_t *connecting;
    h2o_socket_t *direct;
    rm_cluster_t *cluster;
    rm_cluster_stats_t *cstats;
    char target[200];
    pipe_t fwd, rev;
    rm_timer_t connect_timer;
    rm_timer_t idle_timer;
    uint64_t last_activity_ms;
    rm_deferred_t destroy;
    unsigned closed : 1;
} tcp_conn_t;

static void on_read(h2o_socket_t *sock, const char *err);
static void pump(tcp_conn_t *c, pipe_t *p);

static void
on_destroy(rm_deferred_t *d)
{
    tcp_conn_t *c = H2O_STRUCT_FROM_MEMBER(tcp_conn_t, destroy, d);
    if (c->cluster != NULL)
        rm_cluster_release(c->cluster);
    free(c);
}

/* Closes both sides now; the memory goes at the end of the loop iteration (we may be inside a callback of either socket). */
static void
close_conn(tcp_conn_t *c)
{
    if (c->closed)
        return;
    c->closed = 1;
    if (rm_timer_is_linked(&c->connect_timer))
        rm_timer_unlink(&c->connect_timer);
    if (rm_timer_is_linked(&c->idle_timer))
        rm_timer_unlink(&c->idle_timer);
    if (c->connecting != NULL) {
        rm_connect_cancel(c->connecting);
        c->connecting = NULL;
    }
    if (c->direct != NULL) {
        h2o_socket_close(c->direct);
        c->direct = NULL;
    }
    if (c->up != NULL) {
        h2o_socket_close(c->up);
        c->up = NULL;
        if (c->cstats != NULL)
            RM_STAT_DEC(c->cstats->cx_active);
    }
    h2o_socket_close(c->down);
    c->down = NULL;
    c->dc->sock = NULL;
    RM_STAT_DEC(c->stats->tcp_cx_active);
    /* the registry entry goes now (rm_downstream_close_all loops until the list is empty); this object,
     * whose socket callbacks may be on the stack, at the end of the loop iteration */
    rm_dconn_destroy(c->dc);
    c->dc = NULL;
    rm_worker_defer(c->worker, &c->destroy);
}

static void
dconn_close(rm_dconn_t *dc)
{
    close_conn(dc->impl);
}

static void
dconn_drain(rm_dconn_t *dc)
{
    /* an opaque stream has no message boundary to stop at: it ends by itself, or at the drain timeout */
}

static const rm_dconn_ops_t tcp_dconn_ops = {dconn_drain, dconn_close};

static void
touch(tcp_conn_t *c)
{
    c->last_activity_ms = rm_worker_now_ms(c->worker);
}

static void
on_idle_timer(rm_timer_t *t)
{
    tcp_conn_t *c = H2O_STRUCT_FROM_MEMBER(tcp_conn_t, idle_timer, t);
    uint64_t idle_ms = c->worker->config->limits.idle_timeout_ms, now = rm_worker_now_ms(c->worker);
    if (now - c->last_activity_ms < idle_ms) {
        rm_worker_timer_start(c->worker, &c->idle_timer, idle_ms - (now - c->last_activity_ms));
        return;
    }
    rm_log_debug("tcp", "%s: idle for %llu ms; closing", c->target, (unsigned long long)idle_ms);
    RM_STAT_INC(c->stats->tcp_idle_timeout);
    close_conn(c);
}

static void
maybe_done(tcp_conn_t *c)
{
    if (c->fwd.shut && c->rev.shut)
        close_conn(c);
}

static void
shut_write(tcp_conn_t *c, pipe_t *p)
{
    if (p->shut)
        return;
    p->shut = 1;
    int fd = h2o_socket_get_fd(*p->dst);
    /* no write is in flight on dst here, so libuv has nothing queued behind this FIN */
    if (fd < 0 || shutdown(fd, SHUT_WR) != 0) {
        close_conn(c);
        return;
    }
    maybe_done(c);
}

static pipe_t *
pipe_of_src(tcp_conn_t *c, h2o_socket_t *sock)
{
    return sock == c->down ? &c->fwd : &c->rev;
}

static pipe_t *
pipe_of_dst(tcp_conn_t *c, h2o_socket_t *sock)
{
    return sock == c->up ? &c->fwd : &c->rev;
}

static void
on_written(h2o_socket_t *sock, const char *err)
{
    tcp_conn_t *c = sock->data;
    pipe_t *p = pipe_of_dst(c, sock);
    if (err != NULL) {
        rm_log_debug("tcp", "%s: write: %s", c->target, err);
        close_conn(c);
        return;
    }
    h2o_buffer_consume(&(*p->src)->input, p->inflight);
    if (p->is_upstream_to_downstream) {
        RM_STAT_ADD(c->stats->tcp_bytes_tx, p->inflight);
        if (c->cstats != NULL)
            RM_STAT_ADD(c->cstats->bytes_rx, p->inflight);
    } else {
        RM_STAT_ADD(c->stats->tcp_bytes_rx, p->inflight);
        if (c->cstats != NULL)
            RM_STAT_ADD(c->cstats->bytes_tx, p->inflight);
    }
    p->inflight = 0;
    touch(c);
    pump(c, p);
}

/* Moves what src has read to dst: one write at a time, src paused meanwhile (the write points into src's input buffer). */
static void
pump(tcp_conn_t *c, pipe_t *p)
{
    if (c->closed || p->inflight != 0)
        return;
    h2o_socket_t *src = *p->src, *dst = *p->dst;
    if (src->input->size != 0) {
        h2o_socket_read_stop(src);
        p->inflight = src->input->size;
        h2o_iovec_t buf = h2o_iovec_init(src->input->bytes, src->input->size);
        h2o_socket_write(dst, &buf, 1, on_written);
        return;
    }
    if (p->eof) {
        shut_write(c, p);
        return;
    }
    if (!h2o_socket_is_reading(src))
        h2o_socket_read_start(src, on_read);
}

static void
on_read(h2o_socket_t *sock, const char *err)
{
    tcp_conn_t *c = sock->data;
    pipe_t *p = pipe_of_src(c, sock);
    if (err != NULL) {
        /* h2o reports a FIN and a reset alike; a reset shows up as a write error on the other way */
        h2o_socket_read_stop(sock);
        p->eof = 1;
    } else {
        touch(c);
    }
    pump(c, p);
}

static void
connected(tcp_conn_t *c, h2o_socket_t *sock)
{
    if (rm_timer_is_linked(&c->connect_timer))
        rm_timer_unlink(&c->connect_timer);
    c->up = sock;
    sock->data = c;
    int on = 1;
    setsockopt(h2o_socket_get_fd(sock), IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    if (c->cstats != NULL) {
        RM_STAT_INC(c->cstats->cx_total);
        RM_STAT_INC(c->cstats->cx_active);
    }
    touch(c);
    /* bytes read during detection are in down->input: they go first */
    pump(c, &c->fwd);
    pump(c, &c->rev);
}

static void
connect_failed(tcp_conn_t *c, const char *why)
{
    rm_log_debug("tcp", "%s: %s", c->target, why);
    RM_STAT_INC(c->stats->tcp_connect_fail);
    close_conn(c);
}

static void
on_cluster_connect(rm_connect_t *conn, h2o_socket_t *sock, int err_kind, const char *err, rm_wire_protocol_t alpn, void *data)
{
    tcp_conn_t *c = data;
    c->connecting = NULL;
    if (sock == NULL) {
        connect_failed(c, err != NULL ? err : "connect failed");
        return;
    }
    connected(c, sock);
}

static void
on_direct_connect(h2o_socket_t *sock, const char *err)
{
    tcp_conn_t *c = sock->data;
    c->direct = NULL;
    if (err != NULL) {
        h2o_socket_close(sock);
        connect_failed(c, err);
        return;
    }
    connected(c, sock);
}

static void
on_connect_timer(rm_timer_t *t)
{
    tcp_conn_t *c = H2O_STRUCT_FROM_MEMBER(tcp_conn_t, connect_timer, t);
    connect_failed(c, "connect timeout");
}

/* The original destination, or loopback at its port for `inbound_to_localhost`. */
static socklen_t
direct_target(const rm_dconn_t *dc, const rm_config_listener_t *lc, struct sockaddr_storage *out)
{
    *out = dc->orig_dst;
    if (lc->direction == RM_DIRECTION_INBOUND && lc->inbound_to_localhost) {
        if (out->ss_family == AF_INET6) {
            ((struct sockaddr_in6 *)out)->sin6_addr = in6addr_loopback;
        } else {
            ((struct sockaddr_in *)out)->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        }
    }
    return out->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

void
rm_tcp_proxy_accept(rm_dconn_t *dc)
{
    rm_worker_t *worker = dc->worker;
    rm_config_t *config = worker->config;
    tcp_conn_t *c = rm_calloc(1, sizeof(*c));
    c->dc = dc;
    c->worker = worker;
    c->stats = dc->stats;
    c->down = dc->sock;
    c->down->data = c;
    c->fwd = (pipe_t){.src = &c->down, .dst = &c->up};
    c->rev = (pipe_t){.src = &c->up, .dst = &c->down, .is_upstream_to_downstream = 1};
    c->destroy.cb = on_destroy;
    c->connect_timer.cb = on_connect_timer;
    c->idle_timer.cb = on_idle_timer;
    dc->ops = &tcp_dconn_ops;
    dc->impl = c;
    RM_STAT_INC(c->stats->tcp_cx_total);
    RM_STAT_INC(c->stats->tcp_cx_active);
    touch(c);
    rm_worker_timer_start(worker, &c->idle_timer, config->limits.idle_timeout_ms);

    if (dc->listener_index >= config->num_listeners) {
        connect_failed(c, "listener removed");
        return;
    }
    const rm_config_listener_t *lc = &config->listeners[dc->listener_index];
    size_t cluster_index = SIZE_MAX;
    if (lc->opaque)
        cluster_index = lc->tcp_cluster_index;
    else if (dc->service_listener_index < config->num_service_listeners)
        cluster_index = config->service_listeners[dc->service_listener_index].service_cluster;

    if (cluster_index != SIZE_MAX) {
        c->cluster = rm_cluster_acquire(rm_cluster_lookup(worker, config, cluster_index));
        c->cstats = rm_cluster_stats(c->cluster);
        snprintf(c->target, sizeof(c->target), "cluster %s", rm_cluster_name(c->cluster));
        rm_endpoint_t *ep = rm_cluster_pick_endpoint(c->cluster);
        if (ep == NULL) {
            RM_STAT_INC(c->cstats->rq_unavailable);
            connect_failed(c, "no endpoint available");
            return;
        }
        snprintf(c->target, sizeof(c->target), "cluster %s endpoint %s", rm_cluster_name(c->cluster), ep->name);
        c->connecting = rm_connect_start(ep, on_cluster_connect, c);
        rm_endpoint_unref(ep);
        if (c->connecting == NULL)
            connect_failed(c, "cannot create a socket");
        return;
    }

    if (dc->orig_dstlen == 0) {
        connect_failed(c, "no original destination");
        return;
    }
    struct sockaddr_storage to;
    socklen_t tolen = direct_target(dc, lc, &to);
    rm_format_sockaddr((struct sockaddr *)&to, c->target, sizeof(c->target));
    c->direct = h2o_socket_connect(&worker->loop, (struct sockaddr *)&to, tolen, on_direct_connect);
    if (c->direct == NULL) {
        connect_failed(c, "cannot create a socket");
        return;
    }
    c->direct->data = c;
    rm_worker_timer_start(worker, &c->connect_timer, RM_TCP_PASSTHROUGH_CONNECT_TIMEOUT_MS);
}
