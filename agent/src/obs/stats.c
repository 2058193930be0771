/*
 * Per-worker counters and their Prometheus rendering.
 *
 * Workers only ever prepend blocks (under the mutex) and bump fields with relaxed atomics; the main
 * thread walks the lists under each worker's mutex and sums. A scrape therefore sees every counter
 * at some recent value, never a torn one, and never blocks a worker for longer than a list walk.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "obs/stats.h"

rm_stats_t *
rm_stats_create(unsigned worker_id)
{
    rm_stats_t *stats = rm_calloc(1, sizeof(*stats));
    stats->worker_id = worker_id;
    pthread_mutex_init(&stats->_mutex, NULL);
    return stats;
}

void
rm_stats_destroy(rm_stats_t *stats)
{
    if (stats == NULL)
        return;
    while (stats->_listeners != NULL) {
        rm_listener_stats_t *l = stats->_listeners;
        stats->_listeners = l->_next;
        free(l->name);
        free(l);
    }
    while (stats->_clusters != NULL) {
        rm_cluster_stats_t *c = stats->_clusters;
        stats->_clusters = c->_next;
        free(c->name);
        free(c);
    }
    pthread_mutex_destroy(&stats->_mutex);
    free(stats);
}

rm_listener_stats_t *
rm_stats_listener(rm_stats_t *stats, const char *name)
{
    rm_listener_stats_t *l;

    /* the owner is the only writer of the list, so its own lookup needs no lock */
    for (l = stats->_listeners; l != NULL; l = l->_next)
        if (strcmp(l->name, name) == 0)
            return l;
    l = rm_calloc(1, sizeof(*l));
    l->name = rm_strdup(name);
    pthread_mutex_lock(&stats->_mutex);
    l->_next = stats->_listeners;
    stats->_listeners = l;
    pthread_mutex_unlock(&stats->_mutex);
    return l;
}

rm_cluster_stats_t *
rm_stats_cluster(rm_stats_t *stats, const char *name)
{
    rm_cluster_stats_t *c;

    for (c = stats->_clusters; c != NULL; c = c->_next)
        if (strcmp(c->name, name) == 0)
            return c;
    c = rm_calloc(1, sizeof(*c));
    c->name = rm_strdup(name);
    pthread_mutex_lock(&stats->_mutex);
    c->_next = stats->_clusters;
    stats->_clusters = c;
    pthread_mutex_unlock(&stats->_mutex);
    return c;
}

/* -- rendering --------------------------------------------------------------------------------------------------------------- */

typedef struct st_strbuf_t {
    char *base;
    size_t len, cap;
} strbuf_t;

static void
sb_reserve(strbuf_t *sb, size_t extra)
{
    if (sb->len + extra + 1 <= sb->cap)
        return;
    size_t cap = sb->cap == 0 ? 4096 : sb->cap;
    while (cap < sb->len + extra + 1)
        cap *= 2;
    sb->base = rm_realloc(sb->base, cap);
    sb->cap = cap;
}

static void
sb_append(strbuf_t *sb, const char *s, size_t n)
{
    sb_reserve(sb, n);
    memcpy(sb->base + sb->len, s, n);
    sb->len += n;
    sb->base[sb->len] = '\0';
}

__attribute__((format(printf, 2, 3))) static void
sb_printf(strbuf_t *sb, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        rm_fatal("stats: vsnprintf failed");
    sb_reserve(sb, (size_t)n);
    va_start(ap, fmt);
    vsnprintf(sb->base + sb->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    sb->len += (size_t)n;
}

/* label values come from configuration, so they may hold anything; the 0.0.4 format escapes only these three */
static void
sb_append_label_value(strbuf_t *sb, const char *v)
{
    for (; *v != '\0'; ++v) {
        switch (*v) {
        case '\\':
            sb_append(sb, "\\\\", 2);
            break;
        case '"':
            sb_append(sb, "\\\"", 2);
            break;
        case '\n':
            sb_append(sb, "\\n", 2);
            break;
        default:
            sb_append(sb, v, 1);
            break;
        }
    }
}

/* One series of a family: an extra label (already formatted, or NULL) and the uint64_t field it reads. */
typedef struct st_series_t {
    const char *extra_label;
    size_t offset;
} series_t;

#define MAX_SERIES 8

typedef struct st_family_t {
    const char *name;
    const char *help;
    int is_gauge;
    series_t series[MAX_SERIES];
} family_t;

#define LFIELD(f) offsetof(rm_listener_stats_t, f)
#define CFIELD(f) offsetof(rm_cluster_stats_t, f)
#define CLASS(FIELD, i, text)                                                                                                      \
    {                                                                                                                              \
        "status_class=\"" text "\"", FIELD(rs_by_class[i])                                                                         \
    }
#define BY_CLASS(FIELD)                                                                                                            \
    {                                                                                                                              \
        CLASS(FIELD, 0, "1xx"), CLASS(FIELD, 1, "2xx"), CLASS(FIELD, 2, "3xx"), CLASS(FIELD, 3, "4xx"), CLASS(FIELD, 4, "5xx")     \
    }

/* A series with offset 0 ends the list: offset 0 is `name`, never a counter. */
static const family_t listener_families[] = {
    {"remora_downstream_connections_total", "Downstream connections accepted.", 0, {{NULL, LFIELD(cx_total)}}},
    {"remora_downstream_connections_active", "Downstream connections open.", 1, {{NULL, LFIELD(cx_active)}}},
    {"remora_downstream_connections_by_protocol_total",
     "Downstream connections by detected protocol.",
     0,
     {{"protocol=\"http1\"", LFIELD(cx_http1)}, {"protocol=\"h2\"", LFIELD(cx_h2)}}},
    {"remora_downstream_connections_tls_total", "Downstream connections over TLS.", 0, {{NULL, LFIELD(cx_tls)}}},
    {"remora_downstream_requests_total", "Downstream requests received.", 0, {{NULL, LFIELD(rq_total)}}},
    {"remora_downstream_requests_active", "Downstream requests in flight.", 1, {{NULL, LFIELD(rq_active)}}},
    {"remora_downstream_responses_total", "Responses sent downstream, by status class.", 0, BY_CLASS(LFIELD)},
    {"remora_downstream_resets_total", "Downstream streams ended by a reset instead of a response.", 0, {{NULL, LFIELD(rs_reset)}}},
    {"remora_downstream_protocol_errors_total", "Malformed downstream requests.", 0, {{NULL, LFIELD(rq_protocol_error)}}},
    {"remora_downstream_no_route_total", "Downstream requests that matched no route.", 0, {{NULL, LFIELD(rq_no_route)}}},
    {"remora_downstream_timeouts_total",
     "Downstream requests that hit their deadline (the route timeout, or a smaller grpc-timeout).",
     0,
     {{NULL, LFIELD(rq_timeout)}}},
    {"remora_downstream_faults_total",
     "Requests delayed or aborted by fault injection.",
     0,
     {{"kind=\"delay\"", LFIELD(fault_delay)}, {"kind=\"abort\"", LFIELD(fault_abort)}}},
    {"remora_downstream_mirrors_total",
     "Mirrored requests started, and mirrors skipped because the body was over the replay bound.",
     0,
     {{"result=\"sent\"", LFIELD(mirror_sent)}, {"result=\"body_too_large\"", LFIELD(mirror_body_too_large)}}},
    {"remora_downstream_bytes_total",
     "Bytes received from and sent to downstream.",
     0,
     {{"direction=\"rx\"", LFIELD(bytes_rx)}, {"direction=\"tx\"", LFIELD(bytes_tx)}}},
};

static const family_t cluster_families[] = {
    {"remora_upstream_connections_total", "Upstream connections opened.", 0, {{NULL, CFIELD(cx_total)}}},
    {"remora_upstream_connections_active", "Upstream connections open.", 1, {{NULL, CFIELD(cx_active)}}},
    {"remora_upstream_connect_failures_total",
     "Upstream connect errors, timeouts and TLS handshake failures.",
     0,
     {{NULL, CFIELD(cx_connect_fail)}}},
    {"remora_upstream_requests_total", "Requests sent upstream.", 0, {{NULL, CFIELD(rq_total)}}},
    {"remora_upstream_requests_active", "Upstream requests in flight.", 1, {{NULL, CFIELD(rq_active)}}},
    {"remora_upstream_responses_total", "Responses received from upstream, by status class.", 0, BY_CLASS(CFIELD)},
    {"remora_upstream_resets_total", "Upstream streams reset or connections lost mid-request.", 0, {{NULL, CFIELD(rq_reset)}}},
    {"remora_upstream_unavailable_total",
     "Requests answered locally because no upstream could be reached.",
     0,
     {{NULL, CFIELD(rq_unavailable)}}},
    {"remora_upstream_retries_total",
     "Retries sent upstream, by reason.",
     0,
     {{"reason=\"connect_failure\"", CFIELD(rq_retry[0])},
      {"reason=\"refused_stream\"", CFIELD(rq_retry[1])},
      {"reason=\"reset\"", CFIELD(rq_retry[2])},
      {"reason=\"per_try_timeout\"", CFIELD(rq_retry[3])},
      {"reason=\"http_status\"", CFIELD(rq_retry[4])},
      {"reason=\"grpc_status\"", CFIELD(rq_retry[5])}}},
    {"remora_upstream_retry_budget_exhausted_total",
     "Retries not sent because the cluster's retry budget was spent.",
     0,
     {{NULL, CFIELD(rq_retry_budget_exhausted)}}},
    {"remora_upstream_retry_not_replayable_total",
     "Requests not retried because their body outgrew the replay buffer.",
     0,
     {{NULL, CFIELD(rq_retry_not_replayable)}}},
    {"remora_upstream_retry_limit_exceeded_total",
     "Failures returned downstream because the route's retry attempts were used up.",
     0,
     {{NULL, CFIELD(rq_retry_limit_exceeded)}}},
    {"remora_upstream_retry_success_total", "Requests answered by a retry.", 0, {{NULL, CFIELD(rq_retry_success)}}},
    {"remora_upstream_refused_resends_total",
     "Requests re-sent once because the upstream never processed them (refused stream, stale keep-alive connection).",
     0,
     {{NULL, CFIELD(rq_refused_resend)}}},
    {"remora_upstream_per_try_timeouts_total",
     "Tries abandoned at their per-try timeout.",
     0,
     {{NULL, CFIELD(rq_per_try_timeout)}}},
    {"remora_upstream_overflow_total",
     "Requests refused at once by a circuit breaker of the cluster, by limit.",
     0,
     {{"limit=\"connections\"", CFIELD(rq_overflow[0])},
      {"limit=\"pending\"", CFIELD(rq_overflow[1])},
      {"limit=\"requests\"", CFIELD(rq_overflow[2])},
      {"limit=\"retries\"", CFIELD(rq_overflow[3])}}},
    {"remora_upstream_outlier_ejections_total", "Endpoints ejected by outlier detection.", 0, {{NULL, CFIELD(outlier_ejections)}}},
    {"remora_upstream_bytes_total",
     "Bytes received from and sent to upstream.",
     0,
     {{"direction=\"rx\"", CFIELD(bytes_rx)}, {"direction=\"tx\"", CFIELD(bytes_tx)}}},
};

/* Sums exactly the fields the family table renders, so a new counter is declared in one place. */
static void
add_block(void *dst, const void *src, const family_t *families, size_t num_families)
{
    for (size_t f = 0; f != num_families; ++f) {
        for (size_t i = 0; i != MAX_SERIES && families[f].series[i].offset != 0; ++i) {
            size_t off = families[f].series[i].offset;
            *(uint64_t *)((char *)dst + off) += RM_STAT_LOAD(*(const uint64_t *)((const char *)src + off));
        }
    }
}

#define NUM_FAMILIES(t) (sizeof(t) / sizeof((t)[0]))

/* Summed blocks keyed by name; `name` points into a worker's block, which lives until rm_stats_destroy. */
typedef struct st_sum_vec_t {
    void *entries;
    size_t size, capacity, elem_size;
} sum_vec_t;

static void *
sum_get(sum_vec_t *v, const char *name)
{
    size_t i;
    for (i = 0; i != v->size; ++i) {
        char **e = (char **)((char *)v->entries + i * v->elem_size);
        if (strcmp(*e, name) == 0)
            return e;
    }
    if (v->size == v->capacity) {
        v->capacity = v->capacity == 0 ? 8 : v->capacity * 2;
        v->entries = rm_realloc(v->entries, v->capacity * v->elem_size);
    }
    char **e = (char **)((char *)v->entries + v->size++ * v->elem_size);
    memset(e, 0, v->elem_size);
    *e = (char *)name;
    return e;
}

static int
cmp_by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void
collect(rm_stats_t *const *workers, size_t num_workers, sum_vec_t *listeners, sum_vec_t *clusters)
{
    size_t i;

    listeners->elem_size = sizeof(rm_listener_stats_t);
    clusters->elem_size = sizeof(rm_cluster_stats_t);
    for (i = 0; i != num_workers; ++i) {
        rm_stats_t *w = workers[i];
        if (w == NULL)
            continue;
        pthread_mutex_lock(&w->_mutex);
        for (rm_listener_stats_t *src = w->_listeners; src != NULL; src = src->_next) {
            rm_listener_stats_t *dst = sum_get(listeners, src->name);
            add_block(dst, src, listener_families, NUM_FAMILIES(listener_families));
            for (size_t c = 0; c != RM_STAT_MAX_CAUSES; ++c)
                dst->local_replies[c] += RM_STAT_LOAD(src->local_replies[c]);
        }
        for (rm_cluster_stats_t *src = w->_clusters; src != NULL; src = src->_next) {
            add_block(sum_get(clusters, src->name), src, cluster_families, NUM_FAMILIES(cluster_families));
        }
        pthread_mutex_unlock(&w->_mutex);
    }
    /* names are unique within the vector, so any sort is stable; sorting makes the output independent of creation order */
    if (listeners->size != 0)
        qsort(listeners->entries, listeners->size, listeners->elem_size, cmp_by_name);
    if (clusters->size != 0)
        qsort(clusters->entries, clusters->size, clusters->elem_size, cmp_by_name);
}

static void
render_header(strbuf_t *sb, const char *name, const char *help, int is_gauge)
{
    sb_printf(sb, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, is_gauge ? "gauge" : "counter");
}

static void
render_families(strbuf_t *sb, const family_t *families, size_t num_families, const char *label, const sum_vec_t *sums)
{
    size_t f, i, s;

    for (f = 0; f != num_families; ++f) {
        const family_t *fam = families + f;
        render_header(sb, fam->name, fam->help, fam->is_gauge);
        for (i = 0; i != sums->size; ++i) {
            const char *entry = (const char *)sums->entries + i * sums->elem_size;
            for (s = 0; s != MAX_SERIES && fam->series[s].offset != 0; ++s) {
                uint64_t value = *(const uint64_t *)(entry + fam->series[s].offset);
                sb_printf(sb, "%s{%s=\"", fam->name, label);
                sb_append_label_value(sb, *(char *const *)entry);
                sb_append(sb, "\"", 1);
                if (fam->series[s].extra_label != NULL)
                    sb_printf(sb, ",%s", fam->series[s].extra_label);
                /* gauges are incremented and decremented independently on each worker; the sum is what is meaningful */
                if (fam->is_gauge)
                    sb_printf(sb, "} %" PRId64 "\n", (int64_t)value);
                else
                    sb_printf(sb, "} %" PRIu64 "\n", value);
            }
        }
    }
}

#define MAX_EXTRA_RENDERERS 8
static char *(*extra_renderers[MAX_EXTRA_RENDERERS])(void);
static size_t num_extra_renderers;

void
rm_stats_register_renderer(char *(*render)(void))
{
    if (num_extra_renderers == MAX_EXTRA_RENDERERS)
        rm_fatal("too many metric renderers");
    extra_renderers[num_extra_renderers++] = render;
}

void
rm_stats_fprint_label_value(FILE *fp, const char *v)
{
    for (; *v != '\0'; ++v) {
        if (*v == '\\' || *v == '"')
            fprintf(fp, "\\%c", *v);
        else if (*v == '\n')
            fputs("\\n", fp);
        else
            fputc(*v, fp);
    }
}

static const char *const *cause_names;
static size_t num_cause_names;

void
rm_stats_set_cause_names(const char *const *names, size_t n)
{
    cause_names = names;
    num_cause_names = n < RM_STAT_MAX_CAUSES ? n : RM_STAT_MAX_CAUSES;
}

static void
render_local_replies(strbuf_t *sb, const sum_vec_t *sums)
{
    if (num_cause_names == 0)
        return;
    render_header(sb, "remora_downstream_local_replies_total", "Responses the proxy made up on a request's behalf, by cause.", 0);
    for (size_t i = 0; i != sums->size; ++i) {
        const rm_listener_stats_t *l = (const rm_listener_stats_t *)((const char *)sums->entries + i * sums->elem_size);
        for (size_t c = 0; c != num_cause_names; ++c) {
            sb_printf(sb, "remora_downstream_local_replies_total{listener=\"");
            sb_append_label_value(sb, l->name);
            sb_printf(sb, "\",cause=\"%s\"} %" PRIu64 "\n", cause_names[c], l->local_replies[c]);
        }
    }
}

static double process_start_time;
static pthread_once_t process_start_once = PTHREAD_ONCE_INIT;

/* /proc/self/stat gives the start in clock ticks since boot and /proc/stat the boot time; fall back to "now". */
static void
init_process_start_time(void)
{
    unsigned long long start_ticks = 0, btime = 0;
    char buf[1024], *p;
    FILE *fp;
    int ok = 0;

    if ((fp = fopen("/proc/self/stat", "r")) != NULL) {
        size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
        buf[n] = '\0';
        fclose(fp);
        /* the command name may contain spaces and parentheses: fields are counted after the last ')' */
        if ((p = strrchr(buf, ')')) != NULL) {
            int field = 2;
            for (; *p != '\0' && field < 22; ++p)
                if (*p == ' ')
                    ++field;
            ok = field == 22 && sscanf(p, "%llu", &start_ticks) == 1;
        }
    }
    if (ok && (fp = fopen("/proc/stat", "r")) != NULL) {
        ok = 0;
        while (fgets(buf, sizeof(buf), fp) != NULL)
            if (sscanf(buf, "btime %llu", &btime) == 1) {
                ok = 1;
                break;
            }
        fclose(fp);
    }
    long hz = sysconf(_SC_CLK_TCK);
    if (ok && hz > 0) {
        process_start_time = (double)btime + (double)start_ticks / (double)hz;
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        process_start_time = (double)ts.tv_sec + ts.tv_nsec / 1e9;
    }
}

static uint64_t
resident_memory_bytes(void)
{
    unsigned long long size, resident;
    FILE *fp = fopen("/proc/self/statm", "r");
    int n;

    if (fp == NULL)
        return 0;
    n = fscanf(fp, "%llu %llu", &size, &resident);
    fclose(fp);
    long page = sysconf(_SC_PAGESIZE);
    return n == 2 && page > 0 ? (uint64_t)resident * (uint64_t)page : 0;
}

char *
rm_stats_render_prometheus(rm_stats_t *const *workers, size_t num_workers, uint64_t config_generation)
{
    sum_vec_t listeners, clusters;
    strbuf_t sb;
    memset(&listeners, 0, sizeof(listeners));
    memset(&clusters, 0, sizeof(clusters));
    memset(&sb, 0, sizeof(sb));

    pthread_once(&process_start_once, init_process_start_time);
    collect(workers, num_workers, &listeners, &clusters);
    sb_reserve(&sb, 0);
    sb.base[0] = '\0';

    render_families(&sb, listener_families, sizeof(listener_families) / sizeof(listener_families[0]), "listener", &listeners);
    render_local_replies(&sb, &listeners);
    render_families(&sb, cluster_families, sizeof(cluster_families) / sizeof(cluster_families[0]), "cluster", &clusters);
    for (size_t i = 0; i != num_extra_renderers; ++i) {
        char *text = extra_renderers[i]();
        if (text != NULL) {
            sb_append(&sb, text, strlen(text));
            free(text);
        }
    }

    render_header(&sb, "remora_config_generation", "Generation of the configuration snapshot in service.", 1);
    sb_printf(&sb, "remora_config_generation %" PRIu64 "\n", config_generation);
    render_header(&sb, "remora_process_start_time_seconds", "Start time of the process since the Unix epoch in seconds.", 1);
    sb_printf(&sb, "remora_process_start_time_seconds %.2f\n", process_start_time);
    render_header(&sb, "remora_process_resident_memory_bytes", "Resident memory size in bytes.", 1);
    sb_printf(&sb, "remora_process_resident_memory_bytes %" PRIu64 "\n", resident_memory_bytes());

    free(listeners.entries);
    free(clusters.entries);
    return sb.base;
}
