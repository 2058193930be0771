/*
 * Local rate limiting (a RateLimitPolicy): GCRA buckets shared by every worker, per route (this
 * filter, on the matched route's `rate_limit`) and per target Service (the router calls
 * rm_ratelimit_apply with the picked cluster's `rate_limit` before the first attempt).
 *
 * A policy has a total bucket and per-client buckets. The client key is, by the policy's
 * client_key: the mTLS peer identity -- which the agent does not have yet, so Identity falls back to
 * the source address -- the source address (the IP without the port), or the value of a named
 * request header. A request without a key (no address, or the header absent) is limited by the
 * total bucket only. An override whose `clients` list holds the key gives that client its own
 * rate and burst instead of per_client's.
 *
 * Refused: 429 with Retry-After (whole seconds until a request would be allowed, at least 1), or for
 * gRPC a trailers-only RESOURCE_EXHAUSTED; local reply cause RM_LOCAL_RATE_LIMITED
 * ("rate_limited"). Counted agent-wide per policy and decision
 * (remora_rate_limit_decisions_total, see policy/ratelimit_table.h).
 *
 * Tables are found through a per-worker cache built from each snapshot the worker takes (the
 * worker acquires the new snapshot's tables before releasing the old ones, so a policy's buckets
 * survive reloads while its name exists); a stream still on an older snapshot takes the registry's
 * lock for its decision.
 *
 * Thread: the stream's worker, except rm_ratelimit_register (main thread, at start).
 */
#ifndef remora__filters_ratelimit_h
#define remora__filters_ratelimit_h

#include "config/config.h"
#include "proxy/filter.h"

extern const rm_filter_t rm_ratelimit_filter;

/** Registers the per-worker table cache and the metrics renderer. Main thread, before workers start. */
void rm_ratelimit_register(void);

/**
 * Decides the stream's request against `rl` (a route's or cluster's, in s->config). Returns 0 if
 * allowed; -1 if refused, the stream having been answered locally (the caller stops).
 */
int rm_ratelimit_apply(rm_stream_t *s, const rm_config_rate_limit_t *rl);

#endif
