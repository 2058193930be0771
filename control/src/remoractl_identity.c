/*
 * remoractl's identity commands (see remoractl_identity.h).
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "remora/v1/identity.pb-c.h"
#include "ca.h"
#include "remoractl_identity.h"
#include "remoractl_util.h"
#include "token.h"

const char rm_ctl_trust_anchor_help[] = "Usage: remoractl trust-anchor\n"
                                        "\n"
                                        "Prints the mesh's trust bundle (every trust anchor, PEM) on standard output: what\n"
                                        "workload certificates chain to.\n";

const char rm_ctl_token_help[] = "Usage: remoractl token create --namespace NS --service-account SA [--ttl 1h] [-o text|json]\n"
                                 "\n"
                                 "Creates a bootstrap token for the workload identity spiffe://<trust-domain>/ns/NS/sa/SA and\n"
                                 "prints it (text: the token alone on one line). Give it to one agent (remora-agent\n"
                                 "--identity-token FILE): its first use binds it to that agent's node id; another node presenting\n"
                                 "it is refused. The control plane stores only its SHA-256.\n"
                                 "\n"
                                 "  --namespace NS, -n NS       the namespace (a DNS-1123 label)\n"
                                 "  --service-account SA        the service account (a DNS-1123 label)\n"
                                 "  --ttl D                     time to first use: 1s to 30d, e.g. 10m, 1h (default 1h)\n"
                                 "  -o text|json                output format (default text)\n";

const char rm_ctl_identity_help[] = "Usage: remoractl identity\n"
                                    "\n"
                                    "The control plane's certificate authority: trust domain, issuer, anchors, certificate\n"
                                    "lifetime, tokens stored, certificates issued, Certify refusals by reason, the calls refused\n"
                                    "by authentication by API and status (admin_unauthenticated, admin_permission_denied,\n"
                                    "discovery_*, identity_*) and the control plane's own serving certificate.\n";

static void __attribute__((noreturn, format(printf, 2, 3))) usage_die(const char *help, const char *fmt, ...)
{
    va_list ap;
    fputs("remoractl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fputs(help, stderr);
    exit(EXIT_USAGE);
}

/*
 * For a command that takes neither options nor arguments: returns 1 after printing `help` on
 * standard output for -h / --help, 0 when there is nothing after the command; anything else is a
 * usage error ("NAME takes no arguments; unexpected 'X'", the help, EXIT_USAGE).
 */
static int
help_only(const char *name, const char *help, int argc, char **argv)
{
    if (argc > 1 && (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0)) {
        fputs(help, stdout);
        return 1;
    }
    if (argc > 1)
        usage_die(help, "%s takes no arguments; unexpected '%s'", name, argv[1]);
    return 0;
}

int
rm_ctl_trust_anchor(int argc, char **argv, rm_ctl_call_fn call)
{
    if (help_only("trust-anchor", rm_ctl_trust_anchor_help, argc, argv))
        return 0;
    Remora__V1__GetTrustBundleRequest req = REMORA__V1__GET_TRUST_BUNDLE_REQUEST__INIT;
    Remora__V1__GetTrustBundleResponse *resp = (Remora__V1__GetTrustBundleResponse *)call(
        "/remora.v1.Identity/GetTrustBundle", &req.base, &remora__v1__get_trust_bundle_response__descriptor);
    fputs(resp->trust_bundle_pem, stdout);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

static void
format_time(int64_t t, char *buf, size_t bufsz)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, bufsz, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int
rm_ctl_token(int argc, char **argv, rm_ctl_call_fn call)
{
    static const struct option opts[] = {{"namespace", required_argument, NULL, 'n'},
                                         {"service-account", required_argument, NULL, 's'},
                                         {"ttl", required_argument, NULL, 't'},
                                         {"output", required_argument, NULL, 'o'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        fputs(rm_ctl_token_help, argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    if (strcmp(argv[1], "create") != 0)
        usage_die(rm_ctl_token_help, "unknown token command '%s' (create)", argv[1]);
    const char *ns = NULL, *sa = NULL, *output = "text";
    int64_t ttl = 0;
    int c;
    optind = 0;
    while ((c = getopt_long(argc - 1, argv + 1, "n:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 'n':
            ns = optarg;
            break;
        case 's':
            sa = optarg;
            break;
        case 't':
            if (rm_ca_parse_duration(optarg, &ttl) != 0 || ttl > RM_TOKEN_MAX_TTL_S)
                usage_die(rm_ctl_token_help, "--ttl takes a duration from 1s to 30d (e.g. 10m, 1h); got '%s'", optarg);
            break;
        case 'o':
            output = optarg;
            if (strcmp(output, "text") != 0 && strcmp(output, "json") != 0)
                usage_die(rm_ctl_token_help, "-o takes text or json; got '%s'", output);
            break;
        case 'h':
            fputs(rm_ctl_token_help, stdout);
            return 0;
        default:
            fputs("Try 'remoractl token --help'.\n", stderr);
            return EXIT_USAGE;
        }
    }
    if (optind != argc - 1)
        usage_die(rm_ctl_token_help, "token create takes no arguments; unexpected '%s'", argv[optind + 1]);
    if (ns == NULL || sa == NULL)
        usage_die(rm_ctl_token_help, "token create needs --namespace and --service-account");
    if (!rm_token_valid_name(ns))
        usage_die(rm_ctl_token_help, "--namespace '%s' is not a DNS-1123 label", ns);
    if (!rm_token_valid_name(sa))
        usage_die(rm_ctl_token_help, "--service-account '%s' is not a DNS-1123 label", sa);
    Remora__V1__CreateTokenRequest req = REMORA__V1__CREATE_TOKEN_REQUEST__INIT;
    Remora__V1__Duration d = REMORA__V1__DURATION__INIT;
    req.namespace_ = (char *)ns;
    req.service_account = (char *)sa;
    if (ttl != 0) {
        d.seconds = ttl;
        req.ttl = &d;
    }
    Remora__V1__CreateTokenResponse *resp = (Remora__V1__CreateTokenResponse *)call("/remora.v1.Admin/CreateToken", &req.base,
                                                                                    &remora__v1__create_token_response__descriptor);
    char when[32];
    format_time(resp->expires != NULL ? resp->expires->seconds : 0, when, sizeof(when));
    if (strcmp(output, "json") == 0)
        printf("{\"token\": \"%s\", \"spiffeId\": \"%s\", \"expires\": \"%s\"}\n", resp->token, resp->spiffe_id, when);
    else
        printf("%s\n", resp->token);
    if (strcmp(output, "text") == 0)
        fprintf(stderr, "remoractl: token for %s; first use before %s\n", resp->spiffe_id, when);
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}

int
rm_ctl_identity(int argc, char **argv, rm_ctl_call_fn call)
{
    if (help_only("identity", rm_ctl_identity_help, argc, argv))
        return 0;
    Remora__V1__IdentityStatusRequest req = REMORA__V1__IDENTITY_STATUS_REQUEST__INIT;
    Remora__V1__IdentityStatusResponse *resp = (Remora__V1__IdentityStatusResponse *)call(
        "/remora.v1.Admin/IdentityStatus", &req.base, &remora__v1__identity_status_response__descriptor);
    char when[32];
    format_time(resp->issuer_expires != NULL ? resp->issuer_expires->seconds : 0, when, sizeof(when));
    printf("trust domain:          %s\n", resp->trust_domain);
    printf("trust anchors:         %u\n", resp->trust_anchors);
    printf("issuer:                %s (expires %s)\n", resp->issuer_subject, when);
    printf("certificate lifetime:  %" PRIu64 "s\n", resp->cert_lifetime_seconds);
    printf("tokens stored:         %u\n", resp->tokens);
    printf("certificates issued:   %" PRIu64 "\n", resp->certificates_issued);
    printf("refusals:             ");
    for (size_t i = 0; i != resp->n_refusals; ++i)
        printf(" %s=%" PRIu64, resp->refusals[i]->key, resp->refusals[i]->value);
    printf("\n");
    printf("auth refusals:        ");
    for (size_t i = 0; i != resp->n_auth_refusals; ++i)
        printf(" %s=%" PRIu64, resp->auth_refusals[i]->key, resp->auth_refusals[i]->value);
    printf("\n");
    if (resp->server_cert_expires != NULL) {
        format_time(resp->server_cert_expires->seconds, when, sizeof(when));
        printf("serving certificate:   expires %s (issued %" PRIu64 " times since start)\n", when, resp->server_cert_issued);
    } else {
        printf("serving certificate:   none (--insecure: plaintext, unauthenticated)\n");
    }
    protobuf_c_message_free_unpacked(&resp->base, NULL);
    return 0;
}
