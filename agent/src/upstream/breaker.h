/*
 * Circuit breakers: per cluster, agent-wide (all workers together), limits on connections, pending
 * requests, active requests and retries in flight (BackendTrafficPolicy connectionPool; the
 * bootstrap's `circuit_breakers`). A request over a limit is answered at once with the local reply
 * RM_LOCAL_OVERFLOW (503 / UNAVAILABLE, flag UO). The one queue: an HTTP/1.1 attempt that may not
 * open a connection (max_connections) waits on its endpoint for a pooled one, within
 * max_pending_requests.
 *
 * A breaker is an entry of an agent-wide registry keyed by cluster name, refcounted: every worker's
 * runtime of that cluster holds a reference, so the entry (and its counts) survives snapshot swaps
 * while some runtime of that name exists. Each count is an atomic; a slot is taken with a CAS loop
 * against the limit (the limit is never exceeded, whatever the number of threads) and must be given
 * back exactly once with rm_breaker_release.
 *
 * Thread: any (the registry takes a mutex; slots are lock-free).
 */
#ifndef remora__upstream_breaker_h
#define remora__upstream_breaker_h

#include <stdint.h>
#include "config/config.h"

typedef enum en_rm_breaker_limit_t {
    RM_BREAKER_CONNECTIONS = 0, /* upstream connections open or opening */
    RM_BREAKER_PENDING = 1,     /* attempts waiting for a connection, a stream or DNS */
    RM_BREAKER_REQUESTS = 2,    /* requests active at once */
    RM_BREAKER_RETRIES = 3,     /* retries in flight at once */
    RM_BREAKER_MAX
} rm_breaker_limit_t;

/** The `limit` label of remora_upstream_overflow_total, by rm_breaker_limit_t. */
extern const char *const rm_breaker_limit_names[RM_BREAKER_MAX];

typedef struct st_rm_breaker_t rm_breaker_t;

/** The breaker of cluster `name` (created with no limits if new); takes a reference. Never NULL. */
rm_breaker_t *rm_breaker_acquire(const char *name);
/** Drops a reference; the entry goes with the last one. NULL is ignored. */
void rm_breaker_release_ref(rm_breaker_t *b);
/** Sets the limits (0: no limit). A lower limit does not take slots back; it only refuses new ones. */
void rm_breaker_configure(rm_breaker_t *b, const rm_config_breakers_t *limits);

/** Takes a slot of `which`: 1 if taken (give it back with rm_breaker_release), 0 if at the limit. */
int rm_breaker_try_acquire(rm_breaker_t *b, rm_breaker_limit_t which);
/**
 * Takes a slot of `which` whatever the limit (the count may go over it): for what is always allowed
 * but counted anyway (a worker's first connection to an endpoint). Given back with rm_breaker_release.
 */
void rm_breaker_acquire_forced(rm_breaker_t *b, rm_breaker_limit_t which);
/** Gives back a slot taken with rm_breaker_try_acquire or rm_breaker_acquire_forced. */
void rm_breaker_release(rm_breaker_t *b, rm_breaker_limit_t which);
/** Slots of `which` now taken (a relaxed read). */
uint32_t rm_breaker_count(const rm_breaker_t *b, rm_breaker_limit_t which);
/** The limit of `which` (0: none). */
uint32_t rm_breaker_limit(const rm_breaker_t *b, rm_breaker_limit_t which);

/**
 * Renders the gauges of every breaker (remora_upstream_breaker_active{cluster,limit} and
 * remora_upstream_breaker_limit{cluster,limit}) as Prometheus text; malloc'ed, or NULL when there is
 * no breaker. For rm_stats_register_renderer (main thread).
 */
char *rm_breaker_render(void);

#endif
