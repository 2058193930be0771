/*
 * Labelled families with bounded cardinality (series.h).
 *
 * Two views of every family:
 *   agent-wide  the interned tuples (key bytes), indexed 0..n-1 in order of first sight, and a hash
 *               index over them; under the family's mutex, which workers take only on a local miss.
 *   per worker  a private open-addressing table key -> rm_series_t (no lock), and a directory
 *               index -> rm_series_t * in chunks, through which the scraper finds the worker's
 *               values of series `i` (pointers published with release stores, read with acquire).
 *
 * A key is the label values, each followed by a NUL byte; the hash is FNV-1a over those bytes.
 */
#define _GNU_SOURCE /* qsort_r */
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "obs/series.h"

#define DEFAULT_LIMIT 2000
#define CHUNK_SHIFT 8
#define CHUNK_SIZE (1u << CHUNK_SHIFT)
#define NUM_CHUNKS ((RM_SERIES_LIMIT_MAX + CHUNK_SIZE - 1) / CHUNK_SIZE)
#define CACHE_SIZE 64

typedef struct st_key_t {
    uint64_t hash;
    uint32_t len;
    char bytes[];
} key_t_;

struct st_rm_series_family_t {
    rm_series_family_spec_t spec;
    unsigned id;
    pthread_mutex_t mutex;
    /* interned keys by index (guarded by mutex) */
    key_t_ **keys;
    uint32_t num_keys, keys_capacity;
    /* hash index over keys: slot -> index + 1 (0: empty); capacity a power of two (guarded by mutex) */
    uint32_t *index;
    uint32_t index_capacity;
    /* observations dropped at the limit (any worker, atomic) */
    uint64_t dropped;
};

/* One worker's view of one family. */
typedef struct st_local_t {
    struct {
        uint64_t hash;
        rm_series_t *series;
        const key_t_ *key;
    } * slots;
    uint32_t capacity, size;
    /* index -> series, chunked so that growing never moves what the scraper reads */
    rm_series_t **chunks[NUM_CHUNKS];
    /* direct-mapped cache: ident -> series (rm_series_cached) */
    struct {
        uint64_t ident[RM_SERIES_IDENT_WORDS];
        rm_series_t *series;
    } cache[CACHE_SIZE];
} local_t;

static rm_series_family_t *families[RM_STATS_MAX_SERIES_FAMILIES];
static unsigned num_families;
static uint32_t limit = DEFAULT_LIMIT;

rm_series_family_t *
rm_series_family_register(const rm_series_family_spec_t *spec)
{
    if (num_families == RM_STATS_MAX_SERIES_FAMILIES)
        rm_fatal("too many labelled metric families");
    if (spec->num_labels == 0 || spec->num_labels > RM_SERIES_MAX_LABELS || spec->total_labels > spec->num_labels)
        rm_fatal("metric family %s: bad label count", spec->name);
    rm_series_family_t *f = rm_calloc(1, sizeof(*f));
    f->spec = *spec;
    f->id = num_families;
    pthread_mutex_init(&f->mutex, NULL);
    families[num_families++] = f;
    return f;
}

void
rm_series_set_limit(uint32_t max_series_per_family)
{
    if (max_series_per_family == 0)
        max_series_per_family = DEFAULT_LIMIT;
    if (max_series_per_family > RM_SERIES_LIMIT_MAX)
        max_series_per_family = RM_SERIES_LIMIT_MAX;
    __atomic_store_n(&limit, max_series_per_family, __ATOMIC_RELAXED);
}

/* Writes the key of `values` into buf (room for RM_SERIES_MAX_LABELS * (RM_SERIES_MAX_VALUE + 1)); returns its length. */
static size_t
build_key(char *buf, const char *const *values, size_t n)
{
    size_t len = 0;
    for (size_t i = 0; i != n; ++i) {
        const char *v = values[i] != NULL ? values[i] : "";
        size_t vl = strnlen(v, RM_SERIES_MAX_VALUE);
        memcpy(buf + len, v, vl);
        len += vl;
        buf[len++] = '\0';
    }
    return len;
}

/* -- agent-wide tuples (family mutex held) ---------------------------------------------------------------------------------- */

static void
index_insert(rm_series_family_t *f, uint32_t idx)
{
    uint32_t mask = f->index_capacity - 1, pos = (uint32_t)f->keys[idx]->hash & mask;
    while (f->index[pos] != 0)
        pos = (pos + 1) & mask;
    f->index[pos] = idx + 1;
}

/* Returns the index of the tuple, adding it if the limit allows; UINT32_MAX when it does not. */
static uint32_t
intern(rm_series_family_t *f, const char *key, size_t len, uint64_t hash)
{
    if (f->index_capacity != 0) {
        uint32_t mask = f->index_capacity - 1;
        for (uint32_t pos = (uint32_t)hash & mask; f->index[pos] != 0; pos = (pos + 1) & mask) {
            key_t_ *k = f->keys[f->index[pos] - 1];
            if (k->hash == hash && k->len == len && memcmp(k->bytes, key, len) == 0)
                return f->index[pos] - 1;
        }
    }
    if (f->num_keys >= __atomic_load_n(&limit, __ATOMIC_RELAXED))
        return UINT32_MAX;
    if (f->num_keys == f->keys_capacity) {
        f->keys_capacity = f->keys_capacity == 0 ? 64 : f->keys_capacity * 2;
        f->keys = rm_realloc(f->keys, f->keys_capacity * sizeof(*f->keys));
    }
    key_t_ *k = rm_malloc(sizeof(*k) + len);
    k->hash = hash;
    k->len = (uint32_t)len;
    memcpy(k->bytes, key, len);
    uint32_t idx = f->num_keys++;
    f->keys[idx] = k;
    if (f->num_keys * 2 > f->index_capacity) {
        free(f->index);
        f->index_capacity = f->index_capacity == 0 ? 128 : f->index_capacity * 2;
        f->index = rm_calloc(f->index_capacity, sizeof(*f->index));
        for (uint32_t i = 0; i != f->num_keys; ++i)
            index_insert(f, i);
    } else {
        index_insert(f, idx);
    }
    return idx;
}

/* -- per worker -------------------------------------------------------------------------------------------------------------- */

static void
local_insert(local_t *l, uint64_t hash, const key_t_ *key, rm_series_t *s)
{
    uint32_t mask = l->capacity - 1, pos = (uint32_t)hash & mask;
    while (l->slots[pos].series != NULL)
        pos = (pos + 1) & mask;
    l->slots[pos].hash = hash;
    l->slots[pos].key = key;
    l->slots[pos].series = s;
}

static void
local_grow(local_t *l)
{
    __typeof__(l->slots) old = l->slots;
    uint32_t old_capacity = l->capacity;
    l->capacity = old_capacity == 0 ? 16 : old_capacity * 2;
    l->slots = rm_calloc(l->capacity, sizeof(*l->slots));
    for (uint32_t i = 0; i != old_capacity; ++i)
        if (old[i].series != NULL)
            local_insert(l, old[i].hash, old[i].key, old[i].series);
    free(old);
}

rm_series_t *
rm_series_get(rm_stats_t *stats, rm_series_family_t *f, const char *const *values)
{
    char key[RM_SERIES_MAX_LABELS * (RM_SERIES_MAX_VALUE + 1)];
    size_t len = build_key(key, values, f->spec.num_labels);
    uint64_t hash = rm_fnv1a(RM_FNV1A_INIT, key, len);

    local_t *l = stats->_series[f->id];
    if (l != NULL && l->capacity != 0) {
        uint32_t mask = l->capacity - 1;
        for (uint32_t pos = (uint32_t)hash & mask; l->slots[pos].series != NULL; pos = (pos + 1) & mask) {
            const key_t_ *k = l->slots[pos].key;
            if (l->slots[pos].hash == hash && k->len == len && memcmp(k->bytes, key, len) == 0)
                return l->slots[pos].series;
        }
    }

    /* first sight on this worker: ask the agent-wide table */
    pthread_mutex_lock(&f->mutex);
    uint32_t idx = intern(f, key, len, hash);
    const key_t_ *k = idx != UINT32_MAX ? f->keys[idx] : NULL;
    pthread_mutex_unlock(&f->mutex);
    if (k == NULL) {
        __atomic_fetch_add(&f->dropped, 1, __ATOMIC_RELAXED);
        return NULL;
    }
    if (l == NULL) {
        l = rm_calloc(1, sizeof(*l));
        __atomic_store_n(&stats->_series[f->id], l, __ATOMIC_RELEASE);
    }
    if ((l->size + 1) * 2 > l->capacity)
        local_grow(l);
    rm_series_t *s = rm_calloc(1, sizeof(*s));
    s->_index = idx;
    local_insert(l, hash, k, s);
    ++l->size;
    rm_series_t **chunk = l->chunks[idx >> CHUNK_SHIFT];
    if (chunk == NULL) {
        chunk = rm_calloc(CHUNK_SIZE, sizeof(*chunk));
        __atomic_store_n(&l->chunks[idx >> CHUNK_SHIFT], chunk, __ATOMIC_RELEASE);
    }
    __atomic_store_n(&chunk[idx & (CHUNK_SIZE - 1)], s, __ATOMIC_RELEASE);
    return s;
}

static unsigned
cache_slot(const uint64_t *ident)
{
    uint64_t h = 0;
    for (size_t i = 0; i != RM_SERIES_IDENT_WORDS; ++i)
        h = (h ^ ident[i]) * 0x9e3779b97f4a7c15ull;
    return (unsigned)(h >> 58); /* the top 6 bits: CACHE_SIZE 64 */
}

rm_series_t *
rm_series_cached(rm_stats_t *stats, rm_series_family_t *f, const uint64_t ident[RM_SERIES_IDENT_WORDS])
{
    local_t *l = stats->_series[f->id];
    if (l == NULL)
        return NULL;
    unsigned slot = cache_slot(ident);
    if (memcmp(l->cache[slot].ident, ident, sizeof(l->cache[slot].ident)) != 0)
        return NULL;
    return l->cache[slot].series;
}

rm_series_t *
rm_series_get_cached(rm_stats_t *stats, rm_series_family_t *f, const uint64_t ident[RM_SERIES_IDENT_WORDS],
                     const char *const *values)
{
    rm_series_t *s = rm_series_get(stats, f, values);
    if (s != NULL) {
        local_t *l = stats->_series[f->id];
        unsigned slot = cache_slot(ident);
        memcpy(l->cache[slot].ident, ident, sizeof(l->cache[slot].ident));
        l->cache[slot].series = s;
    }
    return s;
}

void
rm_series_free_worker(rm_stats_t *stats)
{
    for (unsigned i = 0; i != RM_STATS_MAX_SERIES_FAMILIES; ++i) {
        local_t *l = stats->_series[i];
        if (l == NULL)
            continue;
        for (uint32_t s = 0; s != l->capacity; ++s) {
            if (l->slots[s].series != NULL) {
                rm_histogram_dispose(&l->slots[s].series->histogram);
                free(l->slots[s].series);
            }
        }
        free(l->slots);
        for (size_t c = 0; c != NUM_CHUNKS; ++c)
            free(l->chunks[c]);
        free(l);
        stats->_series[i] = NULL;
    }
}

/* -- rendering --------------------------------------------------------------------------------------------------------------- */

static int
cmp_indices(const void *a, const void *b, void *arg)
{
    key_t_ *const *keys = arg;
    const key_t_ *x = keys[*(const uint32_t *)a], *y = keys[*(const uint32_t *)b];
    int c = memcmp(x->bytes, y->bytes, x->len < y->len ? x->len : y->len);
    return c != 0 ? c : (x->len > y->len) - (x->len < y->len);
}

static void
fprint_label_value(FILE *fp, const char *v)
{
    rm_stats_fprint_label_value(fp, v);
}

/* Formats the first `n` labels of a key as `a="x",b="y"` (empty values are left out) into a malloc'ed string. */
static char *
format_labels(const rm_series_family_t *f, const key_t_ *k, size_t n)
{
    char *text = NULL;
    size_t size = 0;
    FILE *fp = open_memstream(&text, &size);
    if (fp == NULL)
        rm_fatal("open_memstream failed");
    const char *v = k->bytes;
    int first = 1;
    for (size_t i = 0; i != n; ++i) {
        if (*v != '\0') {
            fprintf(fp, "%s%s=\"", first ? "" : ",", f->spec.labels[i]);
            fprint_label_value(fp, v);
            fputc('"', fp);
            first = 0;
        }
        v += strlen(v) + 1;
    }
    fclose(fp);
    return text;
}

/* Length of the key prefix holding the first `n` values. */
static size_t
prefix_len(const key_t_ *k, size_t n)
{
    size_t off = 0;
    for (size_t i = 0; i != n; ++i)
        off += strlen(k->bytes + off) + 1;
    return off;
}

/* The counter-family header: OpenMetrics names the family without the _total suffix of its samples. */
static void
counter_header(FILE *fp, const char *name, const char *help, int openmetrics)
{
    size_t len = strlen(name);
    int strip = openmetrics && len > 6 && strcmp(name + len - 6, "_total") == 0;
    fprintf(fp, "# HELP %.*s %s\n# TYPE %.*s counter\n", (int)(strip ? len - 6 : len), name, help, (int)(strip ? len - 6 : len),
            name);
}

/* A family summed over the workers, its series sorted by label values. */
typedef struct st_collected_t {
    uint32_t n;
    key_t_ **keys;            /* by index */
    uint32_t *order;          /* indices sorted by label values */
    rm_histogram_sum_t *sums; /* by index (histogram families) */
    uint64_t *counts;         /* by index */
} collected_t;

static void
collect(rm_series_family_t *f, rm_stats_t *const *workers, size_t num_workers, collected_t *c)
{
    pthread_mutex_lock(&f->mutex);
    uint32_t n = c->n = f->num_keys;
    c->keys = rm_malloc((n != 0 ? n : 1) * sizeof(*c->keys));
    if (n != 0) /* f->keys is NULL until the first tuple */
        memcpy(c->keys, f->keys, n * sizeof(*c->keys));
    pthread_mutex_unlock(&f->mutex);
    /* keys are immutable once interned: they may be read without the lock */
    c->order = rm_malloc((n != 0 ? n : 1) * sizeof(*c->order));
    c->sums = f->spec.kind == RM_SERIES_HISTOGRAM ? rm_calloc(n != 0 ? n : 1, sizeof(*c->sums)) : NULL;
    c->counts = rm_calloc(n != 0 ? n : 1, sizeof(*c->counts));

    for (size_t w = 0; w != num_workers; ++w) {
        if (workers[w] == NULL)
            continue;
        local_t *l = __atomic_load_n(&workers[w]->_series[f->id], __ATOMIC_ACQUIRE);
        if (l == NULL)
            continue;
        for (uint32_t i = 0; i != n; ++i) {
            rm_series_t **chunk = __atomic_load_n(&l->chunks[i >> CHUNK_SHIFT], __ATOMIC_ACQUIRE);
            rm_series_t *s = chunk != NULL ? __atomic_load_n(&chunk[i & (CHUNK_SIZE - 1)], __ATOMIC_ACQUIRE) : NULL;
            if (s == NULL)
                continue;
            if (c->sums != NULL)
                rm_histogram_merge(&c->sums[i], &s->histogram);
            else
                c->counts[i] += __atomic_load_n(&s->counter, __ATOMIC_RELAXED);
        }
    }
    if (c->sums != NULL) {
        for (uint32_t i = 0; i != n; ++i)
            for (unsigned b = 0; b != RM_HISTOGRAM_BUCKETS; ++b)
                c->counts[i] += c->sums[i].buckets[b];
    }

    /* sort by label values, so that the output does not depend on which worker saw a tuple first */
    for (uint32_t i = 0; i != n; ++i)
        c->order[i] = i;
    qsort_r(c->order, n, sizeof(*c->order), cmp_indices, c->keys);
}

static void
collected_dispose(collected_t *c)
{
    free(c->counts);
    free(c->sums);
    free(c->order);
    free(c->keys);
}

static void
render_family(FILE *fp, rm_series_family_t *f, rm_stats_t *const *workers, size_t num_workers, int openmetrics)
{
    collected_t c;
    collect(f, workers, num_workers, &c);
    uint32_t n = c.n;
    key_t_ **keys = c.keys;
    uint32_t *order = c.order;
    rm_histogram_sum_t *sums = c.sums;
    uint64_t *counts = c.counts;

    char **labels = rm_calloc(n != 0 ? n : 1, sizeof(*labels));
    for (uint32_t i = 0; i != n; ++i)
        labels[i] = format_labels(f, keys[order[i]], f->spec.num_labels);

    if (f->spec.total_name != NULL) {
        counter_header(fp, f->spec.total_name, f->spec.total_help, openmetrics);
        for (uint32_t i = 0; i != n;) {
            const key_t_ *k = keys[order[i]];
            size_t plen = prefix_len(k, f->spec.total_labels);
            uint64_t total = 0;
            uint32_t j = i;
            for (; j != n && keys[order[j]]->len >= plen && memcmp(keys[order[j]]->bytes, k->bytes, plen) == 0; ++j)
                total += counts[order[j]];
            char *l = format_labels(f, k, f->spec.total_labels);
            fprintf(fp, "%s%s%s%s %" PRIu64 "\n", f->spec.total_name, l[0] != '\0' ? "{" : "", l, l[0] != '\0' ? "}" : "", total);
            free(l);
            i = j;
        }
    }
    if (f->spec.kind == RM_SERIES_COUNTER || f->spec.count_name != NULL) {
        const char *name = f->spec.kind == RM_SERIES_COUNTER ? f->spec.name : f->spec.count_name;
        counter_header(fp, name, f->spec.kind == RM_SERIES_COUNTER ? f->spec.help : f->spec.count_help, openmetrics);
        for (uint32_t i = 0; i != n; ++i)
            fprintf(fp, "%s%s%s%s %" PRIu64 "\n", name, labels[i][0] != '\0' ? "{" : "", labels[i], labels[i][0] != '\0' ? "}" : "",
                    counts[order[i]]);
    }
    if (f->spec.kind == RM_SERIES_HISTOGRAM) {
        fprintf(fp, "# HELP %s %s\n# TYPE %s histogram\n", f->spec.name, f->spec.help, f->spec.name);
        for (uint32_t i = 0; i != n; ++i)
            rm_histogram_render(fp, f->spec.name, labels[i], &sums[order[i]], openmetrics);
    }

    for (uint32_t i = 0; i != n; ++i)
        free(labels[i]);
    free(labels);
    collected_dispose(&c);
}

void
rm_series_render(FILE *fp, rm_stats_t *const *workers, size_t num_workers, int openmetrics)
{
    if (num_families == 0)
        return;
    for (unsigned i = 0; i != num_families; ++i)
        render_family(fp, families[i], workers, num_workers, openmetrics);
    counter_header(fp, "remora_metrics_series_dropped_total",
                   "Observations not recorded because their label set would have made the family exceed "
                   "limits.max_series_per_family.",
                   openmetrics);
    for (unsigned i = 0; i != num_families; ++i) {
        const rm_series_family_t *f = families[i];
        uint64_t dropped = __atomic_load_n(&f->dropped, __ATOMIC_RELAXED);
        const char *names[3] = {f->spec.total_name, f->spec.count_name, f->spec.name};
        for (size_t j = 0; j != 3; ++j)
            if (names[j] != NULL)
                fprintf(fp, "remora_metrics_series_dropped_total{family=\"%s\"} %" PRIu64 "\n", names[j], dropped);
    }
}

/* -- iteration (series.h: rm_series_foreach) ---------------------------------------------------------------------------------- */

long
rm_series_foreach(const char *family_name, rm_stats_t *const *workers, size_t num_workers, rm_series_visit_t fn, void *ctx)
{
    rm_series_family_t *f = NULL;
    for (unsigned i = 0; i != num_families && f == NULL; ++i)
        if (strcmp(families[i]->spec.name, family_name) == 0)
            f = families[i];
    if (f == NULL)
        return -1;
    pthread_mutex_lock(&f->mutex);
    uint32_t n = f->num_keys;
    key_t_ **keys = rm_malloc((n != 0 ? n : 1) * sizeof(*keys));
    if (n != 0) /* f->keys is NULL until the first tuple */
        memcpy(keys, f->keys, n * sizeof(*keys));
    pthread_mutex_unlock(&f->mutex);
    uint32_t *order = rm_malloc((n != 0 ? n : 1) * sizeof(*order));
    for (uint32_t i = 0; i != n; ++i)
        order[i] = i;
    qsort_r(order, n, sizeof(*order), cmp_indices, keys);

    int histogram = f->spec.kind == RM_SERIES_HISTOGRAM;
    for (uint32_t o = 0; o != n; ++o) {
        uint32_t i = order[o];
        uint64_t counter = 0, sum_us = 0, buckets[RM_HISTOGRAM_BUCKETS] = {0};
        for (size_t w = 0; w != num_workers; ++w) {
            if (workers[w] == NULL)
                continue;
            local_t *l = __atomic_load_n(&workers[w]->_series[f->id], __ATOMIC_ACQUIRE);
            if (l == NULL)
                continue;
            rm_series_t **chunk = __atomic_load_n(&l->chunks[i >> CHUNK_SHIFT], __ATOMIC_ACQUIRE);
            rm_series_t *s = chunk != NULL ? __atomic_load_n(&chunk[i & (CHUNK_SIZE - 1)], __ATOMIC_ACQUIRE) : NULL;
            if (s == NULL)
                continue;
            if (histogram) {
                for (unsigned b = 0; b != RM_HISTOGRAM_BUCKETS; ++b)
                    buckets[b] += __atomic_load_n(&s->histogram.buckets[b], __ATOMIC_RELAXED);
                sum_us += __atomic_load_n(&s->histogram.sum_us, __ATOMIC_RELAXED);
            } else {
                counter += __atomic_load_n(&s->counter, __ATOMIC_RELAXED);
            }
        }
        if (histogram)
            for (unsigned b = 0; b != RM_HISTOGRAM_BUCKETS; ++b)
                counter += buckets[b];
        const char *values[RM_SERIES_MAX_LABELS];
        const char *v = keys[i]->bytes;
        for (size_t j = 0; j != f->spec.num_labels; ++j) {
            values[j] = v;
            v += strlen(v) + 1;
        }
        fn(ctx, values, counter, histogram ? buckets : NULL, sum_us);
    }
    free(order);
    free(keys);
    return (long)n;
}
