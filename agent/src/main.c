/*
 * remora-agent: the sidecar. The main thread owns the admin and health servers, signals, config
 * loading and reload; N workers own the data path. See docs/ for the architecture.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>
#include <openssl/crypto.h>
#include <openssl/pem.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "remora/thread.h"
#include "admin/admin.h"
#include "admin/app_probe.h"
#include "config/config.h"
#include "config/control_client.h"
#include "config/control_module.h"
#include "config/control_stats.h"
#include "config/layers.h"
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

#define REMORA_VERSION "0.1.0"

static struct {
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
} agent;

static void stop_control(void);

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
 * --state-dir: the directory that keeps the last good snapshot. A missing one is created (0700,
 * parents too); one that cannot be created or written stops the start: an agent that silently
 * never persists would serve nothing after a restart while the control plane is down.
 */
static int
prepare_state_dir(const char *dir, char *err, size_t errlen)
{
    char path[4096];
    if (dir[0] == '\0' || strlen(dir) >= sizeof(path)) {
        snprintf(err, errlen, "--state-dir: the path is empty or too long");
        return -1;
    }
    snprintf(path, sizeof(path), "%s", dir);
    for (char *p = path + 1;; ++p) {
        int last = *p == '\0';
        if (*p != '/' && !last)
            continue;
        *p = '\0';
        if (mkdir(path, 0700) == 0) {
            rm_log_info("agent", "created state directory %s", path);
        } else if (errno != EEXIST) {
            snprintf(err, errlen, "--state-dir %.400s: cannot create %.400s: %s", dir, path, strerror(errno));
            return -1;
        }
        if (last)
            break;
        *p = '/';
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "--state-dir %s: not a directory", dir);
        return -1;
    }
    if (access(dir, W_OK | X_OK) != 0) {
        snprintf(err, errlen, "--state-dir %s: not writable: %s", dir, strerror(errno));
        return -1;
    }
    return 0;
}

static void
usage(FILE *fp)
{
    fprintf(fp, "Usage:\n"
                "  remora-agent --config FILE [--check-config] [options]\n"
                "  remora-agent --listen ADDR:PORT --upstream HOST:PORT [--upstream-protocol h2|http1|auto] [options]\n"
                "  remora-agent --listen ADDR:PORT --control ADDR:PORT --node-id NAME [--state-dir DIR] [options]\n"
                "\n"
                "Remora's sidecar proxy: HTTP/1.1, HTTP/2 and gRPC, cleartext or TLS, both directions.\n"
                "\n"
                "Configuration:\n"
                "  -c, --config FILE            bootstrap YAML (see docs/configuration.md)\n"
                "      --check-config           validate the configuration (and its certificates) and exit\n"
                "      --print-config           print every setting's merged value and where it came from (YAML), exit\n"
                "Quick single-hop mode (one listener \"main\", every request to one cluster \"upstream\"):\n"
                "      --listen ADDR:PORT       address to accept on (HTTP/1.1 and h2c on one port)\n"
                "      --upstream HOST:PORT     where to send requests (IP literal or host name)\n"
                "      --upstream-protocol P    h2 | http1 | auto (ALPN over TLS); default http1\n"
                "      --tls-cert FILE --tls-key FILE\n"
                "                               serve TLS on the listener (ALPN h2, http/1.1)\n"
                "      --upstream-tls           TLS to the upstream, peer verified\n"
                "      --upstream-ca FILE       CA bundle to verify the upstream (default: system store)\n"
                "      --upstream-server-name N name to verify and send as SNI (default: the upstream host)\n"
                "Control-plane mode (routes and services come from remora-control):\n"
                "      --control HOST:PORT      the control plane's gRPC address (HOST an IP address or a DNS name)\n"
                "      --node-id NAME           this agent's name in `remoractl status`\n"
                "      --namespace NS           the namespace of the agent's workload: a Telemetry there\n"
                "                               overrides the mesh-wide one of remora-system\n"
                "      --state-dir DIR          keep the last good snapshot here (created 0700 if missing); a\n"
                "                               restart without the control plane serves it. Until a first\n"
                "                               snapshot is in service /ready is 503 and requests wait (10 s)\n"
                "      --transparent            intercepted traffic (remora-init): outbound on 127.0.0.1 and [::1]\n"
                "                               port 15001, inbound on 0.0.0.0 and [::] port 15006 (docs/transparent.md)\n"
                "      --outbound-port N --inbound-port N   override those ports\n"
                "      --opaque-ports LIST      ports of the transparent listeners that skip detection (opaque TCP),\n"
                "                               e.g. 3306,5432,9000-9010; replaces the default list\n"
                "      --inbound-to-localhost   inbound goes to 127.0.0.1 at the original port, not the pod address\n"
                "      --identity-token FILE    bootstrap token for a workload certificate (docs/identity.md;\n"
                "                               default $REMORA_IDENTITY_TOKEN_FILE); needs --state-dir. It also\n"
                "                               authenticates the agent to the control plane\n"
                "      --trust-anchor FILE      the trust bundle (PEM) the control plane's TLS certificate must\n"
                "                               chain to (default $REMORA_TRUST_ANCHOR_FILE, else the state dir's\n"
                "                               trust-bundle.pem from an earlier certificate); --control needs one\n"
                "      --control-insecure       plaintext to a `remora-control --insecure` (development only)\n"
                "      --stats-interval-ms N    send the control plane a summary of the golden metrics (requests,\n"
                "                               failures, latency buckets per route and backend, for\n"
                "                               `remoractl stat`) every N ms (default 10000, at least 1000)\n"
                "Common:\n"
                "  -w, --workers N              worker threads (default: config, else CPU count)\n"
                "      --admin ADDR:PORT        loopback admin server (default 127.0.0.1:15000)\n"
                "      --health ADDR:PORT       health and metrics server (default 0.0.0.0:15020)\n"
                "      --drain-timeout-ms N     bound on the graceful drain at SIGTERM (default 10000)\n"
                "      --outbound-grace-ms N    at SIGTERM inbound drains at once but outbound keeps accepting for N ms\n"
                "                               or until POST /shutdown, then the drain (default 0; docs/lifecycle.md)\n"
                "      --log-level L            error | warn | info | debug (default info)\n"
                "  -h, --help                   this text\n"
                "      --version                print the version\n"
                "\n"
                "Every setting also comes from the environment: --some-flag is REMORA_SOME_FLAG (booleans 1, true,\n"
                "0, false), except --identity-token (REMORA_IDENTITY_TOKEN_FILE) and --trust-anchor\n"
                "(REMORA_TRUST_ANCHOR_FILE). Layers: defaults < --config FILE < environment < flags.\n"
                "REMORA_APP_PROBES (JSON, set by the injector): the application's probes, served on the health\n"
                "port as GET /app-health/<container>/<livez|readyz|startupz> (docs/lifecycle.md).\n"
                "\n"
                "Signals: SIGTERM/SIGINT drain and exit 0 (with --outbound-grace-ms, after the grace); SIGHUP reloads\n"
                "--config FILE and applies the environment and flags on top again (a bad file is rejected with\n"
                "file:line and the running configuration stays in service); SIGUSR1 reopens the access log file.\n");
}

enum {
    OPT_CHECK = 256,
    OPT_LISTEN,
    OPT_UPSTREAM,
    OPT_UPSTREAM_PROTOCOL,
    OPT_TLS_CERT,
    OPT_TLS_KEY,
    OPT_UPSTREAM_TLS,
    OPT_UPSTREAM_CA,
    OPT_UPSTREAM_SNI,
    OPT_ADMIN,
    OPT_HEALTH,
    OPT_DRAIN,
    OPT_LOG_LEVEL,
    OPT_VERSION,
    OPT_CONTROL,
    OPT_NODE_ID,
    OPT_STATE_DIR,
    OPT_STATS_INTERVAL,
    OPT_IDENTITY_TOKEN,
    OPT_TRUST_ANCHOR,
    OPT_CONTROL_INSECURE,
    OPT_NAMESPACE,
    OPT_TRANSPARENT,
    OPT_OUTBOUND_PORT,
    OPT_INBOUND_PORT,
    OPT_INBOUND_TO_LOCALHOST,
    OPT_OPAQUE_PORTS,
    OPT_OUTBOUND_GRACE,
    OPT_PRINT_CONFIG,
};

/*
 * The agent's settings and their layers (docs/configuration.md, "Layers"): built-in defaults < the --config file
 * (the keys named `file_key`) < the environment (REMORA_*) < command-line flags. One row per long option that is a
 * setting; actions (--help, --version, --check-config, --print-config) have no variable. Every variable is
 * REMORA_ + the flag's name upper-cased with '-' as '_', except the two older names kept for the token and trust
 * anchor files.
 */
typedef struct st_setting_t {
    const char *name;
    int has_arg; /* no_argument: a boolean (the variable takes 1, true, 0 or false) */
    int id;
    const char *env;
    const char *file_key; /* the bootstrap file's top-level key, NULL if the file has none */
    const char *def;      /* the default as --print-config shows it (NULL: unset) */
} setting_t;

static const setting_t settings[] = {
    {"config", required_argument, 'c', "REMORA_CONFIG", NULL, NULL},
    {"listen", required_argument, OPT_LISTEN, "REMORA_LISTEN", NULL, NULL},
    {"upstream", required_argument, OPT_UPSTREAM, "REMORA_UPSTREAM", NULL, NULL},
    {"upstream-protocol", required_argument, OPT_UPSTREAM_PROTOCOL, "REMORA_UPSTREAM_PROTOCOL", NULL, "http1"},
    {"tls-cert", required_argument, OPT_TLS_CERT, "REMORA_TLS_CERT", NULL, NULL},
    {"tls-key", required_argument, OPT_TLS_KEY, "REMORA_TLS_KEY", NULL, NULL},
    {"upstream-tls", no_argument, OPT_UPSTREAM_TLS, "REMORA_UPSTREAM_TLS", NULL, "false"},
    {"upstream-ca", required_argument, OPT_UPSTREAM_CA, "REMORA_UPSTREAM_CA", NULL, NULL},
    {"upstream-server-name", required_argument, OPT_UPSTREAM_SNI, "REMORA_UPSTREAM_SERVER_NAME", NULL, NULL},
    {"workers", required_argument, 'w', "REMORA_WORKERS", "workers", NULL},
    {"admin", required_argument, OPT_ADMIN, "REMORA_ADMIN", "admin", NULL},
    {"health", required_argument, OPT_HEALTH, "REMORA_HEALTH", "health", NULL},
    {"drain-timeout-ms", required_argument, OPT_DRAIN, "REMORA_DRAIN_TIMEOUT_MS", "drain_timeout_ms", NULL},
    {"outbound-grace-ms", required_argument, OPT_OUTBOUND_GRACE, "REMORA_OUTBOUND_GRACE_MS", NULL, "0"},
    {"log-level", required_argument, OPT_LOG_LEVEL, "REMORA_LOG_LEVEL", NULL, "info"},
    {"control", required_argument, OPT_CONTROL, "REMORA_CONTROL", NULL, NULL},
    {"node-id", required_argument, OPT_NODE_ID, "REMORA_NODE_ID", NULL, NULL},
    {"namespace", required_argument, OPT_NAMESPACE, "REMORA_NAMESPACE", NULL, NULL},
    {"state-dir", required_argument, OPT_STATE_DIR, "REMORA_STATE_DIR", NULL, NULL},
    {"stats-interval-ms", required_argument, OPT_STATS_INTERVAL, "REMORA_STATS_INTERVAL_MS", NULL, "10000"},
    {"identity-token", required_argument, OPT_IDENTITY_TOKEN, "REMORA_IDENTITY_TOKEN_FILE", NULL, NULL},
    {"trust-anchor", required_argument, OPT_TRUST_ANCHOR, "REMORA_TRUST_ANCHOR_FILE", NULL, NULL},
    {"control-insecure", no_argument, OPT_CONTROL_INSECURE, "REMORA_CONTROL_INSECURE", NULL, "false"},
    {"transparent", no_argument, OPT_TRANSPARENT, "REMORA_TRANSPARENT", NULL, "false"},
    {"outbound-port", required_argument, OPT_OUTBOUND_PORT, "REMORA_OUTBOUND_PORT", NULL, "15001"},
    {"inbound-port", required_argument, OPT_INBOUND_PORT, "REMORA_INBOUND_PORT", NULL, "15006"},
    {"inbound-to-localhost", no_argument, OPT_INBOUND_TO_LOCALHOST, "REMORA_INBOUND_TO_LOCALHOST", NULL, "false"},
    {"opaque-ports", required_argument, OPT_OPAQUE_PORTS, "REMORA_OPAQUE_PORTS", NULL, NULL},
};
#define NUM_SETTINGS (sizeof(settings) / sizeof(settings[0]))

/* Where each setting's value came from, for --print-config. */
enum { SRC_DEFAULT = 0, SRC_ENV, SRC_FLAG };
static struct {
    int source;
    const char *value; /* as given (env or argv storage: both live as long as the process) */
} provenance[NUM_SETTINGS];

/* --opaque-ports: at most this many ports (ranges expanded) */
#define MAX_OPAQUE_PORTS RM_PORT_LIST_MAX

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

/*
 * --control needs the trust anchor that verifies the control plane and a credential to present
 * (docs/identity.md, "The control plane's own doors"), unless --control-insecure. Prints the
 * problem and returns -1.
 */
static int
check_control_credentials(cmdline_t *cmd)
{
    if (cmd->control_insecure) {
        if (cmd->trust_anchor != NULL) {
            fprintf(stderr, "remora-agent: --control-insecure and --trust-anchor exclude each other\n");
            return -1;
        }
        return 0;
    }
    char path[4096];
    if (cmd->trust_anchor != NULL) {
        if (access(cmd->trust_anchor, R_OK) != 0) {
            fprintf(stderr, "remora-agent: --trust-anchor %s: %s\n", cmd->trust_anchor, strerror(errno));
            return -1;
        }
    } else if (cmd->state_dir != NULL &&
               (snprintf(path, sizeof(path), "%s/trust-bundle.pem", cmd->state_dir), access(path, R_OK) == 0)) {
        static char state_trust_anchor[4096];
        memcpy(state_trust_anchor, path, sizeof(state_trust_anchor));
        cmd->trust_anchor = state_trust_anchor;
    } else {
        fprintf(stderr, "remora-agent: --control needs the trust anchor to verify the control plane with: --trust-anchor FILE\n"
                        "(or REMORA_TRUST_ANCHOR_FILE; `remoractl trust-anchor` prints it), or a --state-dir holding\n"
                        "trust-bundle.pem from an earlier certificate. --control-insecure is for an insecure control plane.\n");
        return -1;
    }
    if (cmd->identity_token == NULL &&
        !(cmd->state_dir != NULL && (snprintf(path, sizeof(path), "%s/identity.crt", cmd->state_dir), access(path, R_OK) == 0))) {
        fprintf(stderr, "remora-agent: --control needs a workload identity to authenticate with: --identity-token FILE\n"
                        "(or REMORA_IDENTITY_TOKEN_FILE; `remoractl token create`), or a --state-dir holding a certificate\n"
                        "from an earlier run\n");
        return -1;
    }
    return 0;
}

/* The identity in service as PEM, for the control client's TLS client certificate (control_client.h). */
static int
control_client_identity(void *ctx, char **chain_pem, char **key_pem)
{
    rm_identity_t *id = rm_identity_current();
    if (id == NULL)
        return -1;
    BIO *bio = BIO_new(BIO_s_mem());
    int ok = bio != NULL && PEM_write_bio_PKCS8PrivateKey(bio, id->key, NULL, NULL, 0, NULL, NULL) == 1;
    char *data;
    long n = ok ? BIO_get_mem_data(bio, &data) : 0;
    if (n > 0) {
        *key_pem = rm_malloc((size_t)n + 1);
        memcpy(*key_pem, data, (size_t)n);
        (*key_pem)[n] = '\0';
        *chain_pem = rm_strdup(id->cert_chain_pem);
    }
    BIO_free(bio);
    rm_identity_unref(id);
    return n > 0 ? 0 : -1;
}

/* A DNS-1123 label, as the control plane's namespaces are. */
static int
valid_namespace(const char *ns)
{
    size_t n = strlen(ns);
    if (n == 0 || n > 63 || ns[0] == '-' || ns[n - 1] == '-')
        return 0;
    for (size_t i = 0; i != n; ++i)
        if (!((ns[i] >= 'a' && ns[i] <= 'z') || (ns[i] >= '0' && ns[i] <= '9') || ns[i] == '-'))
            return 0;
    return 1;
}

static int
set_addr(rm_config_addr_t *dst, const char *value, const char *flag)
{
    const char *err;
    if (rm_parse_ip_port(value, &dst->addr, &dst->addrlen, &err) != 0) {
        fprintf(stderr, "remora-agent: %s %s: %s\n", flag, value, err);
        return -1;
    }
    return 0;
}

/* --transparent: outbound on 127.0.0.1 and [::1] (where REDIRECT sends IPv6), inbound on 0.0.0.0 and [::]. */
static int
add_transparent_listeners(rm_config_t *config, const cmdline_t *cmd)
{
    static const struct {
        const char *name, *host;
        rm_direction_t direction;
    } defs[] = {
        {"outbound", "127.0.0.1", RM_DIRECTION_OUTBOUND},
        {"outbound-ipv6", "[::1]", RM_DIRECTION_OUTBOUND},
        {"inbound", "0.0.0.0", RM_DIRECTION_INBOUND},
        {"inbound-ipv6", "[::]", RM_DIRECTION_INBOUND},
    };
    size_t n = sizeof(defs) / sizeof(defs[0]);
    config->listeners = rm_realloc(config->listeners, (config->num_listeners + n) * sizeof(*config->listeners));
    for (size_t i = 0; i != n; ++i) {
        rm_config_listener_t *l = &config->listeners[config->num_listeners];
        memset(l, 0, sizeof(*l));
        ++config->num_listeners;
        char addr[64];
        snprintf(addr, sizeof(addr), "%s:%u", defs[i].host,
                 defs[i].direction == RM_DIRECTION_OUTBOUND ? cmd->outbound_port : cmd->inbound_port);
        l->name = rm_strdup(defs[i].name);
        l->direction = defs[i].direction;
        l->inbound_to_localhost = defs[i].direction == RM_DIRECTION_INBOUND && cmd->inbound_to_localhost;
        if (cmd->opaque_ports != NULL) { /* --opaque-ports replaces the default list (rm_config_validate fills that) */
            l->opaque_ports = rm_calloc(cmd->num_opaque_ports + 1, sizeof(uint16_t));
            memcpy(l->opaque_ports, cmd->opaque_ports, cmd->num_opaque_ports * sizeof(uint16_t));
            l->num_opaque_ports = cmd->num_opaque_ports;
        }
        /* no routes of its own: a Service's virtual address sends HTTP to the Service's cluster (its
         * fallback route); under a control plane the translation gives it the Services' routes */
        if (set_addr(&l->addr, addr, "--transparent") != 0)
            return -1;
    }
    return 0;
}

/* Applies command-line overrides to a freshly loaded snapshot (not yet published). */
static int
apply_overrides(rm_config_t *config, const cmdline_t *cmd)
{
    if (cmd->workers != 0)
        config->num_workers = cmd->workers;
    if (cmd->admin != NULL && set_addr(&config->admin_addr, cmd->admin, "--admin") != 0)
        return -1;
    if (cmd->health != NULL && set_addr(&config->health_addr, cmd->health, "--health") != 0)
        return -1;
    if (cmd->drain_ms >= 0)
        config->drain_timeout_ms = (uint32_t)cmd->drain_ms;
    if (cmd->config == NULL) {
        if ((cmd->tls_cert != NULL) != (cmd->tls_key != NULL)) {
            fprintf(stderr, "remora-agent: --tls-cert and --tls-key go together\n");
            return -1;
        }
        if (cmd->tls_cert != NULL && config->num_listeners != 0) {
            config->listeners[0].tls_cert_file = rm_strdup(cmd->tls_cert);
            config->listeners[0].tls_key_file = rm_strdup(cmd->tls_key);
        }
        if ((cmd->upstream_tls || cmd->upstream_ca != NULL || cmd->upstream_sni != NULL) && config->num_clusters != 0) {
            rm_config_cluster_t *c = &config->clusters[0];
            c->tls = 1;
            if (cmd->upstream_ca != NULL)
                c->tls_ca_file = rm_strdup(cmd->upstream_ca);
            if (cmd->upstream_sni != NULL)
                c->tls_server_name = rm_strdup(cmd->upstream_sni);
        }
    }
    if (cmd->transparent && add_transparent_listeners(config, cmd) != 0)
        return -1;
    rm_config_error_t err;
    if (rm_config_validate(config, &err) != 0) {
        char buf[1024];
        fprintf(stderr, "remora-agent: %s\n", rm_config_error_format(&err, buf, sizeof(buf)));
        return -1;
    }
    return 0;
}

/* Control-plane mode: the agent's own settings, with no routes or clusters yet. */
static rm_config_t *
control_base_config(const cmdline_t *cmd)
{
    rm_config_t *config = rm_config_create_defaults();
    config->source = rm_strdup("command line");
    if (cmd->quick.listen == NULL)
        return config; /* --transparent alone */
    config->listeners = rm_calloc(1, sizeof(*config->listeners));
    config->num_listeners = 1;
    config->listeners[0].name = rm_strdup("main");
    if (set_addr(&config->listeners[0].addr, cmd->quick.listen, "--listen") != 0) {
        rm_config_unref(config);
        return NULL;
    }
    return config;
}

static rm_config_t *
load_config(const cmdline_t *cmd, int quiet_prefix)
{
    rm_config_error_t err;
    rm_config_t *config;
    if (cmd->control != NULL) {
        if ((config = control_base_config(cmd)) == NULL)
            return NULL;
    } else if (cmd->config != NULL) {
        config = rm_config_load_file(cmd->config, &err);
    } else if (cmd->transparent && cmd->quick.listen == NULL && cmd->quick.upstream == NULL) {
        /* transparent listeners only: every destination passes through unchanged */
        config = rm_config_create_defaults();
        config->source = rm_strdup("command line");
    } else {
        config = rm_config_from_quick(&cmd->quick, &err);
    }
    if (config == NULL) {
        char buf[1024];
        rm_log_error("config", "%s", rm_config_error_format(&err, buf, sizeof(buf)));
        return NULL;
    }
    if (apply_overrides(config, cmd) != 0) {
        rm_config_unref(config);
        return NULL;
    }
    return config;
}

/*
 * Admin callbacks (main thread)
 */

/* With --identity-token, 1 once a workload certificate is in service: without one, mesh mTLS can be neither
 * offered inbound nor made outbound, so /ready waits for it as it waits for the first snapshot. */
static int
identity_in_service(void)
{
    if (agent.identity == NULL)
        return 1;
    rm_identity_t *id = rm_identity_current();
    rm_identity_unref(id);
    return id != NULL;
}

static int
cb_is_ready(void *ctx)
{
    return agent.ready && !agent.draining && !agent.in_grace && (agent.control == NULL || agent.has_snapshot) &&
           identity_in_service();
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

static void
start_drain(void *ctx)
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
    start_drain(NULL);
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
static void
cb_shutdown(void *ctx)
{
    ++agent.shutdown_posts;
    rm_log_info("agent", "POST /shutdown: %s",
                agent.in_grace   ? "outbound grace ended; draining"
                : agent.draining ? "already draining"
                                 : "draining");
    start_drain(NULL);
}

static char *
render_shutdown_metrics(void)
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
    stop_control();
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

static void
worker_exit_hook(rm_worker_t *worker)
{
    __atomic_add_fetch(&agent.workers_exited, 1, __ATOMIC_ACQ_REL);
    uv_async_send(&agent.worker_exited);
}

/*
 * Reload
 */

static cmdline_t cmdline;

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
static int
publish(rm_config_t *config, char *errbuf, size_t errlen)
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
static int
load_identity_dir(const rm_config_t *config, int at_start)
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

static void
reload(void)
{
    if (agent.config_file == NULL) {
        rm_log_warn("agent", "SIGHUP: nothing to reload (no --config file)");
        return;
    }
    rm_config_t *config = load_config(&cmdline, 0);
    if (config == NULL) {
        rm_log_error("agent", "reload rejected; generation %llu stays in service", (unsigned long long)agent.generation);
        rm_obs_config_rejected(RM_OBS_CONFIG_FILE);
        return;
    }
    char err[512];
    if (publish(config, err, sizeof(err)) != 0) {
        rm_log_error("agent", "reload rejected: %s: %s; generation %llu stays in service", agent.config_file, err,
                     (unsigned long long)agent.generation);
        rm_obs_config_rejected(RM_OBS_CONFIG_FILE);
        return;
    }
    if (cmdline.identity_token == NULL)
        load_identity_dir(config, 0);
    rm_log_info("agent", "reloaded %s: generation %llu in service", agent.config_file, (unsigned long long)agent.generation);
}

/*
 * Control-plane snapshots arrive on the control thread and are published here, on the main thread.
 */

/* An admin command relayed by the control plane (`remoractl proxy`), answered by the admin code on the main thread. */
typedef struct st_control_admin_call_t {
    const char *command, *argument;
    rm_control_admin_reply_t *reply;
    int done;
} control_admin_call_t;

static void
serve_control_admin(void)
{
    pthread_mutex_lock(&agent.control_mutex);
    control_admin_call_t *call = agent.control_admin;
    agent.control_admin = NULL;
    pthread_mutex_unlock(&agent.control_mutex);
    if (call == NULL)
        return;
    /* the control thread waits for `done` (or control_closed, which only this thread sets): `call` stays valid meanwhile */
    rm_admin_command(agent.admin, call->command, call->argument, &call->reply->status, &call->reply->content_type,
                     &call->reply->body, &call->reply->body_len);
    pthread_mutex_lock(&agent.control_mutex);
    call->done = 1;
    pthread_cond_broadcast(&agent.control_cond);
    pthread_mutex_unlock(&agent.control_mutex);
}

/* control thread */
static void
control_admin_command(void *ctx, const char *command, const char *argument, rm_control_admin_reply_t *reply)
{
    control_admin_call_t call = {command, argument, reply, 0};
    pthread_mutex_lock(&agent.control_mutex);
    if (!agent.control_closed) {
        agent.control_admin = &call;
        pthread_mutex_unlock(&agent.control_mutex);
        uv_async_send(&agent.control_async);
        pthread_mutex_lock(&agent.control_mutex);
        while (!call.done && !agent.control_closed)
            pthread_cond_wait(&agent.control_cond, &agent.control_mutex);
        if (agent.control_admin == &call)
            agent.control_admin = NULL;
    }
    pthread_mutex_unlock(&agent.control_mutex);
    if (!call.done) {
        reply->status = 503;
        reply->content_type = "text/plain; charset=utf-8";
        reply->body = rm_strdup("the agent is shutting down\n");
        reply->body_len = strlen(reply->body);
    }
}

static void
on_control_async(uv_async_t *async)
{
    serve_control_admin();
    pthread_mutex_lock(&agent.control_mutex);
    rm_config_t *config = agent.control_pending;
    agent.control_pending = NULL;
    pthread_mutex_unlock(&agent.control_mutex);
    if (config == NULL)
        return;
    char err[512] = "";
    int r = publish(config, err, sizeof(err));
    if (r == 0 && !agent.has_snapshot) {
        agent.has_snapshot = 1;
        rm_log_info("agent", "first snapshot from the control plane in service: %s",
                    identity_in_service() ? "ready" : "ready once the workload certificate is in service");
    }
    pthread_mutex_lock(&agent.control_mutex);
    agent.control_result = r;
    snprintf(agent.control_err, sizeof(agent.control_err), "%s", err);
    agent.control_done = 1;
    pthread_cond_broadcast(&agent.control_cond);
    pthread_mutex_unlock(&agent.control_mutex);
}

/*
 * The control client's stats source (config/control_stats.h): the golden request family
 * (filters/golden.h: labels direction, route, backend, client_id, status_code, grpc_status, classification)
 * summed over workers and outcomes per (direction, route, backend). The family is visited in label
 * order, so the outcomes of one (direction, route, backend) come one after another. Control thread;
 * the workers' stats blocks outlive the control client (it is stopped before they are destroyed).
 */
#define GOLDEN_FAMILY "remora_request_duration_seconds"
enum { GOLDEN_DIRECTION, GOLDEN_ROUTE, GOLDEN_BACKEND, GOLDEN_CLASSIFICATION = 6 };

typedef struct st_stats_summary_t {
    rm_control_stat_series_t *out, *cur;
    size_t max, n;
    char prev[3][RM_CONTROL_STAT_MAX_VALUE + 1];
} stats_summary_t;

static void
stats_summary_visit(void *ctx, const char *const *values, uint64_t count, const uint64_t *buckets, uint64_t sum_us)
{
    stats_summary_t *sum = ctx;
    char key[3][RM_CONTROL_STAT_MAX_VALUE + 1];
    memset(key, 0, sizeof(key)); /* compared whole with memcmp */
    for (size_t i = 0; i != 3; ++i)
        snprintf(key[i], sizeof(key[i]), "%s", values[i]);
    if (sum->n == 0 || memcmp(key, sum->prev, sizeof(key)) != 0) {
        memcpy(sum->prev, key, sizeof(key));
        sum->cur = sum->n < sum->max ? &sum->out[sum->n] : NULL;
        ++sum->n;
        if (sum->cur != NULL) {
            memset(sum->cur, 0, sizeof(*sum->cur));
            memcpy(sum->cur->direction, key[GOLDEN_DIRECTION], sizeof(key[0]));
            memcpy(sum->cur->route, key[GOLDEN_ROUTE], sizeof(key[0]));
            memcpy(sum->cur->backend, key[GOLDEN_BACKEND], sizeof(key[0]));
        }
    }
    rm_control_stat_series_t *cur = sum->cur;
    if (cur == NULL)
        return;
    cur->requests += count;
    if (strcmp(values[GOLDEN_CLASSIFICATION], "failure") == 0)
        cur->failures += count;
    if (buckets != NULL)
        for (unsigned b = 0; b != RM_HISTOGRAM_BUCKETS; ++b)
            cur->buckets[b] += buckets[b];
    cur->sum_us += sum_us;
}

static size_t
control_stats_source(rm_control_stat_series_t *out, size_t max)
{
    stats_summary_t sum = {.out = out, .max = max};
    rm_series_foreach(GOLDEN_FAMILY, agent.stats, agent.num_workers, stats_summary_visit, &sum);
    return sum.n;
}

/* control thread: counted for remora_config_nacks_total */
static void
control_nack(void *ctx)
{
    rm_obs_config_rejected(RM_OBS_CONFIG_CONTROL_PLANE);
}

static int
control_apply(void *ctx, rm_config_t *config, char *err, size_t errlen)
{
    pthread_mutex_lock(&agent.control_mutex);
    if (agent.control_closed) {
        pthread_mutex_unlock(&agent.control_mutex);
        rm_config_unref(config);
        snprintf(err, errlen, "the agent is shutting down");
        return -1;
    }
    agent.control_pending = config;
    agent.control_done = 0;
    pthread_mutex_unlock(&agent.control_mutex);
    uv_async_send(&agent.control_async);
    pthread_mutex_lock(&agent.control_mutex);
    while (!agent.control_done && !agent.control_closed)
        pthread_cond_wait(&agent.control_cond, &agent.control_mutex);
    int r = agent.control_done ? agent.control_result : -1;
    snprintf(err, errlen, "%s", agent.control_done ? agent.control_err : "the agent is shutting down");
    if (!agent.control_done && agent.control_pending != NULL) {
        rm_config_unref(agent.control_pending);
        agent.control_pending = NULL;
    }
    pthread_mutex_unlock(&agent.control_mutex);
    return r;
}

static void
stop_control(void)
{
    if (agent.identity != NULL) {
        agent.control_module->identity_stop(agent.identity);
        agent.identity = NULL;
    }
    if (agent.control == NULL)
        return;
    pthread_mutex_lock(&agent.control_mutex);
    agent.control_closed = 1;
    pthread_cond_broadcast(&agent.control_cond);
    pthread_mutex_unlock(&agent.control_mutex);
    agent.control_module->stop(agent.control);
    agent.control = NULL;
    uv_close((uv_handle_t *)&agent.control_async, NULL);
}

static void
on_signal(uv_signal_t *handle, int signum)
{
    if (signum == SIGHUP)
        reload();
    else if (signum == SIGUSR1)
        rm_access_log_reopen(); /* log rotation */
    else {
        ++agent.shutdown_signals;
        if (agent.grace_ms != 0 && !agent.in_grace && !agent.draining)
            start_grace();
        else
            start_drain(NULL); /* a second signal ends the grace */
    }
}

/* "3306,5432,9000-9010": the common port-list grammar, sorted and deduplicated into cmdline. */
static int
parse_opaque_ports(const char *value, const char *label)
{
    uint16_t *ports = rm_calloc(MAX_OPAQUE_PORTS, sizeof(*ports));
    char err[256];
    long n = rm_parse_port_list(value, label, ports, MAX_OPAQUE_PORTS, err, sizeof(err));
    if (n < 0) {
        fprintf(stderr, "remora-agent: %s\n", err);
        free(ports);
        return -1;
    }
    free(cmdline.opaque_ports);
    if (n == 0) { /* an empty list keeps the default, as an empty REMORA_OPAQUE_PORTS does */
        free(ports);
        ports = NULL;
    }
    cmdline.opaque_ports = ports;
    cmdline.num_opaque_ports = (size_t)n;
    return 0;
}

/*
 * Applies one setting from one layer; `label` names the layer's spelling in messages ("--workers" or
 * "REMORA_WORKERS"). Booleans arrive as "1" or "0". Later calls win, so the environment is applied before the flags.
 * Returns 0, or -1 with the problem printed.
 */
static int
apply_option(int id, const char *value, const char *label)
{
    char *end;
    long n;
    switch (id) {
    case 'c':
        cmdline.config = value;
        break;
    case OPT_LISTEN:
        cmdline.quick.listen = value;
        break;
    case OPT_TRANSPARENT:
        cmdline.transparent = value[0] == '1';
        break;
    case OPT_INBOUND_TO_LOCALHOST:
        cmdline.inbound_to_localhost = value[0] == '1';
        break;
    case OPT_OUTBOUND_PORT:
    case OPT_INBOUND_PORT:
        n = strtol(value, &end, 10);
        if (*value == '\0' || *end != '\0' || n < 1 || n > 65535) {
            fprintf(stderr, "remora-agent: %s must be a port number (1-65535), got '%s'\n", label, value);
            return -1;
        }
        if (id == OPT_OUTBOUND_PORT)
            cmdline.outbound_port = (unsigned)n;
        else
            cmdline.inbound_port = (unsigned)n;
        break;
    case OPT_OPAQUE_PORTS:
        return parse_opaque_ports(value, label);
    case OPT_UPSTREAM:
        cmdline.quick.upstream = value;
        break;
    case OPT_UPSTREAM_PROTOCOL:
        cmdline.quick.upstream_protocol = value;
        break;
    case OPT_TLS_CERT:
        cmdline.tls_cert = value;
        break;
    case OPT_TLS_KEY:
        cmdline.tls_key = value;
        break;
    case OPT_UPSTREAM_TLS:
        cmdline.upstream_tls = value[0] == '1';
        break;
    case OPT_UPSTREAM_CA:
        cmdline.upstream_ca = value;
        break;
    case OPT_UPSTREAM_SNI:
        cmdline.upstream_sni = value;
        break;
    case 'w':
        n = strtol(value, &end, 10);
        if (*value == '\0' || *end != '\0' || n < 1 || n > 64) {
            fprintf(stderr, "remora-agent: %s must be a number from 1 to 64, got '%s'\n", label, value);
            return -1;
        }
        cmdline.workers = (unsigned)n;
        cmdline.quick.workers = (unsigned)n;
        break;
    case OPT_ADMIN:
    case OPT_HEALTH: {
        struct sockaddr_storage ss;
        socklen_t sslen;
        const char *err;
        if (rm_parse_ip_port(value, &ss, &sslen, &err) != 0) {
            fprintf(stderr, "remora-agent: %s %s: %s\n", label, value, err);
            return -1;
        }
        if (id == OPT_ADMIN)
            cmdline.admin = value;
        else
            cmdline.health = value;
    } break;
    case OPT_DRAIN:
    case OPT_OUTBOUND_GRACE:
        n = strtol(value, &end, 10);
        if (*value == '\0' || *end != '\0' || n < 0 || n > 3600000) {
            fprintf(stderr, "remora-agent: %s must be a number of milliseconds up to 3600000, got '%s'\n", label, value);
            return -1;
        }
        if (id == OPT_DRAIN)
            cmdline.drain_ms = n;
        else
            cmdline.outbound_grace_ms = n;
        break;
    case OPT_LOG_LEVEL:
        if (rm_log_set_level_by_name(value) != 0) {
            fprintf(stderr, "remora-agent: %s must be one of error, warn, info, debug, got '%s'\n", label, value);
            return -1;
        }
        break;
    case OPT_CONTROL: {
        /* HOST:PORT, HOST an IP literal ([v6]) or a DNS name: gRPC resolves names itself */
        const char *colon = strrchr(value, ':');
        n = colon != NULL ? strtol(colon + 1, &end, 10) : 0;
        if (colon == NULL || colon == value || colon[1] == '\0' || *end != '\0' || n < 1 || n > 65535) {
            fprintf(stderr, "remora-agent: %s '%s': must be HOST:PORT (HOST an IP address or a DNS name)\n", label, value);
            return -1;
        }
        cmdline.control = value;
    } break;
    case OPT_NODE_ID:
        cmdline.node_id = value;
        break;
    case OPT_STATE_DIR:
        cmdline.state_dir = value;
        break;
    case OPT_NAMESPACE:
        if (!valid_namespace(value)) {
            fprintf(stderr,
                    "remora-agent: %s '%s': must be a DNS-1123 label (1-63 of a-z, 0-9 and '-', "
                    "starting and ending with a letter or digit)\n",
                    label, value);
            return -1;
        }
        cmdline.namespace_ = value;
        break;
    case OPT_IDENTITY_TOKEN:
        cmdline.identity_token = value;
        break;
    case OPT_TRUST_ANCHOR:
        cmdline.trust_anchor = value;
        break;
    case OPT_CONTROL_INSECURE:
        cmdline.control_insecure = value[0] == '1';
        break;
    case OPT_STATS_INTERVAL:
        n = strtol(value, &end, 10);
        if (*value == '\0' || *end != '\0' || n < 1000 || n > 3600000) {
            fprintf(stderr, "remora-agent: %s must be a number of milliseconds from 1000 to 3600000, got '%s'\n", label, value);
            return -1;
        }
        cmdline.stats_interval_ms = n;
        break;
    default:
        rm_fatal("unknown setting %d", id);
    }
    return 0;
}

/* The environment layer: every REMORA_* variable of a setting that is set and not empty. Returns 0 or -1. */
static int
apply_environment(void)
{
    for (size_t i = 0; i != NUM_SETTINGS; ++i) {
        const char *value = getenv(settings[i].env);
        if (value == NULL || value[0] == '\0')
            continue;
        if (settings[i].has_arg == no_argument) {
            if (strcmp(value, "1") == 0 || strcmp(value, "true") == 0) {
                value = "1";
            } else if (strcmp(value, "0") == 0 || strcmp(value, "false") == 0) {
                value = "0";
            } else {
                fprintf(stderr, "remora-agent: %s must be 1, true, 0 or false, got '%s'\n", settings[i].env, value);
                return -1;
            }
        }
        if (apply_option(settings[i].id, value, settings[i].env) != 0)
            return -1;
        provenance[i].source = SRC_ENV;
        provenance[i].value = settings[i].has_arg == no_argument ? (value[0] == '1' ? "true" : "false") : value;
    }
    return 0;
}

/* A YAML double-quoted scalar (the values are paths, addresses and names; control characters are escaped). */
static void
print_yaml_string(const char *s)
{
    putchar('"');
    for (; *s != '\0'; ++s) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            printf("\\x%02x", c);
        else
            putchar(c);
    }
    putchar('"');
}

/*
 * --print-config: every setting with its merged value and where it came from, as YAML:
 *   <flag name>: {value: ..., source: default | "file:PATH:LINE" | env REMORA_X | flag --x}
 * The file's keys come from `config` (the loaded file, or the defaults when there is none).
 */
static void
print_config(const rm_config_t *config)
{
    unsigned lines[NUM_SETTINGS];
    const char *keys[NUM_SETTINGS + 1];
    size_t nkeys = 0;
    for (size_t i = 0; i != NUM_SETTINGS; ++i)
        if (settings[i].file_key != NULL)
            keys[nkeys++] = settings[i].file_key;
    keys[nkeys] = NULL;
    memset(lines, 0, sizeof(lines));
    if (cmdline.config != NULL)
        rm_config_top_level_lines(cmdline.config, keys, lines);
    printf("# remora-agent %s: merged settings (defaults < --config file < REMORA_* environment < flags)\n", REMORA_VERSION);
    size_t k = 0;
    for (size_t i = 0; i != NUM_SETTINGS; ++i) {
        const setting_t *st = &settings[i];
        char buf[1024], src[600];
        const char *value = provenance[i].value;
        unsigned line = st->file_key != NULL ? lines[k++] : 0;
        switch (provenance[i].source) {
        case SRC_ENV:
            snprintf(src, sizeof(src), "env %s", st->env);
            break;
        case SRC_FLAG:
            snprintf(src, sizeof(src), "flag --%s", st->name);
            break;
        default:
            if (line != 0)
                snprintf(src, sizeof(src), "file:%.500s:%u", cmdline.config, line);
            else
                snprintf(src, sizeof(src), "default");
            value = st->def;
            break;
        }
        if (provenance[i].source == SRC_DEFAULT) {
            /* the file's keys and the computed defaults show the value in service */
            switch (st->id) {
            case 'w':
                snprintf(buf, sizeof(buf), "%u", config->num_workers);
                value = buf;
                break;
            case OPT_ADMIN:
                value = rm_format_sockaddr((const struct sockaddr *)&config->admin_addr.addr, buf, sizeof(buf));
                break;
            case OPT_HEALTH:
                value = rm_format_sockaddr((const struct sockaddr *)&config->health_addr.addr, buf, sizeof(buf));
                break;
            case OPT_DRAIN:
                snprintf(buf, sizeof(buf), "%u", config->drain_timeout_ms);
                value = buf;
                break;
            case OPT_OPAQUE_PORTS: {
                size_t len = 0;
                for (size_t j = 0; j != rm_config_num_default_opaque_ports && len + 8 < sizeof(buf); ++j)
                    len += (size_t)snprintf(buf + len, sizeof(buf) - len, "%s%u", j == 0 ? "" : ",",
                                            (unsigned)rm_config_default_opaque_ports[j]);
                value = buf;
            } break;
            }
        }
        printf("%s: {value: ", st->name);
        if (value == NULL)
            printf("null");
        else if (st->has_arg == no_argument)
            printf("%s", strcmp(value, "1") == 0 || strcmp(value, "true") == 0 ? "true" : "false");
        else
            print_yaml_string(value);
        printf(", source: ");
        print_yaml_string(src);
        printf("}\n");
    }
}

/*
 * gRPC core may still be ending its own threads (executor, timers, resolver, event engine) when the
 * control module has stopped: its final clean-up can run on one of them. Wait for them, at most 2 s, so
 * that the process exits with its own threads only (the main thread and libuv's pool, which carry the
 * process's name; the library's threads name themselves): a thread that ends during exit races with
 * OpenSSL's per-thread state and with the leak checker of the sanitizer builds.
 */
static void
wait_for_library_threads(void)
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

int
main(int argc, char **argv)
{
    struct option longopts[NUM_SETTINGS + 5];
    size_t nopts = 0;
    for (size_t i = 0; i != NUM_SETTINGS; ++i)
        longopts[nopts++] = (struct option){settings[i].name, settings[i].has_arg, NULL, settings[i].id};
    longopts[nopts++] = (struct option){"check-config", no_argument, NULL, OPT_CHECK};
    longopts[nopts++] = (struct option){"print-config", no_argument, NULL, OPT_PRINT_CONFIG};
    longopts[nopts++] = (struct option){"help", no_argument, NULL, 'h'};
    longopts[nopts++] = (struct option){"version", no_argument, NULL, OPT_VERSION};
    longopts[nopts] = (struct option){NULL, 0, NULL, 0};
    cmdline.drain_ms = -1;
    cmdline.outbound_port = 15001;
    cmdline.inbound_port = 15006;
    /* the environment layer first: the flags parsed after it win */
    if (apply_environment() != 0)
        return 2;
    int opt;
    while ((opt = getopt_long(argc, argv, "c:w:h", longopts, NULL)) != -1) {
        switch (opt) {
        case OPT_CHECK:
            cmdline.check = 1;
            continue;
        case OPT_PRINT_CONFIG:
            cmdline.print_config = 1;
            continue;
        case 'h':
            usage(stdout);
            return 0;
        case OPT_VERSION:
            printf("remora-agent %s\n", REMORA_VERSION);
            return 0;
        }
        size_t i;
        for (i = 0; i != NUM_SETTINGS; ++i)
            if (settings[i].id == opt)
                break;
        if (i == NUM_SETTINGS) {
            usage(stderr);
            return 2;
        }
        char label[64];
        snprintf(label, sizeof(label), "--%s", settings[i].name);
        const char *value = settings[i].has_arg == no_argument ? "1" : optarg;
        if (apply_option(opt, value, label) != 0)
            return 2;
        provenance[i].source = SRC_FLAG;
        provenance[i].value = settings[i].has_arg == no_argument ? "true" : value;
    }
    if (optind != argc) {
        fprintf(stderr, "remora-agent: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (cmdline.print_config) {
        rm_config_error_t perr;
        rm_config_t *file = cmdline.config != NULL ? rm_config_load_file(cmdline.config, &perr) : rm_config_create_defaults();
        if (file == NULL) {
            char buf[1024];
            fprintf(stderr, "remora-agent: %s\n", rm_config_error_format(&perr, buf, sizeof(buf)));
            return 1;
        }
        print_config(file);
        rm_config_unref(file);
        return 0;
    }
    if (cmdline.identity_token != NULL && (cmdline.control == NULL || cmdline.state_dir == NULL)) {
        fprintf(stderr, "remora-agent: --identity-token (or REMORA_IDENTITY_TOKEN_FILE) needs --control ADDR:PORT and --state-dir "
                        "DIR (the key and certificate are kept there)\n");
        return 2;
    }
    if (cmdline.control != NULL && check_control_credentials(&cmdline) != 0)
        return 2;
    if (cmdline.control != NULL || cmdline.node_id != NULL || cmdline.state_dir != NULL || cmdline.stats_interval_ms != 0 ||
        cmdline.namespace_ != NULL) {
        if (cmdline.control == NULL || cmdline.node_id == NULL || (cmdline.quick.listen == NULL && !cmdline.transparent)) {
            fprintf(stderr, "remora-agent: control-plane mode needs --control ADDR:PORT, --node-id NAME and --listen ADDR:PORT "
                            "or --transparent\n");
            return 2;
        }
        if (cmdline.config != NULL || cmdline.quick.upstream != NULL) {
            fprintf(stderr, "remora-agent: --control (or REMORA_CONTROL) takes its routes from the control plane: drop --config "
                            "and --upstream\n");
            return 2;
        }
        if (cmdline.node_id[0] == '\0' || strlen(cmdline.node_id) > 253) {
            fprintf(stderr, "remora-agent: --node-id must be 1 to 253 characters\n");
            return 2;
        }
    } else if (cmdline.config != NULL && (cmdline.quick.listen != NULL || cmdline.quick.upstream != NULL)) {
        fprintf(stderr, "remora-agent: use either --config or --listen/--upstream, not both\n");
        return 2;
    }
    if (cmdline.control == NULL && cmdline.config == NULL && !(cmdline.transparent && cmdline.quick.listen == NULL) &&
        (cmdline.quick.listen == NULL || cmdline.quick.upstream == NULL)) {
        fprintf(stderr, "remora-agent: give --config FILE, or both --listen and --upstream\n");
        usage(stderr);
        return 2;
    }

    signal(SIGPIPE, SIG_IGN);
    rm_tls_init();
    assemble();
    agent.config_file = cmdline.config;
    if ((agent.config = load_config(&cmdline, 0)) == NULL)
        return 1;
    uint64_t persisted_version = 0;
    if (cmdline.control != NULL) {
        /* serve the last good snapshot until the control plane answers (or forever, if it does not) */
        char perr[1024];
        if (cmdline.state_dir != NULL && prepare_state_dir(cmdline.state_dir, perr, sizeof(perr)) != 0) {
            rm_log_error("agent", "%s", perr);
            return 1;
        }
        /* until a snapshot is in service, requests are answered "not configured yet" (503) */
        agent.config->awaiting_snapshot = 1;
        if (cmdline.namespace_ != NULL)
            agent.config->agent_namespace = rm_strdup(cmdline.namespace_);
        agent.control_base = rm_config_ref(agent.config);
        if ((agent.control_module = rm_control_module_load(perr, sizeof(perr))) == NULL) {
            rm_log_error("agent", "%s", perr);
            return 1;
        }
        rm_config_t *persisted =
            agent.control_module->load_persisted(cmdline.state_dir, agent.control_base, &persisted_version, perr, sizeof(perr));
        if (persisted != NULL) {
            rm_log_info("control", "serving persisted snapshot version %llu from %s until the control plane answers",
                        (unsigned long long)persisted_version, cmdline.state_dir);
            rm_config_unref(agent.config);
            agent.config = persisted;
            agent.has_snapshot = 1;
        } else if (perr[0] != '\0') {
            rm_log_warn("control", "ignoring the persisted snapshot: %s", perr);
        }
        if (cmdline.identity_token != NULL || (cmdline.state_dir != NULL && !cmdline.control_insecure)) {
            /* an unexpired identity kept from an earlier run serves at once, control plane or not (and,
             * without --identity-token, authenticates the agent to the control plane until it expires) */
            rm_identity_init();
            rm_identity_t *id = rm_identity_load(cmdline.state_dir, perr, sizeof(perr));
            if (id != NULL) {
                rm_log_info("identity", "serving %s (serial %s, expires in %lld s) kept in %s", id->spiffe_id, id->serial,
                            (long long)(id->not_after - (int64_t)time(NULL)), cmdline.state_dir);
                rm_identity_publish(id);
                rm_identity_unref(id);
            } else if (perr[0] != '\0') {
                rm_log_warn("identity", "ignoring the kept identity: %s", perr);
            }
        }
    }
    rm_mesh_tls_init();
    if (cmdline.identity_token == NULL && load_identity_dir(agent.config, 1) != 0)
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
        agent.workers[w].on_exit = worker_exit_hook;
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
    rm_stats_register_renderer(render_shutdown_metrics);
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
        .start_drain = start_drain,
        .clusters = cb_clusters,
        .shutdown = cb_shutdown,
        .app_probes = agent.app_probes,
    };
    agent.admin = rm_admin_start(&agent.loop, (struct sockaddr *)&agent.config->health_addr.addr,
                                 (struct sockaddr *)&agent.config->admin_addr.addr, &admin_cb, NULL, err, sizeof(err));
    if (agent.admin == NULL) {
        rm_log_error("agent", "%s", err);
        return 1;
    }
    uv_signal_init(&agent.loop, &agent.sigterm);
    uv_signal_start(&agent.sigterm, on_signal, SIGTERM);
    uv_signal_init(&agent.loop, &agent.sigint);
    uv_signal_start(&agent.sigint, on_signal, SIGINT);
    uv_signal_init(&agent.loop, &agent.sighup);
    uv_signal_start(&agent.sighup, on_signal, SIGHUP);
    uv_signal_init(&agent.loop, &agent.sigusr1);
    uv_signal_start(&agent.sigusr1, on_signal, SIGUSR1);
    uv_async_init(&agent.loop, &agent.worker_exited, on_worker_exited);

    for (unsigned w = 0; w != agent.num_workers; ++w) {
        int r = rm_worker_start(&agent.workers[w]);
        if (r != 0) {
            rm_log_error("agent", "starting worker %u: %s", w, strerror(-r));
            return 1;
        }
    }
    if (cmdline.control != NULL) {
        pthread_mutex_init(&agent.control_mutex, NULL);
        pthread_cond_init(&agent.control_cond, NULL);
        uv_async_init(&agent.loop, &agent.control_async, on_control_async);
        rm_control_options_t copts = {
            .address = cmdline.control,
            .node_id = cmdline.node_id,
            .state_dir = cmdline.state_dir,
            .base = agent.control_base,
            .applied_version = persisted_version,
            .apply = control_apply,
            .on_nack = control_nack,
            .stats_interval_ms = (uint32_t)cmdline.stats_interval_ms,
            .trust_anchor_file = cmdline.trust_anchor,
            .token_file = cmdline.identity_token,
            .insecure = cmdline.control_insecure,
            .client_identity = control_client_identity,
            .admin_command = control_admin_command,
        };
        rm_control_set_stats_source(control_stats_source);
        if ((agent.control = agent.control_module->start(&copts, err, sizeof(err))) == NULL) {
            rm_log_error("agent", "%s", err);
            return 1;
        }
        if (cmdline.identity_token != NULL) {
            rm_identity_client_options_t iopts = {
                .address = cmdline.control,
                .node_id = cmdline.node_id,
                .token_file = cmdline.identity_token,
                .trust_anchor_file = cmdline.trust_anchor,
                .insecure = cmdline.control_insecure,
                .make_csr = rm_identity_cb_make_csr,
                .install = rm_identity_cb_install,
                .release_key = rm_identity_cb_release_key,
                .validity = rm_identity_cb_validity,
                .on_result = rm_identity_cb_on_result,
                .ctx = (void *)cmdline.state_dir,
            };
            if ((agent.identity = agent.control_module->identity_start(&iopts, err, sizeof(err))) == NULL) {
                rm_log_error("agent", "%s", err);
                return 1;
            }
        }
    }
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
    wait_for_library_threads();
    rm_log_info("agent", "drained; exiting");
    OPENSSL_thread_stop(); /* the main thread's OpenSSL state (error queue), as other threads release theirs on exit */
    return 0;
}
