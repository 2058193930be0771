/*
 * The control plane's gRPC server (see server.h).
 *
 * gRPC C core, completion-queue driven. Every object that waits for completions embeds one tag_t
 * per kind of operation and counts its outstanding batches; it is freed only when that count drops
 * to zero, never from inside a completion that another pending operation could still reference.
 *
 * Pushes: the store's snapshot encoding (without a nonce) is kept in one grpc_slice per version and
 * shared by every agent's byte buffer; each send appends only its own nonce field. At most one send
 * is in flight per stream; a stream that finishes a send picks up the newest version, so a slow
 * agent skips versions instead of queueing them.
 *
 * Incremental updates (docs/control-plane.md): a stream whose Hello set accepts_incremental gets a
 * delta from the version it last ACKed (rm_store_delta) instead of the whole snapshot, and only once
 * its previous push is answered, so that the base is the version it serves. The deltas of the current
 * version are encoded once per base and shared like the snapshot (srv->deltas); a delta that cannot be
 * made, or would not be smaller, is sent as the full snapshot. After a NACK the next push is full; a
 * NACKed delta is followed at once by the full snapshot of the same version.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include "remora/log.h"
#include "remora/rpc.h"
#include "remora/strutil.h"
#include "remora/v1/admin.pb-c.h"
#include "remora/v1/discovery.pb-c.h"
#include "cp_metrics.h"
#include "identity.h"
#include "server.h"
#include "kube_source.h"
#include "render.h"
#include "scope.h"
#include "stat.h"

#define LOG "control"
/* Agents that disconnected are remembered for `remoractl status`, up to this many. */
#define MAX_AGENTS 10000
#define MAX_NACK_REASON 2048
#define MAX_WAIT_MS (3600 * 1000)
#define DEFAULT_WAIT_MS 30000
/* housekeeping tick of the completion-queue loop when no waiter is due earlier */
#define TICK_MS 1000
/* --kubernetes: how often the loop looks for a new state and finished API jobs (kube_source.h) */
#define KUBE_TICK_MS 50
/* --kubernetes: versions are hashes; the last this many are remembered in the order they were served */
#define VERSION_HISTORY 64
/* Admin.Proxy (`remoractl proxy`): requests waiting per agent stream, the agent's answer's size, the wait */
#define MAX_PROXY_PER_AGENT 8
#define MAX_PROXY_BODY (4 * 1024 * 1024)
#define DEFAULT_PROXY_MS 5000
#define MAX_PROXY_MS 60000
/* incremental updates: the deltas of the current version kept, one per base version (then the oldest is replaced) */
#define DELTA_CACHE 16
/* on-demand discovery (docs/control-plane.md): names per Discover message and bytes per name (a DNS name); Services a
 * scope's discovered set holds; names a stream has asked for and not yet been answered */
#define MAX_DISCOVER_NAMES 32
#define MAX_DISCOVER_NAME_BYTES 253
#define MAX_DISCOVERED 256
#define MAX_PENDING_NAMES 1024

typedef struct st_tag_t tag_t;
struct st_tag_t {
    void (*cb)(tag_t *tag, int ok);
};

typedef struct st_agent_t agent_t;
typedef struct st_conn_t conn_t;
typedef struct st_unary_t unary_t;

struct st_agent_t {
    char *node_id;
    /* the stream that currently speaks for this node; NULL when disconnected */
    conn_t *conn;
    uint64_t applied_version, nack_version;
    char *nack_reason;
    struct timespec last_seen;
    char *peer;
    /* the Stats summaries it sent (stat.h), NULL until the first */
    rm_stat_history_t *stats;
    /* its last answer was a NACK (remora_control_agents{state="nacked"}) */
    int nacked;
    /* the last version it ACKed to this process (0: none): a Hello's applied_version is a delta's base
     * only when it is this one (or with --kubernetes), as a file store's version numbers do not name the
     * same content in another state directory */
    uint64_t acked_here;
};

/* The encoding of the delta from `base` to the current version; `full`: none smaller than the snapshot exists. */
typedef struct st_delta_t {
    uint64_t base;
    grpc_slice slice;
    int full;
    size_t changed, removed;
} delta_t;

/* A resource of a scope's view, to compare two versions' views. */
typedef struct st_member_t {
    rm_kind_t kind;
    char *ns, *name;
} member_t;

/*
 * A scope (scope.h, docs/control-plane.md "Scoping"): what the agents of one workload under one EgressPolicy
 * receive, "<namespace>/<policy>/<service account>". Its encodings, full and delta, are made once per version
 * and shared by every agent in it, as srv->snapshot and srv->deltas are by the agents outside any scope.
 */
typedef struct st_scope_t {
    char *key;
    /* the store_id its encodings carry: the first bytes of SHA-256(store id, key), so that a Hello names the
     * scope of the set the agent kept as well as the store (an agent restarted under another service account,
     * or into or out of a scope, at the same version gets its new set whole) */
    uint8_t id[RM_STORE_ID_BYTES];
    char *policy_ns, *policy_name, *sa;
    /* the version the view and encodings are of (0: not made yet) */
    uint64_t version;
    uint8_t *view[RM_KIND__ALL];
    member_t *members;
    size_t num_members;
    grpc_slice full;
    delta_t deltas[DELTA_CACHE];
    size_t num_deltas, next_delta;
    /* deltas only from bases at or after this version: the view at an older one may hold what is not in
     * the current view and not deleted, or lack what is in it and did not change since */
    uint64_t horizon;
    /* on-demand discovery: the Services its streams asked for beyond the policy's hosts (at most MAX_DISCOVERED,
     * sorted by namespace and name, never removed while the scope lives), part of the view and of the id */
    rm_scope_service_t *discovered;
    size_t num_discovered;
    /* which set the encodings are of: a new number (srv->scope_gens) when the scope is made and whenever its
     * discovered set grows, so that a stream knows its set is outdated at the same version; `grown`: the view and
     * encodings must be made again at the current version */
    uint64_t gen;
    int grown;
    /* streams in it */
    unsigned refs;
    struct st_scope_t *next;
} scope_t;

enum {
    M_APPLY,
    M_GET,
    M_DELETE,
    M_STATUS,
    M_WAIT,
    M_STAT,
    M_CREATE_TOKEN,
    M_IDENTITY_STATUS,
    M_PROXY,
    M_CERTIFY,
    M_TRUST_BUNDLE,
    M_STREAM,
    M__COUNT,
    /* any other method: answered UNIMPLEMENTED (otherwise gRPC core would hold it until its deadline) */
    M_UNKNOWN = M__COUNT
};

struct st_rm_control_server_t {
    grpc_server *server;
    grpc_completion_queue *cq;
    pthread_t thread;
    int port;
    rm_store_t *store;
    /* NULL: the identity methods answer FAILED_PRECONDITION */
    rm_identity_service_t *identity;
    void *methods[M__COUNT];
    tag_t shutdown_tag;
    atomic_int stopping;
    int shutdown_done;
    /* unary_t and conn_t objects alive, pending requests included */
    size_t live;
    agent_t **agents;
    size_t num_agents;
    conn_t *conns;
    unary_t *waiters;
    /* agents past their Hello, and of those the ones whose applied version is current_of (snapshot_version when it was
     * last counted: recounted once per new version), kept by agent_change() so that an ACK costs O(1) with no
     * waiter; all_applied_logged: the last version logged as applied by every connected agent */
    size_t num_connected, num_current;
    uint64_t current_of, all_applied_logged;
    /* Proxy calls waiting for an agent's answer (relay_*), and the last request id */
    unary_t *proxies;
    uint64_t proxy_counter;
    uint64_t nonce_counter;
    /* the snapshot of snapshot_version, shared by every push */
    grpc_slice snapshot;
    uint64_t snapshot_version;
    /* the deltas to snapshot_version made so far (DELTA_CACHE at most), and which entry to replace next */
    delta_t deltas[DELTA_CACHE];
    size_t num_deltas, next_delta;
    /* the scopes streams are in (scope_t), freed with their last stream, and the last scope_t.gen given */
    scope_t *scopes;
    uint64_t scope_gens;
    /* held by the server's thread while it changes what agent_counts() reads (agents, their connection,
     * ACKed version and NACK flag, snapshot_version); agent_counts() runs on a metrics scrape's thread */
    pthread_mutex_t agents_mutex;
    /* plaintext, no authentication (remora-control --insecure, the unit tests) */
    int insecure;
    /* --kubernetes (docs/kubernetes-mode.md): the state comes from the Kubernetes API; NULL: the file store */
    rm_kube_source_t *kube;
    /* --kubernetes: versions served, oldest first, with their order (vseq()) */
    uint64_t history[VERSION_HISTORY], history_seq[VERSION_HISTORY];
    size_t history_len;
    uint64_t seq_counter;
    /* TLS: the serving certificate, re-issued on the server's thread at half its lifetime; gRPC's
     * handshakers read it through fetch_cert_config (its threads), hence the mutex */
    pthread_mutex_t tls_mutex;
    char *tls_chain_pem, *tls_key_pem;
    /* the injection webhook as main.c started it (rm_control_server_set_webhook), for Admin.Status; under tls_mutex */
    char *webhook_address, **webhook_dns;
    size_t num_webhook_dns;
    uint64_t tls_generation, tls_served;
    uint64_t tls_renew_at_ms;
};

struct st_unary_t {
    tag_t on_request, on_done, on_close;
    rm_control_server_t *srv;
    int method;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_call_details call_details;
    grpc_byte_buffer *payload, *response;
    grpc_slice details;
    int cancelled;
    int refs;
    unsigned close_pending : 1, responded : 1;
    /* WaitForVersion */
    uint64_t wait_version, wait_deadline_ms;
    /* connected agents still pending / that refused wait_version, kept by agent_change(); counted whole at the start
     * and, with --kubernetes, again when the history moved (vseq() changed: wait_seq is the seq_counter they are of) */
    size_t wait_pending, wait_refused;
    uint64_t wait_seq;
    unary_t *next_waiter, **prev_waiter;
    /* Proxy (relay_*): the agent (node id, malloc'ed) and stream it waits on, the request's id, encoding and deadline;
     * linked in srv->proxies */
    char *proxy_node;
    conn_t *proxy_conn;
    uint64_t proxy_id, proxy_deadline_ms, proxy_timeout_ms;
    grpc_slice proxy_msg;
    int proxy_sent;
    unary_t *next_proxy, **prev_proxy;
};

struct st_conn_t {
    tag_t on_request, on_recv, on_send, on_close, on_status;
    rm_control_server_t *srv;
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_byte_buffer *recv_bb, *send_bb;
    int cancelled;
    int refs;
    unsigned sent_initial_md : 1, send_busy : 1, closed : 1, status_queued : 1, status_sent : 1, has_sent : 1;
    /* incremental updates: the Hello set accepts_incremental; a push awaits its answer; the last push was a delta;
     * the next push must be full (after a NACK); send the full snapshot even if its version was sent (a delta NACKed);
     * counted in remora_control_streams */
    unsigned incremental : 1, awaiting : 1, sent_delta : 1, need_full : 1, resend_full : 1, counted : 1;
    /* the version the agent serves: its Hello's, then each ACK of a push; 0 for none */
    uint64_t base_version;
    grpc_status_code status_code;
    char status_msg[640];
    agent_t *agent;
    uint64_t sent_version;
    char sent_nonce[24];
    char *peer;
    conn_t *next, **prev;
    /* the Hello offered admin requests (`remoractl proxy`); how many Proxy calls wait on this stream */
    int admin_requests;
    unsigned num_proxies;
    /* scoping: the workload of the stream's client certificate (namespace, service account; empty: unknown,
     * then no scope applies), its scope (NULL: none) as of scope_version, and the scope key of the set the
     * agent serves (base_scope) and of the last push (sent_scope); NULL for none */
    char wl_ns[64], wl_sa[64];
    scope_t *scope;
    uint64_t scope_version;
    int scope_checked;
    char *base_scope, *sent_scope;
    /* the scope_t.gen of the set the agent serves and of the last push (0: no scope) */
    uint64_t base_gen, sent_gen;
    /* on-demand discovery: the names of its Discover messages not yet answered (Snapshot.discovered of its next
     * push), at most MAX_PENDING_NAMES; a refused Discover was logged (once per stream) */
    char **pending;
    size_t num_pending;
    int discover_warned;
};

#define container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))

/*
 * The order of a version. In the file store versions count up, so a version is its own order. With
 * --kubernetes a version is a hash of the content (every replica computes the same one); "newer" is
 * then the order in which this server served them, and a version it never served (another
 * replica's, or too old) has order 0: older than anything.
 */
static uint64_t
vseq(const rm_control_server_t *srv, uint64_t version)
{
    if (srv->kube == NULL || version == 0)
        return version;
    for (size_t i = srv->history_len; i != 0; --i)
        if (srv->history[i - 1] == version)
            return srv->history_seq[i - 1];
    return 0;
}

static void arm_unary(rm_control_server_t *srv, int method);
static void arm_stream(rm_control_server_t *srv);
static void check_waiters(rm_control_server_t *srv);
static void agent_change(rm_control_server_t *srv, const agent_t *a, int sign);
static void pump(conn_t *c);
static void relay_unlink(unary_t *u);
static void relay_fail(conn_t *c, grpc_status_code code, const char *why);
static int relay_send(conn_t *c);
static void clear_pending(conn_t *c);

static void
start_batch(grpc_call *call, const grpc_op *ops, size_t n, tag_t *tag)
{
    grpc_call_error err = grpc_call_start_batch(call, ops, n, tag, NULL);
    if (err != GRPC_CALL_OK)
        rm_fatal("grpc_call_start_batch rejected a batch of %zu ops: error %d", n, (int)err);
}

static uint64_t
wall_now(struct timespec *ts)
{
    clock_gettime(CLOCK_REALTIME, ts);
    return (uint64_t)ts->tv_sec;
}

/* ------------------------------------------------------------------------------- authentication */

/* The credentials a call presents, in caller-owned buffers. */
typedef struct st_credentials_t {
    rm_auth_caller_t caller;
    char bearer[512], spiffe_id[512], who[300];
} credentials_t;

static void
copy_value(char *dst, size_t dstsz, const char *p, size_t len)
{
    if (len >= dstsz)
        len = dstsz - 1;
    memcpy(dst, p, len);
    dst[len] = '\0';
}

/* Reads the bearer token of `md` and the SPIFFE ID of the call's verified client certificate. */
static void
get_credentials(grpc_call *call, const grpc_metadata_array *md, const char *who, credentials_t *cr)
{
    memset(&cr->caller, 0, sizeof(cr->caller));
    for (size_t i = 0; i != md->count; ++i) {
        const grpc_metadata *m = &md->metadata[i];
        if (grpc_slice_str_cmp(m->key, "authorization") != 0)
            continue;
        size_t len = GRPC_SLICE_LENGTH(m->value);
        const char *v = (const char *)GRPC_SLICE_START_PTR(m->value);
        if (len > 7 && strncasecmp(v, "Bearer ", 7) == 0) {
            copy_value(cr->bearer, sizeof(cr->bearer), v + 7, len - 7);
            cr->caller.bearer = cr->bearer;
        }
        break;
    }
    grpc_auth_context *ctx = grpc_call_auth_context(call);
    if (ctx != NULL) {
        grpc_auth_property_iterator it = grpc_auth_context_find_properties_by_name(ctx, GRPC_PEER_SPIFFE_ID_PROPERTY_NAME);
        const grpc_auth_property *p = grpc_auth_property_iterator_next(&it);
        if (p == NULL) {
            /* gRPC names the SPIFFE ID only when it is the certificate's one URI SAN; look through all of them */
            it = grpc_auth_context_find_properties_by_name(ctx, GRPC_X509_SAN_PROPERTY_NAME);
            while ((p = grpc_auth_property_iterator_next(&it)) != NULL &&
                   !(p->value_length > 9 && memcmp(p->value, "spiffe://", 9) == 0))
                ;
        }
        if (p != NULL) {
            copy_value(cr->spiffe_id, sizeof(cr->spiffe_id), p->value, p->value_length);
            cr->caller.spiffe_id = cr->spiffe_id;
        }
        grpc_auth_context_release(ctx);
    }
    if (who != NULL) {
        snprintf(cr->who, sizeof(cr->who), "%s", who);
    } else {
        char *peer = grpc_call_get_peer(call);
        /* "ipv4:127.0.0.1:41234": the address without the port, so that a caller is one caller */
        char *colon = peer != NULL ? strrchr(peer, ':') : NULL;
        snprintf(cr->who, sizeof(cr->who), "%.*s", colon != NULL ? (int)(colon - peer) : 200, peer != NULL ? peer : "?");
        gpr_free(peer);
    }
    cr->caller.who = cr->who;
}

/* ----------------------------------------------------------------------------------- unary calls */

static void
unary_maybe_free(unary_t *u)
{
    if (u->refs != 0)
        return;
    if (u->call != NULL)
        grpc_call_unref(u->call);
    grpc_metadata_array_destroy(&u->md);
    grpc_call_details_destroy(&u->call_details);
    if (u->payload != NULL)
        grpc_byte_buffer_destroy(u->payload);
    if (u->response != NULL)
        grpc_byte_buffer_destroy(u->response);
    grpc_slice_unref(u->details);
    --u->srv->live;
    free(u);
}

static void
unary_on_done(tag_t *tag, int ok)
{
    unary_t *u = container_of(tag, unary_t, on_done);
    --u->refs;
    unary_maybe_free(u);
}

static void
waiter_unlink(unary_t *u)
{
    if (u->prev_waiter == NULL)
        return;
    *u->prev_waiter = u->next_waiter;
    if (u->next_waiter != NULL)
        u->next_waiter->prev_waiter = u->prev_waiter;
    u->prev_waiter = NULL;
    u->next_waiter = NULL;
}

static void
unary_on_close(tag_t *tag, int ok)
{
    unary_t *u = container_of(tag, unary_t, on_close);
    --u->refs;
    u->close_pending = 0;
    /* a waiter whose client went away (cancelled, deadline) needs no answer */
    waiter_unlink(u);
    relay_unlink(u);
    unary_maybe_free(u);
}

/* Sends the response (`resp` owned, NULL for none) and the status; completes the call. */
static void
respond(unary_t *u, grpc_status_code code, const char *details, grpc_byte_buffer *resp)
{
    grpc_op ops[4];
    size_t n = 0;
    memset(ops, 0, sizeof(ops));
    u->responded = 1;
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (resp != NULL) {
        u->response = resp;
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = resp;
    }
    grpc_slice_unref(u->details);
    u->details = grpc_slice_from_copied_string(details != NULL ? details : "");
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = code;
    ops[n++].data.send_status_from_server.status_details = details != NULL ? &u->details : NULL;
    if (!u->close_pending) {
        ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
        ops[n++].data.recv_close_on_server.cancelled = &u->cancelled;
    }
    ++u->refs;
    start_batch(u->call, ops, n, &u->on_done);
}

static void
respond_msg(unary_t *u, const ProtobufCMessage *msg)
{
    respond(u, GRPC_STATUS_OK, NULL, rm_rpc_pack(msg));
}

static void respond_error(unary_t *u, grpc_status_code code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
respond_error(unary_t *u, grpc_status_code code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    respond(u, code, msg, NULL);
}

/* -------------------------------------------------------------------------------------- snapshot */

static void
clear_deltas(rm_control_server_t *srv)
{
    for (size_t i = 0; i != srv->num_deltas; ++i)
        grpc_slice_unref(srv->deltas[i].slice);
    srv->num_deltas = srv->next_delta = 0;
}

static void
refresh_snapshot(rm_control_server_t *srv)
{
    size_t len;
    const uint8_t *bytes = rm_store_snapshot(srv->store, &len);
    grpc_slice_unref(srv->snapshot);
    srv->snapshot = grpc_slice_from_copied_buffer((const char *)bytes, len);
    clear_deltas(srv);
    pthread_mutex_lock(&srv->agents_mutex);
    srv->snapshot_version = rm_store_version(srv->store);
    pthread_mutex_unlock(&srv->agents_mutex);
}

/*
 * The delta from `base` to the current version in a cache of DELTA_CACHE (`deltas`, `num`, `next`: the server's, or a
 * scope's with its view, store_id and horizon), made on first use and shared by every agent at that base; `full_len`
 * is the size of the full encoding it must beat.
 */
static const delta_t *
cached_delta(rm_control_server_t *srv, delta_t *deltas, size_t *num, size_t *next, uint64_t base, const uint8_t *const *view,
             const uint8_t *id, uint64_t horizon, size_t full_len)
{
    for (size_t i = 0; i != *num; ++i)
        if (deltas[i].base == base)
            return &deltas[i];
    delta_t *d;
    if (*num < DELTA_CACHE) {
        d = &deltas[(*num)++];
    } else {
        d = &deltas[*next];
        *next = (*next + 1) % DELTA_CACHE;
        grpc_slice_unref(d->slice);
    }
    memset(d, 0, sizeof(*d));
    d->base = base;
    d->slice = grpc_empty_slice();
    size_t len = 0;
    rm_store_delta_info_t info;
    uint8_t *bytes = base >= horizon ? rm_store_delta(srv->store, base, view, id, &len, &info) : NULL;
    if (bytes == NULL || len >= full_len) {
        d->full = 1;
    } else {
        d->slice = grpc_slice_from_copied_buffer((const char *)bytes, len);
        d->changed = info.changed;
        d->removed = info.removed;
    }
    free(bytes);
    return d;
}

/* The delta from `base` to the current version for the agents in no scope. */
static const delta_t *
get_delta(rm_control_server_t *srv, uint64_t base)
{
    return cached_delta(srv, srv->deltas, &srv->num_deltas, &srv->next_delta, base, NULL, NULL, 0,
                        GRPC_SLICE_LENGTH(srv->snapshot));
}

/* ----------------------------------------------------------------------------------------- scopes */

static void
free_members(scope_t *sc)
{
    for (size_t i = 0; i != sc->num_members; ++i) {
        free(sc->members[i].ns);
        free(sc->members[i].name);
    }
    free(sc->members);
    sc->members = NULL;
    sc->num_members = 0;
}

static void
scope_clear(scope_t *sc)
{
    for (size_t i = 0; i != sc->num_deltas; ++i)
        grpc_slice_unref(sc->deltas[i].slice);
    sc->num_deltas = sc->next_delta = 0;
    for (int k = 0; k != RM_KIND__ALL; ++k) {
        free(sc->view[k]);
        sc->view[k] = NULL;
    }
}

static void
scope_unref(rm_control_server_t *srv, scope_t *sc)
{
    if (sc == NULL || --sc->refs != 0)
        return;
    for (scope_t **p = &srv->scopes; *p != NULL; p = &(*p)->next) {
        if (*p == sc) {
            *p = sc->next;
            break;
        }
    }
    scope_clear(sc);
    free_members(sc);
    for (size_t i = 0; i != sc->num_discovered; ++i) {
        free(sc->discovered[i].ns);
        free(sc->discovered[i].name);
    }
    free(sc->discovered);
    grpc_slice_unref(sc->full);
    free(sc->key);
    free(sc->policy_ns);
    free(sc->policy_name);
    free(sc->sa);
    free(sc);
}

static int
cmp_member(const member_t *a, const member_t *b)
{
    if (a->kind != b->kind)
        return a->kind < b->kind ? -1 : 1;
    int c = strcmp(a->ns, b->ns);
    return c != 0 ? c : strcmp(a->name, b->name);
}

/*
 * Makes the scope's view and full encoding for the current version. Deltas need the agent's set to be the view
 * at its base; the views of two versions differ only by what changed or was deleted between them unless
 * something unchanged entered the view or something still stored left it (a policy or route changed what is
 * in scope): then no delta is made from before this version (horizon). A scope made for the first time (a
 * new stream's, or after a restart) takes the agents' word for their set: its horizon is the current version.
 */
static void
scope_refresh(rm_control_server_t *srv, scope_t *sc)
{
    uint64_t version = srv->snapshot_version;
    if (sc->version == version && sc->view[0] != NULL && !sc->grown)
        return;
    sc->grown = 0;
    scope_clear(sc);
    const rm_resource_t *policy = rm_store_find(srv->store, RM_KIND_EGRESS_POLICY, sc->policy_ns, sc->policy_name);
    if (policy == NULL)
        rm_fatal("scope %s refreshed without its EgressPolicy", sc->key);
    size_t n = rm_scope_view_discovered(srv->store, policy, sc->sa, sc->discovered, sc->num_discovered, sc->view);
    member_t *members = rm_calloc(n + 1, sizeof(members[0]));
    size_t m = 0;
    for (int k = 0; k != RM_KIND__ALL; ++k) {
        size_t len;
        rm_resource_t *const *list = rm_store_list(srv->store, (rm_kind_t)k, &len);
        for (size_t i = 0; i != len; ++i)
            if (sc->view[k][i])
                members[m++] = (member_t){(rm_kind_t)k, rm_strdup(list[i]->ns), rm_strdup(list[i]->name)};
    }
    int moved = sc->version == 0;
    for (size_t i = 0, j = 0; !moved && (i != m || j != sc->num_members);) {
        int c = i == m ? 1 : j == sc->num_members ? -1 : cmp_member(&members[i], &sc->members[j]);
        if (c < 0) {
            /* entered the view: fine if it changed after the previous view (a delta from then carries it) */
            ssize_t at = rm_store_index(srv->store, members[i].kind, members[i].ns, members[i].name);
            moved = at < 0 || rm_store_modified(srv->store, members[i].kind, (size_t)at) <= sc->version;
            ++i;
        } else if (c > 0) {
            /* left the view: fine if it was deleted (a delta lists it as removed) */
            moved = rm_store_index(srv->store, sc->members[j].kind, sc->members[j].ns, sc->members[j].name) >= 0;
            ++j;
        } else {
            ++i, ++j;
        }
    }
    if (moved)
        sc->horizon = version;
    free_members(sc);
    sc->members = members;
    sc->num_members = m;
    size_t len;
    uint8_t *bytes = rm_store_snapshot_view(srv->store, (const uint8_t *const *)sc->view, sc->id, &len);
    grpc_slice_unref(sc->full);
    sc->full = grpc_slice_from_copied_buffer((const char *)bytes, len);
    free(bytes);
    sc->version = version;
    rm_log_debug(LOG, "scope %s at version %llu: %zu resources (%zu discovered Services), %zu bytes%s", sc->key,
                 (unsigned long long)version, m, sc->num_discovered, len, moved ? " (no delta from earlier versions)" : "");
}

/* The delta of a scope from `base` (only from its horizon on), shared by every agent of the scope at that base. */
static const delta_t *
scope_delta(rm_control_server_t *srv, scope_t *sc, uint64_t base)
{
    return cached_delta(srv, sc->deltas, &sc->num_deltas, &sc->next_delta, base, (const uint8_t *const *)sc->view, sc->id,
                        sc->horizon, GRPC_SLICE_LENGTH(sc->full));
}

/* A scope's store_id (scope_t.id): of the store, the key and the discovered set (nothing more while it is empty, so
 * that the ids of scopes without one stay what they were before on-demand discovery). */
static void
scope_id(rm_control_server_t *srv, scope_t *sc)
{
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == NULL || !EVP_DigestInit_ex(ctx, EVP_sha256(), NULL))
        rm_fatal("SHA-256: out of memory");
    EVP_DigestUpdate(ctx, rm_store_id(srv->store), RM_STORE_ID_BYTES);
    EVP_DigestUpdate(ctx, sc->key, strlen(sc->key));
    for (size_t i = 0; i != sc->num_discovered; ++i) {
        /* "\n" occurs in no name: the encoding of the set is unambiguous */
        EVP_DigestUpdate(ctx, "\n", 1);
        EVP_DigestUpdate(ctx, sc->discovered[i].ns, strlen(sc->discovered[i].ns));
        EVP_DigestUpdate(ctx, "/", 1);
        EVP_DigestUpdate(ctx, sc->discovered[i].name, strlen(sc->discovered[i].name));
    }
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    memcpy(sc->id, md, RM_STORE_ID_BYTES);
}

/* The stream's scope at the current version (NULL: none), found again after every change of the store. */
static scope_t *
conn_scope(conn_t *c)
{
    rm_control_server_t *srv = c->srv;
    if (c->scope_checked && c->scope_version == srv->snapshot_version)
        return c->scope;
    c->scope_checked = 1;
    c->scope_version = srv->snapshot_version;
    const rm_resource_t *policy = c->wl_ns[0] != '\0' ? rm_scope_policy(srv->store, c->wl_ns, c->wl_sa) : NULL;
    char key[256];
    if (policy != NULL)
        snprintf(key, sizeof(key), "%s/%s/%s", policy->ns, policy->name, c->wl_sa);
    if (c->scope != NULL && policy != NULL && strcmp(c->scope->key, key) == 0)
        return c->scope;
    scope_unref(srv, c->scope);
    c->scope = NULL;
    if (policy == NULL)
        return NULL;
    scope_t *sc = srv->scopes;
    while (sc != NULL && strcmp(sc->key, key) != 0)
        sc = sc->next;
    if (sc == NULL) {
        sc = rm_calloc(1, sizeof(*sc));
        sc->key = rm_strdup(key);
        scope_id(srv, sc);
        sc->gen = ++srv->scope_gens;
        sc->policy_ns = rm_strdup(policy->ns);
        sc->policy_name = rm_strdup(policy->name);
        sc->sa = rm_strdup(c->wl_sa);
        sc->full = grpc_empty_slice();
        sc->next = srv->scopes;
        srv->scopes = sc;
    }
    ++sc->refs;
    c->scope = sc;
    return sc;
}

static int
same_scope(const char *a, const char *b)
{
    return a == NULL ? b == NULL : b != NULL && strcmp(a, b) == 0;
}

static void
set_scope_key(char **slot, const scope_t *sc)
{
    free(*slot);
    *slot = sc != NULL ? rm_strdup(sc->key) : NULL;
}

/* remora_control_agents and remora_control_snapshot_version (cp_metrics.h): any thread, at a scrape. */
static void
agent_counts(void *arg, rm_cp_agent_counts_t *out)
{
    rm_control_server_t *srv = arg;
    memset(out, 0, sizeof(*out));
    pthread_mutex_lock(&srv->agents_mutex);
    for (size_t i = 0; i != srv->num_agents; ++i) {
        const agent_t *a = srv->agents[i];
        if (a->conn == NULL)
            continue;
        ++out->connected;
        out->current += a->applied_version == srv->snapshot_version;
        out->nacked += a->nacked;
    }
    out->version = srv->snapshot_version;
    pthread_mutex_unlock(&srv->agents_mutex);
}

/* After every accepted change: the new version goes to every agent at once. */
static void
on_store_changed(rm_control_server_t *srv)
{
    refresh_snapshot(srv);
    for (conn_t *c = srv->conns; c != NULL; c = c->next)
        pump(c);
}

/* ------------------------------------------------------------------------------------------ agents */

static agent_t *
find_agent(rm_control_server_t *srv, const char *node_id, int create)
{
    for (size_t i = 0; i != srv->num_agents; ++i)
        if (strcmp(srv->agents[i]->node_id, node_id) == 0)
            return srv->agents[i];
    if (!create)
        return NULL;
    if (srv->num_agents >= MAX_AGENTS) {
        /* forget the disconnected agent seen longest ago */
        size_t oldest = SIZE_MAX;
        for (size_t i = 0; i != srv->num_agents; ++i) {
            agent_t *a = srv->agents[i];
            if (a->conn == NULL && (oldest == SIZE_MAX || a->last_seen.tv_sec < srv->agents[oldest]->last_seen.tv_sec))
                oldest = i;
        }
        if (oldest == SIZE_MAX)
            return NULL;
        agent_t *a = srv->agents[oldest];
        pthread_mutex_lock(&srv->agents_mutex);
        srv->agents[oldest] = srv->agents[--srv->num_agents];
        pthread_mutex_unlock(&srv->agents_mutex);
        free(a->node_id);
        free(a->nack_reason);
        free(a->peer);
        rm_stat_history_destroy(a->stats);
        free(a);
    }
    agent_t *a = rm_calloc(1, sizeof(*a));
    a->node_id = rm_strdup(node_id);
    a->nack_reason = rm_strdup("");
    a->peer = rm_strdup("");
    pthread_mutex_lock(&srv->agents_mutex);
    srv->agents = rm_realloc(srv->agents, (srv->num_agents + 1) * sizeof(srv->agents[0]));
    srv->agents[srv->num_agents++] = a;
    pthread_mutex_unlock(&srv->agents_mutex);
    return a;
}

static void
fill_agent_status(Remora__V1__AgentStatus *st, Remora__V1__Timestamp *ts, const agent_t *a)
{
    remora__v1__agent_status__init(st);
    remora__v1__timestamp__init(ts);
    st->node_id = a->node_id;
    st->connected = a->conn != NULL;
    st->applied_version = a->applied_version;
    st->nack_version = a->nack_version;
    st->nack_reason = a->nack_reason;
    st->peer = a->peer;
    /* a connected agent is seen continuously: its stream is held alive by keepalive pings */
    struct timespec seen = a->last_seen;
    if (a->conn != NULL)
        wall_now(&seen);
    ts->seconds = seen.tv_sec;
    ts->nanos = (int32_t)seen.tv_nsec;
    st->last_seen = ts;
}

static int
cmp_agent(const void *a, const void *b)
{
    return strcmp((*(agent_t *const *)a)->node_id, (*(agent_t *const *)b)->node_id);
}

/* ------------------------------------------------------------------------------ discovery streams */

static void
conn_maybe_free(conn_t *c)
{
    if (c->refs != 0)
        return;
    if (c->prev != NULL) {
        *c->prev = c->next;
        if (c->next != NULL)
            c->next->prev = c->prev;
    }
    if (c->call != NULL)
        grpc_call_unref(c->call);
    grpc_metadata_array_destroy(&c->md);
    if (c->recv_bb != NULL)
        grpc_byte_buffer_destroy(c->recv_bb);
    if (c->send_bb != NULL)
        grpc_byte_buffer_destroy(c->send_bb);
    if (c->peer != NULL)
        gpr_free(c->peer);
    scope_unref(c->srv, c->scope);
    free(c->base_scope);
    free(c->sent_scope);
    clear_pending(c);
    if (c->counted)
        rm_cp_metrics_stream(-1);
    --c->srv->live;
    free(c);
}

/* The stream is over (or failing): the agent counts as disconnected from now on. */
static void
conn_closed(conn_t *c)
{
    if (c->closed)
        return;
    c->closed = 1;
    relay_fail(c, GRPC_STATUS_UNAVAILABLE, "its stream to the control plane ended");
    agent_t *a = c->agent;
    if (a != NULL && a->conn == c) {
        agent_change(c->srv, a, -1);
        pthread_mutex_lock(&c->srv->agents_mutex);
        a->conn = NULL;
        pthread_mutex_unlock(&c->srv->agents_mutex);
        wall_now(&a->last_seen);
        rm_log_info(LOG, "agent %s disconnected (applied version %llu)", a->node_id, (unsigned long long)a->applied_version);
        check_waiters(c->srv);
    }
    c->agent = NULL;
}

/* Ends the stream with a status once the send in flight (if any) is done. */
static void
queue_status(conn_t *c, grpc_status_code code, const char *msg)
{
    if (c->status_queued)
        return;
    c->status_queued = 1;
    c->status_code = code;
    snprintf(c->status_msg, sizeof(c->status_msg), "%s", msg);
    relay_fail(c, GRPC_STATUS_UNAVAILABLE, "its stream to the control plane is ending");
    pump(c);
}

static void
conn_on_status(tag_t *tag, int ok)
{
    conn_t *c = container_of(tag, conn_t, on_status);
    --c->refs;
    conn_maybe_free(c);
}

static void
conn_on_send(tag_t *tag, int ok)
{
    conn_t *c = container_of(tag, conn_t, on_send);
    --c->refs;
    c->send_busy = 0;
    grpc_byte_buffer_destroy(c->send_bb);
    c->send_bb = NULL;
    if (!ok)
        conn_closed(c);
    else
        pump(c);
    conn_maybe_free(c);
}

static void
send_initial_md_op(conn_t *c, grpc_op *op)
{
    op->op = GRPC_OP_SEND_INITIAL_METADATA;
    c->sent_initial_md = 1;
}

/* ---------------------------------------------------------------------------- on-demand discovery */

static void
clear_pending(conn_t *c)
{
    for (size_t i = 0; i != c->num_pending; ++i)
        free(c->pending[i]);
    free(c->pending);
    c->pending = NULL;
    c->num_pending = 0;
}

/* This push's own fields after the nonce: `scoped` for a stream in a scope, and the names it answers (all those asked
 * since the last push, which it clears). Returns how many names it carries. */
static size_t
append_discovery(conn_t *c, const scope_t *sc, rm_rpc_buf_t *buf)
{
    if (sc != NULL)
        rm_rpc_buf_append_varint_field(buf, 22, 1);
    size_t n = c->num_pending;
    for (size_t i = 0; i != n; ++i)
        rm_rpc_buf_append_bytes_field(buf, 23, c->pending[i], strlen(c->pending[i]));
    clear_pending(c);
    return n;
}

/*
 * The answer to Discover messages that changed nothing the stream needs (unknown names, names in its set already, a
 * stream in no scope): an incremental snapshot on the version the agent serves that changes nothing and carries the
 * names. Only on a set the agent is known to serve (it ACKed it or named it in its Hello, of the same scope and
 * discovered set); returns 0 when there is none, and the caller sends the set whole instead.
 */
static int
send_confirm(conn_t *c, const scope_t *sc)
{
    rm_control_server_t *srv = c->srv;
    uint64_t gen = sc != NULL ? sc->gen : 0;
    if (!c->incremental || c->need_full || c->base_version == 0 || !same_scope(c->base_scope, sc != NULL ? sc->key : NULL) ||
        c->base_gen != gen)
        return 0;
    rm_rpc_buf_t buf = {0};
    snprintf(c->sent_nonce, sizeof(c->sent_nonce), "%llx", (unsigned long long)++srv->nonce_counter);
    rm_rpc_buf_append_varint_field(&buf, 1, c->base_version);
    rm_rpc_buf_append_bytes_field(&buf, 2, c->sent_nonce, strlen(c->sent_nonce));
    rm_rpc_buf_append_varint_field(&buf, 17, 1);
    rm_rpc_buf_append_varint_field(&buf, 18, c->base_version);
    rm_rpc_buf_append_bytes_field(&buf, 20, sc != NULL ? sc->id : rm_store_id(srv->store), RM_STORE_ID_BYTES);
    size_t answered = append_discovery(c, sc, &buf);
    grpc_slice slice = grpc_slice_from_copied_buffer((const char *)buf.base, buf.len);
    size_t bytes = buf.len;
    rm_rpc_buf_dispose(&buf);
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof(ops));
    c->send_bb = grpc_raw_byte_buffer_create(&slice, 1);
    grpc_slice_unref(slice);
    if (!c->sent_initial_md)
        send_initial_md_op(c, &ops[n++]);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = c->send_bb;
    c->send_busy = 1;
    /* answered like any push: its ACK confirms the base again, a NACK brings the set whole */
    c->awaiting = 1;
    c->sent_delta = 1;
    set_scope_key(&c->sent_scope, sc);
    c->sent_gen = gen;
    ++c->refs;
    start_batch(c->call, ops, n, &c->on_send);
    rm_cp_metrics_push(RM_CP_PUSH_DELTA, bytes);
    rm_log_debug(LOG, "agent %s: answered %zu discovered names with an empty delta on version %llu (%zu bytes; nonce %s)",
                 c->agent->node_id, answered, (unsigned long long)c->base_version, bytes, c->sent_nonce);
    return 1;
}

/* Starts the next send if nothing is in flight: the final status if one is queued, else the newest snapshot. */
static void
pump(conn_t *c)
{
    rm_control_server_t *srv = c->srv;
    if (c->closed || c->send_busy || c->status_sent)
        return;
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof(ops));
    if (c->status_queued) {
        if (!c->sent_initial_md)
            send_initial_md_op(c, &ops[n++]);
        grpc_slice details = grpc_slice_from_copied_string(c->status_msg);
        ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
        ops[n].data.send_status_from_server.status = c->status_code;
        ops[n++].data.send_status_from_server.status_details = &details;
        c->status_sent = 1;
        ++c->refs;
        start_batch(c->call, ops, n, &c->on_status);
        grpc_slice_unref(details);
        return;
    }
    if (c->agent == NULL)
        return;
    /* the newest snapshot first; then the answer to Discover messages; then the admin requests of `remoractl proxy`,
     * one per send. A stream that takes deltas waits for the answer to its last push: a delta applies only on what it
     * serves */
    if (c->incremental && c->awaiting) {
        relay_send(c);
        return;
    }
    /* --kubernetes: no snapshot until the first state is built from the API (an empty one would wipe the agent's) */
    if (srv->kube != NULL && srv->snapshot_version == 0) {
        relay_send(c);
        return;
    }
    scope_t *sc = conn_scope(c);
    uint64_t gen = sc != NULL ? sc->gen : 0;
    /* a scope's set that grew (on-demand discovery) is new at the same version */
    if (c->has_sent && c->sent_version == srv->snapshot_version && !c->resend_full && c->sent_gen == gen) {
        if (c->num_pending == 0) {
            relay_send(c);
            return;
        }
        /* names asked and nothing new to carry them: an empty delta on the set the agent serves, or else (an agent
         * without deltas, or whose set is unknown after a NACK) the set whole again */
        if (send_confirm(c, sc))
            return;
        c->resend_full = 1;
    }
    if (sc != NULL)
        scope_refresh(srv, sc);
    grpc_slice body = sc != NULL ? sc->full : srv->snapshot;
    const delta_t *d = NULL;
    /* a delta applies on the set the agent serves: of the same scope and discovered set (a scope change, or a set
     * that grew, sends the new set whole) */
    if (c->incremental && !c->need_full && !c->resend_full && c->base_version != 0 &&
        same_scope(c->base_scope, sc != NULL ? sc->key : NULL) && c->base_gen == gen) {
        d = sc != NULL ? scope_delta(srv, sc, c->base_version) : get_delta(srv, c->base_version);
        if (d->full)
            d = NULL;
        else
            body = d->slice;
    }
    set_scope_key(&c->sent_scope, sc);
    c->sent_gen = gen;
    /* the shared encoding plus this send's own fields (nonce; scoped, discovered): concatenated encodings merge into
     * one message */
    rm_rpc_buf_t nonce = {0};
    snprintf(c->sent_nonce, sizeof(c->sent_nonce), "%llx", (unsigned long long)++srv->nonce_counter);
    rm_rpc_buf_append_bytes_field(&nonce, 2, c->sent_nonce, strlen(c->sent_nonce));
    size_t answered = append_discovery(c, sc, &nonce);
    grpc_slice slices[2] = {body, grpc_slice_from_copied_buffer((const char *)nonce.base, nonce.len)};
    rm_rpc_buf_dispose(&nonce);
    c->send_bb = grpc_raw_byte_buffer_create(slices, 2);
    size_t bytes = GRPC_SLICE_LENGTH(slices[0]) + GRPC_SLICE_LENGTH(slices[1]);
    grpc_slice_unref(slices[1]);
    if (!c->sent_initial_md)
        send_initial_md_op(c, &ops[n++]);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = c->send_bb;
    c->send_busy = 1;
    c->has_sent = 1;
    c->awaiting = 1;
    c->resend_full = 0;
    c->sent_delta = d != NULL;
    c->sent_version = srv->snapshot_version;
    ++c->refs;
    start_batch(c->call, ops, n, &c->on_send);
    rm_cp_metrics_push(d != NULL ? RM_CP_PUSH_DELTA : RM_CP_PUSH_FULL, bytes);
    if (d != NULL)
        rm_log_debug(LOG, "agent %s: sent version %llu as a delta from %llu (%zu changed, %zu removed, %zu bytes; nonce %s%s)",
                     c->agent->node_id, (unsigned long long)c->sent_version, (unsigned long long)c->base_version, d->changed,
                     d->removed, bytes, c->sent_nonce, answered != 0 ? "; answers a Discover" : "");
    else
        rm_log_debug(LOG, "agent %s: sent version %llu (%zu bytes; nonce %s%s)", c->agent->node_id,
                     (unsigned long long)c->sent_version, bytes, c->sent_nonce, answered != 0 ? "; answers a Discover" : "");
}

static void
start_recv(conn_t *c)
{
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &c->recv_bb;
    ++c->refs;
    start_batch(c->call, &op, 1, &c->on_recv);
}

static int
valid_node_id(const char *s)
{
    size_t len = strlen(s);
    if (len == 0 || len > 253)
        return 0;
    for (const char *p = s; *p != '\0'; ++p)
        if (*p <= ' ' || *p > '~')
            return 0;
    return 1;
}

/*
 * The workload of a stream, for scoping: the namespace and service account of the credential that authenticated it
 * (rm_identity_authenticate_workload_as): its verified client certificate (spiffe://TD/ns/NS/sa/SA of this trust
 * domain), else the bootstrap token this control plane made and checked, which names them too. A stream without
 * authentication (--insecure) has none: no scope applies to it.
 */
static void
workload_of(const rm_auth_workload_t *wl, char ns[64], char sa[64])
{
    snprintf(ns, 64, "%s", wl->ns);
    snprintf(sa, 64, "%s", wl->sa);
    if (ns[0] == '\0' || sa[0] == '\0')
        ns[0] = sa[0] = '\0';
}

static void
handle_hello(conn_t *c, const Remora__V1__Hello *hello)
{
    rm_control_server_t *srv = c->srv;
    if (c->agent != NULL) {
        queue_status(c, GRPC_STATUS_INVALID_ARGUMENT, "Hello sent twice on one stream");
        return;
    }
    if (!valid_node_id(hello->node_id)) {
        queue_status(c, GRPC_STATUS_INVALID_ARGUMENT, "Hello.node_id must be 1-253 printable ASCII characters without spaces");
        return;
    }
    if (!srv->insecure) {
        credentials_t cr;
        char why[600];
        get_credentials(c->call, &c->md, hello->node_id, &cr);
        rm_auth_workload_t wl;
        grpc_status_code code = rm_identity_authenticate_workload_as(srv->identity, RM_AUTH_API_DISCOVERY, &cr.caller,
                                                                     hello->node_id, 0, &wl, why, sizeof(why));
        if (code != GRPC_STATUS_OK) {
            queue_status(c, code, why);
            return;
        }
        workload_of(&wl, c->wl_ns, c->wl_sa);
    }
    agent_t *a = find_agent(srv, hello->node_id, 1);
    if (a == NULL) {
        queue_status(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "too many agents");
        return;
    }
    if (a->conn != NULL) {
        /* the node reconnected before its old stream timed out: the newest stream speaks for it */
        conn_t *old = a->conn;
        old->agent = NULL;
        queue_status(old, GRPC_STATUS_ABORTED, "replaced by a newer stream with the same node id");
    }
    agent_change(srv, a, -1);
    pthread_mutex_lock(&srv->agents_mutex);
    a->conn = c;
    a->applied_version = hello->applied_version;
    a->nacked = 0;
    pthread_mutex_unlock(&srv->agents_mutex);
    agent_change(srv, a, 1);
    c->agent = a;
    c->admin_requests = hello->admin_requests;
    c->incremental = hello->accepts_incremental;
    /* the Hello's version is a delta's base when it names this store's content: the same store identity
     * (persisted across restarts), a version this process saw the node ACK, or a content hash (--kubernetes);
     * rm_store_delta() then says whether the history reaches back to it */
    scope_t *sc = conn_scope(c);
    const uint8_t *id = sc != NULL ? sc->id : rm_store_id(srv->store);
    int same_store = hello->store_id.len == RM_STORE_ID_BYTES && memcmp(hello->store_id.data, id, RM_STORE_ID_BYTES) == 0;
    /* an agent from before store identities sends none: the version is trusted if this process saw it ACKed */
    int older_agent = hello->store_id.len == 0 && sc == NULL && a->acked_here != 0 && a->acked_here == hello->applied_version;
    c->base_version = (srv->kube != NULL && sc == NULL) || same_store || older_agent ? hello->applied_version : 0;
    wall_now(&a->last_seen);
    free(a->peer);
    a->peer = rm_strdup(c->peer != NULL ? c->peer : "");
    /* the set it serves is of its scope now: its Hello named the scope's store_id, or it gets the set whole */
    set_scope_key(&c->base_scope, sc);
    c->base_gen = sc != NULL ? sc->gen : 0;
    rm_log_info(LOG, "agent %s connected from %s (serving version %llu; current is %llu%s%s%s)", a->node_id, a->peer,
                (unsigned long long)a->applied_version, (unsigned long long)srv->snapshot_version,
                c->incremental ? "; takes incremental updates" : "", sc != NULL ? "; scope " : "", sc != NULL ? sc->key : "");
    pump(c);
    check_waiters(srv);
}

static void
handle_ack(conn_t *c, uint64_t version, const char *nonce)
{
    agent_t *a = c->agent;
    wall_now(&a->last_seen);
    if (c->srv->kube != NULL ? vseq(c->srv, version) == 0 : version > c->srv->snapshot_version) {
        rm_log_warn(LOG, "agent %s ACKed version %llu, which does not exist (current %llu); ignored", a->node_id,
                    (unsigned long long)version, (unsigned long long)c->srv->snapshot_version);
        if (strcmp(nonce, c->sent_nonce) == 0 && c->awaiting) {
            /* an answer all the same: what it serves is unknown, the next version goes whole */
            c->awaiting = 0;
            c->need_full = 1;
        }
        return;
    }
    rm_cp_metrics_answer(0);
    int latest = strcmp(nonce, c->sent_nonce) == 0;
    if (!latest)
        rm_log_debug(LOG, "agent %s: ACK of an earlier push (nonce %s, last sent %s)", a->node_id, nonce, c->sent_nonce);
    agent_change(c->srv, a, -1);
    pthread_mutex_lock(&c->srv->agents_mutex);
    a->applied_version = version;
    a->nacked = 0;
    pthread_mutex_unlock(&c->srv->agents_mutex);
    agent_change(c->srv, a, 1);
    a->acked_here = version;
    rm_log_debug(LOG, "agent %s applied version %llu", a->node_id, (unsigned long long)version);
    rm_control_server_t *srv = c->srv;
    if (version == srv->snapshot_version && srv->num_current == srv->num_connected && srv->all_applied_logged != version) {
        srv->all_applied_logged = version;
        rm_log_info(LOG, "version %llu applied by every connected agent (%zu)", (unsigned long long)version, srv->num_connected);
    }
    if (latest && c->awaiting) {
        /* what the agent serves now: the base of the next delta */
        c->awaiting = 0;
        c->need_full = 0;
        c->base_version = version;
        set_scope_key(&c->base_scope, NULL);
        c->base_scope = c->sent_scope != NULL ? rm_strdup(c->sent_scope) : NULL;
        c->base_gen = c->sent_gen;
        pump(c);
    }
    check_waiters(c->srv);
}

static void
handle_nack(conn_t *c, uint64_t version, const char *nonce, const char *reason)
{
    agent_t *a = c->agent;
    wall_now(&a->last_seen);
    rm_cp_metrics_answer(1);
    agent_change(c->srv, a, -1);
    pthread_mutex_lock(&c->srv->agents_mutex);
    a->nacked = 1;
    pthread_mutex_unlock(&c->srv->agents_mutex);
    free(a->nack_reason);
    a->nack_reason = rm_strndup(reason, strnlen(reason, MAX_NACK_REASON));
    a->nack_version = version;
    agent_change(c->srv, a, 1);
    rm_log_warn(LOG, "agent %s refused version %llu%s: %s", a->node_id, (unsigned long long)version,
                c->sent_delta && strcmp(nonce, c->sent_nonce) == 0 ? " (a delta; the full snapshot follows)" : "", a->nack_reason);
    if (strcmp(nonce, c->sent_nonce) == 0 && c->awaiting) {
        /* the agent keeps what it served (base_version); whatever comes next is whole. A refused delta may
         * have failed only as a delta (the agent lost its base): the full snapshot of the same version follows */
        c->awaiting = 0;
        c->need_full = 1;
        c->resend_full = c->sent_delta;
        pump(c);
    }
    check_waiters(c->srv);
}

/* A golden-metrics summary (stat.h); a malformed one is logged and dropped, the stream goes on. */
static void
handle_stats(conn_t *c, const Remora__V1__Stats *stats)
{
    agent_t *a = c->agent;
    if (a->stats == NULL)
        a->stats = rm_stat_history_create();
    char err[256];
    if (rm_stat_history_add(a->stats, stats, rm_now_ms(), err, sizeof(err)) != 0)
        rm_log_warn(LOG, "agent %s: stats summary ignored: %s", a->node_id, err);
    else
        rm_log_debug(LOG, "agent %s: stats summary with %zu series", a->node_id, stats->n_series);
}

/* Adds a name to the stream's unanswered ones (once); 0 when MAX_PENDING_NAMES are waiting already. */
static int
add_pending(conn_t *c, const char *name)
{
    for (size_t i = 0; i != c->num_pending; ++i)
        if (strcmp(c->pending[i], name) == 0)
            return 1;
    if (c->num_pending == MAX_PENDING_NAMES)
        return 0;
    c->pending = rm_realloc(c->pending, (c->num_pending + 1) * sizeof(c->pending[0]));
    c->pending[c->num_pending++] = rm_strdup(name);
    return 1;
}

static int
cmp_discovered(const rm_scope_service_t *a, const char *ns, const char *name)
{
    int c = strcmp(a->ns, ns);
    return c != 0 ? c : strcmp(a->name, name);
}

/* Puts the Service into the scope's discovered set (sorted); 0 when it is there already. */
static int
add_discovered(scope_t *sc, const char *ns, const char *name)
{
    size_t at = 0;
    while (at != sc->num_discovered && cmp_discovered(&sc->discovered[at], ns, name) < 0)
        ++at;
    if (at != sc->num_discovered && cmp_discovered(&sc->discovered[at], ns, name) == 0)
        return 0;
    sc->discovered = rm_realloc(sc->discovered, (sc->num_discovered + 1) * sizeof(sc->discovered[0]));
    memmove(&sc->discovered[at + 1], &sc->discovered[at], (sc->num_discovered - at) * sizeof(sc->discovered[0]));
    sc->discovered[at] = (rm_scope_service_t){rm_strdup(ns), rm_strdup(name)};
    ++sc->num_discovered;
    return 1;
}

/*
 * On-demand discovery (docs/control-plane.md): names an agent met and does not know. Each name that means a Service
 * outside the stream's scope joins the scope's discovered set (at most MAX_DISCOVERED); a set that grew is new for
 * every stream in the scope (a new id and gen: each gets it whole). The names are answered by the stream's next push,
 * found or not (Snapshot.discovered). Refused without ending the stream: more than MAX_DISCOVER_NAMES in one message
 * (the rest), a name longer than MAX_DISCOVER_NAME_BYTES or empty, more than MAX_PENDING_NAMES unanswered.
 */
static void
handle_discover(conn_t *c, const Remora__V1__Discover *disc)
{
    rm_control_server_t *srv = c->srv;
    size_t n = disc->n_names, refused = 0, found = 0, unknown = 0, unscoped = 0, full = 0;
    const char *why = NULL;
    if (n > MAX_DISCOVER_NAMES) {
        refused += n - MAX_DISCOVER_NAMES;
        n = MAX_DISCOVER_NAMES;
        why = "more than 32 names in one message";
    }
    /* --kubernetes before the first state: nothing to find yet, and no scope to put it in */
    scope_t *sc = srv->kube != NULL && srv->snapshot_version == 0 ? NULL : conn_scope(c);
    if (sc != NULL)
        scope_refresh(srv, sc);
    int grew = 0;
    for (size_t i = 0; i != n; ++i) {
        const char *name = disc->names[i];
        size_t len = strnlen(name, MAX_DISCOVER_NAME_BYTES + 1);
        if (len == 0 || len > MAX_DISCOVER_NAME_BYTES) {
            ++refused;
            why = len == 0 ? "an empty name" : "a name longer than 253 bytes";
            continue;
        }
        if (!add_pending(c, name)) {
            ++refused;
            why = "more than 1024 names waiting for their answer";
            continue;
        }
        if (sc == NULL) {
            ++unscoped;
            continue;
        }
        const rm_resource_t *svc = rm_scope_resolve(srv->store, name);
        if (svc == NULL) {
            ++unknown;
            continue;
        }
        ssize_t at = rm_store_index(srv->store, RM_KIND_SERVICE, svc->ns, svc->name);
        if (at >= 0 && sc->view[RM_KIND_SERVICE][at]) {
            ++found; /* in the set already (the agent asked before its push arrived, or for a name of one it has) */
            continue;
        }
        size_t before = sc->num_discovered;
        if (before == MAX_DISCOVERED) {
            ++full;
            continue;
        }
        grew |= add_discovered(sc, svc->ns, svc->name);
        ++found;
        if (sc->num_discovered != before)
            rm_log_info(LOG, "agent %s: scope %s discovers service %s/%s (asked as %s; %zu discovered)", c->agent->node_id, sc->key,
                        svc->ns, svc->name, name, sc->num_discovered);
    }
    rm_cp_metrics_discovery(RM_CP_DISCOVERY_FOUND, found);
    rm_cp_metrics_discovery(RM_CP_DISCOVERY_UNKNOWN, unknown);
    rm_cp_metrics_discovery(RM_CP_DISCOVERY_UNSCOPED, unscoped);
    rm_cp_metrics_discovery(RM_CP_DISCOVERY_OVER_LIMIT, refused + full);
    if (full != 0)
        rm_log_warn(LOG,
                    "agent %s: scope %s holds %d discovered Services already: %zu more not added (widen the EgressPolicy's "
                    "hosts)",
                    c->agent->node_id, sc->key, MAX_DISCOVERED, full);
    if (refused != 0 && !c->discover_warned) {
        c->discover_warned = 1;
        rm_log_warn(LOG, "agent %s: Discover refused in part (%s): %zu names dropped (logged once per stream)", c->agent->node_id,
                    why, refused);
    }
    rm_log_debug(LOG, "agent %s: Discover of %zu names: %zu found, %zu unknown, %zu unscoped, %zu over the limits",
                 c->agent->node_id, disc->n_names, found, unknown, unscoped, refused + full);
    if (!grew) {
        pump(c);
        return;
    }
    scope_id(srv, sc);
    sc->gen = ++srv->scope_gens;
    sc->grown = 1;
    for (conn_t *o = srv->conns; o != NULL; o = o->next)
        if (o->scope == sc)
            pump(o);
}

/* ------------------------------------------------------------------ admin requests relayed to agents */

/*
 * `remoractl proxy NODE COMMAND` (Admin.Proxy): the request travels to the agent as a Snapshot that
 * carries only an admin_request, on the agent's own discovery stream, and the agent's AdminResponse is
 * the call's answer. The Proxy call waits in srv->proxies (at most MAX_PROXY_PER_AGENT per stream)
 * until the answer, its deadline, the stream's end or its client's cancellation, whichever is first.
 */

/* Takes `u` off the waiting list (no-op when it is not on it); its request is no longer sent. */
static void
relay_unlink(unary_t *u)
{
    if (u->prev_proxy == NULL)
        return;
    *u->prev_proxy = u->next_proxy;
    if (u->next_proxy != NULL)
        u->next_proxy->prev_proxy = u->prev_proxy;
    u->prev_proxy = NULL;
    u->next_proxy = NULL;
    --u->proxy_conn->num_proxies;
    u->proxy_conn = NULL;
    free(u->proxy_node);
    u->proxy_node = NULL;
    grpc_slice_unref(u->proxy_msg);
    u->proxy_msg = grpc_empty_slice();
}

/* Answers every Proxy call waiting on `c` with `code`: the stream will carry no answer. */
static void
relay_fail(conn_t *c, grpc_status_code code, const char *why)
{
    if (c->num_proxies == 0)
        return;
    for (unary_t *u = c->srv->proxies, *next; u != NULL; u = next) {
        next = u->next_proxy;
        if (u->proxy_conn != c)
            continue;
        char msg[600];
        snprintf(msg, sizeof(msg), "agent %s did not answer: %s", u->proxy_node, why);
        relay_unlink(u);
        respond(u, code, msg, NULL);
    }
}

/* Sends the oldest request still unsent on `c` (nothing else may be in flight). Returns 1 when one was sent. */
static int
relay_send(conn_t *c)
{
    unary_t *oldest = NULL;
    for (unary_t *u = c->srv->proxies; u != NULL; u = u->next_proxy)
        if (u->proxy_conn == c && !u->proxy_sent && (oldest == NULL || u->proxy_id < oldest->proxy_id))
            oldest = u;
    if (oldest == NULL)
        return 0;
    grpc_op ops[2];
    size_t n = 0;
    memset(ops, 0, sizeof(ops));
    c->send_bb = grpc_raw_byte_buffer_create(&oldest->proxy_msg, 1);
    if (!c->sent_initial_md)
        send_initial_md_op(c, &ops[n++]);
    ops[n].op = GRPC_OP_SEND_MESSAGE;
    ops[n++].data.send_message.send_message = c->send_bb;
    c->send_busy = 1;
    oldest->proxy_sent = 1;
    ++c->refs;
    start_batch(c->call, ops, n, &c->on_send);
    rm_log_debug(LOG, "agent %s: sent admin request %llu", c->agent->node_id, (unsigned long long)oldest->proxy_id);
    return 1;
}

/* The agent's answer: the waiting call's response. An answer nobody waits for (timed out, cancelled) is dropped. */
static void
relay_answer(conn_t *c, const Remora__V1__AdminResponse *ar)
{
    unary_t *u = c->srv->proxies;
    while (u != NULL && !(u->proxy_conn == c && u->proxy_id == ar->id))
        u = u->next_proxy;
    if (u == NULL) {
        rm_log_debug(LOG, "agent %s: answer to admin request %llu, which nobody waits for any more", c->agent->node_id,
                     (unsigned long long)ar->id);
        return;
    }
    relay_unlink(u);
    Remora__V1__ProxyResponse resp = REMORA__V1__PROXY_RESPONSE__INIT;
    resp.status = ar->status;
    resp.content_type = ar->content_type;
    resp.body = ar->body;
    resp.truncated = ar->truncated;
    if (resp.body.len > MAX_PROXY_BODY) {
        resp.body.len = MAX_PROXY_BODY;
        resp.truncated = 1;
    }
    respond_msg(u, &resp.base);
}

/* Answers the Proxy calls whose time is up with DEADLINE_EXCEEDED. */
static void
relay_expire(rm_control_server_t *srv)
{
    uint64_t now = rm_now_ms();
    for (unary_t *u = srv->proxies, *next; u != NULL; u = next) {
        next = u->next_proxy;
        if (now < u->proxy_deadline_ms)
            continue;
        char why[600];
        snprintf(why, sizeof(why), "agent %s did not answer within %llu ms%s", u->proxy_node,
                 (unsigned long long)u->proxy_timeout_ms, u->proxy_sent ? "" : " (the request was still queued behind a snapshot)");
        relay_unlink(u);
        respond(u, GRPC_STATUS_DEADLINE_EXCEEDED, why, NULL);
    }
}

static void
conn_on_recv(tag_t *tag, int ok)
{
    conn_t *c = container_of(tag, conn_t, on_recv);
    --c->refs;
    if (!ok || c->closed) {
        conn_closed(c);
        conn_maybe_free(c);
        return;
    }
    if (c->recv_bb == NULL) {
        /* the agent half-closed: it is leaving */
        queue_status(c, GRPC_STATUS_OK, "");
        conn_maybe_free(c);
        return;
    }
    Remora__V1__AgentMessage *m = (Remora__V1__AgentMessage *)rm_rpc_unpack(&remora__v1__agent_message__descriptor, c->recv_bb);
    grpc_byte_buffer_destroy(c->recv_bb);
    c->recv_bb = NULL;
    int again = 1;
    if (m == NULL) {
        queue_status(c, GRPC_STATUS_INVALID_ARGUMENT, "the message does not parse as remora.v1.AgentMessage");
        again = 0;
    } else if (m->message_case == REMORA__V1__AGENT_MESSAGE__MESSAGE_HELLO) {
        handle_hello(c, m->hello);
    } else if (c->agent == NULL) {
        queue_status(c, GRPC_STATUS_FAILED_PRECONDITION, c->status_queued ? "replaced" : "the first message must be a Hello");
        again = 0;
    } else if (m->message_case == REMORA__V1__AGENT_MESSAGE__MESSAGE_ACK) {
        handle_ack(c, m->ack->version, m->ack->nonce);
    } else if (m->message_case == REMORA__V1__AGENT_MESSAGE__MESSAGE_NACK) {
        handle_nack(c, m->nack->version, m->nack->nonce, m->nack->reason);
    } else if (m->message_case == REMORA__V1__AGENT_MESSAGE__MESSAGE_STATS) {
        handle_stats(c, m->stats);
    } else if (m->message_case == REMORA__V1__AGENT_MESSAGE__MESSAGE_ADMIN_RESPONSE) {
        relay_answer(c, m->admin_response);
    } else if (m->message_case == REMORA__V1__AGENT_MESSAGE__MESSAGE_DISCOVER) {
        handle_discover(c, m->discover);
    } else {
        queue_status(c, GRPC_STATUS_INVALID_ARGUMENT, "empty AgentMessage");
        again = 0;
    }
    if (m != NULL)
        protobuf_c_message_free_unpacked(&m->base, NULL);
    if (again && !c->status_queued)
        start_recv(c);
    conn_maybe_free(c);
}

static void
conn_on_close(tag_t *tag, int ok)
{
    conn_t *c = container_of(tag, conn_t, on_close);
    --c->refs;
    conn_closed(c);
    conn_maybe_free(c);
}

static void
conn_on_request(tag_t *tag, int ok)
{
    conn_t *c = container_of(tag, conn_t, on_request);
    rm_control_server_t *srv = c->srv;
    if (!ok) { /* the server is shutting down */
        c->call = NULL;
        --c->refs;
        conn_maybe_free(c);
        return;
    }
    if (!atomic_load(&srv->stopping))
        arm_stream(srv);
    --c->refs;
    c->peer = grpc_call_get_peer(c->call);
    c->counted = 1;
    rm_cp_metrics_stream(+1);
    c->next = srv->conns;
    if (c->next != NULL)
        c->next->prev = &c->next;
    c->prev = &srv->conns;
    srv->conns = c;
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->cancelled;
    ++c->refs;
    start_batch(c->call, &op, 1, &c->on_close);
    start_recv(c);
}

static void
arm_stream(rm_control_server_t *srv)
{
    conn_t *c = rm_calloc(1, sizeof(*c));
    c->srv = srv;
    c->on_request.cb = conn_on_request;
    c->on_recv.cb = conn_on_recv;
    c->on_send.cb = conn_on_send;
    c->on_close.cb = conn_on_close;
    c->on_status.cb = conn_on_status;
    grpc_metadata_array_init(&c->md);
    c->refs = 1;
    ++srv->live;
    grpc_call_error err = grpc_server_request_registered_call(srv->server, srv->methods[M_STREAM], &c->call, &c->deadline, &c->md,
                                                              NULL, srv->cq, srv->cq, &c->on_request);
    if (err != GRPC_CALL_OK)
        rm_fatal("grpc_server_request_registered_call failed: %d", (int)err);
}

/* ------------------------------------------------------------------- --kubernetes (kube_source.h) */

/* A new state built from the Kubernetes API becomes the store's content; finished API jobs answer their calls. */
static void
kube_poll(rm_control_server_t *srv)
{
    rm_resource_list_t list = {0};
    uint64_t version;
    if (rm_kube_source_take(srv->kube, &list, &version)) {
        rm_store_replace(srv->store, &list, version);
        rm_resource_list_dispose(&list);
        if (srv->history_len == VERSION_HISTORY) {
            memmove(srv->history, srv->history + 1, (VERSION_HISTORY - 1) * sizeof(srv->history[0]));
            memmove(srv->history_seq, srv->history_seq + 1, (VERSION_HISTORY - 1) * sizeof(srv->history_seq[0]));
            --srv->history_len;
        }
        srv->history[srv->history_len] = version;
        srv->history_seq[srv->history_len++] = ++srv->seq_counter;
        rm_log_info(LOG, "version %llu from the Kubernetes API", (unsigned long long)version);
        on_store_changed(srv);
        check_waiters(srv);
    }
    rm_kube_source_dispatch(srv->kube);
}

static grpc_status_code
kube_status(const rm_kube_result_t *res)
{
    if (res->unavailable)
        return GRPC_STATUS_UNAVAILABLE;
    if (res->http_status == 404)
        return GRPC_STATUS_NOT_FOUND;
    if (res->http_status == 401 || res->http_status == 403)
        return GRPC_STATUS_PERMISSION_DENIED;
    if (res->http_status == 400 || res->http_status == 422)
        return GRPC_STATUS_INVALID_ARGUMENT;
    return GRPC_STATUS_INTERNAL;
}

typedef struct st_kube_apply_t {
    rm_control_server_t *srv;
    unary_t *u;
    size_t n, num_docs;
    Remora__V1__ResourceRef *refs;
    char **strs;
    rm_store_action_t *actions;
} kube_apply_t;

static void
kube_apply_free(kube_apply_t *a)
{
    for (size_t i = 0; i != 2 * a->n; ++i)
        free(a->strs[i]);
    free(a->strs);
    free(a->refs);
    free(a->actions);
    free(a);
}

static void
kube_apply_respond(kube_apply_t *a, uint64_t version, int changed)
{
    Remora__V1__ApplyResponse resp = REMORA__V1__APPLY_RESPONSE__INIT;
    Remora__V1__AppliedResource *applied = rm_calloc(a->n + 1, sizeof(*applied));
    Remora__V1__AppliedResource **aptrs = rm_calloc(a->n + 1, sizeof(*aptrs));
    for (size_t i = 0; i != a->n; ++i) {
        remora__v1__applied_resource__init(&applied[i]);
        applied[i].resource = &a->refs[i];
        applied[i].action = a->actions[i] == RM_STORE_CREATED      ? REMORA__V1__APPLIED_RESOURCE__ACTION__ACTION_CREATED
                            : a->actions[i] == RM_STORE_CONFIGURED ? REMORA__V1__APPLIED_RESOURCE__ACTION__ACTION_CONFIGURED
                                                                   : REMORA__V1__APPLIED_RESOURCE__ACTION__ACTION_UNCHANGED;
        aptrs[i] = &applied[i];
    }
    resp.n_resources = a->n;
    resp.resources = aptrs;
    resp.changed = changed;
    resp.version = version;
    respond_msg(a->u, &resp.base);
    free(aptrs);
    free(applied);
}

static void
kube_apply_done(void *ctx, const rm_kube_result_t *res)
{
    kube_apply_t *a = ctx;
    unary_t *u = a->u;
    if (!res->ok) {
        rm_log_warn(LOG, "apply through the Kubernetes API failed: %s", res->message);
        rm_cp_metrics_apply(RM_CP_APPLY_KUBE_ERROR);
        respond_error(u, kube_status(res), "the Kubernetes API refused or did not take the change: %s", res->message);
    } else {
        /* the state of that version may have been replaced before this server took it: a newer one holds the change too */
        uint64_t version = vseq(a->srv, res->version) != 0 ? res->version : rm_store_version(a->srv->store);
        rm_log_info(LOG, "apply: %zu resource(s) written through the Kubernetes API; version %llu", a->num_docs,
                    (unsigned long long)version);
        rm_cp_metrics_apply(RM_CP_APPLY_CHANGED);
        kube_apply_respond(a, version, 1);
    }
    kube_apply_free(a);
    --u->refs;
    unary_maybe_free(u);
}

/* Apply with --kubernetes: the changed resources are created or replaced as custom resources; the
 * answer waits until the watch brought them back, so that its version holds them (`apply --wait`). */
static void
kube_apply(rm_control_server_t *srv, unary_t *u, rm_batch_t *batch)
{
    size_t n = batch->resources.size;
    kube_apply_t *a = rm_calloc(1, sizeof(*a));
    a->srv = srv;
    a->u = u;
    a->n = n;
    a->refs = rm_calloc(n + 1, sizeof(a->refs[0]));
    a->strs = rm_calloc(2 * n + 1, sizeof(a->strs[0]));
    a->actions = rm_calloc(n + 1, sizeof(a->actions[0]));
    int changed;
    char err[512];
    /* a dry run on the served state: which resources are new, changed or the same */
    if (rm_store_apply(srv->store, batch, 1, a->actions, &changed, err, sizeof(err)) != 0)
        rm_fatal("a dry-run apply failed: %s", err);
    rm_kube_write_t *writes = rm_calloc(n + 1, sizeof(writes[0]));
    char **docs = rm_calloc(n + 1, sizeof(docs[0]));
    size_t nw = 0;
    for (size_t i = 0; i != n; ++i) {
        rm_resource_t *r = batch->resources.entries[i];
        remora__v1__resource_ref__init(&a->refs[i]);
        a->refs[i].kind = rm_kind_to_proto(r->kind);
        a->refs[i].namespace_ = a->strs[2 * i] = rm_strdup(r->ns);
        a->refs[i].name = a->strs[2 * i + 1] = rm_strdup(r->name);
        if (a->actions[i] == RM_STORE_UNCHANGED)
            continue;
        rm_node_t *node = rm_render_resource(r->kind, r->msg);
        rm_rpc_buf_t buf = {0};
        rm_render_json(node, &buf);
        rm_node_free(node);
        docs[nw] = rm_strndup((const char *)buf.base, buf.len);
        rm_rpc_buf_dispose(&buf);
        writes[nw] = (rm_kube_write_t){r->kind, r->ns, r->name, docs[nw]};
        ++nw;
    }
    a->num_docs = nw;
    if (nw == 0) {
        rm_log_info(LOG, "apply: no change (version %llu)", (unsigned long long)rm_store_version(srv->store));
        rm_cp_metrics_apply(RM_CP_APPLY_UNCHANGED);
        kube_apply_respond(a, rm_store_version(srv->store), 0);
        kube_apply_free(a);
    } else {
        ++u->refs;
        rm_kube_source_apply(srv->kube, writes, nw, kube_apply_done, a);
    }
    for (size_t i = 0; i != nw; ++i)
        free(docs[i]);
    free(docs);
    free(writes);
}

typedef struct st_kube_call_t {
    rm_control_server_t *srv;
    unary_t *u;
    char *what;
    uint8_t *req;
    size_t req_len;
} kube_call_t;

static void
kube_delete_done(void *ctx, const rm_kube_result_t *res)
{
    kube_call_t *k = ctx;
    unary_t *u = k->u;
    if (!res->ok) {
        rm_cp_metrics_delete(kube_status(res) == GRPC_STATUS_NOT_FOUND ? RM_CP_DELETE_NOT_FOUND : RM_CP_DELETE_KUBE_ERROR);
        respond_error(u, kube_status(res), "%s", res->message);
    } else {
        rm_cp_metrics_delete(RM_CP_DELETE_DELETED);
        Remora__V1__DeleteResponse resp = REMORA__V1__DELETE_RESPONSE__INIT;
        resp.version = vseq(k->srv, res->version) != 0 ? res->version : rm_store_version(k->srv->store);
        rm_log_info(LOG, "delete %s through the Kubernetes API: version %llu", k->what, (unsigned long long)resp.version);
        respond_msg(u, &resp.base);
    }
    free(k->what);
    free(k);
    --u->refs;
    unary_maybe_free(u);
}

static void
kube_certify_done(void *ctx, const rm_kube_result_t *res)
{
    kube_call_t *k = ctx;
    unary_t *u = k->u;
    Remora__V1__CertifyRequest *req = remora__v1__certify_request__unpack(NULL, k->req_len, k->req);
    if (req == NULL)
        rm_fatal("a CertifyRequest packed here does not unpack");
    grpc_byte_buffer *resp = NULL;
    char why[1024] = "";
    grpc_status_code code = rm_identity_certify_reviewed(k->srv->identity, req, res->ns, res->sa, res->pod_name,
                                                         res->ok ? NULL : res->message, res->unavailable, &resp, why, sizeof(why));
    if (code == GRPC_STATUS_OK)
        respond(u, code, NULL, resp);
    else
        respond(u, code, why, NULL);
    remora__v1__certify_request__free_unpacked(req, NULL);
    OPENSSL_cleanse(k->req, k->req_len);
    free(k->req);
    free(k);
    --u->refs;
    unary_maybe_free(u);
}

/* Certify with --kubernetes: a projected service-account token is checked with a TokenReview; a
 * bootstrap token ("rmt1.") as without. Returns 1 when it took the call (answered later). */
static int
kube_certify(rm_control_server_t *srv, unary_t *u, Remora__V1__CertifyRequest *req)
{
    credentials_t cr;
    get_credentials(u->call, &u->md, NULL, &cr);
    const char *token = req->token[0] != '\0' ? req->token : cr.caller.bearer;
    if (token == NULL || token[0] == '\0' || strncmp(token, RM_TOKEN_PREFIX, strlen(RM_TOKEN_PREFIX)) == 0)
        return 0;
    kube_call_t *k = rm_calloc(1, sizeof(*k));
    k->srv = srv;
    k->u = u;
    k->req_len = protobuf_c_message_get_packed_size(&req->base);
    k->req = rm_malloc(k->req_len + 1);
    protobuf_c_message_pack(&req->base, k->req);
    ++u->refs;
    rm_kube_source_review(srv->kube, token, kube_certify_done, k);
    OPENSSL_cleanse(cr.bearer, sizeof(cr.bearer));
    return 1;
}

/* ----------------------------------------------------------------------------------------- admin */

static void
handle_apply(rm_control_server_t *srv, unary_t *u, ProtobufCMessage *msg)
{
    Remora__V1__ApplyRequest *req = (Remora__V1__ApplyRequest *)msg;
    Remora__V1__ApplyResponse resp = REMORA__V1__APPLY_RESPONSE__INIT;
    rm_batch_t batch;
    rm_batch_init(&batch);
    for (size_t i = 0; i != req->n_documents; ++i) {
        const char *file = req->documents[i]->file[0] != '\0' ? req->documents[i]->file : "-";
        rm_batch_parse(&batch, file, req->documents[i]->content.data, req->documents[i]->content.len);
    }
    int empty = batch.errors.size == 0 && batch.num_documents == 0;
    if (empty)
        rm_doc_errors_add(&batch.errors, req->n_documents != 0 ? req->documents[0]->file : "-", 0,
                          "no documents to apply (the input is empty)");
    size_t document_errors = batch.errors.size;
    /* also when documents failed: one apply should list every problem */
    rm_batch_check(&batch, rm_store_exists_cb, srv->store);
    resp.version = rm_store_version(srv->store);
    if (batch.errors.size != 0) {
        Remora__V1__DocumentError *errs = rm_calloc(batch.errors.size, sizeof(*errs));
        Remora__V1__DocumentError **ptrs = rm_calloc(batch.errors.size, sizeof(*ptrs));
        for (size_t i = 0; i != batch.errors.size; ++i) {
            remora__v1__document_error__init(&errs[i]);
            errs[i].file = batch.errors.entries[i].file;
            errs[i].line = batch.errors.entries[i].line;
            errs[i].message = batch.errors.entries[i].message;
            ptrs[i] = &errs[i];
        }
        resp.n_errors = batch.errors.size;
        resp.errors = ptrs;
        rm_log_info(LOG, "apply rejected: %zu error(s), first: %s:%u: %s", batch.errors.size, errs[0].file, errs[0].line,
                    errs[0].message);
        rm_cp_metrics_apply(empty ? RM_CP_APPLY_EMPTY : document_errors != 0 ? RM_CP_APPLY_INVALID : RM_CP_APPLY_REFERENCE);
        respond_msg(u, &resp.base);
        free(ptrs);
        free(errs);
        rm_batch_dispose(&batch);
        return;
    }
    if (srv->kube != NULL && !req->dry_run) {
        kube_apply(srv, u, &batch);
        rm_batch_dispose(&batch);
        return;
    }
    size_t n = batch.resources.size;
    rm_store_action_t *actions = rm_calloc(n + 1, sizeof(*actions));
    /* keep the identities: accepted resources move into the store and leave the batch */
    Remora__V1__AppliedResource *applied = rm_calloc(n + 1, sizeof(*applied));
    Remora__V1__AppliedResource **aptrs = rm_calloc(n + 1, sizeof(*aptrs));
    Remora__V1__ResourceRef *refs = rm_calloc(n + 1, sizeof(*refs));
    char **names = rm_calloc(2 * n + 1, sizeof(*names));
    for (size_t i = 0; i != n; ++i) {
        rm_resource_t *r = batch.resources.entries[i];
        remora__v1__resource_ref__init(&refs[i]);
        refs[i].kind = rm_kind_to_proto(r->kind);
        refs[i].namespace_ = names[2 * i] = rm_strdup(r->ns);
        refs[i].name = names[2 * i + 1] = rm_strdup(r->name);
    }
    char err[512];
    int changed;
    uint64_t t0 = rm_now_us();
    int rc = rm_store_apply(srv->store, &batch, req->dry_run, actions, &changed, err, sizeof(err));
    uint64_t store_us = rm_now_us() - t0;
    if (rc != 0) {
        rm_log_error(LOG, "apply failed: %s", err);
        rm_cp_metrics_apply(RM_CP_APPLY_STORE_ERROR);
        respond_error(u, GRPC_STATUS_INTERNAL, "the control plane could not store the change: %s", err);
    } else {
        for (size_t i = 0; i != n; ++i) {
            remora__v1__applied_resource__init(&applied[i]);
            applied[i].resource = &refs[i];
            applied[i].action = actions[i] == RM_STORE_CREATED      ? REMORA__V1__APPLIED_RESOURCE__ACTION__ACTION_CREATED
                                : actions[i] == RM_STORE_CONFIGURED ? REMORA__V1__APPLIED_RESOURCE__ACTION__ACTION_CONFIGURED
                                                                    : REMORA__V1__APPLIED_RESOURCE__ACTION__ACTION_UNCHANGED;
            aptrs[i] = &applied[i];
        }
        resp.n_resources = n;
        resp.resources = aptrs;
        resp.changed = changed;
        resp.version = rm_store_version(srv->store);
        rm_cp_metrics_apply(changed ? RM_CP_APPLY_CHANGED : req->dry_run ? RM_CP_APPLY_DRY_RUN : RM_CP_APPLY_UNCHANGED);
        if (changed) {
            rm_log_info(LOG, "apply: version %llu (%zu resource(s) in %zu document(s); stored in %.1f ms)",
                        (unsigned long long)resp.version, n, batch.num_documents, (double)store_us / 1000);
            on_store_changed(srv);
        } else {
            rm_log_info(LOG, "apply%s: no change (version %llu)", req->dry_run ? " (dry run)" : "",
                        (unsigned long long)resp.version);
        }
        respond_msg(u, &resp.base);
    }
    for (size_t i = 0; i != 2 * n; ++i)
        free(names[i]);
    free(names);
    free(refs);
    free(aptrs);
    free(applied);
    free(actions);
    rm_batch_dispose(&batch);
}

static uint32_t
field_id(const ProtobufCMessageDescriptor *d, const char *name)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, name);
    if (f == NULL)
        rm_fatal("%s has no field %s", d->name, name);
    return f->id;
}

static void
handle_get(rm_control_server_t *srv, unary_t *u, ProtobufCMessage *msg)
{
    Remora__V1__GetRequest *req = (Remora__V1__GetRequest *)msg;
    rm_kind_t only = RM_KIND__ALL;
    if (req->kind != REMORA__V1__RESOURCE_KIND__RESOURCE_KIND_UNSPECIFIED && rm_kind_from_proto(req->kind, &only) != 0) {
        respond_error(u, GRPC_STATUS_INVALID_ARGUMENT, "unknown resource kind %d", (int)req->kind);
        return;
    }
    if (req->name[0] != '\0' && only == RM_KIND__ALL) {
        respond_error(u, GRPC_STATUS_INVALID_ARGUMENT, "a name needs a kind");
        return;
    }
    const char *ns = req->namespace_[0] != '\0' ? req->namespace_ : req->name[0] != '\0' ? "default" : NULL;
    /* stored encodings are copied as they are: a GetResponse is version plus repeated resources */
    rm_rpc_buf_t buf = {0};
    uint64_t version = rm_store_version(srv->store);
    if (version != 0)
        rm_rpc_buf_append_varint_field(&buf, field_id(&remora__v1__get_response__descriptor, "version"), version);
    size_t found = 0;
    for (int k = 0; k != RM_KIND__ALL; ++k) {
        if (only != RM_KIND__ALL && k != (int)only)
            continue;
        uint32_t field = field_id(&remora__v1__get_response__descriptor, rm_kind_field((rm_kind_t)k));
        size_t n;
        rm_resource_t *const *list = rm_store_list(srv->store, (rm_kind_t)k, &n);
        for (size_t i = 0; i != n; ++i) {
            if (ns != NULL && strcmp(list[i]->ns, ns) != 0)
                continue;
            if (req->name[0] != '\0' && strcmp(list[i]->name, req->name) != 0)
                continue;
            rm_rpc_buf_append_bytes_field(&buf, field, list[i]->bytes, list[i]->len);
            ++found;
        }
    }
    if (req->name[0] != '\0' && found == 0) {
        respond_error(u, GRPC_STATUS_NOT_FOUND, "%s/%s not found in namespace %s", rm_kind_lower(only), req->name, ns);
    } else {
        grpc_slice s = grpc_slice_from_copied_buffer((const char *)buf.base, buf.len);
        respond(u, GRPC_STATUS_OK, NULL, grpc_raw_byte_buffer_create(&s, 1));
        grpc_slice_unref(s);
    }
    rm_rpc_buf_dispose(&buf);
}

static void
handle_delete(rm_control_server_t *srv, unary_t *u, ProtobufCMessage *msg)
{
    Remora__V1__DeleteRequest *req = (Remora__V1__DeleteRequest *)msg;
    rm_kind_t kind;
    if (req->resource == NULL || rm_kind_from_proto(req->resource->kind, &kind) != 0 || req->resource->name[0] == '\0') {
        rm_cp_metrics_delete(RM_CP_DELETE_INVALID);
        respond_error(u, GRPC_STATUS_INVALID_ARGUMENT, "delete needs a kind and a name");
        return;
    }
    const char *ns = req->resource->namespace_[0] != '\0' ? req->resource->namespace_ : "default";
    char err[1024];
    if (srv->kube != NULL) {
        /* still in use by served resources: refused as in the file store; not served (invalid): the API may hold it */
        if (rm_store_check_delete(srv->store, kind, ns, req->resource->name, err, sizeof(err)) == RM_STORE_EINUSE) {
            rm_cp_metrics_delete(RM_CP_DELETE_IN_USE);
            respond_error(u, GRPC_STATUS_FAILED_PRECONDITION, "%s", err);
            return;
        }
        kube_call_t *k = rm_calloc(1, sizeof(*k));
        k->srv = srv;
        k->u = u;
        snprintf(err, sizeof(err), "%s/%s (namespace %s)", rm_kind_lower(kind), req->resource->name, ns);
        k->what = rm_strdup(err);
        ++u->refs;
        rm_kube_source_delete(srv->kube, kind, ns, req->resource->name, kube_delete_done, k);
        return;
    }
    int rc = rm_store_delete(srv->store, kind, ns, req->resource->name, err, sizeof(err));
    rm_cp_metrics_delete(rc == RM_STORE_ENOENT   ? RM_CP_DELETE_NOT_FOUND
                         : rc == RM_STORE_EINUSE ? RM_CP_DELETE_IN_USE
                         : rc != 0               ? RM_CP_DELETE_STORE_ERROR
                                                 : RM_CP_DELETE_DELETED);
    if (rc == RM_STORE_ENOENT) {
        respond_error(u, GRPC_STATUS_NOT_FOUND, "%s", err);
    } else if (rc == RM_STORE_EINUSE) {
        respond_error(u, GRPC_STATUS_FAILED_PRECONDITION, "%s", err);
    } else if (rc != 0) {
        rm_log_error(LOG, "delete failed: %s", err);
        respond_error(u, GRPC_STATUS_INTERNAL, "the control plane could not store the change: %s", err);
    } else {
        Remora__V1__DeleteResponse resp = REMORA__V1__DELETE_RESPONSE__INIT;
        resp.version = rm_store_version(srv->store);
        rm_log_info(LOG, "delete %s/%s (namespace %s): version %llu", rm_kind_lower(kind), req->resource->name, ns,
                    (unsigned long long)resp.version);
        on_store_changed(srv);
        respond_msg(u, &resp.base);
    }
}

/* Agents in node-id order; `filter` NULL for all. */
static size_t
collect_agents(rm_control_server_t *srv, agent_t **out, int (*filter)(const agent_t *, uint64_t), uint64_t arg)
{
    size_t n = 0;
    for (size_t i = 0; i != srv->num_agents; ++i)
        if (filter == NULL || filter(srv->agents[i], arg))
            out[n++] = srv->agents[i];
    qsort(out, n, sizeof(out[0]), cmp_agent);
    return n;
}

static void
fill_agents(agent_t **list, size_t n, size_t *n_out, Remora__V1__AgentStatus ***out, void **to_free)
{
    struct entry {
        Remora__V1__AgentStatus st;
        Remora__V1__Timestamp ts;
    } *entries = rm_calloc(n + 1, sizeof(*entries));
    Remora__V1__AgentStatus **ptrs = rm_calloc(n + 1, sizeof(*ptrs));
    for (size_t i = 0; i != n; ++i) {
        fill_agent_status(&entries[i].st, &entries[i].ts, list[i]);
        ptrs[i] = &entries[i].st;
    }
    *n_out = n;
    *out = ptrs;
    to_free[0] = entries;
    to_free[1] = ptrs;
}

static void
handle_status(rm_control_server_t *srv, unary_t *u, ProtobufCMessage *msg)
{
    Remora__V1__StatusResponse resp = REMORA__V1__STATUS_RESPONSE__INIT;
    agent_t **list = rm_calloc(srv->num_agents + 1, sizeof(*list));
    void *to_free[2];
    fill_agents(list, collect_agents(srv, list, NULL, 0), &resp.n_agents, &resp.agents, to_free);
    resp.version = rm_store_version(srv->store);
    pthread_mutex_lock(&srv->tls_mutex);
    if (srv->webhook_address != NULL) {
        resp.webhook_address = srv->webhook_address;
        resp.n_webhook_dns = srv->num_webhook_dns;
        resp.webhook_dns = srv->webhook_dns;
    }
    respond_msg(u, &resp.base);
    pthread_mutex_unlock(&srv->tls_mutex);
    free(to_free[0]);
    free(to_free[1]);
    free(list);
}

static int
is_connected(const agent_t *a, uint64_t unused)
{
    return a->conn != NULL;
}

static int
refused(const agent_t *a, uint64_t version)
{
    /* a NACK counts until the agent ACKs that version or a later one */
    if (a->conn == NULL)
        return 0;
    const rm_control_server_t *srv = a->conn->srv;
    uint64_t nack = vseq(srv, a->nack_version);
    return nack != 0 && nack >= vseq(srv, version) && nack > vseq(srv, a->applied_version);
}

static int
pending(const agent_t *a, uint64_t version)
{
    return a->conn != NULL && vseq(a->conn->srv, a->applied_version) < vseq(a->conn->srv, version) && !refused(a, version);
}

static void
finish_wait(rm_control_server_t *srv, unary_t *u, Remora__V1__WaitForVersionResponse__Outcome outcome,
            int (*filter)(const agent_t *, uint64_t))
{
    Remora__V1__WaitForVersionResponse resp = REMORA__V1__WAIT_FOR_VERSION_RESPONSE__INIT;
    agent_t **list = rm_calloc(srv->num_agents + 1, sizeof(*list));
    size_t n = collect_agents(srv, list, filter, u->wait_version);
    if (outcome == REMORA__V1__WAIT_FOR_VERSION_RESPONSE__OUTCOME__OUTCOME_REFUSED && n > 1)
        n = 1;
    void *to_free[2];
    fill_agents(list, n, &resp.n_agents, &resp.agents, to_free);
    resp.outcome = outcome;
    resp.version = rm_store_version(srv->store);
    waiter_unlink(u);
    respond_msg(u, &resp.base);
    free(to_free[0]);
    free(to_free[1]);
    free(list);
}

/* A waiter's counts over every agent: at its start, and with --kubernetes when vseq() changed. */
static void
waiter_count(rm_control_server_t *srv, unary_t *u)
{
    u->wait_pending = u->wait_refused = 0;
    for (size_t i = 0; i != srv->num_agents; ++i) {
        u->wait_refused += refused(srv->agents[i], u->wait_version);
        u->wait_pending += pending(srv->agents[i], u->wait_version);
    }
    u->wait_seq = srv->seq_counter;
}

/*
 * What an agent adds to the counts the ACK path reads: the connected and current agents and every waiter's pending
 * and refused ones. Called with -1 before its connection, applied version or NACK change and +1 after, so that an
 * ACK costs O(waiters) instead of a pass over every agent per waiter. The current count is of snapshot_version:
 * when that moved since it was counted, it is counted again first (once per version).
 */
static void
agent_change(rm_control_server_t *srv, const agent_t *a, int sign)
{
    if (sign < 0 && srv->current_of != srv->snapshot_version) {
        srv->num_current = 0;
        for (size_t i = 0; i != srv->num_agents; ++i)
            srv->num_current += srv->agents[i]->conn != NULL && srv->agents[i]->applied_version == srv->snapshot_version;
        srv->current_of = srv->snapshot_version;
    }
    if (a->conn == NULL)
        return;
    size_t current = a->applied_version == srv->current_of;
    if (sign < 0) {
        --srv->num_connected;
        srv->num_current -= current;
    } else {
        ++srv->num_connected;
        srv->num_current += current;
    }
    for (unary_t *u = srv->waiters; u != NULL; u = u->next_waiter) {
        if (u->wait_seq != srv->seq_counter)
            continue; /* --kubernetes: the history moved, check_waiters() counts it whole */
        size_t r = (size_t)refused(a, u->wait_version), p = (size_t)pending(a, u->wait_version);
        if (sign < 0) {
            u->wait_refused -= r;
            u->wait_pending -= p;
        } else {
            u->wait_refused += r;
            u->wait_pending += p;
        }
    }
}

/* Answers the waiters whose condition now holds (or whose time is up): O(waiters), from their counts. */
static void
check_waiters(rm_control_server_t *srv)
{
    if (srv->waiters == NULL)
        return;
    uint64_t now = rm_now_ms();
    unary_t *u = srv->waiters;
    while (u != NULL) {
        unary_t *next = u->next_waiter;
        if (srv->kube != NULL && u->wait_seq != srv->seq_counter)
            waiter_count(srv, u);
        if (u->wait_refused != 0)
            finish_wait(srv, u, REMORA__V1__WAIT_FOR_VERSION_RESPONSE__OUTCOME__OUTCOME_REFUSED, refused);
        else if (u->wait_pending == 0)
            finish_wait(srv, u, REMORA__V1__WAIT_FOR_VERSION_RESPONSE__OUTCOME__OUTCOME_APPLIED, is_connected);
        else if (now >= u->wait_deadline_ms)
            finish_wait(srv, u, REMORA__V1__WAIT_FOR_VERSION_RESPONSE__OUTCOME__OUTCOME_TIMED_OUT, pending);
        u = next;
    }
}

static void
handle_wait(rm_control_server_t *srv, unary_t *u, ProtobufCMessage *msg)
{
    Remora__V1__WaitForVersionRequest *req = (Remora__V1__WaitForVersionRequest *)msg;
    uint64_t current = rm_store_version(srv->store);
    if (srv->kube != NULL ? req->version != 0 && vseq(srv, req->version) == 0 : req->version > current) {
        respond_error(u, GRPC_STATUS_OUT_OF_RANGE, "version %llu does not exist (the current version is %llu)",
                      (unsigned long long)req->version, (unsigned long long)current);
        return;
    }
    int64_t ms = DEFAULT_WAIT_MS;
    if (req->timeout != NULL && (req->timeout->seconds != 0 || req->timeout->nanos != 0)) {
        if (req->timeout->seconds < 0 || req->timeout->nanos < 0) {
            respond_error(u, GRPC_STATUS_INVALID_ARGUMENT, "the timeout must not be negative");
            return;
        }
        ms =
            req->timeout->seconds > MAX_WAIT_MS / 1000 ? MAX_WAIT_MS : req->timeout->seconds * 1000 + req->timeout->nanos / 1000000;
    }
    u->wait_version = req->version != 0 ? req->version : current;
    u->wait_deadline_ms = rm_now_ms() + (uint64_t)ms;
    /* learn of the client going away while it waits */
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &u->cancelled;
    ++u->refs;
    u->close_pending = 1;
    start_batch(u->call, &op, 1, &u->on_close);
    u->next_waiter = srv->waiters;
    if (u->next_waiter != NULL)
        u->next_waiter->prev_waiter = &u->next_waiter;
    u->prev_waiter = &srv->waiters;
    srv->waiters = u;
    waiter_count(srv, u);
    check_waiters(srv);
}

static void
handle_stat(rm_control_server_t *srv, unary_t *u, ProtobufCMessage *msg)
{
    Remora__V1__StatRequest *req = (Remora__V1__StatRequest *)msg;
    rm_stat_by_t by;
    if (rm_stat_by_parse(req->by, &by) != 0) {
        respond_error(u, GRPC_STATUS_INVALID_ARGUMENT, "unknown grouping '%.100s': by is service, route or backend", req->by);
        return;
    }
    uint64_t window_ms = req->window_ms != 0 ? req->window_ms : RM_STAT_WINDOW_DEFAULT_MS;
    if (window_ms < RM_STAT_WINDOW_MIN_MS || window_ms > RM_STAT_WINDOW_MAX_MS) {
        respond_error(u, GRPC_STATUS_INVALID_ARGUMENT, "the window must be from %ds to %dm (the control plane keeps 10 minutes)",
                      RM_STAT_WINDOW_MIN_MS / 1000, RM_STAT_WINDOW_MAX_MS / 60000);
        return;
    }
    rm_stat_query_t *q = rm_stat_query_create(by, window_ms, req->namespace_, rm_now_ms());
    for (size_t i = 0; i != srv->num_agents; ++i)
        rm_stat_query_add(q, srv->agents[i]->node_id, srv->agents[i]->stats);
    const rm_stat_row_t *rows;
    size_t n = rm_stat_query_rows(q, &rows);
    Remora__V1__StatResponse resp = REMORA__V1__STAT_RESPONSE__INIT;
    Remora__V1__StatRow *out = rm_calloc(n + 1, sizeof(*out));
    Remora__V1__StatRow **ptrs = rm_calloc(n + 1, sizeof(*ptrs));
    for (size_t i = 0; i != n; ++i) {
        remora__v1__stat_row__init(&out[i]);
        out[i].name = rows[i].name;
        out[i].node_id = rows[i].node_id;
        out[i].agents = rows[i].agents;
        out[i].rps = rows[i].rps;
        out[i].success_rate = rows[i].success_rate;
        out[i].p50_ms = rows[i].p50_ms;
        out[i].p95_ms = rows[i].p95_ms;
        out[i].p99_ms = rows[i].p99_ms;
        out[i].requests = rows[i].requests;
        out[i].failures = rows[i].failures;
        ptrs[i] = &out[i];
    }
    resp.n_rows = n;
    resp.rows = ptrs;
    resp.window_ms = window_ms;
    respond_msg(u, &resp.base);
    free(ptrs);
    free(out);
    rm_stat_query_destroy(q);
}

/* Admin.Proxy: relays one admin command to a connected agent (see relay_* above). */
static void
handle_proxy(rm_control_server_t *srv, unary_t *u, ProtobufCMessage *msg)
{
    Remora__V1__ProxyRequest *req = (Remora__V1__ProxyRequest *)msg;
    static const char *const commands[] = {"stats", "config", "clusters", "log-level"};
    int known = 0;
    for (size_t i = 0; i != sizeof(commands) / sizeof(commands[0]); ++i)
        known |= strcmp(req->command, commands[i]) == 0;
    if (!known) {
        respond_error(u, GRPC_STATUS_INVALID_ARGUMENT, "unknown proxy command '%.60s': stats, config, clusters or log-level",
                      req->command);
        return;
    }
    if (req->argument[0] != '\0' && strcmp(req->command, "log-level") != 0) {
        respond_error(u, GRPC_STATUS_INVALID_ARGUMENT, "%s takes no argument", req->command);
        return;
    }
    if (req->argument[0] != '\0' && strcmp(req->argument, "error") != 0 && strcmp(req->argument, "warn") != 0 &&
        strcmp(req->argument, "info") != 0 && strcmp(req->argument, "debug") != 0) {
        respond_error(u, GRPC_STATUS_INVALID_ARGUMENT, "unknown log level '%.40s': error, warn, info or debug", req->argument);
        return;
    }
    int64_t ms = DEFAULT_PROXY_MS;
    if (req->timeout != NULL && (req->timeout->seconds != 0 || req->timeout->nanos != 0)) {
        if (req->timeout->seconds < 0 || req->timeout->nanos < 0) {
            respond_error(u, GRPC_STATUS_INVALID_ARGUMENT, "the timeout must not be negative");
            return;
        }
        ms = req->timeout->seconds >= MAX_PROXY_MS / 1000 ? MAX_PROXY_MS
                                                          : req->timeout->seconds * 1000 + req->timeout->nanos / 1000000;
        if (ms == 0)
            ms = 1;
    }
    agent_t *a = valid_node_id(req->node_id) ? find_agent(srv, req->node_id, 0) : NULL;
    if (a == NULL) {
        respond_error(u, GRPC_STATUS_NOT_FOUND,
                      "no agent with node id '%.253s' has connected to this control plane (see remoractl status)", req->node_id);
        return;
    }
    conn_t *c = a->conn;
    if (c == NULL || c->status_queued || c->closed) {
        respond_error(u, GRPC_STATUS_UNAVAILABLE, "agent %s is not connected to this control plane (see remoractl status)",
                      a->node_id);
        return;
    }
    if (!c->admin_requests) {
        respond_error(u, GRPC_STATUS_FAILED_PRECONDITION,
                      "agent %s does not answer admin requests through the control plane (an older remora-agent?)", a->node_id);
        return;
    }
    if (c->num_proxies >= MAX_PROXY_PER_AGENT) {
        respond_error(u, GRPC_STATUS_RESOURCE_EXHAUSTED, "agent %s has %d admin requests outstanding already; retry later",
                      a->node_id, MAX_PROXY_PER_AGENT);
        return;
    }
    u->proxy_id = ++srv->proxy_counter;
    /* a Snapshot with only admin_request set: the agent tells it from a snapshot by that field */
    Remora__V1__AdminRequest ar = REMORA__V1__ADMIN_REQUEST__INIT;
    ar.id = u->proxy_id;
    ar.command = req->command;
    ar.argument = req->argument;
    Remora__V1__Snapshot snap = REMORA__V1__SNAPSHOT__INIT;
    snap.admin_request = &ar;
    size_t len = protobuf_c_message_get_packed_size(&snap.base);
    u->proxy_msg = grpc_slice_malloc(len);
    protobuf_c_message_pack(&snap.base, GRPC_SLICE_START_PTR(u->proxy_msg));
    u->proxy_timeout_ms = (uint64_t)ms;
    u->proxy_deadline_ms = rm_now_ms() + (uint64_t)ms;
    u->proxy_sent = 0;
    /* learn of the client going away while it waits */
    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &u->cancelled;
    ++u->refs;
    u->close_pending = 1;
    start_batch(u->call, &op, 1, &u->on_close);
    u->proxy_conn = c;
    u->proxy_node = rm_strdup(a->node_id);
    ++c->num_proxies;
    u->next_proxy = srv->proxies;
    if (u->next_proxy != NULL)
        u->next_proxy->prev_proxy = &u->next_proxy;
    u->prev_proxy = &srv->proxies;
    srv->proxies = u;
    rm_log_info(LOG, "agent %s: admin request %llu (%s%s%s) relayed", a->node_id, (unsigned long long)u->proxy_id, req->command,
                req->argument[0] != '\0' ? " " : "", req->argument);
    pump(c);
}

/* The identity methods (identity.h): the service builds the answer, this only sends it. */
static void
handle_identity(rm_control_server_t *srv, unary_t *u, ProtobufCMessage *msg)
{
    if (srv->identity == NULL) {
        respond_error(u, GRPC_STATUS_FAILED_PRECONDITION, "this control plane has no certificate authority");
        return;
    }
    if (srv->kube != NULL && u->method == M_CERTIFY && kube_certify(srv, u, (Remora__V1__CertifyRequest *)msg))
        return;
    grpc_byte_buffer *resp = NULL;
    char why[1024] = "";
    grpc_status_code code;
    switch (u->method) {
    case M_CREATE_TOKEN:
        code = rm_identity_create_token(srv->identity, (Remora__V1__CreateTokenRequest *)msg, &resp, why, sizeof(why));
        break;
    case M_IDENTITY_STATUS:
        code = rm_identity_status(srv->identity, &resp, why, sizeof(why));
        break;
    case M_CERTIFY: {
        /* the token travels in the request; one sent as `authorization: Bearer` does as well */
        Remora__V1__CertifyRequest *req = (Remora__V1__CertifyRequest *)msg;
        char *body_token = req->token;
        credentials_t cr;
        get_credentials(u->call, &u->md, NULL, &cr);
        if (req->token[0] == '\0' && cr.caller.bearer != NULL)
            req->token = cr.bearer;
        code = rm_identity_certify(srv->identity, req, &resp, why, sizeof(why));
        req->token = body_token;
    } break;
    default:
        code = rm_identity_trust_bundle(srv->identity, &resp, why, sizeof(why));
        break;
    }
    if (code == GRPC_STATUS_OK)
        respond(u, code, NULL, resp);
    else
        respond(u, code, why, NULL);
}

static const struct {
    const char *path;
    const ProtobufCMessageDescriptor *request;
    void (*handle)(rm_control_server_t *srv, unary_t *u, ProtobufCMessage *req);
} methods[M__COUNT] = {
    [M_APPLY] = {"/remora.v1.Admin/Apply", &remora__v1__apply_request__descriptor, handle_apply},
    [M_GET] = {"/remora.v1.Admin/Get", &remora__v1__get_request__descriptor, handle_get},
    [M_DELETE] = {"/remora.v1.Admin/Delete", &remora__v1__delete_request__descriptor, handle_delete},
    [M_STATUS] = {"/remora.v1.Admin/Status", &remora__v1__status_request__descriptor, handle_status},
    [M_WAIT] = {"/remora.v1.Admin/WaitForVersion", &remora__v1__wait_for_version_request__descriptor, handle_wait},
    [M_STAT] = {"/remora.v1.Admin/Stat", &remora__v1__stat_request__descriptor, handle_stat},
    [M_CREATE_TOKEN] = {"/remora.v1.Admin/CreateToken", &remora__v1__create_token_request__descriptor, handle_identity},
    [M_IDENTITY_STATUS] = {"/remora.v1.Admin/IdentityStatus", &remora__v1__identity_status_request__descriptor, handle_identity},
    [M_PROXY] = {"/remora.v1.Admin/Proxy", &remora__v1__proxy_request__descriptor, handle_proxy},
    [M_CERTIFY] = {"/remora.v1.Identity/Certify", &remora__v1__certify_request__descriptor, handle_identity},
    [M_TRUST_BUNDLE] = {"/remora.v1.Identity/GetTrustBundle", &remora__v1__get_trust_bundle_request__descriptor, handle_identity},
    [M_STREAM] = {"/remora.v1.Discovery/StreamSnapshots", NULL, NULL},
};

/* Admin methods need the admin credential; GetTrustBundle a workload identity (or the admin credential); Certify its token. */
static grpc_status_code
authorize_unary(rm_control_server_t *srv, unary_t *u, char *why, size_t whysz)
{
    if (srv->insecure || u->method == M_CERTIFY)
        return GRPC_STATUS_OK;
    credentials_t cr;
    get_credentials(u->call, &u->md, NULL, &cr);
    if (u->method == M_TRUST_BUNDLE)
        return rm_identity_authenticate_workload(srv->identity, RM_AUTH_API_IDENTITY, &cr.caller, NULL, 1, why, whysz);
    return rm_identity_authenticate_admin(srv->identity, &cr.caller, why, whysz);
}

static void
unary_on_request(tag_t *tag, int ok)
{
    unary_t *u = container_of(tag, unary_t, on_request);
    rm_control_server_t *srv = u->srv;
    --u->refs;
    if (!ok) { /* the server is shutting down */
        u->call = NULL;
        unary_maybe_free(u);
        return;
    }
    if (!atomic_load(&srv->stopping))
        arm_unary(srv, u->method);
    ProtobufCMessage *req = NULL;
    if (u->method == M_UNKNOWN) {
        respond_error(u, GRPC_STATUS_UNIMPLEMENTED, "unknown method %.*s", (int)GRPC_SLICE_LENGTH(u->call_details.method),
                      (const char *)GRPC_SLICE_START_PTR(u->call_details.method));
    } else {
        /* who is calling first: an unauthenticated caller learns nothing about its request */
        char why[600];
        grpc_status_code code = authorize_unary(srv, u, why, sizeof(why));
        if (code != GRPC_STATUS_OK) {
            respond(u, code, why, NULL);
        } else if (u->payload == NULL || (req = rm_rpc_unpack(methods[u->method].request, u->payload)) == NULL) {
            respond_error(u, GRPC_STATUS_INVALID_ARGUMENT, "the request does not parse as %s", methods[u->method].request->name);
        } else {
            methods[u->method].handle(srv, u, req);
            protobuf_c_message_free_unpacked(req, NULL);
        }
    }
    unary_maybe_free(u);
}

static void
arm_unary(rm_control_server_t *srv, int method)
{
    unary_t *u = rm_calloc(1, sizeof(*u));
    u->srv = srv;
    u->method = method;
    u->on_request.cb = unary_on_request;
    u->on_done.cb = unary_on_done;
    u->on_close.cb = unary_on_close;
    u->details = grpc_empty_slice();
    grpc_metadata_array_init(&u->md);
    grpc_call_details_init(&u->call_details);
    u->refs = 1;
    ++srv->live;
    grpc_call_error err =
        method == M_UNKNOWN
            ? grpc_server_request_call(srv->server, &u->call, &u->call_details, &u->md, srv->cq, srv->cq, &u->on_request)
            : grpc_server_request_registered_call(srv->server, srv->methods[method], &u->call, &u->deadline, &u->md, &u->payload,
                                                  srv->cq, srv->cq, &u->on_request);
    if (err != GRPC_CALL_OK)
        rm_fatal("grpc_server_request_registered_call failed: %d", (int)err);
}

/* -------------------------------------------------------------------------------------- the loop */

static void
on_shutdown(tag_t *tag, int ok)
{
    rm_control_server_t *srv = container_of(tag, rm_control_server_t, shutdown_tag);
    srv->shutdown_done = 1;
}

static gpr_timespec
next_deadline(rm_control_server_t *srv)
{
    uint64_t now = rm_now_ms(), due = now + (srv->kube != NULL ? KUBE_TICK_MS : TICK_MS);
    for (unary_t *u = srv->waiters; u != NULL; u = u->next_waiter)
        if (u->wait_deadline_ms < due)
            due = u->wait_deadline_ms;
    for (unary_t *u = srv->proxies; u != NULL; u = u->next_proxy)
        if (u->proxy_deadline_ms < due)
            due = u->proxy_deadline_ms;
    return rm_rpc_deadline_in_ms(due > now ? (int64_t)(due - now) : 0);
}

/*
 * Issues the control plane's serving certificate (ca.h) and hands it to the next TLS handshakes;
 * connections made with the previous one are not disturbed. Renewed at half its lifetime; a failure
 * is retried 10 s later while the current one keeps serving. Returns 0, or -1 with the reason.
 */
static int
issue_server_cert(rm_control_server_t *srv)
{
    char *chain, *key, err[512];
    int64_t nb, na;
    if (rm_ca_issue_server(rm_identity_ca(srv->identity), RM_RPC_CONTROL_SERVER_NAME, &chain, &key, &nb, &na, err, sizeof(err)) !=
        0) {
        rm_log_error(LOG, "%s; retrying in 10 s", err);
        srv->tls_renew_at_ms = rm_now_ms() + 10000;
        return -1;
    }
    pthread_mutex_lock(&srv->tls_mutex);
    free(srv->tls_chain_pem);
    if (srv->tls_key_pem != NULL) {
        OPENSSL_cleanse(srv->tls_key_pem, strlen(srv->tls_key_pem));
        free(srv->tls_key_pem);
    }
    srv->tls_chain_pem = chain;
    srv->tls_key_pem = key;
    ++srv->tls_generation;
    pthread_mutex_unlock(&srv->tls_mutex);
    rm_identity_server_cert_issued(srv->identity, na);
    /* half the lifetime, from the wall clock to the monotonic one */
    int64_t now = (int64_t)time(NULL), renew = nb + (na - nb) / 2;
    srv->tls_renew_at_ms = rm_now_ms() + (uint64_t)(renew > now ? renew - now : 1) * 1000;
    rm_log_debug(LOG, "serving certificate for " RM_RPC_CONTROL_SERVER_NAME " issued, valid until %lld, renewed in %lld s",
                 (long long)na, (long long)(renew - now));
    return 0;
}

/* gRPC's threads, at every TLS handshake: the newest serving certificate when it changed. */
static grpc_ssl_certificate_config_reload_status
fetch_cert_config(void *arg, grpc_ssl_server_certificate_config **config)
{
    rm_control_server_t *srv = arg;
    grpc_ssl_certificate_config_reload_status r = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
    pthread_mutex_lock(&srv->tls_mutex);
    if (srv->tls_generation != srv->tls_served && srv->tls_chain_pem != NULL) {
        grpc_ssl_pem_key_cert_pair pair = {srv->tls_key_pem, srv->tls_chain_pem};
        /* the client roots: the trust bundle, against which workload certificates are verified */
        *config = grpc_ssl_server_certificate_config_create(rm_ca_bundle_pem(rm_identity_ca(srv->identity)), &pair, 1);
        srv->tls_served = srv->tls_generation;
        r = GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW;
    }
    pthread_mutex_unlock(&srv->tls_mutex);
    return r;
}

static void *
run(void *arg)
{
    rm_control_server_t *srv = arg;
    while (!(srv->shutdown_done && srv->live == 0)) {
        grpc_event ev = grpc_completion_queue_next(srv->cq, next_deadline(srv), NULL);
        if (ev.type == GRPC_OP_COMPLETE) {
            tag_t *tag = ev.tag;
            tag->cb(tag, ev.success);
        } else if (ev.type == GRPC_QUEUE_SHUTDOWN) {
            rm_fatal("the server's completion queue shut down early");
        }
        if (srv->kube != NULL)
            kube_poll(srv);
        if (srv->waiters != NULL)
            check_waiters(srv);
        if (srv->proxies != NULL)
            relay_expire(srv);
        if (!srv->insecure && rm_now_ms() >= srv->tls_renew_at_ms)
            issue_server_cert(srv);
    }
    grpc_completion_queue_shutdown(srv->cq);
    while (grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN)
        ;
    return NULL;
}

static void
free_webhook(rm_control_server_t *srv)
{
    free(srv->webhook_address);
    for (size_t i = 0; i != srv->num_webhook_dns; ++i)
        free(srv->webhook_dns[i]);
    free(srv->webhook_dns);
    srv->webhook_address = NULL;
    srv->webhook_dns = NULL;
    srv->num_webhook_dns = 0;
}

void
rm_control_server_set_webhook(rm_control_server_t *srv, const char *address, const char *const *dns_names, size_t num_dns_names)
{
    pthread_mutex_lock(&srv->tls_mutex);
    free_webhook(srv);
    if (address != NULL) {
        srv->webhook_address = rm_strdup(address);
        srv->webhook_dns = rm_calloc(num_dns_names + 1, sizeof(*srv->webhook_dns));
        for (size_t i = 0; i != num_dns_names; ++i)
            srv->webhook_dns[i] = rm_strdup(dns_names[i]);
        srv->num_webhook_dns = num_dns_names;
    }
    pthread_mutex_unlock(&srv->tls_mutex);
}

static void
free_tls(rm_control_server_t *srv)
{
    free_webhook(srv);
    free(srv->tls_chain_pem);
    if (srv->tls_key_pem != NULL) {
        OPENSSL_cleanse(srv->tls_key_pem, strlen(srv->tls_key_pem));
        free(srv->tls_key_pem);
    }
    pthread_mutex_destroy(&srv->tls_mutex);
}

rm_control_server_t *
rm_control_server_start(const char *listen, rm_store_t *store, char *err, size_t errsz)
{
    return rm_control_server_start_with_identity(listen, store, NULL, 1, err, errsz);
}

rm_control_server_t *
rm_control_server_start_with_identity(const char *listen, rm_store_t *store, rm_identity_service_t *identity, int insecure,
                                      char *err, size_t errsz)
{
    return rm_control_server_start_kubernetes(listen, store, identity, insecure, NULL, err, errsz);
}

rm_control_server_t *
rm_control_server_start_kubernetes(const char *listen, rm_store_t *store, rm_identity_service_t *identity, int insecure,
                                   rm_kube_source_t *kube, char *err, size_t errsz)
{
    if (identity == NULL && !insecure)
        rm_fatal("a control plane without a certificate authority can only be insecure");
    rm_control_server_t *srv = rm_calloc(1, sizeof(*srv));
    srv->store = store;
    srv->identity = identity;
    srv->insecure = insecure;
    srv->kube = kube;
    pthread_mutex_init(&srv->tls_mutex, NULL);
    pthread_mutex_init(&srv->agents_mutex, NULL);
    srv->shutdown_tag.cb = on_shutdown;
    srv->snapshot = grpc_empty_slice();
    atomic_init(&srv->stopping, 0);
    grpc_arg args[] = {
        /* a second control plane on the same port must fail to bind, not share it */
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_ALLOW_REUSEPORT, .value.integer = 0},
        /* notice dead agents (and free their streams) within about 30 s */
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_KEEPALIVE_TIME_MS, .value.integer = 20000},
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_KEEPALIVE_TIMEOUT_MS, .value.integer = 10000},
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, .value.integer = 1},
        /* agents may ping every 10 s to detect a dead control plane */
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, .value.integer = 5000},
        {.type = GRPC_ARG_INTEGER, .key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH, .value.integer = 16 * 1024 * 1024},
    };
    grpc_channel_args chargs = {.num_args = sizeof(args) / sizeof(args[0]), .args = args};
    srv->server = grpc_server_create(&chargs, NULL);
    srv->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv->server, srv->cq, NULL);
    for (int m = 0; m != M__COUNT; ++m) {
        srv->methods[m] =
            grpc_server_register_method(srv->server, methods[m].path, NULL,
                                        m == M_STREAM ? GRPC_SRM_PAYLOAD_NONE : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
        if (srv->methods[m] == NULL)
            rm_fatal("cannot register %s", methods[m].path);
    }
    grpc_server_credentials *creds;
    if (insecure) {
        creds = grpc_insecure_server_credentials_create();
    } else if (issue_server_cert(srv) != 0) {
        snprintf(err, errsz, "cannot issue the control plane's serving certificate (see the log above)");
        creds = NULL;
    } else {
        /* a client certificate is asked for and, when one is sent, verified against the trust bundle;
         * callers without one authenticate with a token (get_credentials) */
        creds = grpc_ssl_server_credentials_create_with_options(grpc_ssl_server_credentials_create_options_using_config_fetcher(
            GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY, fetch_cert_config, srv));
    }
    srv->port = creds != NULL ? grpc_server_add_http2_port(srv->server, listen, creds) : 0;
    if (creds != NULL)
        grpc_server_credentials_release(creds);
    if (srv->port == 0) {
        if (creds != NULL)
            snprintf(err, errsz, "cannot listen on %s (address in use, not local, or not ADDR:PORT)", listen);
        grpc_server_destroy(srv->server);
        grpc_completion_queue_shutdown(srv->cq);
        while (grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN)
            ;
        grpc_completion_queue_destroy(srv->cq);
        free_tls(srv);
        pthread_mutex_destroy(&srv->agents_mutex);
        free(srv);
        return NULL;
    }
    grpc_server_start(srv->server);
    refresh_snapshot(srv);
    for (int m = 0; m != M__COUNT; ++m) {
        if (m == M_STREAM)
            arm_stream(srv);
        else
            arm_unary(srv, m);
    }
    arm_unary(srv, M_UNKNOWN);
    rm_cp_metrics_set_agent_source(agent_counts, srv);
    int rc = pthread_create(&srv->thread, NULL, run, srv);
    if (rc != 0)
        rm_fatal("cannot start the server thread: %s", strerror(rc));
    return srv;
}

int
rm_control_server_port(const rm_control_server_t *srv)
{
    return srv->port;
}

void
rm_control_server_stop(rm_control_server_t *srv)
{
    if (atomic_exchange(&srv->stopping, 1))
        return;
    grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->shutdown_tag);
    grpc_server_cancel_all_calls(srv->server);
}

void
rm_control_server_destroy(rm_control_server_t *srv)
{
    rm_control_server_stop(srv);
    pthread_join(srv->thread, NULL);
    while (srv->scopes != NULL) {
        /* streams still open at shutdown hold them */
        srv->scopes->refs = 1;
        scope_unref(srv, srv->scopes);
    }
    rm_cp_metrics_set_agent_source(NULL, NULL);
    grpc_server_destroy(srv->server);
    grpc_completion_queue_destroy(srv->cq);
    grpc_slice_unref(srv->snapshot);
    clear_deltas(srv);
    for (size_t i = 0; i != srv->num_agents; ++i) {
        free(srv->agents[i]->node_id);
        free(srv->agents[i]->nack_reason);
        free(srv->agents[i]->peer);
        rm_stat_history_destroy(srv->agents[i]->stats);
        free(srv->agents[i]);
    }
    free(srv->agents);
    free_tls(srv);
    pthread_mutex_destroy(&srv->agents_mutex);
    free(srv);
}
