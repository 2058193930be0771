/*
 * Attempts on a real stream (proxy/attempt.c, proxy/stream.c), without sockets: a fake downstream
 * codec, one test filter that owns the attempts the way the router does, and a fake upstream codec.
 * Request body replay and acknowledgement, commit, mirrors, lifetimes in every order, local replies.
 * Run under the sanitizer build: a use after free or a leak of a stream or attempt fails the test.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include "core/alloc.h"
#include "core/worker.h"
#include "obs/stats.h"
#include "proxy/attempt.h"
#include "proxy/filter.h"
#include "proxy/local_reply.h"
#include "proxy/stream.h"

#define MAX_ATTEMPTS 4

/* What the owner does from inside one of its callbacks. */
typedef enum en_action_t {
    ACT_NONE = 0,
    ACT_COMMIT,
    ACT_CANCEL,
    ACT_RELEASE,
} action_t;

/* One attempt as the test sees it: the owner's and the codec's view, and what each was told. */
typedef struct st_tattempt_t {
    rm_attempt_t *a;
    /* the owner still holds it (not released nor cancelled): only then may the owner touch `a` */
    int owned;
    /* the fake codec holds it */
    int codec_attached;
    /* the codec detaches from inside its cancel callback (else later, as an asynchronous codec would) */
    int detach_on_cancel;

    /* codec side */
    size_t req_ready, cancels;
    uint64_t resp_consumed;

    /* owner side */
    size_t on_head, on_body_start, on_end, on_complete, on_error;
    rm_upstream_error_t last_err;
    action_t head_action, body_start_action, end_action, complete_action, error_action;
    /* seen from inside on_head after the action: the attempt and its stream were still alive */
    unsigned busy_in_head;
    unsigned attempts_in_head;
    int stream_alive_in_head;
} tattempt_t;

typedef struct st_fixture_t {
    rm_stream_t *s;
    int down_detached;

    /* downstream codec */
    size_t heads, body_ready, consumed_calls, resets;
    uint64_t consumed;
    int head_status, head_eos;

    /* the test filter */
    int cancel_on_abort;
    size_t filter_request_head, filter_request_body, filter_response_head, filter_abort, filter_destroy;
    uint64_t filter_consumed;

    tattempt_t att[MAX_ATTEMPTS];
    size_t num_att;
} fixture_t;

static fixture_t fx;
static rm_worker_t worker;
static rm_config_t *config;
static rm_stats_t *stats;
static rm_listener_stats_t *lstats;
static rm_cluster_stats_t *cstats;

/*
 * Fake downstream codec
 */

static void
down_send_response_head(rm_stream_t *s)
{
    assert_ptr_equal(s->down_ctx, &fx);
    ++fx.heads;
    fx.head_status = s->resp.status;
    fx.head_eos = s->resp_body.eos;
}

static void
down_resp_body_ready(rm_stream_t *s)
{
    ++fx.body_ready;
}

static void
down_req_body_consumed(rm_stream_t *s, size_t n)
{
    assert_true(n > 0);
    ++fx.consumed_calls;
    fx.consumed += n;
}

static void
down_reset(rm_stream_t *s, uint32_t h2_error)
{
    ++fx.resets;
}

static const rm_stream_down_ops_t down_ops = {down_send_response_head, down_resp_body_ready, down_req_body_consumed, down_reset,
                                              "HTTP/1.1"};

/*
 * Fake upstream codec
 */

static void
codec_req_body_ready(rm_attempt_t *a)
{
    tattempt_t *t = a->up_ctx;
    assert_true(t->codec_attached);
    ++t->req_ready;
}

static void
codec_resp_body_consumed(rm_attempt_t *a, size_t n)
{
    tattempt_t *t = a->up_ctx;
    assert_true(t->codec_attached);
    t->resp_consumed += n;
}

static void
codec_cancel(rm_attempt_t *a)
{
    tattempt_t *t = a->up_ctx;
    assert_true(t->codec_attached);
    ++t->cancels;
    if (t->detach_on_cancel) {
        t->codec_attached = 0;
        rm_attempt_detach(a);
    }
}

static const rm_attempt_up_ops_t codec_ops = {codec_req_body_ready, codec_resp_body_consumed, codec_cancel};

static void
codec_attach(tattempt_t *t)
{
    t->codec_attached = 1;
    rm_attempt_attach(t->a, &codec_ops, t);
}

static void
codec_detach(tattempt_t *t)
{
    assert_true(t->codec_attached);
    t->codec_attached = 0;
    rm_attempt_detach(t->a);
}

static void
codec_error(tattempt_t *t, rm_upstream_error_t err)
{
    assert_true(t->codec_attached);
    t->codec_attached = 0;
    rm_attempt_on_error(t->a, err, 0, "test");
}

/*
 * The owner (router-like)
 */

static void
owner_release(tattempt_t *t)
{
    assert_true(t->owned);
    t->owned = 0;
    rm_attempt_release(t->a);
}

static void
owner_cancel(tattempt_t *t)
{
    assert_true(t->owned);
    t->owned = 0;
    rm_attempt_cancel(t->a);
}

static void
act(tattempt_t *t, action_t action)
{
    switch (action) {
    case ACT_NONE:
        break;
    case ACT_COMMIT:
        rm_attempt_commit(t->a);
        break;
    case ACT_CANCEL:
        owner_cancel(t);
        break;
    case ACT_RELEASE:
        owner_release(t);
        break;
    }
}

static void
owner_on_head(rm_attempt_t *a)
{
    tattempt_t *t = a->owner_ctx;
    assert_true(t->owned);
    assert_true(a->head_received);
    ++t->on_head;
    act(t, t->head_action);
    /* still inside the codec's call: whatever the owner did, `a` and its stream must be readable */
    t->busy_in_head = a->busy;
    t->attempts_in_head = a->stream->num_attempts;
    t->stream_alive_in_head = fx.filter_destroy == 0;
}

static void
owner_on_body_start(rm_attempt_t *a)
{
    tattempt_t *t = a->owner_ctx;
    assert_true(t->owned);
    ++t->on_body_start;
    act(t, t->body_start_action);
}

static void
owner_on_end(rm_attempt_t *a, rm_headers_t *trailers)
{
    tattempt_t *t = a->owner_ctx;
    assert_true(t->owned);
    ++t->on_end;
    act(t, t->end_action);
}

static void
owner_on_complete(rm_attempt_t *a)
{
    tattempt_t *t = a->owner_ctx;
    assert_true(t->owned);
    ++t->on_complete;
    act(t, t->complete_action);
}

static void
owner_on_error(rm_attempt_t *a, rm_upstream_error_t err, uint32_t h2_error, const char *detail)
{
    tattempt_t *t = a->owner_ctx;
    assert_true(t->owned);
    assert_false(a->attached);
    ++t->on_error;
    t->last_err = err;
    act(t, t->error_action);
}

static const rm_attempt_owner_ops_t owner_ops = {owner_on_head, owner_on_body_start, owner_on_end, owner_on_complete,
                                                 owner_on_error};

static tattempt_t *
new_attempt(void)
{
    assert_true(fx.num_att < MAX_ATTEMPTS);
    tattempt_t *t = &fx.att[fx.num_att++];
    memset(t, 0, sizeof(*t));
    t->a = rm_attempt_create(fx.s, &owner_ops, t, cstats);
    t->owned = 1;
    t->detach_on_cancel = 1;
    assert_ptr_equal(t->a->stream, fx.s);
    assert_ptr_equal(t->a->req, &fx.s->req);
    return t;
}

/*
 * The test filter: the owner of the attempts, hooked into the stream like the router
 */

static rm_filter_status_t
filter_on_request_head(rm_stream_t *s, void *state)
{
    ++fx.filter_request_head;
    return RM_FILTER_STOP;
}

static void
filter_on_request_body(rm_stream_t *s, void *state)
{
    ++fx.filter_request_body;
    for (size_t i = 0; i != fx.num_att; ++i)
        if (fx.att[i].owned)
            rm_attempt_notify_req_body(fx.att[i].a);
}

static void
filter_on_response_head(rm_stream_t *s, void *state)
{
    ++fx.filter_response_head;
}

static void
filter_on_response_consumed(rm_stream_t *s, void *state, size_t n)
{
    fx.filter_consumed += n;
    for (size_t i = 0; i != fx.num_att; ++i)
        if (fx.att[i].owned && fx.att[i].a->committed)
            rm_attempt_notify_resp_consumed(fx.att[i].a, n);
}

static void
filter_on_abort(rm_stream_t *s, void *state)
{
    ++fx.filter_abort;
    if (fx.cancel_on_abort)
        for (size_t i = 0; i != fx.num_att; ++i)
            if (fx.att[i].owned)
                owner_cancel(&fx.att[i]);
}

static void
filter_on_destroy(rm_stream_t *s, void *state)
{
    ++fx.filter_destroy;
}

static const rm_filter_t test_filter = {"test-owner",
                                        16,
                                        filter_on_request_head,
                                        filter_on_request_body,
                                        filter_on_response_head,
                                        filter_on_response_consumed,
                                        filter_on_abort,
                                        filter_on_destroy};
static const rm_filter_t *const test_filters[] = {&test_filter};
static const rm_filter_chain_t test_chain = {test_filters, 1};

/*
 * Streams
 */

static void
reset_fixture(void)
{
    memset(&fx, 0, sizeof(fx));
}

/* A stream whose request head has run the chain (the test filter holds it). */
static rm_stream_t *
open_stream(int is_grpc)
{
    reset_fixture();
    fx.s = rm_stream_create(&worker, config, NULL, lstats, &down_ops, &fx);
    fx.s->req.method = h2o_iovec_init(H2O_STRLIT("POST"));
    fx.s->req.path = h2o_iovec_init(H2O_STRLIT("/svc/Method"));
    fx.s->req.is_grpc = is_grpc;
    rm_stream_on_request_head(fx.s);
    assert_int_equal(fx.filter_request_head, 1);
    assert_non_null(rm_stream_filter_state(fx.s, &test_filter));
    return fx.s;
}

static int
stream_alive(void)
{
    return fx.filter_destroy == 0;
}

static void
down_detach(void)
{
    assert_false(fx.down_detached);
    fx.down_detached = 1;
    rm_stream_detach_downstream(fx.s);
}

/* Every party lets go in the ordinary order; the stream must then be gone. */
static void
finish(void)
{
    for (size_t i = 0; i != fx.num_att; ++i) {
        tattempt_t *t = &fx.att[i];
        if (t->codec_attached)
            codec_detach(t);
        if (t->owned)
            owner_release(t);
    }
    if (!fx.down_detached)
        down_detach();
    assert_int_equal(fx.filter_destroy, 1);
}

static void
read_request(tattempt_t *t, size_t max, const char *expected)
{
    char buf[64];
    assert_true(max <= sizeof(buf));
    size_t n = rm_attempt_read_request_body(t->a, buf, max);
    assert_int_equal(n, strlen(expected));
    assert_memory_equal(buf, expected, n);
}

static void
read_response(size_t max, const char *expected)
{
    char buf[256];
    assert_true(max <= sizeof(buf));
    size_t n = rm_stream_read_response_body(fx.s, buf, max);
    assert_int_equal(n, strlen(expected));
    assert_memory_equal(buf, expected, n);
}

static const char *
resp_header(const char *name)
{
    ssize_t i = rm_headers_find(&fx.s->resp.headers, name, strlen(name), 0);
    return i < 0 ? NULL : fx.s->resp.headers.entries[i].value.base;
}

static int
resp_header_is(const char *name, const char *value)
{
    ssize_t i = rm_headers_find(&fx.s->resp.headers, name, strlen(name), 0);
    return i >= 0 &&
           h2o_memis(fx.s->resp.headers.entries[i].value.base, fx.s->resp.headers.entries[i].value.len, value, strlen(value));
}

static int
setup(void **state)
{
    reset_fixture();
    stats = rm_stats_create(0);
    lstats = rm_stats_listener(stats, "test-listener");
    cstats = rm_stats_cluster(stats, "test-cluster");
    config = rm_config_create_defaults();
    /* nothing of the stream or attempt code touches the worker beyond keeping the pointer */
    memset(&worker, 0, sizeof(worker));
    worker.stats = stats;
    rm_stream_set_default_chain(&test_chain);
    return 0;
}

static int
teardown(void **state)
{
    /* every stream released its snapshot reference and its gauges */
    assert_int_equal(config->_refcnt, 1);
    assert_int_equal(lstats->rq_active, 0);
    assert_int_equal(cstats->rq_active, 0);
    rm_config_unref(config);
    rm_stats_destroy(stats);
    rm_stream_set_default_chain(NULL);
    return 0;
}

static int
group_teardown(void **state)
{
    rm_alloc_thread_exit();
    return 0;
}

/*
 * (a) replay: with req_keep every attempt reads from offset 0; downstream hears of each byte once
 */

static void
test_replay_from_zero(void **state)
{
    rm_stream_t *s = open_stream(0);
    s->req_keep = 1;
    tattempt_t *t1 = new_attempt();
    codec_attach(t1);
    assert_int_equal(cstats->rq_total, 1);
    assert_int_equal(cstats->rq_active, 1);

    rm_stream_on_request_body(s, "hello world", 11);
    assert_int_equal(fx.filter_request_body, 1);
    assert_int_equal(t1->req_ready, 1);
    assert_int_equal(rm_attempt_req_pending(t1->a), 11);
    assert_false(rm_attempt_req_eos(t1->a));

    read_request(t1, 5, "hello");
    assert_int_equal(fx.consumed, 5);
    assert_int_equal(fx.consumed_calls, 1);
    read_request(t1, 64, " world");
    assert_int_equal(fx.consumed, 11);
    assert_int_equal(fx.consumed_calls, 2);
    read_request(t1, 64, "");
    assert_int_equal(fx.consumed_calls, 2);
    /* kept for a replay */
    assert_int_equal(s->req_base, 0);
    assert_int_equal(s->req_body.buf->size, 11);

    /* the first try fails; the owner lets go of it from inside on_error */
    t1->error_action = ACT_RELEASE;
    codec_error(t1, RM_UPSTREAM_ERR_RESET);
    assert_int_equal(t1->on_error, 1);
    assert_int_equal(t1->last_err, RM_UPSTREAM_ERR_RESET);
    assert_int_equal(cstats->rq_reset, 1);
    assert_int_equal(cstats->rq_active, 0);
    assert_int_equal(s->num_attempts, 0);

    /* the retry reads the same bytes from the start; nothing is acknowledged twice */
    tattempt_t *t2 = new_attempt();
    t2->a->number = 1;
    codec_attach(t2);
    assert_int_equal(cstats->rq_total, 2);
    assert_int_equal(t2->a->req_off, 0);
    assert_int_equal(rm_attempt_req_pending(t2->a), 11);
    read_request(t2, 4, "hell");
    read_request(t2, 64, "o world");
    assert_int_equal(fx.consumed, 11);
    assert_int_equal(fx.consumed_calls, 2);

    /* new bytes: the retry is the furthest reader now, so its reads are acknowledged */
    rm_stream_on_request_body(s, "!!", 2);
    assert_int_equal(t2->req_ready, 1);
    assert_int_equal(t1->req_ready, 1);
    read_request(t2, 64, "!!");
    assert_int_equal(fx.consumed, 13);
    assert_int_equal(fx.consumed_calls, 3);

    rm_headers_t *trailers = h2o_mem_alloc_pool(&s->pool, sizeof(*trailers));
    memset(trailers, 0, sizeof(*trailers));
    rm_stream_on_request_end(s, trailers);
    assert_int_equal(t2->req_ready, 2);
    assert_true(rm_attempt_req_eos(t2->a));
    assert_ptr_equal(rm_attempt_req_trailers(t2->a), trailers);
    assert_int_equal(s->req_body.buf->size, 13);
    assert_int_equal(s->req_acked, 13);

    finish();
}

static void
test_replay_furthest_reader(void **state)
{
    /* two readers at once (a primary and a mirror): only the furthest one's progress goes downstream */
    rm_stream_t *s = open_stream(0);
    s->req_keep = 1;
    tattempt_t *p = new_attempt(), *m = new_attempt();
    m->a->mirror = 1;
    codec_attach(p);
    codec_attach(m);

    rm_stream_on_request_body(s, "0123456789", 10);
    assert_int_equal(p->req_ready, 1);
    assert_int_equal(m->req_ready, 1);

    read_request(p, 3, "012");
    assert_int_equal(fx.consumed, 3);
    read_request(m, 5, "01234");
    assert_int_equal(fx.consumed, 5);
    assert_int_equal(fx.consumed_calls, 2);
    read_request(p, 2, "34");
    assert_int_equal(fx.consumed, 5);
    assert_int_equal(fx.consumed_calls, 2);
    read_request(p, 3, "567");
    assert_int_equal(fx.consumed, 8);
    assert_int_equal(fx.consumed_calls, 3);
    read_request(m, 64, "56789");
    assert_int_equal(fx.consumed, 10);
    read_request(p, 64, "89");
    assert_int_equal(fx.consumed, 10);
    assert_int_equal(fx.consumed_calls, 4);
    assert_int_equal(s->req_acked, 10);
    assert_int_equal(s->req_body.buf->size, 10);

    /* the stream reads at any absolute offset within what it keeps */
    char buf[4];
    assert_int_equal(rm_stream_read_request_at(s, 6, buf, sizeof(buf)), 4);
    assert_memory_equal(buf, "6789", 4);
    assert_int_equal(fx.consumed_calls, 4);

    finish();
}

/*
 * (b) without req_keep bytes are dropped as they are read
 */

static void
test_drop_as_read(void **state)
{
    rm_stream_t *s = open_stream(0);
    assert_false(s->req_keep);
    tattempt_t *t = new_attempt();
    codec_attach(t);

    rm_stream_on_request_body(s, "abcdef", 6);
    read_request(t, 4, "abcd");
    assert_int_equal(s->req_base, 4);
    assert_int_equal(s->req_body.buf->size, 2);
    assert_int_equal(fx.consumed, 4);
    read_request(t, 64, "ef");
    assert_int_equal(s->req_base, 6);
    assert_int_equal(s->req_body.buf->size, 0);
    assert_int_equal(fx.consumed, 6);

    rm_stream_on_request_body(s, "gh", 2);
    assert_int_equal(rm_attempt_req_pending(t->a), 2);
    assert_int_equal(s->req_body.bytes_in, 8);
    read_request(t, 64, "gh");
    assert_int_equal(s->req_base, 8);
    assert_int_equal(s->req_body.buf->size, 0);
    assert_int_equal(fx.consumed, 8);

    /* a keeping stream drops explicitly once no replay needs the bytes (the router's replay bound) */
    s->req_keep = 1;
    rm_stream_on_request_body(s, "ijkl", 4);
    read_request(t, 2, "ij");
    assert_int_equal(s->req_base, 8);
    assert_int_equal(s->req_body.buf->size, 4);
    rm_stream_drop_request_before(s, t->a->req_off);
    assert_int_equal(s->req_base, 10);
    assert_int_equal(s->req_body.buf->size, 2);
    /* dropping before what is already gone changes nothing */
    rm_stream_drop_request_before(s, 5);
    assert_int_equal(s->req_base, 10);
    assert_int_equal(s->req_body.buf->size, 2);
    read_request(t, 64, "kl");
    assert_int_equal(fx.consumed, 12);

    finish();
}

/*
 * (c) commit: nothing of an uncommitted attempt reaches the downstream
 */

static void
test_head_held_until_commit(void **state)
{
    rm_stream_t *s = open_stream(0);
    tattempt_t *t = new_attempt();
    codec_attach(t);

    t->a->resp.status = 200;
    rm_headers_add(t->a->pool, &t->a->resp.headers, h2o_iovec_init(H2O_STRLIT("x-try")), h2o_iovec_init(H2O_STRLIT("1")));
    rm_attempt_on_response_head(t->a);
    assert_int_equal(t->on_head, 1);
    assert_int_equal(cstats->rs_by_class[1], 1);
    assert_int_equal(fx.heads, 0);
    assert_false(s->resp_head_sent);
    assert_int_equal(fx.filter_response_head, 0);
    assert_int_equal(lstats->rs_by_class[1], 0);

    rm_attempt_commit(t->a);
    assert_true(t->a->committed);
    assert_int_equal(fx.heads, 1);
    assert_int_equal(fx.head_status, 200);
    assert_false(fx.head_eos);
    assert_true(s->resp_head_sent);
    assert_int_equal(s->resp.status, 200);
    assert_true(resp_header_is("x-try", "1"));
    assert_int_equal(fx.filter_response_head, 1);
    assert_int_equal(lstats->rs_by_class[1], 1);

    /* body bytes go to the response pipe; the codec hears of them only when the downstream takes them */
    rm_attempt_on_response_body(t->a, "body", 4);
    assert_int_equal(t->on_body_start, 0);
    assert_int_equal(s->resp_body.buf->size, 4);
    assert_int_equal(fx.body_ready, 1);
    assert_int_equal(t->resp_consumed, 0);
    assert_int_equal(rm_attempt_resp_buffered(t->a), 4);

    read_response(3, "bod");
    assert_int_equal(fx.filter_consumed, 3);
    assert_int_equal(t->resp_consumed, 3);
    assert_int_equal(rm_attempt_resp_buffered(t->a), 1);
    read_response(64, "y");
    assert_int_equal(t->resp_consumed, 4);
    read_response(64, "");
    assert_int_equal(t->resp_consumed, 4);

    /* the end: trailers go downstream; the owner lets go from inside on_complete */
    rm_headers_t *trailers = h2o_mem_alloc_pool(&s->pool, sizeof(*trailers));
    memset(trailers, 0, sizeof(*trailers));
    t->complete_action = ACT_RELEASE;
    rm_attempt_on_response_end(t->a, trailers);
    assert_int_equal(t->on_complete, 1);
    assert_int_equal(t->on_end, 0);
    assert_true(s->resp_body.eos);
    assert_ptr_equal(s->resp_body.trailers, trailers);
    assert_int_equal(fx.body_ready, 2);
    /* the codec still holds the attempt */
    assert_int_equal(s->num_attempts, 1);
    codec_detach(t);
    assert_int_equal(s->num_attempts, 0);

    finish();
}

static void
test_retry_before_commit(void **state)
{
    /* the first try answers 503 and the owner abandons it: the downstream sees only the second try */
    rm_stream_t *s = open_stream(0);
    s->req_keep = 1;
    tattempt_t *t1 = new_attempt();
    codec_attach(t1);
    t1->head_action = ACT_CANCEL;
    t1->a->resp.status = 503;
    rm_attempt_on_response_head(t1->a);
    assert_int_equal(t1->on_head, 1);
    assert_int_equal(t1->cancels, 1);
    assert_int_equal(fx.heads, 0);
    assert_int_equal(cstats->rs_by_class[4], 1);
    assert_int_equal(s->num_attempts, 0);

    tattempt_t *t2 = new_attempt();
    codec_attach(t2);
    t2->head_action = ACT_COMMIT;
    t2->a->resp.status = 201;
    rm_attempt_on_response_head(t2->a);
    assert_int_equal(fx.heads, 1);
    assert_int_equal(fx.head_status, 201);
    assert_int_equal(lstats->rs_by_class[1], 1);
    assert_int_equal(lstats->rs_by_class[4], 0);

    rm_attempt_on_response_body(t2->a, "ok", 2);
    assert_int_equal(s->resp_body.buf->size, 2);
    read_response(64, "ok");
    assert_int_equal(t2->resp_consumed, 2);
    rm_attempt_on_response_end(t2->a, NULL);
    assert_int_equal(t2->on_complete, 1);

    finish();
}

static void
test_commit_on_body_start(void **state)
{
    /* a held head (gRPC): the owner decides at the first body byte; the byte then goes downstream */
    rm_stream_t *s = open_stream(1);
    tattempt_t *t = new_attempt();
    codec_attach(t);
    t->a->resp.status = 200;
    rm_attempt_on_response_head(t->a);
    assert_int_equal(t->on_head, 1);
    assert_int_equal(fx.heads, 0);

    t->body_start_action = ACT_COMMIT;
    rm_attempt_on_response_body(t->a, "\0\0\0\0\1x", 6);
    assert_int_equal(t->on_body_start, 1);
    assert_int_equal(fx.heads, 1);
    assert_int_equal(s->resp_body.buf->size, 6);
    assert_int_equal(t->resp_consumed, 0);
    /* once committed, no more on_body_start */
    rm_attempt_on_response_body(t->a, "y", 1);
    assert_int_equal(t->on_body_start, 1);
    assert_int_equal(s->resp_body.buf->size, 7);
    char buf[16];
    assert_int_equal(rm_stream_read_response_body(s, buf, sizeof(buf)), 7);
    assert_int_equal(t->resp_consumed, 7);

    finish();
}

static void
test_trailers_only_commit(void **state)
{
    /* a head with END_STREAM: the commit ends the stream's response pipe at once */
    rm_stream_t *s = open_stream(1);
    tattempt_t *t = new_attempt();
    codec_attach(t);
    t->a->resp.status = 200;
    t->a->resp_no_body = 1;
    t->head_action = ACT_COMMIT;
    rm_attempt_on_response_head(t->a);
    assert_int_equal(fx.heads, 1);
    assert_true(fx.head_eos);
    assert_true(s->resp_body.eos);

    finish();
}

/*
 * (d) mirrors: bytes acknowledged to their codec, never in the stream
 */

static void
test_mirror_discarded(void **state)
{
    rm_stream_t *s = open_stream(0);
    tattempt_t *p = new_attempt(), *m = new_attempt();
    m->a->mirror = 1;
    codec_attach(p);
    codec_attach(m);

    m->a->resp.status = 200;
    rm_attempt_on_response_head(m->a);
    assert_int_equal(m->on_head, 0);
    assert_int_equal(cstats->rs_by_class[1], 1);
    assert_int_equal(fx.heads, 0);

    rm_attempt_on_response_body(m->a, "mirror-bytes", 12);
    assert_int_equal(m->on_body_start, 0);
    assert_int_equal(m->resp_consumed, 12);
    assert_int_equal(s->resp_body.buf->size, 0);
    assert_int_equal(s->resp_body.bytes_in, 0);
    assert_int_equal(fx.body_ready, 0);
    assert_int_equal(rm_attempt_resp_buffered(m->a), 0);

    /* the primary's response flows while the mirror's keeps being dropped */
    p->a->resp.status = 200;
    p->head_action = ACT_COMMIT;
    rm_attempt_on_response_head(p->a);
    assert_int_equal(fx.heads, 1);
    rm_attempt_on_response_body(p->a, "primary", 7);
    rm_attempt_on_response_body(m->a, "more", 4);
    assert_int_equal(m->resp_consumed, 16);
    assert_int_equal(s->resp_body.buf->size, 7);
    read_response(64, "primary");
    assert_int_equal(p->resp_consumed, 7);
    assert_int_equal(m->resp_consumed, 16);

    /* the owner learns that the mirror ended, the stream does not */
    m->end_action = ACT_RELEASE;
    rm_attempt_on_response_end(m->a, NULL);
    assert_int_equal(m->on_end, 1);
    assert_int_equal(m->on_complete, 0);
    assert_false(s->resp_body.eos);
    codec_detach(m);
    assert_int_equal(s->num_attempts, 1);

    rm_attempt_on_response_end(p->a, NULL);
    assert_true(s->resp_body.eos);
    finish();
}

static void
test_abandoned_attempt_discarded(void **state)
{
    /* an attempt the owner cancelled whose codec detaches later: what still arrives is acknowledged and dropped */
    rm_stream_t *s = open_stream(0);
    tattempt_t *t = new_attempt();
    codec_attach(t);
    t->detach_on_cancel = 0;
    owner_cancel(t);
    assert_int_equal(t->cancels, 1);
    assert_int_equal(s->num_attempts, 1);

    t->a->resp.status = 200;
    rm_attempt_on_response_head(t->a);
    assert_int_equal(t->on_head, 0);
    rm_attempt_on_response_body(t->a, "late", 4);
    assert_int_equal(t->resp_consumed, 4);
    assert_int_equal(s->resp_body.buf->size, 0);
    rm_attempt_on_response_end(t->a, NULL);
    assert_int_equal(t->on_end, 0);
    assert_false(s->resp_body.eos);
    /* a second cancel is a no-op */
    rm_attempt_cancel(t->a);
    assert_int_equal(t->cancels, 1);
    codec_detach(t);
    assert_int_equal(s->num_attempts, 0);
    assert_int_equal(fx.heads, 0);

    finish();
}

/*
 * (e) lifetimes
 */

enum { EV_DOWN, EV_RELEASE1, EV_DETACH1, EV_RELEASE2, EV_DETACH2, NUM_EVENTS };

static int
next_permutation(int *v, size_t n)
{
    size_t i = n - 1;
    while (i > 0 && v[i - 1] >= v[i])
        --i;
    if (i == 0)
        return 0;
    size_t j = n - 1;
    while (v[j] <= v[i - 1])
        --j;
    int tmp = v[i - 1];
    v[i - 1] = v[j];
    v[j] = tmp;
    for (size_t a = i, b = n - 1; a < b; ++a, --b) {
        tmp = v[a];
        v[a] = v[b];
        v[b] = tmp;
    }
    return 1;
}

static void
run_order(const int *order, int use_cancel)
{
    open_stream(0);
    tattempt_t *t[2];
    t[0] = new_attempt();
    t[1] = new_attempt();
    codec_attach(t[0]);
    codec_attach(t[1]);
    /* some traffic, so the attempts hold real state */
    fx.s->req_keep = 1;
    rm_stream_on_request_body(fx.s, "payload", 7);
    read_request(t[0], 64, "payload");
    t[1]->detach_on_cancel = 0;

    int released[2] = {0, 0}, detached[2] = {0, 0}, down = 0;
    for (size_t k = 0; k != NUM_EVENTS; ++k) {
        int ev = order[k];
        if (ev == EV_DOWN) {
            down = 1;
            down_detach();
        } else {
            size_t i = ev == EV_RELEASE1 || ev == EV_DETACH1 ? 0 : 1;
            if (ev == EV_RELEASE1 || ev == EV_RELEASE2) {
                released[i] = 1;
                if (use_cancel) {
                    owner_cancel(t[i]);
                    /* t[0]'s codec detaches inside cancel; t[1]'s only later */
                    if (!detached[i])
                        assert_int_equal(t[i]->cancels, 1);
                    if (t[i]->detach_on_cancel)
                        detached[i] = 1;
                } else {
                    owner_release(t[i]);
                }
            } else if (!detached[i]) {
                detached[i] = 1;
                codec_detach(t[i]);
            }
        }
        unsigned live = (unsigned)!(released[0] && detached[0]) + (unsigned)!(released[1] && detached[1]);
        if (down && live == 0) {
            assert_int_equal(fx.filter_destroy, 1);
        } else {
            assert_int_equal(fx.filter_destroy, 0);
            assert_int_equal(fx.s->num_attempts, live);
        }
    }
    assert_int_equal(fx.filter_destroy, 1);
    /* the downstream detaching while attempts lived told the filters once; never otherwise */
    assert_true(fx.filter_abort <= 1);
}

static void
test_lifetime_every_order(void **state)
{
    for (int use_cancel = 0; use_cancel != 2; ++use_cancel) {
        int order[NUM_EVENTS] = {EV_DOWN, EV_RELEASE1, EV_DETACH1, EV_RELEASE2, EV_DETACH2};
        size_t runs = 0;
        do {
            run_order(order, use_cancel);
            ++runs;
        } while (next_permutation(order, NUM_EVENTS));
        assert_int_equal(runs, 120);
    }
}

static void
test_lifetime_abort_cancels(void **state)
{
    /* the downstream goes first and the owner cancels on abort (the router's way): a codec that detaches
     * synchronously frees everything at once, an asynchronous one keeps the stream until it detaches */
    rm_stream_t *s = open_stream(0);
    fx.cancel_on_abort = 1;
    tattempt_t *t1 = new_attempt(), *t2 = new_attempt();
    codec_attach(t1);
    codec_attach(t2);
    t2->detach_on_cancel = 0;
    rm_stream_on_downstream_abort(s);
    assert_int_equal(fx.filter_abort, 1);
    assert_int_equal(lstats->rs_reset, 1);
    assert_int_equal(t1->cancels, 1);
    assert_int_equal(t2->cancels, 1);
    assert_int_equal(s->num_attempts, 1);
    /* request bytes arriving now are dropped and not acknowledged to a downstream that is gone */
    rm_stream_on_request_body(s, "zz", 2);
    assert_int_equal(s->req_body.buf->size, 0);
    assert_int_equal(fx.consumed, 0);
    down_detach();
    assert_int_equal(fx.filter_abort, 1);
    assert_true(stream_alive());
    codec_detach(t2);
    assert_int_equal(fx.filter_destroy, 1);

    /* both codecs synchronous: the detach frees the stream before it returns */
    open_stream(0);
    fx.cancel_on_abort = 1;
    t1 = new_attempt();
    t2 = new_attempt();
    codec_attach(t1);
    codec_attach(t2);
    down_detach();
    assert_int_equal(fx.filter_abort, 1);
    assert_int_equal(t1->cancels + t2->cancels, 2);
    assert_int_equal(fx.filter_destroy, 1);

    /* no attempt: detaching frees the stream without aborting anything */
    open_stream(0);
    down_detach();
    assert_int_equal(fx.filter_abort, 0);
    assert_int_equal(fx.filter_destroy, 1);
}

static void
test_cancel_inside_on_head(void **state)
{
    /* the owner cancels from inside on_head: the codec detaches inside the cancel, yet the attempt
     * survives until the codec's call returns */
    rm_stream_t *s = open_stream(0);
    tattempt_t *t = new_attempt();
    codec_attach(t);
    t->head_action = ACT_CANCEL;
    t->a->resp.status = 502;
    rm_attempt_on_response_head(t->a);
    assert_int_equal(t->on_head, 1);
    assert_int_equal(t->cancels, 1);
    assert_true(t->busy_in_head != 0);
    assert_int_equal(t->attempts_in_head, 1);
    assert_int_equal(s->num_attempts, 0);
    assert_int_equal(fx.heads, 0);
    finish();

    /* the same with the downstream already gone and this the last attempt: the stream outlives the callback */
    open_stream(0);
    t = new_attempt();
    codec_attach(t);
    down_detach();
    assert_true(stream_alive());
    t->head_action = ACT_CANCEL;
    t->a->resp.status = 200;
    rm_attempt_on_response_head(t->a);
    assert_int_equal(t->cancels, 1);
    assert_true(t->stream_alive_in_head);
    assert_int_equal(t->attempts_in_head, 1);
    assert_int_equal(fx.filter_destroy, 1);

    /* releasing from inside on_error, last attempt, downstream gone */
    open_stream(0);
    t = new_attempt();
    codec_attach(t);
    down_detach();
    t->error_action = ACT_RELEASE;
    codec_error(t, RM_UPSTREAM_ERR_CONNECT);
    assert_int_equal(t->on_error, 1);
    assert_int_equal(cstats->rq_unavailable, 1);
    assert_int_equal(fx.filter_destroy, 1);

    /* releasing from inside on_complete while the codec is still attached: freed when the codec detaches */
    open_stream(0);
    t = new_attempt();
    codec_attach(t);
    t->head_action = ACT_COMMIT;
    t->complete_action = ACT_RELEASE;
    t->a->resp.status = 200;
    rm_attempt_on_response_head(t->a);
    rm_attempt_on_response_end(t->a, NULL);
    down_detach();
    assert_true(stream_alive());
    codec_detach(t);
    assert_int_equal(fx.filter_destroy, 1);
}

static void
test_unattach_keeps_attempt(void **state)
{
    /* a codec handing the attempt back (to be taken by another) neither frees it nor double-counts */
    rm_stream_t *s = open_stream(0);
    tattempt_t *t = new_attempt();
    codec_attach(t);
    assert_int_equal(cstats->rq_active, 1);
    t->codec_attached = 0;
    rm_attempt_unattach(t->a);
    assert_int_equal(cstats->rq_active, 0);
    assert_int_equal(s->num_attempts, 1);
    /* a detach without an attach is a no-op */
    rm_attempt_detach(t->a);
    assert_int_equal(s->num_attempts, 1);
    codec_attach(t);
    assert_int_equal(cstats->rq_total, 2);
    assert_int_equal(cstats->rq_active, 1);
    finish();
}

/*
 * (f) local replies
 */

static void
test_local_reply_grpc(void **state)
{
    rm_stream_t *s = open_stream(1);
    fx.cancel_on_abort = 1;
    tattempt_t *t = new_attempt();
    codec_attach(t);

    rm_stream_send_local_reply(s, 503, 14, "no healthy upstream");
    assert_int_equal(fx.filter_abort, 1);
    assert_int_equal(t->cancels, 1);
    assert_int_equal(s->num_attempts, 0);
    assert_true(s->local_reply);
    assert_int_equal(fx.heads, 1);
    assert_int_equal(fx.head_status, 200);
    assert_true(fx.head_eos);
    assert_true(s->resp_body.eos);
    assert_int_equal(s->resp_body.buf->size, 0);
    assert_true(resp_header_is("content-type", "application/grpc"));
    assert_true(resp_header_is("grpc-status", "14"));
    assert_non_null(resp_header("grpc-message"));
    assert_true(resp_header_is("server", "remora"));
    assert_int_equal(lstats->rs_by_class[1], 1);
    assert_int_equal(lstats->rq_total, 1);

    /* once the head went down: nothing more, and the filters are not aborted again */
    rm_stream_send_local_reply(s, 500, 13, "again");
    assert_int_equal(fx.heads, 1);
    assert_int_equal(fx.filter_abort, 1);
    assert_true(resp_header_is("grpc-status", "14"));

    /* request bytes that still arrive are dropped but acknowledged (the connection's window stays open) */
    rm_stream_on_request_body(s, "late", 4);
    assert_int_equal(fx.consumed, 4);
    assert_int_equal(s->req_body.buf->size, 0);
    assert_int_equal(fx.filter_request_body, 0);

    rm_stream_on_downstream_abort(s);
    assert_int_equal(fx.filter_abort, 1);
    finish();
}

static void
test_local_reply_http(void **state)
{
    rm_stream_t *s = open_stream(0);
    rm_stream_send_local_reply(s, 503, 14, "no healthy upstream");
    assert_int_equal(fx.filter_abort, 1);
    assert_int_equal(fx.heads, 1);
    assert_int_equal(fx.head_status, 503);
    assert_true(fx.head_eos);
    assert_int_equal(s->resp.content_length, 20);
    assert_true(resp_header_is("content-type", "text/plain; charset=utf-8"));
    assert_null(resp_header("grpc-status"));
    assert_int_equal(fx.filter_response_head, 1);
    assert_int_equal(lstats->rs_by_class[4], 1);
    read_response(256, "no healthy upstream\n");
    finish();
}

/*
 * (g) replies by cause
 */

static void
test_reply_counts_cause(void **state)
{
    const rm_local_reply_row_t *row = &rm_local_replies[RM_LOCAL_UNREACHABLE];
    rm_stream_t *s = open_stream(0);
    rm_stream_reply(s, RM_LOCAL_UNREACHABLE, "connection refused");
    assert_int_equal(lstats->local_replies[RM_LOCAL_UNREACHABLE], 1);
    assert_int_equal(fx.head_status, row->http_status);
    char expected[256];
    snprintf(expected, sizeof(expected), "%s: connection refused\n", row->message);
    read_response(256, expected);
    /* a second reply for the same stream is neither sent nor counted */
    rm_stream_reply(s, RM_LOCAL_NO_ROUTE, NULL);
    assert_int_equal(lstats->local_replies[RM_LOCAL_NO_ROUTE], 0);
    assert_int_equal(fx.heads, 1);
    finish();

    /* no detail: the cause's message alone; gRPC: the cause's gRPC status */
    row = &rm_local_replies[RM_LOCAL_NO_ROUTE];
    s = open_stream(1);
    rm_stream_reply(s, RM_LOCAL_NO_ROUTE, NULL);
    assert_int_equal(lstats->local_replies[RM_LOCAL_NO_ROUTE], 1);
    char status[16];
    snprintf(status, sizeof(status), "%d", row->grpc_status);
    assert_true(resp_header_is("grpc-status", status));
    assert_true(resp_header_is("grpc-message", row->message));
    finish();

    s = open_stream(0);
    rm_stream_reply(s, RM_LOCAL_NO_ROUTE, "");
    assert_int_equal(lstats->local_replies[RM_LOCAL_NO_ROUTE], 2);
    snprintf(expected, sizeof(expected), "%s\n", row->message);
    read_response(256, expected);
    finish();

    /* explicit statuses and extra headers are counted under their cause too */
    s = open_stream(0);
    rm_stream_reply_status(s, RM_LOCAL_FAULT_ABORT, 418, 2, "fault");
    assert_int_equal(lstats->local_replies[RM_LOCAL_FAULT_ABORT], 1);
    assert_int_equal(fx.head_status, 418);
    finish();

    s = open_stream(0);
    rm_headers_t extra = {NULL, 0, 0};
    rm_headers_add(&s->pool, &extra, h2o_iovec_init(H2O_STRLIT("location")), h2o_iovec_init(H2O_STRLIT("https://x.test/")));
    rm_stream_reply_with_headers(s, RM_LOCAL_REDIRECT, 301, 0, "moved", &extra);
    assert_int_equal(lstats->local_replies[RM_LOCAL_REDIRECT], 1);
    assert_int_equal(fx.head_status, 301);
    assert_true(resp_header_is("location", "https://x.test/"));
    finish();

    uint64_t want[RM_LOCAL_REPLY_MAX] = {0};
    want[RM_LOCAL_UNREACHABLE] = 1;
    want[RM_LOCAL_NO_ROUTE] = 2;
    want[RM_LOCAL_FAULT_ABORT] = 1;
    want[RM_LOCAL_REDIRECT] = 1;
    for (size_t i = 0; i != RM_LOCAL_REPLY_MAX; ++i)
        assert_int_equal(lstats->local_replies[i], want[i]);
    assert_int_equal(lstats->rq_total, 5);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_replay_from_zero, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replay_furthest_reader, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drop_as_read, setup, teardown),
        cmocka_unit_test_setup_teardown(test_head_held_until_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_retry_before_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_commit_on_body_start, setup, teardown),
        cmocka_unit_test_setup_teardown(test_trailers_only_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mirror_discarded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_abandoned_attempt_discarded, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lifetime_every_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lifetime_abort_cancels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cancel_inside_on_head, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unattach_keeps_attempt, setup, teardown),
        cmocka_unit_test_setup_teardown(test_local_reply_grpc, setup, teardown),
        cmocka_unit_test_setup_teardown(test_local_reply_http, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reply_counts_cause, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, group_teardown);
}
