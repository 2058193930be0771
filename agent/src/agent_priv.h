/*
 * The agent executable's own state and the functions its files share (main thread unless said otherwise):
 *   main.c       the assembly (the only place that names concrete codecs and filters), start-up, the loop
 *   settings.c   command line, REMORA_* environment, the bootstrap's top-level settings, --print-config, and
 *                the snapshot they make (docs/configuration.md, "Layers")
 *   publish.c    a snapshot put in service on every worker: at start, at SIGHUP, for each control-plane snapshot
 *   lifecycle.c  signals, the outbound grace, the drain, POST /shutdown, the exit once the workers have ended
 *   control.c    control-plane mode: the control and identity clients' start, callbacks and stop
 * Private to the executable: the loaded modules see its exported symbols (ENABLE_EXPORTS), not these.
 */
#ifndef remora__agent_priv_h
#define remora__agent_priv_h

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>
#include "admin/admin.h"
#include "admin/app_probe.h"
#include "config/config.h"
#include "config/control_module.h"
#include "core/worker.h"
#include "obs/stats.h"
#include "tls/tls.h"

#pragma GCC visibility push(hidden)

/** The version remora-agent reports (REMORA_VERSION in main.c). */
extern const char rm_agent_version[];

typedef struct st_cmdline_t {
    const char *config;
    int check, print_config;
    rm_config_quick_t quick;
    const char *tls_cert, *tls_key;
    int upstream_tls;
    const char *upstream_ca, *upstream_sni;
    const char *admin, *health;
    long drain_ms;
    unsigned workers;
    const char *control, *node_id, *state_dir, *namespace_;
    long stats_interval_ms;
    /* --identity-token FILE, else $REMORA_IDENTITY_TOKEN_FILE */
    const char *identity_token;
    /* --trust-anchor FILE, else $REMORA_TRUST_ANCHOR_FILE, else <state-dir>/trust-bundle.pem; --control-insecure */
    const char *trust_anchor;
    int control_insecure;
    /* --transparent (docs/transparent.md) */
    int transparent, inbound_to_localhost;
    unsigned outbound_port, inbound_port;
    /* --opaque-ports: the transparent listeners' list (sorted, unique), NULL: the default list */
    uint16_t *opaque_ports;
    size_t num_opaque_ports;
    /* --outbound-grace-ms (docs/lifecycle.md) */
    long outbound_grace_ms;
} cmdline_t;

/** The merged settings (settings.c fills it before the start; read-only afterwards). */
extern cmdline_t cmdline;

/** The main thread's state. Fields named control_* under control_mutex are shared with the control thread. */
typedef struct st_agent_t {
    const char *config_file;
    rm_config_t *config;
    rm_tls_set_t *tls;
    uint64_t generation;
    unsigned num_workers;
    rm_worker_t *workers;
    rm_stats_t **stats;
    uv_loop_t loop;
    uv_signal_t sigterm, sigint, sighup, sigusr1;
    uv_async_t worker_exited;
    unsigned workers_exited;
    rm_admin_t *admin;
    int ready;
    /* control-plane mode: 1 once a snapshot (persisted or received) is in service; /ready waits for it */
    int has_snapshot;
    int draining;
    uint32_t drain_timeout_override_ms;
    /* --outbound-grace-ms (docs/lifecycle.md): 1 between the signal and the drain; inbound is already draining */
    int in_grace;
    uint32_t grace_ms;
    uv_timer_t grace_timer;
    /* remora_shutdown_requests_total{source}: signals (SIGTERM, SIGINT) and POST /shutdown */
    uint64_t shutdown_signals, shutdown_posts;
    /* REMORA_APP_PROBES (admin/app_probe.h), NULL when not set */
    rm_app_probes_t *app_probes;
    /* control-plane mode */
    const rm_control_module_t *control_module;
    rm_control_client_t *control;
    /* --identity-token: the workload-identity client (docs/identity.md) */
    rm_identity_client_t *identity;
    rm_config_t *control_base;
    uv_async_t control_async;
    pthread_mutex_t control_mutex;
    pthread_cond_t control_cond;
    rm_config_t *control_pending;
    int control_done, control_result, control_closed;
    char control_err[512];
    /* `remoractl proxy`: the admin command the control thread waits on (control_admin_command), guarded by control_mutex */
    struct st_control_admin_call_t *control_admin;
} agent_t;

extern agent_t agent;

/* -- settings.c ---------------------------------------------------------------------------------------------------------- */

/** Reads the environment and the command line into `cmdline` and answers --help, --version and --print-config.
 * Returns -1 to go on with the start, else the process's exit status (the problem printed). */
int rm_agent_parse_cmdline(int argc, char **argv);
/** The snapshot of the settings in `cmd` (the --config file, the quick flags, or control-plane mode's base) with the
 * flags' overrides, validated. Returns a new reference, or NULL with the reason logged or printed. */
rm_config_t *rm_agent_load_config(const cmdline_t *cmd, int quiet_prefix);

/* -- publish.c ----------------------------------------------------------------------------------------------------------- */

/** Puts a validated snapshot in service on every worker (takes the reference). Returns 0, or -1 with a reason in
 * errbuf and nothing changed. */
int rm_agent_publish(rm_config_t *config, char *errbuf, size_t errlen);
/** Loads and publishes the bootstrap's `mesh_tls.identity_dir` identity, if the snapshot names one. Returns 0, or -1
 * logged (at start, the caller stops; later, the identity in service stays). */
int rm_agent_load_identity_dir(const rm_config_t *config, int at_start);
/** SIGHUP: the --config file again with the environment and flags on top; a bad one is logged and rejected. */
void rm_agent_reload(void);

/* -- lifecycle.c --------------------------------------------------------------------------------------------------------- */

/** Starts the drain on every worker (once; ends the outbound grace). The admin callback's signature; `ctx` unused. */
void rm_agent_start_drain(void *ctx);
/** POST /shutdown (admin callback): counted, then the drain. */
void rm_agent_cb_shutdown(void *ctx);
/** remora_shutdown_requests_total, a stats renderer. */
char *rm_agent_render_shutdown_metrics(void);
/** A worker's on_exit hook (worker thread): wakes the main thread, which closes everything once all have ended. */
void rm_agent_worker_exit_hook(rm_worker_t *worker);
/** Starts the handles of SIGTERM, SIGINT, SIGHUP and SIGUSR1 and of the workers' exit on agent.loop. */
void rm_agent_handle_signals(void);
/** At exit, waits (at most 2 s) until the threads libraries started have ended. */
void rm_agent_wait_for_library_threads(void);

/* -- control.c ----------------------------------------------------------------------------------------------------------- */

/** 1 unless --identity-token is given and no workload certificate is in service yet. Any thread. */
int rm_agent_identity_in_service(void);
/** Control-plane mode, before the workers start: the state directory, the control module, the last good snapshot
 * (*persisted_version: its version) and a kept identity. Returns 0, or -1 logged. */
int rm_agent_control_prepare(uint64_t *persisted_version);
/** Control-plane mode, once the workers run: the control client, and with --identity-token the identity client.
 * Returns 0, or -1 logged. */
int rm_agent_control_start(uint64_t persisted_version);
/** Stops the identity and control clients; control_apply and the admin relay answer
 * "shutting down" from then on. */
void rm_agent_control_stop(void);

#pragma GCC visibility pop

#endif
