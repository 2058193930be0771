/*
 * Least request with the power of two choices: two candidates drawn in proportion to their weights,
 * the one with fewer active requests per unit of weight wins, ties to the first drawn (so an idle
 * cluster spreads in proportion to the weights, and a loaded one keeps active/weight even). Active
 * requests are the agent-wide count of the endpoint's load entry, so every worker sees every other
 * worker's load.
 */
#include <stdlib.h>
#include "remora/strutil.h"
#include "upstream/cluster.h"
#include "upstream/lb.h"

typedef struct st_p2c_t {
    rm_lb_sampler_t sampler;
    uint64_t rng;
} p2c_t;

static void *
p2c_create(const rm_config_cluster_t *config)
{
    p2c_t *p = rm_calloc(1, sizeof(*p));
    rm_lb_random_seed(&p->rng, p);
    return p;
}

static void
p2c_destroy(void *state)
{
    p2c_t *p = state;
    rm_lb_sampler_dispose(&p->sampler);
    free(p);
}

static void
p2c_update(void *state, rm_endpoint_t *const *endpoints, size_t n)
{
    p2c_t *p = state;
    rm_lb_sampler_update(&p->sampler, endpoints, n);
}

/* active / weight, compared without division */
static int
less_loaded(rm_endpoint_t *a, rm_endpoint_t *b)
{
    uint64_t la = rm_lb_load_active(a->load), lb = rm_lb_load_active(b->load);
    uint64_t wa = a->weight != 0 ? a->weight : 1, wb = b->weight != 0 ? b->weight : 1;
    return la * wb <= lb * wa;
}

static rm_endpoint_t *
p2c_pick(void *state, rm_endpoint_t *const *endpoints, size_t n, const rm_attempt_t *a)
{
    p2c_t *p = state;
    if (n == 1)
        return endpoints[0];
    if (p->sampler.endpoints != endpoints || p->sampler.n != n)
        rm_lb_sampler_update(&p->sampler, endpoints, n);
    size_t i, j;
    rm_lb_sampler_pick2(&p->sampler, &p->rng, &i, &j);
    return less_loaded(endpoints[i], endpoints[j]) ? endpoints[i] : endpoints[j];
}

static void
p2c_on_result(void *state, rm_endpoint_t *ep, int success, uint64_t latency_us)
{
}

const rm_lb_t rm_lb_least_request = {"LeastRequest", p2c_create, p2c_destroy, p2c_update, p2c_pick, p2c_on_result};
