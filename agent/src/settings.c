/*
 * The agent's settings (docs/configuration.md, "Layers"): the command line, the REMORA_* environment, the
 * bootstrap file's top-level settings, --print-config, and the snapshot they make at start and at each
 * SIGHUP. Main thread.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "config/config.h"
#include "config/layers.h"
#include "config/ondemand.h"
#include "agent_priv.h"

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
                "      --mesh-sniff-timeout-ms N  how long a connection to an opaque destination waits for a peer\n"
                "                               agent's mesh ClientHello before it is taken for plaintext (1-60000,\n"
                "                               default 500, bounded by limits.detect_timeout_ms; docs/mesh-tls.md)\n"
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
                "      --discovery-timeout-ms N  a scoped agent holds a request for a name outside its scope at most\n"
                "                               N ms while it asks the control plane for it (on-demand discovery,\n"
                "                               docs/control-plane.md); 0 answers at once (404). Default 1000, at most 60000\n"
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
    OPT_MESH_SNIFF_TIMEOUT,
    OPT_DISCOVERY_TIMEOUT,
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
    {"discovery-timeout-ms", required_argument, OPT_DISCOVERY_TIMEOUT, "REMORA_DISCOVERY_TIMEOUT_MS", NULL, "1000"},
    {"identity-token", required_argument, OPT_IDENTITY_TOKEN, "REMORA_IDENTITY_TOKEN_FILE", NULL, NULL},
    {"trust-anchor", required_argument, OPT_TRUST_ANCHOR, "REMORA_TRUST_ANCHOR_FILE", NULL, NULL},
    {"control-insecure", no_argument, OPT_CONTROL_INSECURE, "REMORA_CONTROL_INSECURE", NULL, "false"},
    {"transparent", no_argument, OPT_TRANSPARENT, "REMORA_TRANSPARENT", NULL, "false"},
    {"outbound-port", required_argument, OPT_OUTBOUND_PORT, "REMORA_OUTBOUND_PORT", NULL, "15001"},
    {"inbound-port", required_argument, OPT_INBOUND_PORT, "REMORA_INBOUND_PORT", NULL, "15006"},
    {"inbound-to-localhost", no_argument, OPT_INBOUND_TO_LOCALHOST, "REMORA_INBOUND_TO_LOCALHOST", NULL, "false"},
    {"opaque-ports", required_argument, OPT_OPAQUE_PORTS, "REMORA_OPAQUE_PORTS", NULL, NULL},
    /* the file's key is limits.mesh_sniff_timeout_ms (not top-level) */
    {"mesh-sniff-timeout-ms", required_argument, OPT_MESH_SNIFF_TIMEOUT, "REMORA_MESH_SNIFF_TIMEOUT_MS", NULL, NULL},
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

/* --mesh-sniff-timeout-ms (-1: not given; then limits.mesh_sniff_timeout_ms of the file, else its default) */
static long mesh_sniff_timeout_ms = -1;

cmdline_t cmdline;

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
    if (mesh_sniff_timeout_ms >= 0)
        config->limits.mesh_sniff_timeout_ms = (uint32_t)mesh_sniff_timeout_ms;
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

rm_config_t *
rm_agent_load_config(const cmdline_t *cmd, int quiet_prefix)
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
    case OPT_MESH_SNIFF_TIMEOUT:
        n = strtol(value, &end, 10);
        if (*value == '\0' || *end != '\0' || n < RM_CONFIG_MIN_MESH_SNIFF_TIMEOUT_MS || n > RM_CONFIG_MAX_MESH_SNIFF_TIMEOUT_MS) {
            fprintf(stderr, "remora-agent: %s must be a number of milliseconds from %d to %d, got '%s'\n", label,
                    RM_CONFIG_MIN_MESH_SNIFF_TIMEOUT_MS, RM_CONFIG_MAX_MESH_SNIFF_TIMEOUT_MS, value);
            return -1;
        }
        mesh_sniff_timeout_ms = n;
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
    case OPT_DISCOVERY_TIMEOUT:
        n = strtol(value, &end, 10);
        if (*value == '\0' || *end != '\0' || n < 0 || n > RM_ONDEMAND_MAX_TIMEOUT_MS) {
            fprintf(stderr, "remora-agent: %s must be a number of milliseconds from 0 to %d, got '%s'\n", label,
                    RM_ONDEMAND_MAX_TIMEOUT_MS, value);
            return -1;
        }
        rm_ondemand_set_timeout_ms((uint32_t)n);
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
    printf("# remora-agent %s: merged settings (defaults < --config file < REMORA_* environment < flags)\n", rm_agent_version);
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
            case OPT_MESH_SNIFF_TIMEOUT:
                snprintf(buf, sizeof(buf), "%u", config->limits.mesh_sniff_timeout_ms);
                value = buf;
                if (cmdline.config != NULL && config->limits.mesh_sniff_timeout_ms != RM_CONFIG_DEFAULT_MESH_SNIFF_TIMEOUT_MS)
                    snprintf(src, sizeof(src), "file:%.500s (limits.mesh_sniff_timeout_ms)", cmdline.config);
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
 * The command line over the environment layer: fills `cmdline`, answers --help, --version and
 * --print-config, and refuses combinations that cannot run. Returns -1 to go on with the start, else
 * the exit status (the problem printed).
 */
int
rm_agent_parse_cmdline(int argc, char **argv)
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
            printf("remora-agent %s\n", rm_agent_version);
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
    return -1;
}
