/*
 * Retry policy, the hot-path half: whether a failed attempt may be retried (classification), how
 * long to wait before the retry (backoff), and whether the cluster's retry budget allows one more
 * retry. The configuration half is rm_config_retry_t (per route) and the budget fields of
 * rm_config_cluster_t.
 *
 * Pure: no I/O, no event loop. The time is passed in by the caller (the worker's loop time).
 */
#ifndef remora__retry_h
#define remora__retry_h

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include "config/config.h"
#include "core/registry.h"

/**
 * Cause for rm_retry_classify(), next to RM_RETRY_ON_CONNECT_FAILURE / _REFUSED_STREAM / _RESET of
 * config.h: the attempt had no response head when its per-try timeout fired. Not a condition a
 * policy sets: see rm_retry_classify().
 */
#define RM_RETRY_ON_PER_TRY_TIMEOUT 0x8u

/** Why an attempt is retried; also the label of the retry metrics (rm_retry_reason_name). */
typedef enum en_rm_retry_reason_t {
    RM_RETRY_REASON_NONE = 0, /* not retried */
    RM_RETRY_REASON_CONNECT_FAILURE,
    RM_RETRY_REASON_REFUSED_STREAM,
    RM_RETRY_REASON_RESET,
    RM_RETRY_REASON_PER_TRY_TIMEOUT,
    RM_RETRY_REASON_HTTP_STATUS,
    RM_RETRY_REASON_GRPC_STATUS,
    RM_RETRY_REASON_COUNT_ /* number of reasons, for arrays of counters */
} rm_retry_reason_t;

/**
 * Decides whether the route's policy retries a failed attempt. `cause` is one RM_RETRY_ON_* value,
 * or 0 when a complete response head arrived: then `http_status` and `grpc_status` (-1 when absent:
 * the gRPC status of a trailers-only response or of the trailers) decide.
 *
 * Returns the reason, or RM_RETRY_REASON_NONE when the policy does not retry it:
 *  - a NULL policy, or attempts == 0, never retries;
 *  - connect failure, refused stream and reset are retried when their bit is in `conditions`;
 *  - a per-try timeout is retried whenever attempts > 0: setting a per-try timeout only makes sense
 *    if the abandoned try is followed by another (Gateway API's `backendRequest` timeout and Envoy's
 *    per_try_timeout both imply it), so it needs no condition of its own;
 *  - a response head is retried when its HTTP status is in `http_statuses` (sorted ascending, binary
 *    search), else when its gRPC status (0..16) has its bit in `grpc_status_mask`;
 *  - any other `cause` (unknown or several bits) is not retried.
 * Attempts already made and the budget are the caller's to check. Any thread; no errors.
 */
unsigned rm_retry_classify(const rm_config_retry_t *policy, unsigned cause, int http_status, int grpc_status);

/** snake_case name of a reason ("none", "connect_failure", ...) for metric labels; "unknown" for others. Static string. */
const char *rm_retry_reason_name(unsigned reason);

/**
 * Full-jitter exponential backoff (the AWS architecture blog's "full jitter"): a delay uniform in
 * [0, min(max_ms, base_ms * 2^retry_index)] drawn from `random64` (any uniformly distributed 64-bit
 * value; the modulo bias is below 2^-32). `retry_index` 0 is the first retry. The doubling saturates
 * instead of overflowing, however large `retry_index` is. A zero base or cap gives 0. Any thread.
 */
uint64_t rm_retry_backoff_ms(uint32_t base_ms, uint32_t max_ms, unsigned retry_index, uint64_t random64);

/* Retry budget --------------------------------------------------------------------------------- */

/** Buckets of the budget's sliding window. */
#define RM_RETRY_BUDGET_BUCKETS 10
/** Parameters of a budget created by rm_retry_budget_acquire() until configured (the cluster defaults). */
#define RM_RETRY_BUDGET_DEFAULT_PERCENT 20
#define RM_RETRY_BUDGET_DEFAULT_INTERVAL_MS 10000
#define RM_RETRY_BUDGET_DEFAULT_MIN_COUNT 10
#define RM_RETRY_BUDGET_DEFAULT_MIN_INTERVAL_MS 1000

/**
 * A cluster's retry budget (Gateway API GEP-3388 `retryConstraint`), shared by every worker.
 *
 * The rule. Let W be interval_ms rounded down to a multiple of RM_RETRY_BUDGET_BUCKETS ms (and at
 * least that). The window is the current bucket plus the RM_RETRY_BUDGET_BUCKETS - 1 before it, each
 * W / RM_RETRY_BUDGET_BUCKETS ms long, so it spans at most W. With R the original requests deposited
 * and X the retries withdrawn in the window, a retry is allowed iff
 *
 *     X < max(floor(R * percent / 100), M),   M = ceil(min_count * W / min_interval_ms)
 *
 * M is min_count per min_interval_ms expressed over the window (min_interval_ms 0: M = min_count),
 * so the budget never falls below the minimum rate, as GEP-3388 asks ("the budget for retries never
 * goes below this minimum value"); the two terms are not added up.
 *
 * The bound. Cut time into consecutive blocks of RM_RETRY_BUDGET_BUCKETS buckets. The window checked
 * by the last retry allowed in a block covers every earlier bucket of that block, so the retries of
 * a block are at most max(R_w * percent / 100, M) <= R_w * percent / 100 + M, R_w being the requests
 * of one window. At a steady rate, over any time of N blocks, retries <= percent % of the requests +
 * N * M: with the defaults (20 %), attempts <= 1.2 x requests + the minimum (min_count per
 * min_interval_ms), whatever the number of workers, since they all count in this one budget. (When
 * the rate changes, a block's check window also holds requests of the block before, so a burst right
 * after a busy period may spend up to twice percent %; the long-run average stays as above.)
 *
 * Thread-safety: every function may be called from any thread; the counters are guarded by a mutex
 * held for a few instructions (O(1) per call, plus clearing at most RM_RETRY_BUDGET_BUCKETS expired
 * buckets). Workers' clocks may disagree slightly: a time earlier than the budget's latest counts in
 * the latest bucket.
 */
typedef struct st_rm_retry_budget_t {
    /* parameters: written under _mutex, readable without it (atomics) */
    uint32_t _percent;
    uint32_t _interval_ms;
    uint32_t _min_count;
    uint32_t _min_interval_ms;
    pthread_mutex_t _mutex;
    /* the ring, under _mutex */
    uint32_t _bucket_ms;
    /** index (time / _bucket_ms) of the newest bucket; meaningless while !_anchored */
    uint64_t _epoch;
    int _anchored;
    uint32_t _requests[RM_RETRY_BUDGET_BUCKETS];
    uint32_t _retries[RM_RETRY_BUDGET_BUCKETS];
    uint64_t _window_requests;
    uint64_t _window_retries;
    /* registry (rm_retry_budget_acquire), under the registry's mutex */
    rm_registry_entry_t _entry;
} rm_retry_budget_t;

/**
 * Initializes an embedded budget with an empty window. `percent` may exceed 100 (and 0 leaves only
 * the minimum); min_count 0 leaves only the percentage. Dispose with rm_retry_budget_dispose(). One
 * thread, before the budget is shared.
 */
void rm_retry_budget_init(rm_retry_budget_t *budget, uint32_t percent, uint32_t interval_ms, uint32_t min_count,
                          uint32_t min_interval_ms);
/**
 * Changes the parameters of a budget in use (config reload); any thread, concurrently with the
 * calls below. The counts are kept: after a change of interval they are all taken as made at the
 * next call (and expire one new interval later), so a reload neither forgets a retry storm nor
 * starts one.
 */
void rm_retry_budget_configure(rm_retry_budget_t *budget, uint32_t percent, uint32_t interval_ms, uint32_t min_count,
                               uint32_t min_interval_ms);
/** Releases what rm_retry_budget_init() set up. No other thread may be using the budget. */
void rm_retry_budget_dispose(rm_retry_budget_t *budget);

/** Counts one original request (not a retry) at `now_ms`: each one earns percent % of a retry. Any thread. */
void rm_retry_budget_on_request(rm_retry_budget_t *budget, uint64_t now_ms);
/**
 * Returns 1 and counts the retry if the budget allows one more at `now_ms` (the rule above), else 0.
 * Call it only once the retry is otherwise decided (classification, attempts left). Any thread.
 */
int rm_retry_budget_try_withdraw(rm_retry_budget_t *budget, uint64_t now_ms);

/** Requests and retries in the window ending at `now_ms`, for /metrics and tests. Any thread. */
void rm_retry_budget_get_window(rm_retry_budget_t *budget, uint64_t now_ms, uint64_t *requests, uint64_t *retries);

/**
 * The process-wide budget of the cluster named `cluster_name`, so that a budget outlives config
 * snapshots: the runtime built for a new snapshot acquires it before the old runtime releases it.
 * The first acquire creates it with the RM_RETRY_BUDGET_DEFAULT_* parameters (the caller then applies
 * the cluster's with rm_retry_budget_configure()); later ones return the same budget and count a
 * reference. `cluster_name` is copied. Aborts on out of memory. Any thread (a registry mutex); for
 * setup, not per request.
 */
rm_retry_budget_t *rm_retry_budget_acquire(const char *cluster_name);
/** Drops a reference taken by rm_retry_budget_acquire(); the last one frees the budget. NULL is ignored. Any thread. */
void rm_retry_budget_release(rm_retry_budget_t *budget);

#endif
