/*
 * Peak EWMA over the power of two choices (Linkerd's default balancer, after Finagle): the cost of
 * an endpoint is its latency estimate x (active requests + 1), and of two candidates drawn in
 * proportion to their weights the cheaper one wins (ties to the first drawn): weights bias the draw. The estimate (lb_load.c) is
 * peak-sensitive: a sample above it replaces it at once, lower samples pull it down with a 10 s time constant, and while an
 * endpoint gets no samples its estimate decays towards 0 so that it is tried again. An endpoint never measured costs the default
 * RTT (30 ms). The estimate and the active count are agent-wide, per cluster and address.
 */
#include <stdlib.h>
#include "core/clock.h"
#include "remora/strutil.h"
#include "upstream/cluster.h"
#include "upstream/lb.h"

typedef struct st_ewma_t {
    rm_lb_sampler_t sampler;
    uint64_t rng;
} ewma_t;

static void *
ewma_create(const rm_config_cluster_t *config)
{
    ewma_t *e = rm_calloc(1, sizeof(*e));
    rm_lb_random_seed(&e->rng, e);
    return e;
}

static void
ewma_destroy(void *state)
{
    ewma_t *e = state;
    rm_lb_sampler_dispose(&e->sampler);
    free(e);
}

static void
ewma_update(void *state, rm_endpoint_t *const *endpoints, size_t n)
{
    ewma_t *e = state;
    rm_lb_sampler_update(&e->sampler, endpoints, n);
}

static double
cost(rm_endpoint_t *ep, uint64_t now_us)
{
    return rm_lb_load_rtt_us(ep->load, now_us) * ((double)rm_lb_load_active(ep->load) + 1);
}

static rm_endpoint_t *
ewma_pick(void *state, rm_endpoint_t *const *endpoints, size_t n, const rm_attempt_t *a)
{
    ewma_t *e = state;
    if (n == 1)
        return endpoints[0];
    if (e->sampler.endpoints != endpoints || e->sampler.n != n)
        rm_lb_sampler_update(&e->sampler, endpoints, n);
    size_t i, j;
    rm_lb_sampler_pick2(&e->sampler, &e->rng, &i, &j);
    uint64_t now = rm_clock_now_us();
    return cost(endpoints[i], now) <= cost(endpoints[j], now) ? endpoints[i] : endpoints[j];
}

static void
ewma_on_result(void *state, rm_endpoint_t *ep, int success, uint64_t latency_us)
{
    /* failures count by their latency too (a timed-out try pushes the estimate up); fast failures
     * such as refused connections are left to outlier detection */
    rm_lb_load_sample(ep->load, latency_us, rm_clock_now_us());
}

const rm_lb_t rm_lb_peak_ewma = {"PeakEWMA", ewma_create, ewma_destroy, ewma_update, ewma_pick, ewma_on_result};
