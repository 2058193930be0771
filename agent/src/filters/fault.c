#include "core/worker.h"
#include "filters/fault.h"
#include "proxy/stream.h"

typedef struct st_fault_state_t {
    rm_stream_t *s;
    rm_timer_t delay;
} fault_state_t;

static int
chance(rm_stream_t *s, uint32_t per_million)
{
    if (per_million == 0)
        return 0;
    if (per_million >= 1000000)
        return 1;
    return rm_worker_random(s->worker) % 1000000 < per_million;
}

static void
on_delay_expired(rm_timer_t *timer)
{
    fault_state_t *st = H2O_STRUCT_FROM_MEMBER(fault_state_t, delay, timer);
    rm_stream_resume(st->s);
}

static void
abort_request(rm_stream_t *s, const rm_config_fault_t *fault)
{
    /* the configured status for the request's kind, else the one mapped from the other kind's */
    int http_status =
        fault->abort_http_status != 0 ? fault->abort_http_status : rm_http_status_from_grpc_status(fault->abort_grpc_status);
    int grpc_status =
        fault->abort_grpc_status >= 0 ? fault->abort_grpc_status : rm_grpc_status_from_http_status(fault->abort_http_status);
    RM_STAT_INC(s->lstats->fault_abort);
    rm_stream_reply_status(s, RM_LOCAL_FAULT_ABORT, http_status, grpc_status, "fault injected");
}

static rm_filter_status_t
fault_on_request_head(rm_stream_t *s, void *state)
{
    const rm_config_fault_t *fault = s->route->fault;
    if (fault == NULL)
        return RM_FILTER_CONTINUE;

    int can_abort = fault->abort_http_status != 0 || fault->abort_grpc_status >= 0;
    if (can_abort && chance(s, fault->abort_per_million)) {
        abort_request(s, fault);
        return RM_FILTER_STOP;
    }

    if (!chance(s, fault->delay_per_million))
        return RM_FILTER_CONTINUE;
    RM_STAT_INC(s->lstats->fault_delay);
    /* a zero delay holds nothing: going through the wheel would only add a loop iteration */
    if (fault->delay_ms == 0)
        return RM_FILTER_CONTINUE;
    fault_state_t *st = state;
    st->s = s;
    st->delay.cb = on_delay_expired;
    rm_worker_timer_start(s->worker, &st->delay, fault->delay_ms);
    return RM_FILTER_STOP;
}

/* the stream answers locally, lost its client, or is freed: a pending delay must not resume it */
static void
cancel_delay(rm_stream_t *s, void *state)
{
    fault_state_t *st = state;
    rm_timer_unlink(&st->delay);
}

const rm_filter_t rm_fault_filter = {
    .name = "fault",
    .state_size = sizeof(fault_state_t),
    .on_request_head = fault_on_request_head,
    .on_abort = cancel_delay,
    .on_destroy = cancel_delay,
};
