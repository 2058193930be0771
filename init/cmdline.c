#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include "cmdline.h"

const char rm_init_usage[] = "usage: remora-init [options]\n"
                             "\n"
                             "Programs the pod's netfilter nat rules (IPv4 and IPv6) so that inbound TCP is redirected to the\n"
                             "agent's inbound listener and outbound TCP to its outbound listener, in one atomic\n"
                             "iptables-restore --noflush batch per address family. Running it again leaves one copy.\n"
                             "Needs CAP_NET_ADMIN (except --dry-run).\n"
                             "\n"
                             "  --proxy-uid UID                  the agent's UID, never captured (default 2102)\n"
                             "  --inbound-port PORT              inbound REDIRECT target (default 15006)\n"
                             "  --outbound-port PORT             outbound REDIRECT target (default 15001)\n"
                             "  --admin-port PORT                agent admin port, not captured inbound (default 15000)\n"
                             "  --health-port PORT               agent health/metrics port, not captured inbound (default 15020)\n"
                             "  --control-port PORT              control-plane port, not captured outbound (default 15010)\n"
                             "  --exclude-inbound-ports LIST     comma-separated ports not captured inbound\n"
                             "  --exclude-outbound-ports LIST    comma-separated destination ports not captured outbound\n"
                             "  --exclude-inbound-cidrs LIST     comma-separated source prefixes not captured inbound\n"
                             "  --exclude-outbound-cidrs LIST    comma-separated destination prefixes not captured outbound\n"
                             "  --ipv4-only | --ipv6-only        program one address family only (default both)\n"
                             "  --backend nft|legacy|auto        iptables flavour (default auto: what `iptables` is)\n"
                             "  --dry-run                        print the batches instead of applying them\n"
                             "  --remove                         remove every REMORA_* chain and the jumps to them\n"
                             "  --help                           this text\n"
                             "\n"
                             "Exit status: 0 done, 1 a batch failed, 2 bad usage or CAP_NET_ADMIN missing.\n";

enum {
    OPT_PROXY_UID = 256,
    OPT_INBOUND_PORT,
    OPT_OUTBOUND_PORT,
    OPT_ADMIN_PORT,
    OPT_HEALTH_PORT,
    OPT_CONTROL_PORT,
    OPT_EXCLUDE_INBOUND_PORTS,
    OPT_EXCLUDE_OUTBOUND_PORTS,
    OPT_EXCLUDE_INBOUND_CIDRS,
    OPT_EXCLUDE_OUTBOUND_CIDRS,
    OPT_IPV4_ONLY,
    OPT_IPV6_ONLY,
    OPT_BACKEND,
    OPT_DRY_RUN,
    OPT_REMOVE,
    OPT_HELP,
};

static const struct option long_options[] = {
    {"proxy-uid", required_argument, NULL, OPT_PROXY_UID},
    {"inbound-port", required_argument, NULL, OPT_INBOUND_PORT},
    {"outbound-port", required_argument, NULL, OPT_OUTBOUND_PORT},
    {"admin-port", required_argument, NULL, OPT_ADMIN_PORT},
    {"health-port", required_argument, NULL, OPT_HEALTH_PORT},
    {"control-port", required_argument, NULL, OPT_CONTROL_PORT},
    {"exclude-inbound-ports", required_argument, NULL, OPT_EXCLUDE_INBOUND_PORTS},
    {"exclude-outbound-ports", required_argument, NULL, OPT_EXCLUDE_OUTBOUND_PORTS},
    {"exclude-inbound-cidrs", required_argument, NULL, OPT_EXCLUDE_INBOUND_CIDRS},
    {"exclude-outbound-cidrs", required_argument, NULL, OPT_EXCLUDE_OUTBOUND_CIDRS},
    {"ipv4-only", no_argument, NULL, OPT_IPV4_ONLY},
    {"ipv6-only", no_argument, NULL, OPT_IPV6_ONLY},
    {"backend", required_argument, NULL, OPT_BACKEND},
    {"dry-run", no_argument, NULL, OPT_DRY_RUN},
    {"remove", no_argument, NULL, OPT_REMOVE},
    {"help", no_argument, NULL, OPT_HELP},
    {NULL, 0, NULL, 0},
};

int
rm_init_cmdline_parse(rm_init_cmdline_t *cmd, int argc, char **argv, char *err, size_t errsz)
{
    rm_init_options_t *o = &cmd->opts;
    int v4only = 0, v6only = 0, c;

    memset(cmd, 0, sizeof(*cmd));
    rm_init_options_init(o);
    cmd->backend = RM_INIT_BACKEND_AUTO;

    opterr = 0; /* errors are reported through `err`, not on stderr */
    optind = 0; /* GNU: full re-initialisation, so that the parser can run more than once */
    while ((c = getopt_long(argc, argv, "+:h", long_options, NULL)) != -1) {
        switch (c) {
        case OPT_PROXY_UID:
            if (rm_init_parse_uid(optarg, &o->proxy_uid, err, errsz) != 0)
                return -1;
            break;
        case OPT_INBOUND_PORT:
            if (rm_init_parse_port(optarg, "--inbound-port", &o->inbound_port, err, errsz) != 0)
                return -1;
            break;
        case OPT_OUTBOUND_PORT:
            if (rm_init_parse_port(optarg, "--outbound-port", &o->outbound_port, err, errsz) != 0)
                return -1;
            break;
        case OPT_ADMIN_PORT:
            if (rm_init_parse_port(optarg, "--admin-port", &o->admin_port, err, errsz) != 0)
                return -1;
            break;
        case OPT_HEALTH_PORT:
            if (rm_init_parse_port(optarg, "--health-port", &o->health_port, err, errsz) != 0)
                return -1;
            break;
        case OPT_CONTROL_PORT:
            if (rm_init_parse_port(optarg, "--control-port", &o->control_port, err, errsz) != 0)
                return -1;
            break;
        case OPT_EXCLUDE_INBOUND_PORTS:
            if (rm_init_parse_ports(optarg, "--exclude-inbound-ports", &o->exclude_inbound_ports, err, errsz) != 0)
                return -1;
            break;
        case OPT_EXCLUDE_OUTBOUND_PORTS:
            if (rm_init_parse_ports(optarg, "--exclude-outbound-ports", &o->exclude_outbound_ports, err, errsz) != 0)
                return -1;
            break;
        case OPT_EXCLUDE_INBOUND_CIDRS:
            if (rm_init_parse_cidrs(optarg, "--exclude-inbound-cidrs", &o->exclude_inbound_cidrs, err, errsz) != 0)
                return -1;
            break;
        case OPT_EXCLUDE_OUTBOUND_CIDRS:
            if (rm_init_parse_cidrs(optarg, "--exclude-outbound-cidrs", &o->exclude_outbound_cidrs, err, errsz) != 0)
                return -1;
            break;
        case OPT_IPV4_ONLY:
            v4only = 1;
            break;
        case OPT_IPV6_ONLY:
            v6only = 1;
            break;
        case OPT_BACKEND:
            if (strcmp(optarg, "nft") == 0) {
                cmd->backend = RM_INIT_BACKEND_NFT;
            } else if (strcmp(optarg, "legacy") == 0) {
                cmd->backend = RM_INIT_BACKEND_LEGACY;
            } else if (strcmp(optarg, "auto") == 0) {
                cmd->backend = RM_INIT_BACKEND_AUTO;
            } else {
                snprintf(err, errsz, "--backend: \"%.64s\" is not one of nft, legacy, auto", optarg);
                return -1;
            }
            break;
        case OPT_DRY_RUN:
            cmd->dry_run = 1;
            break;
        case OPT_REMOVE:
            cmd->remove = 1;
            break;
        case OPT_HELP:
        case 'h':
            cmd->help = 1;
            break;
        case ':':
            snprintf(err, errsz, "%s needs a value", argv[optind - 1]);
            return -1;
        default:
            if (optopt > 0 && optopt < 128)
                snprintf(err, errsz, "unknown option -%c", optopt);
            else
                snprintf(err, errsz, "unknown option %s", argv[optind - 1]);
            return -1;
        }
    }
    if (optind < argc) {
        snprintf(err, errsz, "unexpected argument \"%.64s\"", argv[optind]);
        return -1;
    }
    if (v4only && v6only) {
        snprintf(err, errsz, "--ipv4-only and --ipv6-only exclude each other");
        return -1;
    }
    if (v4only)
        o->families = RM_INIT_IPV4;
    if (v6only)
        o->families = RM_INIT_IPV6;
    if (o->inbound_port == o->outbound_port) {
        snprintf(err, errsz, "--inbound-port and --outbound-port must differ (both %u)", o->inbound_port);
        return -1;
    }
    /* shaping options are accepted with --remove (which takes out every REMORA_* chain whatever they
     * say), so that the install command line can be reused with --remove appended */
    return 0;
}

void
rm_init_cmdline_dispose(rm_init_cmdline_t *cmd)
{
    rm_init_options_dispose(&cmd->opts);
}
