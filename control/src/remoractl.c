/*
 * remoractl: the command-line client of remora-control (docs/control-plane.md).
 *
 * Exit codes: 0 success; 1 the control plane or an agent refused (invalid documents, not found,
 * NACK); 2 usage or local input error; 3 the control plane could not be reached or failed; 4 `apply
 * --wait` timed out.
 */
#define _GNU_SOURCE /* strcasestr */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include <strings.h>
#include <time.h>
#include <grpc/support/log.h>
#include "remora/rpc.h"
#include "remora/strutil.h"
#include "remora/v1/admin.pb-c.h"
#include "remoractl_identity.h"
#include "remoractl_util.h"
#include "remoractl_inject.h"
#include "remoractl_ops.h"
#include "remoractl_await.h"
#include "render.h"
#include "resource.h"

#define DEFAULT_CONTROL "127.0.0.1:15010"
#define RPC_TIMEOUT_MS 10000
#define DEFAULT_WAIT_S 30

static const char *control_addr;
/* --admin-token, --ca, --insecure: taken from anywhere on the command line (take_security_options) */
static const char *admin_token_file, *ca_file;
static int insecure;

static const char main_help[] =
    "Usage: remoractl [--control ADDR:PORT] COMMAND [ARGS]\n"
    "\n"
    "Manage the policy of a Remora mesh through its control plane (remora-control).\n"
    "\n"
    "Commands:\n"
    "  apply -f FILE|- [--wait] [--timeout S]   store YAML documents (Service, HTTPRoute, GRPCRoute,\n"
    "                                            FaultInjection, BackendTrafficPolicy, RateLimitPolicy,\n"
    "                                            Telemetry, AuthorizationPolicy, MeshTLS, EgressPolicy)\n"
    "  get KIND [NAME] [-o table|yaml|json]      show stored resources\n"
    "  delete KIND NAME                          remove a resource\n"
    "  status [-o table|json]                    every agent: connected, applied version, last error\n"
    "  stat [--by GROUP] [--window 1m] [-o table|json]\n"
    "                                            request rate, success rate, latency per Service\n"
    "  trust-anchor                              print the trust bundle (PEM)\n"
    "  token create --namespace NS --service-account SA [--ttl 1h]\n"
    "                                            a bootstrap token for one workload identity\n"
    "  identity                                  the certificate authority's state and counters\n"
    "  inject [-f FILE|-] [--config FILE]        add the sidecar to Kubernetes manifests (offline)\n"
    "  uninject [-f FILE|-]                      remove what inject added (offline)\n"
    "  proxy NODE stats|config|clusters|log-level [LEVEL]\n"
    "                                            an agent's admin API, through the control plane\n"
    "  check [--webhook ADDR:PORT]               control plane, CA, webhook certificate, agents\n"
    "  await [--timeout D] [-- CMD [ARGS...]]    wait until the pod's agent is ready, run CMD, then tell the\n"
    "                                            agent to exit (must be the first argument)\n"
    "  help [COMMAND]                            help for a command\n"
    "\n"
    "Options (before or after the command):\n"
    "  --control ADDR:PORT   the control plane (default: $REMORA_CONTROL, else " DEFAULT_CONTROL ")\n"
    "  --admin-token FILE    the admin credential (default: $REMORA_ADMIN_TOKEN_FILE); remora-control\n"
    "                        writes it to <state-dir>/admin.token at first start\n"
    "  --ca FILE             the trust anchor(s) the control plane's certificate must chain to\n"
    "                        (default: $REMORA_CA_FILE); generated: <state-dir>/ca/trust-anchor.pem\n"
    "  --insecure            plaintext, no credential: only for `remora-control --insecure` (development)\n"
    "  -h, --help            this text\n"
    "\n"
    "Exit codes: 0 ok, 1 refused (invalid documents, not found, an agent's NACK), 2 usage error,\n"
    "3 control plane unreachable or failing, 4 `apply --wait` timed out.\n";

static const char apply_help[] =
    "Usage: remoractl apply -f FILE|- [-f FILE ...] [--wait] [--timeout S] [--dry-run]\n"
    "\n"
    "Validates and stores the documents of the files (YAML, several documents per file separated by\n"
    "'---'; '-' reads standard input). All or nothing: if one document is invalid, nothing is stored and\n"
    "every error is printed as FILE:LINE: message. Applying what is stored already changes nothing.\n"
    "\n"
    "  -f, --filename FILE   a file to apply ('-' for standard input); may be repeated\n"
    "  --wait                after storing, wait until every connected agent has applied the new\n"
    "                        version; fails with the agent's reason if one refuses it\n"
    "  --timeout S           how long --wait waits, in seconds (default 30)\n"
    "  --dry-run             validate only; store nothing\n"
    "  --control ADDR:PORT   the control plane (default: $REMORA_CONTROL, else " DEFAULT_CONTROL ")\n";

static const char get_help[] = "Usage: remoractl get KIND [NAME] [-n NAMESPACE | -A] [-o table|yaml|json]\n"
                               "\n"
                               "Shows stored resources. KIND is service (services, svc), httproute (httproutes),\n"
                               "grpcroute (grpcroutes), faultinjection (faultinjections), backendtrafficpolicy\n"
                               "(backendtrafficpolicies, btp), ratelimitpolicy (ratelimitpolicies, rlp), telemetry\n"
                               "(telemetries), authorizationpolicy (authorizationpolicies, authz), meshtls or all;\ncase "
                               "does not matter. `-o yaml` prints documents that `remoractl apply -f -` takes back\n"
                               "unchanged.\n"
                               "\n"
                               "Tables show which policy is in force where: the POLICIES column of services and\n"
                               "routes names the BackendTrafficPolicy and RateLimitPolicy that apply to each, and\n"
                               "the TARGETS column of a policy marks a target where another policy of its kind wins\n"
                               "(the first by namespace and name) as \"NAME (overridden by POLICY)\". A route's\n"
                               "RateLimitPolicy wins over its Service's for the requests the route matches.\n"
                               "\n"
                               "  -n, --namespace NS    the namespace (default: default)\n"
                               "  -A, --all-namespaces  every namespace\n"
                               "  -o, --output FORMAT   table (default), yaml or json\n"
                               "  --control ADDR:PORT   the control plane (default: $REMORA_CONTROL, else " DEFAULT_CONTROL ")\n";

static const char delete_help[] =
    "Usage: remoractl delete KIND NAME [-n NAMESPACE]\n"
    "\n"
    "Removes one resource; the agents receive the new version. A resource that others still\n"
    "refer to cannot be deleted (a Service named by a route or a policy, a route named by\n"
    "a RateLimitPolicy, a FaultInjection named by a route): change or delete those first.\n"
    "KIND as for `get`.\n"
    "\n"
    "  -n, --namespace NS    the namespace (default: default)\n"
    "  --control ADDR:PORT   the control plane (default: $REMORA_CONTROL, else " DEFAULT_CONTROL ")\n";

static const char status_help[] =
    "Usage: remoractl status [-o table|json]\n"
    "\n"
    "Lists every agent the control plane has heard from since it started: whether it is\n"
    "connected, the version it applied, the last version it refused and why, and when the\n"
    "control plane last heard from it.\n"
    "\n"
    "  -o, --output FORMAT   table (default) or json\n"
    "  --control ADDR:PORT   the control plane (default: $REMORA_CONTROL, else " DEFAULT_CONTROL ")\n";

static const char stat_help[] =
    "Usage: remoractl stat [--by service|route|backend] [--window DURATION] [-n NAMESPACE] [-o table|json]\n"
    "\n"
    "The golden metrics of the mesh over the last minute (or --window): requests per second, success\n"
    "rate and latency percentiles, from the summaries every agent sends the control plane on its\n"
    "discovery stream (remora-agent --stats-interval-ms, 10 s by default). One row per backend Service\n"
    "(the default), per route, or per agent and backend. Rows without requests in the window are left\n"
    "out. Like `linkerd viz stat`.\n"
    "\n"
    "  --by GROUP            service (default), route, or backend (one row per agent and backend Service)\n"
    "  --window DURATION     10s to 10m, e.g. 30s, 1m, 5m (default 1m). Rounded out to the summaries kept\n"
    "                        (one every 5 s); for an agent younger than the window, since its start\n"
    "  -n, --namespace NS    only Services (and their routes) of this namespace\n"
    "  -o, --output FORMAT   table (default) or json\n"
    "  --control ADDR:PORT   the control plane (default: $REMORA_CONTROL, else " DEFAULT_CONTROL ")\n"
    "\n"
    "Columns: NAME, AGENTS (agents that carried requests of the row), RPS (requests per second over\n"
    "the part of the window the summaries cover, summed over agents), SUCCESS (requests not classified\n"
    "as failures: 5xx, no response, gRPC server errors), P50/P95/P99 (latency in ms, interpolated inside\n"
    "the histogram buckets as Prometheus' histogram_quantile does).\n";

/* Turns an RPC failure into a message that says what to fix. */
static void __attribute__((noreturn)) die_rpc(const rm_rpc_status_t *st)
{
    switch (st->code) {
    case GRPC_STATUS_UNAUTHENTICATED:
    case GRPC_STATUS_PERMISSION_DENIED:
        rm_ctl_die(EXIT_REFUSED, "the control plane at %s refused the credential (%s): %s", control_addr,
                   rm_rpc_status_name(st->code), st->message);
    case GRPC_STATUS_UNAVAILABLE:
        if (!insecure && (strcasestr(st->message, "handshake") != NULL || strcasestr(st->message, "ssl") != NULL ||
                          strcasestr(st->message, "certificate") != NULL || strcasestr(st->message, "tls") != NULL))
            rm_ctl_die(
                EXIT_UNREACHABLE,
                "cannot verify the control plane at %s: the TLS handshake failed (its certificate does not chain to --ca %s, "
                "or it is not a TLS remora-control)",
                control_addr, ca_file);
        rm_ctl_die(EXIT_UNREACHABLE,
                   "cannot reach the control plane at %s%s: is remora-control running? (set --control or REMORA_CONTROL)%s",
                   control_addr, strcasestr(st->message, "connection refused") != NULL ? " (connection refused)" : "",
                   insecure ? " (--insecure speaks plaintext: only to a `remora-control --insecure`)" : "");
    case GRPC_STATUS_DEADLINE_EXCEEDED:
        rm_ctl_die(EXIT_UNREACHABLE, "the control plane at %s did not answer in time (%s)", control_addr, st->message);
    case GRPC_STATUS_UNIMPLEMENTED:
        rm_ctl_die(EXIT_UNREACHABLE, "the server at %s does not speak the remora.v1 admin API: is it remora-control? (%s)",
                   control_addr, st->message);
    case GRPC_STATUS_NOT_FOUND:
    case GRPC_STATUS_FAILED_PRECONDITION:
    case GRPC_STATUS_INVALID_ARGUMENT:
    case GRPC_STATUS_OUT_OF_RANGE:
        rm_ctl_die(EXIT_REFUSED, "%s", st->message);
    default:
        rm_ctl_die(EXIT_UNREACHABLE, "the control plane at %s failed: %s: %s", control_addr, rm_rpc_status_name(st->code),
                   st->message);
    }
}

static rm_rpc_client_t *
connect_control(void)
{
    static const grpc_arg args[] = {
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, .value.integer = 256 * 1024 * 1024},
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_ENABLE_RETRIES, .value.integer = 0},
    };
    grpc_channel_args chargs = {.num_args = sizeof(args) / sizeof(args[0]), .args = (grpc_arg *)args};
    if (insecure)
        return rm_rpc_client_create(control_addr, &chargs);
    if (ca_file == NULL)
        rm_ctl_die(EXIT_USAGE, "no trust anchor to verify the control plane with: pass --ca FILE or set REMORA_CA_FILE "
                               "(remora-control's <state-dir>/ca/trust-anchor.pem, or the bundle given to its --trust-anchor)");
    if (admin_token_file == NULL)
        rm_ctl_die(EXIT_USAGE, "no admin credential: pass --admin-token FILE or set REMORA_ADMIN_TOKEN_FILE "
                               "(remora-control writes <state-dir>/admin.token at first start)");
    char err[512];
    char *roots = rm_read_file(ca_file, 1 << 20, err, sizeof(err));
    if (roots == NULL)
        rm_ctl_die(EXIT_USAGE, "--ca %s", err);
    if (strstr(roots, "-----BEGIN CERTIFICATE-----") == NULL)
        rm_ctl_die(EXIT_USAGE, "--ca %s: no PEM certificate in the file", ca_file);
    char *token = rm_read_file(admin_token_file, 4096, err, sizeof(err));
    if (token == NULL)
        rm_ctl_die(EXIT_USAGE, "--admin-token %s", err);
    /* surrounding whitespace is not part of the token; what remains must fit in a header */
    char *t = token;
    while (*t == ' ' || *t == '\t' || *t == '\n' || *t == '\r')
        ++t;
    size_t len = strlen(t);
    while (len != 0 && (t[len - 1] == ' ' || t[len - 1] == '\t' || t[len - 1] == '\n' || t[len - 1] == '\r'))
        t[--len] = '\0';
    for (size_t i = 0; i != len; ++i)
        if (t[i] <= ' ' || t[i] > '~')
            rm_ctl_die(EXIT_USAGE, "--admin-token %s: the file does not hold a token (one line, printable ASCII)",
                       admin_token_file);
    if (len == 0)
        rm_ctl_die(EXIT_USAGE, "--admin-token %s: the file is empty", admin_token_file);
    rm_rpc_security_t sec = {.root_pem = roots, .bearer_token = t};
    rm_rpc_client_t *c = rm_rpc_client_create_secure(control_addr, &chargs, &sec);
    memset(token, 0, strlen(token));
    free(token);
    free(roots);
    return c;
}

/*
 * Removes --admin-token FILE (or =FILE), --ca FILE (or =FILE) and --insecure from anywhere in argv
 * (before "--"), so that they may follow the command as well as precede it. Returns the new argc.
 */
static int
take_security_options(int argc, char **argv)
{
    int out = 1;
    for (int i = 1; i < argc; ++i) {
        const char *a = argv[i];
        const char **dst = NULL;
        const char *name = NULL;
        if (strcmp(a, "--") == 0) {
            while (i < argc)
                argv[out++] = argv[i++];
            break;
        }
        if (strcmp(a, "--insecure") == 0) {
            insecure = 1;
            continue;
        }
        if (strncmp(a, "--admin-token", 13) == 0 && (a[13] == '\0' || a[13] == '=')) {
            dst = &admin_token_file;
            name = "--admin-token";
        } else if (strncmp(a, "--ca", 4) == 0 && (a[4] == '\0' || a[4] == '=')) {
            dst = &ca_file;
            name = "--ca";
        }
        if (dst == NULL) {
            argv[out++] = argv[i];
            continue;
        }
        const char *eq = strchr(a, '=');
        if (eq != NULL) {
            *dst = eq + 1;
        } else if (i + 1 < argc) {
            *dst = argv[++i];
        } else {
            rm_ctl_die(EXIT_USAGE, "%s needs a FILE", name);
        }
        if (**dst == '\0')
            rm_ctl_die(EXIT_USAGE, "%s needs a FILE", name);
    }
    argv[out] = NULL;
    return out;
}

/* What remoractl itself or one of its commands says about its options (common_option). */
typedef struct st_command_t {
    const char *name;           /* in "Try 'remoractl NAME --help'." (NULL: remoractl itself) */
    const char *help;           /* what -h / --help prints */
    const char *const *formats; /* what -o / --output takes, NULL-terminated; NULL: the command has no -o */
    const char *output;         /* -o's value: the first of `formats` until -o is given */
} command_t;

static const char *const table_json[] = {"table", "json", NULL};
static const char *const table_yaml_json[] = {"table", "yaml", "json", NULL};

/*
 * Handles an option `c` from getopt_long that every command treats alike: -c / --control ADDR sets
 * the control plane; -o / --output FORMAT (if the command has `formats`) must be one of them, else
 * "-o takes table or json; got 'xml'" and EXIT_USAGE; -h / --help prints the help on standard output
 * and exits 0; anything else (getopt's '?' or ':', already reported by getopt) prints "Try
 * 'remoractl NAME --help'." and exits EXIT_USAGE. Call it for every option the command does not
 * handle itself (the `default:` of its switch).
 */
static void
common_option(int c, command_t *cmd)
{
    if (c == 'c') {
        control_addr = optarg;
        return;
    }
    if (c == 'o' && cmd->formats != NULL) {
        for (size_t i = 0; cmd->formats[i] != NULL; ++i) {
            if (strcmp(optarg, cmd->formats[i]) == 0) {
                cmd->output = optarg;
                return;
            }
        }
        char list[64] = ""; /* "table, yaml or json" */
        for (size_t i = 0; cmd->formats[i] != NULL; ++i) {
            const char *sep = i == 0 ? "" : cmd->formats[i + 1] != NULL ? ", " : " or ";
            snprintf(list + strlen(list), sizeof(list) - strlen(list), "%s%s", sep, cmd->formats[i]);
        }
        rm_ctl_die(EXIT_USAGE, "-o takes %s; got '%s'", list, optarg);
    }
    if (c == 'h') {
        fputs(cmd->help, stdout);
        exit(0);
    }
    if (cmd->name != NULL)
        fprintf(stderr, "Try 'remoractl %s --help'.\n", cmd->name);
    else
        fputs("Try 'remoractl --help'.\n", stderr);
    exit(EXIT_USAGE);
}

/* For a command that takes options only: exits with "NAME takes no arguments; unexpected 'X'HINT" if getopt left any. */
static void
no_arguments(const command_t *cmd, int argc, char **argv, const char *hint)
{
    if (optind != argc)
        rm_ctl_die(EXIT_USAGE, "%s takes no arguments; unexpected '%s'%s", cmd->name, argv[optind], hint);
}

static ProtobufCMessage *
call(rm_rpc_client_t *c, const char *method, const ProtobufCMessage *req, const ProtobufCMessageDescriptor *resp_desc,
     int64_t timeout_ms)
{
    ProtobufCMessage *resp;
    rm_rpc_status_t st;
    if (rm_rpc_unary(c, method, req, resp_desc, timeout_ms, &resp, &st) != 0)
        die_rpc(&st);
    return resp;
}

static int
parse_kind_arg(const char *s, int allow_all, Remora__V1__ResourceKind *out)
{
    rm_kind_t k;
    if (allow_all && strcasecmp(s, "all") == 0) {
        *out = REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_UNSPECIFIED;
        return 0;
    }
    if (rm_kind_parse(s, &k) != 0)
        rm_ctl_die(EXIT_USAGE, "unknown kind '%s' (use %s%s)", s, rm_kind_list(), allow_all ? ", or all" : "");
    *out = rm_kind_to_proto(k);
    return 0;
}

static void
read_file(const char *path, ProtobufCBinaryData *out)
{
    FILE *fp = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (fp == NULL)
        rm_ctl_die(EXIT_USAGE, "cannot read %s: %s", path, strerror(errno));
    size_t cap = 65536, len = 0;
    uint8_t *buf = rm_malloc(cap);
    for (;;) {
        if (len == cap)
            buf = rm_realloc(buf, cap *= 2);
        size_t n = fread(buf + len, 1, cap - len, fp);
        len += n;
        if (n == 0)
            break;
    }
    if (ferror(fp))
        rm_ctl_die(EXIT_USAGE, "cannot read %s: %s", path, strerror(errno));
    if (fp != stdin)
        fclose(fp);
    out->data = buf;
    out->len = len;
}

static double
now_s(void)
{
    return (double)rm_now_us() / 1e6;
}

static const char *
ns_suffix(const char *ns, char *buf, size_t bufsz)
{
    if (strcmp(ns, "default") == 0)
        return "";
    snprintf(buf, bufsz, " (namespace %s)", ns);
    return buf;
}

static void
print_pending(const char *what, const Remora__V1__WaitForVersionResponse *w)
{
    fprintf(stderr, "%s", what);
    for (size_t i = 0; i != w->n_agents && i < 10; ++i)
        fprintf(stderr, "%s %s (at version %" PRIu64 ")", i != 0 ? "," : "", w->agents[i]->node_id, w->agents[i]->applied_version);
    if (w->n_agents > 10)
        fprintf(stderr, " and %zu more", w->n_agents - 10);
    fputc('\n', stderr);
}

static int
cmd_apply(int argc, char **argv)
{
    static const struct option opts[] = {{"filename", required_argument, NULL, 'f'},
                                         {"wait", no_argument, NULL, 'w'},
                                         {"timeout", required_argument, NULL, 't'},
                                         {"dry-run", no_argument, NULL, 'd'},
                                         {"control", required_argument, NULL, 'c'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char **files = NULL;
    size_t num_files = 0;
    int wait = 0, dry_run = 0, c;
    double timeout_s = DEFAULT_WAIT_S;
    command_t cmd = {.name = "apply", .help = apply_help};
    while ((c = getopt_long(argc, argv, "f:h", opts, NULL)) != -1) {
        switch (c) {
        case 'f':
            files = rm_realloc(files, (num_files + 1) * sizeof(files[0]));
            files[num_files++] = optarg;
            break;
        case 'w':
            wait = 1;
            break;
        case 't': {
            char *end;
            timeout_s = strtod(optarg, &end);
            if (*end != '\0' || !(timeout_s > 0 && timeout_s <= 3600))
                rm_ctl_die(EXIT_USAGE, "--timeout takes seconds, more than 0 and at most 3600; got '%s'", optarg);
        } break;
        case 'd':
            dry_run = 1;
            break;
        default:
            common_option(c, &cmd);
        }
    }
    if (optind != argc)
        rm_ctl_die(EXIT_USAGE, "apply takes files with -f, not '%s' (try 'remoractl apply -f %s')", argv[optind], argv[optind]);
    if (num_files == 0)
        rm_ctl_die(EXIT_USAGE, "apply needs -f FILE (or -f - for standard input); try 'remoractl apply --help'");

    Remora__V1__ApplyRequest req = REMORA__V1__APPLY_REQUEST__INIT;
    Remora__V1__Document *docs = rm_calloc(num_files, sizeof(*docs));
    Remora__V1__Document **ptrs = rm_calloc(num_files, sizeof(*ptrs));
    for (size_t i = 0; i != num_files; ++i) {
        remora__v1__document__init(&docs[i]);
        docs[i].file = (char *)files[i];
        read_file(files[i], &docs[i].content);
        ptrs[i] = &docs[i];
    }
    req.n_documents = num_files;
    req.documents = ptrs;
    req.dry_run = dry_run;

    rm_rpc_client_t *client = connect_control();
    double started = now_s();
    Remora__V1__ApplyResponse *resp = (Remora__V1__ApplyResponse *)call(client, "/remora.v1.Admin/Apply", &req.base,
                                                                        &remora__v1__apply_response__descriptor, RPC_TIMEOUT_MS);
    for (size_t i = 0; i != num_files; ++i)
        free(docs[i].content.data);
    free(docs);
    free(ptrs);
    free(files);
    if (resp->n_errors != 0) {
        for (size_t i = 0; i != resp->n_errors; ++i) {
            const Remora__V1__DocumentError *e = resp->errors[i];
            if (e->line != 0)
                fprintf(stderr, "%s:%u: %s\n", e->file, e->line, e->message);
            else
                fprintf(stderr, "%s: %s\n", e->file, e->message);
        }
        fprintf(stderr, "remoractl: apply rejected: %zu error%s; nothing was changed (version %" PRIu64 ")\n", resp->n_errors,
                resp->n_errors == 1 ? "" : "s", resp->version);
        exit(EXIT_REFUSED);
    }
    for (size_t i = 0; i != resp->n_resources; ++i) {
        const Remora__V1__AppliedResource *a = resp->resources[i];
        rm_kind_t kind = RM_KIND_SERVICE;
        char nsbuf[128];
        rm_kind_from_proto(a->resource->kind, &kind);
        const char *action = a->action == REMORA__V1__APPLIED_RESOURCE__ACTION__ACTION_CREATED      ? "created"
                             : a->action == REMORA__V1__APPLIED_RESOURCE__ACTION__ACTION_CONFIGURED ? "configured"
                                                                                                    : "unchanged";
        printf("%s/%s%s %s%s\n", rm_kind_lower(kind), a->resource->name, ns_suffix(a->resource->namespace_, nsbuf, sizeof(nsbuf)),
               action, dry_run && a->action != REMORA__V1__APPLIED_RESOURCE__ACTION__ACTION_UNCHANGED ? " (dry run)" : "");
    }
    uint64_t version = resp->version;
    if (dry_run)
        printf("dry run: nothing stored (version %" PRIu64 ")\n", version);
    else if (resp->changed)
        printf("version %" PRIu64 "\n", version);
    else
        printf("no change (version %" PRIu64 ")\n", version);
    remora__v1__apply_response__free_unpacked(resp, NULL);
    fflush(stdout);

    int rc = 0;
    if (wait && !dry_run) {
        Remora__V1__WaitForVersionRequest wreq = REMORA__V1__WAIT_FOR_VERSION_REQUEST__INIT;
        Remora__V1__Duration d = REMORA__V1__DURATION__INIT;
        d.seconds = (int64_t)timeout_s;
        d.nanos = (int32_t)((timeout_s - (double)d.seconds) * 1e9);
        wreq.version = version;
        wreq.timeout = &d;
        Remora__V1__WaitForVersionResponse *w = (Remora__V1__WaitForVersionResponse *)call(
            client, "/remora.v1.Admin/WaitForVersion", &wreq.base, &remora__v1__wait_for_version_response__descriptor,
            (int64_t)(timeout_s * 1000) + RPC_TIMEOUT_MS);
        double took_ms = (now_s() - started) * 1000;
        switch (w->outcome) {
        case REMORA__V1__WAIT_FOR_VERSION_RESPONSE__OUTCOME__OUTCOME_APPLIED:
            if (w->n_agents == 0)
                printf("version %" PRIu64 " stored; no agent is connected\n", version);
            else
                printf("version %" PRIu64 " applied by %zu agent%s in %.0f ms\n", version, w->n_agents, w->n_agents == 1 ? "" : "s",
                       took_ms);
            break;
        case REMORA__V1__WAIT_FOR_VERSION_RESPONSE__OUTCOME__OUTCOME_REFUSED:
            if (w->n_agents != 0)
                fprintf(stderr, "remoractl: agent %s refused version %" PRIu64 ": %s\n", w->agents[0]->node_id,
                        w->agents[0]->nack_version, w->agents[0]->nack_reason);
            else
                fprintf(stderr, "remoractl: an agent refused version %" PRIu64 "\n", version);
            rc = EXIT_REFUSED;
            break;
        case REMORA__V1__WAIT_FOR_VERSION_RESPONSE__OUTCOME__OUTCOME_TIMED_OUT: {
            char what[256];
            snprintf(what, sizeof(what),
                     "remoractl: timed out after %gs waiting for version %" PRIu64 "; not applied yet by:", timeout_s, version);
            print_pending(what, w);
            rc = EXIT_TIMEOUT;
        } break;
        default:
            fprintf(stderr, "remoractl: unexpected answer from the control plane (outcome %d)\n", (int)w->outcome);
            rc = EXIT_UNREACHABLE;
            break;
        }
        remora__v1__wait_for_version_response__free_unpacked(w, NULL);
    }
    rm_rpc_client_destroy(client);
    return rc;
}

/* ------------------------------------------------------------------------------------------- get */

typedef struct st_listed_t {
    rm_kind_t kind;
    const ProtobufCMessage *msg;
} listed_t;

static size_t
collect(const Remora__V1__GetResponse *resp, listed_t **out)
{
    size_t n = resp->n_services + resp->n_http_routes + resp->n_grpc_routes + resp->n_fault_injections +
               resp->n_backend_traffic_policies + resp->n_rate_limit_policies + resp->n_telemetries +
               resp->n_authorization_policies + resp->n_mesh_tls + resp->n_egress_policies,
           k = 0;
    listed_t *l = rm_calloc(n + 1, sizeof(*l));
    for (size_t i = 0; i != resp->n_services; ++i)
        l[k++] = (listed_t){RM_KIND_SERVICE, &resp->services[i]->base};
    for (size_t i = 0; i != resp->n_http_routes; ++i)
        l[k++] = (listed_t){RM_KIND_HTTP_ROUTE, &resp->http_routes[i]->base};
    for (size_t i = 0; i != resp->n_grpc_routes; ++i)
        l[k++] = (listed_t){RM_KIND_GRPC_ROUTE, &resp->grpc_routes[i]->base};
    for (size_t i = 0; i != resp->n_fault_injections; ++i)
        l[k++] = (listed_t){RM_KIND_FAULT_INJECTION, &resp->fault_injections[i]->base};
    for (size_t i = 0; i != resp->n_backend_traffic_policies; ++i)
        l[k++] = (listed_t){RM_KIND_BACKEND_TRAFFIC_POLICY, &resp->backend_traffic_policies[i]->base};
    for (size_t i = 0; i != resp->n_rate_limit_policies; ++i)
        l[k++] = (listed_t){RM_KIND_RATE_LIMIT_POLICY, &resp->rate_limit_policies[i]->base};
    for (size_t i = 0; i != resp->n_telemetries; ++i)
        l[k++] = (listed_t){RM_KIND_TELEMETRY, &resp->telemetries[i]->base};
    for (size_t i = 0; i != resp->n_mesh_tls; ++i)
        l[k++] = (listed_t){RM_KIND_MESH_TLS, &resp->mesh_tls[i]->base};
    for (size_t i = 0; i != resp->n_authorization_policies; ++i)
        l[k++] = (listed_t){RM_KIND_AUTHORIZATION_POLICY, &resp->authorization_policies[i]->base};
    for (size_t i = 0; i != resp->n_egress_policies; ++i)
        l[k++] = (listed_t){RM_KIND_EGRESS_POLICY, &resp->egress_policies[i]->base};
    *out = l;
    return n;
}

/* A table whose columns fit their widest cell. */
typedef struct st_table_t {
    size_t cols, rows;
    char **cells;
} table_t;

static void
table_add(table_t *t, const char *const *row)
{
    t->cells = rm_realloc(t->cells, (t->rows + 1) * t->cols * sizeof(t->cells[0]));
    for (size_t i = 0; i != t->cols; ++i)
        t->cells[t->rows * t->cols + i] = rm_strdup(row[i]);
    ++t->rows;
}

static void
table_print(table_t *t)
{
    size_t width[16] = {0};
    for (size_t r = 0; r != t->rows; ++r)
        for (size_t c = 0; c != t->cols; ++c)
            if (strlen(t->cells[r * t->cols + c]) > width[c])
                width[c] = strlen(t->cells[r * t->cols + c]);
    for (size_t r = 0; r != t->rows; ++r) {
        for (size_t c = 0; c != t->cols; ++c) {
            const char *cell = t->cells[r * t->cols + c];
            if (c + 1 == t->cols)
                printf("%s\n", cell);
            else
                printf("%-*s   ", (int)width[c], cell);
            free(t->cells[r * t->cols + c]);
        }
    }
    free(t->cells);
    t->cells = NULL;
    t->rows = 0;
}

static void append(char *buf, size_t bufsz, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
append(char *buf, size_t bufsz, const char *fmt, ...)
{
    size_t len = strlen(buf);
    if (len + 1 >= bufsz)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + len, bufsz - len, fmt, ap);
    va_end(ap);
}

static void
route_summary(size_t n_parents, Remora__V1__ParentReference **parents, size_t n_rules, void **rules, int grpc, char *pbuf,
              char *bbuf, size_t bufsz)
{
    pbuf[0] = bbuf[0] = '\0';
    for (size_t i = 0; i != n_parents; ++i)
        append(pbuf, bufsz, "%s%s", i != 0 ? "," : "", parents[i]->name);
    for (size_t i = 0; i != n_rules; ++i) {
        size_t n_backends = grpc ? ((Remora__V1__GRPCRouteRule *)rules[i])->n_backend_refs
                                 : ((Remora__V1__HTTPRouteRule *)rules[i])->n_backend_refs;
        Remora__V1__BackendReference **b =
            grpc ? ((Remora__V1__GRPCRouteRule *)rules[i])->backend_refs : ((Remora__V1__HTTPRouteRule *)rules[i])->backend_refs;
        for (size_t j = 0; j != n_backends; ++j)
            append(bbuf, bufsz, "%s%s(%u)", bbuf[0] != '\0' ? "," : "", b[j]->name, b[j]->weight);
    }
    if (strlen(bbuf) > 60)
        strcpy(bbuf + 56, "...");
}

static const char *
duration_str(const Remora__V1__Duration *d, char *buf, size_t bufsz)
{
    if (d == NULL || d->seconds < 0 || d->nanos < 0)
        return "-";
    return rm_render_duration((uint64_t)d->seconds * 1000 + (uint64_t)d->nanos / 1000000, buf, bufsz);
}

/* FaultInjection: DELAY and ABORT, "50ms (10%)", "503 (5%)". */
static void
fault_summary(const Remora__V1__FaultInjectionSpec *spec, char *delay, char *abort_, size_t bufsz)
{
    static const char *const grpc_names[] = {
        "OK",        "CANCELLED",      "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
        "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
        "ABORTED",   "OUT_OF_RANGE",   "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
        "DATA_LOSS", "UNAUTHENTICATED"};
    char d[32];
    snprintf(delay, bufsz, "-");
    snprintf(abort_, bufsz, "-");
    if (spec == NULL)
        return;
    if (spec->delay != NULL)
        snprintf(delay, bufsz, "%s (%u%%)", duration_str(spec->delay->fixed_delay, d, sizeof(d)), spec->delay->percent);
    if (spec->abort != NULL) {
        const Remora__V1__FaultAbort *a = spec->abort;
        if (a->status_case == REMORA__V1__FAULT_ABORT__STATUS_GRPC_STATUS && (unsigned)a->grpc_status < 17)
            snprintf(abort_, bufsz, "%s (%u%%)", grpc_names[a->grpc_status], a->percent);
        else
            snprintf(abort_, bufsz, "%u (%u%%)", a->http_status, a->percent);
    }
}

/*
 * Policy attachment as the agents apply it (agent/src/config/translate.c): of the policies of one kind
 * that target one resource, the first by namespace and name is in force (GEP-713). `all` holds every
 * resource of the namespaces listed, sorted by namespace and name as the control plane returns them.
 */
static const char *
target_kind(const Remora__V1__PolicyTargetReference *t)
{
    return t->kind[0] != '\0' ? t->kind : "Service";
}

static const char *
policy_in_force(const Remora__V1__GetResponse *all, rm_kind_t policy_kind, const char *ns, const char *kind, const char *name)
{
    size_t n = policy_kind == RM_KIND_BACKEND_TRAFFIC_POLICY ? all->n_backend_traffic_policies : all->n_rate_limit_policies;
    for (size_t i = 0; i != n; ++i) {
        const Remora__V1__ObjectMeta *meta;
        size_t n_refs;
        Remora__V1__PolicyTargetReference **refs;
        if (policy_kind == RM_KIND_BACKEND_TRAFFIC_POLICY) {
            const Remora__V1__BackendTrafficPolicy *p = all->backend_traffic_policies[i];
            meta = p->metadata;
            n_refs = p->spec != NULL ? p->spec->n_target_refs : 0;
            refs = p->spec != NULL ? p->spec->target_refs : NULL;
        } else {
            const Remora__V1__RateLimitPolicy *p = all->rate_limit_policies[i];
            meta = p->metadata;
            n_refs = p->spec != NULL ? p->spec->n_target_refs : 0;
            refs = p->spec != NULL ? p->spec->target_refs : NULL;
        }
        if (meta == NULL || strcmp(meta->namespace_, ns) != 0)
            continue;
        for (size_t j = 0; j != n_refs; ++j)
            if (strcasecmp(target_kind(refs[j]), kind) == 0 && strcmp(refs[j]->name, name) == 0)
                return meta->name;
    }
    return NULL;
}

/* TARGETS of a policy: "api, httproute/web (overridden by other)". */
static void
targets_summary(const Remora__V1__GetResponse *all, rm_kind_t policy_kind, const Remora__V1__ObjectMeta *meta, size_t n,
                Remora__V1__PolicyTargetReference *const *refs, char *buf, size_t bufsz)
{
    buf[0] = '\0';
    for (size_t i = 0; i != n; ++i) {
        const char *kind = target_kind(refs[i]);
        int svc = strcasecmp(kind, "Service") == 0;
        append(buf, bufsz, "%s%s%s%s", i != 0 ? ", " : "",
               svc ? "" : (strcasecmp(kind, "HTTPRoute") == 0 ? "httproute" : "grpcroute"), svc ? "" : "/", refs[i]->name);
        const char *winner = all != NULL ? policy_in_force(all, policy_kind, meta->namespace_, kind, refs[i]->name) : NULL;
        if (winner != NULL && strcmp(winner, meta->name) != 0)
            append(buf, bufsz, " (overridden by %s)", winner);
    }
}

/* POLICIES of a Service or a route: "btp/x, rlp/y". */
static void
policies_summary(const Remora__V1__GetResponse *all, const char *ns, const char *kind, const char *name, char *buf, size_t bufsz)
{
    const char *btp =
        strcasecmp(kind, "Service") == 0 ? policy_in_force(all, RM_KIND_BACKEND_TRAFFIC_POLICY, ns, kind, name) : NULL;
    const char *rlp = policy_in_force(all, RM_KIND_RATE_LIMIT_POLICY, ns, kind, name);
    snprintf(buf, bufsz, "%s%s%s%s%s", btp != NULL ? "backendtrafficpolicy/" : "", btp != NULL ? btp : "",
             btp != NULL && rlp != NULL ? ", " : "", rlp != NULL ? "ratelimitpolicy/" : "", rlp != NULL ? rlp : "");
    if (buf[0] == '\0')
        snprintf(buf, bufsz, "-");
}

/* RateLimitPolicy: TOTAL ("1000/s burst 200"), PER CLIENT ("20/s by Identity, 1 override"). */
static void
rate_limit_summary(const Remora__V1__RateLimitPolicySpec *spec, char *total, char *per_client, size_t bufsz)
{
    static const char *const keys[] = {"Identity", "SourceAddress", "Header"};
    snprintf(total, bufsz, "-");
    snprintf(per_client, bufsz, "-");
    if (spec == NULL)
        return;
    if (spec->total != NULL)
        snprintf(total, bufsz, "%u/s burst %u", spec->total->requests_per_second,
                 spec->total->burst != 0 ? spec->total->burst : spec->total->requests_per_second);
    if (spec->per_client != NULL) {
        const Remora__V1__ClientKey *ck = spec->client_key;
        snprintf(per_client, bufsz, "%u/s burst %u by %s%s%s", spec->per_client->requests_per_second,
                 spec->per_client->burst != 0 ? spec->per_client->burst : spec->per_client->requests_per_second,
                 ck != NULL && (unsigned)ck->type < 3 ? keys[ck->type] : "Identity", ck != NULL && ck->header[0] != '\0' ? " " : "",
                 ck != NULL ? ck->header : "");
        if (spec->n_overrides != 0)
            append(per_client, bufsz, ", %zu override%s", spec->n_overrides, spec->n_overrides != 1 ? "s" : "");
    }
}

/* BackendTrafficPolicy: RETRY BUDGET ("20%/10s, min 10/1s"), CONNECTION POOL, BALANCER. */
static void
policy_summary(const Remora__V1__BackendTrafficPolicySpec *spec, char *budget, char *pool, char *lb, size_t bufsz)
{
    static const char *const types[] = {"-", "RoundRobin", "LeastRequest", "PeakEWMA", "RingHash"};
    char d1[32], d2[32], d3[32];
    snprintf(budget, bufsz, "-");
    snprintf(pool, bufsz, "-");
    snprintf(lb, bufsz, "-");
    if (spec == NULL)
        return;
    if (spec->load_balancer != NULL || spec->outlier_detection != NULL || spec->health_check != NULL) {
        lb[0] = '\0';
        if (spec->load_balancer != NULL)
            append(lb, bufsz, "%s", (unsigned)spec->load_balancer->type < 5 ? types[spec->load_balancer->type] : "-");
        if (spec->outlier_detection != NULL)
            append(lb, bufsz, "%soutlier %u/%u", lb[0] != '\0' ? ", " : "", spec->outlier_detection->consecutive_5xx_errors,
                   spec->outlier_detection->consecutive_gateway_errors);
        if (spec->health_check != NULL)
            append(lb, bufsz, "%shealth %s every %s", lb[0] != '\0' ? ", " : "",
                   spec->health_check->http != NULL ? spec->health_check->http->path : "grpc",
                   duration_str(spec->health_check->interval, d1, sizeof(d1)));
    }
    const Remora__V1__RetryConstraint *rc = spec->retry_constraint;
    if (rc != NULL && rc->budget != NULL && rc->min_retry_rate != NULL)
        snprintf(budget, bufsz, "%u%%/%s, min %u/%s", rc->budget->percent, duration_str(rc->budget->interval, d1, sizeof(d1)),
                 rc->min_retry_rate->count, duration_str(rc->min_retry_rate->interval, d2, sizeof(d2)));
    const Remora__V1__BackendConnectionPool *cp = spec->connection_pool;
    if (cp != NULL) {
        snprintf(pool, bufsz, "connect %s, idle %s, stream idle %s", duration_str(cp->connect_timeout, d1, sizeof(d1)),
                 duration_str(cp->idle_timeout, d2, sizeof(d2)), duration_str(cp->stream_idle_timeout, d3, sizeof(d3)));
        if (cp->max_connections != 0 || cp->max_pending_requests != 0 || cp->max_requests != 0 || cp->max_retries != 0)
            append(pool, bufsz, ", max conn/pending/req/retries %u/%u/%u/%u", cp->max_connections, cp->max_pending_requests,
                   cp->max_requests, cp->max_retries);
    }
}

/* `all`: every resource of the namespaces listed, to show which policy is in force where (NULL: not shown). */
static void
print_table(listed_t *items, size_t n, int all_kinds, const Remora__V1__GetResponse *all)
{
    static const char *const headers[RM_KIND__ALL][7] = {
        [RM_KIND_SERVICE] = {"NAMESPACE", "NAME", "PROTOCOL", "ENDPOINTS", "POLICIES"},
        [RM_KIND_HTTP_ROUTE] = {"NAMESPACE", "NAME", "PARENTS", "RULES", "BACKENDS", "POLICIES"},
        [RM_KIND_GRPC_ROUTE] = {"NAMESPACE", "NAME", "PARENTS", "RULES", "BACKENDS", "POLICIES"},
        [RM_KIND_FAULT_INJECTION] = {"NAMESPACE", "NAME", "DELAY", "ABORT"},
        [RM_KIND_BACKEND_TRAFFIC_POLICY] = {"NAMESPACE", "NAME", "TARGETS", "RETRY BUDGET", "CONNECTION POOL", "BALANCER"},
        [RM_KIND_RATE_LIMIT_POLICY] = {"NAMESPACE", "NAME", "TARGETS", "TOTAL", "PER CLIENT"},
        [RM_KIND_TELEMETRY] = {"NAMESPACE", "NAME", "SCOPE", "TRACING", "ACCESS LOG"},
        [RM_KIND_AUTHORIZATION_POLICY] = {"NAMESPACE", "NAME", "TARGETS", "ACTION", "RULES"},
        [RM_KIND_MESH_TLS] = {"NAMESPACE", "NAME", "MODE"},
        [RM_KIND_EGRESS_POLICY] = {"NAMESPACE", "NAME", "WORKLOADS", "HOSTS"},
    };
    for (int k = 0; k != RM_KIND__ALL; ++k) {
        table_t t = {.cols = 0};
        while (t.cols < 7 && headers[k][t.cols] != NULL)
            ++t.cols;
        size_t rows = 0;
        for (size_t i = 0; i != n; ++i) {
            if (items[i].kind != (rm_kind_t)k)
                continue;
            if (rows++ == 0)
                table_add(&t, headers[k]);
            char name[300], a[512] = "", b[512] = "", c[512] = "", d[512] = "", nrules[32];
            const Remora__V1__ObjectMeta *meta = rm_resource_meta(items[i].kind, items[i].msg);
            snprintf(name, sizeof(name), "%s%s%s", all_kinds ? rm_kind_lower(items[i].kind) : "", all_kinds ? "/" : "", meta->name);
            if (k == RM_KIND_SERVICE) {
                const Remora__V1__ServiceSpec *spec = ((const Remora__V1__Service *)items[i].msg)->spec;
                static const char *const protos[] = {"-", "grpc", "http2", "http1"};
                for (size_t j = 0; spec != NULL && j != spec->n_endpoints; ++j) {
                    const Remora__V1__Endpoint *e = spec->endpoints[j];
                    append(b, sizeof(b), "%s%s%s", j != 0 ? "," : "",
                           e->target_case == REMORA__V1__ENDPOINT__TARGET_DNS ? "dns:" : "", e->address);
                }
                if (strlen(b) > 60)
                    strcpy(b + 56, "...");
                policies_summary(all, meta->namespace_, "Service", meta->name, c, sizeof(c));
                const char *row[] = {meta->namespace_, name,
                                     spec != NULL && (unsigned)spec->protocol < 4 ? protos[spec->protocol] : "-",
                                     b[0] != '\0' ? b : "<none>", c};
                table_add(&t, row);
            } else if (k == RM_KIND_FAULT_INJECTION) {
                fault_summary(((const Remora__V1__FaultInjection *)items[i].msg)->spec, a, b, sizeof(a));
                const char *row[] = {meta->namespace_, name, a, b};
                table_add(&t, row);
            } else if (k == RM_KIND_BACKEND_TRAFFIC_POLICY) {
                const Remora__V1__BackendTrafficPolicySpec *spec = ((const Remora__V1__BackendTrafficPolicy *)items[i].msg)->spec;
                if (spec != NULL)
                    targets_summary(all, RM_KIND_BACKEND_TRAFFIC_POLICY, meta, spec->n_target_refs, spec->target_refs, a,
                                    sizeof(a));
                policy_summary(spec, b, c, d, sizeof(b));
                const char *row[] = {meta->namespace_, name, a, b, c, d};
                table_add(&t, row);
            } else if (k == RM_KIND_RATE_LIMIT_POLICY) {
                const Remora__V1__RateLimitPolicySpec *spec = ((const Remora__V1__RateLimitPolicy *)items[i].msg)->spec;
                if (spec != NULL)
                    targets_summary(all, RM_KIND_RATE_LIMIT_POLICY, meta, spec->n_target_refs, spec->target_refs, a, sizeof(a));
                rate_limit_summary(spec, b, c, sizeof(b));
                const char *row[] = {meta->namespace_, name, a, b, c};
                table_add(&t, row);
            } else if (k == RM_KIND_AUTHORIZATION_POLICY) {
                /* every policy on a target applies (none overrides another): no "overridden by" */
                static const char *const actions[] = {"ALLOW", "DENY", "AUDIT"};
                const Remora__V1__AuthorizationPolicySpec *spec = ((const Remora__V1__AuthorizationPolicy *)items[i].msg)->spec;
                if (spec != NULL)
                    targets_summary(NULL, RM_KIND_AUTHORIZATION_POLICY, meta, spec->n_target_refs, spec->target_refs, a, sizeof(a));
                snprintf(b, sizeof(b), "%s", spec != NULL && (unsigned)spec->action < 3 ? actions[spec->action] : "-");
                snprintf(c, sizeof(c), "%zu", spec != NULL ? spec->n_rules : 0);
                const char *row[] = {meta->namespace_, name, a, b, c};
                table_add(&t, row);
            } else if (k == RM_KIND_EGRESS_POLICY) {
                /* the service accounts it scopes, or every workload of its namespace; the hosts they may call */
                const Remora__V1__EgressPolicySpec *spec = ((const Remora__V1__EgressPolicy *)items[i].msg)->spec;
                for (size_t j = 0; spec != NULL && j != spec->n_target_refs; ++j)
                    append(a, sizeof(a), "%ssa/%s", j != 0 ? "," : "", spec->target_refs[j]->name);
                for (size_t j = 0; spec != NULL && j != spec->n_hosts; ++j)
                    append(b, sizeof(b), "%s%s", j != 0 ? "," : "", spec->hosts[j]);
                if (strlen(b) > 60)
                    strcpy(b + 56, "...");
                const char *row[] = {meta->namespace_, name, a[0] != '\0' ? a : "<namespace>", b[0] != '\0' ? b : "<none>"};
                table_add(&t, row);
            } else if (k == RM_KIND_MESH_TLS) {
                static const char *const modes[] = {"PERMISSIVE", "STRICT", "PERMISSIVE", "DISABLE"};
                const Remora__V1__MeshTLSSpec *spec = ((const Remora__V1__MeshTLS *)items[i].msg)->spec;
                const char *row[] = {meta->namespace_, name, spec != NULL && (unsigned)spec->mode < 4 ? modes[spec->mode] : "-"};
                table_add(&t, row);
            } else if (k == RM_KIND_TELEMETRY) {
                const Remora__V1__TelemetrySpec *spec = ((const Remora__V1__Telemetry *)items[i].msg)->spec;
                /* the root namespace's applies mesh-wide; another namespace's overrides it there */
                snprintf(a, sizeof(a), "%s", strcmp(meta->namespace_, "remora-system") == 0 ? "mesh" : "namespace");
                if (spec != NULL && spec->tracing != NULL && spec->tracing->otlp != NULL) {
                    const Remora__V1__TelemetryTracing *tr = spec->tracing;
                    snprintf(b, sizeof(b), "otlp/%s %s %g%%",
                             tr->otlp->protocol == REMORA__V1__OTLP_PROTOCOL__OTLP_PROTOCOL_HTTP ? "http" : "grpc",
                             tr->otlp->endpoint, tr->sampling_percent);
                }
                if (spec != NULL && spec->access_log != NULL)
                    snprintf(c, sizeof(c), "json %s", spec->access_log->path);
                const char *row[] = {meta->namespace_, name, a, b[0] != '\0' ? b : "off", c[0] != '\0' ? c : "off"};
                table_add(&t, row);
            } else {
                size_t n_rules;
                if (k == RM_KIND_HTTP_ROUTE) {
                    const Remora__V1__HTTPRouteSpec *spec = ((const Remora__V1__HTTPRoute *)items[i].msg)->spec;
                    n_rules = spec != NULL ? spec->n_rules : 0;
                    if (spec != NULL)
                        route_summary(spec->n_parent_refs, spec->parent_refs, spec->n_rules, (void **)spec->rules, 0, a, b,
                                      sizeof(a));
                } else {
                    const Remora__V1__GRPCRouteSpec *spec = ((const Remora__V1__GRPCRoute *)items[i].msg)->spec;
                    n_rules = spec != NULL ? spec->n_rules : 0;
                    if (spec != NULL)
                        route_summary(spec->n_parent_refs, spec->parent_refs, spec->n_rules, (void **)spec->rules, 1, a, b,
                                      sizeof(a));
                }
                snprintf(nrules, sizeof(nrules), "%zu", n_rules);
                policies_summary(all, meta->namespace_, k == RM_KIND_HTTP_ROUTE ? "HTTPRoute" : "GRPCRoute", meta->name, c,
                                 sizeof(c));
                const char *row[] = {meta->namespace_, name, a, nrules, b[0] != '\0' ? b : "-", c};
                table_add(&t, row);
            }
        }
        if (rows != 0) {
            table_print(&t);
            if (all_kinds)
                putchar('\n');
        }
    }
}

static int
cmd_get(int argc, char **argv)
{
    static const struct option opts[] = {{"namespace", required_argument, NULL, 'n'},
                                         {"all-namespaces", no_argument, NULL, 'A'},
                                         {"output", required_argument, NULL, 'o'},
                                         {"control", required_argument, NULL, 'c'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *ns = "default";
    int c, all_ns = 0;
    command_t cmd = {.name = "get", .help = get_help, .formats = table_yaml_json, .output = "table"};
    while ((c = getopt_long(argc, argv, "n:Ao:h", opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            ns = optarg;
            break;
        case 'A':
            all_ns = 1;
            break;
        default:
            common_option(c, &cmd);
        }
    }
    const char *output = cmd.output;
    if (optind == argc)
        rm_ctl_die(EXIT_USAGE,
                   "get needs a KIND (service, httproute, grpcroute, faultinjection, backendtrafficpolicy, ratelimitpolicy, "
                   "telemetry, authorizationpolicy or all); try "
                   "'remoractl get --help'");
    if (argc - optind > 2)
        rm_ctl_die(EXIT_USAGE, "get takes KIND [NAME]; unexpected '%s'", argv[optind + 2]);
    Remora__V1__GetRequest req = REMORA__V1__GET_REQUEST__INIT;
    parse_kind_arg(argv[optind], 1, &req.kind);
    const char *name = optind + 1 < argc ? argv[optind + 1] : NULL;
    if (name != NULL && req.kind == REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_UNSPECIFIED)
        rm_ctl_die(EXIT_USAGE, "a NAME needs a KIND other than all");
    if (all_ns && name != NULL)
        rm_ctl_die(EXIT_USAGE, "-A lists every namespace; with a NAME, give its namespace with -n");
    req.name = (char *)(name != NULL ? name : "");
    req.namespace_ = (char *)(all_ns ? "" : ns);

    rm_rpc_client_t *client = connect_control();
    Remora__V1__GetResponse *resp = (Remora__V1__GetResponse *)call(client, "/remora.v1.Admin/Get", &req.base,
                                                                    &remora__v1__get_response__descriptor, RPC_TIMEOUT_MS);
    listed_t *items;
    size_t n = collect(resp, &items);
    if (n == 0 && strcmp(output, "json") != 0) {
        if (all_ns)
            fprintf(stderr, "no resources found\n");
        else
            fprintf(stderr, "no resources found in namespace %s\n", ns);
    } else if (strcmp(output, "table") == 0) {
        /* which policy is in force where needs every policy of the namespaces shown, not only those listed */
        Remora__V1__GetResponse *all = resp;
        if (req.kind != REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_UNSPECIFIED &&
            req.kind != REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_FAULT_INJECTION) {
            Remora__V1__GetRequest areq = REMORA__V1__GET_REQUEST__INIT;
            areq.name = "";
            areq.namespace_ = req.namespace_;
            all = (Remora__V1__GetResponse *)call(client, "/remora.v1.Admin/Get", &areq.base, &remora__v1__get_response__descriptor,
                                                  RPC_TIMEOUT_MS);
        }
        print_table(items, n, req.kind == REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_UNSPECIFIED, all);
        if (all != resp)
            remora__v1__get_response__free_unpacked(all, NULL);
    } else {
        rm_rpc_buf_t out = {0};
        if (strcmp(output, "yaml") == 0) {
            for (size_t i = 0; i != n; ++i) {
                rm_node_t *doc = rm_render_resource(items[i].kind, items[i].msg);
                if (i != 0)
                    rm_rpc_buf_append(&out, "---\n", 4);
                rm_render_yaml(doc, &out);
                rm_node_free(doc);
            }
        } else {
            rm_node_t *root;
            if (name != NULL && n == 1) {
                root = rm_render_resource(items[0].kind, items[0].msg);
            } else {
                root = rm_node_map();
                rm_node_add(root, "apiVersion", rm_node_string("remora.dev/v1"));
                rm_node_add(root, "kind", rm_node_string("List"));
                rm_node_t *list = rm_node_add(root, "items", rm_node_list());
                for (size_t i = 0; i != n; ++i)
                    rm_node_add(list, NULL, rm_render_resource(items[i].kind, items[i].msg));
            }
            rm_render_json(root, &out);
            rm_node_free(root);
        }
        fwrite(out.base, 1, out.len, stdout);
        rm_rpc_buf_dispose(&out);
    }
    free(items);
    remora__v1__get_response__free_unpacked(resp, NULL);
    rm_rpc_client_destroy(client);
    return 0;
}

/* ---------------------------------------------------------------------------------------- delete */

static int
cmd_delete(int argc, char **argv)
{
    static const struct option opts[] = {{"namespace", required_argument, NULL, 'n'},
                                         {"control", required_argument, NULL, 'c'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *ns = "default";
    int c;
    command_t cmd = {.name = "delete", .help = delete_help};
    while ((c = getopt_long(argc, argv, "n:h", opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            ns = optarg;
            break;
        default:
            common_option(c, &cmd);
        }
    }
    if (argc - optind != 2)
        rm_ctl_die(EXIT_USAGE, "delete takes KIND NAME (e.g. 'remoractl delete httproute echo-split')");
    Remora__V1__ResourceRef ref = REMORA__V1__RESOURCE_REF__INIT;
    parse_kind_arg(argv[optind], 0, &ref.kind);
    ref.name = argv[optind + 1];
    ref.namespace_ = (char *)ns;
    Remora__V1__DeleteRequest req = REMORA__V1__DELETE_REQUEST__INIT;
    req.resource = &ref;
    rm_rpc_client_t *client = connect_control();
    Remora__V1__DeleteResponse *resp = (Remora__V1__DeleteResponse *)call(client, "/remora.v1.Admin/Delete", &req.base,
                                                                          &remora__v1__delete_response__descriptor, RPC_TIMEOUT_MS);
    rm_kind_t kind = RM_KIND_SERVICE;
    char nsbuf[128];
    rm_kind_from_proto(ref.kind, &kind);
    printf("%s/%s%s deleted (version %" PRIu64 ")\n", rm_kind_lower(kind), ref.name, ns_suffix(ns, nsbuf, sizeof(nsbuf)),
           resp->version);
    remora__v1__delete_response__free_unpacked(resp, NULL);
    rm_rpc_client_destroy(client);
    return 0;
}

/* ---------------------------------------------------------------------------------------- status */

static const char *
ago(const Remora__V1__Timestamp *ts, char *buf, size_t bufsz)
{
    if (ts == NULL || ts->seconds == 0)
        return "-";
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t d = (int64_t)now.tv_sec - ts->seconds;
    if (d < 0)
        d = 0;
    if (d < 120)
        snprintf(buf, bufsz, "%llds ago", (long long)d);
    else if (d < 7200)
        snprintf(buf, bufsz, "%lldm ago", (long long)(d / 60));
    else if (d < 172800)
        snprintf(buf, bufsz, "%lldh ago", (long long)(d / 3600));
    else
        snprintf(buf, bufsz, "%lldd ago", (long long)(d / 86400));
    return buf;
}

static int
cmd_status(int argc, char **argv)
{
    static const struct option opts[] = {{"output", required_argument, NULL, 'o'},
                                         {"control", required_argument, NULL, 'c'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    command_t cmd = {.name = "status", .help = status_help, .formats = table_json, .output = "table"};
    int c;
    while ((c = getopt_long(argc, argv, "o:h", opts, NULL)) != -1)
        common_option(c, &cmd);
    no_arguments(&cmd, argc, argv, "");
    const char *output = cmd.output;
    Remora__V1__StatusRequest req = REMORA__V1__STATUS_REQUEST__INIT;
    rm_rpc_client_t *client = connect_control();
    Remora__V1__StatusResponse *resp = (Remora__V1__StatusResponse *)call(client, "/remora.v1.Admin/Status", &req.base,
                                                                          &remora__v1__status_response__descriptor, RPC_TIMEOUT_MS);
    if (strcmp(output, "json") == 0) {
        rm_node_t *root = rm_node_map();
        rm_node_add(root, "version", rm_node_number((int64_t)resp->version));
        rm_node_t *list = rm_node_add(root, "agents", rm_node_list());
        for (size_t i = 0; i != resp->n_agents; ++i) {
            const Remora__V1__AgentStatus *a = resp->agents[i];
            rm_node_t *m = rm_node_add(list, NULL, rm_node_map());
            rm_node_add(m, "node", rm_node_string(a->node_id));
            rm_node_add(m, "connected", rm_node_bool(a->connected));
            rm_node_add(m, "appliedVersion", rm_node_number((int64_t)a->applied_version));
            rm_node_add(m, "nackVersion", rm_node_number((int64_t)a->nack_version));
            rm_node_add(m, "nackReason", rm_node_string(a->nack_reason));
            rm_node_add(m, "lastSeen", rm_node_number(a->last_seen != NULL ? a->last_seen->seconds : 0));
            rm_node_add(m, "peer", rm_node_string(a->peer));
        }
        rm_rpc_buf_t out = {0};
        rm_render_json(root, &out);
        fwrite(out.base, 1, out.len, stdout);
        rm_rpc_buf_dispose(&out);
        rm_node_free(root);
    } else {
        size_t connected = 0, current = 0;
        for (size_t i = 0; i != resp->n_agents; ++i) {
            connected += resp->agents[i]->connected;
            current += resp->agents[i]->connected && resp->agents[i]->applied_version == resp->version;
        }
        printf("control plane %s: version %" PRIu64 ", %zu agent%s connected, %zu at the current version\n", control_addr,
               resp->version, connected, connected == 1 ? "" : "s", current);
        if (resp->n_agents != 0) {
            table_t t = {.cols = 5};
            const char *h[] = {"NODE", "CONNECTED", "APPLIED", "LAST ERROR", "LAST SEEN"};
            table_add(&t, h);
            for (size_t i = 0; i != resp->n_agents; ++i) {
                const Remora__V1__AgentStatus *a = resp->agents[i];
                char applied[32], err[128], seen[32];
                snprintf(applied, sizeof(applied), "%" PRIu64, a->applied_version);
                if (a->nack_version != 0) {
                    snprintf(err, sizeof(err), "v%" PRIu64 ": %s", a->nack_version, a->nack_reason);
                    for (char *p = err; *p != '\0'; ++p)
                        if (*p == '\n' || *p == '\t')
                            *p = ' ';
                    if (strlen(err) > 70)
                        strcpy(err + 66, "...");
                } else {
                    strcpy(err, "-");
                }
                const char *row[] = {a->node_id, a->connected ? "yes" : "no", applied, err, ago(a->last_seen, seen, sizeof(seen))};
                table_add(&t, row);
            }
            table_print(&t);
        }
    }
    remora__v1__status_response__free_unpacked(resp, NULL);
    rm_rpc_client_destroy(client);
    return 0;
}

/* ------------------------------------------------------------------------------------------ stat */

/* "30s", "1m", "90s", "10m" -> ms; 0 when it does not parse. */
static uint64_t
parse_window(const char *s)
{
    char *end;
    errno = 0;
    unsigned long long n = strtoull(s, &end, 10);
    if (end == s || errno != 0 || n > 100000)
        return 0;
    if (strcmp(end, "s") == 0)
        return n * 1000;
    if (strcmp(end, "m") == 0)
        return n * 60000;
    if (strcmp(end, "ms") == 0)
        return n;
    return 0;
}

static const char *
format_window(uint64_t ms, char *buf, size_t bufsz)
{
    if (ms % 60000 == 0)
        snprintf(buf, bufsz, "%" PRIu64 "m", ms / 60000);
    else if (ms % 1000 == 0)
        snprintf(buf, bufsz, "%" PRIu64 "s", ms / 1000);
    else
        snprintf(buf, bufsz, "%" PRIu64 "ms", ms);
    return buf;
}

static const char *
format_ms(double ms, char *buf, size_t bufsz)
{
    snprintf(buf, bufsz, ms < 10 ? "%.2fms" : ms < 1000 ? "%.1fms" : "%.0fms", ms);
    return buf;
}

static int
cmd_stat(int argc, char **argv)
{
    static const struct option opts[] = {{"by", required_argument, NULL, 'b'},
                                         {"window", required_argument, NULL, 'w'},
                                         {"namespace", required_argument, NULL, 'n'},
                                         {"output", required_argument, NULL, 'o'},
                                         {"control", required_argument, NULL, 'c'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *by = "service", *ns = "";
    uint64_t window_ms = 60000;
    int c;
    command_t cmd = {.name = "stat", .help = stat_help, .formats = table_json, .output = "table"};
    while ((c = getopt_long(argc, argv, "o:n:h", opts, NULL)) != -1) {
        switch (c) {
        case 'b':
            by = optarg;
            if (strcmp(by, "service") != 0 && strcmp(by, "route") != 0 && strcmp(by, "backend") != 0)
                rm_ctl_die(EXIT_USAGE, "--by takes service, route or backend; got '%s'", by);
            break;
        case 'w':
            window_ms = parse_window(optarg);
            if (window_ms < 10000 || window_ms > 600000)
                rm_ctl_die(EXIT_USAGE, "--window takes a duration from 10s to 10m (e.g. 30s, 1m, 5m); got '%s'", optarg);
            break;
        case 'n':
            ns = optarg;
            break;
        default:
            common_option(c, &cmd);
        }
    }
    no_arguments(&cmd, argc, argv, " (group with --by)");
    const char *output = cmd.output;
    Remora__V1__StatRequest req = REMORA__V1__STAT_REQUEST__INIT;
    req.by = (char *)by;
    req.window_ms = window_ms;
    req.namespace_ = (char *)ns;
    rm_rpc_client_t *client = connect_control();
    Remora__V1__StatResponse *resp = (Remora__V1__StatResponse *)call(client, "/remora.v1.Admin/Stat", &req.base,
                                                                      &remora__v1__stat_response__descriptor, RPC_TIMEOUT_MS);
    int per_backend = strcmp(by, "backend") == 0;
    if (strcmp(output, "json") == 0) {
        rm_node_t *root = rm_node_map();
        rm_node_add(root, "by", rm_node_string(by));
        rm_node_add(root, "windowMs", rm_node_number((int64_t)resp->window_ms));
        rm_node_t *list = rm_node_add(root, "rows", rm_node_list());
        for (size_t i = 0; i != resp->n_rows; ++i) {
            const Remora__V1__StatRow *r = resp->rows[i];
            rm_node_t *m = rm_node_add(list, NULL, rm_node_map());
            rm_node_add(m, "name", rm_node_string(r->name));
            if (per_backend)
                rm_node_add(m, "node", rm_node_string(r->node_id));
            rm_node_add(m, "agents", rm_node_number(r->agents));
            rm_node_add(m, "requests", rm_node_number((int64_t)r->requests));
            rm_node_add(m, "failures", rm_node_number((int64_t)r->failures));
            rm_node_add(m, "rps", rm_node_decimal(r->rps));
            rm_node_add(m, "successRate", rm_node_decimal(r->success_rate));
            rm_node_add(m, "p50Ms", rm_node_decimal(r->p50_ms));
            rm_node_add(m, "p95Ms", rm_node_decimal(r->p95_ms));
            rm_node_add(m, "p99Ms", rm_node_decimal(r->p99_ms));
        }
        rm_rpc_buf_t out = {0};
        rm_render_json(root, &out);
        fwrite(out.base, 1, out.len, stdout);
        rm_rpc_buf_dispose(&out);
        rm_node_free(root);
    } else if (resp->n_rows == 0) {
        char w[32];
        printf("no traffic in the last %s%s%s\n", format_window(resp->window_ms, w, sizeof(w)),
               ns[0] != '\0' ? " in namespace " : "", ns);
    } else {
        table_t t = {.cols = per_backend ? 8 : 7};
        const char *h[] = {"NAME", "AGENTS", "RPS", "SUCCESS", "P50", "P95", "P99"};
        const char *hb[] = {"NODE", "BACKEND", "AGENTS", "RPS", "SUCCESS", "P50", "P95", "P99"};
        table_add(&t, per_backend ? hb : h);
        for (size_t i = 0; i != resp->n_rows; ++i) {
            const Remora__V1__StatRow *r = resp->rows[i];
            char agents[16], rps[32], success[32], p50[32], p95[32], p99[32];
            snprintf(agents, sizeof(agents), "%u", r->agents);
            snprintf(rps, sizeof(rps), "%.1f", r->rps);
            snprintf(success, sizeof(success), "%.2f%%", r->success_rate * 100);
            format_ms(r->p50_ms, p50, sizeof(p50));
            format_ms(r->p95_ms, p95, sizeof(p95));
            format_ms(r->p99_ms, p99, sizeof(p99));
            const char *name = r->name[0] != '\0' ? r->name : "-";
            const char *row[] = {name, agents, rps, success, p50, p95, p99};
            const char *rowb[] = {r->node_id, name, agents, rps, success, p50, p95, p99};
            table_add(&t, per_backend ? rowb : row);
        }
        table_print(&t);
    }
    remora__v1__stat_response__free_unpacked(resp, NULL);
    rm_rpc_client_destroy(client);
    return 0;
}

/* rm_ctl_call_fn for the identity commands: one call on a fresh channel, failures exit */
static ProtobufCMessage *
identity_call(const char *method, const ProtobufCMessage *req, const ProtobufCMessageDescriptor *desc)
{
    rm_rpc_client_t *client = connect_control();
    ProtobufCMessage *resp = call(client, method, req, desc, RPC_TIMEOUT_MS);
    rm_rpc_client_destroy(client);
    return resp;
}

/* gRPC's own log lines (a failed TLS handshake...) would precede remoractl's one-line errors: dropped */
static void
quiet_grpc_log(gpr_log_func_args *args)
{
}

int
main(int argc, char **argv)
{
    /* no OpenSSL clean-up at exit: gRPC's threads may still be ending then, and a thread that ends after the
     * clean-up deleted OpenSSL's thread key leaks its error state (each thread frees its own as it ends) */
    OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, NULL);
    /* await first: everything after it (the command's own arguments too) is its business */
    if (argc > 1 && strcmp(argv[1], "await") == 0)
        return rm_ctl_await(argc - 1, argv + 1);
    static const struct option opts[] = {
        {"control", required_argument, NULL, 'c'}, {"help", no_argument, NULL, 'h'}, {NULL, 0, NULL, 0}};
    control_addr = getenv("REMORA_CONTROL");
    if (control_addr == NULL || control_addr[0] == '\0')
        control_addr = DEFAULT_CONTROL;
    admin_token_file = getenv("REMORA_ADMIN_TOKEN_FILE");
    if (admin_token_file != NULL && admin_token_file[0] == '\0')
        admin_token_file = NULL;
    ca_file = getenv("REMORA_CA_FILE");
    if (ca_file != NULL && ca_file[0] == '\0')
        ca_file = NULL;
    argc = take_security_options(argc, argv);
    gpr_set_log_function(quiet_grpc_log);
    int c;
    command_t remoractl = {.name = NULL, .help = main_help};
    /* "+": options after the command belong to the command */
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1)
        common_option(c, &remoractl);
    if (optind == argc) {
        fputs(main_help, stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[optind];
    int sub_argc = argc - optind;
    char **sub_argv = argv + optind;
    optind = 0; /* GNU getopt: start over on the command's arguments */
    if (strcmp(cmd, "help") == 0) {
        const char *topic = sub_argc > 1 ? sub_argv[1] : "";
        fputs(strcmp(topic, "apply") == 0          ? apply_help
              : strcmp(topic, "get") == 0          ? get_help
              : strcmp(topic, "delete") == 0       ? delete_help
              : strcmp(topic, "status") == 0       ? status_help
              : strcmp(topic, "stat") == 0         ? stat_help
              : strcmp(topic, "trust-anchor") == 0 ? rm_ctl_trust_anchor_help
              : strcmp(topic, "token") == 0        ? rm_ctl_token_help
              : strcmp(topic, "identity") == 0     ? rm_ctl_identity_help
              : strcmp(topic, "inject") == 0       ? rm_ctl_inject_help
              : strcmp(topic, "uninject") == 0     ? rm_ctl_uninject_help
              : strcmp(topic, "proxy") == 0        ? rm_ctl_proxy_help
              : strcmp(topic, "check") == 0        ? rm_ctl_check_help
              : strcmp(topic, "await") == 0        ? rm_ctl_await_help
                                                   : main_help,
              stdout);
        return 0;
    }
    if (strcmp(cmd, "inject") == 0 || strcmp(cmd, "uninject") == 0)
        return rm_ctl_inject(sub_argc, sub_argv); /* offline: no control plane */
    int (*identity_cmd)(int, char **, rm_ctl_call_fn) = strcmp(cmd, "trust-anchor") == 0 ? rm_ctl_trust_anchor
                                                        : strcmp(cmd, "token") == 0      ? rm_ctl_token
                                                        : strcmp(cmd, "identity") == 0   ? rm_ctl_identity
                                                                                         : NULL;
    if (identity_cmd != NULL) {
        rm_rpc_init();
        int rc = identity_cmd(sub_argc, sub_argv, identity_call);
        rm_rpc_shutdown();
        return rc;
    }
    int (*ops_cmd)(int, char **, const rm_ctl_env_t *) = strcmp(cmd, "proxy") == 0   ? rm_ctl_proxy
                                                         : strcmp(cmd, "check") == 0 ? rm_ctl_check
                                                                                     : NULL;
    if (ops_cmd != NULL) {
        rm_ctl_env_t env = {.control_addr = &control_addr,
                            .ca_file = ca_file,
                            .insecure = insecure,
                            .connect = connect_control,
                            .die_rpc = die_rpc};
        rm_rpc_init();
        int rc = ops_cmd(sub_argc, sub_argv, &env);
        rm_rpc_shutdown();
        return rc;
    }
    int (*run)(int, char **) = strcmp(cmd, "apply") == 0    ? cmd_apply
                               : strcmp(cmd, "get") == 0    ? cmd_get
                               : strcmp(cmd, "delete") == 0 ? cmd_delete
                               : strcmp(cmd, "status") == 0 ? cmd_status
                               : strcmp(cmd, "stat") == 0   ? cmd_stat
                                                            : NULL;
    if (run == NULL)
        rm_ctl_die(
            EXIT_USAGE,
            "unknown command '%s' (apply, get, delete, status, stat, trust-anchor, token, identity, proxy, check, inject, uninject "
            "or help)",
            cmd);
    rm_rpc_init();
    int rc = run(sub_argc, sub_argv);
    rm_rpc_shutdown();
    return rc;
}
