#include <stdlib.h>
#include "remora/strutil.h"
#include "upstream/lb.h"

typedef struct st_rr_t {
    size_t next;
} rr_t;

static void *
rr_create(const rm_config_cluster_t *config)
{
    return rm_calloc(1, sizeof(rr_t));
}

static void
rr_destroy(void *state)
{
    free(state);
}

static rm_endpoint_t *
rr_pick(void *state, rm_endpoint_t *const *endpoints, size_t n, const rm_attempt_t *a)
{
    rr_t *rr = state;
    return endpoints[rr->next++ % n];
}

static void
rr_on_result(void *state, rm_endpoint_t *ep, int success, uint64_t latency_us)
{
}

const rm_lb_t rm_lb_round_robin = {"RoundRobin", rr_create, rr_destroy, NULL, rr_pick, rr_on_result};
