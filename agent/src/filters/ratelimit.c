#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "remora/strutil.h"
#include "core/worker.h"
#include "filters/ratelimit.h"
#include "obs/stats.h"
#include "policy/ratelimit_table.h"
#include "proxy/stream.h"

/* The worker's handles on the tables of the snapshot it serves (holds a reference on the snapshot,
 * so no policy pointer here can be reused by another snapshot while cached). */
typedef struct st_cache_entry_t {
    const rm_config_rate_limit_t *rl;
    rm_ratelimit_table_t *table;
} cache_entry_t;

typedef struct st_worker_cache_t {
    rm_config_t *config;
    cache_entry_t *entries;
    size_t num_entries;
} worker_cache_t;

static size_t module_slot = SIZE_MAX;

static void
cache_add(cache_entry_t *entries, size_t *n, const rm_config_rate_limit_t *rl)
{
    if (rl == NULL)
        return;
    entries[*n].rl = rl;
    entries[*n].table = rm_ratelimit_table_acquire(rl->name, rl->max_clients);
    ++*n;
}

static void
cache_rebuild(worker_cache_t *c, rm_config_t *config)
{
    /* sized to the limits there are, not to the routes (a mesh has thousands of routes, few limits); a
     * listener that borrows another's routes (the same list) adds nothing */
    size_t cap = 0;
    for (size_t i = 0; i != config->num_listeners; ++i)
        for (size_t j = 0; !config->listeners[i].routes_borrowed && j != config->listeners[i].num_routes; ++j)
            cap += config->listeners[i].routes[j].rate_limit != NULL;
    for (size_t i = 0; i != config->num_clusters; ++i)
        cap += config->clusters[i].rate_limit != NULL;
    cache_entry_t *entries = rm_calloc(cap + 1, sizeof(*entries));
    size_t n = 0;
    /* acquire the new tables first: a policy kept by the new snapshot keeps its buckets */
    for (size_t i = 0; i != config->num_listeners; ++i)
        for (size_t j = 0; !config->listeners[i].routes_borrowed && j != config->listeners[i].num_routes; ++j)
            cache_add(entries, &n, config->listeners[i].routes[j].rate_limit);
    for (size_t i = 0; i != config->num_clusters; ++i)
        cache_add(entries, &n, config->clusters[i].rate_limit);
    for (size_t i = 0; i != c->num_entries; ++i)
        rm_ratelimit_table_release(c->entries[i].table);
    free(c->entries);
    if (c->config != NULL)
        rm_config_unref(c->config);
    c->config = rm_config_ref(config);
    c->entries = entries;
    c->num_entries = n;
}

static void *
module_init(rm_worker_t *worker)
{
    return rm_calloc(1, sizeof(worker_cache_t));
}

static void
module_on_config(rm_worker_t *worker, void *state)
{
    cache_rebuild(state, worker->config);
}

static void
module_thread_exit(rm_worker_t *worker, void *state)
{
    worker_cache_t *c = state;
    for (size_t i = 0; i != c->num_entries; ++i)
        rm_ratelimit_table_release(c->entries[i].table);
    free(c->entries);
    if (c->config != NULL)
        rm_config_unref(c->config);
    free(c);
}

static const rm_worker_module_t ratelimit_module = {
    .name = "ratelimit",
    .init = module_init,
    .on_config = module_on_config,
    .thread_exit = module_thread_exit,
};

void
rm_ratelimit_register(void)
{
    module_slot = rm_worker_register_module(&ratelimit_module);
    rm_stats_register_renderer(rm_ratelimit_render_prometheus);
}

/* The table of `rl`: borrowed from the worker's cache when the stream is on its snapshot (the cache
 * changes only between events), else acquired from the registry (*owned set: release it after use). */
static rm_ratelimit_table_t *
find_table(rm_stream_t *s, const rm_config_rate_limit_t *rl, int *owned)
{
    *owned = 0;
    if (module_slot != SIZE_MAX) {
        worker_cache_t *c = rm_worker_module_state(s->worker, module_slot);
        if (c->config != s->worker->config && s->config == s->worker->config)
            cache_rebuild(c, s->worker->config); /* the first snapshot, taken before any on_config */
        if (c->config == s->config) {
            for (size_t i = 0; i != c->num_entries; ++i) {
                if (c->entries[i].rl == rl)
                    return c->entries[i].table;
            }
        }
    }
    *owned = 1;
    return rm_ratelimit_table_acquire(rl->name, rl->max_clients);
}

/* The client key in `buf` (or pointing into the request); length, or 0 for none. */
static size_t
client_key(rm_stream_t *s, const rm_config_rate_limit_t *rl, char *buf, size_t bufsz, const char **key)
{
    *key = buf;
    switch (rl->client_key) {
    case RM_CLIENT_KEY_HEADER: {
        if (rl->client_header == NULL)
            return 0;
        ssize_t i = rm_headers_find(&s->req.headers, rl->client_header, strlen(rl->client_header), -1);
        if (i < 0)
            return 0;
        *key = s->req.headers.entries[i].value.base;
        return s->req.headers.entries[i].value.len;
    }
    case RM_CLIENT_KEY_IDENTITY: /* the mesh mTLS peer's SPIFFE ID; a plaintext caller: its source address */
        if (s->peer_identity != NULL) {
            *key = s->peer_identity;
            return strlen(s->peer_identity);
        }
        __attribute__((fallthrough));
    case RM_CLIENT_KEY_SOURCE:
    default:
        if (s->peerlen == 0)
            return 0;
        if (s->peer.ss_family == AF_INET) {
            if (inet_ntop(AF_INET, &((struct sockaddr_in *)&s->peer)->sin_addr, buf, (socklen_t)bufsz) == NULL)
                return 0;
        } else if (s->peer.ss_family == AF_INET6) {
            if (inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&s->peer)->sin6_addr, buf, (socklen_t)bufsz) == NULL)
                return 0;
        } else {
            return 0;
        }
        return strlen(buf);
    }
}

static uint64_t
now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int
rm_ratelimit_apply(rm_stream_t *s, const rm_config_rate_limit_t *rl)
{
    rm_ratelimit_rates_t rates = {rl->total_rps, rl->total_burst, rl->per_client_rps, rl->per_client_burst};
    char buf[INET6_ADDRSTRLEN];
    const char *key = NULL;
    size_t key_len = 0;
    if (rl->per_client_rps != 0 || rl->num_overrides != 0) {
        key_len = client_key(s, rl, buf, sizeof(buf), &key);
        if (key_len == 0)
            key = NULL;
    }
    if (key != NULL) {
        for (size_t i = 0; i != rl->num_overrides; ++i) {
            const rm_config_rate_override_t *o = &rl->overrides[i];
            for (size_t j = 0; j != o->num_clients; ++j) {
                if (strlen(o->clients[j]) == key_len && memcmp(o->clients[j], key, key_len) == 0) {
                    rates.client_rps = o->requests_per_second;
                    rates.client_burst = o->burst;
                    goto Matched;
                }
            }
        }
    }
Matched:;
    int owned;
    rm_ratelimit_table_t *t = find_table(s, rl, &owned);
    uint64_t wait_ns = 0;
    int ok = rm_ratelimit_table_check(t, &rates, key, key_len, now_ns(), &wait_ns);
    if (owned)
        rm_ratelimit_table_release(t);
    if (ok)
        return 0;

    char *value = h2o_mem_alloc_pool(&s->pool, 24);
    int vlen = snprintf(value, 24, "%llu", (unsigned long long)rm_gcra_retry_after_s(wait_ns));
    rm_header_t *retry_after = h2o_mem_alloc_pool(&s->pool, sizeof(*retry_after));
    retry_after->name = h2o_iovec_init(H2O_STRLIT("retry-after"));
    retry_after->value = h2o_iovec_init(value, (size_t)vlen);
    retry_after->orig_name = NULL;
    rm_headers_t *extra = h2o_mem_alloc_pool(&s->pool, sizeof(*extra));
    *extra = (rm_headers_t){retry_after, 1, 1};
    rm_stream_reply_with_headers(s, RM_LOCAL_RATE_LIMITED, 429, RM_GRPC_RESOURCE_EXHAUSTED, "rate limited", extra);
    return -1;
}

static rm_filter_status_t
ratelimit_on_request_head(rm_stream_t *s, void *state)
{
    const rm_config_rate_limit_t *rl = s->route->rate_limit;
    if (rl == NULL)
        return RM_FILTER_CONTINUE;
    return rm_ratelimit_apply(s, rl) == 0 ? RM_FILTER_CONTINUE : RM_FILTER_STOP;
}

const rm_filter_t rm_ratelimit_filter = {
    .name = "ratelimit",
    .on_request_head = ratelimit_on_request_head,
};
