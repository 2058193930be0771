/*
 * Golden request metrics: a stream observer (proxy/stream.h) that records, when a stream ends,
 *
 *   remora_requests_total{direction, route, backend, client_id}
 *   remora_responses_total{direction, route, backend, client_id, status_code, grpc_status, classification}
 *   remora_request_duration_seconds{same labels as responses}      (histogram, obs/histogram.h buckets)
 *
 * in a bounded labelled family (obs/series.h), and, when each upstream attempt ends,
 * remora_upstream_attempts_total{backend, kind, outcome} in the cluster's counters. Every label, the
 * classification rule and the PromQL to read them are in docs/metrics.md.
 *
 * Exemplars: when a trace id source is set (rm_golden_set_trace_id_source), each observation whose
 * stream has a sampled trace keeps its trace id as its bucket's exemplar (OpenMetrics output only).
 *
 * Thread: register and set the source on the main thread at start, before workers run; the
 * observer runs on the stream's worker.
 */
#ifndef remora__filters_golden_h
#define remora__filters_golden_h

#include <stdint.h>
#include "proxy/stream.h"

/**
 * Gives the 16 bytes of a stream's trace id and returns 1 when its trace is sampled (only those become
 * exemplars), else returns 0. The signature of rm_trace_stream_sampled_id (filters/trace.h), so main.c
 * passes that function as it is. Called on the stream's worker from the observer's on_end (observer
 * state is pool memory, valid until the stream is freed after every on_end). Must not block.
 */
typedef int (*rm_golden_trace_id_fn)(rm_stream_t *s, uint8_t trace_id[16]);

/** Registers the observer and the labelled family. Main thread, at start, once. */
void rm_golden_register(void);
/** Sets (or, with NULL, clears) the trace id source of exemplars. Main thread, at start, before workers run. */
void rm_golden_set_trace_id_source(rm_golden_trace_id_fn fn);

/** 1 if a gRPC status counts as a failure of the server (UNKNOWN, DEADLINE_EXCEEDED, INTERNAL, UNAVAILABLE, DATA_LOSS). */
int rm_golden_grpc_status_is_failure(int grpc_status);

#endif
