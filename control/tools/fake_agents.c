/*
 * remora-fake-agents: N agents' discovery streams in one process, for scale tests of the control
 * plane until real agents hold them. Each agent is a thread with its own channel (and TCP connection)
 * built on the rpc glue the agent's control client uses: Hello, then an ACK (or a NACK, or nothing)
 * for every snapshot.
 *
 * stdout, one line per event: "ready N" once every agent holds its first snapshot, then
 * "<node> <version> <ack|nack|ignore> <full|delta> <bytes> <resources> <digest>" per snapshot: how it
 * came, its encoded size, and the agent's resource set after it (count, and an order-independent
 * 16-hex-digit digest of every resource's kind, namespace, name and encoding: equal sets, equal
 * digests). SIGTERM or SIGINT ends it (exit 0).
 *
 * --incremental sets Hello.accepts_incremental: each agent then merges incremental snapshots into its
 * own resource set (the sets are shared between agents at the same version, built once per version; every
 * agent checks the digest it computes from its base and the delta against it) and ACKs, or NACKs a delta
 * whose base is not its version (as remora-agent does). Without it, agents are the older kind that
 * receives only full snapshots (and NACK an incremental one: "does not accept incremental snapshots").
 *
 * --reconnect: an agent whose stream ends opens a new one 200 ms later (until SIGTERM), and says in its
 * Hello the version and Snapshot.store_id of the set it holds, as remora-agent does; without it the agent
 * stops there.
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
#include <time.h>
#include <openssl/crypto.h>
#include "remora/rpc.h"
#include "remora/strutil.h"
#include "remora/v1/discovery.pb-c.h"

/* A resource set: (key, value) pairs sorted by key; key: hash of (kind, namespace, name), value: of the encoding too. */
typedef struct st_item_t {
    uint64_t key, value;
} item_t;

typedef struct st_view_t {
    uint64_t version, digest;
    item_t *items;
    size_t size;
    int refs;
    struct st_view_t *next;
} view_t;

typedef struct st_agent_t {
    pthread_t thread;
    char node_id[64];
    rm_rpc_client_t *client;
    view_t *view;
    /* the Snapshot.store_id of the set it holds (sent back in the Hello when it reconnects) */
    uint8_t store_id[16];
    size_t store_id_len;
} agent_t;

static const char *control = "127.0.0.1:15010", *nack_reason = NULL;
static int silent, incremental, reconnect;
/* the resource sets in use, one per version (shared by the agents at that version) */
static pthread_mutex_t views_mutex = PTHREAD_MUTEX_INITIALIZER;
static view_t *views;
static atomic_int stopping, num_ready;
static int count = 10;
static pthread_mutex_t out_mutex = PTHREAD_MUTEX_INITIALIZER;

static uint64_t
fnv(uint64_t h, const void *p, size_t len)
{
    const uint8_t *b = p;
    for (size_t i = 0; i != len; ++i)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t
key_of(uint32_t field, const char *ns, const char *name)
{
    uint64_t h = fnv(0xcbf29ce484222325ull, &field, sizeof(field));
    h = fnv(h, ns, strlen(ns) + 1);
    return fnv(h, name, strlen(name) + 1);
}

static int
cmp_item(const void *a, const void *b)
{
    uint64_t x = ((const item_t *)a)->key, y = ((const item_t *)b)->key;
    return x < y ? -1 : x > y;
}

static const item_t *
find_item(const view_t *v, uint64_t key)
{
    item_t k = {key, 0};
    return v != NULL && v->size != 0 ? bsearch(&k, v->items, v->size, sizeof(item_t), cmp_item) : NULL;
}

/* The snapshot fields that hold resources, and the ResourceKind (meta.proto) each stands for. */
static const struct {
    const char *field;
    int kind;
} kinds[] = {{"services", 1},
             {"http_routes", 2},
             {"grpc_routes", 3},
             {"fault_injections", 4},
             {"backend_traffic_policies", 5},
             {"rate_limit_policies", 6},
             {"telemetries", 7},
             {"mesh_tls", 8},
             {"authorization_policies", 9}};
#define NUM_KINDS (sizeof(kinds) / sizeof(kinds[0]))

/* Calls fn for every resource of `snap`: its kind, (key, value). */
static void
foreach_resource(const Remora__V1__Snapshot *snap, void (*fn)(void *ctx, item_t it), void *ctx)
{
    for (size_t k = 0; k != NUM_KINDS; ++k) {
        const ProtobufCFieldDescriptor *f =
            protobuf_c_message_descriptor_get_field_by_name(&remora__v1__snapshot__descriptor, kinds[k].field);
        size_t n = *(const size_t *)((const char *)snap + f->quantifier_offset);
        ProtobufCMessage *const *msgs = *(ProtobufCMessage *const *const *)((const char *)snap + f->offset);
        for (size_t i = 0; i != n; ++i) {
            const ProtobufCFieldDescriptor *mf = protobuf_c_message_descriptor_get_field_by_name(msgs[i]->descriptor, "metadata");
            const Remora__V1__ObjectMeta *meta = *(const Remora__V1__ObjectMeta *const *)((const char *)msgs[i] + mf->offset);
            size_t len = protobuf_c_message_get_packed_size(msgs[i]);
            uint8_t stackbuf[4096], *buf = len <= sizeof(stackbuf) ? stackbuf : rm_malloc(len);
            protobuf_c_message_pack(msgs[i], buf);
            uint64_t key = key_of((uint32_t)kinds[k].kind, meta != NULL ? meta->namespace_ : "", meta != NULL ? meta->name : "");
            fn(ctx, (item_t){key, fnv(key, buf, len)});
            if (buf != stackbuf)
                free(buf);
        }
    }
}

typedef struct st_collect_t {
    item_t *items;
    size_t size, capacity;
} collect_t;

static void
collect(void *ctx, item_t it)
{
    collect_t *c = ctx;
    if (c->size == c->capacity) {
        c->capacity = c->capacity == 0 ? 256 : c->capacity * 2;
        c->items = rm_realloc(c->items, c->capacity * sizeof(item_t));
    }
    c->items[c->size++] = it;
}

static void
view_unref(view_t *v)
{
    if (v == NULL)
        return;
    pthread_mutex_lock(&views_mutex);
    if (--v->refs == 0) {
        for (view_t **p = &views; *p != NULL; p = &(*p)->next)
            if (*p == v) {
                *p = v->next;
                break;
            }
        free(v->items);
        free(v);
    }
    pthread_mutex_unlock(&views_mutex);
}

/* Finds the set of `version` (a new reference), or publishes `fresh` as it (taking `fresh`). Under views_mutex. */
static view_t *
view_publish(uint64_t version, view_t *fresh)
{
    for (view_t *v = views; v != NULL; v = v->next)
        if (v->version == version) {
            ++v->refs;
            if (fresh != NULL) {
                free(fresh->items);
                free(fresh);
            }
            return v;
        }
    if (fresh == NULL)
        return NULL;
    fresh->refs = 1;
    fresh->next = views;
    views = fresh;
    return fresh;
}

static view_t *
view_from_items(uint64_t version, collect_t *c)
{
    if (c->size > 1)
        qsort(c->items, c->size, sizeof(item_t), cmp_item);
    view_t *v = rm_calloc(1, sizeof(*v));
    v->version = version;
    v->items = c->items;
    v->size = c->size;
    for (size_t i = 0; i != c->size; ++i)
        v->digest += c->items[i].value;
    return v;
}

/* A full snapshot: the agent's set becomes the one of its version (built here unless another agent did). */
static void
take_full(agent_t *a, const Remora__V1__Snapshot *snap)
{
    pthread_mutex_lock(&views_mutex);
    view_t *v = view_publish(snap->version, NULL);
    pthread_mutex_unlock(&views_mutex);
    if (v == NULL) {
        collect_t c = {0};
        foreach_resource(snap, collect, &c);
        view_t *fresh = view_from_items(snap->version, &c);
        pthread_mutex_lock(&views_mutex);
        v = view_publish(snap->version, fresh);
        pthread_mutex_unlock(&views_mutex);
    }
    view_unref(a->view);
    a->view = v;
}

typedef struct st_delta_acc_t {
    const view_t *base;
    uint64_t digest;
    collect_t changed;
} delta_acc_t;

static void
apply_changed(void *ctx, item_t it)
{
    delta_acc_t *d = ctx;
    const item_t *old = find_item(d->base, it.key);
    d->digest += it.value - (old != NULL ? old->value : 0);
    collect(&d->changed, it);
}

/* Merges a delta into the agent's set. Returns NULL, or why it is refused. */
static const char *
take_delta(agent_t *a, const Remora__V1__Snapshot *snap, char *why, size_t whysz)
{
    if (a->view == NULL || a->view->version != snap->base_version) {
        snprintf(why, whysz, "incremental snapshot %llu applies on version %llu, but version %llu is in service",
                 (unsigned long long)snap->version, (unsigned long long)snap->base_version,
                 (unsigned long long)(a->view != NULL ? a->view->version : 0));
        return why;
    }
    delta_acc_t d = {.base = a->view, .digest = a->view->digest};
    foreach_resource(snap, apply_changed, &d);
    uint64_t *gone = rm_calloc(snap->n_removed + 1, sizeof(gone[0]));
    for (size_t i = 0; i != snap->n_removed; ++i) {
        gone[i] = key_of((uint32_t)snap->removed[i]->kind, snap->removed[i]->namespace_, snap->removed[i]->name);
        const item_t *old = find_item(a->view, gone[i]);
        if (old != NULL)
            d.digest -= old->value;
    }
    pthread_mutex_lock(&views_mutex);
    view_t *v = view_publish(snap->version, NULL);
    pthread_mutex_unlock(&views_mutex);
    if (v == NULL) {
        /* the first agent at this version builds its set: the base's, changed, without the removed */
        collect_t c = {0};
        item_t *gone_items = rm_calloc(snap->n_removed + 1, sizeof(gone_items[0]));
        for (size_t j = 0; j != snap->n_removed; ++j)
            gone_items[j].key = gone[j];
        view_t removed = {.items = gone_items, .size = snap->n_removed},
               changed = {.items = d.changed.items, .size = d.changed.size};
        if (removed.size > 1)
            qsort(gone_items, removed.size, sizeof(item_t), cmp_item);
        if (changed.size > 1)
            qsort(changed.items, changed.size, sizeof(item_t), cmp_item);
        for (size_t i = 0; i != a->view->size; ++i) {
            const item_t *it = &a->view->items[i];
            if (find_item(&removed, it->key) == NULL && find_item(&changed, it->key) == NULL)
                collect(&c, *it);
        }
        free(gone_items);
        for (size_t j = 0; j != d.changed.size; ++j)
            collect(&c, d.changed.items[j]);
        view_t *fresh = view_from_items(snap->version, &c);
        pthread_mutex_lock(&views_mutex);
        v = view_publish(snap->version, fresh);
        pthread_mutex_unlock(&views_mutex);
    }
    free(gone);
    free(d.changed.items);
    if (v->digest != d.digest) {
        snprintf(why, whysz, "incremental snapshot %llu on %llu gives digest %016llx, the set of that version has %016llx",
                 (unsigned long long)snap->version, (unsigned long long)snap->base_version, (unsigned long long)d.digest,
                 (unsigned long long)v->digest);
        view_unref(v);
        return why;
    }
    view_unref(a->view);
    a->view = v;
    return NULL;
}

static void run_stream(agent_t *a, int *first);

static void *
run(void *arg)
{
    agent_t *a = arg;
    int first = 1;
    for (;;) {
        run_stream(a, &first);
        if (!reconnect || atomic_load(&stopping))
            break;
        for (int i = 0; i != 4 && !atomic_load(&stopping); ++i)
            nanosleep(&(struct timespec){.tv_nsec = 50 * 1000 * 1000}, NULL);
        if (atomic_load(&stopping))
            break;
    }
    view_unref(a->view);
    a->view = NULL;
    return NULL;
}

static void
run_stream(agent_t *a, int *first)
{
    rm_rpc_status_t st;
    rm_rpc_stream_t *s = rm_rpc_stream_open(a->client, "/remora.v1.Discovery/StreamSnapshots", 1);
    Remora__V1__Hello hello = REMORA__V1__HELLO__INIT;
    Remora__V1__AgentMessage m = REMORA__V1__AGENT_MESSAGE__INIT;
    hello.node_id = a->node_id;
    hello.accepts_incremental = incremental;
    if (reconnect && a->view != NULL) {
        hello.applied_version = a->view->version;
        hello.store_id.data = a->store_id;
        hello.store_id.len = a->store_id_len;
    }
    m.message_case = REMORA__V1__AGENT_MESSAGE__MESSAGE_HELLO;
    m.hello = &hello;
    /* generous: with 1000 agents and 10k Services the control plane is busy for a while sending full snapshots */
    if (rm_rpc_stream_send(s, &m.base, 120000, &st) != RM_RPC_OK) {
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
        const char *what = "ignore", *refusal = nack_reason;
        char why[300];
        size_t bytes = protobuf_c_message_get_packed_size(msg);
        if (snap->incremental && !incremental)
            refusal = "does not accept incremental snapshots";
        else if (snap->incremental && refusal == NULL)
            refusal = take_delta(a, snap, why, sizeof(why));
        else if (!snap->incremental && refusal == NULL)
            take_full(a, snap);
        if (refusal == NULL && snap->store_id.len <= sizeof(a->store_id)) {
            memcpy(a->store_id, snap->store_id.data, snap->store_id.len);
            a->store_id_len = snap->store_id.len;
        }
        if (refusal != NULL) {
            nack.version = snap->version;
            nack.nonce = snap->nonce;
            nack.reason = (char *)refusal;
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
            rm_rpc_stream_send(s, &answer.base, 120000, &st) != RM_RPC_OK) {
            fprintf(stderr, "%s: answer not sent: %s: %s\n", a->node_id, rm_rpc_status_name(st.code), st.message);
            protobuf_c_message_free_unpacked(msg, NULL);
            break;
        }
        pthread_mutex_lock(&out_mutex);
        printf("%s %llu %s %s %zu %zu %016llx\n", a->node_id, (unsigned long long)snap->version, what,
               snap->incremental ? "delta" : "full", bytes, a->view != NULL ? a->view->size : 0,
               (unsigned long long)(a->view != NULL ? a->view->digest : 0));
        fflush(stdout);
        pthread_mutex_unlock(&out_mutex);
        protobuf_c_message_free_unpacked(msg, NULL);
        if (*first) {
            *first = 0;
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
                                         {"incremental", no_argument, NULL, 'D'},   {"reconnect", no_argument, NULL, 'R'},
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
        case 'D':
            incremental = 1;
            break;
        case 'R':
            reconnect = 1;
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
                   "                          [--prefix P] [--nack REASON | --silent] [--incremental] [--reconnect]\n");
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
