#include <stdio.h>
#include <string.h>
#include "core/worker.h"
#include "proxy/attempt.h"
#include "proxy/stream.h"
#include "router/router.h"
#include "router/router_filter.h"
#include "upstream/cluster.h"

/*
 * Route matching
 */

static rm_filter_status_t
route_on_request_head(rm_stream_t *s, void *state)
{
    if (s->config->awaiting_snapshot) {
        rm_stream_reply(s, RM_LOCAL_NOT_CONFIGURED, NULL);
        return RM_FILTER_STOP;
    }
    s->route = rm_router_match(s->listener, &s->req);
    if (s->route != NULL)
        return RM_FILTER_CONTINUE;
    RM_STAT_INC(s->lstats->rq_no_route);
    char msg[512];
    snprintf(msg, sizeof(msg), "no route for authority '%.*s' path '%.*s'",
             (int)(s->req.authority.len < 200 ? s->req.authority.len : 200), s->req.authority.base,
             (int)(s->req.path.len < 200 ? s->req.path.len : 200), s->req.path.base);
    if (s->config->num_clusters == 0)
        snprintf(msg + strlen(msg), sizeof(msg) - strlen(msg), ": no services are configured%s",
                 s->config->version == NULL ? "" : " in the control plane's snapshot");
    RM_STAT_INC(s->lstats->local_replies[RM_LOCAL_NO_ROUTE]);
    rm_stream_send_local_reply(s, 404, RM_GRPC_UNIMPLEMENTED, msg);
    return RM_FILTER_STOP;
}

const rm_filter_t rm_route_filter = {
    .name = "route",
    .on_request_head = route_on_request_head,
};

/*
 * The router
 */

typedef struct st_router_t {
    rm_stream_t *s;
    rm_cluster_t *cluster;
    /** the try whose response goes (or may go) downstream */
    rm_attempt_t *primary;
    /** request timeout (all tries) */
    rm_timer_t timeout;
    unsigned tries;
} router_t;

static const rm_attempt_owner_ops_t owner_ops;

static void
stop_timeout(router_t *r)
{
    if (rm_timer_is_linked(&r->timeout))
        rm_timer_unlink(&r->timeout);
}

static void
on_timeout(rm_timer_t *entry)
{
    router_t *r = H2O_STRUCT_FROM_MEMBER(router_t, timeout, entry);
    rm_stream_t *s = r->s;
    if (s->resp_body.eos)
        return;
    rm_attempt_t *a = r->primary;
    r->primary = NULL;
    if (s->down == NULL) {
        /* nobody is waiting: just stop the upstream */
        if (a != NULL)
            rm_attempt_cancel(a);
        return;
    }
    RM_STAT_INC(s->lstats->rq_timeout);
    if (a != NULL)
        rm_attempt_cancel(a);
    if (!s->resp_head_sent) {
        rm_stream_reply(s, RM_LOCAL_REQUEST_TIMEOUT, NULL);
        return;
    }
    RM_STAT_INC(s->lstats->local_replies[RM_LOCAL_REQUEST_TIMEOUT]);
    s->req_discard = 1;
    rm_stream_abort_response(s, RM_GRPC_DEADLINE_EXCEEDED, RM_H2_CANCEL, "request timeout: the response did not complete in time");
}

static void
start_try(router_t *r)
{
    rm_stream_t *s = r->s;
    rm_attempt_t *a = rm_attempt_create(s, &owner_ops, r, rm_cluster_stats(r->cluster));
    a->number = r->tries++;
    r->primary = a;
    rm_cluster_dispatch(r->cluster, a);
}

static rm_filter_status_t
router_on_request_head(rm_stream_t *s, void *state)
{
    router_t *r = state;
    r->s = s;
    if (s->route->cluster_index == RM_CONFIG_NO_CLUSTER) {
        rm_stream_reply_status(s, RM_LOCAL_NO_CLUSTER, 500, RM_GRPC_INTERNAL, "the route has no backend");
        return RM_FILTER_STOP;
    }
    rm_cluster_t *cluster = rm_cluster_lookup(s->worker, s->config, rm_router_pick_cluster(s->route, rm_worker_random(s->worker)));
    r->cluster = rm_cluster_acquire(cluster);
    r->timeout.cb = on_timeout;
    if (s->route->timeout_ms != 0)
        rm_worker_timer_start(s->worker, &r->timeout, s->route->timeout_ms);
    start_try(r);
    return RM_FILTER_STOP;
}

static void
router_on_request_body(rm_stream_t *s, void *state)
{
    router_t *r = state;
    if (r->primary != NULL)
        rm_attempt_notify_req_body(r->primary);
}

static void
router_on_response_consumed(rm_stream_t *s, void *state, size_t n)
{
    router_t *r = state;
    if (r->primary != NULL && r->primary->committed)
        rm_attempt_notify_resp_consumed(r->primary, n);
}

static void
router_on_abort(rm_stream_t *s, void *state)
{
    router_t *r = state;
    stop_timeout(r);
    rm_attempt_t *a = r->primary;
    r->primary = NULL;
    if (a != NULL)
        rm_attempt_cancel(a);
}

static void
router_on_destroy(rm_stream_t *s, void *state)
{
    router_t *r = state;
    stop_timeout(r);
    if (r->cluster != NULL)
        rm_cluster_release(r->cluster);
}

/* The exchange upstream is over: the request pipe has no reader any more. */
static void
finish_primary(router_t *r, rm_attempt_t *a)
{
    if (r->primary == a)
        r->primary = NULL;
    r->s->req_discard = 1;
    rm_attempt_release(a);
}

static void
on_head(rm_attempt_t *a)
{
    rm_attempt_commit(a);
}

static void
on_body_start(rm_attempt_t *a)
{
    rm_attempt_commit(a);
}

static void
on_end(rm_attempt_t *a, rm_headers_t *trailers)
{
    router_t *r = a->owner_ctx;
    if (a->mirror) {
        rm_attempt_release(a);
        return;
    }
    rm_attempt_commit(a);
    rm_stream_on_response_end(r->s, trailers);
    stop_timeout(r);
    finish_primary(r, a);
}

static void
on_complete(rm_attempt_t *a)
{
    router_t *r = a->owner_ctx;
    stop_timeout(r);
    finish_primary(r, a);
}

static void
on_error(rm_attempt_t *a, rm_upstream_error_t err, uint32_t h2_error, const char *detail)
{
    router_t *r = a->owner_ctx;
    rm_stream_t *s = r->s;
    if (a->mirror) {
        rm_attempt_release(a);
        return;
    }
    int committed = a->committed;
    finish_primary(r, a);
    if (!committed) {
        stop_timeout(r);
        switch (err) {
        case RM_UPSTREAM_ERR_CONNECT:
            rm_stream_reply(s, RM_LOCAL_UNREACHABLE, detail);
            break;
        case RM_UPSTREAM_ERR_TIMEOUT:
            rm_stream_reply(s, RM_LOCAL_CONNECT_TIMEOUT, detail);
            break;
        case RM_UPSTREAM_ERR_REFUSED:
            rm_stream_reply(s, RM_LOCAL_UPSTREAM_REFUSED, detail);
            break;
        case RM_UPSTREAM_ERR_RESET: {
            char msg[512];
            snprintf(msg, sizeof(msg), "%s%s%s", rm_local_replies[RM_LOCAL_UPSTREAM_RESET].message, detail != NULL ? ": " : "",
                     detail != NULL ? detail : "");
            if (h2_error == RM_H2_REFUSED_STREAM)
                rm_stream_reply_status(s, RM_LOCAL_UPSTREAM_RESET, 503, RM_GRPC_UNAVAILABLE, msg);
            else
                rm_stream_reply_status(s, RM_LOCAL_UPSTREAM_RESET, 502, rm_grpc_status_from_h2_error(h2_error), msg);
            break;
        }
        case RM_UPSTREAM_ERR_CLOSED:
            rm_stream_reply(s, RM_LOCAL_UPSTREAM_CLOSED, detail);
            break;
        case RM_UPSTREAM_ERR_PROTOCOL:
            rm_stream_reply(s, RM_LOCAL_UPSTREAM_PROTOCOL, detail);
            break;
        }
        return;
    }
    /* the response started: end it as the protocol requires */
    stop_timeout(r);
    int grpc_status = err == RM_UPSTREAM_ERR_RESET    ? rm_grpc_status_from_h2_error(h2_error)
                      : err == RM_UPSTREAM_ERR_CLOSED ? RM_GRPC_UNAVAILABLE
                                                      : RM_GRPC_INTERNAL;
    char msg[512];
    snprintf(msg, sizeof(msg), "upstream %s mid-stream%s%s", err == RM_UPSTREAM_ERR_RESET ? "reset" : "connection lost",
             detail != NULL ? ": " : "", detail != NULL ? detail : "");
    rm_stream_abort_response(s, grpc_status,
                             err == RM_UPSTREAM_ERR_RESET && h2_error != RM_H2_NO_ERROR ? h2_error : RM_H2_INTERNAL_ERROR, msg);
}

static const rm_attempt_owner_ops_t owner_ops = {
    .on_head = on_head,
    .on_body_start = on_body_start,
    .on_end = on_end,
    .on_complete = on_complete,
    .on_error = on_error,
};

const rm_filter_t rm_router_filter = {
    .name = "router",
    .state_size = sizeof(router_t),
    .on_request_head = router_on_request_head,
    .on_request_body = router_on_request_body,
    .on_response_consumed = router_on_response_consumed,
    .on_abort = router_on_abort,
    .on_destroy = router_on_destroy,
};
