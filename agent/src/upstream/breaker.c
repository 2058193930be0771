#include <assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "upstream/breaker.h"

const char *const rm_breaker_limit_names[RM_BREAKER_MAX] = {"connections", "pending", "requests", "retries"};

struct st_rm_breaker_t {
    char *_name;
    /** registry references (under registry_mutex) */
    unsigned _refcnt;
    uint32_t _limit[RM_BREAKER_MAX];
    uint32_t _count[RM_BREAKER_MAX];
    rm_breaker_t *_next;
};

/* Few entries (one per cluster name), touched only when cluster runtimes are built and freed. */
static pthread_mutex_t registry_mutex = PTHREAD_MUTEX_INITIALIZER;
static rm_breaker_t *registry;

rm_breaker_t *
rm_breaker_acquire(const char *name)
{
    pthread_mutex_lock(&registry_mutex);
    rm_breaker_t *b;
    for (b = registry; b != NULL; b = b->_next)
        if (strcmp(b->_name, name) == 0)
            break;
    if (b == NULL) {
        b = rm_calloc(1, sizeof(*b));
        b->_name = rm_strdup(name);
        b->_next = registry;
        registry = b;
    }
    ++b->_refcnt;
    pthread_mutex_unlock(&registry_mutex);
    return b;
}

void
rm_breaker_release_ref(rm_breaker_t *b)
{
    if (b == NULL)
        return;
    pthread_mutex_lock(&registry_mutex);
    assert(b->_refcnt != 0);
    if (--b->_refcnt != 0) {
        pthread_mutex_unlock(&registry_mutex);
        return;
    }
    rm_breaker_t **p = &registry;
    while (*p != b)
        p = &(*p)->_next;
    *p = b->_next;
    pthread_mutex_unlock(&registry_mutex);
    free(b->_name);
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

static void
print_label_value(FILE *fp, const char *v)
{
    for (; *v != '\0'; ++v) {
        if (*v == '\\' || *v == '"')
            fprintf(fp, "\\%c", *v);
        else if (*v == '\n')
            fputs("\\n", fp);
        else
            fputc(*v, fp);
    }
}

char *
rm_breaker_render(void)
{
    char *text = NULL;
    size_t len = 0;
    pthread_mutex_lock(&registry_mutex);
    if (registry != NULL) {
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
            for (rm_breaker_t *b = registry; b != NULL; b = b->_next) {
                for (int i = 0; i != RM_BREAKER_MAX; ++i) {
                    fprintf(fp, "%s{cluster=\"", families[f].name);
                    print_label_value(fp, b->_name);
                    fprintf(fp, "\",limit=\"%s\"} %u\n", rm_breaker_limit_names[i],
                            families[f].limit ? rm_breaker_limit(b, i) : rm_breaker_count(b, i));
                }
            }
        }
        fclose(fp);
    }
    pthread_mutex_unlock(&registry_mutex);
    return text;
}
