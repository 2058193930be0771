/*
 * Distributed tracing: a stream observer (proxy/stream.h) that extracts the caller's trace context
 * (W3C or B3, obs/trace.h), decides sampling, builds one SERVER span per request and one CLIENT span
 * per upstream attempt (retries and mirrors included), injects the context of each client span into
 * its attempt (a->extra_headers), and hands finished spans to the OTLP exporter (obs/otlp.h).
 *
 * Settings come from each stream's snapshot (config->telemetry.tracing): with tracing off the
 * observer returns at once and allocates nothing. Unsampled requests still carry a context upstream
 * (sampled=0) but build no span. See docs/telemetry.md.
 */
#ifndef remora__filters_trace_h
#define remora__filters_trace_h

#include "config/config.h"
#include "proxy/stream.h"

/** Registers the observer and the /metrics renderer. Main thread, at start, before workers run. */
void rm_trace_filter_register(void);

/**
 * Applies a snapshot's tracing settings to the exporter (starting it the first time tracing is on,
 * switching endpoint or protocol later). Errors are logged; the snapshot stays valid. Main thread,
 * on each publish.
 */
void rm_trace_filter_configure(const rm_config_t *config);

/** Stops the exporter after a bounded flush (at most `flush_timeout_ms`). Main thread, after the workers stopped. */
void rm_trace_filter_shutdown(uint32_t flush_timeout_ms);

/**
 * Writes the stream's trace id (32 lower-case hex digits and a NUL) into `out` and returns 1, or
 * returns 0 (out = "") when the stream has no trace context (tracing off). `*sampled` (may be NULL)
 * tells whether its spans are exported. Thread: the stream's worker (e.g. the access log's on_end).
 */
int rm_trace_stream_trace_id(rm_stream_t *s, char out[33], int *sampled);
/** The 16 bytes of the stream's trace id into `out` and 1 when its trace is sampled; else 0 (exemplars). */
int rm_trace_stream_sampled_id(rm_stream_t *s, uint8_t out[16]);

#endif
