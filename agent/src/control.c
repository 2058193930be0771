/*
 * Control-plane mode (--control): the state directory, the control module and the kept snapshot and
 * identity at start, the control and identity clients' callbacks (control thread) and their relay to the
 * main thread, the stats summary the control client sends, and the clients' stop at exit.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>
#include <openssl/pem.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "admin/admin.h"
#include "config/config.h"
#include "config/control_client.h"
#include "config/control_module.h"
#include "config/control_stats.h"
#include "obs/process.h"
#include "obs/series.h"
#include "obs/stats.h"
#include "tls/identity.h"
#include "agent_priv.h"

/*
 * --state-dir: the directory that keeps the last good snapshot. A missing one is created (0700,
 * parents too); one that cannot be created or written stops the start: an agent that silently
 * never persists would serve nothing after a restart while the control plane is down.
 */
static int
prepare_state_dir(const char *dir, char *err, size_t errlen)
{
    char path[4096];
    if (dir[0] == '\0' || strlen(dir) >= sizeof(path)) {
        snprintf(err, errlen, "--state-dir: the path is empty or too long");
        return -1;
    }
    snprintf(path, sizeof(path), "%s", dir);
    for (char *p = path + 1;; ++p) {
        int last = *p == '\0';
        if (*p != '/' && !last)
            continue;
        *p = '\0';
        if (mkdir(path, 0700) == 0) {
            rm_log_info("agent", "created state directory %s", path);
        } else if (errno != EEXIST) {
            snprintf(err, errlen, "--state-dir %.400s: cannot create %.400s: %s", dir, path, strerror(errno));
            return -1;
        }
        if (last)
            break;
        *p = '/';
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "--state-dir %s: not a directory", dir);
        return -1;
    }
    if (access(dir, W_OK | X_OK) != 0) {
        snprintf(err, errlen, "--state-dir %s: not writable: %s", dir, strerror(errno));
        return -1;
    }
    return 0;
}

/* The identity in service as PEM, for the control client's TLS client certificate (control_client.h). */
static int
control_client_identity(void *ctx, char **chain_pem, char **key_pem)
{
    rm_identity_t *id = rm_identity_current();
    if (id == NULL)
        return -1;
    BIO *bio = BIO_new(BIO_s_mem());
    int ok = bio != NULL && PEM_write_bio_PKCS8PrivateKey(bio, id->key, NULL, NULL, 0, NULL, NULL) == 1;
    char *data;
    long n = ok ? BIO_get_mem_data(bio, &data) : 0;
    if (n > 0) {
        *key_pem = rm_malloc((size_t)n + 1);
        memcpy(*key_pem, data, (size_t)n);
        (*key_pem)[n] = '\0';
        *chain_pem = rm_strdup(id->cert_chain_pem);
    }
    BIO_free(bio);
    rm_identity_unref(id);
    return n > 0 ? 0 : -1;
}

/* With --identity-token, 1 once a workload certificate is in service: without one, mesh mTLS can be neither
 * offered inbound nor made outbound, so /ready waits for it as it waits for the first snapshot. */
int
rm_agent_identity_in_service(void)
{
    if (agent.identity == NULL)
        return 1;
    rm_identity_t *id = rm_identity_current();
    rm_identity_unref(id);
    return id != NULL;
}

/*
 * Control-plane snapshots arrive on the control thread and are published here, on the main thread.
 */

/* An admin command relayed by the control plane (`remoractl proxy`), answered by the admin code on the main thread. */
typedef struct st_control_admin_call_t {
    const char *command, *argument;
    rm_control_admin_reply_t *reply;
    int done;
} control_admin_call_t;

static void
serve_control_admin(void)
{
    pthread_mutex_lock(&agent.control_mutex);
    control_admin_call_t *call = agent.control_admin;
    agent.control_admin = NULL;
    pthread_mutex_unlock(&agent.control_mutex);
    if (call == NULL)
        return;
    /* the control thread waits for `done` (or control_closed, which only this thread sets): `call` stays valid meanwhile */
    rm_admin_command(agent.admin, call->command, call->argument, &call->reply->status, &call->reply->content_type,
                     &call->reply->body, &call->reply->body_len);
    pthread_mutex_lock(&agent.control_mutex);
    call->done = 1;
    pthread_cond_broadcast(&agent.control_cond);
    pthread_mutex_unlock(&agent.control_mutex);
}

/* control thread */
static void
control_admin_command(void *ctx, const char *command, const char *argument, rm_control_admin_reply_t *reply)
{
    control_admin_call_t call = {command, argument, reply, 0};
    pthread_mutex_lock(&agent.control_mutex);
    if (!agent.control_closed) {
        agent.control_admin = &call;
        pthread_mutex_unlock(&agent.control_mutex);
        uv_async_send(&agent.control_async);
        pthread_mutex_lock(&agent.control_mutex);
        while (!call.done && !agent.control_closed)
            pthread_cond_wait(&agent.control_cond, &agent.control_mutex);
        if (agent.control_admin == &call)
            agent.control_admin = NULL;
    }
    pthread_mutex_unlock(&agent.control_mutex);
    if (!call.done) {
        reply->status = 503;
        reply->content_type = "text/plain; charset=utf-8";
        reply->body = rm_strdup("the agent is shutting down\n");
        reply->body_len = strlen(reply->body);
    }
}

static void
on_control_async(uv_async_t *async)
{
    serve_control_admin();
    pthread_mutex_lock(&agent.control_mutex);
    rm_config_t *config = agent.control_pending;
    agent.control_pending = NULL;
    pthread_mutex_unlock(&agent.control_mutex);
    if (config == NULL)
        return;
    char err[512] = "";
    int r = rm_agent_publish(config, err, sizeof(err));
    if (r == 0 && !agent.has_snapshot) {
        agent.has_snapshot = 1;
        rm_log_info("agent", "first snapshot from the control plane in service: %s",
                    rm_agent_identity_in_service() ? "ready" : "ready once the workload certificate is in service");
    }
    pthread_mutex_lock(&agent.control_mutex);
    agent.control_result = r;
    snprintf(agent.control_err, sizeof(agent.control_err), "%s", err);
    agent.control_done = 1;
    pthread_cond_broadcast(&agent.control_cond);
    pthread_mutex_unlock(&agent.control_mutex);
}

/* remora_control_updates_total and remora_control_update_bytes_total (config/control_stats.h) on /metrics */
static char *
render_control_updates(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);
    if (fp == NULL)
        return NULL;
    rm_control_render_updates(fp);
    fclose(fp);
    return text;
}

/*
 * The control client's stats source (config/control_stats.h): the golden request family
 * (filters/golden.h: labels direction, route, backend, client_id, status_code, grpc_status, classification)
 * summed over workers and outcomes per (direction, route, backend). The family is visited in label
 * order, so the outcomes of one (direction, route, backend) come one after another. Control thread;
 * the workers' stats blocks outlive the control client (it is stopped before they are destroyed).
 */
#define GOLDEN_FAMILY "remora_request_duration_seconds"
enum { GOLDEN_DIRECTION, GOLDEN_ROUTE, GOLDEN_BACKEND, GOLDEN_CLASSIFICATION = 6 };

typedef struct st_stats_summary_t {
    rm_control_stat_series_t *out, *cur;
    size_t max, n;
    char prev[3][RM_CONTROL_STAT_MAX_VALUE + 1];
} stats_summary_t;

static void
stats_summary_visit(void *ctx, const char *const *values, uint64_t count, const uint64_t *buckets, uint64_t sum_us)
{
    stats_summary_t *sum = ctx;
    char key[3][RM_CONTROL_STAT_MAX_VALUE + 1];
    memset(key, 0, sizeof(key)); /* compared whole with memcmp */
    for (size_t i = 0; i != 3; ++i)
        snprintf(key[i], sizeof(key[i]), "%s", values[i]);
    if (sum->n == 0 || memcmp(key, sum->prev, sizeof(key)) != 0) {
        memcpy(sum->prev, key, sizeof(key));
        sum->cur = sum->n < sum->max ? &sum->out[sum->n] : NULL;
        ++sum->n;
        if (sum->cur != NULL) {
            memset(sum->cur, 0, sizeof(*sum->cur));
            memcpy(sum->cur->direction, key[GOLDEN_DIRECTION], sizeof(key[0]));
            memcpy(sum->cur->route, key[GOLDEN_ROUTE], sizeof(key[0]));
            memcpy(sum->cur->backend, key[GOLDEN_BACKEND], sizeof(key[0]));
        }
    }
    rm_control_stat_series_t *cur = sum->cur;
    if (cur == NULL)
        return;
    cur->requests += count;
    if (strcmp(values[GOLDEN_CLASSIFICATION], "failure") == 0)
        cur->failures += count;
    if (buckets != NULL)
        for (unsigned b = 0; b != RM_HISTOGRAM_BUCKETS; ++b)
            cur->buckets[b] += buckets[b];
    cur->sum_us += sum_us;
}

static size_t
control_stats_source(rm_control_stat_series_t *out, size_t max)
{
    stats_summary_t sum = {.out = out, .max = max};
    rm_series_foreach(GOLDEN_FAMILY, agent.stats, agent.num_workers, stats_summary_visit, &sum);
    return sum.n;
}

/* control thread: counted for remora_config_nacks_total */
static void
control_nack(void *ctx)
{
    rm_obs_config_rejected(RM_OBS_CONFIG_CONTROL_PLANE);
}

static int
control_apply(void *ctx, rm_config_t *config, char *err, size_t errlen)
{
    pthread_mutex_lock(&agent.control_mutex);
    if (agent.control_closed) {
        pthread_mutex_unlock(&agent.control_mutex);
        rm_config_unref(config);
        snprintf(err, errlen, "the agent is shutting down");
        return -1;
    }
    agent.control_pending = config;
    agent.control_done = 0;
    pthread_mutex_unlock(&agent.control_mutex);
    uv_async_send(&agent.control_async);
    pthread_mutex_lock(&agent.control_mutex);
    while (!agent.control_done && !agent.control_closed)
        pthread_cond_wait(&agent.control_cond, &agent.control_mutex);
    int r = agent.control_done ? agent.control_result : -1;
    snprintf(err, errlen, "%s", agent.control_done ? agent.control_err : "the agent is shutting down");
    if (!agent.control_done && agent.control_pending != NULL) {
        rm_config_unref(agent.control_pending);
        agent.control_pending = NULL;
    }
    pthread_mutex_unlock(&agent.control_mutex);
    return r;
}

void
rm_agent_control_stop(void)
{
    if (agent.identity != NULL) {
        agent.control_module->identity_stop(agent.identity);
        agent.identity = NULL;
    }
    if (agent.control == NULL)
        return;
    pthread_mutex_lock(&agent.control_mutex);
    agent.control_closed = 1;
    pthread_cond_broadcast(&agent.control_cond);
    pthread_mutex_unlock(&agent.control_mutex);
    agent.control_module->stop(agent.control);
    agent.control = NULL;
    uv_close((uv_handle_t *)&agent.control_async, NULL);
}

/*
 * Start-up in control-plane mode, before the workers: the state directory, the control module, the last good
 * snapshot (*persisted_version: its version, else left as is) and a kept identity. Returns 0, or -1 logged.
 */
int
rm_agent_control_prepare(uint64_t *persisted_version)
{
    /* serve the last good snapshot until the control plane answers (or forever, if it does not) */
    char perr[1024];
    if (cmdline.state_dir != NULL && prepare_state_dir(cmdline.state_dir, perr, sizeof(perr)) != 0) {
        rm_log_error("agent", "%s", perr);
        return -1;
    }
    /* until a snapshot is in service, requests are answered "not configured yet" (503) */
    agent.config->awaiting_snapshot = 1;
    if (cmdline.namespace_ != NULL)
        agent.config->agent_namespace = rm_strdup(cmdline.namespace_);
    agent.control_base = rm_config_ref(agent.config);
    if ((agent.control_module = rm_control_module_load(perr, sizeof(perr))) == NULL) {
        rm_log_error("agent", "%s", perr);
        return -1;
    }
    rm_config_t *persisted =
        agent.control_module->load_persisted(cmdline.state_dir, agent.control_base, persisted_version, perr, sizeof(perr));
    if (persisted != NULL) {
        rm_log_info("control", "serving persisted snapshot version %llu from %s until the control plane answers",
                    (unsigned long long)*persisted_version, cmdline.state_dir);
        rm_config_unref(agent.config);
        agent.config = persisted;
        agent.has_snapshot = 1;
    } else if (perr[0] != '\0') {
        rm_log_warn("control", "ignoring the persisted snapshot: %s", perr);
    }
    if (cmdline.identity_token != NULL || (cmdline.state_dir != NULL && !cmdline.control_insecure)) {
        /* an unexpired identity kept from an earlier run serves at once, control plane or not (and,
         * without --identity-token, authenticates the agent to the control plane until it expires) */
        rm_identity_init();
        rm_identity_t *id = rm_identity_load(cmdline.state_dir, perr, sizeof(perr));
        if (id != NULL) {
            rm_log_info("identity", "serving %s (serial %s, expires in %lld s) kept in %s", id->spiffe_id, id->serial,
                        (long long)(id->not_after - (int64_t)time(NULL)), cmdline.state_dir);
            rm_identity_publish(id);
            rm_identity_unref(id);
        } else if (perr[0] != '\0') {
            rm_log_warn("identity", "ignoring the kept identity: %s", perr);
        }
    }
    return 0;
}

/* The control client, and with --identity-token the identity client, once the workers run. Returns 0, or -1 logged. */
int
rm_agent_control_start(uint64_t persisted_version)
{
    char err[512];
    pthread_mutex_init(&agent.control_mutex, NULL);
    pthread_cond_init(&agent.control_cond, NULL);
    uv_async_init(&agent.loop, &agent.control_async, on_control_async);
    rm_control_options_t copts = {
        .address = cmdline.control,
        .node_id = cmdline.node_id,
        .state_dir = cmdline.state_dir,
        .base = agent.control_base,
        .applied_version = persisted_version,
        .apply = control_apply,
        .on_nack = control_nack,
        .stats_interval_ms = (uint32_t)cmdline.stats_interval_ms,
        .trust_anchor_file = cmdline.trust_anchor,
        .token_file = cmdline.identity_token,
        .insecure = cmdline.control_insecure,
        .client_identity = control_client_identity,
        .admin_command = control_admin_command,
    };
    rm_control_set_stats_source(control_stats_source);
    rm_stats_register_renderer(render_control_updates);
    if ((agent.control = agent.control_module->start(&copts, err, sizeof(err))) == NULL) {
        rm_log_error("agent", "%s", err);
        return -1;
    }
    if (cmdline.identity_token != NULL) {
        rm_identity_client_options_t iopts = {
            .address = cmdline.control,
            .node_id = cmdline.node_id,
            .token_file = cmdline.identity_token,
            .trust_anchor_file = cmdline.trust_anchor,
            .insecure = cmdline.control_insecure,
            .make_csr = rm_identity_cb_make_csr,
            .install = rm_identity_cb_install,
            .release_key = rm_identity_cb_release_key,
            .validity = rm_identity_cb_validity,
            .on_result = rm_identity_cb_on_result,
            .ctx = (void *)cmdline.state_dir,
        };
        if ((agent.identity = agent.control_module->identity_start(&iopts, err, sizeof(err))) == NULL) {
            rm_log_error("agent", "%s", err);
            return -1;
        }
    }
    return 0;
}
