#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "core/registry.h"
#include "net/detect.h"
#include "net/listener.h"
#include "tls/identity.h"
#include "tls/tls.h"
#include "net/sockio.h"

/* <linux/netfilter_ipv4.h> and <linux/netfilter_ipv6/ip6_tables.h> clash with <netinet/in.h>: their values */
#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80
#endif
#define RM_IP6T_SO_ORIGINAL_DST 80

int
rm_listen_fd_open(const rm_config_addr_t *addr, char *err, size_t errlen)
{
    char name[80];
    rm_format_sockaddr((const struct sockaddr *)&addr->addr, name, sizeof(name));
    int fd = socket(addr->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(err, errlen, "listen %s: socket: %s", name, strerror(errno));
        return -1;
    }
    int on = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof(on));
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &on, sizeof(on)) != 0) {
        snprintf(err, errlen, "listen %s: SO_REUSEPORT: %s", name, strerror(errno));
        goto fail;
    }
    if (addr->addr.ss_family == AF_INET6)
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof(on));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    if (bind(fd, (const struct sockaddr *)&addr->addr, addr->addrlen) != 0) {
        snprintf(err, errlen, "listen %s: bind: %s", name, strerror(errno));
        goto fail;
    }
    if (listen(fd, 4096) != 0) {
        snprintf(err, errlen, "listen %s: listen: %s", name, strerror(errno));
        goto fail;
    }
    return fd;
fail:
    close(fd);
    return -1;
}

/*
 * Open connections per listener address, across workers
 */

struct st_rm_listener_conns_t {
    rm_registry_entry_t _entry;
    _Atomic uint32_t open;
};

/* One entry per listener address; references: each worker's listener and each open connection. */
static rm_registry_t conns_registry = RM_REGISTRY_INITIALIZER;

static rm_registry_entry_t *
create_conns(void *unused)
{
    rm_listener_conns_t *c = rm_calloc(1, sizeof(*c));
    atomic_init(&c->open, 0);
    return &c->_entry;
}

static rm_listener_conns_t *
conns_acquire(const rm_config_addr_t *addr)
{
    char name[80];
    rm_format_sockaddr((const struct sockaddr *)&addr->addr, name, sizeof(name));
    return RM_REGISTRY_OWNER(rm_listener_conns_t, _entry, rm_registry_acquire(&conns_registry, name, create_conns, NULL, NULL));
}

static void
conns_release(rm_listener_conns_t *c)
{
    if (c != NULL && rm_registry_release(&conns_registry, &c->_entry))
        free(c);
}

/* Counts a new connection unless `max` (not 0) are open already. Returns 1 if counted. */
static int
conns_enter(rm_listener_conns_t *c, uint32_t max)
{
    uint32_t cur = atomic_load_explicit(&c->open, memory_order_relaxed);
    do {
        if (cur >= max)
            return 0;
    } while (!atomic_compare_exchange_weak_explicit(&c->open, &cur, cur + 1, memory_order_relaxed, memory_order_relaxed));
    return 1;
}

rm_listener_t *
rm_listener_new(rm_worker_t *worker, int fd, const rm_config_addr_t *addr)
{
    rm_listener_t *l = rm_calloc(1, sizeof(*l));
    l->worker = worker;
    l->fd = fd;
    l->addr = *addr;
    l->conns = conns_acquire(addr);
    l->config_index = SIZE_MAX;
    l->next = worker->listeners;
    worker->listeners = l;
    return l;
}

static int
addr_equal(const rm_config_addr_t *a, const rm_config_addr_t *b)
{
    return a->addrlen == b->addrlen && memcmp(&a->addr, &b->addr, a->addrlen) == 0;
}

static size_t
find_listener_config(const rm_config_t *config, const rm_config_addr_t *addr)
{
    for (size_t i = 0; i != config->num_listeners; ++i)
        if (addr_equal(&config->listeners[i].addr, addr))
            return i;
    return SIZE_MAX;
}

const rm_config_listener_t *
rm_dconn_listener(rm_dconn_t *dc, rm_config_t *config)
{
    if (dc->service_listener_index < config->num_service_listeners && dc->listener_index < config->num_listeners)
        return &config->service_listeners[dc->service_listener_index];
    if (dc->listener_index < config->num_listeners)
        return &config->listeners[dc->listener_index];
    return NULL;
}

/*
 * Downstream connections and detection
 */

static void dconn_close_detecting(rm_dconn_t *dc);

static void
dconn_drain_detecting(rm_dconn_t *dc)
{
    /* nothing was received yet: nobody is waiting for an answer */
    dconn_close_detecting(dc);
}

static const rm_dconn_ops_t detecting_ops = {dconn_drain_detecting, dconn_close_detecting};

void
rm_dconn_destroy(rm_dconn_t *dc)
{
    rm_worker_t *worker = dc->worker;
    if (rm_timer_is_linked(&dc->_detect_timeout))
        rm_timer_unlink(&dc->_detect_timeout);
    h2o_linklist_unlink(&dc->_link);
    if (dc->_conns != NULL) {
        atomic_fetch_sub_explicit(&dc->_conns->open, 1, memory_order_relaxed);
        conns_release(dc->_conns);
    }
    rm_mesh_handshake_end(&dc->mesh_hs);
    free(dc->peer_identity);
    --worker->num_downstream_conns;
    RM_STAT_DEC(dc->stats->cx_active);
    free(dc);
    rm_worker_conn_closed(worker);
}

static void
dconn_close_detecting(rm_dconn_t *dc)
{
    rm_socket_close(dc->sock);
    rm_dconn_destroy(dc);
}

static void
hand_over_opaque(rm_dconn_t *dc, rm_detect_result_t result)
{
    if (rm_timer_is_linked(&dc->_detect_timeout))
        rm_timer_unlink(&dc->_detect_timeout);
    h2o_socket_read_stop(dc->sock);
    RM_STAT_INC(dc->stats->detect[result]);
    rm_tcp_proxy_accept(dc);
}

/* The listener config of a connection being detected (NULL if it left the snapshot). */
static const rm_config_listener_t *
detect_listener(rm_dconn_t *dc)
{
    rm_config_t *config = dc->worker->config;
    return dc->listener_index < config->num_listeners ? &config->listeners[dc->listener_index] : NULL;
}

/* Inbound transparent listeners and explicit `peer: agent` ones: where mesh mTLS ends (docs/mesh-tls.md). */
static int
is_mesh_listener(rm_dconn_t *dc)
{
    const rm_config_listener_t *lc = detect_listener(dc);
    return lc != NULL && (lc->direction == RM_DIRECTION_INBOUND || (lc->direction == RM_DIRECTION_NONE && lc->peer_agent));
}

/* Plaintext arrived on a mesh listener: 1 if it was refused (STRICT; the connection is closed), else 0 (counted). */
static int
refuse_plaintext(rm_dconn_t *dc)
{
    if (!is_mesh_listener(dc))
        return 0;
    if (dc->worker->config->mesh_tls.mode != RM_MESH_TLS_STRICT) {
        rm_mesh_count_connection(RM_MESH_INBOUND, 0);
        return 0;
    }
    rm_mesh_count_plaintext_refused();
    RM_STAT_INC(dc->stats->rq_protocol_error);
    /* at most one line per source per interval: a small direct-mapped table per worker */
    static __thread struct {
        struct sockaddr_storage peer;
        uint64_t at_ms;
    } logged[64];
    uint64_t h = 0;
    const unsigned char *b = (const unsigned char *)&dc->peer;
    size_t n = dc->peer.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    for (size_t i = 0; i != n; ++i)
        if (i < 2 || i >= 4) /* not the port: one line per address */
            h = h * 31 + b[i];
    uint64_t now = rm_worker_now_ms(dc->worker);
    size_t slot = h % 64;
    struct sockaddr_storage key = dc->peer;
    if (key.ss_family == AF_INET)
        ((struct sockaddr_in *)&key)->sin_port = 0;
    else if (key.ss_family == AF_INET6)
        ((struct sockaddr_in6 *)&key)->sin6_port = 0;
    if (memcmp(&logged[slot].peer, &key, sizeof(key)) != 0 || logged[slot].at_ms == 0 ||
        now - logged[slot].at_ms >= RM_MESH_REFUSED_LOG_INTERVAL_MS) {
        char name[80] = "unknown";
        if (dc->peerlen != 0)
            rm_format_sockaddr((struct sockaddr *)&dc->peer, name, sizeof(name));
        rm_log_warn("mesh-tls", "refusing plaintext from %s: MeshTLS mode is STRICT (mesh mTLS required)", name);
        logged[slot].peer = key;
        logged[slot].at_ms = now != 0 ? now : 1;
    }
    dconn_close_detecting(dc);
    return 1;
}

static void
on_detect_timeout(rm_timer_t *entry)
{
    rm_dconn_t *dc = H2O_STRUCT_FROM_MEMBER(rm_dconn_t, _detect_timeout, entry);
    if (dc->_opaque_wait && !dc->is_tls) {
        /* no mesh ClientHello in time: a client that waits for its server (MySQL, SMTP), plaintext unless STRICT */
        if (refuse_plaintext(dc))
            return;
        hand_over_opaque(dc, RM_DETECT_TIMEOUT);
        return;
    }
    if (dc->is_tls) {
        rm_log_debug("listener", "closing connection whose TLS handshake did not finish in time");
        RM_STAT_INC(dc->stats->detect[RM_DETECT_TIMEOUT]);
        dconn_close_detecting(dc);
        return;
    }
    if (dc->direction != RM_DIRECTION_NONE) {
        if (refuse_plaintext(dc))
            return;
        /* a client that waits for the server (or a slow one): relay what it is, as Linkerd and Istio do */
        rm_log_debug("listener", "nothing detectable in time; relaying as opaque TCP");
        hand_over_opaque(dc, RM_DETECT_TIMEOUT);
        return;
    }
    RM_STAT_INC(dc->stats->detect[RM_DETECT_TIMEOUT]);
    rm_log_debug("listener", "closing connection that sent nothing detectable in time");
    dconn_close_detecting(dc);
}

static void
hand_over(rm_dconn_t *dc, int h2)
{
    rm_timer_unlink(&dc->_detect_timeout);
    h2o_socket_read_stop(dc->sock);
    if (!dc->is_tls)
        RM_STAT_INC(dc->stats->detect[h2 ? RM_DETECT_H2 : RM_DETECT_HTTP1]);
    if (h2) {
        RM_STAT_INC(dc->stats->cx_h2);
        rm_h2server_accept(dc);
    } else {
        RM_STAT_INC(dc->stats->cx_http1);
        rm_h1server_accept(dc);
    }
}

static void
on_handshake_complete(h2o_socket_t *sock, const char *err)
{
    rm_dconn_t *dc = sock->data;
    if (err != NULL) {
        rm_log_debug("listener", "TLS handshake failed: %s", err);
        dconn_close_detecting(dc);
        return;
    }
    RM_STAT_INC(dc->stats->cx_tls);
    h2o_iovec_t proto = h2o_socket_ssl_get_selected_protocol(sock);
    const rm_config_listener_t *lc = detect_listener(dc);
    /* a `protocol: h2` listener offers only h2: a client that negotiated nothing speaks HTTP/2 or gets its GOAWAY */
    hand_over(dc, (lc != NULL && lc->h2_only) || h2o_memis(proto.base, proto.len, H2O_STRLIT("h2")));
}

static void
on_mesh_handshake(h2o_socket_t *sock, const char *err)
{
    rm_dconn_t *dc = sock->data;
    rm_mesh_handshake_end(&dc->mesh_hs);
    rm_mesh_result_t result = rm_mesh_handshake_result(&dc->mesh_hs, RM_MESH_INBOUND, err);
    int proto = err == NULL ? rm_mesh_alpn_proto(h2o_socket_ssl_get_selected_protocol(sock)) : -1;
    if (result != RM_MESH_SUCCESS && result != RM_MESH_RESUMED) {
        char name[80] = "unknown";
        if (dc->peerlen != 0)
            rm_format_sockaddr((struct sockaddr *)&dc->peer, name, sizeof(name));
        rm_log_info("mesh-tls", "mesh mTLS handshake from %s failed (%s): %s", name, rm_mesh_result_name(result), dc->mesh_hs.why);
        dconn_close_detecting(dc);
        return;
    }
    if (proto < 0 || proto == RM_MESH_PROTO_TCP) {
        /* remora.mesh/tcp hellos go to the opaque relay (hand_over_mesh_tcp): this one offered it among HTTP ids only */
        rm_log_info("mesh-tls", "mesh mTLS from %s negotiated no mesh HTTP protocol; closing", dc->mesh_hs.peer_id);
        dconn_close_detecting(dc);
        return;
    }
    dc->peer_identity = rm_strdup(dc->mesh_hs.peer_id);
    dc->peer_identity_hash = rm_fnv1a(RM_FNV1A_INIT, dc->peer_identity, strlen(dc->peer_identity));
    rm_mesh_count_connection(RM_MESH_INBOUND, 1);
    RM_STAT_INC(dc->stats->cx_tls);
    hand_over(dc, proto == RM_MESH_PROTO_H2);
}

/* A ClientHello offering a mesh ALPN id on a mesh listener: terminate it with the agent's identity. */
static void
start_mesh_handshake(rm_dconn_t *dc)
{
    SSL_CTX *ctx = rm_mesh_tls_server_ctx();
    if (ctx == NULL) {
        char name[80] = "unknown";
        if (dc->peerlen != 0)
            rm_format_sockaddr((struct sockaddr *)&dc->peer, name, sizeof(name));
        rm_mesh_count_handshake(RM_MESH_INBOUND, RM_MESH_NO_IDENTITY);
        /* at most one line per worker per interval: every caller of the mesh would repeat it */
        static __thread uint64_t logged_at_ms;
        uint64_t now = rm_worker_now_ms(dc->worker);
        if (logged_at_ms == 0 || now - logged_at_ms >= RM_MESH_REFUSED_LOG_INTERVAL_MS) {
            rm_log_warn("mesh-tls", "closing mesh mTLS from %s: this agent has no identity (docs/identity.md)", name);
            logged_at_ms = now != 0 ? now : 1;
        }
        dconn_close_detecting(dc);
        return;
    }
    dc->is_tls = 1;
    RM_STAT_INC(dc->stats->detect[RM_DETECT_TLS]);
    h2o_socket_read_stop(dc->sock);
    rm_mesh_handshake_start(&dc->mesh_hs, dc->sock, NULL);
    /* the ClientHello bytes already read stay in sock->input; h2o feeds them to the handshake */
    h2o_socket_ssl_handshake(dc->sock, ctx, NULL, on_mesh_handshake);
    SSL_CTX_free(ctx); /* the connection's SSL holds its own reference */
}

/* A peer agent's opaque relay (ALPN remora.mesh/tcp): tcp/tcp_proxy.c terminates its mesh mTLS and relays. */
static void
hand_over_mesh_tcp(rm_dconn_t *dc)
{
    dc->mesh_tcp = 1;
    dc->is_tls = 1;
    RM_STAT_INC(dc->stats->cx_tls);
    hand_over_opaque(dc, RM_DETECT_TLS);
}

/* The application's own TLS: not ours to end, relayed as it is (docs/transparent.md), never wrapped in mesh mTLS. */
static void
hand_over_app_tls(rm_dconn_t *dc)
{
    dc->app_tls = 1;
    hand_over_opaque(dc, RM_DETECT_TLS);
}

/*
 * The first bytes to an opaque destination (dc->_opaque_wait): only a mesh ClientHello is looked for. Bytes that are no
 * TLS record, or a timeout (on_detect_timeout), are the application's plaintext: relayed, or refused under STRICT.
 */
static void
on_opaque_wait_read(h2o_socket_t *sock, const char *err)
{
    rm_dconn_t *dc = sock->data;
    size_t len = sock->input->size;
    if (err != NULL) {
        if (len == 0)
            dconn_close_detecting(dc);
        else if (!refuse_plaintext(dc))
            hand_over_opaque(dc, RM_DETECT_OPAQUE); /* a short message and a half-close */
        return;
    }
    if (len == 0)
        return;
    const unsigned char *in = (const unsigned char *)sock->input->bytes;
    if (in[0] != 0x16 || (len >= 2 && in[1] != 0x03)) {
        if (!refuse_plaintext(dc))
            hand_over_opaque(dc, RM_DETECT_OPAQUE);
        return;
    }
    int tcp;
    switch (rm_detect_mesh_alpn_ex(in, len, &tcp)) {
    case RM_DETECT_ALPN_NEED_MORE:
        return;
    case RM_DETECT_ALPN_MESH: {
        if (tcp) {
            hand_over_mesh_tcp(dc);
            return;
        }
        /* mesh HTTP to an opaque port of an HTTP Service (the caller does not take the port as opaque): the HTTP path, as
         * detection would; to a `protocol: tcp` destination there is no HTTP route */
        rm_config_t *config = dc->worker->config;
        if (dc->service_listener_index < config->num_service_listeners &&
            config->clusters[config->service_listeners[dc->service_listener_index].service_cluster].protocol != RM_UPSTREAM_TCP) {
            rm_timer_unlink(&dc->_detect_timeout); /* the handshake has the whole detection timeout, as on_detect_read's */
            rm_worker_timer_start(dc->worker, &dc->_detect_timeout, config->limits.detect_timeout_ms);
            start_mesh_handshake(dc);
            return;
        }
        rm_log_debug("listener", "mesh HTTP to an opaque TCP destination; closing");
        RM_STAT_INC(dc->stats->rq_protocol_error);
        dconn_close_detecting(dc);
        return;
    }
    case RM_DETECT_ALPN_OTHER:
        hand_over_app_tls(dc);
        return;
    }
}

static void
on_detect_read(h2o_socket_t *sock, const char *err)
{
    rm_dconn_t *dc = sock->data;
    if (err != NULL) {
        if (dc->direction != RM_DIRECTION_NONE && sock->input->size != 0) {
            if (refuse_plaintext(dc))
                return;
            /* a short message and a half-close: relay it (the proxy sees the end again and passes it on) */
            hand_over_opaque(dc, RM_DETECT_OPAQUE);
            return;
        }
        dconn_close_detecting(dc);
        return;
    }
    size_t len = sock->input->size;
    if (len == 0)
        return;
    int transparent = dc->direction != RM_DIRECTION_NONE;
    rm_detect_verdict_t verdict = rm_detect_classify(sock->input->bytes, len, transparent);
    const rm_config_listener_t *h2lc = detect_listener(dc);
    if (h2lc != NULL && h2lc->h2_only && verdict != RM_DETECT_IS_TLS) {
        /* HTTP/2 only: whatever is not a ClientHello is the connection preface or nghttp2's to refuse with GOAWAY
         * PROTOCOL_ERROR (h2spec 3.5), never HTTP/1.1's */
        hand_over(dc, 1);
        return;
    }
    switch (verdict) {
    case RM_DETECT_NEED_MORE:
        return; /* a prefix of the preface or of a method: wait for more (bounded by the detect timeout) */
    case RM_DETECT_IS_H2:
        if (!refuse_plaintext(dc))
            hand_over(dc, 1);
        return;
    case RM_DETECT_IS_HTTP1:
        if (!refuse_plaintext(dc))
            hand_over(dc, 0);
        return;
    case RM_DETECT_IS_OPAQUE:
        if (!refuse_plaintext(dc))
            hand_over_opaque(dc, RM_DETECT_OPAQUE);
        return;
    case RM_DETECT_IS_TLS:
        break;
    }
    if (is_mesh_listener(dc)) {
        /* mesh mTLS or the application's TLS: the ClientHello's ALPN tells (bounded by the first record) */
        int tcp;
        switch (rm_detect_mesh_alpn_ex((const unsigned char *)sock->input->bytes, len, &tcp)) {
        case RM_DETECT_ALPN_NEED_MORE:
            return;
        case RM_DETECT_ALPN_MESH:
            if (tcp)
                hand_over_mesh_tcp(dc); /* a peer agent relaying opaque bytes (its detection found no HTTP) */
            else
                start_mesh_handshake(dc); /* the detect timeout bounds the handshake too */
            return;
        case RM_DETECT_ALPN_OTHER:
            break;
        }
    }
    if (transparent) {
        hand_over_app_tls(dc);
        return;
    }
    rm_config_t *config = dc->worker->config;
    SSL_CTX *ctx = dc->listener_index < dc->worker->tls->num_listeners ? dc->worker->tls->listeners[dc->listener_index] : NULL;
    if (ctx == NULL || dc->listener_index >= config->num_listeners) {
        rm_log_debug("listener", "TLS ClientHello on a cleartext listener; closing");
        RM_STAT_INC(dc->stats->rq_protocol_error);
        dconn_close_detecting(dc);
        return;
    }
    dc->is_tls = 1;
    RM_STAT_INC(dc->stats->detect[RM_DETECT_TLS]);
    h2o_socket_read_stop(sock);
    /* the ClientHello bytes already read stay in sock->input; h2o feeds them to the handshake */
    h2o_socket_ssl_handshake(sock, ctx, NULL, on_handshake_complete);
}

/* The destination the client asked for before REDIRECT (0 or -1). */
static int
get_original_dst(uv_tcp_t *tcp, int family, struct sockaddr_storage *out, socklen_t *outlen)
{
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)tcp, &fd) != 0)
        return -1;
    *outlen = sizeof(*out);
    if (family == AF_INET6)
        return getsockopt(fd, SOL_IPV6, RM_IP6T_SO_ORIGINAL_DST, out, outlen);
    return getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, out, outlen);
}

static int
same_sockaddr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
    if (a->ss_family != b->ss_family)
        return 0;
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
    return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
}

static uint16_t
sockaddr_port(const struct sockaddr_storage *a)
{
    return ntohs(a->ss_family == AF_INET6 ? ((const struct sockaddr_in6 *)a)->sin6_port
                                          : ((const struct sockaddr_in *)a)->sin_port);
}

/*
 * An opaque destination on a mesh listener waits for a mesh ClientHello (dc->_opaque_wait) when one could be terminated
 * (the agent has an identity) or plaintext must be refused (STRICT); otherwise it is relayed at once, as before mesh mTLS
 * covered opaque TCP. Returns 1 to wait.
 */
static int
opaque_waits(rm_dconn_t *dc)
{
    if (dc->worker->config->mesh_tls.mode == RM_MESH_TLS_STRICT)
        return 1;
    rm_identity_t *id = rm_identity_current();
    if (id == NULL)
        return 0;
    rm_identity_unref(id);
    return 1;
}

/*
 * A transparent listener's new connection: its original destination picks the Service (outbound) and
 * whether detection runs at all. Returns 1 to go on with detection (dc->_opaque_wait: only for a mesh
 * ClientHello), 0 if the connection was handed over or closed.
 */
static int
accept_transparent(rm_dconn_t *dc, rm_listener_t *l, const rm_config_listener_t *lc, uv_tcp_t *tcp)
{
    rm_config_t *config = dc->worker->config;
    struct sockaddr_storage local;
    int locallen = sizeof(local);
    if (get_original_dst(tcp, l->addr.addr.ss_family, &dc->orig_dst, &dc->orig_dstlen) != 0 ||
        (uv_tcp_getsockname(tcp, (struct sockaddr *)&local, &locallen) == 0 && same_sockaddr(&local, &dc->orig_dst))) {
        /* not redirected: a client that dialled the listener itself; relaying it would loop back here */
        rm_log_debug("listener", "%s: connection without an original destination; closing", lc->name);
        RM_STAT_INC(dc->stats->rq_protocol_error);
        dconn_close_detecting(dc);
        return 0;
    }
    if (lc->direction == RM_DIRECTION_OUTBOUND) {
        dc->service_listener_index = rm_config_find_service_listener(config, l->config_index, (struct sockaddr *)&dc->orig_dst);
        if (dc->service_listener_index == SIZE_MAX ||
            config->clusters[config->service_listeners[dc->service_listener_index].service_cluster].protocol == RM_UPSTREAM_TCP) {
            /* an unknown destination passes through unchanged, an opaque Service is relayed: no detection, no stall */
            hand_over_opaque(dc, RM_DETECT_SKIPPED);
            return 0;
        }
    } else {
        /* inbound: a Service this node serves (orig_dst is one of its endpoints) goes through detection and,
         * as HTTP, the inbound filter chain to its inbound cluster; anything else is relayed as it is */
        dc->service_listener_index = rm_config_find_service_listener(config, l->config_index, (struct sockaddr *)&dc->orig_dst);
        if (dc->service_listener_index == SIZE_MAX) {
            hand_over_opaque(dc, RM_DETECT_SKIPPED);
            return 0;
        }
        if (config->clusters[config->service_listeners[dc->service_listener_index].service_cluster].protocol == RM_UPSTREAM_TCP ||
            rm_config_port_is_opaque(lc, sockaddr_port(&dc->orig_dst))) {
            /* a peer agent relays it in mesh mTLS (remora.mesh/tcp), whose ClientHello comes first */
            if (!opaque_waits(dc)) {
                hand_over_opaque(dc, RM_DETECT_SKIPPED);
                return 0;
            }
            dc->_opaque_wait = 1;
            return 1;
        }
    }
    if (rm_config_port_is_opaque(lc, sockaddr_port(&dc->orig_dst))) {
        hand_over_opaque(dc, RM_DETECT_SKIPPED);
        return 0;
    }
    return 1;
}

static void
on_accept(uv_stream_t *server, int status)
{
    rm_listener_t *l = server->data;
    rm_worker_t *worker = l->worker;
    if (status != 0)
        return;
    uv_tcp_t *tcp = rm_malloc(sizeof(*tcp));
    uv_tcp_init(&worker->loop, tcp);
    if (uv_accept(server, (uv_stream_t *)tcp) != 0) {
        uv_close((uv_handle_t *)tcp, (uv_close_cb)free);
        return;
    }
    uv_tcp_nodelay(tcp, 1);
    if (worker->draining || l->config_index == SIZE_MAX) {
        uv_close((uv_handle_t *)tcp, (uv_close_cb)free);
        return;
    }
    const rm_config_listener_t *lc = &worker->config->listeners[l->config_index];
    /* only a listener with a limit counts its connections: no shared atomic and no registry lock per connection
     * otherwise (a limit set by a reload counts the connections accepted from then on) */
    int counted = lc->max_connections != 0;
    if (counted && !conns_enter(l->conns, lc->max_connections)) {
        /* over the listener's limit: accepted (so the accept queue does not fill) and closed at once */
        RM_STAT_INC(l->stats->cx_refused_max);
        static __thread uint64_t logged_at_ms;
        uint64_t now = rm_worker_now_ms(worker);
        if (logged_at_ms == 0 || now - logged_at_ms >= RM_LISTENER_REFUSED_LOG_INTERVAL_MS) {
            rm_log_warn("listener", "%s: %" PRIu32 " connections open (max_connections); closing new ones", lc->name,
                        lc->max_connections);
            logged_at_ms = now != 0 ? now : 1;
        }
        uv_close((uv_handle_t *)tcp, (uv_close_cb)free);
        return;
    }
    rm_dconn_t *dc = rm_calloc(1, sizeof(*dc));
    if (counted) {
        dc->_conns = l->conns;
        rm_registry_ref(&conns_registry, &l->conns->_entry);
    }
    dc->worker = worker;
    dc->sock = h2o_uv_socket_create((uv_stream_t *)tcp, (uv_close_cb)free);
    dc->peerlen = h2o_socket_getpeername(dc->sock, (struct sockaddr *)&dc->peer);
    dc->sock->data = dc;
    dc->stats = l->stats;
    dc->listener_index = l->config_index;
    dc->listen_addr = l->addr;
    dc->service_listener_index = SIZE_MAX;
    dc->ops = &detecting_ops;
    h2o_linklist_insert(&worker->downstream_conns, &dc->_link);
    ++worker->num_downstream_conns;
    RM_STAT_INC(dc->stats->cx_total);
    RM_STAT_INC(dc->stats->cx_active);
    dc->_detect_timeout.cb = on_detect_timeout;
    dc->direction = lc->direction;
    if (lc->opaque) {
        /* `protocol: tcp` + `peer: agent`: the callers are agents, whose relays come in mesh mTLS */
        if (!(lc->peer_agent && opaque_waits(dc))) {
            hand_over_opaque(dc, RM_DETECT_SKIPPED);
            return;
        }
        dc->_opaque_wait = 1;
    }
    if (lc->direction != RM_DIRECTION_NONE && !accept_transparent(dc, l, lc, tcp))
        return;
    uint64_t detect_ms = worker->config->limits.detect_timeout_ms;
    if (dc->_opaque_wait && detect_ms > worker->config->limits.mesh_sniff_timeout_ms)
        detect_ms = worker->config->limits.mesh_sniff_timeout_ms;
    rm_worker_timer_start(worker, &dc->_detect_timeout, detect_ms);
    h2o_socket_read_start(dc->sock, dc->_opaque_wait ? on_opaque_wait_read : on_detect_read);
}

static int
start_listener(rm_listener_t *l)
{
    rm_worker_t *worker = l->worker;
    l->tcp = rm_malloc(sizeof(*l->tcp));
    uv_tcp_init(&worker->loop, l->tcp);
    l->tcp->data = l;
    int r;
    if ((r = uv_tcp_open(l->tcp, l->fd)) != 0 || (r = uv_listen((uv_stream_t *)l->tcp, 4096, on_accept)) != 0) {
        rm_log_error("listener", "worker %u: listen: %s", worker->id, uv_strerror(r));
        return -1;
    }
    return 0;
}

static void
update_listener(rm_listener_t *l)
{
    rm_config_t *config = l->worker->config;
    l->config_index = find_listener_config(config, &l->addr);
    if (l->config_index != SIZE_MAX)
        l->stats = rm_stats_listener(l->worker->stats, config->listeners[l->config_index].name);
}

int
rm_listeners_start(rm_worker_t *worker)
{
    int ret = 0;
    for (rm_listener_t *l = worker->listeners; l != NULL; l = l->next) {
        if (l->tcp != NULL)
            continue;
        update_listener(l);
        if (start_listener(l) != 0)
            ret = -1;
    }
    return ret;
}

static void
close_listener(rm_listener_t *l)
{
    if (l->tcp != NULL) {
        uv_close((uv_handle_t *)l->tcp, (uv_close_cb)free);
        l->tcp = NULL;
    } else if (l->fd >= 0) {
        close(l->fd);
    }
    l->fd = -1;
}

static void
free_listener(rm_listener_t *l)
{
    close_listener(l);
    conns_release(l->conns);
    free(l);
}

void
rm_listeners_apply_config(rm_worker_t *worker)
{
    rm_listener_t **slot = &worker->listeners;
    while (*slot != NULL) {
        rm_listener_t *l = *slot;
        update_listener(l);
        if (l->config_index == SIZE_MAX) {
            *slot = l->next;
            free_listener(l);
            continue;
        }
        slot = &l->next;
    }
    if (!worker->draining)
        rm_listeners_start(worker);
    /* connections keep serving under the listener at the same address */
    for (h2o_linklist_t *n = worker->downstream_conns.next; n != &worker->downstream_conns; n = n->next) {
        rm_dconn_t *dc = H2O_STRUCT_FROM_MEMBER(rm_dconn_t, _link, n);
        dc->listener_index = find_listener_config(worker->config, &dc->listen_addr);
        if (dc->service_listener_index != SIZE_MAX)
            dc->service_listener_index =
                dc->listener_index == SIZE_MAX
                    ? SIZE_MAX
                    : rm_config_find_service_listener(worker->config, dc->listener_index, (struct sockaddr *)&dc->orig_dst);
    }
}

void
rm_listeners_close(rm_worker_t *worker)
{
    while (worker->listeners != NULL) {
        rm_listener_t *l = worker->listeners;
        worker->listeners = l->next;
        free_listener(l);
    }
}

/* The listeners and connections that drain at once during an outbound grace: those whose callers are other agents
 * (INBOUND transparent, explicit `peer: agent`), i.e. the mesh listeners. A removed listener counts as one. */
static int
is_inbound_config(const rm_config_listener_t *lc)
{
    return lc == NULL || lc->direction == RM_DIRECTION_INBOUND || (lc->direction == RM_DIRECTION_NONE && lc->peer_agent);
}

void
rm_listeners_drain_inbound(rm_worker_t *worker)
{
    rm_config_t *config = worker->config;
    rm_listener_t **slot = &worker->listeners;
    while (*slot != NULL) {
        rm_listener_t *l = *slot;
        if (is_inbound_config(l->config_index < config->num_listeners ? &config->listeners[l->config_index] : NULL)) {
            *slot = l->next;
            free_listener(l);
            continue;
        }
        slot = &l->next;
    }
    h2o_linklist_t *n = worker->downstream_conns.next;
    while (n != &worker->downstream_conns) {
        rm_dconn_t *dc = H2O_STRUCT_FROM_MEMBER(rm_dconn_t, _link, n);
        n = n->next; /* drain may close and free dc */
        if (is_inbound_config(detect_listener(dc)))
            dc->ops->drain(dc);
    }
}

void
rm_downstream_drain_all(rm_worker_t *worker)
{
    h2o_linklist_t *n = worker->downstream_conns.next;
    while (n != &worker->downstream_conns) {
        rm_dconn_t *dc = H2O_STRUCT_FROM_MEMBER(rm_dconn_t, _link, n);
        n = n->next; /* drain may close and free dc */
        dc->ops->drain(dc);
    }
}

void
rm_downstream_close_all(rm_worker_t *worker)
{
    while (!h2o_linklist_is_empty(&worker->downstream_conns)) {
        rm_dconn_t *dc = H2O_STRUCT_FROM_MEMBER(rm_dconn_t, _link, worker->downstream_conns.next);
        dc->ops->close(dc);
    }
}

static void *
net_init(rm_worker_t *worker)
{
    if (rm_listeners_start(worker) != 0)
        rm_log_error("worker", "worker %u: failed to start listeners", worker->id);
    return NULL;
}

static void
net_on_config(rm_worker_t *worker, void *state)
{
    rm_listeners_apply_config(worker);
}

static void
net_drain(rm_worker_t *worker, void *state)
{
    rm_listeners_close(worker);
    rm_downstream_drain_all(worker);
}

static void
net_close(rm_worker_t *worker, void *state)
{
    rm_downstream_close_all(worker);
}

const rm_worker_module_t rm_net_module = {
    .name = "net",
    .init = net_init,
    .on_config = net_on_config,
    .drain = net_drain,
    .close = net_close,
};
