#include <assert.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "core/clock.h"
#include "remora/log.h"
#include "remora/strutil.h"
#include "net/resolver.h"
#include "proxy/attempt.h"
#include "tls/mesh.h"
#include "tls/tls.h"
#include "upstream/breaker.h"
#include "upstream/cluster.h"
#include "upstream/lb.h"
#include "upstream/outlier.h"
#include "net/sockio.h"

/* A host-name endpoint: resolved now and again after its TTL. */
typedef struct st_dns_target_t {
    rm_cluster_t *cluster;
    char *host;
    uint16_t port;
    /** the configured endpoint's load-balancing weight, given to every address it resolves to */
    uint32_t weight;
    rm_resolver_query_t *query;
    uv_timer_t *timer;
    /** the addresses of the last good answer */
    struct sockaddr_storage *addrs;
    size_t num_addrs;
    unsigned resolved_once : 1;
    char last_error[128];
} dns_target_t;

struct st_rm_cluster_t {
    rm_worker_t *worker;
    /** the snapshot `config` points into (own reference) */
    rm_config_t *snapshot;
    const rm_config_cluster_t *config;
    char *name;
    rm_cluster_stats_t *stats;
    SSL_CTX *ssl_ctx;
    int refcnt;
    unsigned retired : 1;
    rm_endpoint_t **endpoints;
    size_t num_endpoints;
    const rm_lb_t *lb;
    void *lb_state;
    /** a ring over the endpoints for routes with sessionPersistence when the balancer is not a ring
     * (built on first use, NULL before) */
    void *session_ring;
    dns_target_t *dns;
    size_t num_dns;
    /** attempts waiting for the first DNS answer */
    h2o_linklist_t waiting;
    rm_cluster_t *next_retired;
    rm_cluster_slot_t policy_slot;
    /** agent-wide state of this cluster name (references) */
    rm_breaker_t *breaker;
    rm_outlier_cluster_t *outlier;
};

static void update_endpoints(rm_cluster_t *c);

rm_cluster_stats_t *
rm_cluster_stats(rm_cluster_t *c)
{
    return c->stats;
}

rm_worker_t *
rm_cluster_worker(rm_cluster_t *c)
{
    return c->worker;
}

const char *
rm_cluster_name(rm_cluster_t *c)
{
    return c->name;
}

const rm_config_cluster_t *
rm_cluster_config(rm_cluster_t *c)
{
    return c->config;
}

SSL_CTX *
rm_cluster_ssl_ctx(rm_cluster_t *c)
{
    return c->ssl_ctx;
}

void
rm_endpoint_ref(rm_endpoint_t *ep)
{
    ++ep->refcnt;
}

void
rm_endpoint_unref(rm_endpoint_t *ep)
{
    if (--ep->refcnt != 0)
        return;
    rm_cluster_t *c = ep->cluster;
    rm_outlier_host_release(ep->outlier);
    rm_lb_load_release(ep->load);
    free(ep->host);
    free(ep->peer_identity);
    free(ep);
    rm_cluster_release(c);
}

static rm_endpoint_t *
endpoint_create(rm_cluster_t *c, const struct sockaddr_storage *addr, socklen_t addrlen, const char *host,
                const char *peer_identity)
{
    rm_endpoint_t *ep = rm_calloc(1, sizeof(*ep));
    ep->cluster = rm_cluster_acquire(c);
    ep->addr = *addr;
    ep->addrlen = addrlen;
    ep->host = rm_strdup(host);
    ep->peer_identity = peer_identity != NULL ? rm_strdup(peer_identity) : NULL;
    rm_format_sockaddr((struct sockaddr *)addr, ep->name, sizeof(ep->name));
    ep->refcnt = 1; /* the cluster's list */
    h2o_linklist_init_anchor(&ep->h2_conns);
    h2o_linklist_init_anchor(&ep->h1_idle);
    h2o_linklist_init_anchor(&ep->h1_all);
    h2o_linklist_init_anchor(&ep->h1_waiting);
    ep->weight = 1;
    ep->load = rm_lb_load_acquire(c->name, ep->name);
    ep->outlier = rm_outlier_host_acquire(c->outlier, ep->name);
    return ep;
}

static const rm_client_codec_t *codecs[RM_WIRE_MAX];

void
rm_upstream_register_codec(rm_wire_protocol_t proto, const rm_client_codec_t *codec)
{
    codecs[proto] = codec;
}

const rm_client_codec_t *
rm_upstream_codec(rm_wire_protocol_t proto)
{
    if (codecs[proto] == NULL)
        rm_fatal("no client codec registered for wire protocol %d", (int)proto);
    return codecs[proto];
}

static void
endpoint_remove(rm_endpoint_t *ep, int close_all)
{
    ep->removed = 1;
    /* an address that left the cluster no longer counts among its endpoints for ejection */
    rm_outlier_host_release(ep->outlier);
    ep->outlier = NULL;
    for (size_t i = 0; i != RM_WIRE_MAX; ++i)
        if (codecs[i] != NULL)
            codecs[i]->close_idle(ep, close_all);
    rm_endpoint_unref(ep);
}

/* The TLS contexts are built per snapshot, by cluster index; a runtime for an older snapshot than
 * the worker's (a stream pinned to it) takes the context of the same-named cluster now in service. */
static SSL_CTX *
lookup_ssl_ctx(rm_worker_t *worker, rm_config_t *snapshot, const rm_config_cluster_t *config)
{
    if (worker->tls == NULL)
        return NULL;
    size_t idx = config - snapshot->clusters;
    if (snapshot != worker->config) {
        ssize_t i = rm_config_find_cluster(worker->config, config->name);
        if (i < 0)
            return NULL;
        idx = (size_t)i;
    }
    return idx < worker->tls->num_clusters ? worker->tls->clusters[idx] : NULL;
}

/* retired runtimes of this worker (each worker is one thread) still draining their connections */
static __thread rm_cluster_t *retired_clusters;

static void on_dns_timer(uv_timer_t *timer);

static void
on_dns_answer(const rm_resolver_result_t *result, void *data)
{
    dns_target_t *t = data;
    rm_cluster_t *c = t->cluster;
    t->query = NULL;
    uint64_t next_ms;
    if (result->status == RM_RESOLVER_OK) {
        free(t->addrs);
        t->addrs = rm_calloc(result->num_addrs, sizeof(*t->addrs));
        memcpy(t->addrs, result->addrs, result->num_addrs * sizeof(*t->addrs));
        t->num_addrs = result->num_addrs;
        t->last_error[0] = '\0';
        next_ms = rm_resolver_refresh_ms(result->ttl_s, c->config->dns_min_refresh_ms, c->config->dns_max_refresh_ms);
        rm_log_debug("cluster", "cluster %s: %s resolved to %zu addresses, next in %llu ms", c->name, t->host, t->num_addrs,
                     (unsigned long long)next_ms);
    } else {
        /* keep serving the last good answer; retry at the floor interval */
        snprintf(t->last_error, sizeof(t->last_error), "%s", result->error != NULL ? result->error : "resolution failed");
        rm_log_warn("cluster", "cluster %s: resolving %s: %s", c->name, t->host, t->last_error);
        next_ms = c->config->dns_min_refresh_ms;
    }
    t->resolved_once = 1;
    if (!c->retired)
        uv_timer_start(t->timer, on_dns_timer, next_ms, 0);
    update_endpoints(c);
}

static void
resolve_target(dns_target_t *t)
{
    rm_cluster_t *c = t->cluster;
    if (c->worker->resolver == NULL) {
        snprintf(t->last_error, sizeof(t->last_error), "no DNS resolver");
        t->resolved_once = 1;
        update_endpoints(c);
        return;
    }
    t->query = rm_resolver_resolve(c->worker->resolver, t->host, t->port, on_dns_answer, t);
}

static void
on_dns_timer(uv_timer_t *timer)
{
    resolve_target(timer->data);
}

static int
same_addr(const struct sockaddr_storage *a, socklen_t alen, const struct sockaddr_storage *b, socklen_t blen)
{
    return alen == blen && memcmp(a, b, alen) == 0;
}

static socklen_t
sockaddr_len(const struct sockaddr_storage *ss)
{
    return ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

/* Rebuilds the endpoint list from the static endpoints and the current DNS answers, keeping the
 * endpoint objects (and their pools) of addresses that stay. */
static void
update_endpoints(rm_cluster_t *c)
{
    const rm_config_cluster_t *cc = c->config;
    size_t cap = cc->num_endpoints;
    for (size_t i = 0; i != c->num_dns; ++i)
        cap += c->dns[i].num_addrs;
    rm_endpoint_t **list = rm_calloc(cap, sizeof(*list));
    size_t n = 0;
    /* the same endpoints in the same order with the same weights: the balancers keep their tables
     * (a ring is rebuilt only when the set changes, not on every DNS refresh) */
    rm_endpoint_t **prev = c->num_endpoints != 0 ? rm_malloc(c->num_endpoints * sizeof(*prev)) : NULL;
    size_t num_prev = c->num_endpoints;
    if (prev != NULL)
        memcpy(prev, c->endpoints, num_prev * sizeof(*prev));
    int set_changed = 0;

#define ADD_ENDPOINT(ss, len, hostname, w, id)                                                                                     \
    do {                                                                                                                           \
        rm_endpoint_t *found = NULL;                                                                                               \
        for (size_t k = 0; k != c->num_endpoints; ++k) {                                                                           \
            if (c->endpoints[k] != NULL && same_addr(&c->endpoints[k]->addr, c->endpoints[k]->addrlen, (ss), (len))) {             \
                found = c->endpoints[k];                                                                                           \
                c->endpoints[k] = NULL;                                                                                            \
                break;                                                                                                             \
            }                                                                                                                      \
        }                                                                                                                          \
        int dup = 0;                                                                                                               \
        for (size_t k = 0; k != n; ++k)                                                                                            \
            if (same_addr(&list[k]->addr, list[k]->addrlen, (ss), (len)))                                                          \
                dup = 1;                                                                                                           \
        if (!dup) {                                                                                                                \
            list[n++] = found != NULL ? found : endpoint_create(c, (ss), (len), (hostname), (id));                                 \
            if (list[n - 1]->weight != ((w) != 0 ? (w) : 1))                                                                       \
                set_changed = 1;                                                                                                   \
            list[n - 1]->weight = (w) != 0 ? (w) : 1;                                                                              \
        } else if (found != NULL)                                                                                                  \
            endpoint_remove(found, 0);                                                                                             \
    } while (0)

    for (size_t i = 0; i != cc->num_endpoints; ++i) {
        const rm_config_endpoint_t *e = &cc->endpoints[i];
        struct sockaddr_storage ss; /* the config keeps the address compact (rm_config_ip_t) */
        socklen_t sslen;
        if (e->is_ip && (sslen = rm_config_ip_to_sockaddr(&e->addr, &ss)) != 0)
            ADD_ENDPOINT(&ss, sslen, e->host, e->weight, e->peer_identity);
    }
    for (size_t i = 0; i != c->num_dns; ++i) {
        dns_target_t *t = &c->dns[i];
        for (size_t j = 0; j != t->num_addrs; ++j)
            ADD_ENDPOINT(&t->addrs[j], sockaddr_len(&t->addrs[j]), t->host, t->weight, NULL);
    }
#undef ADD_ENDPOINT

    for (size_t k = 0; k != c->num_endpoints; ++k)
        if (c->endpoints[k] != NULL)
            endpoint_remove(c->endpoints[k], 0);
    if (n != num_prev)
        set_changed = 1;
    for (size_t k = 0; !set_changed && k != n; ++k)
        if (list[k] != prev[k])
            set_changed = 1;
    free(prev);
    if (set_changed) {
        free(c->endpoints);
        c->endpoints = list;
        c->num_endpoints = n;
        /* balancers rebuild what depends on the set (rings, weight tables); per-endpoint load lives in
         * the agent-wide entries of the endpoints that stayed, so it carries over */
        if (c->lb->update != NULL)
            c->lb->update(c->lb_state, c->endpoints, c->num_endpoints);
        if (c->session_ring != NULL)
            rm_lb_ring_hash.update(c->session_ring, c->endpoints, c->num_endpoints);
    } else {
        /* the same endpoints: keep the array the balancers were given */
        if (n != 0)
            memcpy(c->endpoints, list, n * sizeof(*list));
        free(list);
    }

    /* streams that waited for the first answers go now (or fail if there is still nothing) */
    int all_resolved = 1;
    for (size_t i = 0; i != c->num_dns; ++i)
        if (!c->dns[i].resolved_once)
            all_resolved = 0;
    if (n != 0 || all_resolved) {
        while (!h2o_linklist_is_empty(&c->waiting)) {
            rm_attempt_t *a = H2O_STRUCT_FROM_MEMBER(rm_attempt_t, pending_link, c->waiting.next);
            h2o_linklist_unlink(&a->pending_link);
            rm_breaker_release(c->breaker, RM_BREAKER_PENDING);
            rm_attempt_unattach(a);
            rm_cluster_dispatch(c, a);
        }
    }
}

rm_cluster_t *
rm_cluster_create(rm_worker_t *worker, rm_config_t *snapshot, const rm_config_cluster_t *config)
{
    rm_cluster_t *c = rm_calloc(1, sizeof(*c));
    c->worker = worker;
    c->snapshot = rm_config_ref(snapshot);
    c->config = config;
    c->name = rm_strdup(config->name);
    c->stats = rm_stats_cluster(worker->stats, config->name);
    c->ssl_ctx = lookup_ssl_ctx(worker, snapshot, config);
    if (c->ssl_ctx != NULL)
        SSL_CTX_up_ref(c->ssl_ctx);
    c->refcnt = 1; /* the worker's cluster table */
    c->lb = rm_lb_of(config);
    c->lb_state = c->lb->create(config);
    c->breaker = rm_breaker_acquire(config->name);
    rm_breaker_configure(c->breaker, &config->breakers);
    c->outlier = rm_outlier_cluster_acquire(config->name);
    rm_outlier_configure(c->outlier, &config->outlier);
    h2o_linklist_init_anchor(&c->waiting);
    size_t num_dns = 0;
    for (size_t i = 0; i != config->num_endpoints; ++i)
        if (!config->endpoints[i].is_ip)
            ++num_dns;
    c->dns = rm_calloc(num_dns, sizeof(*c->dns));
    for (size_t i = 0; i != config->num_endpoints; ++i) {
        const rm_config_endpoint_t *e = &config->endpoints[i];
        if (e->is_ip)
            continue;
        dns_target_t *t = &c->dns[c->num_dns++];
        t->cluster = c;
        t->host = rm_strdup(e->host);
        t->port = e->port;
        t->weight = e->weight;
        t->timer = rm_malloc(sizeof(*t->timer));
        uv_timer_init(&worker->loop, t->timer);
        t->timer->data = t;
    }
    update_endpoints(c);
    for (size_t i = 0; i != c->num_dns; ++i)
        resolve_target(&c->dns[i]);
    return c;
}

static int
str_eq(const char *a, const char *b)
{
    return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

int
rm_cluster_can_reuse(rm_cluster_t *old, const rm_config_cluster_t *config)
{
    const rm_config_cluster_t *o = old->config;
    if (old->retired || strcmp(o->name, config->name) != 0 || o->protocol != config->protocol ||
        o->agent_hop != config->agent_hop || o->tls != config->tls || o->num_endpoints != config->num_endpoints ||
        !str_eq(o->peer_identity, config->peer_identity))
        return 0;
    if (config->tls && !(str_eq(o->tls_ca_file, config->tls_ca_file) && str_eq(o->tls_server_name, config->tls_server_name) &&
                         str_eq(o->tls_cert_file, config->tls_cert_file) && str_eq(o->tls_key_file, config->tls_key_file)))
        return 0;
    for (size_t i = 0; i != config->num_endpoints; ++i)
        if (strcmp(o->endpoints[i].host, config->endpoints[i].host) != 0 || o->endpoints[i].port != config->endpoints[i].port ||
            !str_eq(o->endpoints[i].peer_identity, config->endpoints[i].peer_identity))
            return 0;
    return 1;
}

/* A reload that kept the runtime may change the balancer or the weights (same endpoints): a new
 * balancer starts from the agent-wide endpoint loads; new weights rebuild the set. */
static void
update_balancer(rm_cluster_t *c, const rm_config_cluster_t *old)
{
    const rm_config_cluster_t *config = c->config;
    int changed = 0;
    if (rm_lb_of(config) != c->lb || config->lb != old->lb || config->ring_min_size != old->ring_min_size) {
        changed = 1;
        c->lb->destroy(c->lb_state);
        c->lb = rm_lb_of(config);
        c->lb_state = c->lb->create(config);
        if (c->lb->update != NULL && c->num_endpoints != 0)
            c->lb->update(c->lb_state, c->endpoints, c->num_endpoints);
        if (c->session_ring != NULL) {
            rm_lb_ring_hash.destroy(c->session_ring);
            c->session_ring = NULL;
        }
    }
    size_t k = 0;
    for (size_t i = 0; i != config->num_endpoints; ++i) {
        if (i < old->num_endpoints && old->endpoints[i].weight != config->endpoints[i].weight)
            changed = 1;
        if (!config->endpoints[i].is_ip && k < c->num_dns)
            c->dns[k++].weight = config->endpoints[i].weight;
    }
    if (changed)
        update_endpoints(c); /* same addresses: the objects stay, the weights and rings are refreshed */
}

void
rm_cluster_update_config(rm_cluster_t *c, rm_config_t *snapshot, const rm_config_cluster_t *config)
{
    const rm_config_cluster_t *old_config = c->config;
    rm_config_t *old = c->snapshot;
    c->snapshot = rm_config_ref(snapshot);
    c->config = config;
    rm_breaker_configure(c->breaker, &config->breakers);
    rm_outlier_configure(c->outlier, &config->outlier);
    update_balancer(c, old_config);
    rm_config_unref(old);
}

static void
free_cluster(rm_cluster_t *c)
{
    /* unlink from the retired list */
    for (rm_cluster_t **slot = &retired_clusters; *slot != NULL; slot = &(*slot)->next_retired) {
        if (*slot == c) {
            *slot = c->next_retired;
            break;
        }
    }
    for (size_t i = 0; i != c->num_dns; ++i) {
        free(c->dns[i].host);
        free(c->dns[i].addrs);
    }
    free(c->dns);
    free(c->endpoints);
    c->lb->destroy(c->lb_state);
    if (c->session_ring != NULL)
        rm_lb_ring_hash.destroy(c->session_ring);
    if (c->policy_slot.release != NULL)
        c->policy_slot.release(c->policy_slot.data);
    if (c->ssl_ctx != NULL)
        SSL_CTX_free(c->ssl_ctx);
    rm_breaker_release_ref(c->breaker);
    rm_outlier_cluster_release(c->outlier);
    rm_config_unref(c->snapshot);
    free(c->name);
    free(c);
}

rm_cluster_slot_t *
rm_cluster_policy_slot(rm_cluster_t *c)
{
    return &c->policy_slot;
}

/* The end of a pick (attempt.h lb_done): the head arrived, or the attempt failed or was cancelled. */
static void
lb_done(rm_attempt_t *a)
{
    rm_endpoint_t *ep = a->lb_hold;
    a->lb_done = NULL;
    a->lb_hold = NULL;
    rm_cluster_t *c = ep->cluster;
    int success = a->head_received && a->resp.status < 500;
    uint64_t latency_us = rm_clock_now_us() - a->lb_picked_at_us;
    /* a refused or reset exchange is quick, not cheap: latency-aware balancers must not prefer it */
    if (a->upstream_failed && !a->head_received && latency_us < RM_LB_FAILURE_LATENCY_US)
        latency_us = RM_LB_FAILURE_LATENCY_US;
    c->lb->on_result(c->lb_state, ep, success, latency_us);
    rm_lb_load_finish(ep->load);
    rm_endpoint_unref(ep);
}

/* The endpoint for `a`: by consistent hash of the route's session key whatever the balancer, else the balancer's. */
static rm_endpoint_t *
lb_pick(rm_cluster_t *c, rm_attempt_t *a)
{
    if (a->hash_kind == RM_ATTEMPT_HASH_SESSION && c->lb != &rm_lb_ring_hash) {
        if (c->session_ring == NULL) {
            c->session_ring = rm_lb_ring_hash.create(c->config);
            rm_lb_ring_hash.update(c->session_ring, c->endpoints, c->num_endpoints);
        }
        return rm_lb_ring_hash.pick(c->session_ring, c->endpoints, c->num_endpoints, a);
    }
    return c->lb->pick(c->lb_state, c->endpoints, c->num_endpoints, a);
}

void
rm_cluster_report_outlier(rm_cluster_t *c, rm_endpoint_t *ep, int result)
{
    if (ep == NULL || ep->outlier == NULL || !c->config->outlier.enabled)
        return;
    if (rm_outlier_report(ep->outlier, (rm_outlier_result_t)result, rm_worker_now_ms(c->worker))) {
        RM_STAT_INC(c->stats->outlier_ejections);
        rm_log_info("cluster", "cluster %s: endpoint %s ejected (outlier detection)", c->name, ep->name);
    }
}

int
rm_endpoint_available(rm_endpoint_t *ep)
{
    return ep->outlier == NULL || rm_outlier_available(ep->outlier, rm_worker_now_ms(ep->cluster->worker));
}

int
rm_endpoint_conn_acquire(rm_endpoint_t *ep)
{
    rm_breaker_t *b = ep->cluster->breaker;
    if (ep->num_conns == 0)
        rm_breaker_acquire_forced(b, RM_BREAKER_CONNECTIONS); /* at least one per worker per endpoint */
    else if (!rm_breaker_try_acquire(b, RM_BREAKER_CONNECTIONS))
        return 0;
    ++ep->num_conns;
    return 1;
}

void
rm_endpoint_conn_release(rm_endpoint_t *ep)
{
    assert(ep->num_conns != 0);
    --ep->num_conns;
    rm_breaker_release(ep->cluster->breaker, RM_BREAKER_CONNECTIONS);
}

void
rm_cluster_overflow(rm_cluster_t *c, rm_attempt_t *a, int limit, const char *detail)
{
    RM_STAT_INC(c->stats->rq_overflow[limit]);
    rm_attempt_on_error(a, RM_UPSTREAM_ERR_OVERFLOW, 0, detail);
}

rm_breaker_t *
rm_cluster_breaker(rm_cluster_t *c)
{
    return c->breaker;
}

rm_cluster_t *
rm_cluster_acquire(rm_cluster_t *c)
{
    ++c->refcnt;
    return c;
}

void
rm_cluster_release(rm_cluster_t *c)
{
    if (--c->refcnt == 0)
        free_cluster(c);
}

static void
retire(rm_cluster_t *c, int close_all)
{
    rm_cluster_acquire(c); /* removing endpoints drops references: stay alive until done */
    if (!c->retired) {
        c->retired = 1;
        c->next_retired = retired_clusters;
        retired_clusters = c;
        for (size_t i = 0; i != c->num_dns; ++i) {
            dns_target_t *t = &c->dns[i];
            if (t->query != NULL) {
                rm_resolver_cancel(t->query);
                t->query = NULL;
            }
            uv_close((uv_handle_t *)t->timer, (uv_close_cb)free);
            t->timer = NULL;
        }
        /* nobody will answer the waiters now */
        while (!h2o_linklist_is_empty(&c->waiting)) {
            rm_attempt_t *a = H2O_STRUCT_FROM_MEMBER(rm_attempt_t, pending_link, c->waiting.next);
            h2o_linklist_unlink(&a->pending_link);
            rm_breaker_release(c->breaker, RM_BREAKER_PENDING);
            rm_attempt_on_error(a, RM_UPSTREAM_ERR_CONNECT, 0, "cluster removed by a configuration change");
        }
    }
    rm_endpoint_t **eps = c->endpoints;
    size_t n = c->num_endpoints;
    c->endpoints = NULL;
    c->num_endpoints = 0;
    for (size_t i = 0; i != n; ++i)
        endpoint_remove(eps[i], close_all);
    free(eps);
    rm_cluster_release(c);
}

void
rm_cluster_retire(rm_cluster_t *c)
{
    int was_retired = c->retired;
    retire(c, 0);
    if (!was_retired)
        rm_cluster_release(c); /* the worker's table reference */
}

void
rm_clusters_close_all(rm_worker_t *worker)
{
    /* connections of endpoints removed earlier are not reachable through any cluster: close them
     * through the worker's registry */
    while (!h2o_linklist_is_empty(&worker->upstream_conns)) {
        rm_upconn_link_t *u = H2O_STRUCT_FROM_MEMBER(rm_upconn_link_t, _link, worker->upstream_conns.next);
        h2o_linklist_unlink(&u->_link);
        u->close(u);
    }
    while (retired_clusters != NULL) {
        rm_cluster_t *c = retired_clusters;
        retired_clusters = c->next_retired;
        c->next_retired = NULL;
        retire(c, 1);
    }
}

/*
 * Dispatch
 */

static void
waiting_cancel(rm_attempt_t *a)
{
    rm_cluster_t *c = a->up_ctx;
    h2o_linklist_unlink(&a->pending_link);
    rm_breaker_release(c->breaker, RM_BREAKER_PENDING);
    rm_attempt_detach(a);
}

/* The balancer's pick if outlier detection and health checks let it take the attempt, else the next
 * endpoint that can (a scan from the pick: bounded by the endpoint count); NULL when every endpoint
 * is ejected or unhealthy. Claiming an endpoint whose ejection is over makes this attempt its probe. */
static rm_endpoint_t *
claim_endpoint(rm_cluster_t *c, rm_endpoint_t *picked)
{
    if (!c->config->outlier.enabled && !c->config->health_check.enabled)
        return picked;
    uint64_t now = rm_worker_now_ms(c->worker);
    if (picked->outlier == NULL || rm_outlier_claim(picked->outlier, now))
        return picked;
    size_t start = 0;
    while (start != c->num_endpoints && c->endpoints[start] != picked)
        ++start;
    for (size_t k = 1; k <= c->num_endpoints; ++k) {
        rm_endpoint_t *ep = c->endpoints[(start + k) % c->num_endpoints];
        if (ep->outlier == NULL || rm_outlier_claim(ep->outlier, now))
            return ep;
    }
    return NULL;
}

static void
waiting_noop(rm_attempt_t *a)
{
}

static void
waiting_noop_n(rm_attempt_t *a, size_t n)
{
}

static const rm_attempt_up_ops_t waiting_ops = {waiting_noop, waiting_noop_n, waiting_cancel};

void
rm_cluster_dispatch(rm_cluster_t *c, rm_attempt_t *a)
{
    if (c->num_endpoints == 0) {
        int pending = 0;
        const char *why = "cluster has no endpoints";
        for (size_t i = 0; i != c->num_dns; ++i) {
            if (!c->dns[i].resolved_once)
                pending = 1;
            else if (c->dns[i].last_error[0] != '\0')
                why = c->dns[i].last_error;
        }
        if (pending && !c->retired) {
            if (!rm_breaker_try_acquire(c->breaker, RM_BREAKER_PENDING)) {
                rm_cluster_overflow(c, a, RM_BREAKER_PENDING, "upstream overflow: max_pending_requests reached (waiting for DNS)");
                return;
            }
            rm_attempt_attach(a, &waiting_ops, c);
            h2o_linklist_insert(&c->waiting, &a->pending_link);
            return;
        }
        char msg[256];
        snprintf(msg, sizeof(msg), "cluster '%s': %s", c->name, why);
        rm_attempt_on_error(a, RM_UPSTREAM_ERR_CONNECT, 0, msg);
        return;
    }
    rm_endpoint_t *ep = claim_endpoint(c, lb_pick(c, a));
    if (ep == NULL) {
        /* the circuit is open: no connect attempt until a probe or a health check brings an endpoint back */
        char msg[256];
        RM_STAT_INC(c->stats->rq_no_healthy);
        if (c->config->health_check.enabled)
            snprintf(msg, sizeof(msg), "cluster '%s': no healthy endpoint (every endpoint is unhealthy or ejected)", c->name);
        else
            snprintf(msg, sizeof(msg), "cluster '%s': circuit open, every endpoint is ejected (outlier detection)", c->name);
        rm_attempt_on_error(a, RM_UPSTREAM_ERR_CONNECT, 0, msg);
        return;
    }
    rm_upstream_protocol_t proto = c->config->protocol;
    if (proto == RM_UPSTREAM_AUTO) {
        if (c->ssl_ctx == NULL || ep->learned == RM_WIRE_HTTP1)
            proto = RM_UPSTREAM_HTTP1;
        else
            proto = RM_UPSTREAM_H2; /* the HTTP/2 client falls back to HTTP/1.1 if ALPN says so */
    }
    /* a meshed Service: the peer agent's inbound listener takes HTTP/2 and speaks the app's protocol */
    if (c->config->agent_hop)
        proto = RM_UPSTREAM_H2;
    /* an Upgrade (WebSocket) request keeps HTTP/1.1 on every hop, agent-to-agent included (docs/architecture.md) */
    if (a->req->upgrade.len != 0)
        proto = RM_UPSTREAM_HTTP1;
    a->endpoint = ep;
    _Static_assert(sizeof(a->endpoint_name) == sizeof(ep->name), "an endpoint's name fits the attempt's copy");
    memcpy(a->endpoint_name, ep->name, sizeof(a->endpoint_name));
    if (a->lb_done != NULL)
        a->lb_done(a); /* dispatched again: the earlier pick is over */
    rm_endpoint_ref(ep);
    rm_lb_load_start(ep->load);
    a->lb_hold = ep;
    a->lb_done = lb_done;
    a->lb_picked_at_us = rm_clock_now_us();
    rm_upstream_codec(proto == RM_UPSTREAM_H2 ? RM_WIRE_H2 : RM_WIRE_HTTP1)->dispatch(ep, a);
}

rm_endpoint_t *
rm_cluster_pick_endpoint(rm_cluster_t *c)
{
    if (c->num_endpoints == 0)
        return NULL;
    rm_endpoint_t *ep = claim_endpoint(c, c->lb->pick(c->lb_state, c->endpoints, c->num_endpoints, NULL));
    if (ep != NULL)
        rm_endpoint_ref(ep);
    return ep;
}

/*
 * Connection establishment
 */

struct st_rm_connect_t {
    rm_endpoint_t *ep;
    h2o_socket_t *sock;
    rm_connect_cb cb;
    void *data;
    rm_timer_t timeout;
    /** mesh mTLS to a peer agent (docs/mesh-tls.md): the client context (own reference), NULL for none */
    SSL_CTX *mesh_ctx;
    rm_mesh_handshake_t mesh_hs;
    /** the SPIFFE ID the peer agent must present */
    char mesh_expected[RM_MESH_MAX_ID];
};

static void
connect_finish(rm_connect_t *conn, h2o_socket_t *sock, int err_kind, const char *err, rm_wire_protocol_t alpn)
{
    if (rm_timer_is_linked(&conn->timeout))
        rm_timer_unlink(&conn->timeout);
    rm_endpoint_t *ep = conn->ep;
    rm_connect_cb cb = conn->cb;
    void *data = conn->data;
    if (sock == NULL)
        RM_STAT_INC(ep->cluster->stats->cx_connect_fail);
    rm_mesh_handshake_end(&conn->mesh_hs);
    if (conn->mesh_ctx != NULL)
        SSL_CTX_free(conn->mesh_ctx);
    free(conn);
    cb(NULL, sock, err_kind, err, alpn, data);
    rm_endpoint_unref(ep);
}

static void
on_connect_timeout(rm_timer_t *entry)
{
    rm_connect_t *conn = H2O_STRUCT_FROM_MEMBER(rm_connect_t, timeout, entry);
    rm_socket_close(conn->sock);
    connect_finish(conn, NULL, RM_UPSTREAM_ERR_TIMEOUT, "connect timeout", RM_WIRE_UNKNOWN);
}

static void
on_handshake(h2o_socket_t *sock, const char *err)
{
    rm_connect_t *conn = sock->data;
    if (err != NULL) {
        char msg[256];
        snprintf(msg, sizeof(msg), "TLS handshake with %s: %s", conn->ep->name, err);
        rm_socket_close(sock);
        connect_finish(conn, NULL, RM_UPSTREAM_ERR_CONNECT, msg, RM_WIRE_UNKNOWN);
        return;
    }
    h2o_iovec_t proto = h2o_socket_ssl_get_selected_protocol(sock);
    rm_wire_protocol_t alpn = RM_WIRE_UNKNOWN;
    if (h2o_memis(proto.base, proto.len, H2O_STRLIT("h2")))
        alpn = RM_WIRE_H2;
    else if (h2o_memis(proto.base, proto.len, H2O_STRLIT("http/1.1")))
        alpn = RM_WIRE_HTTP1;
    connect_finish(conn, sock, 0, NULL, alpn);
}

static void
on_mesh_handshake(h2o_socket_t *sock, const char *err)
{
    rm_connect_t *conn = sock->data;
    rm_mesh_handshake_end(&conn->mesh_hs);
    rm_mesh_result_t result = rm_mesh_handshake_result(&conn->mesh_hs, RM_MESH_OUTBOUND, err);
    int proto = err == NULL ? rm_mesh_alpn_proto(h2o_socket_ssl_get_selected_protocol(sock)) : -1;
    if ((result == RM_MESH_SUCCESS || result == RM_MESH_RESUMED) && proto < 0) {
        result = RM_MESH_ERROR;
        snprintf(conn->mesh_hs.why, sizeof(conn->mesh_hs.why), "the peer agent negotiated no mesh protocol (ALPN)");
    }
    if (result != RM_MESH_SUCCESS && result != RM_MESH_RESUMED) {
        char msg[800];
        snprintf(msg, sizeof(msg), "mesh mTLS handshake with %s: %s", conn->ep->name, conn->mesh_hs.why);
        rm_log_info("mesh-tls", "%s (%s)", msg, rm_mesh_result_name(result));
        rm_socket_close(sock);
        connect_finish(conn, NULL, RM_UPSTREAM_ERR_CONNECT, msg, RM_WIRE_UNKNOWN);
        return;
    }
    rm_mesh_count_connection(RM_MESH_OUTBOUND, 1);
    connect_finish(conn, sock, 0, NULL, proto == RM_MESH_PROTO_H2 ? RM_WIRE_H2 : RM_WIRE_HTTP1);
}

static void
on_connect(h2o_socket_t *sock, const char *err)
{
    rm_connect_t *conn = sock->data;
    if (err != NULL) {
        char msg[256];
        snprintf(msg, sizeof(msg), "connect to %s: %s", conn->ep->name, err);
        rm_socket_close(sock);
        connect_finish(conn, NULL, RM_UPSTREAM_ERR_CONNECT, msg, RM_WIRE_UNKNOWN);
        return;
    }
    int on = 1;
    setsockopt(h2o_socket_get_fd(sock), IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    rm_cluster_t *c = conn->ep->cluster;
    if (conn->mesh_ctx != NULL) {
        /* the SNI is fixed: the peer agent is checked by its SPIFFE ID, not by a name */
        rm_mesh_handshake_start(&conn->mesh_hs, sock, conn->mesh_expected);
        h2o_socket_ssl_handshake(sock, conn->mesh_ctx, "remora.mesh", on_mesh_handshake);
        return;
    }
    if (c->ssl_ctx != NULL) {
        const char *sni = c->config->tls_server_name != NULL ? c->config->tls_server_name : conn->ep->host;
        h2o_socket_ssl_handshake(sock, c->ssl_ctx, sni, on_handshake);
        return;
    }
    connect_finish(conn, sock, 0, NULL, RM_WIRE_UNKNOWN);
}

/* The mesh mTLS client context for a connection to `ep` speaking `wire`, or NULL for none (docs/mesh-tls.md):
 * an agent-to-agent hop with an expected identity, an HTTP protocol, no TLS of its own, a mode other than DISABLE and an
 * identity in service. */
static SSL_CTX *
mesh_client_ctx(const rm_endpoint_t *ep, rm_wire_protocol_t wire, char *expected, size_t expected_len)
{
    rm_cluster_t *c = ep->cluster;
    const rm_config_cluster_t *cfg = c->config;
    if (!(cfg->agent_hop || cfg->peer_agent))
        return NULL;
    /* an endpoint whose workload runs as another service account than the Service's presents its own */
    const char *identity = ep->peer_identity != NULL ? ep->peer_identity : cfg->peer_identity;
    if (cfg->tls || identity == NULL || wire == RM_WIRE_UNKNOWN || c->worker->config->mesh_tls.mode == RM_MESH_TLS_DISABLE) {
        rm_mesh_count_connection(RM_MESH_OUTBOUND, cfg->tls);
        return NULL;
    }
    SSL_CTX *ctx = NULL;
    if (rm_mesh_expected_id(identity, expected, expected_len) == 0)
        ctx = rm_mesh_tls_client_ctx(expected, wire == RM_WIRE_H2 ? RM_MESH_PROTO_H2 : RM_MESH_PROTO_HTTP1);
    if (ctx == NULL) {
        /* no identity of our own: the hop stays plaintext (a STRICT peer refuses it) */
        rm_mesh_count_handshake(RM_MESH_OUTBOUND, RM_MESH_NO_IDENTITY);
        rm_mesh_count_connection(RM_MESH_OUTBOUND, 0);
    }
    return ctx;
}

rm_connect_t *
rm_connect_start(rm_endpoint_t *ep, rm_connect_cb cb, void *data)
{
    return rm_connect_start_proto(ep, RM_WIRE_UNKNOWN, cb, data);
}

rm_connect_t *
rm_connect_start_proto(rm_endpoint_t *ep, rm_wire_protocol_t wire, rm_connect_cb cb, void *data)
{
    rm_cluster_t *c = ep->cluster;
    rm_connect_t *conn = rm_calloc(1, sizeof(*conn));
    conn->mesh_ctx = mesh_client_ctx(ep, wire, conn->mesh_expected, sizeof(conn->mesh_expected));
    conn->ep = ep;
    rm_endpoint_ref(ep);
    conn->cb = cb;
    conn->data = data;
    conn->timeout.cb = on_connect_timeout;
    conn->sock = h2o_socket_connect(&c->worker->loop, (struct sockaddr *)&ep->addr, ep->addrlen, on_connect);
    if (conn->sock == NULL) {
        /* fails synchronously only for local reasons (no fds, bad address family) */
        RM_STAT_INC(c->stats->cx_connect_fail);
        if (conn->mesh_ctx != NULL)
            SSL_CTX_free(conn->mesh_ctx);
        free(conn);
        rm_endpoint_unref(ep);
        return NULL;
    }
    conn->sock->data = conn;
    rm_worker_timer_start(c->worker, &conn->timeout, c->config->connect_timeout_ms);
    return conn;
}

void
rm_connect_cancel(rm_connect_t *conn)
{
    if (rm_timer_is_linked(&conn->timeout))
        rm_timer_unlink(&conn->timeout);
    rm_socket_close(conn->sock);
    rm_mesh_handshake_end(&conn->mesh_hs);
    if (conn->mesh_ctx != NULL)
        SSL_CTX_free(conn->mesh_ctx);
    rm_endpoint_unref(conn->ep);
    free(conn);
}
