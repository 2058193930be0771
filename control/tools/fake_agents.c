/*
 * remora-fake-agents: N agents' discovery streams in one process, for scale tests of the control
 * plane until real agents hold them. Each agent is a thread with its own channel (and TCP connection)
 * built on the rpc glue the agent's control client uses: Hello, then an ACK (or a NACK, or nothing)
 * for every snapshot.
 *
 * stdout, one line per event: "ready N" once every agent holds its first snapshot, then
 * "<node> <version> <ack|nack|ignore>" per snapshot. SIGTERM or SIGINT ends it (exit 0).
 *
 * Like agents, they connect over TLS, verify the control plane against --trust-anchor and present
 * the workload token of --token (one unbound token serves every node id on discovery); --insecure
 * for a `remora-control --insecure`.
 */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/crypto.h>
#include "remora/rpc.h"
#include "remora/strutil.h"
#include "remora/v1/discovery.pb-c.h"

typedef struct st_agent_t {
    pthread_t thread;
    char node_id[64];
    rm_rpc_client_t *client;
} agent_t;

static const char *control = "127.0.0.1:15010", *nack_reason = NULL;
static int silent;
static atomic_int stopping, num_ready;
static int count = 10;
static pthread_mutex_t out_mutex = PTHREAD_MUTEX_INITIALIZER;

static void
emit(const char *node, unsigned long long version, const char *what)
{
    pthread_mutex_lock(&out_mutex);
    printf("%s %llu %s\n", node, version, what);
    fflush(stdout);
    pthread_mutex_unlock(&out_mutex);
}

static void *
run(void *arg)
{
    agent_t *a = arg;
    rm_rpc_status_t st;
    rm_rpc_stream_t *s = rm_rpc_stream_open(a->client, "/remora.v1.Discovery/StreamSnapshots", 1);
    Remora__V1__Hello hello = REMORA__V1__HELLO__INIT;
    Remora__V1__AgentMessage m = REMORA__V1__AGENT_MESSAGE__INIT;
    hello.node_id = a->node_id;
    m.message_case = REMORA__V1__AGENT_MESSAGE__MESSAGE_HELLO;
    m.hello = &hello;
    int first = 1;
    if (rm_rpc_stream_send(s, &m.base, 10000, &st) != RM_RPC_OK) {
        fprintf(stderr, "%s: Hello not sent: %s: %s\n", a->node_id, rm_rpc_status_name(st.code), st.message);
        goto out;
    }
    while (!atomic_load(&stopping)) {
        ProtobufCMessage *msg;
        rm_rpc_result_t r = rm_rpc_stream_recv(s, &remora__v1__snapshot__descriptor, 200, &msg, &st);
        if (r == RM_RPC_TIMEOUT)
            continue;
        if (r == RM_RPC_CLOSED) {
            if (!atomic_load(&stopping))
                fprintf(stderr, "%s: stream ended: %s: %s\n", a->node_id, rm_rpc_status_name(st.code), st.message);
            break;
        }
        Remora__V1__Snapshot *snap = (Remora__V1__Snapshot *)msg;
        Remora__V1__Ack ack = REMORA__V1__ACK__INIT;
        Remora__V1__Nack nack = REMORA__V1__NACK__INIT;
        Remora__V1__AgentMessage answer = REMORA__V1__AGENT_MESSAGE__INIT;
        const char *what = "ignore";
        if (nack_reason != NULL) {
            nack.version = snap->version;
            nack.nonce = snap->nonce;
            nack.reason = (char *)nack_reason;
            answer.message_case = REMORA__V1__AGENT_MESSAGE__MESSAGE_NACK;
            answer.nack = &nack;
            what = "nack";
        } else if (!silent) {
            ack.version = snap->version;
            ack.nonce = snap->nonce;
            answer.message_case = REMORA__V1__AGENT_MESSAGE__MESSAGE_ACK;
            answer.ack = &ack;
            what = "ack";
        }
        if (answer.message_case != REMORA__V1__AGENT_MESSAGE__MESSAGE__NOT_SET &&
            rm_rpc_stream_send(s, &answer.base, 10000, &st) != RM_RPC_OK) {
            fprintf(stderr, "%s: answer not sent: %s: %s\n", a->node_id, rm_rpc_status_name(st.code), st.message);
            protobuf_c_message_free_unpacked(msg, NULL);
            break;
        }
        emit(a->node_id, (unsigned long long)snap->version, what);
        protobuf_c_message_free_unpacked(msg, NULL);
        if (first) {
            first = 0;
            if (atomic_fetch_add(&num_ready, 1) + 1 == count) {
                pthread_mutex_lock(&out_mutex);
                printf("ready %d\n", count);
                fflush(stdout);
                pthread_mutex_unlock(&out_mutex);
            }
        }
    }
out:
    rm_rpc_stream_destroy(s);
    return NULL;
}

int
main(int argc, char **argv)
{
    /* no OpenSSL clean-up at exit: gRPC's threads may still be ending then, and a thread that ends after the
     * clean-up deleted OpenSSL's thread key leaks its error state (each thread frees its own as it ends) */
    OPENSSL_init_crypto(OPENSSL_INIT_NO_ATEXIT, NULL);
    static const struct option opts[] = {{"control", required_argument, NULL, 'c'}, {"trust-anchor", required_argument, NULL, 'A'},
                                         {"token", required_argument, NULL, 'T'},   {"insecure", no_argument, NULL, 'I'},
                                         {"count", required_argument, NULL, 'n'},   {"prefix", required_argument, NULL, 'p'},
                                         {"nack", required_argument, NULL, 'N'},    {"silent", no_argument, NULL, 's'},
                                         {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0}};
    const char *prefix = "fake-", *trust_anchor = NULL, *token_file = NULL;
    int c, insecure = 0;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'c':
            control = optarg;
            break;
        case 'n':
            count = atoi(optarg);
            break;
        case 'p':
            prefix = optarg;
            break;
        case 'N':
            nack_reason = optarg;
            break;
        case 's':
            silent = 1;
            break;
        case 'A':
            trust_anchor = optarg;
            break;
        case 'T':
            token_file = optarg;
            break;
        case 'I':
            insecure = 1;
            break;
        case 'h':
            printf("Usage: remora-fake-agents [--control ADDR:PORT] (--trust-anchor FILE --token FILE | --insecure) [--count N]\n"
                   "                          [--prefix P] [--nack REASON | --silent]\n");
            return 0;
        default:
            return 2;
        }
    }
    if (count < 1 || count > 1000) {
        fprintf(stderr, "remora-fake-agents: --count must be 1-1000\n");
        return 2;
    }
    char err[512];
    char *root_pem = NULL, *token = NULL;
    if (!insecure) {
        if (trust_anchor == NULL || token_file == NULL) {
            fprintf(stderr, "remora-fake-agents: --trust-anchor FILE and --token FILE are needed (or --insecure)\n");
            return 2;
        }
        if ((root_pem = rm_read_file(trust_anchor, 1 << 20, err, sizeof(err))) == NULL ||
            (token = rm_read_file(token_file, 8192, err, sizeof(err))) == NULL) {
            fprintf(stderr, "remora-fake-agents: %s\n", err);
            return 2;
        }
        token[strcspn(token, " \t\r\n")] = '\0';
    }
    rm_rpc_security_t sec = {.insecure = insecure, .root_pem = root_pem, .bearer_token = token};
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    rm_rpc_init();
    /* a private subchannel pool per channel: one TCP connection per agent, as with real agents */
    grpc_arg arg = {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, .value.integer = 1};
    grpc_channel_args args = {.num_args = 1, .args = &arg};
    agent_t *agents = rm_calloc((size_t)count, sizeof(*agents));
    for (int i = 0; i != count; ++i) {
        snprintf(agents[i].node_id, sizeof(agents[i].node_id), "%s%03d", prefix, i);
        agents[i].client = rm_rpc_client_create_secure(control, &args, &sec);
        if (pthread_create(&agents[i].thread, NULL, run, &agents[i]) != 0) {
            fprintf(stderr, "remora-fake-agents: cannot start a thread\n");
            return 1;
        }
    }
    int sig;
    sigwait(&sigs, &sig);
    atomic_store(&stopping, 1);
    for (int i = 0; i != count; ++i) {
        pthread_join(agents[i].thread, NULL);
        rm_rpc_client_destroy(agents[i].client);
    }
    free(agents);
    free(root_pem);
    free(token);
    rm_rpc_shutdown();
    return 0;
}
