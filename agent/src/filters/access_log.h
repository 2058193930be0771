/*
 * JSON access logs (the snapshot's telemetry.access_log): a stream observer that formats one line
 * per request when the stream ends and hands it to the agent's writer (obs/access_log.h), which
 * never blocks the worker. With the log off in the stream's snapshot nothing is formatted.
 *
 * One JSON object per line, at most RM_ACCESS_LOG_MAX_LINE bytes (long values are cut, ending in
 * "..."), keys in this order:
 *   start_time        RFC 3339 UTC with milliseconds, when the request head arrived
 *   duration_ms       to the end of the stream, with microseconds (a number: 12.345)
 *   method, authority, path   as received (strings; authority null when absent)
 *   protocol          "HTTP/1.1" | "HTTP/2" (downstream)
 *   status            the status sent downstream, null when none went (the stream was reset)
 *   grpc_status       from the response head or trailers, null when none
 *   response_flag     Envoy's flag ("UH", "UF", "UT", "URX", "DC", ...) or "-"
 *   route             the matched route's name, null when none matched
 *   backend           the cluster of the last attempt, null when none
 *   upstream_address  "ip:port" of the last attempt that reached an endpoint, null when none
 *   attempts          upstream tries, the first included (mirrors are not counted)
 *   bytes_received    request body bytes from downstream
 *   bytes_sent        response body bytes to downstream
 *   trace_id          32 hex digits, null without tracing
 *   peer_identity     the mesh mTLS caller's SPIFFE ID (docs/mesh-tls.md), null for a plaintext caller
 *   downstream_address  "ip:port" of the client, null when unknown
 * Strings are JSON-escaped byte by byte: '"', '\', control bytes and DEL escaped; valid UTF-8 kept;
 * a byte that is not part of valid UTF-8 is written as \u00XX (its Latin-1 reading), so a line is
 * always valid JSON whatever the client sent.
 *
 * Thread: register and apply on the main thread; the observer runs on the stream's worker.
 */
#ifndef remora__filters_access_log_h
#define remora__filters_access_log_h

#include <stddef.h>
#include "config/config.h"

/** The longest line written (bytes, the newline included). */
#define RM_ACCESS_LOG_MAX_LINE 4096

typedef struct st_rm_stream_t rm_stream_t;

/** Registers the stream observer and the access log metrics. Main thread, at start, before workers run. */
void rm_access_log_observer_register(void);
/**
 * Makes the writer follow `config`'s telemetry.access_log (on, off, path, buffer size). Call before
 * the snapshot reaches the workers (at start and on each publish). Main thread.
 */
void rm_access_log_apply_config(const rm_config_t *config);
/** Formats the line of stream `s` into `buf` (at least RM_ACCESS_LOG_MAX_LINE bytes); returns its length. For tests. */
size_t rm_access_log_format(rm_stream_t *s, char *buf);

#endif
