#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "core/registry.h"
#include "obs/stats.h"
#include "upstream/outlier.h"

struct st_rm_outlier_host_t {
    rm_outlier_cluster_t *_cluster;
    char *_addr;
    unsigned _refcnt;
    rm_outlier_host_t *_next;
    uint32_t consecutive_5xx, consecutive_gateway;
    uint32_t times_ejected;
    /** read without the lock by rm_outlier_available's fast path */
    uint32_t ejected;
    /** active health checking (upstream/health.c) says unhealthy: written under the lock, read without */
    uint32_t hc_unhealthy;
    uint64_t ejected_until_ms;
    /** when the probe in flight started (0: none) */
    uint64_t probe_started_ms;
    /** when it last came back (decay of times_ejected) */
    uint64_t healthy_since_ms;
    /** no endpoint holds it (_refcnt 0) but it is ejected: kept, with its reference on the cluster
     * record, so that a runtime rebuilt by a reload finds the ejection (not counted in num_hosts) */
    unsigned dormant : 1;
    rm_outlier_host_t *_free_next;
};

/* Dormant hosts kept per cluster record, at most (the oldest beyond go). */
#define MAX_DORMANT 64

struct st_rm_outlier_cluster_t {
    rm_registry_entry_t _entry;
    pthread_mutex_t mutex;
    rm_config_outlier_t config;
    rm_outlier_host_t *hosts;
    uint32_t num_hosts, num_ejected, num_dormant;
    /** hosts the health checker holds and finds unhealthy now */
    uint32_t num_hc_unhealthy;
};

/* Lock order: the registry, then a record's mutex. */
static rm_registry_t registry = RM_REGISTRY_INITIALIZER;

static rm_registry_entry_t *
create_record(void *unused)
{
    rm_outlier_cluster_t *oc = rm_calloc(1, sizeof(*oc));
    pthread_mutex_init(&oc->mutex, NULL);
    return &oc->_entry;
}

rm_outlier_cluster_t *
rm_outlier_cluster_acquire(const char *name)
{
    return RM_REGISTRY_OWNER(rm_outlier_cluster_t, _entry, rm_registry_acquire(&registry, name, create_record, NULL, NULL));
}

void
rm_outlier_cluster_release(rm_outlier_cluster_t *oc)
{
    if (oc == NULL || !rm_registry_release(&registry, &oc->_entry))
        return;
    assert(oc->hosts == NULL);
    pthread_mutex_destroy(&oc->mutex);
    free(oc);
}

/* called with the cluster's mutex held */
static void
unejected(rm_outlier_cluster_t *oc, rm_outlier_host_t *h, uint64_t now_ms)
{
    if (h->ejected) {
        __atomic_store_n(&h->ejected, 0, __ATOMIC_RELEASE);
        if (!h->dormant)
            --oc->num_ejected;
    }
    h->consecutive_5xx = 0;
    h->consecutive_gateway = 0;
    h->probe_started_ms = 0;
    h->ejected_until_ms = 0;
    h->healthy_since_ms = now_ms;
}

/* Unlinks a host onto `*to_free` (freed by free_hosts once the mutex is released: freeing drops a
 * reference on the record, which takes the registry lock, taken before the record's). */
static void
unlink_host(rm_outlier_cluster_t *oc, rm_outlier_host_t *h, rm_outlier_host_t **to_free)
{
    rm_outlier_host_t **p = &oc->hosts;
    while (*p != h)
        p = &(*p)->_next;
    *p = h->_next;
    if (h->dormant)
        --oc->num_dormant;
    if (h->hc_unhealthy)
        --oc->num_hc_unhealthy;
    h->_free_next = *to_free;
    *to_free = h;
}

static void
free_hosts(rm_outlier_host_t *list)
{
    while (list != NULL) {
        rm_outlier_host_t *h = list;
        list = h->_free_next;
        rm_outlier_cluster_t *oc = h->_cluster;
        free(h->_addr);
        free(h);
        rm_outlier_cluster_release(oc);
    }
}

void
rm_outlier_configure(rm_outlier_cluster_t *oc, const rm_config_outlier_t *config)
{
    rm_outlier_host_t *to_free = NULL;
    pthread_mutex_lock(&oc->mutex);
    oc->config = *config;
    if (!config->enabled) {
        for (rm_outlier_host_t *h = oc->hosts, *next; h != NULL; h = next) {
            next = h->_next;
            unejected(oc, h, 0);
            if (h->dormant)
                unlink_host(oc, h, &to_free);
        }
    }
    pthread_mutex_unlock(&oc->mutex);
    free_hosts(to_free);
}

rm_outlier_host_t *
rm_outlier_host_acquire(rm_outlier_cluster_t *oc, const char *addr)
{
    /* a new host holds a reference on its cluster record: taken first (the caller holds one, so the
     * record stays), dropped again if the host exists (lock order: registry, then a record's mutex) */
    rm_registry_ref(&registry, &oc->_entry);
    int created = 0;
    pthread_mutex_lock(&oc->mutex);
    rm_outlier_host_t *h;
    for (h = oc->hosts; h != NULL; h = h->_next)
        if (strcmp(h->_addr, addr) == 0)
            break;
    if (h == NULL) {
        h = rm_calloc(1, sizeof(*h));
        h->_cluster = oc;
        h->_addr = rm_strdup(addr);
        h->_next = oc->hosts;
        oc->hosts = h;
        ++oc->num_hosts;
        created = 1;
    }
    if (h->dormant) {
        /* an ejected address back in a runtime (a reload rebuilt the cluster): it is still ejected */
        h->dormant = 0;
        --oc->num_dormant;
        ++oc->num_hosts;
        if (h->ejected)
            ++oc->num_ejected;
    }
    ++h->_refcnt;
    pthread_mutex_unlock(&oc->mutex);
    if (!created)
        rm_outlier_cluster_release(oc);
    return h;
}

void
rm_outlier_host_release(rm_outlier_host_t *h)
{
    if (h == NULL)
        return;
    rm_outlier_cluster_t *oc = h->_cluster;
    rm_outlier_host_t *to_free = NULL;
    pthread_mutex_lock(&oc->mutex);
    if (--h->_refcnt != 0) {
        pthread_mutex_unlock(&oc->mutex);
        return;
    }
    --oc->num_hosts;
    if (h->ejected)
        --oc->num_ejected;
    if (h->ejected && oc->config.enabled) {
        h->dormant = 1;
        ++oc->num_dormant;
        if (oc->num_dormant > MAX_DORMANT) {
            /* hosts are prepended when created: the last dormant one is the oldest */
            rm_outlier_host_t *oldest = NULL;
            for (rm_outlier_host_t *d = oc->hosts; d != NULL; d = d->_next)
                if (d->dormant)
                    oldest = d;
            unlink_host(oc, oldest, &to_free);
        }
    } else {
        unlink_host(oc, h, &to_free);
    }
    pthread_mutex_unlock(&oc->mutex);
    free_hosts(to_free);
}

/* a probe that never reported (its request aborted downstream) is given up after this long */
static uint64_t
probe_lease_ms(const rm_config_outlier_t *c)
{
    return c->interval_ms != 0 ? c->interval_ms : 10000;
}

/* called with the mutex held */
static int
probe_possible(const rm_outlier_cluster_t *oc, const rm_outlier_host_t *h, uint64_t now_ms)
{
    if (now_ms < h->ejected_until_ms)
        return 0;
    return h->probe_started_ms == 0 || now_ms - h->probe_started_ms >= probe_lease_ms(&oc->config);
}

int
rm_outlier_available(rm_outlier_host_t *h, uint64_t now_ms)
{
    /* either can take the host out; both must agree to bring it back */
    if (__atomic_load_n(&h->hc_unhealthy, __ATOMIC_ACQUIRE))
        return 0;
    if (!__atomic_load_n(&h->ejected, __ATOMIC_ACQUIRE))
        return 1;
    rm_outlier_cluster_t *oc = h->_cluster;
    pthread_mutex_lock(&oc->mutex);
    int ok = !h->ejected || probe_possible(oc, h, now_ms);
    pthread_mutex_unlock(&oc->mutex);
    return ok;
}

int
rm_outlier_claim(rm_outlier_host_t *h, uint64_t now_ms)
{
    /* an unhealthy host takes no request, not even an outlier probe: the probe waits for the health
     * check to pass, then decides as usual */
    if (__atomic_load_n(&h->hc_unhealthy, __ATOMIC_ACQUIRE))
        return 0;
    if (!__atomic_load_n(&h->ejected, __ATOMIC_ACQUIRE))
        return 1;
    rm_outlier_cluster_t *oc = h->_cluster;
    pthread_mutex_lock(&oc->mutex);
    int ok = 1;
    if (h->hc_unhealthy) {
        ok = 0;
    } else if (h->ejected) {
        ok = probe_possible(oc, h, now_ms);
        if (ok)
            h->probe_started_ms = now_ms != 0 ? now_ms : 1;
    }
    pthread_mutex_unlock(&oc->mutex);
    return ok;
}

static uint64_t
ejection_ms(const rm_config_outlier_t *c, uint32_t times)
{
    uint64_t ms = (uint64_t)c->base_ejection_ms * times;
    if (c->max_ejection_ms != 0 && ms > c->max_ejection_ms)
        ms = c->max_ejection_ms;
    return ms;
}

int
rm_outlier_report(rm_outlier_host_t *h, rm_outlier_result_t result, uint64_t now_ms)
{
    rm_outlier_cluster_t *oc = h->_cluster;
    int ejected_now = 0;
    pthread_mutex_lock(&oc->mutex);
    const rm_config_outlier_t *c = &oc->config;
    if (!c->enabled)
        goto Exit;
    if (h->ejected) {
        /* only the probe decides; late answers of requests sent before the ejection are ignored */
        if (h->probe_started_ms == 0)
            goto Exit;
        if (result == RM_OUTLIER_SUCCESS) {
            unejected(oc, h, now_ms);
        } else {
            ++h->times_ejected;
            h->ejected_until_ms = now_ms + ejection_ms(c, h->times_ejected);
            h->probe_started_ms = 0;
        }
        goto Exit;
    }
    switch (result) {
    case RM_OUTLIER_SUCCESS:
        h->consecutive_5xx = 0;
        h->consecutive_gateway = 0;
        goto Exit;
    case RM_OUTLIER_5XX:
        ++h->consecutive_5xx;
        h->consecutive_gateway = 0;
        break;
    case RM_OUTLIER_GATEWAY:
        ++h->consecutive_5xx;
        ++h->consecutive_gateway;
        break;
    }
    if (!((c->consecutive_5xx != 0 && h->consecutive_5xx >= c->consecutive_5xx) ||
          (c->consecutive_gateway_errors != 0 && h->consecutive_gateway >= c->consecutive_gateway_errors)))
        goto Exit;
    h->consecutive_5xx = 0;
    h->consecutive_gateway = 0;
    /* at most max_ejection_percent of the endpoints at once */
    if ((uint64_t)(oc->num_ejected + 1) * 100 > (uint64_t)oc->num_hosts * c->max_ejection_percent)
        goto Exit;
    /* the multiplier decays by one per interval spent healthy since the last ejection */
    if (h->times_ejected != 0 && c->interval_ms != 0 && h->healthy_since_ms != 0 && now_ms > h->healthy_since_ms) {
        uint64_t decay = (now_ms - h->healthy_since_ms) / c->interval_ms;
        h->times_ejected = decay >= h->times_ejected ? 0 : h->times_ejected - (uint32_t)decay;
    }
    ++h->times_ejected;
    h->ejected_until_ms = now_ms + ejection_ms(c, h->times_ejected);
    h->probe_started_ms = 0;
    __atomic_store_n(&h->ejected, 1, __ATOMIC_RELEASE);
    ++oc->num_ejected;
    ejected_now = 1;
Exit:
    pthread_mutex_unlock(&oc->mutex);
    return ejected_now;
}

int
rm_outlier_is_ejected(rm_outlier_host_t *h)
{
    return __atomic_load_n(&h->ejected, __ATOMIC_ACQUIRE) != 0;
}

void
rm_outlier_set_health(rm_outlier_host_t *h, int healthy)
{
    rm_outlier_cluster_t *oc = h->_cluster;
    pthread_mutex_lock(&oc->mutex);
    uint32_t unhealthy = !healthy;
    if (h->hc_unhealthy != unhealthy) {
        __atomic_store_n(&h->hc_unhealthy, unhealthy, __ATOMIC_RELEASE);
        if (unhealthy)
            ++oc->num_hc_unhealthy;
        else
            --oc->num_hc_unhealthy;
    }
    pthread_mutex_unlock(&oc->mutex);
}

int
rm_outlier_is_unhealthy(rm_outlier_host_t *h)
{
    return __atomic_load_n(&h->hc_unhealthy, __ATOMIC_ACQUIRE) != 0;
}

const char *
rm_outlier_host_addr(const rm_outlier_host_t *h)
{
    return h->_addr;
}

void
rm_outlier_counts(rm_outlier_cluster_t *oc, uint32_t *hosts, uint32_t *ejected)
{
    pthread_mutex_lock(&oc->mutex);
    *hosts = oc->num_hosts;
    *ejected = oc->num_ejected;
    pthread_mutex_unlock(&oc->mutex);
}

int
rm_outlier_circuit_open(rm_outlier_cluster_t *oc)
{
    uint32_t hosts, ejected;
    rm_outlier_counts(oc, &hosts, &ejected);
    return hosts != 0 && ejected == hosts;
}

rm_outlier_result_t
rm_outlier_classify(int http_status, int grpc_status)
{
    if (http_status == 502 || http_status == 503 || http_status == 504 || grpc_status == 14 /* UNAVAILABLE */)
        return RM_OUTLIER_GATEWAY;
    if (http_status >= 500)
        return RM_OUTLIER_5XX;
    return RM_OUTLIER_SUCCESS;
}

char *
rm_outlier_render(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);
    if (fp == NULL)
        rm_fatal("open_memstream failed");
    int any = 0;
    rm_registry_lock(&registry);
    for (int family = 0; family != 2; ++family) {
        const char *name = family == 0 ? "remora_upstream_endpoints_ejected" : "remora_upstream_circuit_open";
        fprintf(fp, "# HELP %s %s\n# TYPE %s gauge\n", name,
                family == 0 ? "Endpoints ejected by outlier detection now, agent-wide."
                            : "1 while every endpoint of the cluster is ejected (requests fail fast).",
                name);
        for (rm_registry_entry_t *e = registry.head; e != NULL; e = e->next) {
            rm_outlier_cluster_t *oc = RM_REGISTRY_OWNER(rm_outlier_cluster_t, _entry, e);
            pthread_mutex_lock(&oc->mutex);
            int enabled = oc->config.enabled;
            uint32_t hosts = oc->num_hosts, ejected = oc->num_ejected;
            pthread_mutex_unlock(&oc->mutex);
            if (!enabled)
                continue;
            any = 1;
            fprintf(fp, "%s{cluster=\"", name);
            rm_stats_fprint_label_value(fp, oc->_entry.name);
            fprintf(fp, "\"} %u\n", family == 0 ? ejected : (unsigned)(hosts != 0 && ejected == hosts));
        }
    }
    rm_registry_unlock(&registry);
    fclose(fp);
    if (!any) {
        free(text);
        return NULL;
    }
    return text;
}

char *
rm_outlier_describe(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);
    if (fp == NULL)
        rm_fatal("open_memstream failed");
    rm_registry_lock(&registry);
    for (rm_registry_entry_t *e = registry.head; e != NULL; e = e->next) {
        rm_outlier_cluster_t *oc = RM_REGISTRY_OWNER(rm_outlier_cluster_t, _entry, e);
        pthread_mutex_lock(&oc->mutex);
        if (oc->config.enabled)
            fprintf(fp, "%s: %u/%u endpoints ejected, circuit %s\n", oc->_entry.name, oc->num_ejected, oc->num_hosts,
                    oc->num_hosts != 0 && oc->num_ejected == oc->num_hosts ? "open" : "closed");
        if (oc->num_hc_unhealthy != 0)
            fprintf(fp, "%s: %u/%u endpoints unhealthy (health checks)\n", oc->_entry.name, oc->num_hc_unhealthy, oc->num_hosts);
        pthread_mutex_unlock(&oc->mutex);
    }
    rm_registry_unlock(&registry);
    fclose(fp);
    return text;
}
