#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>
#include "remora/dlmodule.h"
#include "remora/log.h"
#include "remora/strutil.h"
#include "remora/thread.h"
#include "obs/otlp.h"
#include "obs/stats.h"
#include "obs/trace.h"

/*
 * Span records
 */

rm_otlp_span_t *
rm_otlp_span_new(void)
{
    rm_otlp_span_t *span = rm_malloc(sizeof(*span));
    /* only the header matters: the strings area is written before it is read */
    memset(span, 0, offsetof(rm_otlp_span_t, strings));
    return span;
}

void
rm_otlp_span_free(rm_otlp_span_t *span)
{
    free(span);
}

/* Copies up to `max` bytes into the span's strings; returns the offset and sets *outlen (0 if full). */
static uint16_t
put_string(rm_otlp_span_t *span, const char *v, size_t len, size_t max, uint16_t *outlen)
{
    size_t room = RM_OTLP_SPAN_STRINGS - span->strings_used;
    if (len > max)
        len = max;
    if (len > room)
        len = room;
    uint16_t off = (uint16_t)span->strings_used;
    memcpy(span->strings + off, v, len);
    span->strings_used += (uint32_t)len;
    *outlen = (uint16_t)len;
    return off;
}

void
rm_otlp_span_set_name(rm_otlp_span_t *span, const char *name, size_t len)
{
    span->name_off = put_string(span, name, len, RM_OTLP_ATTR_VALUE_MAX, &span->name_len);
}

void
rm_otlp_span_set_tracestate(rm_otlp_span_t *span, const char *v, size_t len)
{
    span->tracestate_off = put_string(span, v, len, RM_TRACE_STATE_MAX, &span->tracestate_len);
}

static rm_otlp_attr_t *
add_attr(rm_otlp_span_t *span, const char *key, rm_otlp_attr_type_t type)
{
    if (span->num_attrs == RM_OTLP_MAX_ATTRS) {
        ++span->dropped_attrs;
        return NULL;
    }
    rm_otlp_attr_t *a = &span->attrs[span->num_attrs++];
    a->key = key;
    a->type = type;
    return a;
}

void
rm_otlp_span_add_str(rm_otlp_span_t *span, const char *key, const char *v, size_t len)
{
    if (len != 0 && span->strings_used == RM_OTLP_SPAN_STRINGS) {
        ++span->dropped_attrs;
        return;
    }
    rm_otlp_attr_t *a = add_attr(span, key, RM_OTLP_ATTR_STRING);
    if (a != NULL)
        a->v.str.off = put_string(span, v, len, RM_OTLP_ATTR_VALUE_MAX, &a->v.str.len);
}

void
rm_otlp_span_add_int(rm_otlp_span_t *span, const char *key, int64_t v)
{
    rm_otlp_attr_t *a = add_attr(span, key, RM_OTLP_ATTR_INT);
    if (a != NULL)
        a->v.i = v;
}

void
rm_otlp_span_add_bool(rm_otlp_span_t *span, const char *key, int v)
{
    rm_otlp_attr_t *a = add_attr(span, key, RM_OTLP_ATTR_BOOL);
    if (a != NULL)
        a->v.b = v != 0;
}

uint64_t
rm_otlp_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * The queue: a bounded lock-free MPSC ring (Vyukov's bounded queue, one consumer). Producers never
 * wait: a full ring is a dropped span. Cell sequence numbers tell producers and the consumer whose
 * turn a cell is.
 */
typedef struct st_cell_t {
    uint64_t seq;
    rm_otlp_span_t *span;
} cell_t;

static struct {
    /* set once the thread runs (release), read by producers (acquire) */
    int running;
    cell_t *cells;
    uint64_t capacity;
    uint64_t enqueue_pos __attribute__((aligned(64)));
    uint64_t dequeue_pos __attribute__((aligned(64)));
    /* the consumer was woken and has not drained yet: producers skip the syscall */
    int wake_pending;
    uint32_t wake_threshold;
    int efd;
    pthread_t thread;
    const rm_otlp_module_t *module;

    /* settings handed from the main thread (under `mutex`) */
    pthread_mutex_t mutex;
    rm_otlp_settings_t pending;
    int has_pending;
    int stopping;
    uint64_t stop_deadline_ns;
    /* the main thread's copy of what it last applied (strings owned) */
    rm_otlp_settings_t applied;

    /* counters (relaxed atomics) */
    uint64_t exported, dropped_queue_full, export_failed, batches_ok, batches_failed;
} q = {.efd = -1, .mutex = PTHREAD_MUTEX_INITIALIZER};

static void
wake(void)
{
    uint64_t one = 1;
    if (write(q.efd, &one, sizeof(one)) < 0) {
        /* EAGAIN: the counter is saturated, the thread is awake anyway */
    }
}

void
rm_otlp_count_dropped(uint64_t n)
{
    __atomic_fetch_add(&q.dropped_queue_full, n, __ATOMIC_RELAXED);
}

int
rm_otlp_accepting(void)
{
    if (!__atomic_load_n(&q.running, __ATOMIC_ACQUIRE))
        return 0;
    uint64_t enq = __atomic_load_n(&q.enqueue_pos, __ATOMIC_RELAXED), deq = __atomic_load_n(&q.dequeue_pos, __ATOMIC_RELAXED);
    return enq - deq < q.capacity;
}

void
rm_otlp_submit(rm_otlp_span_t *span)
{
    if (!__atomic_load_n(&q.running, __ATOMIC_ACQUIRE)) {
        free(span);
        __atomic_fetch_add(&q.dropped_queue_full, 1, __ATOMIC_RELAXED);
        return;
    }
    uint64_t pos = __atomic_load_n(&q.enqueue_pos, __ATOMIC_RELAXED);
    cell_t *cell;
    for (;;) {
        cell = &q.cells[pos % q.capacity];
        uint64_t seq = __atomic_load_n(&cell->seq, __ATOMIC_ACQUIRE);
        int64_t dif = (int64_t)(seq - pos);
        if (dif == 0) {
            if (__atomic_compare_exchange_n(&q.enqueue_pos, &pos, pos + 1, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED))
                break;
        } else if (dif < 0) {
            free(span);
            __atomic_fetch_add(&q.dropped_queue_full, 1, __ATOMIC_RELAXED);
            return;
        } else {
            pos = __atomic_load_n(&q.enqueue_pos, __ATOMIC_RELAXED);
        }
    }
    cell->span = span;
    __atomic_store_n(&cell->seq, pos + 1, __ATOMIC_RELEASE);
    /* wake the thread once a batch is full; partial batches go on its timer */
    uint64_t depth = pos + 1 - __atomic_load_n(&q.dequeue_pos, __ATOMIC_RELAXED);
    if (depth >= __atomic_load_n(&q.wake_threshold, __ATOMIC_RELAXED) && !__atomic_exchange_n(&q.wake_pending, 1, __ATOMIC_ACQ_REL))
        wake();
}

/* Consumer side: the next span, or NULL when empty. */
static rm_otlp_span_t *
dequeue(void)
{
    uint64_t pos = q.dequeue_pos;
    cell_t *cell = &q.cells[pos % q.capacity];
    uint64_t seq = __atomic_load_n(&cell->seq, __ATOMIC_ACQUIRE);
    if ((int64_t)(seq - (pos + 1)) < 0)
        return NULL;
    rm_otlp_span_t *span = cell->span;
    __atomic_store_n(&cell->seq, pos + q.capacity, __ATOMIC_RELEASE);
    __atomic_store_n(&q.dequeue_pos, pos + 1, __ATOMIC_RELAXED);
    return span;
}

/*
 * The telemetry thread
 */

static uint64_t
mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void
settings_free(rm_otlp_settings_t *s)
{
    free((char *)s->endpoint);
    free((char *)s->service_name);
    s->endpoint = s->service_name = NULL;
}

static void
settings_copy(rm_otlp_settings_t *dst, const rm_otlp_settings_t *src)
{
    *dst = *src;
    dst->endpoint = rm_strdup(src->endpoint != NULL ? src->endpoint : "");
    dst->service_name = rm_strdup(src->service_name != NULL ? src->service_name : "remora-agent");
    if (dst->batch_size == 0)
        dst->batch_size = 512;
    if (dst->batch_timeout_ms == 0)
        dst->batch_timeout_ms = 1000;
    if (dst->queue_size == 0)
        dst->queue_size = 4096;
    if (dst->export_timeout_ms == 0)
        dst->export_timeout_ms = 5000;
}

static int
settings_equal(const rm_otlp_settings_t *a, const rm_otlp_settings_t *b)
{
    return a->transport == b->transport && strcmp(a->endpoint, b->endpoint) == 0 && strcmp(a->service_name, b->service_name) == 0 &&
           a->batch_size == b->batch_size && a->batch_timeout_ms == b->batch_timeout_ms &&
           a->export_timeout_ms == b->export_timeout_ms;
}

typedef struct st_thread_state_t {
    rm_otlp_settings_t settings;
    rm_otlp_exporter_t *exporter;
    /* when creating the exporter last failed (monotonic ns): retried at most once a second */
    uint64_t create_failed_at;
    rm_otlp_span_t **batch;
    size_t batch_n;
    uint64_t batch_started;
    /* rate limit of the export-failure log line */
    uint64_t last_fail_log;
} thread_state_t;

static void
free_batch(thread_state_t *t)
{
    for (size_t i = 0; i != t->batch_n; ++i)
        free(t->batch[i]);
    t->batch_n = 0;
}

static void
export_batch(thread_state_t *t, uint32_t timeout_ms)
{
    if (t->batch_n == 0)
        return;
    char err[512] = "";
    int ok = 0;
    if (t->exporter == NULL && (t->create_failed_at == 0 || mono_ns() - t->create_failed_at > 1000000000u)) {
        if ((t->exporter = q.module->create(&t->settings, err, sizeof(err))) == NULL) {
            t->create_failed_at = mono_ns();
            rm_log_warn("otlp", "cannot create the exporter to %s: %s", t->settings.endpoint, err);
        }
    }
    if (t->exporter != NULL)
        ok = q.module->export_spans(t->exporter, t->batch, t->batch_n, timeout_ms, err, sizeof(err)) == 0;
    if (ok) {
        __atomic_fetch_add(&q.exported, t->batch_n, __ATOMIC_RELAXED);
        __atomic_fetch_add(&q.batches_ok, 1, __ATOMIC_RELAXED);
    } else {
        __atomic_fetch_add(&q.export_failed, t->batch_n, __ATOMIC_RELAXED);
        __atomic_fetch_add(&q.batches_failed, 1, __ATOMIC_RELAXED);
        uint64_t now = mono_ns();
        if (t->last_fail_log == 0 || now - t->last_fail_log > 10000000000u) {
            t->last_fail_log = now;
            rm_log_warn("otlp", "exporting %zu spans to %s failed: %s", t->batch_n, t->settings.endpoint, err);
        }
    }
    free_batch(t);
}

static void
apply_pending(thread_state_t *t)
{
    pthread_mutex_lock(&q.mutex);
    if (!q.has_pending) {
        pthread_mutex_unlock(&q.mutex);
        return;
    }
    rm_otlp_settings_t next = q.pending;
    q.has_pending = 0;
    q.pending.endpoint = q.pending.service_name = NULL;
    pthread_mutex_unlock(&q.mutex);
    /* what was collected under the old settings goes with them */
    export_batch(t, t->settings.export_timeout_ms);
    if (t->exporter != NULL)
        q.module->destroy(t->exporter);
    t->exporter = NULL;
    t->create_failed_at = 0;
    settings_free(&t->settings);
    t->settings = next;
    free(t->batch);
    t->batch = rm_calloc(t->settings.batch_size, sizeof(*t->batch));
    __atomic_store_n(&q.wake_threshold, t->settings.batch_size, __ATOMIC_RELAXED);
}

static void *
thread_main(void *arg)
{
    thread_state_t *t = arg;
    for (;;) {
        apply_pending(t);
        __atomic_store_n(&q.wake_pending, 0, __ATOMIC_RELEASE);
        rm_otlp_span_t *span;
        while (t->batch_n < t->settings.batch_size && (span = dequeue()) != NULL) {
            if (t->batch_n == 0)
                t->batch_started = mono_ns();
            t->batch[t->batch_n++] = span;
        }
        pthread_mutex_lock(&q.mutex);
        int stopping = q.stopping;
        uint64_t stop_deadline = q.stop_deadline_ns;
        pthread_mutex_unlock(&q.mutex);
        if (stopping)
            break;
        uint64_t now = mono_ns(), timeout_ns = (uint64_t)t->settings.batch_timeout_ms * 1000000u;
        if (t->batch_n == t->settings.batch_size || (t->batch_n != 0 && now - t->batch_started >= timeout_ns)) {
            export_batch(t, t->settings.export_timeout_ms);
            continue;
        }
        int wait_ms = (int)t->settings.batch_timeout_ms;
        if (t->batch_n != 0)
            wait_ms = (int)((t->batch_started + timeout_ns - now + 999999) / 1000000);
        struct pollfd pfd = {.fd = q.efd, .events = POLLIN};
        if (poll(&pfd, 1, wait_ms) > 0) {
            uint64_t v;
            if (read(q.efd, &v, sizeof(v)) < 0) {
                /* EAGAIN: another read took it */
            }
        }
        (void)stop_deadline;
    }
    /* the flush at shutdown: batches until the queue is empty or the deadline passes */
    for (;;) {
        uint64_t now = mono_ns(), deadline = q.stop_deadline_ns;
        if (now >= deadline)
            break;
        uint64_t left_ms = (deadline - now) / 1000000u;
        uint32_t timeout_ms = left_ms < t->settings.export_timeout_ms ? (uint32_t)left_ms : t->settings.export_timeout_ms;
        if (timeout_ms == 0)
            break;
        export_batch(t, timeout_ms);
        rm_otlp_span_t *span;
        while (t->batch_n < t->settings.batch_size && (span = dequeue()) != NULL)
            t->batch[t->batch_n++] = span;
        if (t->batch_n == 0)
            break;
    }
    /* what could not be flushed in time */
    __atomic_fetch_add(&q.dropped_queue_full, t->batch_n, __ATOMIC_RELAXED);
    free_batch(t);
    rm_otlp_span_t *span;
    while ((span = dequeue()) != NULL) {
        free(span);
        __atomic_fetch_add(&q.dropped_queue_full, 1, __ATOMIC_RELAXED);
    }
    if (t->exporter != NULL)
        q.module->destroy(t->exporter);
    settings_free(&t->settings);
    free(t->batch);
    free(t);
    return NULL;
}

/* The exporter module (remora/dlmodule.h says where it is looked for); never unloaded. */
static const rm_otlp_module_t *
load_module(char *err, size_t errlen)
{
    return rm_dlmodule_load(RM_OTLP_MODULE_FILE, RM_OTLP_MODULE_SYMBOL, "OTLP exporter", err, errlen);
}

int
rm_otlp_configure(const rm_otlp_settings_t *settings, char *err, size_t errlen)
{
    if (!settings->enabled)
        return 0; /* a running exporter stays: nothing new is submitted, and re-enabling is free */
    rm_otlp_settings_t next;
    settings_copy(&next, settings);
    if (q.running) {
        if (settings_equal(&next, &q.applied)) {
            settings_free(&next);
            return 0;
        }
        settings_free(&q.applied);
        settings_copy(&q.applied, &next);
        pthread_mutex_lock(&q.mutex);
        settings_free(&q.pending);
        q.pending = next;
        q.has_pending = 1;
        pthread_mutex_unlock(&q.mutex);
        wake();
        rm_log_info("otlp", "exporting spans to %s over %s", q.applied.endpoint,
                    q.applied.transport == RM_OTLP_TRANSPORT_GRPC ? "OTLP/gRPC" : "OTLP/HTTP");
        return 0;
    }
    if (q.module == NULL && (q.module = load_module(err, errlen)) == NULL) {
        settings_free(&next);
        return -1;
    }
    if ((q.efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
        snprintf(err, errlen, "eventfd: %s", strerror(errno));
        settings_free(&next);
        return -1;
    }
    q.capacity = next.queue_size;
    q.cells = rm_calloc(q.capacity, sizeof(*q.cells));
    for (uint64_t i = 0; i != q.capacity; ++i)
        q.cells[i].seq = i;
    q.wake_threshold = next.batch_size;
    settings_copy(&q.applied, &next);
    thread_state_t *t = rm_calloc(1, sizeof(*t));
    t->settings = next;
    t->batch = rm_calloc(next.batch_size, sizeof(*t->batch));
    int r = rm_thread_create(&q.thread, thread_main, t);
    if (r != 0)
        rm_fatal("pthread_create (telemetry thread): %s", strerror(r));
    __atomic_store_n(&q.running, 1, __ATOMIC_RELEASE);
    rm_log_info("otlp", "exporting spans to %s over %s (queue %u, batch %u, %u ms)", q.applied.endpoint,
                q.applied.transport == RM_OTLP_TRANSPORT_GRPC ? "OTLP/gRPC" : "OTLP/HTTP", q.applied.queue_size,
                q.applied.batch_size, q.applied.batch_timeout_ms);
    return 0;
}

void
rm_otlp_shutdown(uint32_t flush_timeout_ms)
{
    if (!q.running)
        return;
    pthread_mutex_lock(&q.mutex);
    q.stopping = 1;
    q.stop_deadline_ns = mono_ns() + (uint64_t)flush_timeout_ms * 1000000u;
    pthread_mutex_unlock(&q.mutex);
    wake();
    pthread_join(q.thread, NULL);
    /* late submitters (none once the workers are joined) see an empty, closed queue */
    __atomic_store_n(&q.running, 0, __ATOMIC_RELEASE);
    free(q.cells);
    q.cells = NULL;
    close(q.efd);
    q.efd = -1;
    settings_free(&q.applied);
    settings_free(&q.pending);
}

void
rm_otlp_counters(rm_otlp_counters_t *out)
{
    out->exported = __atomic_load_n(&q.exported, __ATOMIC_RELAXED);
    out->dropped_queue_full = __atomic_load_n(&q.dropped_queue_full, __ATOMIC_RELAXED);
    out->export_failed = __atomic_load_n(&q.export_failed, __ATOMIC_RELAXED);
    out->batches_ok = __atomic_load_n(&q.batches_ok, __ATOMIC_RELAXED);
    out->batches_failed = __atomic_load_n(&q.batches_failed, __ATOMIC_RELAXED);
}

char *
rm_otlp_render(void)
{
    rm_otlp_counters_t c;
    rm_otlp_counters(&c);
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);
    if (fp == NULL)
        rm_fatal("open_memstream failed");
    fprintf(fp,
            "# HELP remora_trace_spans_total Finished spans by fate: exported, dropped because the export queue was full "
            "(or the exporter stopped), or lost in a failed export.\n"
            "# TYPE remora_trace_spans_total counter\n"
            "remora_trace_spans_total{result=\"exported\"} %llu\n"
            "remora_trace_spans_total{result=\"dropped_queue_full\"} %llu\n"
            "remora_trace_spans_total{result=\"export_failed\"} %llu\n",
            (unsigned long long)c.exported, (unsigned long long)c.dropped_queue_full, (unsigned long long)c.export_failed);
    fprintf(fp,
            "# HELP remora_trace_export_batches_total OTLP export requests by outcome.\n"
            "# TYPE remora_trace_export_batches_total counter\n"
            "remora_trace_export_batches_total{result=\"ok\"} %llu\n"
            "remora_trace_export_batches_total{result=\"failed\"} %llu\n",
            (unsigned long long)c.batches_ok, (unsigned long long)c.batches_failed);
    fprintf(fp, "# HELP remora_trace_context_invalid_total Requests whose trace context was malformed (a new trace was "
                "started), by format.\n"
                "# TYPE remora_trace_context_invalid_total counter\n");
    for (int f = 0; f != RM_TRACE_FORMAT_MAX; ++f)
        fprintf(fp, "remora_trace_context_invalid_total{format=\"%s\"} %llu\n", rm_trace_format_name(f),
                (unsigned long long)rm_trace_invalid_count(f));
    fclose(fp);
    return text;
}
