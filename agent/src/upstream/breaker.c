#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "core/registry.h"
#include "obs/stats.h"
#include "upstream/breaker.h"

const char *const rm_breaker_limit_names[RM_BREAKER_MAX] = {"connections", "pending", "requests", "retries"};

struct st_rm_breaker_t {
    rm_registry_entry_t _entry;
    uint32_t _limit[RM_BREAKER_MAX];
    uint32_t _count[RM_BREAKER_MAX];
};

/* Few entries (one per cluster name), touched only when cluster runtimes are built and freed. */
static rm_registry_t registry = RM_REGISTRY_INITIALIZER;

static rm_registry_entry_t *
create_breaker(void *unused)
{
    rm_breaker_t *b = rm_calloc(1, sizeof(*b));
    return &b->_entry;
}

rm_breaker_t *
rm_breaker_acquire(const char *name)
{
    return RM_REGISTRY_OWNER(rm_breaker_t, _entry, rm_registry_acquire(&registry, name, create_breaker, NULL, NULL));
}

void
rm_breaker_release_ref(rm_breaker_t *b)
{
    if (b != NULL && rm_registry_release(&registry, &b->_entry))
        free(b);
}

void
rm_breaker_configure(rm_breaker_t *b, const rm_config_breakers_t *limits)
{
    __atomic_store_n(&b->_limit[RM_BREAKER_CONNECTIONS], limits->max_connections, __ATOMIC_RELAXED);
    __atomic_store_n(&b->_limit[RM_BREAKER_PENDING], limits->max_pending_requests, __ATOMIC_RELAXED);
    __atomic_store_n(&b->_limit[RM_BREAKER_REQUESTS], limits->max_requests, __ATOMIC_RELAXED);
    __atomic_store_n(&b->_limit[RM_BREAKER_RETRIES], limits->max_retries, __ATOMIC_RELAXED);
}

int
rm_breaker_try_acquire(rm_breaker_t *b, rm_breaker_limit_t which)
{
    uint32_t limit = __atomic_load_n(&b->_limit[which], __ATOMIC_RELAXED);
    uint32_t cur = __atomic_load_n(&b->_count[which], __ATOMIC_RELAXED);
    do {
        /* a plain add-then-check would let concurrent takers overshoot for a moment; the CAS never does */
        if (limit != 0 && cur >= limit)
            return 0;
        if (cur == UINT32_MAX)
            return 0;
    } while (!__atomic_compare_exchange_n(&b->_count[which], &cur, cur + 1, 1, __ATOMIC_ACQ_REL, __ATOMIC_RELAXED));
    return 1;
}

void
rm_breaker_acquire_forced(rm_breaker_t *b, rm_breaker_limit_t which)
{
    __atomic_fetch_add(&b->_count[which], 1, __ATOMIC_ACQ_REL);
}

void
rm_breaker_release(rm_breaker_t *b, rm_breaker_limit_t which)
{
    uint32_t prev = __atomic_fetch_sub(&b->_count[which], 1, __ATOMIC_ACQ_REL);
    assert(prev != 0 && "breaker slot released twice");
    (void)prev;
}

uint32_t
rm_breaker_count(const rm_breaker_t *b, rm_breaker_limit_t which)
{
    return __atomic_load_n(&b->_count[which], __ATOMIC_RELAXED);
}

uint32_t
rm_breaker_limit(const rm_breaker_t *b, rm_breaker_limit_t which)
{
    return __atomic_load_n(&b->_limit[which], __ATOMIC_RELAXED);
}

char *
rm_breaker_render(void)
{
    char *text = NULL;
    size_t len = 0;
    rm_registry_lock(&registry);
    if (registry.head != NULL) {
        FILE *fp = open_memstream(&text, &len);
        if (fp == NULL)
            rm_fatal("open_memstream failed");
        static const struct {
            const char *name, *help;
            int limit;
        } families[] = {
            {"remora_upstream_breaker_active", "Slots of each circuit breaker in use, agent-wide.", 0},
            {"remora_upstream_breaker_limit", "Limit of each circuit breaker, agent-wide (0: none).", 1},
        };
        for (size_t f = 0; f != sizeof(families) / sizeof(families[0]); ++f) {
            fprintf(fp, "# HELP %s %s\n# TYPE %s gauge\n", families[f].name, families[f].help, families[f].name);
            for (rm_registry_entry_t *e = registry.head; e != NULL; e = e->next) {
                rm_breaker_t *b = RM_REGISTRY_OWNER(rm_breaker_t, _entry, e);
                for (int i = 0; i != RM_BREAKER_MAX; ++i) {
                    fprintf(fp, "%s{cluster=\"", families[f].name);
                    rm_stats_fprint_label_value(fp, e->name);
                    fprintf(fp, "\",limit=\"%s\"} %u\n", rm_breaker_limit_names[i],
                            families[f].limit ? rm_breaker_limit(b, i) : rm_breaker_count(b, i));
                }
            }
        }
        fclose(fp);
    }
    rm_registry_unlock(&registry);
    return text;
}
