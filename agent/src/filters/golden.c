/*
 * Golden request metrics (golden.h). Everything is decided from stream->info once the stream has
 * ended, so the observer costs one series lookup (a hash of the label values in the worker's own
 * table) and one histogram update per request, and one counter per upstream attempt.
 */
#include <stdio.h>
#include "remora/strutil.h"
#include "obs/histogram.h"
#include "obs/series.h"
#include "obs/stats.h"
#include "proxy/attempt.h"
#include "filters/golden.h"

enum { L_DIRECTION, L_ROUTE, L_BACKEND, L_CLIENT_ID, L_STATUS, L_GRPC, L_CLASSIFICATION, NUM_LABELS };

static const rm_series_family_spec_t spec = {
    .name = "remora_request_duration_seconds",
    .help = "Time from the request head to the end of the response, by outcome.",
    .kind = RM_SERIES_HISTOGRAM,
    .labels = {"direction", "route", "backend", "client_id", "status_code", "grpc_status", "classification"},
    .num_labels = NUM_LABELS,
    .count_name = "remora_responses_total",
    .count_help = "Requests ended, by outcome (no status_code: no response was sent, the stream was reset).",
    .total_name = "remora_requests_total",
    .total_help = "Requests ended (every outcome), by direction, route, backend and mesh mTLS caller.",
    .total_labels = L_CLIENT_ID + 1,
};

static rm_series_family_t *family;
static rm_golden_trace_id_fn trace_id_source;

int
rm_golden_grpc_status_is_failure(int grpc_status)
{
    switch (grpc_status) {
    case 2:  /* UNKNOWN */
    case 4:  /* DEADLINE_EXCEEDED */
    case 13: /* INTERNAL */
    case 14: /* UNAVAILABLE */
    case 15: /* DATA_LOSS */
        return 1;
    default:
        return 0;
    }
}

static const char *
classify(const rm_stream_t *s)
{
    /* the gRPC status decides when there is one (a gRPC error is answered 200); otherwise no response, a
     * response cut short (its end never came: the upstream failed mid-body), or a 5xx */
    if (s->info.grpc_status >= 0)
        return rm_golden_grpc_status_is_failure(s->info.grpc_status) ? "failure" : "success";
    if (s->info.status == 0 || !s->resp_body.eos || s->info.status >= 500)
        return "failure";
    return "success";
}

/* Small non-negative integers as text without snprintf (the request path). */
static const char *
format_uint(char *buf, size_t size, unsigned v)
{
    char *p = buf + size - 1;
    *p = '\0';
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0 && p != buf);
    return p;
}

static void
add_exemplar(rm_stream_t *s, rm_histogram_t *h, unsigned bucket, uint64_t duration_us)
{
    uint8_t trace_id[16];
    if (trace_id_source(s, trace_id))
        rm_histogram_set_exemplar(h, bucket, trace_id, duration_us);
}

static void
on_end(rm_stream_t *s)
{
    const rm_stream_info_t *info = &s->info;
    const char *direction = rm_stream_direction(s);
    const char *route = s->route != NULL && s->route->name != NULL ? s->route->name : "";
    const char *backend = info->backend != NULL ? info->backend : "";
    const char *classification = classify(s);
    unsigned status = info->status > 0 && info->status < 1000 ? (unsigned)info->status : 0;
    unsigned grpc = info->grpc_status >= 0 && info->grpc_status < 100 ? (unsigned)info->grpc_status + 1 : 0;

    /* the strings belong to the stream's snapshot, whose generation is never reused: the generation and
     * their addresses name the label values exactly, so most requests skip hashing them; the caller's identity
     * (the stream's own copy) is named by its 64-bit hash, made once per connection (SPIFFE IDs come from the
     * mesh's CA, a few per workload: two sharing a hash is out of reach) */
    uint64_t ident[RM_SERIES_IDENT_WORDS] = {s->config->generation,
                                             (uintptr_t)direction,
                                             (uintptr_t)route,
                                             (uintptr_t)backend,
                                             (uint64_t)status | (uint64_t)grpc << 16 | (uint64_t)(classification[0] == 'f') << 32,
                                             s->peer_identity_hash};
    rm_series_t *series = rm_series_cached(s->worker->stats, family, ident);
    if (series == NULL) {
        char status_buf[8], grpc_buf[8];
        const char *values[NUM_LABELS];
        values[L_DIRECTION] = direction;
        values[L_ROUTE] = route;
        values[L_BACKEND] = backend;
        values[L_CLIENT_ID] = s->peer_identity != NULL ? s->peer_identity : "";
        values[L_STATUS] = status != 0 ? format_uint(status_buf, sizeof(status_buf), status) : "";
        values[L_GRPC] = grpc != 0 ? format_uint(grpc_buf, sizeof(grpc_buf), grpc - 1) : "";
        values[L_CLASSIFICATION] = classification;
        if ((series = rm_series_get_cached(s->worker->stats, family, ident, values)) == NULL)
            return;
    }
    uint64_t end_us = info->ended_at_us != 0 ? info->ended_at_us : rm_now_us();
    uint64_t duration_us = end_us > s->started_at_us ? end_us - s->started_at_us : 0;
    unsigned bucket = rm_histogram_observe(&series->histogram, duration_us);
    if (trace_id_source != NULL)
        add_exemplar(s, &series->histogram, bucket, duration_us);
}

static void
on_attempt_end(rm_stream_t *s, rm_attempt_t *a)
{
    if (a->cstats == NULL)
        return;
    unsigned kind = a->mirror ? RM_STAT_ATTEMPT_MIRROR : a->number != 0 ? RM_STAT_ATTEMPT_RETRY : RM_STAT_ATTEMPT_FIRST, outcome;
    if (a->error >= RM_UPSTREAM_ERR_CONNECT && a->error <= RM_UPSTREAM_ERR_OVERFLOW)
        outcome = RM_STAT_ATTEMPT_ERROR_BASE + (unsigned)a->error;
    else if (a->grpc_status >= 0 && rm_golden_grpc_status_is_failure(a->grpc_status))
        outcome = RM_STAT_ATTEMPT_GRPC_ERROR;
    else if (a->head_received && a->resp.status >= 100)
        outcome = rm_stat_status_class(a->resp.status);
    else
        outcome = RM_STAT_ATTEMPT_CANCELLED;
    RM_STAT_INC(a->cstats->attempts[kind][outcome]);
}

static const rm_stream_observer_t observer = {
    .on_attempt_end = on_attempt_end,
    .on_end = on_end,
};

void
rm_golden_register(void)
{
    family = rm_series_family_register(&spec);
    rm_stream_register_observer(&observer);
}

void
rm_golden_set_trace_id_source(rm_golden_trace_id_fn fn)
{
    trace_id_source = fn;
}
