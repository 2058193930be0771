/*
 * Putting a snapshot in service (main thread): on every worker, with new listener sockets opened first,
 * at start, at SIGHUP (the --config file again, the environment and flags on top) and for each
 * control-plane snapshot (control.c); the bootstrap's file-provisioned mesh identity with it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "config/config.h"
#include "core/worker.h"
#include "filters/access_log.h"
#include "filters/trace.h"
#include "net/listener.h"
#include "obs/process.h"
#include "obs/series.h"
#include "obs/stats.h"
#include "tls/identity.h"
#include "tls/tls.h"
#include "upstream/health.h"
#include "agent_priv.h"

/*
 * Worker messages
 */

typedef struct st_apply_msg_t {
    rm_worker_msg_t super;
    rm_config_t *config;
    rm_tls_set_t *tls;
    size_t num_new;
    int *fds;
    rm_config_addr_t *addrs;
} apply_msg_t;

static void
on_apply_msg(rm_worker_t *worker, rm_worker_msg_t *_msg)
{
    apply_msg_t *msg = (apply_msg_t *)_msg;
    for (size_t i = 0; i != msg->num_new; ++i)
        rm_listener_new(worker, msg->fds[i], &msg->addrs[i]);
    rm_worker_apply_config(worker, msg->config, msg->tls); /* the worker takes msg->tls's reference */
    rm_config_unref(msg->config);
    free(msg->fds);
    free(msg->addrs);
    free(msg);
}

static int
find_listener(const rm_config_t *config, const rm_config_addr_t *addr)
{
    for (size_t i = 0; i != config->num_listeners; ++i)
        if (config->listeners[i].addr.addrlen == addr->addrlen &&
            memcmp(&config->listeners[i].addr.addr, &addr->addr, addr->addrlen) == 0)
            return 1;
    return 0;
}

/* Puts a validated snapshot in service on every worker (takes the reference). Returns 0, or -1
 * with a reason and nothing changed. Main thread. */
int
rm_agent_publish(rm_config_t *config, char *errbuf, size_t errlen)
{
    char err[512];
    rm_tls_set_t *tls = rm_tls_set_create(config, err, sizeof(err));
    if (tls == NULL) {
        snprintf(errbuf, errlen, "%s", err);
        rm_config_unref(config);
        return -1;
    }
    /* open sockets for new listener addresses now, so a bind error rejects the whole snapshot */
    size_t num_new = 0;
    for (size_t i = 0; i != config->num_listeners; ++i)
        if (!find_listener(agent.config, &config->listeners[i].addr))
            ++num_new;
    int *fds = rm_calloc(num_new * agent.num_workers, sizeof(int));
    rm_config_addr_t *addrs = rm_calloc(num_new, sizeof(*addrs));
    size_t k = 0;
    for (size_t i = 0; i != config->num_listeners; ++i) {
        if (find_listener(agent.config, &config->listeners[i].addr))
            continue;
        addrs[k] = config->listeners[i].addr;
        for (unsigned w = 0; w != agent.num_workers; ++w) {
            int fd = rm_listen_fd_open(&addrs[k], err, sizeof(err));
            if (fd < 0) {
                snprintf(errbuf, errlen, "%s", err);
                for (size_t j = 0; j != k * agent.num_workers + w; ++j)
                    close(fds[j]);
                free(fds);
                free(addrs);
                rm_tls_set_unref(tls);
                rm_config_unref(config);
                return -1;
            }
            fds[k * agent.num_workers + w] = fd;
        }
        ++k;
    }
    if (config->num_workers != agent.num_workers)
        rm_log_warn("agent", "the worker count changes only at restart (keeping %u)", agent.num_workers);
    config->generation = ++agent.generation;
    rm_series_set_limit(config->limits.max_series_per_family);
    rm_obs_config_applied(config->version, (unsigned long long)config->generation);
    /* the exporter runs before any worker sees a snapshot with tracing on */
    rm_trace_filter_configure(config);
    rm_access_log_apply_config(config); /* likewise the access log's buffers */
    for (unsigned w = 0; w != agent.num_workers; ++w) {
        apply_msg_t *msg = rm_calloc(1, sizeof(*msg));
        msg->super.cb = on_apply_msg;
        msg->config = rm_config_ref(config);
        msg->tls = rm_tls_set_ref(tls);
        msg->num_new = num_new;
        msg->fds = rm_calloc(num_new, sizeof(int));
        msg->addrs = rm_calloc(num_new, sizeof(*msg->addrs));
        for (size_t i = 0; i != num_new; ++i) {
            msg->fds[i] = fds[i * agent.num_workers + w];
            msg->addrs[i] = addrs[i];
        }
        rm_worker_post(&agent.workers[w], &msg->super);
    }
    free(fds);
    free(addrs);
    rm_config_unref(agent.config);
    rm_tls_set_unref(agent.tls);
    agent.config = config;
    agent.tls = tls;
    rm_health_reconcile(config, tls);
    return 0;
}

/*
 * Bootstrap `mesh_tls.identity_dir` (docs/mesh-tls.md): an identity provisioned as files, for agents without
 * --identity-token. Loaded at start (a bad or expired one stops the agent) and again on every reload.
 */
int
rm_agent_load_identity_dir(const rm_config_t *config, int at_start)
{
    static int metrics_registered;
    if (config->mesh_tls.identity_dir == NULL)
        return 0;
    if (!metrics_registered) {
        rm_identity_init();
        metrics_registered = 1;
    }
    char err[1024];
    rm_identity_t *id = rm_identity_load(config->mesh_tls.identity_dir, err, sizeof(err));
    if (id == NULL) {
        if (err[0] == '\0')
            snprintf(err, sizeof(err), "no identity files (%s, %s, %s)", RM_IDENTITY_KEY_FILE, RM_IDENTITY_CERT_FILE,
                     RM_IDENTITY_BUNDLE_FILE);
        rm_log_error("identity", "%s:%u: mesh_tls.identity_dir %s: %s%s", config->source, config->mesh_tls.line,
                     config->mesh_tls.identity_dir, err, at_start ? "" : "; the identity in service stays");
        return -1;
    }
    rm_log_info("identity", "serving %s (serial %s, expires in %lld s) from %s", id->spiffe_id, id->serial,
                (long long)(id->not_after - (int64_t)time(NULL)), config->mesh_tls.identity_dir);
    rm_identity_publish(id);
    rm_identity_unref(id);
    return 0;
}

void
rm_agent_reload(void)
{
    if (agent.config_file == NULL) {
        rm_log_warn("agent", "SIGHUP: nothing to reload (no --config file)");
        return;
    }
    rm_config_t *config = rm_agent_load_config(&cmdline, 0);
    if (config == NULL) {
        rm_log_error("agent", "reload rejected; generation %llu stays in service", (unsigned long long)agent.generation);
        rm_obs_config_rejected(RM_OBS_CONFIG_FILE);
        return;
    }
    char err[512];
    if (rm_agent_publish(config, err, sizeof(err)) != 0) {
        rm_log_error("agent", "reload rejected: %s: %s; generation %llu stays in service", agent.config_file, err,
                     (unsigned long long)agent.generation);
        rm_obs_config_rejected(RM_OBS_CONFIG_FILE);
        return;
    }
    if (cmdline.identity_token == NULL)
        rm_agent_load_identity_dir(config, 0);
    rm_log_info("agent", "reloaded %s: generation %llu in service", agent.config_file, (unsigned long long)agent.generation);
}
