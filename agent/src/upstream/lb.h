/*
 * The load-balancer interface: one algorithm per file (lb_rr.c today; least request, peak EWMA
 * and ring hash plug in the same way). A cluster runtime holds one balancer state; `pick` chooses
 * an endpoint for an attempt among the cluster's current endpoints and `on_result` learns each
 * attempt's outcome and latency (what EWMA and outlier detection feed on).
 *
 * Thread: the cluster's worker (agent-wide endpoint load, when a balancer needs it, lives in the
 * balancer's own shared table).
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
    /** per-cluster-runtime state (malloc'ed; aborts on OOM) */
    void *(*create)(const rm_config_cluster_t *config);
    void (*destroy)(void *state);
    /** an endpoint for `a` among `endpoints` (n > 0); never NULL */
    rm_endpoint_t *(*pick)(void *state, rm_endpoint_t *const *endpoints, size_t n, const rm_attempt_t *a);
    /** the outcome of an attempt on `ep`: success (a response head, or a complete exchange) and its latency */
    void (*on_result)(void *state, rm_endpoint_t *ep, int success, uint64_t latency_us);
} rm_lb_t;

extern const rm_lb_t rm_lb_round_robin;

#endif
