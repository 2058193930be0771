/*
 * The agent's end (docs/lifecycle.md), main thread: signals, the outbound grace, the drain, POST /shutdown,
 * and the exit once every worker has ended.
 */
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "remora/thread.h"
#include "admin/admin.h"
#include "admin/app_probe.h"
#include "core/worker.h"
#include "net/listener.h"
#include "obs/access_log.h"
#include "upstream/health.h"
#include "agent_priv.h"

typedef struct st_drain_msg_t {
    rm_worker_msg_t super;
    uint64_t timeout_ms;
} drain_msg_t;

static void
on_drain_msg(rm_worker_t *worker, rm_worker_msg_t *_msg)
{
    drain_msg_t *msg = (drain_msg_t *)_msg;
    rm_worker_start_drain(worker, msg->timeout_ms);
    free(msg);
}

void
rm_agent_start_drain(void *ctx)
{
    if (agent.in_grace) {
        agent.in_grace = 0;
        uv_timer_stop(&agent.grace_timer);
    }
    if (agent.draining)
        return;
    agent.draining = 1;
    rm_log_info("agent", "draining: no new connections, in-flight requests finish (up to %u ms)", agent.config->drain_timeout_ms);
    for (unsigned i = 0; i != agent.num_workers; ++i) {
        drain_msg_t *msg = rm_calloc(1, sizeof(*msg));
        msg->super.cb = on_drain_msg;
        msg->timeout_ms = agent.config->drain_timeout_ms;
        rm_worker_post(&agent.workers[i], &msg->super);
    }
}

static void
on_drain_inbound_msg(rm_worker_t *worker, rm_worker_msg_t *msg)
{
    rm_listeners_drain_inbound(worker);
    free(msg);
}

static void
on_grace_timer(uv_timer_t *timer)
{
    rm_log_info("agent", "outbound grace of %u ms over", agent.grace_ms);
    rm_agent_start_drain(NULL);
}

/*
 * SIGTERM without native sidecars (docs/lifecycle.md): the application is signalled at the same time and may still
 * call out while it shuts down. Inbound stops at once (no new connections, in-flight ones finish, /ready 503);
 * outbound keeps accepting for --outbound-grace-ms or until POST /shutdown, then the normal drain.
 */
static void
start_grace(void)
{
    agent.in_grace = 1;
    rm_log_info("agent", "shutting down: inbound draining now, outbound accepted for %u ms more or until POST /shutdown",
                agent.grace_ms);
    for (unsigned i = 0; i != agent.num_workers; ++i) {
        rm_worker_msg_t *msg = rm_calloc(1, sizeof(*msg));
        msg->cb = on_drain_inbound_msg;
        rm_worker_post(&agent.workers[i], msg);
    }
    uv_timer_start(&agent.grace_timer, on_grace_timer, agent.grace_ms, 0);
}

/* POST /shutdown on the admin port: what `remoractl await` sends when its command has ended. */
void
rm_agent_cb_shutdown(void *ctx)
{
    ++agent.shutdown_posts;
    rm_log_info("agent", "POST /shutdown: %s",
                agent.in_grace   ? "outbound grace ended; draining"
                : agent.draining ? "already draining"
                                 : "draining");
    rm_agent_start_drain(NULL);
}

char *
rm_agent_render_shutdown_metrics(void)
{
    char *text = rm_malloc(512);
    snprintf(text, 512,
             "# HELP remora_shutdown_requests_total Requests to shut the agent down, by source (signal: SIGTERM or SIGINT; "
             "admin: POST /shutdown).\n"
             "# TYPE remora_shutdown_requests_total counter\n"
             "remora_shutdown_requests_total{source=\"signal\"} %llu\n"
             "remora_shutdown_requests_total{source=\"admin\"} %llu\n",
             (unsigned long long)agent.shutdown_signals, (unsigned long long)agent.shutdown_posts);
    return text;
}

static void
on_worker_exited(uv_async_t *async)
{
    unsigned exited = __atomic_load_n(&agent.workers_exited, __ATOMIC_ACQUIRE);
    if (exited != agent.num_workers)
        return;
    rm_agent_control_stop();
    rm_health_stop();
    rm_app_probes_destroy(agent.app_probes);
    agent.app_probes = NULL;
    uv_close((uv_handle_t *)&agent.grace_timer, NULL);
    if (agent.admin != NULL) {
        rm_admin_stop(agent.admin);
        agent.admin = NULL;
    }
    /*
     * Closing the signal handles restores the default dispositions, and a late signal (`timeout` and
     * supervisors signal the child and then its whole process group; a second Ctrl-C) must not kill the
     * exit under way. Every other thread blocks these signals (rm_thread_create), so with this thread
     * blocking them too a late one stays pending until SIG_IGN discards it: there is no window.
     */
    sigset_t handled, old;
    rm_thread_handled_signals(&handled);
    pthread_sigmask(SIG_BLOCK, &handled, &old);
    uv_close((uv_handle_t *)&agent.sigterm, NULL);
    uv_close((uv_handle_t *)&agent.sigint, NULL);
    uv_close((uv_handle_t *)&agent.sighup, NULL);
    uv_close((uv_handle_t *)&agent.sigusr1, NULL);
    uv_close((uv_handle_t *)&agent.worker_exited, NULL);
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGUSR1, SIG_IGN);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

void
rm_agent_worker_exit_hook(rm_worker_t *worker)
{
    __atomic_add_fetch(&agent.workers_exited, 1, __ATOMIC_ACQ_REL);
    uv_async_send(&agent.worker_exited);
}

static void
on_signal(uv_signal_t *handle, int signum)
{
    if (signum == SIGHUP)
        rm_agent_reload();
    else if (signum == SIGUSR1)
        rm_access_log_reopen(); /* log rotation */
    else {
        ++agent.shutdown_signals;
        if (agent.grace_ms != 0 && !agent.in_grace && !agent.draining)
            start_grace();
        else
            rm_agent_start_drain(NULL); /* a second signal ends the grace */
    }
}

/* The signal handles, and the wakeup of the main thread when a worker has ended. */
void
rm_agent_handle_signals(void)
{
    uv_signal_init(&agent.loop, &agent.sigterm);
    uv_signal_start(&agent.sigterm, on_signal, SIGTERM);
    uv_signal_init(&agent.loop, &agent.sigint);
    uv_signal_start(&agent.sigint, on_signal, SIGINT);
    uv_signal_init(&agent.loop, &agent.sighup);
    uv_signal_start(&agent.sighup, on_signal, SIGHUP);
    uv_signal_init(&agent.loop, &agent.sigusr1);
    uv_signal_start(&agent.sigusr1, on_signal, SIGUSR1);
    uv_async_init(&agent.loop, &agent.worker_exited, on_worker_exited);
}

/*
 * gRPC core may still be ending its own threads (executor, timers, resolver, event engine) when the
 * control module has stopped: its final clean-up can run on one of them. Wait for them, at most 2 s, so
 * that the process exits with its own threads only (the main thread and libuv's pool, which carry the
 * process's name; the library's threads name themselves): a thread that ends during exit races with
 * OpenSSL's per-thread state and with the leak checker of the sanitizer builds.
 */
void
rm_agent_wait_for_library_threads(void)
{
    char self[32] = "", path[300], comm[32];
    FILE *fp = fopen("/proc/self/comm", "r");
    if (fp == NULL)
        return;
    if (fgets(self, sizeof(self), fp) == NULL)
        self[0] = '\0';
    fclose(fp);
    for (int i = 0; i != 200; ++i) {
        DIR *dir = opendir("/proc/self/task");
        if (dir == NULL)
            return;
        int foreign = 0;
        struct dirent *e;
        while (!foreign && (e = readdir(dir)) != NULL) {
            if (e->d_name[0] == '.')
                continue;
            snprintf(path, sizeof(path), "/proc/self/task/%s/comm", e->d_name);
            if ((fp = fopen(path, "r")) == NULL)
                continue; /* it has just ended */
            if (fgets(comm, sizeof(comm), fp) != NULL && strcmp(comm, self) != 0)
                foreign = 1;
            fclose(fp);
        }
        closedir(dir);
        if (!foreign)
            return;
        usleep(10000);
    }
}
