/*
 * Rate limiting, the pure half: GCRA (the generic cell rate algorithm, a token bucket with burst
 * expressed as one "theoretical arrival time") and the agent-wide tables of buckets, one table per
 * policy name. The filter (filters/ratelimit.c) extracts the client key and answers refused
 * requests; nothing here does I/O or knows about streams. Times are CLOCK_MONOTONIC nanoseconds
 * passed in by the caller.
 *
 * GCRA. A limit of `rps` requests per second with `burst` B has the emission interval T = 1 s / rps.
 * A bucket is its theoretical arrival time TAT. A request at `now` is allowed iff
 *     max(TAT, now) + T - now <= B * T
 * and then TAT becomes max(TAT, now) + T. So an idle bucket allows B requests at once, and `rps`
 * per second in the long run. A refused request leaves TAT unchanged; it would be allowed after
 *     wait = max(TAT, now) + T - B * T - now.
 *
 * A table holds the policy's total bucket (one 64-bit TAT updated with a compare-and-swap loop: no
 * lock) and its per-client buckets: a fixed-capacity hash table of RM_RATELIMIT_SHARDS shards, each
 * under its own mutex with its own LRU list. When a shard is full the least recently seen client of
 * that shard is evicted (it comes back with a fresh bucket). Capacity: max_clients rounded up to a
 * multiple of RM_RATELIMIT_SHARDS, preallocated when the table is (re)configured, so memory is
 * bounded by RM_RATELIMIT_BYTES_PER_CLIENT per client whatever the number of distinct clients.
 *
 * Client keys are byte strings (an address, an identity, a header value). An entry keeps the first
 * RM_RATELIMIT_KEY_INLINE bytes, the length and a 64-bit hash of the whole key; two longer keys that
 * agree on all three share a bucket (probability about 2^-64 per pair).
 *
 * Thread-safety: every function may be called from any thread unless stated.
 */
#ifndef remora__policy_ratelimit_table_h
#define remora__policy_ratelimit_table_h

#include <stddef.h>
#include <stdint.h>

#define RM_RATELIMIT_SHARDS 16
#define RM_RATELIMIT_KEY_INLINE 34
/** default bound of a table's per-client buckets */
#define RM_RATELIMIT_DEFAULT_MAX_CLIENTS 10000
/** memory per client slot: a 64-byte entry plus at most 8 bytes of hash-bucket heads (see docs/architecture.md) */
#define RM_RATELIMIT_BYTES_PER_CLIENT 72

/**
 * One GCRA decision on a TAT the caller owns exclusively (under its lock). Returns 1 and stores the
 * new TAT in *new_tat when allowed; returns 0 and the nanoseconds until a request would be allowed
 * in *wait_ns when refused. rps 0 allows everything (*new_tat = *tat unchanged). burst 0 means rps.
 */
int rm_gcra_eval(uint64_t tat, uint64_t now_ns, uint32_t rps, uint32_t burst, uint64_t *new_tat, uint64_t *wait_ns);

/** The same on a TAT shared by threads: compare-and-swap until the decision sticks. */
int rm_gcra_take(uint64_t *shared_tat, uint64_t now_ns, uint32_t rps, uint32_t burst, uint64_t *wait_ns);

/** Retry-After for a wait: whole seconds rounded up, at least 1. */
uint64_t rm_gcra_retry_after_s(uint64_t wait_ns);

typedef struct st_rm_ratelimit_table_t rm_ratelimit_table_t;

/** The rates of one decision (the filter resolves overrides); a zero rate disables that part. */
typedef struct st_rm_ratelimit_rates_t {
    uint32_t total_rps, total_burst;
    uint32_t client_rps, client_burst;
} rm_ratelimit_rates_t;

/**
 * The table of policy `name`, created on first use, with a reference the caller releases. If the
 * bound `max_clients` (0: the default) differs from the table's, the per-client buckets are
 * re-allocated at the new bound (their state is dropped; the total bucket is kept). Takes the
 * registry's lock: not for the hot path. Aborts on allocation failure.
 */
rm_ratelimit_table_t *rm_ratelimit_table_acquire(const char *name, uint32_t max_clients);
void rm_ratelimit_table_ref(rm_ratelimit_table_t *t);
/** Drops a reference; the last one frees the table (its buckets and counters). */
void rm_ratelimit_table_release(rm_ratelimit_table_t *t);
/** The policy's name (owned by the table). */
const char *rm_ratelimit_table_name(const rm_ratelimit_table_t *t);

/**
 * Decides one request and counts the decision. `client` (may be NULL: no per-client limit) of
 * `client_len` bytes is the client key. The per-client bucket is only charged when the total bucket
 * allows too, so a request refused by one limit costs nothing in the other. Returns 1 if allowed;
 * 0 if refused, with the nanoseconds until a retry could pass in *wait_ns.
 */
int rm_ratelimit_table_check(rm_ratelimit_table_t *t, const rm_ratelimit_rates_t *rates, const char *client, size_t client_len,
                             uint64_t now_ns, uint64_t *wait_ns);

/** Clients tracked now (for tests and metrics). */
size_t rm_ratelimit_table_num_clients(rm_ratelimit_table_t *t);
/** Client slots (the bound, rounded up to a multiple of RM_RATELIMIT_SHARDS). */
size_t rm_ratelimit_table_capacity(const rm_ratelimit_table_t *t);
/** Decisions so far. */
void rm_ratelimit_table_counts(const rm_ratelimit_table_t *t, uint64_t *allowed, uint64_t *limited);

/**
 * Prometheus text of every live table: remora_rate_limit_decisions_total{policy,decision} and
 * remora_rate_limit_clients{policy}. Malloc'ed, or NULL when there is no table.
 */
char *rm_ratelimit_render_prometheus(void);

#endif
