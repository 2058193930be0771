/*
 * remora-control: the control plane. Stores policy documents in an embedded durable store and
 * streams versioned snapshots to every agent (docs/control-plane.md); its CA issues the agents'
 * workload certificates (docs/identity.md).
 *
 * The main thread only parses flags and waits for a signal; the server runs on its own thread.
 */
#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <openssl/crypto.h>
#include "remora/log.h"
#include "remora/rpc.h"
#include "remora/strutil.h"
#include "ca.h"
#include "cp_metrics.h"
#include "identity.h"
#include "kube_source.h"
#include "server.h"
#include "store.h"
#include "token.h"
#include "webhook.h"

#define LOG "control"
#define DEFAULT_LISTEN "127.0.0.1:15010"

static void
usage(FILE *out)
{
    fprintf(out, "Usage: remora-control --state-dir DIR [--listen ADDR:PORT] [--log-level LEVEL] [identity options]\n"
                 "\n"
                 "The Remora control plane: stores Services, HTTPRoutes and GRPCRoutes applied with\n"
                 "`remoractl apply`, and streams every accepted version to the agents.\n"
                 "\n"
                 "  --listen ADDR:PORT   gRPC address for agents and remoractl (default " DEFAULT_LISTEN ");\n"
                 "                       ADDR is an IP literal ([::1] for IPv6), port 0 picks a free port\n"
                 "  --state-dir DIR      where the store lives (created if missing; one control plane per DIR)\n"
                 "  --log-level LEVEL    error, warn, info (default) or debug\n"
                 "  --metrics-listen ADDR:PORT  serve the control plane's own metrics there, plaintext HTTP/1.1 (off unless\n"
                 "                       given; Kubernetes: 0.0.0.0:15014): GET /metrics (Prometheus text), GET /ready\n"
                 "                       (200 once the store is loaded and the discovery server listens, else 503), GET /live\n"
                 "  -h, --help           this text\n"
                 "\n"
                 "Workload identity (docs/identity.md): a CA generated into DIR/ca at first start, or supplied:\n"
                 "  --trust-domain TD    the SPIFFE trust domain (default " RM_CA_DEFAULT_TRUST_DOMAIN ")\n"
                 "  --trust-anchor FILE  trust bundle: one or more anchor certificates (PEM)\n"
                 "  --issuer-cert FILE   the issuer's certificate (PEM), signed by an anchor\n"
                 "  --issuer-key FILE    the issuer's private key (PEM)\n"
                 "  --cert-lifetime D    lifetime of workload certificates: 10s to 365d (default 24h)\n"
                 "\n"
                 "Its own doors (docs/identity.md): the port speaks TLS with a certificate issued by the CA for\n"
                 "DNS:" RM_RPC_CONTROL_SERVER_NAME " (clients verify it against the trust anchor); agents\n"
                 "authenticate with a bootstrap token or their workload certificate, remoractl with the admin credential:\n"
                 "  --admin-token-file FILE  the admin credential (\"rma1.\" + 64 hex digits) to accept; default:\n"
                 "                       DIR/admin.token, created (0600) at first start\n"
                 "  --insecure           plaintext and no authentication at all: for development only\n"
                 "\n"
                 "Sidecar injection (docs/injection.md): an HTTPS admission webhook, POST /inject (AdmissionReview v1):\n"
                 "  --webhook-listen ADDR:PORT  serve the webhook there (off unless given; Kubernetes: 0.0.0.0:15017)\n"
                 "  --webhook-dns NAME   a DNS name of the webhook's certificate, issued by the CA and renewed at half\n"
                 "                       its lifetime; repeatable (default " RM_WEBHOOK_DEFAULT_DNS_NAME ")\n"
                 "  --injector-config FILE  what to inject (YAML; built-in defaults without it)\n"
                 "\n"
                 "Kubernetes mode (docs/kubernetes-mode.md): the state lives in the Kubernetes API, not in DIR:\n"
                 "  --kubernetes         list-watch the remora.dev/v1 resources, Services, EndpointSlices and Pods; apply and\n"
                 "                       delete write through the API; Certify accepts projected service-account tokens\n"
                 "                       (TokenReview, audience " RM_KUBE_TOKEN_AUDIENCE
                 "). In-cluster credentials from " RM_KUBE_SA_DIR "\n"
                 "  --kube-api URL       the API server (default https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT)\n"
                 "  --kube-token-file FILE  its bearer token (default " RM_KUBE_SA_DIR "/token, re-read at every request)\n"
                 "  --kube-ca-file FILE  its CA (default " RM_KUBE_SA_DIR "/ca.crt)\n"
                 "\n"
                 "SIGTERM or SIGINT stops it; agents keep serving their last snapshot meanwhile.\n");
}

int
main(int argc, char **argv)
{
    /* no OpenSSL clean-up at exit: gRPC's threads may still be ending then, and a thread that ends after the
     * clean-up deleted OpenSSL's thread key leaks its error state (each thread frees its own as it ends) */
    OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, NULL);
    static const struct option opts[] = {{"listen", required_argument, NULL, 'l'},
                                         {"state-dir", required_argument, NULL, 's'},
                                         {"log-level", required_argument, NULL, 'L'},
                                         {"trust-domain", required_argument, NULL, 'T'},
                                         {"trust-anchor", required_argument, NULL, 'A'},
                                         {"issuer-cert", required_argument, NULL, 'C'},
                                         {"issuer-key", required_argument, NULL, 'K'},
                                         {"cert-lifetime", required_argument, NULL, 'E'},
                                         {"admin-token-file", required_argument, NULL, 'a'},
                                         {"insecure", no_argument, NULL, 'I'},
                                         {"webhook-listen", required_argument, NULL, 'W'},
                                         {"webhook-dns", required_argument, NULL, 'D'},
                                         {"injector-config", required_argument, NULL, 'J'},
                                         {"kubernetes", no_argument, NULL, 1001},
                                         {"kube-api", required_argument, NULL, 1002},
                                         {"kube-token-file", required_argument, NULL, 1003},
                                         {"kube-ca-file", required_argument, NULL, 1004},
                                         {"metrics-listen", required_argument, NULL, 1005},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *listen = DEFAULT_LISTEN, *state_dir = NULL, *admin_token_file = NULL;
    int insecure = 0;
    const char *webhook_listen = NULL, *injector_config = NULL, *metrics_listen = NULL;
    const char *webhook_dns[RM_CA_MAX_SERVING_NAMES];
    size_t num_webhook_dns = 0;
    rm_ca_options_t ca_opts = {0};
    int kubernetes = 0;
    rm_kube_config_t kube_cfg = {0};
    int64_t lifetime_s;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'l':
            listen = optarg;
            break;
        case 's':
            state_dir = optarg;
            break;
        case 'L':
            if (rm_log_set_level_by_name(optarg) != 0) {
                fprintf(stderr, "remora-control: --log-level must be error, warn, info or debug, got '%s'\n", optarg);
                return 2;
            }
            break;
        case 'T':
            ca_opts.trust_domain = optarg;
            break;
        case 'A':
            ca_opts.trust_anchor_file = optarg;
            break;
        case 'C':
            ca_opts.issuer_cert_file = optarg;
            break;
        case 'K':
            ca_opts.issuer_key_file = optarg;
            break;
        case 'E':
            if (rm_ca_parse_duration(optarg, &lifetime_s) != 0 || lifetime_s < RM_CA_MIN_CERT_LIFETIME_S ||
                lifetime_s > RM_CA_MAX_CERT_LIFETIME_S) {
                fprintf(stderr,
                        "remora-control: --cert-lifetime takes a duration from 10s to 365d (e.g. 24h, 90m, 60s), got '%s'\n",
                        optarg);
                return 2;
            }
            ca_opts.cert_lifetime_s = (uint32_t)lifetime_s;
            break;
        case 'a':
            admin_token_file = optarg;
            break;
        case 'I':
            insecure = 1;
            break;
        case 'W':
            webhook_listen = optarg;
            break;
        case 'D':
            if (num_webhook_dns == RM_CA_MAX_SERVING_NAMES) {
                fprintf(stderr, "remora-control: at most %u --webhook-dns names\n", RM_CA_MAX_SERVING_NAMES);
                return 2;
            }
            webhook_dns[num_webhook_dns++] = optarg;
            break;
        case 'J':
            injector_config = optarg;
            break;
        case 1001:
            kubernetes = 1;
            break;
        case 1002:
            kube_cfg.api_url = optarg;
            break;
        case 1003:
            kube_cfg.token_file = optarg;
            break;
        case 1004:
            kube_cfg.ca_file = optarg;
            break;
        case 1005:
            metrics_listen = optarg;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            fprintf(stderr, "Try 'remora-control --help'.\n");
            return 2;
        }
    }
    if (optind != argc) {
        fprintf(stderr, "remora-control: unexpected argument '%s'\nTry 'remora-control --help'.\n", argv[optind]);
        return 2;
    }
    if (state_dir == NULL) {
        fprintf(stderr, "remora-control: --state-dir DIR is required (the store lives there)\n");
        return 2;
    }
    struct sockaddr_storage ss;
    socklen_t sslen;
    const char *why;
    if (rm_parse_ip_port(listen, &ss, &sslen, &why) != 0) {
        fprintf(stderr, "remora-control: --listen %s: %s (write ADDR:PORT with an IP address, e.g. " DEFAULT_LISTEN ")\n", listen,
                why);
        return 2;
    }
    if (metrics_listen != NULL && rm_parse_ip_port(metrics_listen, &ss, &sslen, &why) != 0) {
        fprintf(stderr, "remora-control: --metrics-listen %s: %s (write ADDR:PORT with an IP address, e.g. 0.0.0.0:15014)\n",
                metrics_listen, why);
        return 2;
    }

    /* static: reachable until exit, whichever way main returns */
    static rm_inject_config_t inject_cfg;
    rm_inject_config_init(&inject_cfg);
    char cfg_err[600];
    if (injector_config != NULL && rm_inject_config_load(&inject_cfg, injector_config, cfg_err, sizeof(cfg_err)) != 0) {
        fprintf(stderr, "remora-control: --injector-config %s\n", cfg_err);
        rm_inject_config_dispose(&inject_cfg);
        return 2;
    }

    /* gRPC's threads inherit this mask, so the signals reach sigwait() below and nothing else */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    char err[512];
    /* first, so that /live answers and /ready says why not while the store loads (a large store, or --kubernetes
     * listing every kind, takes a while) */
    rm_cp_metrics_server_t *metrics = NULL;
    if (metrics_listen != NULL) {
        if ((metrics = rm_cp_metrics_server_start(metrics_listen, err, sizeof(err))) == NULL) {
            rm_log_error(LOG, "%s", err);
            rm_inject_config_dispose(&inject_cfg);
            return 1;
        }
        rm_log_info(LOG, "metrics on %s (port %d): GET /metrics, /ready, /live", metrics_listen,
                    rm_cp_metrics_server_port(metrics));
    }
    /* --kubernetes: the store only holds what the API's state translates to */
    if (kubernetes && mkdir(state_dir, 0700) != 0 && errno != EEXIST) {
        rm_log_error(LOG, "cannot create the state directory %s: %s", state_dir, strerror(errno));
        rm_cp_metrics_server_destroy(metrics);
        return 1;
    }
    rm_store_t *store = kubernetes ? rm_store_open_memory() : rm_store_open(state_dir, err, sizeof(err));
    if (store == NULL) {
        rm_log_error(LOG, "%s", err);
        rm_cp_metrics_server_destroy(metrics);
        return 1;
    }
    /* --kubernetes: loaded once every kind is listed (kube_source.c says so) */
    if (!kubernetes)
        rm_cp_metrics_set_ready(RM_CP_READY_STORE, 1);
    ca_opts.state_dir = state_dir;
    rm_ca_t *ca = rm_ca_open(&ca_opts, err, sizeof(err));
    rm_tokens_t *tokens = ca != NULL ? rm_tokens_open(state_dir, err, sizeof(err)) : NULL;
    if (tokens == NULL) {
        rm_log_error(LOG, "%s", err);
        rm_ca_destroy(ca);
        rm_store_close(store);
        rm_cp_metrics_server_destroy(metrics);
        return 1;
    }
    char admin_token[RM_ADMIN_TOKEN_LEN + 1] = "";
    if (!insecure && rm_admin_token_load(state_dir, admin_token_file, admin_token, err, sizeof(err)) != 0) {
        rm_log_error(LOG, "the admin credential: %s", err);
        rm_tokens_close(tokens);
        rm_ca_destroy(ca);
        rm_store_close(store);
        rm_cp_metrics_server_destroy(metrics);
        return 1;
    }
    rm_identity_service_t *identity = rm_identity_service_create(ca, tokens);
    rm_identity_set_admin_token(identity, admin_token);
    memset(admin_token, 0, sizeof(admin_token));
    rm_log_info(LOG, "trust domain %s, issuer %s, %zu trust anchor(s), certificates valid %u s", rm_ca_trust_domain(ca),
                rm_ca_issuer_subject(ca), rm_ca_num_anchors(ca), (unsigned)rm_ca_cert_lifetime(ca));
    rm_rpc_init();
    rm_kube_source_t *kube = NULL;
    if (kubernetes) {
        rm_kube_source_options_t kopts = {.api = kube_cfg, .trust_bundle_pem = rm_ca_bundle_pem(ca)};
        kube = rm_kube_source_start(&kopts, err, sizeof(err));
    }
    /* the store belongs to the server's thread once it starts (store.h): its version is read before */
    uint64_t start_version = rm_store_version(store);
    rm_control_server_t *server =
        kubernetes && kube == NULL ? NULL
                                   : rm_control_server_start_kubernetes(listen, store, identity, insecure, kube, err, sizeof(err));
    if (server == NULL) {
        rm_log_error(LOG, "%s%s", kubernetes ? "--kubernetes: " : "", err);
        rm_kube_source_destroy(kube);
        rm_identity_service_destroy(identity);
        rm_tokens_close(tokens);
        rm_ca_destroy(ca);
        rm_store_close(store);
        rm_rpc_shutdown();
        rm_cp_metrics_server_destroy(metrics);
        return 1;
    }
    rm_cp_metrics_set_ready(RM_CP_READY_DISCOVERY, 1);
    rm_log_info(LOG, "listening on %s (port %d, %s), state in %s at version %llu", listen, rm_control_server_port(server),
                insecure ? "PLAINTEXT and UNAUTHENTICATED (--insecure: development only)" : "TLS, authenticated", state_dir,
                (unsigned long long)start_version);

    rm_webhook_t *webhook = NULL;
    int rc = 0;
    if (webhook_listen == NULL && (num_webhook_dns != 0 || injector_config != NULL))
        rm_log_warn(LOG, "--webhook-dns and --injector-config do nothing without --webhook-listen");
    if (webhook_listen != NULL) {
        rm_webhook_options_t wopts = {
            .listen = webhook_listen, .dns_names = webhook_dns, .num_dns_names = num_webhook_dns, .config = &inject_cfg, .ca = ca};
        if ((webhook = rm_webhook_start(&wopts, err, sizeof(err))) == NULL) {
            rm_log_error(LOG, "%s", err);
            rc = 1;
            goto stop;
        }
        rm_log_info(LOG, "injection webhook on %s (port %d): POST /inject", webhook_listen, rm_webhook_port(webhook));
        /* `remoractl check` verifies the webhook's certificate where Admin.Status says it listens */
        char bound[300];
        const char *colon = strrchr(webhook_listen, ':');
        snprintf(bound, sizeof(bound), "%.*s:%d", colon != NULL ? (int)(colon - webhook_listen) : 0, webhook_listen,
                 rm_webhook_port(webhook));
        static const char *const default_dns[] = {RM_WEBHOOK_DEFAULT_DNS_NAME};
        rm_control_server_set_webhook(server, bound, num_webhook_dns != 0 ? webhook_dns : default_dns,
                                      num_webhook_dns != 0 ? num_webhook_dns : 1);
    }

    int sig = 0;
    sigwait(&sigs, &sig);
    rm_log_info(LOG, "%s: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
stop:
    /* not ready from now on: a load balancer stops sending new callers while this one drains */
    rm_cp_metrics_set_ready(RM_CP_READY_DISCOVERY, 0);
    rm_webhook_destroy(webhook);
    if (kube != NULL)
        rm_kube_source_stop(kube);
    rm_control_server_destroy(server);
    rm_kube_source_destroy(kube);
    rm_identity_service_destroy(identity);
    rm_tokens_close(tokens);
    rm_ca_destroy(ca);
    rm_store_close(store);
    rm_rpc_shutdown();
    rm_inject_config_dispose(&inject_cfg);
    rm_cp_metrics_server_destroy(metrics);
    rm_log_info(LOG, "stopped");
    return rc;
}
