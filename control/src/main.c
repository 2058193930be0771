/*
 * remora-control: the control plane. Stores policy documents in an embedded durable store and
 * streams versioned snapshots to every agent (docs/control-plane.md).
 *
 * The main thread only parses flags and waits for a signal; the server runs on its own thread.
 */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "remora/log.h"
#include "remora/rpc.h"
#include "remora/strutil.h"
#include "server.h"
#include "store.h"

#define LOG "control"
#define DEFAULT_LISTEN "127.0.0.1:15010"

static void
usage(FILE *out)
{
    fprintf(out, "Usage: remora-control --state-dir DIR [--listen ADDR:PORT] [--log-level LEVEL]\n"
                 "\n"
                 "The Remora control plane: stores Services, HTTPRoutes and GRPCRoutes applied with\n"
                 "`remoractl apply`, and streams every accepted version to the agents.\n"
                 "\n"
                 "  --listen ADDR:PORT   gRPC address for agents and remoractl (default " DEFAULT_LISTEN ");\n"
                 "                       ADDR is an IP literal ([::1] for IPv6), port 0 picks a free port\n"
                 "  --state-dir DIR      where the store lives (created if missing; one control plane per DIR)\n"
                 "  --log-level LEVEL    error, warn, info (default) or debug\n"
                 "  -h, --help           this text\n"
                 "\n"
                 "SIGTERM or SIGINT stops it; agents keep serving their last snapshot meanwhile.\n");
}

int
main(int argc, char **argv)
{
    static const struct option opts[] = {{"listen", required_argument, NULL, 'l'},
                                         {"state-dir", required_argument, NULL, 's'},
                                         {"log-level", required_argument, NULL, 'L'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *listen = DEFAULT_LISTEN, *state_dir = NULL;
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

    /* gRPC's threads inherit this mask, so the signals reach sigwait() below and nothing else */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    char err[512];
    rm_store_t *store = rm_store_open(state_dir, err, sizeof(err));
    if (store == NULL) {
        rm_log_error(LOG, "%s", err);
        return 1;
    }
    rm_rpc_init();
    rm_control_server_t *server = rm_control_server_start(listen, store, err, sizeof(err));
    if (server == NULL) {
        rm_log_error(LOG, "%s", err);
        rm_store_close(store);
        rm_rpc_shutdown();
        return 1;
    }
    rm_log_info(LOG, "listening on %s (port %d), state in %s at version %llu", listen, rm_control_server_port(server), state_dir,
                (unsigned long long)rm_store_version(store));

    int sig = 0;
    sigwait(&sigs, &sig);
    rm_log_info(LOG, "%s: stopping", sig == SIGINT ? "SIGINT" : "SIGTERM");
    rm_control_server_destroy(server);
    rm_store_close(store);
    rm_rpc_shutdown();
    rm_log_info(LOG, "stopped");
    return 0;
}
