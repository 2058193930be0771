/*
 * The load-balancer interface: one algorithm per file (lb_rr.c round robin, lb_p2c.c least request
 * with the power of two choices, lb_ewma.c peak EWMA over P2C, lb_ring.c ring hash). A cluster
 * runtime holds one balancer state; `update` tells it the cluster's endpoint set (after create and
 * whenever the set or a weight changes), `pick` chooses an endpoint for an attempt among them and
 * `on_result` learns, exactly once per pick, the attempt's outcome and latency.
 *
 * What a balancer reads of an endpoint: `weight`, `name` (the address, for ring hashing) and `load`,
 * the endpoint's agent-wide load entry (below). The cluster keeps that entry's active-request count:
 * +1 at pick, -1 at the matching completion, whatever the balancer.
 *
 * Thread: the cluster's worker, except the load registry (any thread).
 */
#ifndef remora__upstream_lb_h
#define remora__upstream_lb_h

#include <stddef.h>
#include <stdint.h>
#include "config/config.h"

typedef struct st_rm_endpoint_t rm_endpoint_t;
typedef struct st_rm_attempt_t rm_attempt_t;

typedef struct st_rm_lb_t {
    const char *name;
    /** per-cluster-runtime state (malloc'ed; aborts on OOM); `config` may be NULL (defaults) */
    void *(*create)(const rm_config_cluster_t *config);
    void (*destroy)(void *state);
    /** the endpoint set (or a weight) changed; `endpoints` stays valid until the next update. NULL: not needed */
    void (*update)(void *state, rm_endpoint_t *const *endpoints, size_t n);
    /** an endpoint for `a` (may be NULL: no hash key) among `endpoints` (n > 0); never NULL */
    rm_endpoint_t *(*pick)(void *state, rm_endpoint_t *const *endpoints, size_t n, const rm_attempt_t *a);
    /** the outcome of an attempt on `ep`, once per pick: success (a response head below 500) and the
     * latency from pick to the head (or to the failure / cancellation) */
    void (*on_result)(void *state, rm_endpoint_t *ep, int success, uint64_t latency_us);
} rm_lb_t;

extern const rm_lb_t rm_lb_round_robin;
extern const rm_lb_t rm_lb_least_request;
extern const rm_lb_t rm_lb_peak_ewma;
extern const rm_lb_t rm_lb_ring_hash;

/** The balancer of `config` (RM_LB_DEFAULT: peak EWMA for h2 and auto clusters, round robin for HTTP/1.1). */
const rm_lb_t *rm_lb_of(const rm_config_cluster_t *config);

/*
 * Agent-wide endpoint load (DESIGN.md "Shared state across workers"): one entry per cluster name +
 * endpoint address, refcounted (every worker's rm_endpoint_t of that address holds a reference), so
 * the counts survive snapshot swaps and endpoint-set changes while the address stays. An entry whose
 * last reference goes lingers RM_LB_LOAD_LINGER_MS before it is freed, so a runtime rebuilt by a
 * reload (the old one retired first) finds it again. Counts are atomics: lock-free on the hot path.
 */
typedef struct st_rm_lb_load_t rm_lb_load_t;

/** Peak EWMA parameters (Linkerd's): decay time constant and the RTT assumed before the first sample. */
#define RM_LB_EWMA_DECAY_US 10000000u
#define RM_LB_EWMA_DEFAULT_RTT_US 30000u
#define RM_LB_LOAD_LINGER_MS 60000u
/** The latency reported to on_result for an attempt that failed before a response head (connect
 * refused, reset): a failure is quick but must not look cheap. Cancelled attempts report their real time. */
#define RM_LB_FAILURE_LATENCY_US 1000000u

/** The entry of (`cluster`, `address`), created if new; takes a reference. Never NULL. Any thread. */
rm_lb_load_t *rm_lb_load_acquire(const char *cluster, const char *address);
/** Drops a reference (NULL is ignored). Any thread. */
void rm_lb_load_release(rm_lb_load_t *l);
/** One more active request on the endpoint (a pick). */
void rm_lb_load_start(rm_lb_load_t *l);
/** The end of one active request (exactly once per rm_lb_load_start). */
void rm_lb_load_finish(rm_lb_load_t *l);
/** Active requests now (all workers). */
uint32_t rm_lb_load_active(const rm_lb_load_t *l);
/** Feeds a latency sample at `now_us` into the peak EWMA: a sample above the (decayed) estimate replaces
 * it; the first sample replaces the default RTT. */
void rm_lb_load_sample(rm_lb_load_t *l, uint64_t latency_us, uint64_t now_us);
/** The latency estimate (us) at `now_us`: the last estimate decayed towards 0 since it was updated
 * (an idle endpoint is tried again, as in Linkerd), or the default RTT before any sample. */
double rm_lb_load_rtt_us(const rm_lb_load_t *l, uint64_t now_us);

/*
 * Helpers shared by the balancers (lb_util.c)
 */
/** XXH64 of `len` bytes of `data` with `seed` (deterministic across workers, restarts and hosts). */
uint64_t rm_lb_hash64(const void *data, size_t len, uint64_t seed);
/** A small PRNG per balancer state (xorshift64*), seeded from the clock and the state's address. */
uint64_t rm_lb_random(uint64_t *state);
void rm_lb_random_seed(uint64_t *state, const void *salt);

/** Weighted candidate sampling for the P2C balancers: rebuilt when the endpoint set changes. */
typedef struct st_rm_lb_sampler_t {
    rm_endpoint_t *const *endpoints;
    size_t n;
    /** prefix sums of the weights; NULL when all weights are equal (uniform) */
    uint64_t *cumulative;
    uint64_t total;
} rm_lb_sampler_t;
void rm_lb_sampler_update(rm_lb_sampler_t *s, rm_endpoint_t *const *endpoints, size_t n);
void rm_lb_sampler_dispose(rm_lb_sampler_t *s);
/** Two distinct endpoint indexes (*j == *i when n == 1), each drawn in proportion to its weight. */
void rm_lb_sampler_pick2(rm_lb_sampler_t *s, uint64_t *rng, size_t *i, size_t *j);

#endif
