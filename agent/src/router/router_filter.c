/*
 * The routing filters. The router owns the stream's attempts: the try whose response may go
 * downstream (the primary), re-tries of it, and mirrors. Its decisions, in order of precedence:
 *
 *  - A response head, or the trailers of a held gRPC response, is classified by the route's retry
 *    policy; a retryable one is abandoned and the request re-sent after a full-jitter backoff,
 *    while attempts, the cluster's retry budget and the replay buffer allow. Otherwise the attempt
 *    is committed: its response goes downstream and nothing is retried after that.
 *  - A refused request (REFUSED_STREAM, above a GOAWAY's last-stream-id, or a reused HTTP/1.1
 *    connection closed before any response byte for an idempotent method) was never processed: it
 *    is re-sent once on a fresh connection whatever the policy (the keep-alive race).
 *  - Timers: the request deadline (the route timeout, or the client's smaller grpc-timeout), the
 *    per-try timeout, and the stream idle timeout, all on the worker's timer wheel.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "remora/strutil.h"
#include "core/worker.h"
#include "filters/authz.h"
#include "filters/ratelimit.h"
#include "policy/grpc_timeout.h"
#include "policy/retry.h"
#include "proxy/attempt.h"
#include "proxy/stream.h"
#include "obs/stats.h"
#include "config/ondemand.h"
#include "router/router.h"
#include "router/router_filter.h"
#include "upstream/breaker.h"
#include "upstream/cluster.h"
#include "upstream/lb.h"
#include "upstream/outlier.h"

/* Request bodies up to this size are kept for mirrors when the route has no retry policy. */
#define DEFAULT_REPLAY_BYTES 65536

/*
 * Route matching
 */

/* Control-plane mode before the first snapshot: requests wait this long for it (then 503). */
#define RM_FIRST_SNAPSHOT_WAIT_MS 10000

typedef struct st_route_state_t {
    rm_stream_t *s;
    /** in the worker's list of requests waiting for the first snapshot, or with `ondemand` in its list of
     * requests held for on-demand discovery */
    h2o_linklist_t parked;
    rm_timer_t wait;
    unsigned ondemand : 1;
} route_state_t;

/* The route module's state on a worker. */
typedef struct st_route_module_t {
    rm_worker_t *worker;
    /** requests waiting for the first snapshot */
    h2o_linklist_t parked;
    /** requests held for on-demand discovery (config/ondemand.h): num_held of them, at most
     * RM_ONDEMAND_MAX_HELD_PER_WORKER */
    h2o_linklist_t held;
    size_t num_held;
    /** posted by the control thread after a snapshot answered names: route the held requests again */
    rm_worker_msg_t answer_msg;
    atomic_int answer_queued;
    struct st_route_module_t *next;
} route_module_t;

static size_t route_module_slot;
/* every worker's route module, for the control thread's notice (notify_workers) */
static pthread_mutex_t modules_mutex = PTHREAD_MUTEX_INITIALIZER;
static route_module_t *modules;

static void
reply_no_route(rm_stream_t *s)
{
    RM_STAT_INC(s->lstats->rq_no_route);
    char msg[512];
    snprintf(msg, sizeof(msg), "no route for authority '%.*s' path '%.*s'",
             (int)(s->req.authority.len < 200 ? s->req.authority.len : 200), s->req.authority.base,
             (int)(s->req.path.len < 200 ? s->req.path.len : 200), s->req.path.base);
    if (s->config->num_clusters == 0)
        snprintf(msg + strlen(msg), sizeof(msg) - strlen(msg), ": no services are configured%s",
                 s->config->version == NULL ? "" : " in the control plane's snapshot");
    rm_stream_reply_status(s, RM_LOCAL_NO_ROUTE, 404, RM_GRPC_UNIMPLEMENTED, msg);
}

static int ondemand_hold(rm_stream_t *s, route_state_t *st);

/* Matches the request; 0 to go on with the chain, 1 if it is held for on-demand discovery, -1 if it was
 * answered locally. */
static int
route_match(rm_stream_t *s, route_state_t *st)
{
    s->route = rm_router_match(s->listener, &s->req);
    if (s->route != NULL)
        return 0;
    /* a scope's set may lack the name: ask the control plane before answering (the one branch an agent
     * without scoping pays, on this path only) */
    if (s->config->scoped && ondemand_hold(s, st) == 0)
        return 1;
    reply_no_route(s);
    return -1;
}

/* A request that arrived before the first snapshot moves to the snapshot now in service (nothing of
 * the old one is in use yet: it has not been routed). 0, or -1 if its listener is gone (answered). */
static int
adopt_current_snapshot(rm_stream_t *s)
{
    rm_config_t *old = s->config, *cur = s->worker->config;
    size_t li = (size_t)(s->listener - old->listeners);
    s->config = rm_config_ref(cur);
    s->listener = li < cur->num_listeners ? &cur->listeners[li] : NULL;
    rm_config_unref(old);
    if (s->listener == NULL) {
        rm_stream_reply_status(s, RM_LOCAL_NO_ROUTE, 503, RM_GRPC_UNAVAILABLE, "listener removed by a configuration change");
        return -1;
    }
    rm_stream_reselect_chain(s);
    return 0;
}

/* A request held for on-demand discovery leaves its list (and the counts). */
static void
release_hold(route_state_t *st)
{
    route_module_t *m = rm_worker_module_state(st->s->worker, route_module_slot);
    if (h2o_linklist_is_linked(&st->parked))
        h2o_linklist_unlink(&st->parked);
    rm_timer_unlink(&st->wait);
    st->ondemand = 0;
    --m->num_held;
    rm_ondemand_held_add(-1);
}

static void
unpark(route_state_t *st)
{
    if (st->ondemand) {
        release_hold(st);
        return;
    }
    if (h2o_linklist_is_linked(&st->parked))
        h2o_linklist_unlink(&st->parked);
    rm_timer_unlink(&st->wait);
}

static void
on_snapshot_wait_timeout(rm_timer_t *timer)
{
    route_state_t *st = H2O_STRUCT_FROM_MEMBER(route_state_t, wait, timer);
    unpark(st);
    rm_stream_reply(st->s, RM_LOCAL_NOT_CONFIGURED, "no snapshot within 10 s");
}

/*
 * On-demand discovery (config/ondemand.h). A held request has only passed this filter: its body waits in
 * the stream's buffers under the usual flow control, and a client that goes away unlinks it (on_abort).
 */

static void
on_ondemand_timeout(rm_timer_t *timer)
{
    route_state_t *st = H2O_STRUCT_FROM_MEMBER(route_state_t, wait, timer);
    rm_stream_t *s = st->s;
    release_hold(st);
    rm_ondemand_count(RM_ONDEMAND_TIMEOUT);
    reply_no_route(s);
}

/* Holds the request while the control plane is asked for its authority's host: 0, or -1 to answer as today. */
static int
ondemand_hold(rm_stream_t *s, route_state_t *st)
{
    char host[RM_ONDEMAND_MAX_NAME_BYTES + 1];
    uint32_t timeout_ms = rm_ondemand_timeout_ms();
    /* outbound calls only (outbound and --listen listeners): an inbound request names what this node serves */
    if (timeout_ms == 0 || s->listener->direction == RM_DIRECTION_INBOUND ||
        rm_ondemand_host(s->req.authority.base, s->req.authority.len, host) == 0)
        return -1;
    route_module_t *m = rm_worker_module_state(s->worker, route_module_slot);
    if (m->num_held >= RM_ONDEMAND_MAX_HELD_PER_WORKER) {
        rm_ondemand_count(RM_ONDEMAND_OVERFLOW);
        return -1;
    }
    switch (rm_ondemand_ask(host, s->config->generation)) {
    case RM_ONDEMAND_ASK_HOLD:
        break;
    case RM_ONDEMAND_ASK_UNKNOWN:
        rm_ondemand_count(RM_ONDEMAND_UNKNOWN);
        return -1;
    case RM_ONDEMAND_ASK_FULL:
        rm_ondemand_count(RM_ONDEMAND_OVERFLOW);
        return -1;
    default:
        return -1;
    }
    st->s = s;
    st->ondemand = 1;
    st->wait.cb = on_ondemand_timeout;
    h2o_linklist_insert(&m->held, &st->parked);
    ++m->num_held;
    rm_ondemand_held_add(1);
    rm_worker_timer_start(s->worker, &st->wait, timeout_ms);
    return 0;
}

/* Routes the held requests again with the config now in service: a route -> on with the chain (found);
 * still none and the name answered (or the set no longer scoped) -> answered as today (unknown); else held
 * on, their timers running. */
static void
retry_held(route_module_t *m)
{
    h2o_linklist_t todo;
    h2o_linklist_init_anchor(&todo);
    h2o_linklist_insert_list(&todo, &m->held);
    while (!h2o_linklist_is_empty(&todo)) {
        route_state_t *st = H2O_STRUCT_FROM_MEMBER(route_state_t, parked, todo.next);
        rm_stream_t *s = st->s;
        h2o_linklist_unlink(&st->parked);
        h2o_linklist_insert(&m->held, &st->parked);
        if ((size_t)(s->listener - s->config->listeners) >= s->worker->config->num_listeners) {
            /* its listener is gone: answered there */
            release_hold(st);
            adopt_current_snapshot(s);
            continue;
        }
        adopt_current_snapshot(s);
        char host[RM_ONDEMAND_MAX_NAME_BYTES + 1];
        rm_ondemand_host(s->req.authority.base, s->req.authority.len, host);
        if ((s->route = rm_router_match(s->listener, &s->req)) != NULL) {
            release_hold(st);
            rm_ondemand_count(RM_ONDEMAND_FOUND);
            rm_ondemand_forget(host);
            rm_stream_resume(s);
        } else if (!s->config->scoped || rm_ondemand_timeout_ms() == 0 || rm_ondemand_settle(host, s->config->generation)) {
            release_hold(st);
            rm_ondemand_count(RM_ONDEMAND_UNKNOWN);
            reply_no_route(s);
        }
    }
}

static void
on_answer(rm_worker_t *worker, rm_worker_msg_t *msg)
{
    route_module_t *m = H2O_STRUCT_FROM_MEMBER(route_module_t, answer_msg, msg);
    atomic_store(&m->answer_queued, 0);
    if (m->num_held != 0)
        retry_held(m);
}

/* Control thread (rm_ondemand_set_notify): a snapshot answered names; one message per worker at a time. */
static void
notify_workers(void)
{
    pthread_mutex_lock(&modules_mutex);
    for (route_module_t *m = modules; m != NULL; m = m->next)
        if (!atomic_exchange(&m->answer_queued, 1))
            rm_worker_post(m->worker, &m->answer_msg);
    pthread_mutex_unlock(&modules_mutex);
}

static rm_filter_status_t
route_on_request_head(rm_stream_t *s, void *state)
{
    route_state_t *st = state;
    if (s->config->awaiting_snapshot) {
        if (!s->worker->config->awaiting_snapshot) {
            if (adopt_current_snapshot(s) != 0)
                return RM_FILTER_STOP;
        } else {
            /* hold it (bounded) rather than answer "no route" from a configuration that is not one yet */
            route_module_t *m = rm_worker_module_state(s->worker, route_module_slot);
            st->s = s;
            st->wait.cb = on_snapshot_wait_timeout;
            h2o_linklist_insert(&m->parked, &st->parked);
            rm_worker_timer_start(s->worker, &st->wait, RM_FIRST_SNAPSHOT_WAIT_MS);
            return RM_FILTER_STOP;
        }
    }
    return route_match(s, st) == 0 ? RM_FILTER_CONTINUE : RM_FILTER_STOP;
}

static void
route_on_abort(rm_stream_t *s, void *state)
{
    unpark(state);
}

const rm_filter_t rm_route_filter = {
    .name = "route",
    .state_size = sizeof(route_state_t),
    .on_request_head = route_on_request_head,
    .on_abort = route_on_abort,
    .on_destroy = route_on_abort,
};

static void *
route_module_init(rm_worker_t *worker)
{
    route_module_t *m = rm_calloc(1, sizeof(*m));
    m->worker = worker;
    h2o_linklist_init_anchor(&m->parked);
    h2o_linklist_init_anchor(&m->held);
    m->answer_msg.cb = on_answer;
    pthread_mutex_lock(&modules_mutex);
    m->next = modules;
    modules = m;
    pthread_mutex_unlock(&modules_mutex);
    return m;
}

static void
route_module_on_config(rm_worker_t *worker, void *state)
{
    route_module_t *m = state;
    if (worker->config->awaiting_snapshot)
        return;
    while (!h2o_linklist_is_empty(&m->parked)) {
        route_state_t *st = H2O_STRUCT_FROM_MEMBER(route_state_t, parked, m->parked.next);
        unpark(st);
        rm_stream_t *s = st->s;
        if (adopt_current_snapshot(s) == 0 && route_match(s, st) == 0)
            rm_stream_resume(s);
    }
    if (m->num_held != 0)
        retry_held(m);
}

static void
route_module_close(rm_worker_t *worker, void *state)
{
    route_module_t *m = state;
    pthread_mutex_lock(&modules_mutex);
    for (route_module_t **p = &modules; *p != NULL; p = &(*p)->next) {
        if (*p == m) {
            *p = m->next;
            break;
        }
    }
    pthread_mutex_unlock(&modules_mutex);
    h2o_linklist_t *lists[] = {&m->parked, &m->held};
    for (size_t i = 0; i != 2; ++i) {
        while (!h2o_linklist_is_empty(lists[i])) {
            route_state_t *st = H2O_STRUCT_FROM_MEMBER(route_state_t, parked, lists[i]->next);
            unpark(st);
            rm_stream_reply(st->s, RM_LOCAL_NOT_CONFIGURED, "the agent is shutting down");
        }
    }
}

static void
route_module_thread_exit(rm_worker_t *worker, void *state)
{
    free(state);
}

static const rm_worker_module_t route_module = {
    .name = "route",
    .init = route_module_init,
    .on_config = route_module_on_config,
    .close = route_module_close,
    .thread_exit = route_module_thread_exit,
};

void
rm_route_module_register(void)
{
    route_module_slot = rm_worker_register_module(&route_module);
    rm_ondemand_set_notify(notify_workers);
    rm_stats_register_renderer(rm_ondemand_render);
}

/*
 * The router
 */

typedef struct st_router_t {
    rm_stream_t *s;
    rm_cluster_t *cluster;
    /** the cluster's name in the stream's snapshot (attempts' and the stream's `backend`) */
    const char *backend;
    /** the route's retry policy, NULL when it has none */
    const rm_config_retry_t *policy;
    rm_retry_budget_t *budget;
    /** the try whose response goes (or may go) downstream */
    rm_attempt_t *primary;
    /** mirrors in flight (rm_attempt_t.owner_link) */
    h2o_linklist_t mirrors;
    /** the request deadline (all tries), the retry backoff, the stream idle timeout */
    rm_timer_t deadline, backoff, idle;
    uint64_t deadline_at_ms;
    uint64_t idle_ms, last_activity_ms;
    /** request bodies up to this size stay replayable (retries, mirrors) */
    uint64_t replay_bytes;
    rm_local_reply_t deadline_cause;
    unsigned retries;
    unsigned tries;
    /** mirrors waiting for the end of a request body of unknown length (bit per route mirror, up to 32) */
    uint32_t pending_mirrors;
    unsigned resent : 1;        /* the keep-alive-race re-send was used */
    unsigned replay_lost : 1;   /* the body outgrew the replay buffer */
    unsigned hold_grpc : 1;     /* hold gRPC response heads until DATA or trailers (retry on gRPC statuses) */
    unsigned fresh_next : 1;    /* the next try goes on a new connection */
    unsigned has_deadline : 1;  /* deadline_at_ms is set */
    unsigned holds_request : 1; /* a slot of the cluster's max_requests breaker */
    unsigned holds_retry : 1;   /* a slot of the cluster's max_retries breaker */
} router_t;

static const rm_attempt_owner_ops_t owner_ops;
static void start_try(router_t *r);
static void start_mirror(router_t *r, const rm_config_mirror_t *m);

/* The cluster's agent-wide retry budget, kept in the runtime's policy slot so the registry's lock
 * is taken once per runtime, and re-configured when a reload changes the cluster's settings. */
typedef struct st_budget_slot_t {
    rm_retry_budget_t *budget;
    const rm_config_cluster_t *configured;
} budget_slot_t;

static void
release_budget_slot(void *data)
{
    budget_slot_t *b = data;
    rm_retry_budget_release(b->budget);
    free(b);
}

static rm_retry_budget_t *
cluster_budget(rm_cluster_t *c)
{
    rm_cluster_slot_t *slot = rm_cluster_policy_slot(c);
    budget_slot_t *b = slot->data;
    const rm_config_cluster_t *cc = rm_cluster_config(c);
    if (b == NULL) {
        b = rm_calloc(1, sizeof(*b));
        b->budget = rm_retry_budget_acquire(cc->name);
        slot->data = b;
        slot->release = release_budget_slot;
    }
    if (b->configured != cc) {
        rm_retry_budget_configure(b->budget, cc->budget_percent, cc->budget_interval_ms, cc->min_retry_count,
                                  cc->min_retry_interval_ms);
        b->configured = cc;
    }
    return b->budget;
}

static uint64_t
now_ms(router_t *r)
{
    return rm_worker_now_ms(r->s->worker);
}

/* Gives back the breaker slots the request holds, exactly once whatever ended it (the response
 * completed, a failure was answered, the downstream aborted, the stream was destroyed). */
static void
release_slots(router_t *r)
{
    if (r->holds_request) {
        r->holds_request = 0;
        rm_breaker_release(rm_cluster_breaker(r->cluster), RM_BREAKER_REQUESTS);
    }
    if (r->holds_retry) {
        r->holds_retry = 0;
        rm_breaker_release(rm_cluster_breaker(r->cluster), RM_BREAKER_RETRIES);
    }
}

static void
stop_timers(router_t *r)
{
    rm_timer_unlink(&r->deadline);
    rm_timer_unlink(&r->backoff);
    rm_timer_unlink(&r->idle);
}

static void
touch(router_t *r)
{
    if (r->idle_ms != 0)
        r->last_activity_ms = now_ms(r);
}

/* The primary is done (its response completed, or it failed for good): nobody reads the request now. */
static void
finish_primary(router_t *r, rm_attempt_t *a)
{
    if (r->primary == a)
        r->primary = NULL;
    rm_timer_unlink(&a->try_timer);
    stop_timers(r);
    release_slots(r);
    r->s->req_discard = 1;
    rm_attempt_release(a);
}

static void
cancel_primary(router_t *r)
{
    rm_attempt_t *a = r->primary;
    r->primary = NULL;
    if (a != NULL) {
        rm_timer_unlink(&a->try_timer);
        rm_attempt_cancel(a);
    }
}

static int
is_idempotent(const rm_req_head_t *req)
{
    static const char *const methods[] = {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"};
    for (size_t i = 0; i != sizeof(methods) / sizeof(methods[0]); ++i)
        if (h2o_memis(req->method.base, req->method.len, methods[i], strlen(methods[i])))
            return 1;
    return 0;
}

/*
 * Timers
 */

static void
on_deadline(rm_timer_t *timer)
{
    router_t *r = H2O_STRUCT_FROM_MEMBER(router_t, deadline, timer);
    rm_stream_t *s = r->s;
    rm_timer_unlink(&r->backoff);
    if (s->resp_body.eos)
        return;
    cancel_primary(r);
    if (s->down == NULL)
        return;
    RM_STAT_INC(s->lstats->rq_timeout);
    if (!s->resp_head_sent) {
        rm_stream_reply(s, r->deadline_cause, NULL);
        return;
    }
    RM_STAT_INC(s->lstats->local_replies[r->deadline_cause]);
    s->req_discard = 1;
    rm_stream_abort_response(s, RM_GRPC_DEADLINE_EXCEEDED, RM_H2_CANCEL,
                             r->deadline_cause == RM_LOCAL_GRPC_DEADLINE
                                 ? "deadline exceeded (grpc-timeout): the response did not complete in time"
                                 : "request timeout: the response did not complete in time");
}

static void
on_idle(rm_timer_t *timer)
{
    router_t *r = H2O_STRUCT_FROM_MEMBER(router_t, idle, timer);
    rm_stream_t *s = r->s;
    uint64_t idle_for = now_ms(r) - r->last_activity_ms;
    if (idle_for < r->idle_ms) {
        rm_worker_timer_start(s->worker, &r->idle, r->idle_ms - idle_for);
        return;
    }
    if (s->resp_body.eos)
        return;
    rm_timer_unlink(&r->backoff);
    rm_timer_unlink(&r->deadline);
    cancel_primary(r);
    if (s->down == NULL)
        return;
    if (!s->resp_head_sent) {
        rm_stream_reply(s, RM_LOCAL_STREAM_IDLE, NULL);
        return;
    }
    RM_STAT_INC(s->lstats->local_replies[RM_LOCAL_STREAM_IDLE]);
    s->req_discard = 1;
    rm_stream_abort_response(s, RM_GRPC_CANCELLED, RM_H2_CANCEL, "stream idle timeout");
}

static void
on_backoff(rm_timer_t *timer)
{
    router_t *r = H2O_STRUCT_FROM_MEMBER(router_t, backoff, timer);
    if (r->s->down == NULL || r->s->aborted || r->s->resp_head_sent)
        return;
    start_try(r);
}

/*
 * Retries
 */

/* Whether the request can be sent again as it was: bytes of its body already dropped are gone. */
static int
replayable(router_t *r)
{
    return !r->replay_lost && r->s->req_base == 0;
}

/* Abandons `a` and schedules another try; 0 if the policy, the budget or the body do not allow it. */
static int
try_retry(router_t *r, rm_attempt_t *a, unsigned reason)
{
    rm_stream_t *s = r->s;
    rm_cluster_stats_t *cs = rm_cluster_stats(r->cluster);
    if (reason == RM_RETRY_REASON_NONE || s->down == NULL || s->resp_head_sent)
        return 0;
    if (r->retries >= r->policy->attempts) {
        RM_STAT_INC(cs->rq_retry_limit_exceeded);
        return 0;
    }
    if (!replayable(r))
        return 0; /* counted when the body outgrew the buffer */
    /* one max_retries slot per request with a retry in flight, kept until the request ends */
    int took_retry_slot = 0;
    if (!r->holds_retry) {
        if (!rm_breaker_try_acquire(rm_cluster_breaker(r->cluster), RM_BREAKER_RETRIES)) {
            RM_STAT_INC(cs->rq_overflow[RM_BREAKER_RETRIES]);
            return 0;
        }
        r->holds_retry = 1;
        took_retry_slot = 1;
    }
    if (!rm_retry_budget_try_withdraw(r->budget, now_ms(r))) {
        RM_STAT_INC(cs->rq_retry_budget_exhausted);
        if (took_retry_slot) {
            r->holds_retry = 0;
            rm_breaker_release(rm_cluster_breaker(r->cluster), RM_BREAKER_RETRIES);
        }
        return 0;
    }
    ++r->retries;
    RM_STAT_INC(cs->rq_retry[reason - 1]);
    if (r->primary == a)
        r->primary = NULL;
    rm_timer_unlink(&a->try_timer);
    if (a->attached)
        rm_attempt_cancel(a);
    else
        rm_attempt_release(a);
    uint64_t delay =
        rm_retry_backoff_ms(r->policy->backoff_base_ms, r->policy->backoff_max_ms, r->retries - 1, rm_worker_random(s->worker));
    rm_worker_timer_start(s->worker, &r->backoff, delay);
    return 1;
}

/* The keep-alive race: a request the upstream never processed goes again, once, on a fresh connection. */
static int
try_resend(router_t *r, rm_attempt_t *a, rm_upstream_error_t err, uint32_t h2_error)
{
    rm_stream_t *s = r->s;
    int refused_h2 = (err == RM_UPSTREAM_ERR_RESET || err == RM_UPSTREAM_ERR_REFUSED) && h2_error == RM_H2_REFUSED_STREAM;
    int stale_h1 = err == RM_UPSTREAM_ERR_REFUSED && h2_error == 0 && is_idempotent(&s->req);
    if (r->resent || !(refused_h2 || stale_h1) || s->down == NULL || s->resp_head_sent || s->req_base != 0)
        return 0;
    r->resent = 1;
    r->fresh_next = 1;
    RM_STAT_INC(rm_cluster_stats(r->cluster)->rq_refused_resend);
    if (r->primary == a)
        r->primary = NULL;
    rm_timer_unlink(&a->try_timer);
    rm_attempt_release(a);
    /* from the loop, not from inside the codec that reported the failure */
    rm_worker_timer_start(s->worker, &r->backoff, 0);
    return 1;
}

static void
commit(router_t *r, rm_attempt_t *a)
{
    rm_stream_t *s = r->s;
    rm_timer_unlink(&a->try_timer);
    if (a->number != 0)
        RM_STAT_INC(rm_cluster_stats(r->cluster)->rq_retry_success);
    if (s->req_keep && r->pending_mirrors == 0 && h2o_linklist_is_empty(&r->mirrors)) {
        /* nothing is retried after a commit: the replay buffer goes now, not with the stream */
        s->req_keep = 0;
        rm_stream_drop_request_before(s, a->req_off);
    }
    rm_attempt_commit(a);
}

static void
on_try_timeout(rm_timer_t *timer)
{
    rm_attempt_t *a = H2O_STRUCT_FROM_MEMBER(rm_attempt_t, try_timer, timer);
    router_t *r = a->owner_ctx;
    if (a->mirror) {
        /* a shadow that does not answer in time is abandoned */
        h2o_linklist_unlink(&a->owner_link);
        rm_cluster_release(a->owner_data);
        rm_attempt_cancel(a);
        return;
    }
    if (a != r->primary || a->committed)
        return;
    RM_STAT_INC(rm_cluster_stats(r->cluster)->rq_per_try_timeout);
    rm_cluster_report_outlier(r->cluster, a->endpoint, RM_OUTLIER_GATEWAY);
    if (r->policy != NULL && try_retry(r, a, rm_retry_classify(r->policy, RM_RETRY_ON_PER_TRY_TIMEOUT, -1, -1)))
        return;
    cancel_primary(r);
    stop_timers(r);
    rm_stream_reply(r->s, RM_LOCAL_PER_TRY_TIMEOUT, NULL);
}

/* The value of cookie `name` in the request's Cookie fields (h2 may split them), or {NULL, 0}. */
static h2o_iovec_t
find_cookie(const rm_headers_t *headers, const char *name)
{
    size_t name_len = strlen(name);
    for (ssize_t i = -1; (i = rm_headers_find_lit(headers, "cookie", i)) >= 0;) {
        const char *p = headers->entries[i].value.base, *end = p + headers->entries[i].value.len;
        while (p < end) {
            while (p < end && (*p == ' ' || *p == ';'))
                ++p;
            const char *pair = p;
            while (p < end && *p != ';')
                ++p;
            if ((size_t)(p - pair) > name_len && memcmp(pair, name, name_len) == 0 && pair[name_len] == '=')
                return h2o_iovec_init(pair + name_len + 1, (size_t)(p - pair) - name_len - 1);
        }
    }
    return h2o_iovec_init(NULL, 0);
}

/* The consistent-hash key of an attempt: the route's sessionPersistence value (ring hash whatever the
 * cluster's balancer), else the client's address (used by a ring-hash cluster only). */
static void
set_hash_key(rm_stream_t *s, rm_attempt_t *a)
{
    const rm_config_route_t *route = s->route;
    if (route != NULL && route->session_persistence != RM_SESSION_NONE && route->session_name != NULL) {
        h2o_iovec_t v = h2o_iovec_init(NULL, 0);
        if (route->session_persistence == RM_SESSION_HEADER) {
            ssize_t i = rm_headers_find(&s->req.headers, route->session_name, strlen(route->session_name), -1);
            if (i >= 0)
                v = s->req.headers.entries[i].value;
        } else {
            v = find_cookie(&s->req.headers, route->session_name);
        }
        if (v.len != 0) {
            a->hash_key = rm_lb_hash64(v.base, v.len, 0);
            a->hash_kind = RM_ATTEMPT_HASH_SESSION;
            return;
        }
    }
    /* the address is hashed by the ring-hash balancer, the only one that reads it (rm_attempt_hash_t) */
    if (s->peerlen != 0 && (s->peer.ss_family == AF_INET || s->peer.ss_family == AF_INET6))
        a->hash_kind = RM_ATTEMPT_HASH_SOURCE;
}

static void
start_try(router_t *r)
{
    rm_stream_t *s = r->s;
    uint32_t try_ms = s->route->per_try_timeout_ms;
    if (r->has_deadline) {
        uint64_t now = now_ms(r);
        if (now >= r->deadline_at_ms) {
            on_deadline(&r->deadline);
            return;
        }
        uint64_t left = r->deadline_at_ms - now;
        if (try_ms == 0 || left < try_ms)
            try_ms = (uint32_t)left;
    }
    rm_attempt_t *a = rm_attempt_create(s, &owner_ops, r, rm_cluster_stats(r->cluster));
    set_hash_key(s, a);
    a->backend = r->backend;
    a->number = r->tries++;
    s->info.attempts = r->tries;
    a->fresh_connection = r->fresh_next;
    r->fresh_next = 0;
    if (s->req.is_grpc && try_ms != 0) {
        /* the upstream learns how long this try has: the smaller of the deadline and the per-try timeout */
        char *buf = h2o_mem_alloc_pool(&s->pool, RM_GRPC_TIMEOUT_FORMAT_SIZE);
        size_t n = rm_grpc_timeout_format((uint64_t)try_ms * 1000, buf);
        a->grpc_timeout = h2o_iovec_init(buf, n);
    }
    a->try_timer.cb = on_try_timeout;
    if (s->route->per_try_timeout_ms != 0)
        rm_worker_timer_start(s->worker, &a->try_timer, s->route->per_try_timeout_ms);
    r->primary = a;
    rm_attempt_start(a);
    rm_cluster_dispatch(r->cluster, a);
}

/*
 * Mirrors
 */

static void
start_mirror(router_t *r, const rm_config_mirror_t *m)
{
    rm_stream_t *s = r->s;
    rm_cluster_t *c = rm_cluster_acquire(rm_cluster_lookup(s->worker, s->config, m->cluster_index));
    rm_attempt_t *a = rm_attempt_create(s, &owner_ops, r, rm_cluster_stats(c));
    set_hash_key(s, a);
    a->mirror = 1;
    a->backend = s->config->clusters[m->cluster_index].name;
    a->owner_data = c;
    h2o_linklist_insert(&r->mirrors, &a->owner_link);
    RM_STAT_INC(s->lstats->mirror_sent);
    /* a shadow never holds the stream longer than the route's timeout (or the shadow cluster's stream idle timeout) */
    uint64_t limit = s->route->timeout_ms != 0 ? s->route->timeout_ms : rm_cluster_config(c)->stream_idle_timeout_ms;
    a->try_timer.cb = on_try_timeout;
    if (limit != 0)
        rm_worker_timer_start(s->worker, &a->try_timer, limit);
    rm_attempt_start(a);
    rm_cluster_dispatch(c, a);
}

static void
finish_mirror(rm_attempt_t *a)
{
    rm_timer_unlink(&a->try_timer);
    if (h2o_linklist_is_linked(&a->owner_link)) {
        h2o_linklist_unlink(&a->owner_link);
        rm_cluster_release(a->owner_data);
    }
    rm_attempt_release(a);
}

/* Mirrors whose request body turned out to be complete and small enough go now; too large ones never. */
static void
settle_pending_mirrors(router_t *r)
{
    rm_stream_t *s = r->s;
    if (r->pending_mirrors == 0)
        return;
    if (s->req_body.bytes_in > r->replay_bytes) {
        for (uint32_t bits = r->pending_mirrors; bits != 0; bits &= bits - 1)
            RM_STAT_INC(s->lstats->mirror_body_too_large);
        r->pending_mirrors = 0;
    } else if (s->req_body.eos) {
        for (size_t i = 0; i != s->route->num_mirrors && i != 32; ++i)
            if ((r->pending_mirrors & (1u << i)) != 0)
                start_mirror(r, &s->route->mirrors[i]);
        r->pending_mirrors = 0;
    }
}

static void
plan_mirrors(router_t *r)
{
    rm_stream_t *s = r->s;
    const rm_config_route_t *route = s->route;
    for (size_t i = 0; i != route->num_mirrors && i != 32; ++i) {
        const rm_config_mirror_t *m = &route->mirrors[i];
        if (rm_worker_random(s->worker) % 1000000 >= m->per_million)
            continue;
        int64_t cl = s->req.content_length;
        if (!s->req.has_body || s->req_body.eos || (cl >= 0 && (uint64_t)cl <= r->replay_bytes && s->req_done)) {
            if (s->req_body.bytes_in > r->replay_bytes)
                RM_STAT_INC(s->lstats->mirror_body_too_large);
            else
                start_mirror(r, m);
        } else if (cl >= 0 && (uint64_t)cl > r->replay_bytes) {
            RM_STAT_INC(s->lstats->mirror_body_too_large);
        } else {
            r->pending_mirrors |= 1u << i;
        }
    }
    if (r->pending_mirrors != 0 || !h2o_linklist_is_empty(&r->mirrors))
        s->req_keep = 1;
}

/*
 * Filter hooks
 */

static rm_filter_status_t
router_on_request_head(rm_stream_t *s, void *state)
{
    router_t *r = state;
    const rm_config_route_t *route = s->route;
    r->s = s;
    h2o_linklist_init_anchor(&r->mirrors);
    r->deadline.cb = on_deadline;
    r->backoff.cb = on_backoff;
    r->idle.cb = on_idle;
    if (route->cluster_index == RM_CONFIG_NO_CLUSTER) {
        rm_stream_reply_status(s, RM_LOCAL_NO_CLUSTER, 500, RM_GRPC_INTERNAL, "the route has no backend");
        return RM_FILTER_STOP;
    }
    size_t cluster_index = rm_router_pick_cluster(route, rm_worker_random(s->worker));
    r->cluster = rm_cluster_acquire(rm_cluster_lookup(s->worker, s->config, cluster_index));
    r->backend = s->config->clusters[cluster_index].name;
    s->info.backend = r->backend;
    const rm_config_cluster_t *cc = rm_cluster_config(r->cluster);
    /* the target Service's authorization policies, where the Service is served (as its rate limit
     * below); a route's own policies ran in the authz filter and both must allow */
    if (cc->authz != NULL && s->listener->direction != RM_DIRECTION_OUTBOUND && rm_authz_apply(s, cc->authz) != 0)
        return RM_FILTER_STOP;
    /* the target Service's rate limit, once per request (not per try); a limit on the route is more
     * specific and replaces it (the rate-limit filter applied that one). Under transparent interception
     * it protects the workload where it is served: the inbound side of the serving node applies it
     * (its inbound cluster shares the Service's limit), the caller's outbound side does not. */
    if (cc->rate_limit != NULL && route->rate_limit == NULL && s->listener->direction != RM_DIRECTION_OUTBOUND &&
        rm_ratelimit_apply(s, cc->rate_limit) != 0)
        return RM_FILTER_STOP;
    /* the cluster's agent-wide max_requests: over it, answer at once rather than queue */
    if (!rm_breaker_try_acquire(rm_cluster_breaker(r->cluster), RM_BREAKER_REQUESTS)) {
        RM_STAT_INC(rm_cluster_stats(r->cluster)->rq_overflow[RM_BREAKER_REQUESTS]);
        char msg[256];
        snprintf(msg, sizeof(msg), "cluster '%s' has max_requests (%u) in flight", cc->name, (unsigned)cc->breakers.max_requests);
        rm_stream_reply(s, RM_LOCAL_OVERFLOW, msg);
        return RM_FILTER_STOP;
    }
    r->holds_request = 1;
    uint64_t now = now_ms(r);

    /* the deadline: the route's timeout, or the client's grpc-timeout when it is smaller */
    uint64_t timeout_ms = route->timeout_ms;
    r->deadline_cause = RM_LOCAL_REQUEST_TIMEOUT;
    if (s->req.is_grpc) {
        ssize_t i = rm_headers_find(&s->req.headers, H2O_STRLIT("grpc-timeout"), -1);
        uint64_t us;
        if (i >= 0 && rm_grpc_timeout_parse(s->req.headers.entries[i].value.base, s->req.headers.entries[i].value.len, &us) == 0) {
            uint64_t ms = (us + 999) / 1000;
            if (timeout_ms == 0 || ms < timeout_ms) {
                timeout_ms = ms;
                r->deadline_cause = RM_LOCAL_GRPC_DEADLINE;
            }
        }
    }
    if (timeout_ms != 0 || r->deadline_cause == RM_LOCAL_GRPC_DEADLINE) {
        r->has_deadline = 1;
        r->deadline_at_ms = now + timeout_ms;
        rm_worker_timer_start(s->worker, &r->deadline, timeout_ms);
    }
    if ((r->idle_ms = cc->stream_idle_timeout_ms) != 0) {
        r->last_activity_ms = now;
        rm_worker_timer_start(s->worker, &r->idle, r->idle_ms);
    }

    r->replay_bytes = DEFAULT_REPLAY_BYTES;
    if (route->retry != NULL && route->retry->attempts != 0) {
        r->policy = route->retry;
        r->replay_bytes = r->policy->max_replay_bytes;
        r->budget = cluster_budget(r->cluster);
        rm_retry_budget_on_request(r->budget, now);
        r->hold_grpc = s->req.is_grpc && r->policy->grpc_status_mask != 0;
        if (s->req.content_length >= 0 && (uint64_t)s->req.content_length > r->replay_bytes) {
            r->replay_lost = 1;
            RM_STAT_INC(rm_cluster_stats(r->cluster)->rq_retry_not_replayable);
        } else {
            s->req_keep = 1;
        }
    }
    if (route->num_mirrors != 0)
        plan_mirrors(r);
    start_try(r);
    return RM_FILTER_STOP;
}

static void
router_on_request_body(rm_stream_t *s, void *state)
{
    router_t *r = state;
    touch(r);
    if (r->policy != NULL && !r->replay_lost && s->req_body.bytes_in > r->replay_bytes) {
        r->replay_lost = 1;
        RM_STAT_INC(rm_cluster_stats(r->cluster)->rq_retry_not_replayable);
    }
    settle_pending_mirrors(r);
    if (s->req_keep && (r->policy == NULL || r->replay_lost) && r->pending_mirrors == 0 && h2o_linklist_is_empty(&r->mirrors)) {
        /* nothing will replay the body: keep only what the primary has not taken */
        s->req_keep = 0;
        if (r->primary != NULL)
            rm_stream_drop_request_before(s, r->primary->req_off);
    }
    if (r->primary != NULL)
        rm_attempt_notify_req_body(r->primary);
    for (h2o_linklist_t *n = r->mirrors.next; n != &r->mirrors;) {
        rm_attempt_t *m = H2O_STRUCT_FROM_MEMBER(rm_attempt_t, owner_link, n);
        n = n->next;
        rm_attempt_notify_req_body(m);
    }
}

static void
router_on_response_consumed(rm_stream_t *s, void *state, size_t n)
{
    router_t *r = state;
    touch(r);
    if (r->primary != NULL && r->primary->committed)
        rm_attempt_notify_resp_consumed(r->primary, n);
}

static void
router_on_abort(rm_stream_t *s, void *state)
{
    router_t *r = state;
    stop_timers(r);
    r->pending_mirrors = 0;
    cancel_primary(r);
    release_slots(r);
    /* mirrors in flight finish on their own (bounded by their timer): fire and forget */
}

static void
router_on_destroy(rm_stream_t *s, void *state)
{
    router_t *r = state;
    stop_timers(r);
    if (r->cluster != NULL) {
        release_slots(r);
        rm_cluster_release(r->cluster);
    }
}

/*
 * Attempt outcomes
 */

/* 1 if the attempt's outcome for outlier detection is only known from its trailers (a gRPC 200 with a body) */
static int
grpc_status_in_trailers(router_t *r, rm_attempt_t *a)
{
    return r->s->req.is_grpc && a->resp.status == 200 && !a->resp_no_body;
}

static void
on_head(rm_attempt_t *a)
{
    router_t *r = a->owner_ctx;
    /* a gRPC response's verdict comes with its trailers (UNAVAILABLE there is a gateway error): report it at the end */
    if (!grpc_status_in_trailers(r, a))
        rm_cluster_report_outlier(r->cluster, a->endpoint, rm_outlier_classify(a->resp.status, a->grpc_status));
    if (r->policy != NULL) {
        int grpc_status = a->grpc_status; /* set when trailers-only */
        if (try_retry(r, a, rm_retry_classify(r->policy, 0, a->resp.status, grpc_status)))
            return;
        if (r->hold_grpc && !a->resp_no_body && a->resp.status == 200 && r->retries < r->policy->attempts)
            return; /* the status comes with the trailers, unless DATA comes first */
    }
    touch(r);
    if (a->resp.status == 101)
        rm_timer_unlink(&r->deadline); /* an upgraded (WebSocket) tunnel lives until its idle timeout, not the route's */
    commit(r, a);
}

static void
on_body_start(rm_attempt_t *a)
{
    router_t *r = a->owner_ctx;
    commit(r, a);
}

static void
on_end(rm_attempt_t *a, rm_headers_t *trailers)
{
    router_t *r = a->owner_ctx;
    if (a->mirror) {
        finish_mirror(a);
        return;
    }
    if (grpc_status_in_trailers(r, a))
        rm_cluster_report_outlier(r->cluster, a->endpoint, rm_outlier_classify(a->resp.status, a->grpc_status));
    /* a held gRPC response ended without DATA: its status is in the trailers */
    if (r->policy != NULL && try_retry(r, a, rm_retry_classify(r->policy, 0, a->resp.status, rm_headers_grpc_status(trailers))))
        return;
    commit(r, a);
    rm_stream_on_response_end(r->s, trailers);
    finish_primary(r, a);
}

static void
on_complete(rm_attempt_t *a)
{
    router_t *r = a->owner_ctx;
    if (grpc_status_in_trailers(r, a))
        rm_cluster_report_outlier(r->cluster, a->endpoint, rm_outlier_classify(a->resp.status, a->grpc_status));
    finish_primary(r, a);
}

static unsigned
retry_cause(rm_upstream_error_t err, uint32_t h2_error)
{
    switch (err) {
    case RM_UPSTREAM_ERR_CONNECT:
    case RM_UPSTREAM_ERR_TIMEOUT:
        return RM_RETRY_ON_CONNECT_FAILURE;
    case RM_UPSTREAM_ERR_REFUSED:
        return RM_RETRY_ON_REFUSED_STREAM;
    case RM_UPSTREAM_ERR_RESET:
        return h2_error == RM_H2_REFUSED_STREAM ? RM_RETRY_ON_REFUSED_STREAM : RM_RETRY_ON_RESET;
    case RM_UPSTREAM_ERR_CLOSED:
    case RM_UPSTREAM_ERR_PROTOCOL:
        return RM_RETRY_ON_RESET;
    case RM_UPSTREAM_ERR_OVERFLOW:
        return 0; /* a breaker said no: a retry would only add load */
    }
    return 0;
}

static void
reply_failure(rm_stream_t *s, rm_upstream_error_t err, uint32_t h2_error, const char *detail)
{
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
    case RM_UPSTREAM_ERR_OVERFLOW:
        rm_stream_reply(s, RM_LOCAL_OVERFLOW, detail);
        break;
    }
}

static void
on_error(rm_attempt_t *a, rm_upstream_error_t err, uint32_t h2_error, const char *detail)
{
    router_t *r = a->owner_ctx;
    rm_stream_t *s = r->s;
    if (a->mirror) {
        finish_mirror(a);
        return;
    }
    if (err != RM_UPSTREAM_ERR_OVERFLOW) {
        /* a breaker's refusal says nothing about the endpoint */
        rm_cluster_report_outlier(r->cluster, a->endpoint, RM_OUTLIER_GATEWAY);
    }
    if (!a->committed) {
        /* a policy that covers the failure counts it as a retry; the keep-alive-race re-send
         * covers refused requests on every route, once */
        if (r->policy != NULL && try_retry(r, a, rm_retry_classify(r->policy, retry_cause(err, h2_error), -1, -1)))
            return;
        if (try_resend(r, a, err, h2_error))
            return;
        finish_primary(r, a);
        reply_failure(s, err, h2_error, detail);
        return;
    }
    finish_primary(r, a);
    /* the response started: end it as the protocol requires */
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
