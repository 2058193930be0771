/*
 * remora-agent: the sidecar. The main thread owns the admin and health servers, signals, config
 * loading and reload; N workers own the data path. See docs/ for the architecture.
 *
 * This file is the assembly (the only place that names concrete codecs and filters), the start-up
 * and the main loop. The rest of the main thread's work is in the files beside it (agent_priv.h).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>
#include <openssl/crypto.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "admin/admin.h"
#include "admin/app_probe.h"
#include "config/config.h"
#include "core/worker.h"
#include "http1/h1client.h"
#include "http2/h2client.h"
#include "http2/h2conn.h"
#include "http2/h2probe.h"
#include "upstream/cluster.h"
#include "net/listener.h"
#include "proxy/stream.h"
#include "filters/access_log.h"
#include "filters/fault.h"
#include "filters/header_rewrite.h"
#include "filters/authz.h"
#include "filters/ratelimit.h"
#include "filters/redirect.h"
#include "filters/trace.h"
#include "filters/url_rewrite.h"
#include "router/router_filter.h"
#include "upstream/breaker.h"
#include "upstream/outlier.h"
#include "upstream/health.h"
#include "filters/golden.h"
#include "obs/process.h"
#include "obs/series.h"
#include "obs/access_log.h"
#include "obs/stats.h"
#include "tls/identity.h"
#include "tls/mesh.h"
#include "tls/tls.h"
#include "agent_priv.h"

#define REMORA_VERSION "0.1.0"

const char rm_agent_version[] = REMORA_VERSION;

agent_t agent;

/*
 * The assembly: the only place that names concrete codecs and filters. Client codecs fill the
 * protocol table; every listener's streams run the same chain, route match first and the router
 * last (a filter whose setting a route does not have returns at once).
 */
/*
 * The filter chains: route matching first, the router last, and between them the request filters
 * in this order. A listener's streams run only the filters some route of it uses
 * (rm_config_listener_t.filters, set at validation), so a feature no route uses costs nothing: one
 * chain per combination, built once at start.
 */
static const struct {
    unsigned bit;
    const rm_filter_t *filter;
} optional_filters[] = {
    {RM_LISTENER_USES_AUTHZ, &rm_authz_filter},          /* first: a denied request spends no rate limit */
    {RM_LISTENER_USES_RATE_LIMIT, &rm_ratelimit_filter}, /* a refused request costs no other filter */
    {RM_LISTENER_USES_FAULT, &rm_fault_filter},
    {RM_LISTENER_USES_REDIRECT, &rm_redirect_filter},
    {RM_LISTENER_USES_HEADER_MODIFIERS, &rm_header_rewrite_filter},
    {RM_LISTENER_USES_URL_REWRITE, &rm_url_rewrite_filter},
};
#define NUM_OPTIONAL_FILTERS (sizeof(optional_filters) / sizeof(optional_filters[0]))
static const rm_filter_t *chain_storage[RM_LISTENER_USES_ALL + 1][NUM_OPTIONAL_FILTERS + 2];
static rm_filter_chain_t chains[RM_LISTENER_USES_ALL + 1];

static const rm_filter_chain_t *
select_chain(const rm_config_listener_t *listener)
{
    return &chains[listener->filters & RM_LISTENER_USES_ALL];
}

static void
build_chains(void)
{
    for (unsigned mask = 0; mask <= RM_LISTENER_USES_ALL; ++mask) {
        size_t n = 0;
        chain_storage[mask][n++] = &rm_route_filter;
        for (size_t i = 0; i != NUM_OPTIONAL_FILTERS; ++i)
            if ((mask & optional_filters[i].bit) != 0)
                chain_storage[mask][n++] = optional_filters[i].filter;
        chain_storage[mask][n++] = &rm_router_filter;
        chains[mask] = (rm_filter_chain_t){chain_storage[mask], n};
    }
}

static void
assemble(void)
{
    rm_worker_register_module(&rm_net_module); /* first: downstream connections close before the clusters */
    rm_upstream_module_register();
    rm_stats_register_renderer(rm_breaker_render); /* agent-wide breaker and outlier gauges in /metrics */
    rm_stats_register_renderer(rm_outlier_render);
    rm_stats_register_renderer(rm_health_render); /* active health checks (main thread state) */
    rm_h2probe_register();
    rm_worker_register_module(&rm_http2_module);
    rm_route_module_register();
    rm_h1client_register();
    rm_h2client_register();
    rm_ratelimit_register();
    rm_authz_register();
    rm_access_log_observer_register();
    rm_trace_filter_register(); /* spans: a stream observer, plus its counters in /metrics */
    build_chains();
    rm_stream_set_default_chain(&chains[RM_LISTENER_USES_ALL]);
    rm_stream_set_chain_selector(select_chain);
    static const char *cause_names[RM_LOCAL_REPLY_MAX];
    for (size_t i = 0; i != RM_LOCAL_REPLY_MAX; ++i)
        cause_names[i] = rm_local_replies[i].name;
    rm_stats_set_cause_names(cause_names, RM_LOCAL_REPLY_MAX);
    rm_golden_register();                                      /* golden request metrics: a stream observer */
    rm_golden_set_trace_id_source(rm_trace_stream_sampled_id); /* exemplars: sampled trace ids on the histogram's buckets */
}

/*
 * Admin callbacks (main thread)
 */

static int
cb_is_ready(void *ctx)
{
    return agent.ready && !agent.draining && !agent.in_grace && (agent.control == NULL || agent.has_snapshot) &&
           rm_agent_identity_in_service();
}

static int
cb_is_draining(void *ctx)
{
    return agent.draining || agent.in_grace;
}

static char *
cb_render_metrics(void *ctx)
{
    return rm_stats_render_prometheus(agent.stats, agent.num_workers, agent.generation);
}

static char *
cb_render_openmetrics(void *ctx)
{
    return rm_stats_render(agent.stats, agent.num_workers, agent.generation, RM_STATS_OPENMETRICS);
}

static char *
cb_identity(void *ctx)
{
    return rm_identity_describe();
}

static char *
cb_clusters(void *ctx)
{
    char *outlier = rm_outlier_describe(), *health = rm_health_describe();
    size_t olen = strlen(outlier), hlen = strlen(health);
    char *text = rm_calloc(1, olen + hlen + 1);
    memcpy(text, outlier, olen);
    memcpy(text + olen, health, hlen + 1);
    free(outlier);
    free(health);
    return text;
}

static char *
cb_config_dump(void *ctx)
{
    return rm_config_to_json(agent.config);
}

int
main(int argc, char **argv)
{
    int exit_code = rm_agent_parse_cmdline(argc, argv);
    if (exit_code >= 0)
        return exit_code;

    signal(SIGPIPE, SIG_IGN);
    rm_tls_init();
    assemble();
    agent.config_file = cmdline.config;
    if ((agent.config = rm_agent_load_config(&cmdline, 0)) == NULL)
        return 1;
    uint64_t persisted_version = 0;
    if (cmdline.control != NULL && rm_agent_control_prepare(&persisted_version) != 0)
        return 1;
    rm_mesh_tls_init();
    if (cmdline.identity_token == NULL && rm_agent_load_identity_dir(agent.config, 1) != 0)
        return 1;
    char err[512];
    if ((agent.tls = rm_tls_set_create(agent.config, err, sizeof(err))) == NULL) {
        rm_log_error("config", "%s: %s", agent.config->source, err);
        return 1;
    }
    if (cmdline.check) {
        printf("%s: configuration OK (%zu listeners, %zu clusters)\n", agent.config->source, agent.config->num_listeners,
               agent.config->num_clusters);
        return 0;
    }
    agent.config->generation = agent.generation = 1;
    rm_obs_set_build_info(REMORA_VERSION);
    rm_series_set_limit(agent.config->limits.max_series_per_family);
    rm_obs_config_applied(agent.config->version, 1);
    agent.drain_timeout_override_ms = agent.config->drain_timeout_ms;

    rm_trace_filter_configure(agent.config);
    /* sockets first: an address in use stops the start with a clear message */
    agent.num_workers = agent.config->num_workers;
    rm_access_log_init(agent.num_workers);
    rm_access_log_apply_config(agent.config);
    agent.workers = rm_calloc(agent.num_workers, sizeof(*agent.workers));
    agent.stats = rm_calloc(agent.num_workers, sizeof(*agent.stats));
    for (unsigned w = 0; w != agent.num_workers; ++w) {
        agent.stats[w] = rm_stats_create(w);
        rm_worker_init(&agent.workers[w], w, agent.config, rm_tls_set_ref(agent.tls), rm_tls_set_unref, agent.stats[w]);
        agent.workers[w].on_exit = rm_agent_worker_exit_hook;
        for (size_t i = 0; i != agent.config->num_listeners; ++i) {
            int fd = rm_listen_fd_open(&agent.config->listeners[i].addr, err, sizeof(err));
            if (fd < 0) {
                rm_log_error("agent", "%s", err);
                return 1;
            }
            rm_listener_new(&agent.workers[w], fd, &agent.config->listeners[i].addr);
        }
    }

    uv_loop_init(&agent.loop);
    rm_health_init(&agent.loop);
    agent.grace_ms = (uint32_t)cmdline.outbound_grace_ms;
    uv_timer_init(&agent.loop, &agent.grace_timer);
    rm_stats_register_renderer(rm_agent_render_shutdown_metrics);
    const char *app_probes_json = getenv("REMORA_APP_PROBES");
    if (app_probes_json != NULL && app_probes_json[0] != '\0') {
        agent.app_probes =
            rm_app_probes_create(&agent.loop, app_probes_json, rm_h2probe_codec(), rm_health_grpc_serving_status, err, sizeof(err));
        if (agent.app_probes == NULL) {
            rm_log_error("agent", "%s", err);
            return 2;
        }
        rm_log_info("agent", "%zu application probes served on the health port (REMORA_APP_PROBES)",
                    rm_app_probes_count(agent.app_probes));
    }
    rm_admin_callbacks_t admin_cb = {
        .is_ready = cb_is_ready,
        .is_draining = cb_is_draining,
        .render_metrics = cb_render_metrics,
        .render_openmetrics = cb_render_openmetrics,
        .identity = cmdline.identity_token != NULL ? cb_identity : NULL,
        .config_dump = cb_config_dump,
        .start_drain = rm_agent_start_drain,
        .clusters = cb_clusters,
        .shutdown = rm_agent_cb_shutdown,
        .app_probes = agent.app_probes,
    };
    agent.admin = rm_admin_start(&agent.loop, (struct sockaddr *)&agent.config->health_addr.addr,
                                 (struct sockaddr *)&agent.config->admin_addr.addr, &admin_cb, NULL, err, sizeof(err));
    if (agent.admin == NULL) {
        rm_log_error("agent", "%s", err);
        return 1;
    }
    rm_agent_handle_signals();

    for (unsigned w = 0; w != agent.num_workers; ++w) {
        int r = rm_worker_start(&agent.workers[w]);
        if (r != 0) {
            rm_log_error("agent", "starting worker %u: %s", w, strerror(-r));
            return 1;
        }
    }
    if (cmdline.control != NULL && rm_agent_control_start(persisted_version) != 0)
        return 1;
    rm_health_reconcile(agent.config, agent.tls);
    agent.ready = 1;
    char lbuf[80], hbuf[80];
    rm_log_info("agent", "remora-agent %s ready: %zu listeners (first %s), %u workers, health %s, config %s", REMORA_VERSION,
                agent.config->num_listeners,
                agent.config->num_listeners != 0
                    ? rm_format_sockaddr((struct sockaddr *)&agent.config->listeners[0].addr.addr, lbuf, sizeof(lbuf))
                    : "-",
                agent.num_workers, rm_format_sockaddr((struct sockaddr *)&agent.config->health_addr.addr, hbuf, sizeof(hbuf)),
                agent.config->source);

    uv_run(&agent.loop, UV_RUN_DEFAULT);

    for (unsigned w = 0; w != agent.num_workers; ++w)
        rm_worker_join(&agent.workers[w]);
    rm_trace_filter_shutdown(2000); /* bounded flush of the spans still queued */
    rm_access_log_stop();           /* likewise the access log (no worker writes any more) */
    uv_run(&agent.loop, UV_RUN_NOWAIT);
    uv_loop_close(&agent.loop);
    for (unsigned w = 0; w != agent.num_workers; ++w)
        rm_stats_destroy(agent.stats[w]);
    free(agent.stats);
    free(agent.workers);
    rm_tls_set_unref(agent.tls);
    rm_config_unref(agent.config);
    if (agent.control_base != NULL)
        rm_config_unref(agent.control_base);
    rm_agent_wait_for_library_threads();
    rm_log_info("agent", "drained; exiting");
    OPENSSL_thread_stop(); /* the main thread's OpenSSL state (error queue), as other threads release theirs on exit */
    return 0;
}
