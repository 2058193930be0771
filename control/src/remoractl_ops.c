/*
 * remoractl's operations commands: `proxy` and `check` (see remoractl_ops.h).
 */
#define _GNU_SOURCE /* timegm */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <netdb.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include "remora/strutil.h"
#include "remora/v1/admin.pb-c.h"
#include "remora/v1/identity.pb-c.h"
#include "remoractl_ops.h"
#include "remoractl_util.h"
#include "render.h"

#define RPC_TIMEOUT_MS 10000
#define PROXY_DEFAULT_TIMEOUT_MS 5000
#define PROXY_MAX_TIMEOUT_MS 60000
/* a certificate that expires sooner than this is a warning */
#define EXPIRY_WARN_S (7 * 24 * 3600)
#define CHECK_DEFAULT_WAIT_MS 5000
#define WEBHOOK_TIMEOUT_MS 5000
#define DEFAULT_WEBHOOK_NAME "remora-control.remora-system.svc"
/* agents listed one per line in `check`; the rest are counted */
#define MAX_AGENT_LINES 100

const char rm_ctl_proxy_help[] =
    "Usage: remoractl proxy NODE stats|config|clusters|log-level [LEVEL] [--timeout D]\n"
    "\n"
    "Runs one command on the admin API of the agent NODE (its node id, as `remoractl status` lists it),\n"
    "relayed by the control plane on that agent's discovery stream: the admin port stays on the agent's\n"
    "loopback. Prints the agent's answer on standard output.\n"
    "\n"
    "  stats                 the agent's metrics, Prometheus text (as GET /metrics on its health port)\n"
    "  config                the configuration in service, JSON (as GET /config_dump)\n"
    "  clusters              outlier detection and health checks per cluster (as GET /clusters)\n"
    "  log-level [LEVEL]     the log level; with LEVEL (error, warn, info or debug) sets it first\n"
    "\n"
    "Only these: nothing that drains or stops an agent goes through the control plane.\n"
    "\n"
    "  --timeout D           how long to wait for the agent: 100ms to 60s, e.g. 2s (default 5s)\n"
    "  --control ADDR:PORT   the control plane (default: $REMORA_CONTROL, else 127.0.0.1:15010)\n"
    "\n"
    "Exit codes: 0 the agent answered; 1 unknown or disconnected node, or the agent refused (its\n"
    "answer on standard error); 2 usage error; 3 control plane unreachable; 4 the agent did not answer in time.\n";

const char rm_ctl_check_help[] =
    "Usage: remoractl check [--webhook ADDR:PORT] [--webhook-name DNS] [--wait D] [-o text|json]\n"
    "\n"
    "Checks the mesh, one line per check marked [ok], [warn], [FAIL] or [skip], like `linkerd check`:\n"
    "  - the control plane answers over TLS verified against --ca, and accepts the admin credential;\n"
    "  - its certificate authority: every trust anchor and the issuer are valid, the issuer chains to\n"
    "    the trust bundle, none expires within 7 days (a warning), the serving certificate is valid;\n"
    "  - the injection webhook's serving certificate chains to the trust anchor (the caBundle of the\n"
    "    MutatingWebhookConfiguration), carries its DNS name, and does not expire within 7 days (nor\n"
    "    within a quarter of its lifetime, for the short-lived certificates the webhook renews itself);\n"
    "  - every agent the control plane knows is connected and at the current version; those that are\n"
    "    not (disconnected, refusing the version, or behind it after --wait) are named.\n"
    "Exits 1 if any check failed (warnings do not fail).\n"
    "\n"
    "  --webhook ADDR:PORT   the injection webhook (default: where the control plane serves it,\n"
    "                        remora-control --webhook-listen; a wildcard address is reached at the\n"
    "                        host of --control)\n"
    "  --webhook-name DNS    the name its certificate must carry (default: the control plane's first\n"
    "                        --webhook-dns, else " DEFAULT_WEBHOOK_NAME ")\n"
    "  --wait D              how long agents behind the current version may take to catch up before they\n"
    "                        count as stale: 0s to 60s (default 5s)\n"
    "  -o, --output FORMAT   text (default) or json\n"
    "  --control ADDR:PORT   the control plane (default: $REMORA_CONTROL, else 127.0.0.1:15010)\n";

/* ------------------------------------------------------------------------------------------ proxy */

static int
known_command(const char *c)
{
    return strcmp(c, "stats") == 0 || strcmp(c, "config") == 0 || strcmp(c, "clusters") == 0 || strcmp(c, "log-level") == 0;
}

int
rm_ctl_proxy(int argc, char **argv, const rm_ctl_env_t *env)
{
    static const struct option opts[] = {{"timeout", required_argument, NULL, 't'},
                                         {"control", required_argument, NULL, 'c'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    int64_t timeout_ms = PROXY_DEFAULT_TIMEOUT_MS;
    int c;
    while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
        switch (c) {
        case 't':
            timeout_ms = rm_ctl_parse_duration_ms(optarg);
            if (timeout_ms < 100 || timeout_ms > PROXY_MAX_TIMEOUT_MS)
                rm_ctl_die(EXIT_USAGE, "--timeout takes a duration from 100ms to 60s (e.g. 2s); got '%s'", optarg);
            break;
        case 'c':
            *env->control_addr = optarg;
            break;
        case 'h':
            fputs(rm_ctl_proxy_help, stdout);
            return 0;
        default:
            fputs("Try 'remoractl proxy --help'.\n", stderr);
            return EXIT_USAGE;
        }
    }
    int nargs = argc - optind;
    if (nargs < 2)
        rm_ctl_die(EXIT_USAGE, "proxy needs a node id and a command: remoractl proxy NODE stats|config|clusters|log-level [LEVEL]");
    const char *node = argv[optind], *command = argv[optind + 1], *level = nargs > 2 ? argv[optind + 2] : "";
    if (!known_command(command))
        rm_ctl_die(EXIT_USAGE, "unknown proxy command '%s' (stats, config, clusters or log-level)", command);
    if (nargs > 3 || (nargs == 3 && strcmp(command, "log-level") != 0))
        rm_ctl_die(EXIT_USAGE, "%s takes no further arguments; unexpected '%s'", command, argv[optind + (nargs == 3 ? 2 : 3)]);
    if (level[0] != '\0' && strcmp(level, "error") != 0 && strcmp(level, "warn") != 0 && strcmp(level, "info") != 0 &&
        strcmp(level, "debug") != 0)
        rm_ctl_die(EXIT_USAGE, "unknown log level '%s' (error, warn, info or debug)", level);

    Remora__V1__ProxyRequest req = REMORA__V1__PROXY_REQUEST__INIT;
    Remora__V1__Duration timeout = REMORA__V1__DURATION__INIT;
    req.node_id = (char *)node;
    req.command = (char *)command;
    req.argument = (char *)level;
    timeout.seconds = timeout_ms / 1000;
    timeout.nanos = (int32_t)(timeout_ms % 1000) * 1000000;
    req.timeout = &timeout;
    rm_rpc_client_t *client = env->connect();
    ProtobufCMessage *m;
    rm_rpc_status_t st;
    /* the control plane's own deadline answers first, with the agent's name in it */
    if (rm_rpc_unary(client, "/remora.v1.Admin/Proxy", &req.base, &remora__v1__proxy_response__descriptor, timeout_ms + 5000, &m,
                     &st) != 0) {
        rm_rpc_client_destroy(client);
        /* the relay's own refusals name the agent; other failures are the control plane's */
        int about_agent = strncmp(st.message, "agent ", 6) == 0 || strncmp(st.message, "no agent ", 9) == 0;
        switch (st.code) {
        case GRPC_STATUS_NOT_FOUND:
        case GRPC_STATUS_FAILED_PRECONDITION:
        case GRPC_STATUS_INVALID_ARGUMENT:
        case GRPC_STATUS_RESOURCE_EXHAUSTED:
            rm_ctl_die(EXIT_REFUSED, "%s", st.message);
        case GRPC_STATUS_UNAVAILABLE:
            if (about_agent)
                rm_ctl_die(EXIT_REFUSED, "%s", st.message);
            break;
        case GRPC_STATUS_DEADLINE_EXCEEDED:
            if (about_agent)
                rm_ctl_die(EXIT_TIMEOUT, "%s", st.message);
            break;
        case GRPC_STATUS_UNIMPLEMENTED:
            rm_ctl_die(EXIT_UNREACHABLE, "the control plane at %s does not relay admin requests (an older remora-control?): %s",
                       *env->control_addr, st.message);
        default:
            break;
        }
        env->die_rpc(&st);
        return EXIT_UNREACHABLE; /* not reached */
    }
    Remora__V1__ProxyResponse *resp = (Remora__V1__ProxyResponse *)m;
    int rc = 0;
    /* an empty body may come with no buffer at all */
    const char *body = resp->body.len != 0 ? (const char *)resp->body.data : "";
    if (resp->status == 200) {
        fwrite(body, 1, resp->body.len, stdout);
    } else {
        fprintf(stderr, "remoractl: agent %s answered %u: %.*s", node, resp->status, (int)resp->body.len, body);
        if (resp->body.len == 0 || resp->body.data[resp->body.len - 1] != '\n')
            fputc('\n', stderr);
        rc = EXIT_REFUSED;
    }
    if (resp->truncated)
        fprintf(stderr, "remoractl: the answer of agent %s was cut at %zu bytes (the limit of a relayed answer)\n", node,
                resp->body.len);
    fflush(stdout);
    protobuf_c_message_free_unpacked(m, NULL);
    rm_rpc_client_destroy(client);
    return rc;
}

/* ------------------------------------------------------------------------------------------ check */

enum { CHECK_OK, CHECK_WARN, CHECK_FAIL, CHECK_SKIP };
static const char *const check_marks[] = {"[ok]  ", "[warn]", "[FAIL]", "[skip]"};
static const char *const check_names[] = {"ok", "warn", "fail", "skip"};

typedef struct st_report_t {
    int json;
    const char *group, *printed_group;
    rm_node_t *list;
    size_t counts[4];
} report_t;

static void __attribute__((format(printf, 4, 5))) report(report_t *r, int result, const char *check, const char *fmt, ...)
{
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ++r->counts[result];
    if (r->json) {
        rm_node_t *m = rm_node_add(r->list, NULL, rm_node_map());
        rm_node_add(m, "group", rm_node_string(r->group));
        rm_node_add(m, "check", rm_node_string(check));
        rm_node_add(m, "result", rm_node_string(check_names[result]));
        rm_node_add(m, "message", rm_node_string(msg));
        return;
    }
    if (r->printed_group != r->group) {
        printf("%s%s\n", r->printed_group != NULL ? "\n" : "", r->group);
        r->printed_group = r->group;
    }
    printf("  %s %s\n", check_marks[result], msg);
}

static const char *
format_time(int64_t t, char *buf, size_t bufsz)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, bufsz, "%Y-%m-%dT%H:%M:%SZ", &tm);
    return buf;
}

static const char *
format_span(int64_t s, char *buf, size_t bufsz)
{
    if (s >= 2 * 86400)
        snprintf(buf, bufsz, "%lld days", (long long)(s / 86400));
    else if (s >= 2 * 3600)
        snprintf(buf, bufsz, "%lld hours", (long long)(s / 3600));
    else
        snprintf(buf, bufsz, "%lld minutes", (long long)(s / 60));
    return buf;
}

/*
 * Reports the validity of [not_before, not_after] for `what` (e.g. "trust anchor CN=x"): less than 7
 * days left is a warning. With `rotated`, for serving certificates that their server re-issues before
 * they expire (the webhook's lives a day and is renewed at half its life), only when less than a
 * quarter of its lifetime is left as well: then the renewal is late.
 */
static void
report_validity(report_t *r, const char *check, const char *what, int64_t not_before, int64_t not_after, int rotated)
{
    char t[40], span[40];
    int64_t now = (int64_t)time(NULL);
    int64_t warn_s = EXPIRY_WARN_S;
    if (rotated && not_after > not_before && (not_after - not_before) / 4 < warn_s)
        warn_s = (not_after - not_before) / 4;
    if (not_before > now)
        report(r, CHECK_FAIL, check, "%s is not valid yet (from %s: is the clock right?)", what,
               format_time(not_before, t, sizeof(t)));
    else if (not_after <= now)
        report(r, CHECK_FAIL, check, "%s expired on %s", what, format_time(not_after, t, sizeof(t)));
    else if (not_after - now < warn_s)
        report(r, CHECK_WARN, check, "%s expires in %s, on %s: rotate it", what, format_span(not_after - now, span, sizeof(span)),
               format_time(not_after, t, sizeof(t)));
    else
        report(r, CHECK_OK, check, "%s is valid until %s (%s)", what, format_time(not_after, t, sizeof(t)),
               format_span(not_after - now, span, sizeof(span)));
}

static int64_t
asn1_time_to_unix(const ASN1_TIME *a)
{
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    if (ASN1_TIME_to_tm(a, &tm) != 1)
        return 0;
    return (int64_t)timegm(&tm);
}

static void
cert_subject(X509 *x, char *buf, size_t bufsz)
{
    X509_NAME_oneline(X509_get_subject_name(x), buf, (int)bufsz);
}

/* The certificates of a PEM bundle; *n set. NULL-free array, caller frees each and the array. */
static X509 **
parse_pem_bundle(const char *pem, size_t len, size_t *n)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    X509 **out = NULL;
    *n = 0;
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        out = rm_realloc(out, (*n + 1) * sizeof(*out));
        out[(*n)++] = x;
    }
    ERR_clear_error(); /* the end of the bundle reads as an error */
    BIO_free(bio);
    return out;
}

static void
free_certs(X509 **certs, size_t n)
{
    for (size_t i = 0; i != n; ++i)
        X509_free(certs[i]);
    free(certs);
}

static X509_STORE *
store_of(X509 **certs, size_t n)
{
    X509_STORE *store = X509_STORE_new();
    for (size_t i = 0; i != n; ++i)
        X509_STORE_add_cert(store, certs[i]);
    /* an intermediate the user made an anchor is an anchor (as Kubernetes treats a caBundle) */
    X509_STORE_set_flags(store, X509_V_FLAG_PARTIAL_CHAIN);
    return store;
}

/* The trust anchors and the issuer, from GetTrustBundle and IdentityStatus. Returns the bundle PEM (malloc'ed) or NULL. */
static char *
check_ca(report_t *r, rm_rpc_client_t *client)
{
    r->group = "certificate authority";
    ProtobufCMessage *m;
    rm_rpc_status_t st;
    Remora__V1__GetTrustBundleRequest breq = REMORA__V1__GET_TRUST_BUNDLE_REQUEST__INIT;
    if (rm_rpc_unary(client, "/remora.v1.Identity/GetTrustBundle", &breq.base, &remora__v1__get_trust_bundle_response__descriptor,
                     RPC_TIMEOUT_MS, &m, &st) != 0) {
        report(r, CHECK_FAIL, "trust-anchor", "the trust bundle could not be read: %s: %s", rm_rpc_status_name(st.code),
               st.message);
        return NULL;
    }
    Remora__V1__GetTrustBundleResponse *bundle = (Remora__V1__GetTrustBundleResponse *)m;
    char *bundle_pem = rm_strdup(bundle->trust_bundle_pem);
    size_t num_anchors;
    X509 **anchors = parse_pem_bundle(bundle_pem, strlen(bundle_pem), &num_anchors);
    if (num_anchors == 0)
        report(r, CHECK_FAIL, "trust-anchor", "the trust bundle of trust domain %s holds no certificate", bundle->trust_domain);
    for (size_t i = 0; i != num_anchors; ++i) {
        char subj[256], what[400];
        cert_subject(anchors[i], subj, sizeof(subj));
        snprintf(what, sizeof(what), "trust anchor %s", subj);
        if (X509_check_ca(anchors[i]) == 0)
            report(r, CHECK_FAIL, "trust-anchor", "%s is not a CA certificate", what);
        else
            report_validity(r, "trust-anchor", what, asn1_time_to_unix(X509_get0_notBefore(anchors[i])),
                            asn1_time_to_unix(X509_get0_notAfter(anchors[i])), 0);
    }
    protobuf_c_message_free_unpacked(m, NULL);

    Remora__V1__IdentityStatusRequest ireq = REMORA__V1__IDENTITY_STATUS_REQUEST__INIT;
    if (rm_rpc_unary(client, "/remora.v1.Admin/IdentityStatus", &ireq.base, &remora__v1__identity_status_response__descriptor,
                     RPC_TIMEOUT_MS, &m, &st) != 0) {
        report(r, CHECK_FAIL, "issuer", "the issuer could not be read: %s: %s", rm_rpc_status_name(st.code), st.message);
        free_certs(anchors, num_anchors);
        return bundle_pem;
    }
    Remora__V1__IdentityStatusResponse *id = (Remora__V1__IdentityStatusResponse *)m;
    char what[400];
    snprintf(what, sizeof(what), "issuer %s", id->issuer_subject);
    if (id->issuer_der.len != 0) {
        const unsigned char *p = id->issuer_der.data;
        X509 *issuer = d2i_X509(NULL, &p, (long)id->issuer_der.len);
        if (issuer == NULL) {
            report(r, CHECK_FAIL, "issuer", "%s: the certificate the control plane sent does not parse", what);
        } else {
            X509_STORE *store = store_of(anchors, num_anchors);
            X509_STORE_CTX *ctx = X509_STORE_CTX_new();
            X509_STORE_CTX_init(ctx, store, issuer, NULL);
            /* validity is reported on its own line, with the dates */
            X509_VERIFY_PARAM_set_flags(X509_STORE_CTX_get0_param(ctx), X509_V_FLAG_NO_CHECK_TIME);
            if (X509_verify_cert(ctx) != 1)
                report(r, CHECK_FAIL, "issuer-chain", "%s does not chain to the trust bundle: %s", what,
                       X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
            else if (X509_check_ca(issuer) == 0)
                report(r, CHECK_FAIL, "issuer-chain", "%s is not a CA certificate", what);
            else
                report(r, CHECK_OK, "issuer-chain", "%s chains to the trust bundle", what);
            X509_STORE_CTX_free(ctx);
            X509_STORE_free(store);
            report_validity(r, "issuer", what, asn1_time_to_unix(X509_get0_notBefore(issuer)),
                            asn1_time_to_unix(X509_get0_notAfter(issuer)), 0);
            X509_free(issuer);
        }
    } else if (id->issuer_expires != NULL) {
        /* a control plane that does not send the certificate: its notAfter only */
        report_validity(r, "issuer", what, 0, id->issuer_expires->seconds, 0);
    }
    if (id->server_cert_expires != NULL) {
        char t[40];
        int64_t now = (int64_t)time(NULL);
        if (id->server_cert_expires->seconds <= now)
            report(r, CHECK_FAIL, "serving-certificate", "the control plane's serving certificate expired on %s",
                   format_time(id->server_cert_expires->seconds, t, sizeof(t)));
        else
            report(r, CHECK_OK, "serving-certificate",
                   "the control plane's serving certificate is valid until %s (re-issued at half its lifetime)",
                   format_time(id->server_cert_expires->seconds, t, sizeof(t)));
    }
    protobuf_c_message_free_unpacked(m, NULL);
    free_certs(anchors, num_anchors);
    return bundle_pem;
}

/* A TCP connection to "HOST:PORT" / "[V6]:PORT" within `timeout_ms`; -1 with a reason. */
static int
tcp_connect(const char *addr, int timeout_ms, char *err, size_t errsz)
{
    char host[256];
    const char *colon = strrchr(addr, ':');
    if (colon == NULL || colon == addr || colon[1] == '\0') {
        snprintf(err, errsz, "not ADDR:PORT");
        return -1;
    }
    size_t hlen = (size_t)(colon - addr);
    if (addr[0] == '[' && hlen >= 2 && addr[hlen - 1] == ']') {
        ++addr;
        hlen -= 2;
    }
    if (hlen >= sizeof(host)) {
        snprintf(err, errsz, "the host name is too long");
        return -1;
    }
    memcpy(host, addr, hlen);
    host[hlen] = '\0';
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res = NULL;
    int gai = getaddrinfo(host, colon + 1, &hints, &res);
    if (gai != 0) {
        snprintf(err, errsz, "%s", gai_strerror(gai));
        return -1;
    }
    int fd = socket(res->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        snprintf(err, errsz, "socket: %s", strerror(errno));
        freeaddrinfo(res);
        return -1;
    }
    int rc = connect(fd, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    if (rc != 0 && errno == EINPROGRESS) {
        struct pollfd pfd = {.fd = fd, .events = POLLOUT};
        rc = poll(&pfd, 1, timeout_ms);
        if (rc == 0) {
            snprintf(err, errsz, "no connection within %d ms", timeout_ms);
            close(fd);
            return -1;
        }
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        errno = soerr;
        rc = soerr == 0 ? 0 : -1;
    }
    if (rc != 0) {
        snprintf(err, errsz, "%s", strerror(errno));
        close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return fd;
}

/*
 * The webhook's serving certificate, as the Kubernetes API server sees it: a TLS handshake with SNI
 * `name`, the chain verified against the trust anchors (the webhook configuration's caBundle) and the
 * name checked against the certificate's DNS SANs.
 */
static void
check_webhook(report_t *r, const char *addr, const char *name, const char *roots_pem, const char *roots_from)
{
    r->group = "injection webhook";
    char err[512], what[400];
    snprintf(what, sizeof(what), "the webhook at %s (%s)", addr, name);
    if (roots_pem == NULL) {
        report(r, CHECK_FAIL, "webhook", "%s: no trust anchor to verify it with (give --ca FILE)", what);
        return;
    }
    size_t num_roots;
    X509 **roots = parse_pem_bundle(roots_pem, strlen(roots_pem), &num_roots);
    if (num_roots == 0) {
        report(r, CHECK_FAIL, "webhook", "%s: no certificate in %s to verify it with", what, roots_from);
        free(roots);
        return;
    }
    int fd = tcp_connect(addr, WEBHOOK_TIMEOUT_MS, err, sizeof(err));
    if (fd < 0) {
        report(r, CHECK_FAIL, "webhook", "%s cannot be reached: %s", what, err);
        free_certs(roots, num_roots);
        return;
    }
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_cert_store(ctx, store_of(roots, num_roots));
    /* the handshake completes whatever the certificate; the verification's result is read after it, so it can be named */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
    SSL *ssl = SSL_new(ctx);
    SSL_set_tlsext_host_name(ssl, name);
    SSL_set1_host(ssl, name);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) {
        unsigned long e = ERR_get_error();
        report(r, CHECK_FAIL, "webhook", "%s: the TLS handshake failed: %s", what,
               e != 0 ? ERR_reason_error_string(e) : "the connection was closed");
    } else {
        X509 *peer = SSL_get1_peer_certificate(ssl);
        long v = SSL_get_verify_result(ssl);
        if (peer == NULL) {
            report(r, CHECK_FAIL, "webhook", "%s sent no certificate", what);
        } else if (v != X509_V_OK && v != X509_V_ERR_CERT_HAS_EXPIRED && v != X509_V_ERR_CERT_NOT_YET_VALID) {
            report(r, CHECK_FAIL, "webhook", "%s: its certificate is refused against %s: %s", what, roots_from,
                   X509_verify_cert_error_string(v));
        } else {
            if (v == X509_V_OK)
                report(r, CHECK_OK, "webhook-chain", "%s: its certificate chains to %s and names %s", what, roots_from, name);
            report_validity(r, "webhook", "its certificate", asn1_time_to_unix(X509_get0_notBefore(peer)),
                            asn1_time_to_unix(X509_get0_notAfter(peer)), 1);
        }
        X509_free(peer);
        SSL_shutdown(ssl);
    }
    ERR_clear_error();
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    free_certs(roots, num_roots);
}

/*
 * The webhook's address as the control plane bound it ("0.0.0.0:15017"): a wildcard host is reached
 * at the host remoractl reaches the control plane at (`control`, "127.0.0.1:15010"), else loopback.
 */
static const char *
reachable_address(const char *bound, const char *control, char *buf, size_t bufsz)
{
    const char *colon = strrchr(bound, ':');
    if (colon == NULL)
        return bound;
    size_t hlen = (size_t)(colon - bound);
    int wildcard = (hlen == 7 && memcmp(bound, "0.0.0.0", 7) == 0) || (hlen == 4 && memcmp(bound, "[::]", 4) == 0) ||
                   (hlen == 2 && memcmp(bound, "::", 2) == 0);
    if (!wildcard)
        return bound;
    const char *ccolon = strrchr(control, ':');
    if (ccolon == NULL || strchr(control, '/') != NULL || strncmp(control, "unix:", 5) == 0)
        snprintf(buf, bufsz, "127.0.0.1%s", colon);
    else
        snprintf(buf, bufsz, "%.*s%s", (int)(ccolon - control), control, colon);
    return buf;
}

/*
 * The agent refused the current version and serves another. Compared for equality only: with
 * --kubernetes versions are content hashes, without an order remoractl could see.
 */
static int
agent_refused(const Remora__V1__AgentStatus *a, uint64_t current)
{
    return a->nack_version == current && a->applied_version != current;
}

static Remora__V1__StatusResponse *
get_status(rm_rpc_client_t *client, rm_rpc_status_t *st)
{
    Remora__V1__StatusRequest req = REMORA__V1__STATUS_REQUEST__INIT;
    ProtobufCMessage *m;
    if (rm_rpc_unary(client, "/remora.v1.Admin/Status", &req.base, &remora__v1__status_response__descriptor, RPC_TIMEOUT_MS, &m,
                     st) != 0)
        return NULL;
    return (Remora__V1__StatusResponse *)m;
}

static void
check_agents(report_t *r, rm_rpc_client_t *client, Remora__V1__StatusResponse *status, int64_t wait_ms)
{
    r->group = "agents";
    rm_rpc_status_t st;
    size_t behind = 0;
    for (size_t i = 0; i != status->n_agents; ++i) {
        const Remora__V1__AgentStatus *a = status->agents[i];
        behind += a->connected && !agent_refused(a, status->version) && a->applied_version != status->version;
    }
    if (behind != 0 && wait_ms > 0) {
        /* a push may be on its way: give the agents --wait to catch up before calling them stale */
        Remora__V1__WaitForVersionRequest wreq = REMORA__V1__WAIT_FOR_VERSION_REQUEST__INIT;
        Remora__V1__Duration d = REMORA__V1__DURATION__INIT;
        d.seconds = wait_ms / 1000;
        d.nanos = (int32_t)(wait_ms % 1000) * 1000000;
        wreq.version = status->version;
        wreq.timeout = &d;
        ProtobufCMessage *m;
        if (rm_rpc_unary(client, "/remora.v1.Admin/WaitForVersion", &wreq.base, &remora__v1__wait_for_version_response__descriptor,
                         wait_ms + RPC_TIMEOUT_MS, &m, &st) == 0)
            protobuf_c_message_free_unpacked(m, NULL);
        Remora__V1__StatusResponse *again = get_status(client, &st);
        if (again != NULL) {
            remora__v1__status_response__free_unpacked(status, NULL);
            status = again;
        }
    }
    size_t good = 0, lines = 0, bad = 0;
    char t[40];
    for (size_t i = 0; i != status->n_agents; ++i) {
        const Remora__V1__AgentStatus *a = status->agents[i];
        char msg[1200];
        if (!a->connected)
            snprintf(msg, sizeof(msg), "agent %s is not connected (last seen %s, at version %" PRIu64 ")", a->node_id,
                     a->last_seen != NULL ? format_time(a->last_seen->seconds, t, sizeof(t)) : "never", a->applied_version);
        else if (agent_refused(a, status->version))
            snprintf(msg, sizeof(msg), "agent %s refused version %" PRIu64 " and serves version %" PRIu64 ": %.900s", a->node_id,
                     a->nack_version, a->applied_version, a->nack_reason);
        else if (a->applied_version != status->version && (a->nack_version == 0 || a->nack_version == a->applied_version))
            snprintf(msg, sizeof(msg), "agent %s is stale: it serves version %" PRIu64 ", the current is %" PRIu64, a->node_id,
                     a->applied_version, status->version);
        else if (a->applied_version != status->version)
            snprintf(msg, sizeof(msg),
                     "agent %s is stale: it serves version %" PRIu64 ", the current is %" PRIu64
                     " (its last refusal: version %" PRIu64 ": %.700s)",
                     a->node_id, a->applied_version, status->version, a->nack_version, a->nack_reason);
        else {
            ++good;
            continue;
        }
        ++bad;
        if (lines++ < MAX_AGENT_LINES)
            report(r, CHECK_FAIL, "agent", "%s", msg);
    }
    if (lines > MAX_AGENT_LINES)
        report(r, CHECK_FAIL, "agent", "... and %zu more agents not connected or not current (remoractl status lists them)",
               lines - MAX_AGENT_LINES);
    if (status->n_agents == 0)
        report(r, CHECK_OK, "agents", "no agent has connected to the control plane yet");
    else if (bad == 0)
        report(r, CHECK_OK, "agents", "%s %zu agent%s connected and at the current version %" PRIu64, good == 1 ? "the" : "all",
               good, good == 1 ? "" : "s", status->version);
    else if (good != 0)
        report(r, CHECK_OK, "agents", "%zu other agent%s connected and at the current version %" PRIu64, good, good == 1 ? "" : "s",
               status->version);
    remora__v1__status_response__free_unpacked(status, NULL);
}

int
rm_ctl_check(int argc, char **argv, const rm_ctl_env_t *env)
{
    static const struct option opts[] = {{"webhook", required_argument, NULL, 'W'},
                                         {"webhook-name", required_argument, NULL, 'N'},
                                         {"wait", required_argument, NULL, 'w'},
                                         {"output", required_argument, NULL, 'o'},
                                         {"control", required_argument, NULL, 'c'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *webhook = NULL, *webhook_name = NULL;
    int64_t wait_ms = CHECK_DEFAULT_WAIT_MS;
    report_t r = {0};
    int c;
    while ((c = getopt_long(argc, argv, "o:c:h", opts, NULL)) != -1) {
        switch (c) {
        case 'W':
            webhook = optarg;
            if (strrchr(webhook, ':') == NULL)
                rm_ctl_die(EXIT_USAGE, "--webhook takes ADDR:PORT (e.g. 127.0.0.1:15017); got '%s'", optarg);
            break;
        case 'N':
            webhook_name = optarg;
            if (webhook_name[0] == '\0')
                rm_ctl_die(EXIT_USAGE, "--webhook-name takes a DNS name");
            break;
        case 'w':
            wait_ms = rm_ctl_parse_duration_ms(optarg);
            if (wait_ms < 0 || wait_ms > 60000)
                rm_ctl_die(EXIT_USAGE, "--wait takes a duration from 0s to 60s (e.g. 5s); got '%s'", optarg);
            break;
        case 'o':
            if (strcmp(optarg, "json") == 0)
                r.json = 1;
            else if (strcmp(optarg, "text") != 0)
                rm_ctl_die(EXIT_USAGE, "-o takes text or json; got '%s'", optarg);
            break;
        case 'c':
            *env->control_addr = optarg;
            break;
        case 'h':
            fputs(rm_ctl_check_help, stdout);
            return 0;
        default:
            fputs("Try 'remoractl check --help'.\n", stderr);
            return EXIT_USAGE;
        }
    }
    if (optind != argc)
        rm_ctl_die(EXIT_USAGE, "check takes no arguments; unexpected '%s'", argv[optind]);
    if (r.json)
        r.list = rm_node_list();

    rm_rpc_client_t *client = env->connect();
    r.group = "control plane";
    rm_rpc_status_t st;
    Remora__V1__StatusResponse *status = get_status(client, &st);
    const char *addr = *env->control_addr;
    if (status == NULL) {
        const char *m = st.message;
        if (st.code == GRPC_STATUS_UNAUTHENTICATED || st.code == GRPC_STATUS_PERMISSION_DENIED)
            report(&r, CHECK_FAIL, "control-plane", "the control plane at %s refused the admin credential (%s): %s", addr,
                   rm_rpc_status_name(st.code), m);
        else if (st.code == GRPC_STATUS_UNAVAILABLE && !env->insecure &&
                 (strcasestr(m, "handshake") != NULL || strcasestr(m, "ssl") != NULL || strcasestr(m, "certificate") != NULL ||
                  strcasestr(m, "tls") != NULL))
            report(
                &r, CHECK_FAIL, "control-plane",
                "the control plane at %s cannot be verified: the TLS handshake failed (its certificate does not chain to --ca %s)",
                addr, env->ca_file);
        else
            report(&r, CHECK_FAIL, "control-plane", "the control plane at %s does not answer: %s: %s", addr,
                   rm_rpc_status_name(st.code), m);
    } else if (env->insecure) {
        report(
            &r, CHECK_WARN, "control-plane",
            "the control plane at %s answers in plaintext, without authentication (--insecure: development only); version %" PRIu64,
            addr, status->version);
    } else {
        report(&r, CHECK_OK, "control-plane",
               "the control plane at %s answers over TLS verified against %s and accepts the admin credential; version %" PRIu64
               ", %zu agent%s known",
               addr, env->ca_file, status->version, status->n_agents, status->n_agents == 1 ? "" : "s");
    }

    char *bundle_pem = NULL;
    if (status != NULL)
        bundle_pem = check_ca(&r, client);

    /* without --webhook, the webhook the control plane says it serves (remora-control --webhook-listen) */
    char reported[320];
    if (webhook == NULL && status != NULL && status->webhook_address[0] != '\0') {
        webhook = reachable_address(status->webhook_address, addr, reported, sizeof(reported));
        if (webhook_name == NULL && status->n_webhook_dns != 0)
            webhook_name = status->webhook_dns[0];
    }
    if (webhook_name == NULL)
        webhook_name = DEFAULT_WEBHOOK_NAME;
    if (webhook != NULL) {
        /* the webhook's caBundle is the mesh trust anchor: what remoractl trusts (--ca), else the control plane's bundle */
        char *roots = NULL, why[512];
        const char *from = "the trust bundle";
        if (env->ca_file != NULL) {
            roots = rm_read_file(env->ca_file, 1 << 20, why, sizeof(why));
            from = env->ca_file;
        }
        check_webhook(&r, webhook, webhook_name, roots != NULL ? roots : bundle_pem, roots != NULL ? from : "the trust bundle");
        free(roots);
    } else {
        r.group = "injection webhook";
        report(&r, CHECK_SKIP, "webhook",
               "not checked: the control plane serves none (remora-control --webhook-listen); give --webhook ADDR:PORT");
    }

    if (status != NULL)
        check_agents(&r, client, status, wait_ms);
    else {
        r.group = "agents";
        report(&r, CHECK_SKIP, "agents", "not checked: the control plane did not answer");
    }
    free(bundle_pem);
    rm_rpc_client_destroy(client);

    int failed = r.counts[CHECK_FAIL] != 0;
    if (r.json) {
        rm_node_t *root = rm_node_map();
        rm_node_add(root, "ok", rm_node_bool(!failed));
        rm_node_add(root, "failed", rm_node_number((int64_t)r.counts[CHECK_FAIL]));
        rm_node_add(root, "warnings", rm_node_number((int64_t)r.counts[CHECK_WARN]));
        rm_node_add(root, "checks", r.list);
        rm_rpc_buf_t out = {0};
        rm_render_json(root, &out);
        fwrite(out.base, 1, out.len, stdout);
        rm_rpc_buf_dispose(&out);
        rm_node_free(root);
    } else {
        printf("\n%s: %zu ok, %zu warning%s, %zu failed\n", failed ? "Some checks failed" : "All checks passed", r.counts[CHECK_OK],
               r.counts[CHECK_WARN], r.counts[CHECK_WARN] == 1 ? "" : "s", r.counts[CHECK_FAIL]);
    }
    fflush(stdout);
    return failed ? EXIT_REFUSED : 0;
}
