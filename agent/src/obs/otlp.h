/*
 * Span export over OTLP: span records, the telemetry thread with its bounded queue, batching, and
 * the export counters.
 *
 *   worker --rm_otlp_submit--> bounded MPSC queue --> telemetry thread --batch--> exporter module
 *                  (full: drop + count, never wait)          (size or time)      (OTLP/gRPC | OTLP/HTTP)
 *
 * The exporter (protobuf-c encoding, gRPC C core, the HTTP/1.1 POST) lives in a loadable module,
 * remora-agent-otlp.so (obs/otlp_export.c), loaded the first time tracing is configured: an agent
 * without tracing has no telemetry thread, no queue, no gRPC and no protobuf-c in memory.
 *
 * Bounds: the queue holds at most `queue_size` spans; a batch at most `batch_size`; a span at most
 * RM_OTLP_MAX_ATTRS attributes (more are counted in dropped_attributes_count) and
 * RM_OTLP_SPAN_STRINGS bytes of strings (name, tracestate, string values; a value is cut at
 * RM_OTLP_ATTR_VALUE_MAX bytes); an export takes at most `export_timeout_ms`.
 *
 * Threads: span building and rm_otlp_submit on any thread (workers); configure, shutdown and
 * rendering on the main thread.
 */
#ifndef remora__obs_otlp_h
#define remora__obs_otlp_h

#include <stddef.h>
#include <stdint.h>

#define RM_OTLP_MAX_ATTRS 24
#define RM_OTLP_ATTR_VALUE_MAX 256
#define RM_OTLP_SPAN_STRINGS 2048

typedef enum en_rm_otlp_attr_type_t {
    RM_OTLP_ATTR_STRING = 0,
    RM_OTLP_ATTR_INT = 1,
    RM_OTLP_ATTR_BOOL = 2,
} rm_otlp_attr_type_t;

typedef struct st_rm_otlp_attr_t {
    /** static storage (semantic-convention names are literals) */
    const char *key;
    rm_otlp_attr_type_t type;
    union {
        struct {
            uint16_t off, len; /* in the span's strings */
        } str;
        int64_t i;
        int b;
    } v;
} rm_otlp_attr_t;

/** OTLP Span.SpanKind values. */
typedef enum en_rm_otlp_span_kind_t {
    RM_OTLP_SPAN_SERVER = 2,
    RM_OTLP_SPAN_CLIENT = 3,
} rm_otlp_span_kind_t;

/** OTLP Status.StatusCode values. */
typedef enum en_rm_otlp_status_t {
    RM_OTLP_STATUS_UNSET = 0,
    RM_OTLP_STATUS_OK = 1,
    RM_OTLP_STATUS_ERROR = 2,
} rm_otlp_status_t;

/** One finished span: self-contained (no pointers but the static attribute keys), so it can cross threads. */
typedef struct st_rm_otlp_span_t {
    uint8_t trace_id[16];
    uint8_t span_id[8];
    /** all zero: a root span */
    uint8_t parent_span_id[8];
    rm_otlp_span_kind_t kind;
    rm_otlp_status_t status;
    /** W3C trace flags (bit 0: sampled) */
    uint32_t flags;
    /** unix epoch nanoseconds */
    uint64_t start_ns, end_ns;
    uint16_t name_off, name_len;
    uint16_t tracestate_off, tracestate_len;
    uint32_t num_attrs;
    uint32_t dropped_attrs;
    rm_otlp_attr_t attrs[RM_OTLP_MAX_ATTRS];
    uint32_t strings_used;
    char strings[RM_OTLP_SPAN_STRINGS];
} rm_otlp_span_t;

/** Allocates an empty span (malloc; aborts on OOM). The caller fills it and passes it to rm_otlp_submit. Any thread. */
rm_otlp_span_t *rm_otlp_span_new(void);
/** Frees a span that is not submitted. */
void rm_otlp_span_free(rm_otlp_span_t *span);
/** Sets the name (cut to what fits). */
void rm_otlp_span_set_name(rm_otlp_span_t *span, const char *name, size_t len);
/** Sets the W3C tracestate carried with the span. */
void rm_otlp_span_set_tracestate(rm_otlp_span_t *span, const char *v, size_t len);
/** Adds attributes; `key` must be static storage. Over the bounds they are counted as dropped. */
void rm_otlp_span_add_str(rm_otlp_span_t *span, const char *key, const char *v, size_t len);
void rm_otlp_span_add_int(rm_otlp_span_t *span, const char *key, int64_t v);
void rm_otlp_span_add_bool(rm_otlp_span_t *span, const char *key, int v);
/** The string of a string attribute / the name / the tracestate (not NUL-terminated). */
static inline const char *
rm_otlp_span_str(const rm_otlp_span_t *span, uint16_t off)
{
    return span->strings + off;
}

/** Current wall-clock time in unix nanoseconds. Any thread. */
uint64_t rm_otlp_now_ns(void);

/**
 * Hands a finished span to the telemetry thread (ownership moves). Never blocks: when the exporter
 * is not running or the queue is full, the span is freed and counted as dropped. Any thread.
 */
void rm_otlp_submit(rm_otlp_span_t *span);
/** Counts n spans dropped before they were built (rm_otlp_accepting said no). Any thread. */
void rm_otlp_count_dropped(uint64_t n);
/** 1 if rm_otlp_submit would currently queue spans (the exporter runs and the queue is not full). Any thread. */
int rm_otlp_accepting(void);

typedef enum en_rm_otlp_transport_t {
    RM_OTLP_TRANSPORT_GRPC = 0,
    RM_OTLP_TRANSPORT_HTTP = 1,
} rm_otlp_transport_t;

/** Where and how spans go. */
typedef struct st_rm_otlp_settings_t {
    int enabled;
    /** "IP:PORT" (IPv6 as "[::1]:4317") */
    const char *endpoint;
    rm_otlp_transport_t transport;
    /** the resource's service.name */
    const char *service_name;
    uint32_t batch_size;
    uint32_t batch_timeout_ms;
    /** applies when the exporter starts; later changes need a restart */
    uint32_t queue_size;
    /** longest wait for one export (default 5000 ms) */
    uint32_t export_timeout_ms;
} rm_otlp_settings_t;

/**
 * Applies export settings (the strings are copied). Disabled settings when nothing runs cost
 * nothing; the first enabled ones load the exporter module and start the telemetry thread; later
 * ones with another endpoint, transport, service name or batching are handed to the thread, which
 * switches between exports. Returns 0, or -1 with a reason (the module cannot be loaded). Main thread.
 */
int rm_otlp_configure(const rm_otlp_settings_t *settings, char *err, size_t errlen);

/**
 * Stops the telemetry thread: what is queued is exported for at most `flush_timeout_ms`, the rest
 * counted as dropped; then the thread is joined. No-op when it never started. Main thread, after
 * the workers have stopped.
 */
void rm_otlp_shutdown(uint32_t flush_timeout_ms);

/**
 * The /metrics renderer (rm_stats_register_renderer): remora_trace_spans_total{result},
 * remora_trace_export_batches_total{result}, remora_trace_context_invalid_total{format}. Main thread.
 */
char *rm_otlp_render(void);

/** Counters, for tests and the renderer. Any thread. */
typedef struct st_rm_otlp_counters_t {
    uint64_t exported, dropped_queue_full, export_failed;
    uint64_t batches_ok, batches_failed;
} rm_otlp_counters_t;
void rm_otlp_counters(rm_otlp_counters_t *out);

/*
 * The exporter module (remora-agent-otlp.so), loaded by rm_otlp_configure.
 */
typedef struct st_rm_otlp_exporter_t rm_otlp_exporter_t;
typedef struct st_rm_otlp_module_t {
    /** A new exporter for the settings; NULL with a reason. Telemetry thread. */
    rm_otlp_exporter_t *(*create)(const rm_otlp_settings_t *settings, char *err, size_t errlen);
    /** Exports n spans in one request, waiting at most timeout_ms. 0, or -1 with a reason. Telemetry thread. */
    int (*export_spans)(rm_otlp_exporter_t *exporter, rm_otlp_span_t *const *spans, size_t n, uint32_t timeout_ms, char *err,
                        size_t errlen);
    void (*destroy)(rm_otlp_exporter_t *exporter);
} rm_otlp_module_t;

#define RM_OTLP_MODULE_SYMBOL "rm_otlp_module"
#define RM_OTLP_MODULE_FILE "remora-agent-otlp.so"

#endif
