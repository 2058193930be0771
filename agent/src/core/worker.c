#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "core/alloc.h"
#include "core/worker.h"
#include "http2/h2mem.h"
#include "net/listener.h"
#include "net/resolver.h"
#include "tls/tls.h"
#include "upstream/cluster.h"

static __thread rm_worker_t *current_worker;

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
}

/* uv_check runs after I/O polling; work queued from timers or async callbacks that run before the
 * poll phase would otherwise wait a whole poll. A prepare handle runs it before blocking too. */
static void
on_prepare(uv_prepare_t *prepare)
{
    run_end_of_iteration(prepare->data);
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

h2o_timeout_t *
rm_worker_get_timeout(rm_worker_t *worker, uint64_t ms)
{
    rm_worker_timeout_t *t;
    for (t = worker->_timeouts; t != NULL; t = t->_next)
        if (t->ms == ms)
            return &t->timeout;
    t = rm_calloc(1, sizeof(*t));
    t->ms = ms;
    h2o_timeout_init(&worker->loop, &t->timeout, ms);
    t->_next = worker->_timeouts;
    worker->_timeouts = t;
    return &t->timeout;
}

void
rm_worker_init(rm_worker_t *worker, unsigned id, rm_config_t *config, rm_tls_set_t *tls, rm_stats_t *stats)
{
    memset(worker, 0, sizeof(*worker));
    worker->id = id;
    worker->stats = stats;
    worker->config = rm_config_ref(config);
    worker->tls = rm_tls_set_ref(tls);
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
}

static void
build_clusters(rm_worker_t *worker)
{
    rm_config_t *config = worker->config;
    rm_cluster_t **clusters = rm_calloc(config->num_clusters, sizeof(*clusters));
    for (size_t i = 0; i != config->num_clusters; ++i) {
        const rm_config_cluster_t *cc = &config->clusters[i];
        /* keep a runtime whose settings did not change: its pooled connections stay in use */
        for (size_t j = 0; j != worker->num_clusters; ++j) {
            rm_cluster_t *old = worker->clusters[j];
            if (old != NULL && rm_cluster_can_reuse(old, cc)) {
                rm_cluster_update_config(old, cc);
                clusters[i] = old;
                worker->clusters[j] = NULL;
                break;
            }
        }
        if (clusters[i] == NULL)
            clusters[i] = rm_cluster_create(worker, cc);
    }
    for (size_t j = 0; j != worker->num_clusters; ++j)
        if (worker->clusters[j] != NULL)
            rm_cluster_retire(worker->clusters[j]);
    free(worker->clusters);
    worker->clusters = clusters;
    worker->num_clusters = config->num_clusters;
}

rm_cluster_t *
rm_worker_cluster(rm_worker_t *worker, size_t i)
{
    return i < worker->num_clusters ? worker->clusters[i] : NULL;
}

void
rm_worker_apply_config(rm_worker_t *worker, rm_config_t *config, rm_tls_set_t *tls)
{
    rm_config_t *old = worker->config;
    rm_tls_set_t *old_tls = worker->tls;
    worker->config = rm_config_ref(config);
    worker->tls = rm_tls_set_ref(tls);
    build_clusters(worker);
    rm_listeners_apply_config(worker);
    rm_config_unref(old);
    rm_tls_set_unref(old_tls);
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
    rm_listeners_close(worker);
    rm_downstream_drain_all(worker);
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
    char errbuf[256];
    worker->resolver = rm_resolver_create(&worker->loop, (const char *const *)worker->config->dns_servers,
                                          worker->config->num_dns_servers, errbuf, sizeof(errbuf));
    if (worker->resolver == NULL)
        rm_log_error("worker", "worker %u: DNS resolver: %s (host-name endpoints will fail)", worker->id, errbuf);
    build_clusters(worker);
    if (rm_listeners_start(worker) != 0)
        rm_log_error("worker", "worker %u: failed to start listeners", worker->id);
    uv_check_start(&worker->_check, on_check);
    uv_prepare_start(&worker->_prepare, on_prepare);

    uv_run(&worker->loop, UV_RUN_DEFAULT);

    /* shutting down: close every downstream connection, then every cluster, then every handle */
    rm_downstream_close_all(worker);
    run_end_of_iteration(worker);
    for (size_t i = 0; i != worker->num_clusters; ++i)
        rm_cluster_retire(worker->clusters[i]);
    worker->num_clusters = 0;
    rm_clusters_close_all(worker);
    run_end_of_iteration(worker);
    if (worker->resolver != NULL) {
        rm_resolver_destroy(worker->resolver);
        worker->resolver = NULL;
    }
    uv_run(&worker->loop, UV_RUN_NOWAIT);
    for (rm_worker_timeout_t *t = worker->_timeouts; t != NULL; t = t->_next)
        h2o_timeout_dispose(&worker->loop, &t->timeout);
    uv_walk(&worker->loop, on_close_walk, NULL);
    uv_run(&worker->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&worker->loop) != 0)
        rm_log_debug("worker", "worker %u: loop closed with handles still open", worker->id);
    rm_alloc_thread_exit();
    rm_h2_mem_thread_exit();
    if (worker->on_exit != NULL)
        worker->on_exit(worker);
    return NULL;
}

int
rm_worker_start(rm_worker_t *worker)
{
    int r = pthread_create(&worker->thread, NULL, worker_main, worker);
    return r == 0 ? 0 : -r;
}

void
rm_worker_join(rm_worker_t *worker)
{
    pthread_join(worker->thread, NULL);
    while (worker->_timeouts != NULL) {
        rm_worker_timeout_t *t = worker->_timeouts;
        worker->_timeouts = t->_next;
        free(t);
    }
    free(worker->clusters);
    worker->clusters = NULL;
    rm_config_unref(worker->config);
    worker->config = NULL;
    rm_tls_set_unref(worker->tls);
    worker->tls = NULL;
    pthread_mutex_destroy(&worker->_queue_mutex);
}
