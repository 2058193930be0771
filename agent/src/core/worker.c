#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "remora/thread.h"
#include "core/alloc.h"
#include "core/worker.h"

static __thread rm_worker_t *current_worker;
static const rm_worker_module_t *modules[RM_WORKER_MAX_MODULES];
static size_t num_modules;

size_t
rm_worker_register_module(const rm_worker_module_t *module)
{
    if (num_modules == RM_WORKER_MAX_MODULES)
        rm_fatal("too many worker modules (raise RM_WORKER_MAX_MODULES)");
    modules[num_modules] = module;
    return num_modules++;
}

/*
 * The timer wheel runs on one uv timer, re-armed before the loop blocks for the earliest expiry.
 */

static void
on_wheel_timer(uv_timer_t *timer)
{
    rm_worker_t *worker = timer->data;
    worker->_wheel_armed_ms = UINT64_MAX;
    rm_timerwheel_run(&worker->timers, uv_now(&worker->loop));
}

static void
arm_wheel(rm_worker_t *worker)
{
    uint64_t next = rm_timerwheel_next_expiry_ms(&worker->timers);
    if (next == worker->_wheel_armed_ms)
        return;
    worker->_wheel_armed_ms = next;
    if (next == UINT64_MAX) {
        uv_timer_stop(&worker->_wheel_timer);
        return;
    }
    uint64_t now = uv_now(&worker->loop);
    uv_timer_start(&worker->_wheel_timer, on_wheel_timer, next > now ? next - now : 0, 0);
}

void
rm_worker_timer_start(rm_worker_t *worker, rm_timer_t *timer, uint64_t delay_ms)
{
    rm_timerwheel_link(&worker->timers, timer, uv_now(&worker->loop) + delay_ms);
}

uint64_t
rm_worker_now_ms(rm_worker_t *worker)
{
    return uv_now(&worker->loop);
}

rm_worker_t *
rm_worker_current(void)
{
    return current_worker;
}

static void
on_async(uv_async_t *async)
{
    rm_worker_t *worker = async->data;
    /* wakeups coalesce: take the whole queue */
    pthread_mutex_lock(&worker->_queue_mutex);
    rm_worker_msg_t *msg = worker->_queue_head;
    worker->_queue_head = NULL;
    worker->_queue_tail = &worker->_queue_head;
    pthread_mutex_unlock(&worker->_queue_mutex);
    while (msg != NULL) {
        rm_worker_msg_t *next = msg->_next;
        msg->cb(worker, msg);
        msg = next;
    }
}

void
rm_worker_post(rm_worker_t *worker, rm_worker_msg_t *msg)
{
    msg->_next = NULL;
    pthread_mutex_lock(&worker->_queue_mutex);
    *worker->_queue_tail = msg;
    worker->_queue_tail = &msg->_next;
    pthread_mutex_unlock(&worker->_queue_mutex);
    uv_async_send(&worker->_async);
}

static void
run_end_of_iteration(rm_worker_t *worker)
{
    /* flushing can queue deferred work and vice versa: run both until quiet */
    while (worker->_flush != NULL || worker->_deferred != NULL) {
        while (worker->_flush != NULL) {
            rm_flushable_t *f = worker->_flush;
            worker->_flush = f->_next;
            f->_queued = 0;
            f->cb(f);
        }
        while (worker->_deferred != NULL) {
            rm_deferred_t *d = worker->_deferred;
            worker->_deferred = d->_next;
            d->_queued = 0;
            d->cb(d);
        }
    }
}

static void
on_check(uv_check_t *check)
{
    run_end_of_iteration(check->data);
    arm_wheel(check->data);
}

/* uv_check runs after I/O polling; work queued from timers or async callbacks that run before the
 * poll phase would otherwise wait a whole poll. A prepare handle runs it before blocking too. */
static void
on_prepare(uv_prepare_t *prepare)
{
    run_end_of_iteration(prepare->data);
    arm_wheel(prepare->data);
}

void
rm_worker_defer(rm_worker_t *worker, rm_deferred_t *d)
{
    if (d->_queued)
        return;
    d->_queued = 1;
    d->_next = worker->_deferred;
    worker->_deferred = d;
}

void
rm_worker_schedule_flush(rm_worker_t *worker, rm_flushable_t *f)
{
    if (f->_queued)
        return;
    f->_queued = 1;
    f->_next = worker->_flush;
    worker->_flush = f;
}

void
rm_worker_cancel_deferred(rm_worker_t *worker, rm_deferred_t *d)
{
    if (!d->_queued)
        return;
    for (rm_deferred_t **slot = &worker->_deferred; *slot != NULL; slot = &(*slot)->_next) {
        if (*slot == d) {
            *slot = d->_next;
            break;
        }
    }
    d->_queued = 0;
}

void
rm_worker_cancel_flush(rm_worker_t *worker, rm_flushable_t *f)
{
    if (!f->_queued)
        return;
    for (rm_flushable_t **slot = &worker->_flush; *slot != NULL; slot = &(*slot)->_next) {
        if (*slot == f) {
            *slot = f->_next;
            break;
        }
    }
    f->_queued = 0;
}

void
rm_worker_init(rm_worker_t *worker, unsigned id, rm_config_t *config, rm_tls_set_t *tls, void (*release_tls)(rm_tls_set_t *),
               rm_stats_t *stats)
{
    memset(worker, 0, sizeof(*worker));
    worker->id = id;
    worker->stats = stats;
    worker->config = rm_config_ref(config);
    worker->tls = tls;
    worker->release_tls = release_tls;
    worker->rng_state = (rm_now_us() ^ ((uint64_t)(id + 1) << 40) ^ (uint64_t)(uintptr_t)worker) | 1;
    h2o_linklist_init_anchor(&worker->downstream_conns);
    h2o_linklist_init_anchor(&worker->upstream_conns);
    pthread_mutex_init(&worker->_queue_mutex, NULL);
    worker->_queue_tail = &worker->_queue_head;
    if (uv_loop_init(&worker->loop) != 0)
        rm_fatal("uv_loop_init failed");
    uv_async_init(&worker->loop, &worker->_async, on_async);
    worker->_async.data = worker;
    uv_check_init(&worker->loop, &worker->_check);
    worker->_check.data = worker;
    uv_prepare_init(&worker->loop, &worker->_prepare);
    worker->_prepare.data = worker;
    uv_timer_init(&worker->loop, &worker->_drain_timer);
    worker->_drain_timer.data = worker;
    uv_timer_init(&worker->loop, &worker->_wheel_timer);
    worker->_wheel_timer.data = worker;
    worker->_wheel_armed_ms = UINT64_MAX;
    rm_timerwheel_init(&worker->timers, uv_now(&worker->loop));
}

void
rm_worker_apply_config(rm_worker_t *worker, rm_config_t *config, rm_tls_set_t *tls)
{
    rm_config_t *old = worker->config;
    rm_tls_set_t *old_tls = worker->tls;
    worker->config = rm_config_ref(config);
    worker->tls = tls;
    for (size_t i = 0; i != num_modules; ++i)
        if (modules[i]->on_config != NULL)
            modules[i]->on_config(worker, worker->module_state[i]);
    rm_config_unref(old);
    if (old_tls != NULL)
        worker->release_tls(old_tls);
    rm_log_debug("worker", "worker %u: config generation %llu in service", worker->id, (unsigned long long)config->generation);
}

static void
maybe_finish_drain(rm_worker_t *worker)
{
    if (worker->draining && !worker->stopping && worker->num_downstream_conns == 0) {
        worker->stopping = 1;
        uv_stop(&worker->loop);
    }
}

void
rm_worker_conn_closed(rm_worker_t *worker)
{
    maybe_finish_drain(worker);
}

static void
on_drain_timeout(uv_timer_t *timer)
{
    rm_worker_t *worker = timer->data;
    rm_log_warn("worker", "worker %u: drain timeout with %zu connections still open; closing them", worker->id,
                worker->num_downstream_conns);
    worker->stopping = 1;
    uv_stop(&worker->loop);
}

void
rm_worker_start_drain(rm_worker_t *worker, uint64_t timeout_ms)
{
    if (worker->draining)
        return;
    worker->draining = 1;
    for (size_t i = 0; i != num_modules; ++i)
        if (modules[i]->drain != NULL)
            modules[i]->drain(worker, worker->module_state[i]);
    uv_timer_start(&worker->_drain_timer, on_drain_timeout, timeout_ms, 0);
    maybe_finish_drain(worker);
}

static void
on_close_walk(uv_handle_t *handle, void *arg)
{
    if (!uv_is_closing(handle))
        uv_close(handle, NULL);
}

static void *
worker_main(void *arg)
{
    rm_worker_t *worker = arg;
    current_worker = worker;
    for (size_t i = 0; i != num_modules; ++i)
        if (modules[i]->init != NULL)
            worker->module_state[i] = modules[i]->init(worker);
    uv_check_start(&worker->_check, on_check);
    uv_prepare_start(&worker->_prepare, on_prepare);

    uv_run(&worker->loop, UV_RUN_DEFAULT);

    /* shutting down: each module closes what it owns (downstream connections first, then clusters),
     * then every handle */
    for (size_t i = 0; i != num_modules; ++i) {
        if (modules[i]->close != NULL)
            modules[i]->close(worker, worker->module_state[i]);
        run_end_of_iteration(worker);
    }
    uv_run(&worker->loop, UV_RUN_NOWAIT);
    rm_timerwheel_dispose(&worker->timers);
    uv_walk(&worker->loop, on_close_walk, NULL);
    uv_run(&worker->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&worker->loop) != 0)
        rm_log_debug("worker", "worker %u: loop closed with handles still open", worker->id);
    for (size_t i = num_modules; i != 0; --i)
        if (modules[i - 1]->thread_exit != NULL)
            modules[i - 1]->thread_exit(worker, worker->module_state[i - 1]);
    rm_alloc_thread_exit();
    if (worker->on_exit != NULL)
        worker->on_exit(worker);
    return NULL;
}

int
rm_worker_start(rm_worker_t *worker)
{
    int r = rm_thread_create(&worker->thread, worker_main, worker);
    return r == 0 ? 0 : -r;
}

void
rm_worker_join(rm_worker_t *worker)
{
    pthread_join(worker->thread, NULL);
    rm_config_unref(worker->config);
    worker->config = NULL;
    if (worker->tls != NULL)
        worker->release_tls(worker->tls);
    worker->tls = NULL;
    pthread_mutex_destroy(&worker->_queue_mutex);
}
