/*
 * Golden metrics over a sliding window (stat.h).
 *
 * A summary is stored as a list of (key id, requests, failures, sum_us, buckets...) rows; the keys
 * (direction, route, backend) are interned once per agent, so a summary costs its numbers only.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "remora/strutil.h"
#include "stat.h"

#define MAX_BOUNDS 256
/* values per series in a sample: requests, failures, sum_us, then the buckets */
#define V_REQUESTS 0
#define V_FAILURES 1
#define V_SUM 2
#define V_BUCKETS 3

typedef struct st_skey_t {
    char *direction, *route, *backend;
    uint64_t hash;
} skey_t;

typedef struct st_sample_t {
    uint64_t recv_ms, mono_ms, uptime_ms;
    size_t n;
    uint32_t *keys;
    uint64_t *values; /* n * (V_BUCKETS + num_bounds + 1) */
} sample_t;

struct st_rm_stat_history_t {
    uint64_t *bounds_us;
    size_t num_bounds;
    skey_t *keys;
    uint32_t num_keys, cap_keys;
    /* open addressing over keys: slot -> key id + 1 (0: empty); capacity a power of two */
    uint32_t *index;
    uint32_t index_cap;
    /* ring: samples[(first + i) % RM_STAT_MAX_SAMPLES] for i < count, oldest first */
    sample_t samples[RM_STAT_MAX_SAMPLES];
    size_t first, count;
};

static uint64_t
hash_str(uint64_t h, const char *s)
{
    static const unsigned char separator = 0xff; /* ("a", "bc") and ("ab", "c") differ */
    return rm_fnv1a(rm_fnv1a(h, s, strlen(s)), &separator, 1);
}

static uint64_t
key_hash(const char *direction, const char *route, const char *backend)
{
    return hash_str(hash_str(hash_str(RM_FNV1A_INIT, direction), route), backend);
}

static size_t
stride(const rm_stat_history_t *h)
{
    return V_BUCKETS + h->num_bounds + 1;
}

static sample_t *
sample_at(rm_stat_history_t *h, size_t i)
{
    return &h->samples[(h->first + i) % RM_STAT_MAX_SAMPLES];
}

static const sample_t *
csample_at(const rm_stat_history_t *h, size_t i)
{
    return &h->samples[(h->first + i) % RM_STAT_MAX_SAMPLES];
}

static void
sample_clear(sample_t *s)
{
    free(s->keys);
    free(s->values);
    memset(s, 0, sizeof(*s));
}

/* Forgets every summary and key (a restart of the agent, new bounds, too many keys). */
static void
history_reset(rm_stat_history_t *h)
{
    for (size_t i = 0; i != h->count; ++i)
        sample_clear(sample_at(h, i));
    h->first = h->count = 0;
    for (uint32_t i = 0; i != h->num_keys; ++i) {
        free(h->keys[i].direction);
        free(h->keys[i].route);
        free(h->keys[i].backend);
    }
    h->num_keys = 0;
    if (h->index != NULL)
        memset(h->index, 0, h->index_cap * sizeof(*h->index));
}

rm_stat_history_t *
rm_stat_history_create(void)
{
    return rm_calloc(1, sizeof(rm_stat_history_t));
}

void
rm_stat_history_destroy(rm_stat_history_t *h)
{
    if (h == NULL)
        return;
    history_reset(h);
    free(h->keys);
    free(h->index);
    free(h->bounds_us);
    free(h);
}

uint64_t
rm_stat_history_newest_ms(const rm_stat_history_t *h)
{
    return h->count != 0 ? csample_at(h, h->count - 1)->recv_ms : 0;
}

static void
index_insert(rm_stat_history_t *h, uint32_t id)
{
    uint32_t mask = h->index_cap - 1, pos = (uint32_t)h->keys[id].hash & mask;
    while (h->index[pos] != 0)
        pos = (pos + 1) & mask;
    h->index[pos] = id + 1;
}

/* The id of the key, interned if new; UINT32_MAX when the agent has too many keys. */
static uint32_t
intern(rm_stat_history_t *h, const char *direction, const char *route, const char *backend)
{
    uint64_t hash = key_hash(direction, route, backend);
    if (h->index_cap != 0) {
        uint32_t mask = h->index_cap - 1;
        for (uint32_t pos = (uint32_t)hash & mask; h->index[pos] != 0; pos = (pos + 1) & mask) {
            const skey_t *k = &h->keys[h->index[pos] - 1];
            if (k->hash == hash && strcmp(k->direction, direction) == 0 && strcmp(k->route, route) == 0 &&
                strcmp(k->backend, backend) == 0)
                return h->index[pos] - 1;
        }
    }
    if (h->num_keys >= RM_STAT_MAX_KEYS)
        return UINT32_MAX;
    if (h->num_keys == h->cap_keys) {
        h->cap_keys = h->cap_keys == 0 ? 32 : h->cap_keys * 2;
        h->keys = rm_realloc(h->keys, h->cap_keys * sizeof(*h->keys));
    }
    uint32_t id = h->num_keys++;
    h->keys[id] = (skey_t){rm_strdup(direction), rm_strdup(route), rm_strdup(backend), hash};
    if (h->num_keys * 2 > h->index_cap) {
        free(h->index);
        h->index_cap = h->index_cap == 0 ? 64 : h->index_cap * 2;
        h->index = rm_calloc(h->index_cap, sizeof(*h->index));
        for (uint32_t i = 0; i != h->num_keys; ++i)
            index_insert(h, i);
    } else {
        index_insert(h, id);
    }
    return id;
}

/* Looks up the values of key `id` in sample `s` (NULL: not there). Samples list keys in the agent's order, usually the same. */
static const uint64_t *
find_values(const rm_stat_history_t *h, const sample_t *s, uint32_t id, size_t hint)
{
    size_t st = stride(h);
    if (hint < s->n && s->keys[hint] == id)
        return s->values + hint * st;
    for (size_t i = 0; i != s->n; ++i)
        if (s->keys[i] == id)
            return s->values + i * st;
    return NULL;
}

int
rm_stat_history_add(rm_stat_history_t *h, const Remora__V1__Stats *msg, uint64_t now_ms, char *err, size_t errlen)
{
    if (msg->n_bounds_us == 0 || msg->n_bounds_us > MAX_BOUNDS) {
        snprintf(err, errlen, "Stats.bounds_us has %zu entries (1 to %d expected)", msg->n_bounds_us, MAX_BOUNDS);
        return -1;
    }
    for (size_t i = 1; i != msg->n_bounds_us; ++i) {
        if (msg->bounds_us[i] <= msg->bounds_us[i - 1]) {
            snprintf(err, errlen, "Stats.bounds_us is not ascending");
            return -1;
        }
    }
    if (msg->n_series > RM_STAT_MAX_SERIES) {
        snprintf(err, errlen, "Stats has %zu series (at most %d)", msg->n_series, RM_STAT_MAX_SERIES);
        return -1;
    }
    for (size_t i = 0; i != msg->n_series; ++i) {
        if (msg->series[i]->n_buckets != msg->n_bounds_us + 1) {
            snprintf(err, errlen, "Stats.series[%zu] has %zu buckets (%zu bounds + Inf expected)", i, msg->series[i]->n_buckets,
                     msg->n_bounds_us);
            return -1;
        }
    }
    if (h->num_bounds != msg->n_bounds_us || memcmp(h->bounds_us, msg->bounds_us, msg->n_bounds_us * sizeof(uint64_t)) != 0) {
        history_reset(h);
        free(h->bounds_us);
        h->num_bounds = msg->n_bounds_us;
        h->bounds_us = rm_malloc(h->num_bounds * sizeof(uint64_t));
        memcpy(h->bounds_us, msg->bounds_us, h->num_bounds * sizeof(uint64_t));
    }
    const sample_t *newest = h->count != 0 ? sample_at(h, h->count - 1) : NULL;
    if (newest != NULL && (msg->uptime_ms < newest->uptime_ms || msg->monotonic_ms < newest->mono_ms)) {
        history_reset(h); /* a new agent process under the same node id */
        newest = NULL;
    }
    size_t st = stride(h);
    sample_t s = {.recv_ms = now_ms, .mono_ms = msg->monotonic_ms, .uptime_ms = msg->uptime_ms, .n = msg->n_series};
    s.keys = rm_malloc((s.n + 1) * sizeof(*s.keys));
    s.values = rm_malloc((s.n + 1) * st * sizeof(*s.values));
    for (int attempt = 0;; ++attempt) {
        int restart = 0;
        for (size_t i = 0; i != s.n && !restart; ++i) {
            const Remora__V1__StatSeries *in = msg->series[i];
            uint32_t id = intern(h, in->direction, in->route, in->backend);
            if (id == UINT32_MAX) {
                restart = 1;
                break;
            }
            s.keys[i] = id;
            uint64_t *v = s.values + i * st;
            v[V_REQUESTS] = in->requests;
            v[V_FAILURES] = in->failures;
            v[V_SUM] = in->sum_us;
            memcpy(v + V_BUCKETS, in->buckets, in->n_buckets * sizeof(uint64_t));
            /* a counter that went down: the agent restarted (and its uptime did not say so) */
            const uint64_t *old = newest != NULL ? find_values(h, newest, id, i) : NULL;
            if (old != NULL && (v[V_REQUESTS] < old[V_REQUESTS] || v[V_FAILURES] < old[V_FAILURES]))
                restart = 1;
        }
        if (!restart)
            break;
        if (attempt != 0) {
            sample_clear(&s);
            snprintf(err, errlen, "Stats has more distinct series than the control plane keeps per agent (%d)", RM_STAT_MAX_KEYS);
            return -1;
        }
        history_reset(h);
        newest = NULL;
    }
    /* keep summaries RM_STAT_SPACING_MS apart, except the newest, which is always the latest received */
    if (h->count >= 2 && sample_at(h, h->count - 2)->recv_ms + RM_STAT_SPACING_MS > sample_at(h, h->count - 1)->recv_ms) {
        sample_clear(sample_at(h, h->count - 1));
        *sample_at(h, h->count - 1) = s;
        return 0;
    }
    if (h->count == RM_STAT_MAX_SAMPLES) {
        sample_clear(sample_at(h, 0));
        h->first = (h->first + 1) % RM_STAT_MAX_SAMPLES;
        --h->count;
    }
    *sample_at(h, h->count++) = s;
    return 0;
}

int
rm_stat_by_parse(const char *s, rm_stat_by_t *by)
{
    if (s[0] == '\0' || strcmp(s, "service") == 0)
        *by = RM_STAT_BY_SERVICE;
    else if (strcmp(s, "route") == 0)
        *by = RM_STAT_BY_ROUTE;
    else if (strcmp(s, "backend") == 0)
        *by = RM_STAT_BY_BACKEND;
    else
        return -1;
    return 0;
}

double
rm_stat_quantile_ms(double q, const uint64_t *bounds_us, size_t num_bounds, const uint64_t *buckets)
{
    uint64_t total = 0;
    for (size_t i = 0; i <= num_bounds; ++i)
        total += buckets[i];
    if (total == 0 || num_bounds == 0)
        return 0;
    double rank = q * (double)total, cum = 0;
    for (size_t i = 0; i <= num_bounds; ++i) {
        double next = cum + (double)buckets[i];
        if (next >= rank && buckets[i] != 0) {
            if (i == num_bounds)
                return (double)bounds_us[num_bounds - 1] / 1000;
            double lo = i == 0 ? 0 : (double)bounds_us[i - 1], hi = (double)bounds_us[i];
            return (lo + (hi - lo) * (rank - cum) / (double)buckets[i]) / 1000;
        }
        cum = next;
    }
    return (double)bounds_us[num_bounds - 1] / 1000;
}

/* -- queries ------------------------------------------------------------------------------------------------------------------ */

typedef struct st_acc_t {
    rm_stat_row_t row;
    uint64_t hash;
    /* the bounds of the first agent that contributed; agents with other bounds add no latency */
    const uint64_t *bounds_us;
    size_t num_bounds;
    uint64_t *buckets;
    size_t last_agent;
} acc_t;

struct st_rm_stat_query_t {
    rm_stat_by_t by;
    uint64_t window_ms, now_ms;
    char *ns;
    acc_t *accs;
    size_t num_accs, cap_accs;
    uint32_t *index;
    size_t index_cap;
    size_t agent_seq;
    rm_stat_row_t *rows;
    int done;
};

rm_stat_query_t *
rm_stat_query_create(rm_stat_by_t by, uint64_t window_ms, const char *ns, uint64_t now_ms)
{
    rm_stat_query_t *q = rm_calloc(1, sizeof(*q));
    q->by = by;
    q->window_ms = window_ms;
    q->now_ms = now_ms;
    q->ns = ns != NULL && ns[0] != '\0' ? rm_strdup(ns) : NULL;
    return q;
}

void
rm_stat_query_destroy(rm_stat_query_t *q)
{
    for (size_t i = 0; i != q->num_accs; ++i) {
        free(q->accs[i].row.name);
        free(q->accs[i].row.node_id);
        free(q->accs[i].buckets);
    }
    free(q->accs);
    free(q->index);
    free(q->rows);
    free(q->ns);
    free(q);
}

/* "web.default" is in namespace "default"; a route "web.default/web-api/1" is in its Service's. */
static int
in_namespace(const char *name, const char *ns)
{
    const char *slash = strchr(name, '/');
    size_t len = slash != NULL ? (size_t)(slash - name) : strlen(name), nslen = strlen(ns);
    return len > nslen && name[len - nslen - 1] == '.' && memcmp(name + len - nslen, ns, nslen) == 0;
}

static void
acc_index_insert(rm_stat_query_t *q, uint32_t i)
{
    size_t mask = q->index_cap - 1, pos = q->accs[i].hash & mask;
    while (q->index[pos] != 0)
        pos = (pos + 1) & mask;
    q->index[pos] = i + 1;
}

static acc_t *
find_acc(rm_stat_query_t *q, const char *name, const char *node_id)
{
    uint64_t hash = hash_str(hash_str(0xcbf29ce484222325ull, name), node_id);
    if (q->index_cap != 0) {
        size_t mask = q->index_cap - 1;
        for (size_t pos = hash & mask; q->index[pos] != 0; pos = (pos + 1) & mask) {
            acc_t *a = &q->accs[q->index[pos] - 1];
            if (a->hash == hash && strcmp(a->row.name, name) == 0 && strcmp(a->row.node_id, node_id) == 0)
                return a;
        }
    }
    if (q->num_accs == q->cap_accs) {
        q->cap_accs = q->cap_accs == 0 ? 16 : q->cap_accs * 2;
        q->accs = rm_realloc(q->accs, q->cap_accs * sizeof(*q->accs));
    }
    uint32_t i = (uint32_t)q->num_accs++;
    acc_t *a = &q->accs[i];
    memset(a, 0, sizeof(*a));
    a->row.name = rm_strdup(name);
    a->row.node_id = rm_strdup(node_id);
    a->hash = hash;
    a->last_agent = SIZE_MAX;
    if (q->num_accs * 2 > q->index_cap) {
        free(q->index);
        q->index_cap = q->index_cap == 0 ? 64 : q->index_cap * 2;
        q->index = rm_calloc(q->index_cap, sizeof(*q->index));
        for (uint32_t j = 0; j != q->num_accs; ++j)
            acc_index_insert(q, j);
    } else {
        acc_index_insert(q, i);
    }
    return a;
}

void
rm_stat_query_add(rm_stat_query_t *q, const char *node_id, const rm_stat_history_t *h)
{
    if (h == NULL || h->count == 0)
        return;
    const sample_t *newest = csample_at(h, h->count - 1), *base = NULL;
    uint64_t start = q->now_ms > q->window_ms ? q->now_ms - q->window_ms : 0, dt_ms;
    if (newest->recv_ms <= start)
        return; /* nothing heard from this agent within the window */
    for (size_t i = h->count - 1; i-- != 0;) {
        if (csample_at(h, i)->recv_ms <= start) {
            base = csample_at(h, i);
            break;
        }
    }
    uint64_t agent_start = newest->recv_ms > newest->uptime_ms ? newest->recv_ms - newest->uptime_ms : 0;
    if (base != NULL) {
        dt_ms = newest->mono_ms - base->mono_ms;
    } else if (agent_start >= start) {
        dt_ms = newest->uptime_ms; /* the agent started inside the window: its counters were zero then */
    } else {
        base = csample_at(h, 0);
        if (base == newest)
            return; /* one summary of an agent older than the window: no difference to take yet */
        dt_ms = newest->mono_ms - base->mono_ms;
    }
    if (dt_ms == 0)
        return;
    size_t agent = q->agent_seq++, st = stride(h), nb = h->num_bounds + 1;
    for (size_t i = 0; i != newest->n; ++i) {
        const uint64_t *nv = newest->values + i * st, *bv = base != NULL ? find_values(h, base, newest->keys[i], i) : NULL;
        if (bv != NULL && nv[V_REQUESTS] < bv[V_REQUESTS])
            bv = NULL; /* cannot happen (a restart starts the history over); count from zero */
        uint64_t dreq = nv[V_REQUESTS] - (bv != NULL ? bv[V_REQUESTS] : 0);
        if (dreq == 0)
            continue;
        uint64_t dfail = nv[V_FAILURES] - (bv != NULL && bv[V_FAILURES] <= nv[V_FAILURES] ? bv[V_FAILURES] : 0);
        const skey_t *k = &h->keys[newest->keys[i]];
        const char *name = q->by == RM_STAT_BY_ROUTE ? k->route : k->backend;
        if (q->ns != NULL && !in_namespace(name, q->ns))
            continue;
        acc_t *a = find_acc(q, name, q->by == RM_STAT_BY_BACKEND ? node_id : "");
        if (a->last_agent != agent) {
            a->last_agent = agent;
            ++a->row.agents;
        }
        a->row.requests += dreq;
        a->row.failures += dfail;
        a->row.rps += (double)dreq * 1000 / (double)dt_ms;
        if (a->buckets == NULL) {
            a->bounds_us = h->bounds_us;
            a->num_bounds = h->num_bounds;
            a->buckets = rm_calloc(nb, sizeof(*a->buckets));
        }
        if (a->num_bounds == h->num_bounds && memcmp(a->bounds_us, h->bounds_us, h->num_bounds * sizeof(uint64_t)) == 0) {
            for (size_t b = 0; b != nb; ++b) {
                uint64_t bb = bv != NULL ? bv[V_BUCKETS + b] : 0;
                a->buckets[b] += nv[V_BUCKETS + b] >= bb ? nv[V_BUCKETS + b] - bb : 0;
            }
        }
    }
}

static int
cmp_rows(const void *x, const void *y)
{
    const rm_stat_row_t *a = x, *b = y;
    int c = strcmp(a->name, b->name);
    return c != 0 ? c : strcmp(a->node_id, b->node_id);
}

size_t
rm_stat_query_rows(rm_stat_query_t *q, const rm_stat_row_t **rows)
{
    if (!q->done) {
        q->done = 1;
        q->rows = rm_calloc(q->num_accs + 1, sizeof(*q->rows));
        for (size_t i = 0; i != q->num_accs; ++i) {
            acc_t *a = &q->accs[i];
            a->row.success_rate = a->row.requests != 0 ? 1 - (double)a->row.failures / (double)a->row.requests : 0;
            /* the bounds point into a history: the caller keeps the histories unchanged while the query lives */
            a->row.p50_ms = rm_stat_quantile_ms(0.50, a->bounds_us, a->num_bounds, a->buckets);
            a->row.p95_ms = rm_stat_quantile_ms(0.95, a->bounds_us, a->num_bounds, a->buckets);
            a->row.p99_ms = rm_stat_quantile_ms(0.99, a->bounds_us, a->num_bounds, a->buckets);
            q->rows[i] = a->row;
        }
        qsort(q->rows, q->num_accs, sizeof(*q->rows), cmp_rows);
    }
    *rows = q->rows;
    return q->num_accs;
}
