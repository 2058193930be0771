#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "core/registry.h"
#include "policy/ratelimit_table.h"

#define NS_PER_S 1000000000ull
#define NIL UINT32_MAX

/* GCRA ----------------------------------------------------------------------------------------- */

int
rm_gcra_eval(uint64_t tat, uint64_t now_ns, uint32_t rps, uint32_t burst, uint64_t *new_tat, uint64_t *wait_ns)
{
    if (rps == 0) {
        *new_tat = tat;
        return 1;
    }
    uint64_t t = NS_PER_S / rps, limit = (uint64_t)(burst != 0 ? burst : rps) * t;
    uint64_t next = (tat > now_ns ? tat : now_ns) + t;
    if (next - now_ns <= limit) {
        *new_tat = next;
        return 1;
    }
    *wait_ns = next - limit - now_ns;
    return 0;
}

int
rm_gcra_take(uint64_t *shared_tat, uint64_t now_ns, uint32_t rps, uint32_t burst, uint64_t *wait_ns)
{
    if (rps == 0)
        return 1;
    uint64_t tat = __atomic_load_n(shared_tat, __ATOMIC_RELAXED), next;
    do {
        if (!rm_gcra_eval(tat, now_ns, rps, burst, &next, wait_ns))
            return 0;
        /* a later TAT written by a thread with a slightly later clock is still honoured: eval starts from max(TAT, now) */
    } while (!__atomic_compare_exchange_n(shared_tat, &tat, next, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED));
    return 1;
}

uint64_t
rm_gcra_retry_after_s(uint64_t wait_ns)
{
    uint64_t s = (wait_ns + NS_PER_S - 1) / NS_PER_S;
    return s < 1 ? 1 : s;
}

/* The per-client table ------------------------------------------------------------------------- */

/* 64 bytes: one cache line per client */
typedef struct st_entry_t {
    uint64_t hash;
    uint64_t tat;
    uint32_t chain; /* 1 + index of the next entry in the same hash bucket, 0 for none */
    uint32_t lru_prev, lru_next;
    uint16_t key_len; /* of the whole key, saturated at UINT16_MAX */
    char key[RM_RATELIMIT_KEY_INLINE];
} entry_t;
_Static_assert(sizeof(entry_t) == 64, "a client entry is one cache line");

typedef struct st_shard_t {
    pthread_mutex_t mutex;
    entry_t *entries;
    uint32_t *heads; /* hash buckets: 1 + index of the first entry, 0 for none (calloc: untouched pages stay unmapped) */
    uint32_t capacity, used, mask;
    uint32_t lru_head, lru_tail; /* most and least recently seen */
    char _pad[64];               /* keep shards' locks off each other's cache lines */
} shard_t;

struct st_rm_ratelimit_table_t {
    /* the total bucket, alone on its cache line: the one word every worker writes */
    _Alignas(64) uint64_t total_tat;
    _Alignas(64) uint64_t allowed;
    uint64_t limited;
    uint32_t max_clients;
    /* the registry's entry: the policy name */
    rm_registry_entry_t entry;
    shard_t shards[RM_RATELIMIT_SHARDS];
};

static uint64_t
hash_key(const char *key, size_t len)
{
    /* FNV-1a, then a final mix so that both the high bits (shard) and low bits (bucket) are good */
    uint64_t h = rm_fnv1a(RM_FNV1A_INIT, key, len);
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return h;
}

static void
shard_alloc(shard_t *sh, uint32_t capacity)
{
    uint32_t nb = 1;
    while (nb < capacity)
        nb <<= 1;
    sh->entries = rm_calloc(capacity, sizeof(*sh->entries));
    sh->heads = rm_calloc(nb, sizeof(*sh->heads));
    sh->capacity = capacity;
    sh->mask = nb - 1;
    sh->used = 0;
    sh->lru_head = sh->lru_tail = NIL;
}

static void
lru_unlink(shard_t *sh, uint32_t i)
{
    entry_t *e = &sh->entries[i];
    if (e->lru_prev != NIL)
        sh->entries[e->lru_prev].lru_next = e->lru_next;
    else
        sh->lru_head = e->lru_next;
    if (e->lru_next != NIL)
        sh->entries[e->lru_next].lru_prev = e->lru_prev;
    else
        sh->lru_tail = e->lru_prev;
}

static void
lru_push_front(shard_t *sh, uint32_t i)
{
    entry_t *e = &sh->entries[i];
    e->lru_prev = NIL;
    e->lru_next = sh->lru_head;
    if (sh->lru_head != NIL)
        sh->entries[sh->lru_head].lru_prev = i;
    else
        sh->lru_tail = i;
    sh->lru_head = i;
}

static void
chain_remove(shard_t *sh, uint32_t i)
{
    uint32_t *p = &sh->heads[sh->entries[i].hash & sh->mask];
    while (*p != i + 1)
        p = &sh->entries[*p - 1].chain;
    *p = sh->entries[i].chain;
}

/* The entry of `key` (found, or made by taking a free slot or evicting the least recently seen), at the LRU front. */
static entry_t *
shard_get(shard_t *sh, uint64_t h, const char *key, size_t len)
{
    uint16_t klen = len < UINT16_MAX ? (uint16_t)len : UINT16_MAX;
    size_t cmp = len < RM_RATELIMIT_KEY_INLINE ? len : RM_RATELIMIT_KEY_INLINE;
    uint32_t *head = &sh->heads[h & sh->mask];
    for (uint32_t link = *head; link != 0; link = sh->entries[link - 1].chain) {
        uint32_t i = link - 1;
        entry_t *e = &sh->entries[i];
        if (e->hash == h && e->key_len == klen && memcmp(e->key, key, cmp) == 0) {
            if (sh->lru_head != i) {
                lru_unlink(sh, i);
                lru_push_front(sh, i);
            }
            return e;
        }
    }
    uint32_t i;
    if (sh->used < sh->capacity) {
        i = sh->used++;
    } else {
        i = sh->lru_tail;
        lru_unlink(sh, i);
        chain_remove(sh, i);
    }
    entry_t *e = &sh->entries[i];
    e->hash = h;
    e->tat = 0;
    e->key_len = klen;
    memcpy(e->key, key, cmp);
    e->chain = *head;
    *head = i + 1;
    lru_push_front(sh, i);
    return e;
}

static uint32_t
per_shard(uint32_t max_clients)
{
    return (max_clients + RM_RATELIMIT_SHARDS - 1) / RM_RATELIMIT_SHARDS;
}

static void
table_resize(rm_ratelimit_table_t *t, uint32_t max_clients)
{
    for (size_t i = 0; i != RM_RATELIMIT_SHARDS; ++i) {
        shard_t *sh = &t->shards[i];
        pthread_mutex_lock(&sh->mutex);
        free(sh->entries);
        free(sh->heads);
        shard_alloc(sh, per_shard(max_clients));
        pthread_mutex_unlock(&sh->mutex);
    }
    __atomic_store_n(&t->max_clients, max_clients, __ATOMIC_RELAXED);
}

/* The registry: one table per policy name, touched only when workers take a new snapshot. */
static rm_registry_t registry = RM_REGISTRY_INITIALIZER;

static rm_registry_entry_t *
create_table(void *arg)
{
    uint32_t max_clients = *(const uint32_t *)arg;
    rm_ratelimit_table_t *t;
    if (posix_memalign((void **)&t, 64, sizeof(*t)) != 0)
        rm_fatal("out of memory");
    memset(t, 0, sizeof(*t));
    t->max_clients = max_clients;
    for (size_t i = 0; i != RM_RATELIMIT_SHARDS; ++i) {
        pthread_mutex_init(&t->shards[i].mutex, NULL);
        shard_alloc(&t->shards[i], per_shard(max_clients));
    }
    return &t->entry;
}

static void
found_table(rm_registry_entry_t *e, void *arg)
{
    rm_ratelimit_table_t *t = RM_REGISTRY_OWNER(rm_ratelimit_table_t, entry, e);
    uint32_t max_clients = *(const uint32_t *)arg;
    if (t->max_clients != max_clients)
        table_resize(t, max_clients);
}

rm_ratelimit_table_t *
rm_ratelimit_table_acquire(const char *name, uint32_t max_clients)
{
    if (max_clients == 0)
        max_clients = RM_RATELIMIT_DEFAULT_MAX_CLIENTS;
    return RM_REGISTRY_OWNER(rm_ratelimit_table_t, entry,
                             rm_registry_acquire(&registry, name, create_table, found_table, &max_clients));
}

void
rm_ratelimit_table_ref(rm_ratelimit_table_t *t)
{
    rm_registry_ref(&registry, &t->entry);
}

void
rm_ratelimit_table_release(rm_ratelimit_table_t *t)
{
    if (t == NULL || !rm_registry_release(&registry, &t->entry))
        return;
    for (size_t i = 0; i != RM_RATELIMIT_SHARDS; ++i) {
        pthread_mutex_destroy(&t->shards[i].mutex);
        free(t->shards[i].entries);
        free(t->shards[i].heads);
    }
    free(t);
}

const char *
rm_ratelimit_table_name(const rm_ratelimit_table_t *t)
{
    return t->entry.name;
}

static void
count(rm_ratelimit_table_t *t, int allowed)
{
    __atomic_fetch_add(allowed ? &t->allowed : &t->limited, 1, __ATOMIC_RELAXED);
}

int
rm_ratelimit_table_check(rm_ratelimit_table_t *t, const rm_ratelimit_rates_t *rates, const char *client, size_t client_len,
                         uint64_t now_ns, uint64_t *wait_ns)
{
    if (client == NULL || rates->client_rps == 0) {
        int ok = rm_gcra_take(&t->total_tat, now_ns, rates->total_rps, rates->total_burst, wait_ns);
        count(t, ok);
        return ok;
    }
    uint64_t h = hash_key(client, client_len);
    shard_t *sh = &t->shards[h >> 60];
    pthread_mutex_lock(&sh->mutex);
    entry_t *e = shard_get(sh, h, client, client_len);
    uint64_t next;
    int ok = rm_gcra_eval(e->tat, now_ns, rates->client_rps, rates->client_burst, &next, wait_ns) &&
             rm_gcra_take(&t->total_tat, now_ns, rates->total_rps, rates->total_burst, wait_ns);
    if (ok)
        e->tat = next;
    pthread_mutex_unlock(&sh->mutex);
    count(t, ok);
    return ok;
}

size_t
rm_ratelimit_table_num_clients(rm_ratelimit_table_t *t)
{
    size_t n = 0;
    for (size_t i = 0; i != RM_RATELIMIT_SHARDS; ++i) {
        pthread_mutex_lock(&t->shards[i].mutex);
        n += t->shards[i].used;
        pthread_mutex_unlock(&t->shards[i].mutex);
    }
    return n;
}

size_t
rm_ratelimit_table_capacity(const rm_ratelimit_table_t *t)
{
    return (size_t)per_shard(__atomic_load_n(&t->max_clients, __ATOMIC_RELAXED)) * RM_RATELIMIT_SHARDS;
}

void
rm_ratelimit_table_counts(const rm_ratelimit_table_t *t, uint64_t *allowed, uint64_t *limited)
{
    *allowed = __atomic_load_n(&t->allowed, __ATOMIC_RELAXED);
    *limited = __atomic_load_n(&t->limited, __ATOMIC_RELAXED);
}

static void append(char **buf, size_t *len, size_t *cap, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static void
append(char **buf, size_t *len, size_t *cap, const char *fmt, ...)
{
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(*buf + *len, *cap - *len, fmt, ap);
        va_end(ap);
        if (n >= 0 && (size_t)n < *cap - *len) {
            *len += (size_t)n;
            return;
        }
        *cap = *cap * 2 + (size_t)(n > 0 ? n : 0);
        char *p = realloc(*buf, *cap);
        if (p == NULL)
            rm_fatal("out of memory");
        *buf = p;
    }
}

char *
rm_ratelimit_render_prometheus(void)
{
    size_t len = 0, cap = 1024;
    char *buf = rm_malloc(cap);
    buf[0] = '\0';
    rm_registry_lock(&registry);
    if (registry.head == NULL) {
        rm_registry_unlock(&registry);
        free(buf);
        return NULL;
    }
    append(&buf, &len, &cap,
           "# HELP remora_rate_limit_decisions_total Rate-limit decisions by policy (agent-wide).\n"
           "# TYPE remora_rate_limit_decisions_total counter\n");
    for (rm_registry_entry_t *e = registry.head; e != NULL; e = e->next) {
        rm_ratelimit_table_t *t = RM_REGISTRY_OWNER(rm_ratelimit_table_t, entry, e);
        uint64_t a, l;
        rm_ratelimit_table_counts(t, &a, &l);
        append(&buf, &len, &cap, "remora_rate_limit_decisions_total{policy=\"%s\",decision=\"allowed\"} %" PRIu64 "\n", e->name, a);
        append(&buf, &len, &cap, "remora_rate_limit_decisions_total{policy=\"%s\",decision=\"limited\"} %" PRIu64 "\n", e->name, l);
    }
    append(&buf, &len, &cap,
           "# HELP remora_rate_limit_clients Clients with a bucket in the policy's per-client table.\n"
           "# TYPE remora_rate_limit_clients gauge\n");
    for (rm_registry_entry_t *e = registry.head; e != NULL; e = e->next) {
        rm_ratelimit_table_t *t = RM_REGISTRY_OWNER(rm_ratelimit_table_t, entry, e);
        append(&buf, &len, &cap, "remora_rate_limit_clients{policy=\"%s\"} %zu\n", e->name, rm_ratelimit_table_num_clients(t));
    }
    append(&buf, &len, &cap,
           "# HELP remora_rate_limit_client_capacity Client slots preallocated for the policy (%d bytes each).\n"
           "# TYPE remora_rate_limit_client_capacity gauge\n",
           RM_RATELIMIT_BYTES_PER_CLIENT);
    for (rm_registry_entry_t *e = registry.head; e != NULL; e = e->next) {
        rm_ratelimit_table_t *t = RM_REGISTRY_OWNER(rm_ratelimit_table_t, entry, e);
        append(&buf, &len, &cap, "remora_rate_limit_client_capacity{policy=\"%s\"} %zu\n", e->name, rm_ratelimit_table_capacity(t));
    }
    rm_registry_unlock(&registry);
    return buf;
}
