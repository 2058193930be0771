/*
 * The upstream module's per-worker state: the DNS resolver and the table of cluster runtimes,
 * built lazily (on a cluster's first request) and reconciled with each new snapshot: a runtime
 * whose settings did not change keeps its pooled connections; the others retire.
 */
#include <stdlib.h>
#include <string.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "net/resolver.h"
#include "upstream/cluster.h"

typedef struct st_cluster_table_t {
    /** the snapshot `cache` indexes (the worker's current one) */
    rm_config_t *config;
    rm_cluster_t **cache;
    /** runtimes in service, by name (at most one per name) */
    rm_cluster_t **live;
    size_t num_live, cap_live;
} cluster_table_t;

static size_t module_slot;

static cluster_table_t *
table_of(rm_worker_t *worker)
{
    return rm_worker_module_state(worker, module_slot);
}

static ssize_t
find_live(cluster_table_t *t, const char *name)
{
    for (size_t i = 0; i != t->num_live; ++i)
        if (strcmp(rm_cluster_name(t->live[i]), name) == 0)
            return i;
    return -1;
}

static void
add_live(cluster_table_t *t, rm_cluster_t *c)
{
    if (t->num_live == t->cap_live) {
        t->cap_live = t->cap_live == 0 ? 8 : t->cap_live * 2;
        t->live = rm_realloc(t->live, t->cap_live * sizeof(*t->live));
    }
    t->live[t->num_live++] = c;
}

static void
retire_live(cluster_table_t *t, size_t i)
{
    rm_cluster_t *c = t->live[i];
    t->live[i] = t->live[--t->num_live];
    rm_cluster_retire(c);
}

static void
reset_cache(cluster_table_t *t, rm_config_t *config)
{
    free(t->cache);
    t->config = config;
    t->cache = rm_calloc(config->num_clusters + 1, sizeof(*t->cache));
}

rm_cluster_t *
rm_cluster_lookup(rm_worker_t *worker, rm_config_t *snapshot, size_t index)
{
    cluster_table_t *t = table_of(worker);
    int current = snapshot == t->config;
    if (current && t->cache[index] != NULL)
        return t->cache[index];
    const rm_config_cluster_t *cc = &snapshot->clusters[index];
    ssize_t i = find_live(t, cc->name);
    rm_cluster_t *c = i >= 0 ? t->live[i] : NULL;
    if (c != NULL && !current)
        return c; /* an older snapshot's stream: the cluster of that name now in service */
    if (c != NULL && (rm_cluster_config(c) == cc || rm_cluster_can_reuse(c, cc))) {
        if (rm_cluster_config(c) != cc)
            rm_cluster_update_config(c, snapshot, cc);
    } else {
        if (c != NULL)
            retire_live(t, (size_t)i);
        c = rm_cluster_create(worker, snapshot, cc);
        add_live(t, c);
    }
    if (current)
        t->cache[index] = c;
    return c;
}

static void *
on_init(rm_worker_t *worker)
{
    cluster_table_t *t = rm_calloc(1, sizeof(*t));
    char errbuf[256];
    worker->resolver = rm_resolver_create(&worker->loop, (const char *const *)worker->config->dns_servers,
                                          worker->config->num_dns_servers, errbuf, sizeof(errbuf));
    if (worker->resolver == NULL)
        rm_log_error("worker", "worker %u: DNS resolver: %s (host-name endpoints will fail)", worker->id, errbuf);
    reset_cache(t, worker->config);
    return t;
}

static void
on_config(rm_worker_t *worker, void *state)
{
    cluster_table_t *t = state;
    rm_config_t *config = worker->config;
    reset_cache(t, config);
    for (size_t i = t->num_live; i != 0; --i) {
        rm_cluster_t *c = t->live[i - 1];
        ssize_t idx = rm_config_find_cluster(config, rm_cluster_name(c));
        if (idx >= 0 && rm_cluster_can_reuse(c, &config->clusters[idx])) {
            rm_cluster_update_config(c, config, &config->clusters[idx]);
            t->cache[idx] = c;
        } else {
            retire_live(t, i - 1);
        }
    }
}

static void
on_close(rm_worker_t *worker, void *state)
{
    cluster_table_t *t = state;
    while (t->num_live != 0)
        retire_live(t, t->num_live - 1);
    rm_clusters_close_all(worker);
    if (worker->resolver != NULL) {
        rm_resolver_destroy(worker->resolver);
        worker->resolver = NULL;
    }
}

static void
on_thread_exit(rm_worker_t *worker, void *state)
{
    cluster_table_t *t = state;
    free(t->cache);
    free(t->live);
    free(t);
}

const rm_worker_module_t rm_upstream_module = {
    .name = "upstream",
    .init = on_init,
    .on_config = on_config,
    .close = on_close,
    .thread_exit = on_thread_exit,
};

void
rm_upstream_module_register(void)
{
    module_slot = rm_worker_register_module(&rm_upstream_module);
}
