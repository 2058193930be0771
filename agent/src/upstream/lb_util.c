/*
 * Helpers shared by the balancers: the 64-bit hash of ring hashing and session keys (XXH64, so every
 * worker, restart and host agrees), a per-state PRNG, weighted candidate sampling for the P2C
 * balancers, and the choice of balancer for a cluster.
 */
#include <stdlib.h>
#include <string.h>
#include "remora/strutil.h"
#include "upstream/cluster.h"
#include "upstream/lb.h"

#define P1 0x9E3779B185EBCA87ULL
#define P2 0xC2B2AE3D27D4EB4FULL
#define P3 0x165667B19E3779F9ULL
#define P4 0x85EBCA77C2B2AE63ULL
#define P5 0x27D4EB2F165667C5ULL

static inline uint64_t
rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static inline uint64_t
read64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, sizeof(v));
    return v; /* little-endian hosts only (x86-64, arm64) */
}

static inline uint32_t
read32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static inline uint64_t
round64(uint64_t acc, uint64_t input)
{
    acc += input * P2;
    acc = rotl64(acc, 31);
    return acc * P1;
}

static inline uint64_t
merge64(uint64_t acc, uint64_t val)
{
    acc ^= round64(0, val);
    return acc * P1 + P4;
}

uint64_t
rm_lb_hash64(const void *data, size_t len, uint64_t seed)
{
    const uint8_t *p = data, *end = p + len;
    uint64_t h;
    if (len >= 32) {
        uint64_t v1 = seed + P1 + P2, v2 = seed + P2, v3 = seed, v4 = seed - P1;
        do {
            v1 = round64(v1, read64(p));
            v2 = round64(v2, read64(p + 8));
            v3 = round64(v3, read64(p + 16));
            v4 = round64(v4, read64(p + 24));
            p += 32;
        } while (p + 32 <= end);
        h = rotl64(v1, 1) + rotl64(v2, 7) + rotl64(v3, 12) + rotl64(v4, 18);
        h = merge64(h, v1);
        h = merge64(h, v2);
        h = merge64(h, v3);
        h = merge64(h, v4);
    } else {
        h = seed + P5;
    }
    h += (uint64_t)len;
    for (; p + 8 <= end; p += 8) {
        h ^= round64(0, read64(p));
        h = rotl64(h, 27) * P1 + P4;
    }
    if (p + 4 <= end) {
        h ^= (uint64_t)read32(p) * P1;
        h = rotl64(h, 23) * P2 + P3;
        p += 4;
    }
    for (; p < end; ++p) {
        h ^= (*p) * P5;
        h = rotl64(h, 11) * P1;
    }
    h ^= h >> 33;
    h *= P2;
    h ^= h >> 29;
    h *= P3;
    h ^= h >> 32;
    return h;
}

uint64_t
rm_lb_random(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

void
rm_lb_random_seed(uint64_t *state, const void *salt)
{
    uint64_t mix[2] = {rm_now_us(), (uint64_t)(uintptr_t)salt};
    *state = rm_lb_hash64(mix, sizeof(mix), 0) | 1;
}

void
rm_lb_sampler_update(rm_lb_sampler_t *s, rm_endpoint_t *const *endpoints, size_t n)
{
    free(s->cumulative);
    s->cumulative = NULL;
    s->endpoints = endpoints;
    s->n = n;
    s->total = 0;
    int uniform = 1;
    for (size_t i = 0; i != n; ++i)
        if (endpoints[i]->weight != endpoints[0]->weight)
            uniform = 0;
    if (uniform)
        return;
    s->cumulative = rm_malloc(n * sizeof(*s->cumulative));
    for (size_t i = 0; i != n; ++i) {
        s->total += endpoints[i]->weight != 0 ? endpoints[i]->weight : 1;
        s->cumulative[i] = s->total;
    }
}

void
rm_lb_sampler_dispose(rm_lb_sampler_t *s)
{
    free(s->cumulative);
    memset(s, 0, sizeof(*s));
}

static size_t
sample_one(rm_lb_sampler_t *s, uint64_t *rng)
{
    if (s->cumulative == NULL)
        return (size_t)(rm_lb_random(rng) % s->n);
    uint64_t r = rm_lb_random(rng) % s->total;
    size_t lo = 0, hi = s->n - 1;
    while (lo < hi) { /* the first prefix sum above r */
        size_t mid = lo + (hi - lo) / 2;
        if (s->cumulative[mid] > r)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

void
rm_lb_sampler_pick2(rm_lb_sampler_t *s, uint64_t *rng, size_t *i, size_t *j)
{
    *i = sample_one(s, rng);
    *j = *i;
    if (s->n < 2)
        return;
    /* a few weighted draws for a distinct second candidate, then any other one (bounded) */
    for (int k = 0; k != 4 && *j == *i; ++k)
        *j = sample_one(s, rng);
    if (*j == *i)
        *j = (*i + 1 + (size_t)(rm_lb_random(rng) % (s->n - 1))) % s->n;
}

const rm_lb_t *
rm_lb_of(const rm_config_cluster_t *config)
{
    switch (config->lb) {
    case RM_LB_ROUND_ROBIN:
        return &rm_lb_round_robin;
    case RM_LB_LEAST_REQUEST:
        return &rm_lb_least_request;
    case RM_LB_PEAK_EWMA:
        return &rm_lb_peak_ewma;
    case RM_LB_RING_HASH:
        return &rm_lb_ring_hash;
    case RM_LB_DEFAULT:
        break;
    }
    return config->protocol == RM_UPSTREAM_HTTP1 ? &rm_lb_round_robin : &rm_lb_peak_ewma;
}
