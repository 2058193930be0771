#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "filters/authz.h"
#include "tcp/tcp_proxy.h"
#include "tls/mesh_relay.h"
#include "upstream/cluster.h"
#include "net/sockio.h"

/* One side of the relay: the downstream (the client) or the upstream socket, plaintext or mesh mTLS. */
typedef struct st_side_t {
    h2o_socket_t *sock;
    /* mesh mTLS on this side (remora.mesh/tcp with the peer agent), NULL for plaintext */
    rm_mesh_relay_t *tls;
    unsigned read_eof : 1; /* the socket's read side ended (FIN, reset or error) */
} side_t;

/* One direction of the relay: bytes read from `src` are written to `dst`. */
typedef struct st_pipe_t {
    side_t *src, *dst;
    /* bytes of `plain` being written to a plaintext dst (0: no write in flight) */
    size_t inflight;
    /* what is being written to a plaintext dst: a plaintext src's input buffer taken whole (src reads on into the one
     * this was), or a TLS src's decrypted bytes (at most RM_TCP_TLS_PLAIN_MAX) */
    h2o_buffer_t *plain;
    unsigned eof : 1;     /* a TLS src sent close_notify (a plaintext src's end is src->read_eof) */
    unsigned closing : 1; /* a TLS dst: close_notify is queued, the FIN follows once it is written */
    unsigned shut : 1;    /* dst's write side was shut down after the last byte */
    unsigned is_upstream_to_downstream : 1;
} pipe_t;

typedef struct st_tcp_conn_t {
    rm_dconn_t *dc;
    rm_worker_t *worker;
    rm_listener_stats_t *stats;
    side_t down; /* down.sock == dc->sock */
    side_t up;   /* up.sock NULL until connected */
    /* connecting: through a cluster endpoint (rm_connect_t), or a direct socket (the original destination, or an
     * endpoint reached over mesh mTLS) */
    rm_connect_t *connecting;
    h2o_socket_t *direct;
    rm_cluster_t *cluster;
    rm_cluster_stats_t *cstats;
    char target[200];
    pipe_t fwd, rev;
    rm_timer_t connect_timer;
    rm_timer_t handshake_timer;
    rm_timer_t idle_timer;
    uint64_t last_activity_ms;
    rm_deferred_t destroy;
    /* outbound mesh mTLS: the SPIFFE ID the peer agent must present ("" for none) */
    char mesh_expected[RM_MESH_MAX_ID];
    unsigned handshaking : 1;
    unsigned closed : 1;
} tcp_conn_t;

static void on_read(h2o_socket_t *sock, const char *err);
static void pump(tcp_conn_t *c, pipe_t *p);
static void route(tcp_conn_t *c);

static void
on_destroy(rm_deferred_t *d)
{
    tcp_conn_t *c = H2O_STRUCT_FROM_MEMBER(tcp_conn_t, destroy, d);
    if (c->cluster != NULL)
        rm_cluster_release(c->cluster);
    /* after the sockets: a write of theirs that was in flight pointed into these buffers */
    rm_mesh_relay_destroy(c->down.tls);
    rm_mesh_relay_destroy(c->up.tls);
    h2o_buffer_dispose(&c->fwd.plain);
    h2o_buffer_dispose(&c->rev.plain);
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
    if (rm_timer_is_linked(&c->handshake_timer))
        rm_timer_unlink(&c->handshake_timer);
    if (rm_timer_is_linked(&c->idle_timer))
        rm_timer_unlink(&c->idle_timer);
    if (c->connecting != NULL) {
        rm_connect_cancel(c->connecting);
        c->connecting = NULL;
    }
    if (c->direct != NULL) {
        rm_socket_close(c->direct);
        c->direct = NULL;
    }
    if (c->up.sock != NULL) {
        rm_socket_close(c->up.sock);
        c->up.sock = NULL;
        if (c->cstats != NULL)
            RM_STAT_DEC(c->cstats->cx_active);
    }
    rm_socket_close(c->down.sock);
    c->down.sock = NULL;
    c->dc->sock = NULL;
    RM_STAT_DEC(c->stats->tcp_cx_active);
    /* the registry entry goes now (rm_downstream_close_all loops until the list is empty); this object,
     * whose socket callbacks may be on the stack, at the end of the loop iteration */
    rm_dconn_destroy(c->dc);
    c->dc = NULL;
    rm_worker_defer(c->worker, &c->destroy);
}

/* A mesh mTLS failure in the middle of a stream (a TLS error, or a peer gone without close_notify): the plaintext side is
 * reset, so that its application does not take a truncated stream for a complete one. */
static void
abort_conn(tcp_conn_t *c, const char *why)
{
    rm_log_debug("tcp", "%s: %s; resetting", c->target, why);
    side_t *plain[2] = {&c->down, &c->up};
    for (size_t i = 0; i != 2; ++i) {
        if (plain[i]->sock == NULL || plain[i]->tls != NULL)
            continue;
        int fd = h2o_socket_get_fd(plain[i]->sock);
        struct linger lg = {1, 0};
        if (fd >= 0)
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    }
    close_conn(c);
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
    int fd = h2o_socket_get_fd(p->dst->sock);
    /* no write is in flight on dst here, so libuv has nothing queued behind this FIN */
    if (fd < 0 || shutdown(fd, SHUT_WR) != 0) {
        close_conn(c);
        return;
    }
    maybe_done(c);
}

static side_t *
side_of(tcp_conn_t *c, h2o_socket_t *sock)
{
    return sock == c->down.sock ? &c->down : &c->up;
}

static pipe_t *
pipe_from(tcp_conn_t *c, side_t *s)
{
    return s == &c->down ? &c->fwd : &c->rev;
}

static pipe_t *
pipe_to(tcp_conn_t *c, side_t *s)
{
    return s == &c->up ? &c->fwd : &c->rev;
}

static void
count_bytes(tcp_conn_t *c, pipe_t *p, size_t n)
{
    if (p->is_upstream_to_downstream) {
        RM_STAT_ADD(c->stats->tcp_bytes_tx, n);
        if (c->cstats != NULL)
            RM_STAT_ADD(c->cstats->bytes_rx, n);
    } else {
        RM_STAT_ADD(c->stats->tcp_bytes_rx, n);
        if (c->cstats != NULL)
            RM_STAT_ADD(c->cstats->bytes_tx, n);
    }
}

static void on_tls_written(h2o_socket_t *sock, const char *err);

/* Sends what the TLS side has queued (one write at a time); once all is out, a queued close_notify is followed by the FIN. */
static void
flush_tls(tcp_conn_t *c, side_t *s)
{
    if (c->closed)
        return;
    h2o_iovec_t buf = rm_mesh_relay_take_output(s->tls);
    if (buf.len != 0) {
        h2o_socket_write(s->sock, &buf, 1, on_tls_written);
        return;
    }
    if (rm_mesh_relay_has_output(s->tls))
        return;
    pipe_t *in = pipe_to(c, s);
    if (in->closing && !in->shut)
        shut_write(c, in);
}

static void
on_tls_written(h2o_socket_t *sock, const char *err)
{
    tcp_conn_t *c = sock->data;
    side_t *s = side_of(c, sock);
    if (err != NULL) {
        abort_conn(c, err);
        return;
    }
    rm_mesh_relay_output_done(s->tls);
    touch(c);
    flush_tls(c, s);
    if (!c->closed)
        pump(c, pipe_to(c, s)); /* the plaintext source was paused while its bytes were being sent */
}

static void
on_written(h2o_socket_t *sock, const char *err)
{
    tcp_conn_t *c = sock->data;
    pipe_t *p = pipe_to(c, side_of(c, sock));
    if (err != NULL) {
        rm_log_debug("tcp", "%s: write: %s", c->target, err);
        close_conn(c);
        return;
    }
    h2o_buffer_consume(&p->plain, p->inflight);
    count_bytes(c, p, p->inflight);
    p->inflight = 0;
    touch(c);
    pump(c, p);
}

static void
read_more(side_t *s)
{
    if (!h2o_socket_is_reading(s->sock))
        h2o_socket_read_start(s->sock, on_read);
}

/*
 * plaintext -> plaintext: one write at a time, of what src had read, taken whole: src's input buffer becomes the write's
 * (p->plain) and src reads on into the other one, up to RM_TCP_READ_AHEAD while the write is in flight (fewer, larger
 * reads and writes, and no stop/start of reading per chunk); past it src is paused until the write completes.
 */
static void
pump_plain(tcp_conn_t *c, pipe_t *p)
{
    h2o_socket_t *src = p->src->sock, *dst = p->dst->sock;
    if (p->inflight == 0 && src->input->size != 0) {
        h2o_buffer_t *swap = p->plain; /* empty: its bytes were consumed when its write completed */
        p->plain = src->input;
        src->input = swap;
        p->inflight = p->plain->size;
        /* a bulk flow: room for the whole read-ahead at once (growing the buffer read by read would copy what was read
         * before); small exchanges keep h2o's small recycled buffers */
        if (p->inflight >= RM_TCP_READ_AHEAD / 4)
            h2o_buffer_reserve(&src->input, RM_TCP_READ_AHEAD);
        h2o_iovec_t buf = h2o_iovec_init(p->plain->bytes, p->plain->size);
        h2o_socket_write(dst, &buf, 1, on_written);
    }
    if (p->inflight != 0) {
        if (src->input->size >= RM_TCP_READ_AHEAD || p->src->read_eof)
            h2o_socket_read_stop(src);
        else
            read_more(p->src);
        return;
    }
    if (p->src->read_eof) {
        shut_write(c, p);
        return;
    }
    read_more(p->src);
}

/* plaintext -> mesh mTLS: what src has read is encrypted once the previous records are out (src reads on meanwhile, up to
 * RM_TCP_READ_AHEAD); its end is close_notify */
static void
pump_encrypt(tcp_conn_t *c, pipe_t *p)
{
    rm_mesh_relay_t *t = p->dst->tls;
    h2o_socket_t *src = p->src->sock;
    if (p->closing || p->shut)
        return;
    if (rm_mesh_relay_has_output(t)) {
        /* records are on their way: read on up to RM_TCP_READ_AHEAD, encrypted once they are out */
        if (src->input->size >= RM_TCP_READ_AHEAD || p->src->read_eof)
            h2o_socket_read_stop(src);
        else
            read_more(p->src);
        flush_tls(c, p->dst);
        return;
    }
    size_t n = src->input->size;
    if (n != 0) {
        if (rm_mesh_relay_write(t, src->input->bytes, n) != 0) {
            abort_conn(c, "mesh mTLS: cannot encrypt");
            return;
        }
        h2o_buffer_consume(&src->input, n);
        count_bytes(c, p, n);
        if (n >= RM_TCP_READ_AHEAD / 4)
            h2o_buffer_reserve(&src->input, RM_TCP_READ_AHEAD); /* a bulk flow: see pump_plain */
        if (!p->src->read_eof)
            read_more(p->src);
        flush_tls(c, p->dst);
        return;
    }
    if (p->src->read_eof) {
        p->closing = 1;
        rm_mesh_relay_close_notify(t);
        flush_tls(c, p->dst);
        return;
    }
    read_more(p->src);
}

/* mesh mTLS -> plaintext: decrypt up to RM_TCP_TLS_PLAIN_MAX, write it (src reads on meanwhile, up to RM_TCP_READ_AHEAD
 * of ciphertext); close_notify is the end */
static void
pump_decrypt(tcp_conn_t *c, pipe_t *p)
{
    side_t *src = p->src;
    if (p->shut)
        return;
    if (p->inflight != 0) {
        /* the plaintext is on its way: ciphertext may arrive meanwhile, up to RM_TCP_READ_AHEAD */
        if (src->sock->input->size >= RM_TCP_READ_AHEAD || src->read_eof || p->eof)
            h2o_socket_read_stop(src->sock);
        else
            read_more(src);
        return;
    }
    if (p->plain->size == 0 && !p->eof) {
        char err[300];
        rm_mesh_relay_status_t r = rm_mesh_relay_read(src->tls, &p->plain, RM_TCP_TLS_PLAIN_MAX, err, sizeof(err));
        flush_tls(c, src); /* what reading made OpenSSL send (a KeyUpdate's answer) */
        if (c->closed)
            return;
        if (r == RM_MESH_RELAY_ERROR) {
            abort_conn(c, err);
            return;
        }
        if (r == RM_MESH_RELAY_EOF)
            p->eof = 1;
        if (r == RM_MESH_RELAY_WANT && src->read_eof) {
            abort_conn(c, "mesh mTLS: the peer agent closed without close_notify (truncated)");
            return;
        }
    }
    if (p->plain->size != 0) {
        p->inflight = p->plain->size;
        h2o_iovec_t buf = h2o_iovec_init(p->plain->bytes, p->plain->size);
        h2o_socket_write(p->dst->sock, &buf, 1, on_written);
        if (src->sock->input->size >= RM_TCP_READ_AHEAD || src->read_eof || p->eof)
            h2o_socket_read_stop(src->sock);
        else
            read_more(src);
        return;
    }
    if (p->eof) {
        /* what the peer sends after its close_notify is not ours to read */
        h2o_socket_read_stop(src->sock);
        shut_write(c, p);
        return;
    }
    read_more(src);
}

static void
pump(tcp_conn_t *c, pipe_t *p)
{
    if (c->closed || c->handshaking || c->up.sock == NULL)
        return;
    if (p->dst->tls != NULL)
        pump_encrypt(c, p);
    else if (p->src->tls != NULL)
        pump_decrypt(c, p);
    else
        pump_plain(c, p);
}

static void handshake_step(tcp_conn_t *c);

static void
on_read(h2o_socket_t *sock, const char *err)
{
    tcp_conn_t *c = sock->data;
    side_t *s = side_of(c, sock);
    if (err != NULL && err != h2o_socket_error_closed) {
        /* a reset or another read error, not a FIN: libuv has marked the stream unwritable, and h2o 2.2.5 drops the
         * error of a write started on it (its callback never comes), so nothing more can go this way: end both
         * directions, passing the reset on */
        abort_conn(c, err);
        return;
    }
    if (err != NULL) {
        h2o_socket_read_stop(sock);
        s->read_eof = 1;
    } else {
        touch(c);
    }
    if (c->handshaking) {
        handshake_step(c);
        return;
    }
    pump(c, pipe_from(c, s));
}

/* The relay runs: bytes read during detection (in down's input) go first. */
static void
start_relay(tcp_conn_t *c)
{
    touch(c);
    pump(c, &c->fwd);
    pump(c, &c->rev);
}

/*
 * Authorization of an opaque connection (filters/authz.h, rm_authz_evaluate_connection) on the serving side: the policies
 * of the Service's cluster, with the caller's SPIFFE ID (NULL for plaintext). Every decision is counted in
 * remora_authz_decisions_total like a request's; a refusal also in remora_tcp_authz_denied_total.
 */
typedef struct st_authz_ctx_t {
    tcp_conn_t *c;
    const char *cluster;
    const char *denied_by; /* the first policy counted `deny` */
} authz_ctx_t;

static void
peer_name(tcp_conn_t *c, char *name, size_t len)
{
    snprintf(name, len, "unknown");
    if (c->dc->peerlen != 0)
        rm_format_sockaddr((struct sockaddr *)&c->dc->peer, name, len);
}

static void
authz_record(void *arg, const rm_config_authz_policy_t *p, rm_authz_decision_t d)
{
    authz_ctx_t *ctx = arg;
    tcp_conn_t *c = ctx->c;
    if (d == RM_AUTHZ_DECISION_DENY && ctx->denied_by == NULL)
        ctx->denied_by = p->name;
    if (d == RM_AUTHZ_DECISION_AUDIT_DENY) {
        char name[80];
        peer_name(c, name, sizeof(name));
        rm_authz_audit_connection(p, c->dc->peer_identity, name, ctx->cluster);
    }
    rm_authz_count(c->worker, c->worker->config, p, d);
}

/* 1 if the caller may reach `cluster_index` (always, on an OUTBOUND transparent listener: a Service is protected where it is
 * served); else the connection is closed and 0 returned. */
static int
authorize(tcp_conn_t *c, const rm_config_listener_t *lc, size_t cluster_index)
{
    rm_config_t *config = c->worker->config;
    if (lc->direction == RM_DIRECTION_OUTBOUND || cluster_index >= config->num_clusters)
        return 1;
    const rm_config_authz_t *authz = config->clusters[cluster_index].authz;
    if (authz == NULL)
        return 1;
    authz_ctx_t ctx = {.c = c, .cluster = config->clusters[cluster_index].name};
    if (rm_authz_evaluate_connection(authz, c->dc->peer_identity, authz_record, &ctx))
        return 1;
    static __thread uint64_t logged_at_ms;
    uint64_t now = rm_worker_now_ms(c->worker);
    if (logged_at_ms == 0 || now - logged_at_ms >= RM_TCP_DENIED_LOG_INTERVAL_MS) {
        char name[80];
        peer_name(c, name, sizeof(name));
        rm_log_info("tcp", "denying opaque TCP from %s (%s) to %s: authorization policy %s", name,
                    c->dc->peer_identity != NULL ? c->dc->peer_identity : "no identity", config->clusters[cluster_index].name,
                    ctx.denied_by != NULL ? ctx.denied_by : "(unnamed)");
        logged_at_ms = now != 0 ? now : 1;
    }
    rm_mesh_count_tcp_denied();
    close_conn(c);
    return 0;
}

/*
 * Handshakes (mesh mTLS on one side: the upstream one on the calling agent, the downstream one on the serving agent)
 */

static side_t *
tls_side(tcp_conn_t *c)
{
    return c->up.tls != NULL ? &c->up : &c->down;
}

static void
handshake_done(tcp_conn_t *c, const char *err)
{
    side_t *s = tls_side(c);
    rm_mesh_direction_t dir = s == &c->up ? RM_MESH_OUTBOUND : RM_MESH_INBOUND;
    rm_mesh_handshake_t *hs = rm_mesh_relay_handshake_state(s->tls);
    if (rm_timer_is_linked(&c->handshake_timer))
        rm_timer_unlink(&c->handshake_timer);
    c->handshaking = 0;
    rm_mesh_result_t result = rm_mesh_handshake_result(hs, dir, err);
    if ((result == RM_MESH_SUCCESS || result == RM_MESH_RESUMED) && !rm_mesh_relay_alpn_ok(s->tls)) {
        result = RM_MESH_ERROR;
        snprintf(hs->why, sizeof(hs->why), "the peer agent negotiated no %s (ALPN)", RM_MESH_ALPN_TCP);
    }
    if (result != RM_MESH_SUCCESS && result != RM_MESH_RESUMED) {
        if (dir == RM_MESH_OUTBOUND) {
            rm_log_info("mesh-tls", "mesh mTLS handshake with %s: %s (%s)", c->target, hs->why, rm_mesh_result_name(result));
            RM_STAT_INC(c->stats->tcp_connect_fail);
            if (c->cstats != NULL)
                RM_STAT_INC(c->cstats->cx_connect_fail);
        } else {
            char name[80] = "unknown";
            if (c->dc->peerlen != 0)
                rm_format_sockaddr((struct sockaddr *)&c->dc->peer, name, sizeof(name));
            rm_log_info("mesh-tls", "mesh mTLS handshake from %s failed (%s): %s", name, rm_mesh_result_name(result), hs->why);
        }
        close_conn(c);
        return;
    }
    rm_mesh_count_connection(dir, 1);
    if (dir == RM_MESH_OUTBOUND) {
        start_relay(c);
        return;
    }
    /* the serving agent: the caller is known, now its destination */
    c->dc->peer_identity = rm_strdup(hs->peer_id);
    c->dc->peer_identity_hash = rm_fnv1a(RM_FNV1A_INIT, c->dc->peer_identity, strlen(c->dc->peer_identity));
    rm_log_debug("tcp", "opaque TCP over mesh mTLS from %s", c->dc->peer_identity);
    h2o_socket_read_stop(c->down.sock); /* the records after the handshake wait in its input until the upstream is there */
    route(c);
}

static void
handshake_step(tcp_conn_t *c)
{
    side_t *s = tls_side(c);
    rm_mesh_relay_status_t r = rm_mesh_relay_handshake(s->tls);
    flush_tls(c, s);
    if (c->closed)
        return;
    switch (r) {
    case RM_MESH_RELAY_WANT:
        if (s->read_eof) {
            handshake_done(c, "connection closed during the handshake");
            return;
        }
        read_more(s);
        return;
    case RM_MESH_RELAY_DONE:
        handshake_done(c, NULL);
        return;
    default:
        handshake_done(c, rm_mesh_relay_handshake_state(s->tls)->why[0] != '\0' ? rm_mesh_relay_handshake_state(s->tls)->why
                                                                                : "TLS handshake failed");
        return;
    }
}

static void
on_handshake_timer(rm_timer_t *t)
{
    tcp_conn_t *c = H2O_STRUCT_FROM_MEMBER(tcp_conn_t, handshake_timer, t);
    handshake_done(c, "handshake timeout");
}

static void
start_handshake(tcp_conn_t *c, uint64_t timeout_ms)
{
    c->handshaking = 1;
    rm_worker_timer_start(c->worker, &c->handshake_timer, timeout_ms);
    handshake_step(c);
}

/*
 * Upstream connection
 */

static void
connected(tcp_conn_t *c, h2o_socket_t *sock)
{
    if (rm_timer_is_linked(&c->connect_timer))
        rm_timer_unlink(&c->connect_timer);
    c->up.sock = sock;
    sock->data = c;
    int on = 1;
    setsockopt(h2o_socket_get_fd(sock), IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    if (c->cstats != NULL) {
        RM_STAT_INC(c->cstats->cx_total);
        RM_STAT_INC(c->cstats->cx_active);
    }
    touch(c);
    if (c->mesh_expected[0] != '\0') {
        if ((c->up.tls = rm_mesh_relay_client(c->mesh_expected, sock)) != NULL) {
            start_handshake(c, rm_cluster_config(c->cluster)->connect_timeout_ms);
            return;
        }
        /* the identity went away since the connect started: the hop stays plaintext (a STRICT peer refuses it) */
        rm_mesh_count_handshake(RM_MESH_OUTBOUND, RM_MESH_NO_IDENTITY);
        rm_mesh_count_connection(RM_MESH_OUTBOUND, 0);
    }
    start_relay(c);
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
        rm_socket_close(sock);
        if (c->cstats != NULL)
            RM_STAT_INC(c->cstats->cx_connect_fail);
        connect_failed(c, err);
        return;
    }
    connected(c, sock);
}

static void
on_connect_timer(rm_timer_t *t)
{
    tcp_conn_t *c = H2O_STRUCT_FROM_MEMBER(tcp_conn_t, connect_timer, t);
    if (c->cstats != NULL && c->direct != NULL && c->mesh_expected[0] != '\0')
        RM_STAT_INC(c->cstats->cx_connect_fail);
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

/*
 * Whether the relay to `ep` is mesh mTLS (docs/mesh-tls.md), the rules of the HTTP hops (upstream/cluster.c): the
 * endpoint runs an agent (a `peer: agent` cluster, a meshed Service's agent hop, or a meshed Service reached through an
 * OUTBOUND transparent listener: a `protocol: tcp` one has no agent_hop, which means HTTP/2 to the peer), an expected
 * identity, no `tls:` of the cluster's own, MeshTLS not DISABLE, an identity in service. Not for the application's own
 * TLS (relayed as it is). Fills c->mesh_expected, or leaves it "" for plaintext; counts a plaintext agent hop.
 */
static void
choose_mesh(tcp_conn_t *c, const rm_endpoint_t *ep)
{
    const rm_config_cluster_t *cfg = rm_cluster_config(c->cluster);
    c->mesh_expected[0] = '\0';
    int agent = cfg->peer_agent || cfg->agent_hop || (cfg->meshed && !cfg->inbound && c->dc->direction == RM_DIRECTION_OUTBOUND);
    if (!agent || c->dc->app_tls)
        return;
    const char *identity = ep->peer_identity != NULL ? ep->peer_identity : cfg->peer_identity;
    if (cfg->tls || identity == NULL || c->worker->config->mesh_tls.mode == RM_MESH_TLS_DISABLE) {
        /* rm_connect_start counts the hops of agent_hop and peer_agent clusters */
        if (!(cfg->peer_agent || cfg->agent_hop))
            rm_mesh_count_connection(RM_MESH_OUTBOUND, cfg->tls);
        return;
    }
    SSL_CTX *ctx = NULL;
    if (rm_mesh_expected_id(identity, c->mesh_expected, sizeof(c->mesh_expected)) == 0)
        ctx = rm_mesh_tls_client_ctx(c->mesh_expected, RM_MESH_PROTO_TCP);
    if (ctx == NULL) {
        /* no identity of our own: the hop stays plaintext (a STRICT peer refuses it) */
        c->mesh_expected[0] = '\0';
        rm_mesh_count_handshake(RM_MESH_OUTBOUND, RM_MESH_NO_IDENTITY);
        if (!(cfg->peer_agent || cfg->agent_hop))
            rm_mesh_count_connection(RM_MESH_OUTBOUND, 0);
        return;
    }
    SSL_CTX_free(ctx);
}

/* Where to: the listener's cluster, the Service's, or the original destination; then connect. */
static void
route(tcp_conn_t *c)
{
    rm_worker_t *worker = c->worker;
    rm_config_t *config = worker->config;
    rm_dconn_t *dc = c->dc;
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
    if (cluster_index != SIZE_MAX && !authorize(c, lc, cluster_index))
        return;

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
        choose_mesh(c, ep);
        if (c->mesh_expected[0] != '\0') {
            /* TCP to the endpoint here, TLS over it by the relay (rm_connect_start would count the hop as plaintext) */
            c->direct = h2o_socket_connect(&worker->loop, (struct sockaddr *)&ep->addr, ep->addrlen, on_direct_connect);
            rm_endpoint_unref(ep);
            if (c->direct == NULL) {
                RM_STAT_INC(c->cstats->cx_connect_fail);
                connect_failed(c, "cannot create a socket");
                return;
            }
            c->direct->data = c;
            rm_worker_timer_start(worker, &c->connect_timer, rm_cluster_config(c->cluster)->connect_timeout_ms);
            return;
        }
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

void
rm_tcp_proxy_accept(rm_dconn_t *dc)
{
    rm_worker_t *worker = dc->worker;
    rm_config_t *config = worker->config;
    tcp_conn_t *c = rm_calloc(1, sizeof(*c));
    c->dc = dc;
    c->worker = worker;
    c->stats = dc->stats;
    c->down.sock = dc->sock;
    c->down.sock->data = c;
    c->fwd = (pipe_t){.src = &c->down, .dst = &c->up};
    c->rev = (pipe_t){.src = &c->up, .dst = &c->down, .is_upstream_to_downstream = 1};
    h2o_buffer_init(&c->fwd.plain, &h2o_socket_buffer_prototype);
    h2o_buffer_init(&c->rev.plain, &h2o_socket_buffer_prototype);
    c->destroy.cb = on_destroy;
    c->connect_timer.cb = on_connect_timer;
    c->handshake_timer.cb = on_handshake_timer;
    c->idle_timer.cb = on_idle_timer;
    dc->ops = &tcp_dconn_ops;
    dc->impl = c;
    RM_STAT_INC(c->stats->tcp_cx_total);
    RM_STAT_INC(c->stats->tcp_cx_active);
    touch(c);
    rm_worker_timer_start(worker, &c->idle_timer, config->limits.idle_timeout_ms);
    if (dc->peerlen != 0)
        rm_format_sockaddr((struct sockaddr *)&dc->peer, c->target, sizeof(c->target));

    if (dc->mesh_tcp) {
        /* a peer agent's relay (remora.mesh/tcp): terminate its mesh mTLS first, bounded by the detection timeout */
        if ((c->down.tls = rm_mesh_relay_server(c->down.sock)) == NULL) {
            rm_mesh_count_handshake(RM_MESH_INBOUND, RM_MESH_NO_IDENTITY);
            static __thread uint64_t logged_at_ms;
            uint64_t now = rm_worker_now_ms(worker);
            if (logged_at_ms == 0 || now - logged_at_ms >= RM_MESH_REFUSED_LOG_INTERVAL_MS) {
                rm_log_warn("mesh-tls", "closing mesh mTLS from %s: this agent has no identity (docs/identity.md)", c->target);
                logged_at_ms = now != 0 ? now : 1;
            }
            close_conn(c);
            return;
        }
        start_handshake(c, config->limits.detect_timeout_ms);
        return;
    }
    route(c);
}
