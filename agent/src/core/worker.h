/*
 * A worker: one thread, one libuv loop, its own SO_REUSEPORT listener sockets, and every
 * connection, stream and pooled upstream connection it accepts or opens for their whole life.
 * Workers share nothing mutable; the main thread talks to a worker only by posting messages to its
 * queue (rm_worker_post), which the worker drains on its loop.
 *
 * Deferred work: code running inside a callback of an object must not free that object. It marks
 * the object closed and calls rm_worker_defer(); deferred callbacks run once the current loop
 * iteration's I/O callbacks have all returned (a uv_check handle), as do pending flushes
 * (rm_worker_schedule_flush), so writes produced by many events in one iteration go out together.
 */
#ifndef remora__worker_h
#define remora__worker_h

#include <pthread.h>
#include <stdint.h>
#include <uv.h>
#include <h2o.h>
#include "config/config.h"
#include "core/timerwheel.h"
#include "obs/stats.h"

typedef struct st_rm_worker_t rm_worker_t;
typedef struct st_rm_listener_t rm_listener_t;
typedef struct st_rm_resolver_t rm_resolver_t;
typedef struct st_rm_tls_set_t rm_tls_set_t;

/**
 * A module's hooks on every worker (h2o's on_context_init / on_context_dispose slots): the worker
 * calls them in registration order and names no module itself. Every hook runs on the worker's
 * thread and may be NULL.
 */
typedef struct st_rm_worker_module_t {
    const char *name;
    /** before the loop runs: returns the module's per-worker state (rm_worker_module_state) */
    void *(*init)(rm_worker_t *worker);
    /** a new snapshot is in service (worker->config and worker->tls already swapped) */
    void (*on_config)(rm_worker_t *worker, void *state);
    /** a graceful drain starts: stop accepting, tell peers */
    void (*drain)(rm_worker_t *worker, void *state);
    /** the loop has stopped: close every connection and handle the module owns */
    void (*close)(rm_worker_t *worker, void *state);
    /** the loop is closed: free the state and per-thread caches */
    void (*thread_exit)(rm_worker_t *worker, void *state);
} rm_worker_module_t;

#define RM_WORKER_MAX_MODULES 8

/** Registers a module; returns its slot. Main thread, before any worker starts. Aborts past RM_WORKER_MAX_MODULES. */
size_t rm_worker_register_module(const rm_worker_module_t *module);

/** A message posted to a worker; `cb` runs on the worker's thread, which then frees nothing: cb owns msg. */
typedef struct st_rm_worker_msg_t {
    void (*cb)(rm_worker_t *worker, struct st_rm_worker_msg_t *msg);
    struct st_rm_worker_msg_t *_next;
} rm_worker_msg_t;

/** A deferred call (embedded in the object it concerns). */
typedef struct st_rm_deferred_t {
    void (*cb)(struct st_rm_deferred_t *d);
    struct st_rm_deferred_t *_next;
    int _queued;
} rm_deferred_t;

/** Something with output to flush at the end of the loop iteration (embedded in a connection). */
typedef struct st_rm_flushable_t {
    void (*cb)(struct st_rm_flushable_t *f);
    struct st_rm_flushable_t *_next;
    int _queued;
} rm_flushable_t;

struct st_rm_worker_t {
    unsigned id;
    uv_loop_t loop;
    pthread_t thread;
    rm_stats_t *stats;
    /** the snapshot in service on this worker (own reference) */
    rm_config_t *config;
    /** TLS contexts built from `config` (own reference, released through `release_tls`) */
    rm_tls_set_t *tls;
    void (*release_tls)(rm_tls_set_t *tls);
    /** the upstream module's DNS resolver (set by that module) */
    rm_resolver_t *resolver;
    /** every per-request timer of the worker (timeouts, backoff, delays) runs on this one wheel */
    rm_timerwheel_t timers;
    /** per-module state, by slot */
    void *module_state[RM_WORKER_MAX_MODULES];
    rm_listener_t *listeners;
    /** downstream connections, for draining and stats */
    h2o_linklist_t downstream_conns;
    /** upstream connections (rm_upconn_link_t), for shutdown */
    h2o_linklist_t upstream_conns;
    size_t num_downstream_conns;
    unsigned draining : 1;
    unsigned stopping : 1;
    /** state of rm_worker_random */
    uint64_t rng_state;

    uv_async_t _async;
    pthread_mutex_t _queue_mutex;
    rm_worker_msg_t *_queue_head, **_queue_tail;
    uv_check_t _check;
    uv_prepare_t _prepare;
    rm_deferred_t *_deferred;
    rm_flushable_t *_flush;
    uv_timer_t _wheel_timer;
    uint64_t _wheel_armed_ms;
    /** called on the worker thread as it exits (after its loop closed) */
    void (*on_exit)(rm_worker_t *worker);
    uv_timer_t _drain_timer;
};

/**
 * Initialises a worker (main thread) with its own stats block, a reference to `config`, and `tls`
 * (the caller passes a reference it took for the worker; `release_tls` drops one).
 */
void rm_worker_init(rm_worker_t *worker, unsigned id, rm_config_t *config, rm_tls_set_t *tls, void (*release_tls)(rm_tls_set_t *),
                    rm_stats_t *stats);
/** Starts the worker's thread. Returns 0 or a negative errno. */
int rm_worker_start(rm_worker_t *worker);
/** Joins the worker's thread (after it has stopped) and releases what it owns. Main thread. */
void rm_worker_join(rm_worker_t *worker);

/** Posts a message (any thread). Wakeups coalesce; the worker drains the whole queue. */
void rm_worker_post(rm_worker_t *worker, rm_worker_msg_t *msg);

/** Worker thread: run cb at the end of this loop iteration (idempotent while queued). */
void rm_worker_defer(rm_worker_t *worker, rm_deferred_t *d);
/** Worker thread: call f->cb at the end of this loop iteration (idempotent while queued). */
void rm_worker_schedule_flush(rm_worker_t *worker, rm_flushable_t *f);
/** Worker thread: removes `d` from the deferred list if queued (before freeing its owner). */
void rm_worker_cancel_deferred(rm_worker_t *worker, rm_deferred_t *d);
/** Worker thread: removes `f` from the flush list if queued (before freeing its owner). */
void rm_worker_cancel_flush(rm_worker_t *worker, rm_flushable_t *f);
/** Worker thread: (re)starts `timer` (rm_timer_init'ed or zeroed with cb set) to fire `delay_ms` from the loop's now. */
void rm_worker_timer_start(rm_worker_t *worker, rm_timer_t *timer, uint64_t delay_ms);
/** Worker thread: the loop's time in ms (the timer wheel's clock). */
uint64_t rm_worker_now_ms(rm_worker_t *worker);

/** Worker thread: swap in a new snapshot and its TLS contexts (takes the config reference, and the tls
 * reference the caller took for this worker); then every module's on_config. */
void rm_worker_apply_config(rm_worker_t *worker, rm_config_t *config, rm_tls_set_t *tls);
/** Worker thread: the state of the module in `slot`. */
static inline void *
rm_worker_module_state(rm_worker_t *worker, size_t slot)
{
    return worker->module_state[slot];
}
/** Worker thread: start a graceful drain bounded by `timeout_ms`; the loop ends when it is done. */
void rm_worker_start_drain(rm_worker_t *worker, uint64_t timeout_ms);
/** Worker thread: called by connections when they close, to let a drain finish. */
void rm_worker_conn_closed(rm_worker_t *worker);

/** Worker thread: a fast pseudo-random number (xorshift64*; not for secrets). */
static inline uint64_t
rm_worker_random(rm_worker_t *worker)
{
    uint64_t x = worker->rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    worker->rng_state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

/** The worker running on the calling thread, or NULL (main thread). */
rm_worker_t *rm_worker_current(void);

#endif
