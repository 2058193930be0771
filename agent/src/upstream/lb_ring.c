/*
 * Ring hash (consistent hashing, Karger et al.; Envoy's "ketama"-style ring): every endpoint owns
 * weight x S points on a 64-bit ring, point k of an endpoint at XXH64(address, seed k); a request's
 * key maps to the first point at or after its hash (binary search: O(log n)). The key is the route's
 * sessionPersistence value, else the client's source address; a request with neither gets a random
 * point (in proportion to the weights).
 *
 * The ring is rebuilt only when the endpoint set or a weight changes (`update`). Points per unit of
 * weight S = ceil(2 x ring_min_size / P) where P is the total weight rounded up to a power of two, so
 * the ring has between ring_min_size and about 2 x ring_min_size points, and S stays the same while the
 * total weight stays within (P/2, P]: an endpoint that leaves then takes only its own points away and
 * only its keys move (removing one of four endpoints moves a quarter of the keys). When the total
 * crosses a power of two, S doubles or halves and more keys move. The ring depends only on the
 * endpoint set, so every worker (and every agent) maps a key to the same endpoint.
 */
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include "remora/strutil.h"
#include "proxy/attempt.h"
#include "proxy/stream.h"
#include "upstream/cluster.h"
#include "upstream/lb.h"

#define RING_MAX_SIZE 8388608u
#define RING_DEFAULT_MIN_SIZE 1024u

typedef struct st_ring_point_t {
    uint64_t hash;
    uint32_t index;
} ring_point_t;

typedef struct st_ring_t {
    ring_point_t *points;
    size_t num_points;
    rm_endpoint_t *const *endpoints;
    size_t n;
    uint32_t min_size;
    uint64_t rng;
} ring_t;

static void *
ring_create(const rm_config_cluster_t *config)
{
    ring_t *r = rm_calloc(1, sizeof(*r));
    r->min_size = config != NULL && config->ring_min_size != 0 ? config->ring_min_size : RING_DEFAULT_MIN_SIZE;
    if (r->min_size > RING_MAX_SIZE)
        r->min_size = RING_MAX_SIZE;
    rm_lb_random_seed(&r->rng, r);
    return r;
}

static void
ring_destroy(void *state)
{
    ring_t *r = state;
    free(r->points);
    free(r);
}

static int
cmp_point(const void *x, const void *y)
{
    const ring_point_t *a = x, *b = y;
    if (a->hash != b->hash)
        return a->hash < b->hash ? -1 : 1;
    return a->index < b->index ? -1 : a->index > b->index; /* equal hashes: a stable order */
}

static void
ring_update(void *state, rm_endpoint_t *const *endpoints, size_t n)
{
    ring_t *r = state;
    free(r->points);
    r->points = NULL;
    r->num_points = 0;
    r->endpoints = endpoints;
    r->n = n;
    if (n == 0)
        return;
    uint64_t total = 0;
    for (size_t i = 0; i != n; ++i)
        total += endpoints[i]->weight != 0 ? endpoints[i]->weight : 1;
    uint64_t pow2 = 1;
    while (pow2 < total)
        pow2 <<= 1;
    uint64_t per_weight = (2 * (uint64_t)r->min_size + pow2 - 1) / pow2;
    if (per_weight == 0)
        per_weight = 1;
    /* huge weights: scale down so that the ring stays bounded (each endpoint keeps a point) */
    double scale = total * per_weight > RING_MAX_SIZE ? (double)RING_MAX_SIZE / (double)(total * per_weight) : 1.0;
    size_t cap = 0;
    size_t *counts = rm_malloc(n * sizeof(*counts));
    for (size_t i = 0; i != n; ++i) {
        uint64_t w = endpoints[i]->weight != 0 ? endpoints[i]->weight : 1;
        size_t c = (size_t)((double)(w * per_weight) * scale);
        counts[i] = c != 0 ? c : 1;
        cap += counts[i];
    }
    r->points = rm_malloc(cap * sizeof(*r->points));
    for (size_t i = 0; i != n; ++i) {
        const char *name = endpoints[i]->name;
        size_t len = strlen(name);
        for (size_t k = 0; k != counts[i]; ++k) {
            r->points[r->num_points].hash = rm_lb_hash64(name, len, k);
            r->points[r->num_points].index = (uint32_t)i;
            ++r->num_points;
        }
    }
    free(counts);
    qsort(r->points, r->num_points, sizeof(*r->points), cmp_point);
}

/* The attempt's key: the session key, else the client's address without the port (every connection of a client hashes
 * alike), hashed here rather than by the router for every request whatever the balancer; 0 if it has none. */
static int
attempt_key(const rm_attempt_t *a, uint64_t *key)
{
    if (a == NULL || a->hash_kind == RM_ATTEMPT_HASH_NONE)
        return 0;
    if (a->hash_kind == RM_ATTEMPT_HASH_SESSION) {
        *key = a->hash_key;
        return 1;
    }
    const struct sockaddr_storage *ss = &a->stream->peer;
    if (ss->ss_family == AF_INET)
        *key = rm_lb_hash64(&((const struct sockaddr_in *)ss)->sin_addr, sizeof(struct in_addr), 0);
    else if (ss->ss_family == AF_INET6)
        *key = rm_lb_hash64(&((const struct sockaddr_in6 *)ss)->sin6_addr, sizeof(struct in6_addr), 0);
    else
        return 0;
    return 1;
}

static rm_endpoint_t *
ring_pick(void *state, rm_endpoint_t *const *endpoints, size_t n, const rm_attempt_t *a)
{
    ring_t *r = state;
    if (r->endpoints != endpoints || r->n != n)
        ring_update(r, endpoints, n);
    uint64_t h;
    if (!attempt_key(a, &h))
        h = rm_lb_random(&r->rng);
    size_t lo = 0, hi = r->num_points; /* the first point at or after h, wrapping around */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->points[mid].hash < h)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == r->num_points)
        lo = 0;
    return endpoints[r->points[lo].index];
}

static void
ring_on_result(void *state, rm_endpoint_t *ep, int success, uint64_t latency_us)
{
}

const rm_lb_t rm_lb_ring_hash = {"RingHash", ring_create, ring_destroy, ring_update, ring_pick, ring_on_result};
