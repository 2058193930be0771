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
#include "obs/process.h"
#include "obs/series.h"
#include "obs/stats.h"

const char *const rm_stat_attempt_kind_names[RM_STAT_ATTEMPT_KINDS] = {"first", "retry", "mirror"};
/* the error names follow rm_upstream_error_t (1..7) */
const char *const rm_stat_attempt_outcome_names[RM_STAT_ATTEMPT_OUTCOMES] = {"1xx",
                                                                             "2xx",
                                                                             "3xx",
                                                                             "4xx",
                                                                             "5xx",
                                                                             "grpc_error",
                                                                             "connect_failure",
                                                                             "connect_timeout",
                                                                             "reset",
                                                                             "closed",
                                                                             "protocol_error",
                                                                             "refused",
                                                                             "overflow",
                                                                             "cancelled"};

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
    rm_series_free_worker(stats);
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
    {"remora_detect_total",
     "Protocol detection outcomes of accepted connections (docs/transparent.md).",
     0,
     {{"result=\"http1\"", LFIELD(detect[0])},
      {"result=\"h2\"", LFIELD(detect[1])},
      {"result=\"tls\"", LFIELD(detect[2])},
      {"result=\"opaque\"", LFIELD(detect[3])},
      {"result=\"timeout\"", LFIELD(detect[4])},
      {"result=\"skipped\"", LFIELD(detect[5])}}},
    {"remora_downstream_h2_abuse_total",
     "HTTP/2 connections closed with GOAWAY ENHANCE_YOUR_CALM by an abuse limit, by kind (docs/hardening.md).",
     0,
     {{"kind=\"premature_reset\"", LFIELD(h2_abuse[0])},
      {"kind=\"empty_frames\"", LFIELD(h2_abuse[1])},
      {"kind=\"priority\"", LFIELD(h2_abuse[2])},
      {"kind=\"window_update\"", LFIELD(h2_abuse[3])},
      {"kind=\"outbound_control\"", LFIELD(h2_abuse[4])},
      {"kind=\"outbound_frames\"", LFIELD(h2_abuse[5])}}},
    {"remora_downstream_limit_total",
     "Downstream requests answered (414, 431, 408, 413) or reset by a request limit, by kind (docs/hardening.md).",
     0,
     {{"kind=\"uri_too_long\"", LFIELD(limit[RM_STAT_LIMIT_URI_TOO_LONG])},
      {"kind=\"headers_too_large\"", LFIELD(limit[RM_STAT_LIMIT_HEADERS_TOO_LARGE])},
      {"kind=\"header_timeout\"", LFIELD(limit[RM_STAT_LIMIT_HEADER_TIMEOUT])},
      {"kind=\"body_too_large\"", LFIELD(limit[RM_STAT_LIMIT_BODY_TOO_LARGE])}}},
    {"remora_downstream_connections_refused_total",
     "Downstream connections closed at accept, by reason (max_connections: the listener's limit was reached).",
     0,
     {{"reason=\"max_connections\"", LFIELD(cx_refused_max)}}},
    {"remora_tcp_connections_total", "Connections relayed as opaque TCP.", 0, {{NULL, LFIELD(tcp_cx_total)}}},
    {"remora_tcp_connections_active", "Opaque TCP connections open.", 1, {{NULL, LFIELD(tcp_cx_active)}}},
    {"remora_upgrades_total",
     "HTTP/1.1 Upgrade (WebSocket) requests: switched to a tunnel by a 101, or answered with another status.",
     0,
     {{"result=\"switched\"", LFIELD(upgrade_switched)}, {"result=\"refused\"", LFIELD(upgrade_refused)}}},
    {"remora_upgrades_active", "Upgraded (tunnelled) downstream connections open.", 1, {{NULL, LFIELD(upgrade_active)}}},
    {"remora_tcp_connect_failures_total",
     "Opaque TCP connections closed because the upstream could not be reached.",
     0,
     {{NULL, LFIELD(tcp_connect_fail)}}},
    {"remora_tcp_idle_timeouts_total", "Opaque TCP connections closed by the idle timeout.", 0, {{NULL, LFIELD(tcp_idle_timeout)}}},
    {"remora_tcp_bytes_total",
     "Opaque TCP bytes received from the downstream (rx) and sent to it (tx).",
     0,
     {{"direction=\"rx\"", LFIELD(tcp_bytes_rx)}, {"direction=\"tx\"", LFIELD(tcp_bytes_tx)}}},
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
    {"remora_upstream_no_healthy_endpoint_total",
     "Requests failed fast because every endpoint of the cluster was unhealthy (health checks) or ejected (outlier detection).",
     0,
     {{NULL, CFIELD(rq_no_healthy)}}},
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
            rm_cluster_stats_t *dst = sum_get(clusters, src->name);
            add_block(dst, src, cluster_families, NUM_FAMILIES(cluster_families));
            for (size_t k = 0; k != RM_STAT_ATTEMPT_KINDS; ++k)
                for (size_t o = 0; o != RM_STAT_ATTEMPT_OUTCOMES; ++o)
                    dst->attempts[k][o] += RM_STAT_LOAD(src->attempts[k][o]);
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

#define MAX_EXTRA_RENDERERS 16
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

/* Only the series that have counted something: once there, a series stays (counters never go down). */
static void
render_attempts(strbuf_t *sb, const sum_vec_t *sums)
{
    render_header(sb, "remora_upstream_attempts_total",
                  "Upstream attempts ended, by kind (first, retry, mirror) and outcome (status class, grpc_error, failure, "
                  "cancelled).",
                  0);
    for (size_t i = 0; i != sums->size; ++i) {
        const rm_cluster_stats_t *c = (const rm_cluster_stats_t *)((const char *)sums->entries + i * sums->elem_size);
        for (size_t k = 0; k != RM_STAT_ATTEMPT_KINDS; ++k) {
            for (size_t o = 0; o != RM_STAT_ATTEMPT_OUTCOMES; ++o) {
                if (c->attempts[k][o] == 0)
                    continue;
                sb_printf(sb, "remora_upstream_attempts_total{backend=\"");
                sb_append_label_value(sb, c->name);
                sb_printf(sb, "\",kind=\"%s\",outcome=\"%s\"} %" PRIu64 "\n", rm_stat_attempt_kind_names[k],
                          rm_stat_attempt_outcome_names[o], c->attempts[k][o]);
            }
        }
    }
}

/*
 * OpenMetrics from the 0.0.4 text of the counter blocks and the registered renderers: a counter
 * family is named without the _total its samples carry (one whose samples lack it becomes
 * `unknown`), HELP also escapes '"', and comments other than HELP and TYPE, and blank lines, go.
 */
static void
to_openmetrics(strbuf_t *out, const char *text)
{
    const char *help_name = NULL, *help_text = NULL;
    size_t help_name_len = 0, help_text_len = 0;

    for (const char *line = text; *line != '\0';) {
        const char *eol = strchr(line, '\n');
        size_t len = eol != NULL ? (size_t)(eol - line) : strlen(line);
        const char *next = eol != NULL ? eol + 1 : line + len;
        if (len > 7 && memcmp(line, "# HELP ", 7) == 0) {
            const char *sp = memchr(line + 7, ' ', len - 7);
            help_name = line + 7;
            help_name_len = sp != NULL ? (size_t)(sp - help_name) : len - 7;
            help_text = sp != NULL ? sp + 1 : line + len;
            help_text_len = (size_t)(line + len - help_text);
        } else if (len > 7 && memcmp(line, "# TYPE ", 7) == 0) {
            const char *name = line + 7, *sp = memchr(name, ' ', len - 7);
            size_t name_len = sp != NULL ? (size_t)(sp - name) : len - 7;
            const char *type = sp != NULL ? sp + 1 : "untyped";
            size_t type_len = sp != NULL ? (size_t)(line + len - type) : 7;
            size_t family_len = name_len;
            if (type_len == 7 && memcmp(type, "counter", 7) == 0) {
                if (name_len > 6 && memcmp(name + name_len - 6, "_total", 6) == 0)
                    family_len -= 6;
                else
                    type = "unknown", type_len = 7;
            } else if (type_len == 7 && memcmp(type, "untyped", 7) == 0) {
                type = "unknown";
            }
            if (help_name != NULL && help_name_len == name_len && memcmp(help_name, name, name_len) == 0) {
                sb_append(out, "# HELP ", 7);
                sb_append(out, name, family_len);
                sb_append(out, " ", 1);
                for (size_t i = 0; i != help_text_len; ++i)
                    sb_append(out, help_text[i] == '"' ? "\\\"" : help_text + i, help_text[i] == '"' ? 2 : 1);
                sb_append(out, "\n", 1);
            }
            help_name = NULL;
            sb_append(out, "# TYPE ", 7);
            sb_append(out, name, family_len);
            sb_append(out, " ", 1);
            sb_append(out, type, type_len);
            sb_append(out, "\n", 1);
        } else if (len != 0 && line[0] != '#') {
            sb_append(out, line, len);
            sb_append(out, "\n", 1);
        }
        line = next;
    }
}

static char *
capture(void (*render)(FILE *fp, void *arg), void *arg)
{
    char *text = NULL;
    size_t size = 0;
    FILE *fp = open_memstream(&text, &size);
    if (fp == NULL)
        rm_fatal("open_memstream failed");
    render(fp, arg);
    fclose(fp);
    return text;
}

static void
render_process_cb(FILE *fp, void *arg)
{
    rm_obs_render_process(fp);
}

typedef struct st_series_args_t {
    rm_stats_t *const *workers;
    size_t num_workers;
    int openmetrics;
} series_args_t;

static void
render_series_cb(FILE *fp, void *arg)
{
    series_args_t *a = arg;
    rm_series_render(fp, a->workers, a->num_workers, a->openmetrics);
}

char *
rm_stats_render_prometheus(rm_stats_t *const *workers, size_t num_workers, uint64_t config_generation)
{
    return rm_stats_render(workers, num_workers, config_generation, RM_STATS_PROMETHEUS);
}

char *
rm_stats_render(rm_stats_t *const *workers, size_t num_workers, uint64_t config_generation, rm_stats_format_t format)
{
    sum_vec_t listeners, clusters;
    strbuf_t sb;
    memset(&listeners, 0, sizeof(listeners));
    memset(&clusters, 0, sizeof(clusters));
    memset(&sb, 0, sizeof(sb));

    collect(workers, num_workers, &listeners, &clusters);
    sb_reserve(&sb, 0);
    sb.base[0] = '\0';

    render_families(&sb, listener_families, sizeof(listener_families) / sizeof(listener_families[0]), "listener", &listeners);
    render_local_replies(&sb, &listeners);
    render_families(&sb, cluster_families, sizeof(cluster_families) / sizeof(cluster_families[0]), "cluster", &clusters);
    render_attempts(&sb, &clusters);
    for (size_t i = 0; i != num_extra_renderers; ++i) {
        char *text = extra_renderers[i]();
        if (text != NULL) {
            sb_append(&sb, text, strlen(text));
            free(text);
        }
    }

    render_header(&sb, "remora_config_generation", "Generation of the configuration snapshot in service.", 1);
    sb_printf(&sb, "remora_config_generation %" PRIu64 "\n", config_generation);
    char *text = capture(render_process_cb, NULL);
    sb_append(&sb, text, strlen(text));
    free(text);

    series_args_t args = {workers, num_workers, format == RM_STATS_OPENMETRICS};
    char *series = capture(render_series_cb, &args);
    if (format == RM_STATS_OPENMETRICS) {
        strbuf_t om;
        memset(&om, 0, sizeof(om));
        sb_reserve(&om, sb.len + strlen(series) + 8);
        om.base[0] = '\0';
        to_openmetrics(&om, sb.base);
        sb_append(&om, series, strlen(series));
        sb_append(&om, "# EOF\n", 6);
        free(sb.base);
        sb = om;
    } else {
        sb_append(&sb, series, strlen(series));
    }
    free(series);

    free(listeners.entries);
    free(clusters.entries);
    return sb.base;
}
