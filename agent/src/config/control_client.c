#include <errno.h>
#include <malloc.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "remora/thread.h"
#include "remora/v1/discovery.pb-c.h"
#include "config/control_client.h"
#include "config/h2rpc.h"
#include "config/control_module.h"
#include "config/control_stats.h"
#include "config/delta_merge.h"
#include "config/translate.h"
#include "config/ondemand.h"

#define SNAPSHOT_FILE "snapshot.pb"
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 10000
#define STATS_INTERVAL_DEFAULT_MS 10000
#define STATS_INTERVAL_MIN_MS 1000
/* the series a stats summary first makes room for (send_stats) */
#define STATS_FIRST_SERIES 64
/* Snapshot.store_id is 16 bytes; a longer one is not kept (the Hello then names no store, and gets a full snapshot) */
#define STORE_ID_MAX 16
/* how long the first stream waits for the workload certificate (wait_identity) */
#define IDENTITY_WAIT_MS 2000

struct st_rm_control_client_t {
    char *address;
    char *node_id;
    char *state_dir;
    rm_config_t *base;
    uint64_t applied_version;
    /* the Snapshot.store_id of applied_version (persisted in its snapshot.pb), sent back in the Hello; 0 bytes: none */
    uint8_t store_id[STORE_ID_MAX];
    size_t store_id_len;
    int (*apply)(void *ctx, rm_config_t *config, char *err, size_t errlen);
    void (*on_nack)(void *ctx);
    void *ctx;
    pthread_t thread;
    pthread_mutex_t mutex;
    pthread_cond_t cond;
    int stopping;
    rm_h2rpc_call_t *stream; /* guarded by mutex, for cancel */
    /* the encoding of the resource set in service (version applied_version) when it is not in the state
     * directory (no --state-dir, or the last write failed): the base of incremental snapshots; else NULL */
    uint8_t *held;
    size_t held_len;
    /* Stats: the interval, when the client started counting (monotonic ms), and the source's buffer */
    uint32_t stats_interval_ms;
    uint64_t started_ms;
    rm_control_stat_series_t *stats_buf;
    /* how to reach the control plane (control_client.h) */
    char *trust_anchor_file, *token_file;
    int insecure;
    int (*client_identity)(void *ctx, char **chain_pem, char **key_pem);
    void (*admin_command)(void *ctx, const char *command, const char *argument, rm_control_admin_reply_t *reply);
};

/*
 * Credentials
 */

static void
wipe_free(char *s)
{
    if (s == NULL)
        return;
    memset(s, 0, strlen(s));
    free(s);
}

int
rm_control_credentials_load(rm_control_credentials_t *cr, int insecure, const char *trust_anchor_file, const char *token_file,
                            char *err, size_t errlen)
{
    char why[512];
    memset(cr, 0, sizeof(*cr));
    cr->insecure = insecure;
    if (insecure)
        return 0;
    if ((cr->root_pem = rm_read_file(trust_anchor_file, 1 << 20, why, sizeof(why))) == NULL) {
        snprintf(err, errlen, "the trust anchor %s", why);
        return -1;
    }
    if (strstr(cr->root_pem, "-----BEGIN CERTIFICATE-----") == NULL) {
        snprintf(err, errlen, "the trust anchor %.400s: no PEM certificate in the file", trust_anchor_file);
        rm_control_credentials_dispose(cr);
        return -1;
    }
    if (token_file != NULL) {
        if ((cr->token = rm_read_file(token_file, 8192, why, sizeof(why))) == NULL) {
            snprintf(err, errlen, "the bootstrap token %s", why);
            rm_control_credentials_dispose(cr);
            return -1;
        }
        size_t len = rm_trim_space(cr->token);
        for (size_t i = 0; i != len; ++i) {
            if (cr->token[i] <= ' ' || cr->token[i] > '~') {
                snprintf(err, errlen, "the bootstrap token %.400s: not one line of printable ASCII", token_file);
                rm_control_credentials_dispose(cr);
                return -1;
            }
        }
        if (len == 0) {
            snprintf(err, errlen, "the bootstrap token %.400s: the file is empty", token_file);
            rm_control_credentials_dispose(cr);
            return -1;
        }
    }
    return 0;
}

void
rm_control_credentials_dispose(rm_control_credentials_t *cr)
{
    free(cr->root_pem);
    wipe_free(cr->token);
    free(cr->cert_chain_pem);
    wipe_free(cr->key_pem);
    memset(cr, 0, sizeof(*cr));
}

/*
 * Persistence
 */

static int
write_atomically(const char *dir, const char *name, const uint8_t *bytes, size_t len, char *err, size_t errlen)
{
    char path[4096], tmp[4200];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "%.400s: %s", tmp, strerror(errno));
        return -1;
    }
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, bytes + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(err, errlen, "%.400s: %s", tmp, strerror(errno));
            close(fd);
            unlink(tmp);
            return -1;
        }
        off += (size_t)n;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        snprintf(err, errlen, "%.400s: %s", tmp, strerror(errno));
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, path) != 0) {
        snprintf(err, errlen, "rename %.400s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    /* the rename itself must survive a crash */
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

/* The bytes of the file at `path` (malloc'ed, `*len`; the agent's own snapshot.pb), or NULL with errno set (ENOENT:
 * there is none; EIO: a read error). */
static uint8_t *
read_whole(const char *path, size_t *len)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL)
        return NULL;
    uint8_t *bytes = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            cap = cap == 0 ? 65536 : cap * 2;
            bytes = rm_realloc(bytes, cap);
        }
        size_t got = fread(bytes + n, 1, cap - n, fp);
        if (got == 0)
            break;
        n += got;
    }
    int failed = ferror(fp);
    fclose(fp);
    if (failed) {
        free(bytes);
        errno = EIO;
        return NULL;
    }
    *len = n;
    return bytes;
}

rm_config_t *
rm_control_load_persisted(const char *state_dir, rm_config_t *base, uint64_t *version, char *err, size_t errlen)
{
    err[0] = '\0';
    if (state_dir == NULL)
        return NULL;
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", state_dir, SNAPSHOT_FILE);
    size_t len;
    uint8_t *bytes = read_whole(path, &len);
    rm_config_t *config = NULL;
    if (bytes == NULL) {
        if (errno != ENOENT)
            snprintf(err, errlen, "%.400s: %s", path, strerror(errno));
    } else {
        char why[512];
        if ((config = rm_translate_snapshot(bytes, len, base, why, sizeof(why))) == NULL)
            snprintf(err, errlen, "%.400s: %.500s", path, why);
        else
            *version = rm_translate_snapshot_version(bytes, len);
    }
    free(bytes);
    return config;
}

/*
 * The stream
 */

static int
is_stopping(rm_control_client_t *c)
{
    pthread_mutex_lock(&c->mutex);
    int s = c->stopping;
    pthread_mutex_unlock(&c->mutex);
    return s;
}

static void
send_result(rm_control_client_t *c, rm_h2rpc_call_t *stream, const Remora__V1__Snapshot *snap, const char *nack_reason)
{
    Remora__V1__AgentMessage msg = REMORA__V1__AGENT_MESSAGE__INIT;
    Remora__V1__Ack ack = REMORA__V1__ACK__INIT;
    Remora__V1__Nack nack = REMORA__V1__NACK__INIT;
    if (nack_reason == NULL) {
        ack.version = snap->version;
        ack.nonce = snap->nonce;
        msg.message_case = REMORA__V1__AGENT_MESSAGE__MESSAGE_ACK;
        msg.ack = &ack;
    } else {
        nack.version = snap->version;
        nack.nonce = snap->nonce;
        nack.reason = (char *)nack_reason;
        msg.message_case = REMORA__V1__AGENT_MESSAGE__MESSAGE_NACK;
        msg.nack = &nack;
        if (c->on_nack != NULL)
            c->on_nack(c->ctx);
    }
    rm_h2rpc_status_t status;
    if (rm_h2rpc_send(stream, &msg.base, 5000, &status) != RM_H2RPC_DONE)
        rm_log_warn("control", "could not send %s for version %llu: %s", nack_reason == NULL ? "ACK" : "NACK",
                    (unsigned long long)snap->version, status.message);
}

/*
 * Incremental snapshots (docs/control-plane.md, "Incremental updates"): the delta is merged by
 * config/delta_merge.c into the resource set in service, whose encoding is the persisted snapshot
 * (state_dir/snapshot.pb), or `held` without one.
 */

/* The encoding of the resource set in service (malloc'ed), or NULL with the reason. */
static uint8_t *
load_base(rm_control_client_t *c, size_t *len, char *err, size_t errlen)
{
    if (c->held != NULL) {
        uint8_t *copy = rm_malloc(c->held_len + 1);
        memcpy(copy, c->held, c->held_len);
        *len = c->held_len;
        return copy;
    }
    if (c->state_dir == NULL) {
        snprintf(err, errlen, "no resource set is held");
        return NULL;
    }
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", c->state_dir, SNAPSHOT_FILE);
    uint8_t *bytes = read_whole(path, len);
    if (bytes == NULL)
        snprintf(err, errlen, "%.400s: %s", path, strerror(errno));
    return bytes;
}

/*
 * Merges the incremental `delta` into the resource set in service (version applied_version). Returns the
 * encoding of the merged full snapshot at delta->version (malloc'ed, `*len` bytes), or NULL with the reason.
 */
static uint8_t *
merge_delta(rm_control_client_t *c, const Remora__V1__Snapshot *delta, size_t *len, char *err, size_t errlen)
{
    if (delta->base_version != c->applied_version || c->applied_version == 0) {
        snprintf(err, errlen, "incremental snapshot %llu applies on version %llu, but version %llu is in service",
                 (unsigned long long)delta->version, (unsigned long long)delta->base_version,
                 (unsigned long long)c->applied_version);
        return NULL;
    }
    char why[512];
    size_t base_len;
    uint8_t *base_bytes = load_base(c, &base_len, why, sizeof(why));
    if (base_bytes == NULL) {
        snprintf(err, errlen, "the resource set of version %llu is not available: %s", (unsigned long long)c->applied_version, why);
        return NULL;
    }
    uint8_t *bytes = rm_delta_merge(base_bytes, base_len, c->applied_version, delta, len, err, errlen);
    free(base_bytes);
    return bytes;
}

static void
set_store_id(rm_control_client_t *c, const ProtobufCBinaryData *id)
{
    c->store_id_len = id->len <= STORE_ID_MAX ? id->len : 0;
    if (c->store_id_len != 0)
        memcpy(c->store_id, id->data, c->store_id_len);
}

/* At start: the store identity of the persisted snapshot that main.c put in service (version applied_version). */
static void
load_store_id(rm_control_client_t *c)
{
    char why[512];
    size_t len;
    uint8_t *bytes = c->applied_version != 0 ? load_base(c, &len, why, sizeof(why)) : NULL;
    if (bytes == NULL)
        return;
    Remora__V1__Snapshot *snap = remora__v1__snapshot__unpack(NULL, len, bytes);
    free(bytes);
    if (snap != NULL && snap->version == c->applied_version)
        set_store_id(c, &snap->store_id);
    if (snap != NULL)
        remora__v1__snapshot__free_unpacked(snap, NULL);
}

/*
 * On-demand discovery (config/ondemand.h)
 */

/* The names `snap` answers (Snapshot.discovered), decided by the config of `generation` (0: the one in service). */
static void
answered(const Remora__V1__Snapshot *snap, uint64_t generation)
{
    if (snap->n_discovered != 0)
        rm_ondemand_answered(snap->discovered, snap->n_discovered, generation);
}

/* The wakeup of the stream's receive loop (rm_ondemand_attach). */
static void
wake_stream(void *ctx)
{
    rm_h2rpc_wake(ctx);
}

/* Sends the queued names in Discover messages (at most RM_ONDEMAND_MAX_PER_MESSAGE each); 0, or -1 when the
 * stream ended. */
static int
send_discover(rm_control_client_t *c, rm_h2rpc_call_t *stream)
{
    static char names[RM_ONDEMAND_MAX_PER_MESSAGE][RM_ONDEMAND_MAX_NAME_BYTES + 1]; /* this thread only */
    char *ptrs[RM_ONDEMAND_MAX_PER_MESSAGE];
    size_t n;
    while ((n = rm_ondemand_take(names, RM_ONDEMAND_MAX_PER_MESSAGE)) != 0) {
        for (size_t i = 0; i != n; ++i)
            ptrs[i] = names[i];
        Remora__V1__Discover discover = REMORA__V1__DISCOVER__INIT;
        discover.n_names = n;
        discover.names = ptrs;
        Remora__V1__AgentMessage msg = REMORA__V1__AGENT_MESSAGE__INIT;
        msg.message_case = REMORA__V1__AGENT_MESSAGE__MESSAGE_DISCOVER;
        msg.discover = &discover;
        rm_h2rpc_status_t status;
        rm_h2rpc_result_t r = rm_h2rpc_send(stream, &msg.base, 5000, &status);
        if (r == RM_H2RPC_CLOSED) {
            rm_log_debug("control", "could not send Discover: %s", status.message);
            return -1;
        }
        if (r == RM_H2RPC_TIMEOUT)
            rm_log_warn("control", "the control plane did not take a Discover message within 5 s; still trying");
        rm_log_debug("control", "Discover: %zu name(s), the first '%s'", n, names[0]);
    }
    return 0;
}

static void
on_snapshot(rm_control_client_t *c, rm_h2rpc_call_t *stream, Remora__V1__Snapshot *snap)
{
    char err[1024];
    size_t len;
    uint8_t *bytes;
    rm_control_count_update(snap->incremental ? RM_CONTROL_UPDATE_DELTA : RM_CONTROL_UPDATE_FULL,
                            protobuf_c_message_get_packed_size(&snap->base));
    if (snap->incremental) {
        size_t num_changed = rm_delta_num_changed(snap);
        if (snap->version == c->applied_version && snap->base_version == c->applied_version && num_changed == 0 &&
            snap->n_removed == 0) {
            /* what is in service already (a reconnection at the current version) */
            if (snap->n_discovered != 0)
                rm_log_debug("control", "version %llu confirmed: %zu name(s) asked are unknown to the control plane",
                             (unsigned long long)snap->version, snap->n_discovered);
            else
                rm_log_info("control", "version %llu confirmed (nothing changed)", (unsigned long long)snap->version);
            send_result(c, stream, snap, NULL);
            answered(snap, 0);
            return;
        }
        if ((bytes = merge_delta(c, snap, &len, err, sizeof(err))) == NULL) {
            rm_log_error("control", "incremental snapshot version %llu refused: %s; version %llu stays in service",
                         (unsigned long long)snap->version, err, (unsigned long long)c->applied_version);
            send_result(c, stream, snap, err);
            answered(snap, 0);
            return;
        }
        rm_log_debug("control", "incremental snapshot version %llu on %llu: %zu resource(s) changed, %zu removed",
                     (unsigned long long)snap->version, (unsigned long long)snap->base_version, num_changed, snap->n_removed);
    } else {
        len = protobuf_c_message_get_packed_size(&snap->base);
        bytes = rm_malloc(len + 1);
        protobuf_c_message_pack(&snap->base, bytes);
    }
    rm_config_t *config = rm_translate_snapshot(bytes, len, c->base, err, sizeof(err));
    if (config == NULL) {
        rm_log_error("control", "snapshot version %llu refused: %s; version %llu stays in service",
                     (unsigned long long)snap->version, err, (unsigned long long)c->applied_version);
        send_result(c, stream, snap, err);
        answered(snap, 0);
        free(bytes);
        return;
    }
    /* a reference of our own: its generation, once published, is what decides the names it answers */
    rm_config_ref(config);
    if (c->apply(c->ctx, config, err, sizeof(err)) != 0) {
        rm_config_unref(config);
        rm_log_error("control", "snapshot version %llu could not be applied: %s", (unsigned long long)snap->version, err);
        send_result(c, stream, snap, err);
        answered(snap, 0);
        free(bytes);
        return;
    }
    uint64_t generation = config->generation;
    rm_config_unref(config);
    c->applied_version = snap->version;
    set_store_id(c, &snap->store_id);
    free(c->held);
    c->held = NULL;
    if (c->state_dir == NULL || write_atomically(c->state_dir, SNAPSHOT_FILE, bytes, len, err, sizeof(err)) != 0) {
        if (c->state_dir != NULL)
            rm_log_error("control", "version %llu is in service but could not be persisted: %s", (unsigned long long)snap->version,
                         err);
        /* the base of the next incremental snapshot stays in memory instead */
        c->held = bytes;
        c->held_len = len;
        bytes = NULL;
    }
    free(bytes);
    if (snap->incremental)
        rm_log_info("control", "snapshot version %llu in service (incremental on %llu)", (unsigned long long)snap->version,
                    (unsigned long long)snap->base_version);
    else
        rm_log_info("control", "snapshot version %llu in service (%zu services)", (unsigned long long)snap->version,
                    snap->n_services);
    send_result(c, stream, snap, NULL);
    /* after apply: the config that answers the names is queued on every worker before the notice */
    answered(snap, generation);
}

/*
 * An admin request relayed by the control plane (`remoractl proxy`). Only the read-only commands and
 * the log level pass, whatever the control plane asks: this path never drains or stops the agent.
 */
static void
on_admin_request(rm_control_client_t *c, rm_h2rpc_call_t *stream, const Remora__V1__AdminRequest *req)
{
    static const char *const allowed[] = {"stats", "config", "clusters", "log-level"};
    rm_control_admin_reply_t reply = {0};
    int known = 0;
    for (size_t i = 0; i != sizeof(allowed) / sizeof(allowed[0]); ++i)
        known |= strcmp(req->command, allowed[i]) == 0;
    if (!known || c->admin_command == NULL) {
        char msg[160];
        snprintf(msg, sizeof(msg), "unknown admin command '%.60s' (stats, config, clusters or log-level)\n", req->command);
        reply.status = 404;
        reply.content_type = "text/plain; charset=utf-8";
        reply.body = rm_strdup(msg);
        reply.body_len = strlen(msg);
    } else {
        c->admin_command(c->ctx, req->command, req->argument, &reply);
    }
    Remora__V1__AdminResponse resp = REMORA__V1__ADMIN_RESPONSE__INIT;
    resp.id = req->id;
    resp.status = reply.status;
    resp.content_type = (char *)(reply.content_type != NULL ? reply.content_type : "");
    resp.body.data = (uint8_t *)reply.body;
    resp.body.len = reply.body != NULL ? reply.body_len : 0;
    if (resp.body.len > RM_CONTROL_ADMIN_MAX_BODY_BYTES) {
        resp.body.len = RM_CONTROL_ADMIN_MAX_BODY_BYTES;
        resp.truncated = 1;
    }
    Remora__V1__AgentMessage msg = REMORA__V1__AGENT_MESSAGE__INIT;
    msg.message_case = REMORA__V1__AGENT_MESSAGE__MESSAGE_ADMIN_RESPONSE;
    msg.admin_response = &resp;
    rm_h2rpc_status_t status;
    if (rm_h2rpc_send(stream, &msg.base, 5000, &status) != RM_H2RPC_DONE)
        rm_log_warn("control", "could not send the answer to admin request %llu (%s): %s", (unsigned long long)req->id,
                    req->command, status.message);
    else
        rm_log_debug("control", "admin request %llu (%s %s) answered %u, %zu bytes", (unsigned long long)req->id, req->command,
                     req->argument, resp.status, resp.body.len);
    free(reply.body);
}

/*
 * Sends one Stats summary. Called only from this thread, like every other send on the stream, so
 * that a send is never started while another is outstanding; a send that is not taken within the
 * timeout stays pending and the next send waits for it (rm_h2rpc_send).
 */
static void
send_stats(rm_control_client_t *c, rm_h2rpc_call_t *stream)
{
    rm_control_stats_source_t source = rm_control_get_stats_source();
    if (source == NULL)
        return;
    /* allocated per summary, as large as the series that exist (first room for STATS_FIRST_SERIES, then, when
     * there are more, for all of them up to the cap), and freed after it: the buffer of the largest possible summary
     * (600 KB) is never allocated for a few series, and none stays resident in the control thread's arena */
    size_t cap = STATS_FIRST_SERIES;
    c->stats_buf = rm_calloc(cap, sizeof(*c->stats_buf));
    size_t total = source(c->stats_buf, cap);
    if (total > cap) {
        cap = total < RM_CONTROL_STATS_MAX_SERIES ? total : RM_CONTROL_STATS_MAX_SERIES;
        free(c->stats_buf);
        c->stats_buf = rm_calloc(cap, sizeof(*c->stats_buf));
        total = source(c->stats_buf, cap);
    }
    size_t n = total < cap ? total : cap;

    Remora__V1__Stats stats = REMORA__V1__STATS__INIT;
    struct timespec wall;
    clock_gettime(CLOCK_REALTIME, &wall);
    stats.monotonic_ms = rm_now_ms();
    stats.wall_ms = (uint64_t)wall.tv_sec * 1000 + (uint64_t)wall.tv_nsec / 1000000;
    stats.uptime_ms = stats.monotonic_ms - c->started_ms;
    stats.n_bounds_us = RM_HISTOGRAM_NUM_BOUNDS;
    stats.bounds_us = (uint64_t *)rm_histogram_bounds_us;
    stats.dropped_series = total - n;
    Remora__V1__StatSeries *series = rm_calloc(n + 1, sizeof(*series));
    Remora__V1__StatSeries **ptrs = rm_calloc(n + 1, sizeof(*ptrs));
    for (size_t i = 0; i != n; ++i) {
        rm_control_stat_series_t *in = &c->stats_buf[i];
        /* the source's strings may fill their arrays: terminate them before they become proto strings */
        in->direction[RM_CONTROL_STAT_MAX_VALUE] = in->route[RM_CONTROL_STAT_MAX_VALUE] = in->backend[RM_CONTROL_STAT_MAX_VALUE] =
            '\0';
        remora__v1__stat_series__init(&series[i]);
        series[i].direction = in->direction;
        series[i].route = in->route;
        series[i].backend = in->backend;
        series[i].requests = in->requests;
        series[i].failures = in->failures;
        series[i].n_buckets = RM_HISTOGRAM_BUCKETS;
        series[i].buckets = in->buckets;
        series[i].sum_us = in->sum_us;
        ptrs[i] = &series[i];
    }
    stats.n_series = n;
    stats.series = ptrs;
    Remora__V1__AgentMessage msg = REMORA__V1__AGENT_MESSAGE__INIT;
    msg.message_case = REMORA__V1__AGENT_MESSAGE__MESSAGE_STATS;
    msg.stats = &stats;
    rm_h2rpc_status_t status;
    rm_h2rpc_result_t r = rm_h2rpc_send(stream, &msg.base, 5000, &status);
    if (r == RM_H2RPC_CLOSED)
        rm_log_debug("control", "could not send stats: %s", status.message);
    else if (r == RM_H2RPC_TIMEOUT)
        rm_log_warn("control", "the control plane did not take the stats summary within 5 s; still trying");
    if (total > n)
        rm_log_debug("control", "stats: %zu series, %zu sent (the cap per message)", total, n);
    free(ptrs);
    free(series);
    free(c->stats_buf);
    c->stats_buf = NULL;
}

static void
run_stream(rm_control_client_t *c, int *got_snapshot)
{
    /* the files and the identity are read for every connection: a rotated token, certificate or bundle is used at once */
    rm_control_credentials_t cr;
    char err[1024];
    if (rm_control_credentials_load(&cr, c->insecure, c->trust_anchor_file, c->token_file, err, sizeof(err)) != 0) {
        rm_log_warn("control", "cannot connect to the control plane at %s: %s", c->address, err);
        return;
    }
    if (!c->insecure && c->client_identity != NULL && c->client_identity(c->ctx, &cr.cert_chain_pem, &cr.key_pem) != 0)
        cr.cert_chain_pem = cr.key_pem = NULL;
    rm_h2rpc_security_t sec = {.insecure = cr.insecure,
                               .root_pem = cr.root_pem,
                               .cert_chain_pem = cr.cert_chain_pem,
                               .key_pem = cr.key_pem,
                               .bearer_token = cr.token};
    /* a fresh connection per attempt, fail fast: a control plane that is down, or that does not verify,
     * ends the attempt at once with the reason, and this thread's backoff paces the next one */
    rm_h2rpc_call_t *stream = rm_h2rpc_open(c->address, &sec, "/remora.v1.Discovery/StreamSnapshots");
    rm_control_credentials_dispose(&cr);
    pthread_mutex_lock(&c->mutex);
    c->stream = stream;
    int stopping = c->stopping;
    pthread_mutex_unlock(&c->mutex);
    rm_h2rpc_status_t status;
    if (stopping)
        goto Exit;

    Remora__V1__AgentMessage msg = REMORA__V1__AGENT_MESSAGE__INIT;
    Remora__V1__Hello hello = REMORA__V1__HELLO__INIT;
    hello.node_id = c->node_id;
    hello.applied_version = c->applied_version;
    hello.admin_requests = c->admin_command != NULL;
    hello.accepts_incremental = 1;
    hello.store_id.data = c->store_id;
    hello.store_id.len = c->store_id_len;
    msg.message_case = REMORA__V1__AGENT_MESSAGE__MESSAGE_HELLO;
    msg.hello = &hello;
    rm_h2rpc_result_t r;
    while ((r = rm_h2rpc_send(stream, &msg.base, 1000, &status)) == RM_H2RPC_TIMEOUT) {
        if (is_stopping(c))
            goto Exit;
    }
    if (r != RM_H2RPC_DONE) {
        if (strstr(status.message, "andshake") != NULL || strstr(status.message, "SSL") != NULL ||
            strstr(status.message, "ertificate") != NULL)
            rm_log_warn("control", "cannot verify the control plane at %s against the trust anchor %s (TLS handshake failed): %s",
                        c->address, c->trust_anchor_file, status.message);
        else
            rm_log_debug("control", "control plane %s: %s %s", c->address, rm_h2rpc_code_name(status.code), status.message);
        goto Exit;
    }
    uint64_t next_stats_ms = rm_now_ms() + c->stats_interval_ms;
    /* from now on a worker's name wakes the receive below, and the loop sends it at once; only once a snapshot
     * of this stream said it is a scope's (an older control plane, which never says so, ends a stream on the
     * unknown message) */
    rm_ondemand_attach(wake_stream, stream);
    int scoped = 0;
    for (;;) {
        ProtobufCMessage *m = NULL;
        if (scoped && send_discover(c, stream) != 0)
            break;
        uint64_t now = rm_now_ms();
        if (now >= next_stats_ms) {
            send_stats(c, stream);
            /* no catching up after a long apply: the counters are cumulative, a summary skipped costs nothing */
            next_stats_ms = (now = rm_now_ms()) + c->stats_interval_ms;
        }
        int64_t wait_ms = next_stats_ms - now < 1000 ? (int64_t)(next_stats_ms - now) : 1000;
        r = rm_h2rpc_recv(stream, &remora__v1__snapshot__descriptor, wait_ms, &m, &status);
        if (r == RM_H2RPC_TIMEOUT) {
            if (is_stopping(c))
                break;
            continue;
        }
        if (r == RM_H2RPC_CLOSED) {
            if (!is_stopping(c))
                rm_log_warn("control", "stream to the control plane at %s ended: %s %s", c->address,
                            rm_h2rpc_code_name(status.code), status.message);
            break;
        }
        Remora__V1__Snapshot *snap = (Remora__V1__Snapshot *)m;
        if (snap->admin_request != NULL) {
            on_admin_request(c, stream, snap->admin_request);
            protobuf_c_message_free_unpacked(m, NULL);
            continue;
        }
        *got_snapshot = 1;
        scoped = snap->scoped;
        on_snapshot(c, stream, snap);
        protobuf_c_message_free_unpacked(m, NULL);
        /* the snapshot's decoding and translation freed far more than the new config keeps; without a
         * trim that memory stays resident in this thread's malloc arena until the next snapshot */
        malloc_trim(0);
    }
Exit:
    rm_ondemand_detach();
    pthread_mutex_lock(&c->mutex);
    c->stream = NULL;
    pthread_mutex_unlock(&c->mutex);
    rm_h2rpc_destroy(stream);
}

/*
 * With a bootstrap token the identity client obtains the workload certificate at start. The control plane
 * knows which workload a stream belongs to (its scope, docs/control-plane.md "Scoping") from the stream's
 * client certificate only, so the first stream waits for it, at most IDENTITY_WAIT_MS: without it the agent
 * connects with its token and is in no scope until it reconnects.
 */
static void
wait_identity(rm_control_client_t *c)
{
    if (c->insecure || c->token_file == NULL || c->client_identity == NULL)
        return;
    uint64_t until = rm_now_ms() + IDENTITY_WAIT_MS;
    while (!is_stopping(c)) {
        char *chain = NULL, *key = NULL;
        int have = c->client_identity(c->ctx, &chain, &key) == 0;
        free(chain);
        wipe_free(key);
        if (have || rm_now_ms() >= until)
            return;
        usleep(20 * 1000);
    }
}

static void *
thread_main(void *arg)
{
    rm_control_client_t *c = arg;
    load_store_id(c);
    wait_identity(c);
    unsigned backoff_ms = BACKOFF_MIN_MS;
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)(uintptr_t)c;
    while (!is_stopping(c)) {
        int got_snapshot = 0;
        run_stream(c, &got_snapshot);
        if (got_snapshot)
            backoff_ms = BACKOFF_MIN_MS;
        /* full jitter: agents that lost the control plane together do not come back together */
        unsigned wait_ms = BACKOFF_MIN_MS / 2 + (unsigned)(rand_r(&seed) % backoff_ms);
        backoff_ms = backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff_ms * 2;
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += wait_ms / 1000;
        until.tv_nsec += (long)(wait_ms % 1000) * 1000000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec += 1;
            until.tv_nsec -= 1000000000;
        }
        pthread_mutex_lock(&c->mutex);
        while (!c->stopping && pthread_cond_timedwait(&c->cond, &c->mutex, &until) == 0)
            ;
        pthread_mutex_unlock(&c->mutex);
    }
    return NULL;
}

rm_control_client_t *
rm_control_client_start(const rm_control_options_t *opts, char *err, size_t errlen)
{
    rm_control_client_t *c = rm_calloc(1, sizeof(*c));
    c->address = rm_strdup(opts->address);
    c->node_id = rm_strdup(opts->node_id);
    c->state_dir = opts->state_dir != NULL ? rm_strdup(opts->state_dir) : NULL;
    c->base = rm_config_ref(opts->base);
    c->applied_version = opts->applied_version;
    c->apply = opts->apply;
    c->on_nack = opts->on_nack;
    c->ctx = opts->ctx;
    c->stats_interval_ms = opts->stats_interval_ms == 0 ? STATS_INTERVAL_DEFAULT_MS : opts->stats_interval_ms;
    if (c->stats_interval_ms < STATS_INTERVAL_MIN_MS)
        c->stats_interval_ms = STATS_INTERVAL_MIN_MS;
    c->started_ms = rm_now_ms();
    c->trust_anchor_file = opts->trust_anchor_file != NULL ? rm_strdup(opts->trust_anchor_file) : NULL;
    c->token_file = opts->token_file != NULL ? rm_strdup(opts->token_file) : NULL;
    c->insecure = opts->insecure;
    c->client_identity = opts->client_identity;
    c->admin_command = opts->admin_command;
    pthread_mutex_init(&c->mutex, NULL);
    pthread_cond_init(&c->cond, NULL);
    int r = rm_thread_create(&c->thread, thread_main, c);
    if (r != 0) {
        snprintf(err, errlen, "cannot start the control thread: %s", strerror(r));
        rm_config_unref(c->base);
        free(c->address);
        free(c->node_id);
        free(c->state_dir);
        free(c->trust_anchor_file);
        free(c->token_file);
        free(c);
        return NULL;
    }
    return c;
}

void
rm_control_client_stop(rm_control_client_t *c)
{
    pthread_mutex_lock(&c->mutex);
    c->stopping = 1;
    if (c->stream != NULL)
        rm_h2rpc_cancel(c->stream);
    pthread_cond_broadcast(&c->cond);
    pthread_mutex_unlock(&c->mutex);
    pthread_join(c->thread, NULL);
    pthread_mutex_destroy(&c->mutex);
    pthread_cond_destroy(&c->cond);
    rm_config_unref(c->base);
    free(c->address);
    free(c->node_id);
    free(c->state_dir);
    free(c->stats_buf);
    free(c->held);
    free(c->trust_anchor_file);
    free(c->token_file);
    free(c);
}

/* the module's entry table (see control_module.h) */
__attribute__((visibility("default"))) const rm_control_module_t rm_control_module = {
    rm_control_client_start, rm_control_client_stop, rm_control_load_persisted, rm_identity_client_start, rm_identity_client_stop,
};
