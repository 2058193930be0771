/*
 * The control plane's own metrics and its monitoring listener (see cp_metrics.h).
 *
 * Counters are plain uint64_t updated with relaxed atomic adds: a scrape may see one counter a
 * moment ahead of another, never a torn value. The listener is the webhook's design without TLS
 * (webhook.c): one thread, poll(), http_parser for HTTP/1.1, fixed bounds on connections, request
 * heads and time, so that a slow or hostile client costs one slot and never blocks the gRPC thread.
 */
#define _GNU_SOURCE /* accept4, open_memstream */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <http_parser.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "cp_metrics.h"

#define LOG "metrics"

/* ------------------------------------------------------------------------------------------- counters */

#define ADD(x, n) __atomic_fetch_add(&(x), (n), __ATOMIC_RELAXED)
#define GET(x) __atomic_load_n(&(x), __ATOMIC_RELAXED)

/* issuance latency buckets (seconds): signing is a fraction of a millisecond, a loaded host or a slow disk (the
 * token binding is written before the answer) takes longer */
static const double issue_buckets[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1};
#define NUM_ISSUE_BUCKETS (sizeof(issue_buckets) / sizeof(issue_buckets[0]))

#define NUM_KUBE_VERBS 6 /* GET POST PUT PATCH DELETE other */
#define NUM_KUBE_CODES 5 /* 2xx 3xx 4xx 5xx error */
#define NUM_KUBE_EVENTS 5

static struct {
    int64_t streams;
    uint64_t pushes[2], push_bytes[2], answers[2];
    uint64_t issued, issue_us_sum, issue_bucket[NUM_ISSUE_BUCKETS];
    uint64_t certify_refused[RM_CP_CERTIFY__COUNT];
    uint64_t tokens_created;
    uint64_t auth_refused[3][2];
    uint64_t applies[RM_CP_APPLY__COUNT];
    uint64_t store_writes[2]; /* ok, error */
    uint64_t store_bytes;
    int store_written;
    uint64_t reviews[RM_CP_REVIEW__COUNT], skips[RM_CP_SKIP__COUNT], webhook_errors[RM_CP_WEBHOOK__COUNT];
    int64_t cert_not_after[RM_CP_CERT__COUNT]; /* 0: not known */
    uint64_t kube_events[NUM_KUBE_EVENTS], kube_relists[2], kube_watch_errors, kube_list_errors;
    uint64_t kube_requests[NUM_KUBE_VERBS][NUM_KUBE_CODES], kube_states;
    int kube;
    int ready[RM_CP_READY__COUNT];
} m;

static pthread_mutex_t source_mutex = PTHREAD_MUTEX_INITIALIZER;
static void (*source_fn)(void *, rm_cp_agent_counts_t *);
static void *source_arg;

void
rm_cp_metrics_stream(int delta)
{
    ADD(m.streams, (int64_t)delta);
}

void
rm_cp_metrics_push(rm_cp_push_kind_t kind, size_t bytes)
{
    int k = kind == RM_CP_PUSH_DELTA;
    ADD(m.pushes[k], 1);
    ADD(m.push_bytes[k], (uint64_t)bytes);
}

void
rm_cp_metrics_answer(int nack)
{
    ADD(m.answers[nack != 0], 1);
}

void
rm_cp_metrics_set_agent_source(void (*fn)(void *arg, rm_cp_agent_counts_t *out), void *arg)
{
    /* a scrape calls the source under this mutex: once this returns, the old source is no longer called */
    pthread_mutex_lock(&source_mutex);
    source_fn = fn;
    source_arg = arg;
    pthread_mutex_unlock(&source_mutex);
}

void
rm_cp_metrics_certify_issued(uint64_t duration_us)
{
    ADD(m.issued, 1);
    ADD(m.issue_us_sum, duration_us);
    double s = (double)duration_us / 1e6;
    for (size_t i = 0; i != NUM_ISSUE_BUCKETS; ++i) {
        if (s <= issue_buckets[i]) {
            ADD(m.issue_bucket[i], 1); /* non-cumulative here; rendering accumulates */
            break;
        }
    }
}

void
rm_cp_metrics_certify_refused(rm_cp_certify_refusal_t reason)
{
    if ((unsigned)reason < RM_CP_CERTIFY__COUNT)
        ADD(m.certify_refused[reason], 1);
}

void
rm_cp_metrics_token_created(void)
{
    ADD(m.tokens_created, 1);
}

void
rm_cp_metrics_auth_refused(int api, int denied)
{
    if (api >= 0 && api < 3)
        ADD(m.auth_refused[api][denied != 0], 1);
}

void
rm_cp_metrics_apply(rm_cp_apply_result_t result)
{
    if ((unsigned)result < RM_CP_APPLY__COUNT)
        ADD(m.applies[result], 1);
}

int
rm_cp_metrics_store_write(int rc, size_t bytes)
{
    ADD(m.store_writes[rc != 0], 1);
    if (rc == 0) {
        __atomic_store_n(&m.store_bytes, (uint64_t)bytes, __ATOMIC_RELAXED);
        __atomic_store_n(&m.store_written, 1, __ATOMIC_RELAXED);
    }
    return rc;
}

void
rm_cp_metrics_review(rm_cp_review_result_t result, rm_cp_skip_reason_t skip)
{
    if ((unsigned)result >= RM_CP_REVIEW__COUNT)
        return;
    ADD(m.reviews[result], 1);
    if (result == RM_CP_REVIEW_SKIPPED)
        ADD(m.skips[(unsigned)skip < RM_CP_SKIP__COUNT ? skip : RM_CP_SKIP_OTHER], 1);
}

void
rm_cp_metrics_webhook_error(rm_cp_webhook_error_t what)
{
    if ((unsigned)what < RM_CP_WEBHOOK__COUNT)
        ADD(m.webhook_errors[what], 1);
}

void
rm_cp_metrics_cert(rm_cp_cert_t cert, int64_t not_after)
{
    if ((unsigned)cert < RM_CP_CERT__COUNT)
        __atomic_store_n(&m.cert_not_after[cert], not_after, __ATOMIC_RELAXED);
}

static const char *const kube_event_names[NUM_KUBE_EVENTS] = {"added", "modified", "deleted", "bookmark", "error"};

void
rm_cp_metrics_kube_event(const char *type)
{
    static const char *const types[NUM_KUBE_EVENTS] = {"ADDED", "MODIFIED", "DELETED", "BOOKMARK", "ERROR"};
    size_t i = 0;
    while (i != NUM_KUBE_EVENTS - 1 && (type == NULL || strcmp(type, types[i]) != 0))
        ++i;
    ADD(m.kube_events[i], 1);
}

void
rm_cp_metrics_kube_relist(int gone)
{
    ADD(m.kube_relists[gone != 0], 1);
}

void
rm_cp_metrics_kube_watch_error(void)
{
    ADD(m.kube_watch_errors, 1);
}

void
rm_cp_metrics_kube_list_error(void)
{
    ADD(m.kube_list_errors, 1);
}

static const char *const kube_verbs[NUM_KUBE_VERBS] = {"GET", "POST", "PUT", "PATCH", "DELETE", "other"};
static const char *const kube_codes[NUM_KUBE_CODES] = {"2xx", "3xx", "4xx", "5xx", "error"};

void
rm_cp_metrics_kube_request(const char *verb, long status)
{
    size_t v = 0;
    while (v != NUM_KUBE_VERBS - 1 && (verb == NULL || strcmp(verb, kube_verbs[v]) != 0))
        ++v;
    size_t c = status >= 200 && status < 600 ? (size_t)(status / 100 - 2) : NUM_KUBE_CODES - 1;
    ADD(m.kube_requests[v][c], 1);
}

void
rm_cp_metrics_kube_started(void)
{
    __atomic_store_n(&m.kube, 1, __ATOMIC_RELAXED);
}

void
rm_cp_metrics_kube_state_built(void)
{
    ADD(m.kube_states, 1);
}

void
rm_cp_metrics_set_ready(rm_cp_ready_cond_t cond, int ok)
{
    if ((unsigned)cond < RM_CP_READY__COUNT)
        __atomic_store_n(&m.ready[cond], ok != 0, __ATOMIC_RELAXED);
}

/* The first condition not met, or NULL when ready. */
static const char *
not_ready_because(void)
{
    if (!GET(m.ready[RM_CP_READY_STORE]))
        return "the store is not loaded yet (--kubernetes: not every watched kind is listed yet)";
    if (!GET(m.ready[RM_CP_READY_DISCOVERY]))
        return "the discovery server is not listening";
    return NULL;
}

/* ------------------------------------------------------------------------------------------ rendering */

static void
family(FILE *fp, const char *name, const char *type, const char *help)
{
    fprintf(fp, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static double start_time;
static pthread_once_t start_time_once = PTHREAD_ONCE_INIT;

/* /proc/self/stat field 22 is the start in clock ticks after boot; the boot time is in /proc/stat */
static void
init_start_time(void)
{
    unsigned long long ticks = 0, btime = 0;
    FILE *st = fopen("/proc/self/stat", "r");
    if (st != NULL) {
        char buf[1024];
        size_t n = fread(buf, 1, sizeof(buf) - 1, st);
        buf[n] = '\0';
        fclose(st);
        const char *p = strrchr(buf, ')'); /* the command name may hold spaces */
        for (int field = 2; p != NULL && field < 22; ++field)
            p = strchr(p + 1, ' ');
        if (p != NULL)
            ticks = strtoull(p + 1, NULL, 10);
    }
    FILE *ps = fopen("/proc/stat", "r");
    if (ps != NULL) {
        char line[256];
        while (fgets(line, sizeof(line), ps) != NULL)
            if (sscanf(line, "btime %llu", &btime) == 1)
                break;
        fclose(ps);
    }
    long hz = sysconf(_SC_CLK_TCK);
    if (btime != 0 && hz > 0)
        start_time = (double)btime + (double)ticks / (double)hz;
}

/* The process collector's names (Prometheus client libraries), so that stock dashboards work. */
static void
process_metrics(FILE *fp)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) {
        family(fp, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
        fprintf(fp, "process_cpu_seconds_total %.6f\n",
                (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
    }
    unsigned long long pages = 0, resident = 0;
    FILE *sf = fopen("/proc/self/statm", "r");
    if (sf != NULL) {
        if (fscanf(sf, "%llu %llu", &pages, &resident) == 2) {
            family(fp, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
            fprintf(fp, "process_resident_memory_bytes %llu\n", resident * (unsigned long long)sysconf(_SC_PAGESIZE));
        }
        fclose(sf);
    }
    DIR *d = opendir("/proc/self/fd");
    if (d != NULL) {
        long n = 0;
        while (readdir(d) != NULL)
            ++n;
        closedir(d);
        family(fp, "process_open_fds", "gauge", "Number of open file descriptors.");
        fprintf(fp, "process_open_fds %ld\n", n - 3); /* ".", ".." and the directory's own descriptor */
    }
    pthread_once(&start_time_once, init_start_time);
    if (start_time != 0) {
        family(fp, "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.");
        fprintf(fp, "process_start_time_seconds %.2f\n", start_time);
    }
}

static void
labelled(FILE *fp, const char *name, const char *label, const char *const *values, const uint64_t *counts, size_t n)
{
    for (size_t i = 0; i != n; ++i)
        fprintf(fp, "%s{%s=\"%s\"} %" PRIu64 "\n", name, label, values[i], GET(counts[i]));
}

static void
render_kube(FILE *fp)
{
    static const char *const relists[] = {"other", "gone"};
    family(fp, "remora_control_kube_watch_events_total", "counter", "Events received on the Kubernetes watches, by type.");
    labelled(fp, "remora_control_kube_watch_events_total", "type", kube_event_names, m.kube_events, NUM_KUBE_EVENTS);
    family(fp, "remora_control_kube_relists_total", "counter",
           "Kinds listed again after their first list: because the watch's history expired (gone: 410 Gone) or otherwise.");
    labelled(fp, "remora_control_kube_relists_total", "reason", relists, m.kube_relists, 2);
    family(fp, "remora_control_kube_watch_errors_total", "counter", "Kubernetes watches that broke (transport error, non-200).");
    fprintf(fp, "remora_control_kube_watch_errors_total %" PRIu64 "\n", GET(m.kube_watch_errors));
    family(fp, "remora_control_kube_list_errors_total", "counter", "Kubernetes lists that failed (retried with backoff).");
    fprintf(fp, "remora_control_kube_list_errors_total %" PRIu64 "\n", GET(m.kube_list_errors));
    family(fp, "remora_control_kube_requests_total", "counter",
           "Requests to the Kubernetes API server other than watches, by verb and status class (error: no answer).");
    for (int v = 0; v != NUM_KUBE_VERBS; ++v)
        for (int c = 0; c != NUM_KUBE_CODES; ++c)
            fprintf(fp, "remora_control_kube_requests_total{verb=\"%s\",code=\"%s\"} %" PRIu64 "\n", kube_verbs[v], kube_codes[c],
                    GET(m.kube_requests[v][c]));
    family(fp, "remora_control_kube_states_built_total", "counter", "States built from the Kubernetes API's objects.");
    fprintf(fp, "remora_control_kube_states_built_total %" PRIu64 "\n", GET(m.kube_states));
}

char *
rm_cp_metrics_render(size_t *len)
{
    char *out = NULL;
    size_t outlen = 0;
    FILE *fp = open_memstream(&out, &outlen);
    if (fp == NULL)
        rm_fatal("open_memstream: out of memory");

    /* discovery (server.c) */
    static const char *const kinds[] = {"full", "delta"}, *const answers[] = {"ack", "nack"};
    family(fp, "remora_control_streams", "gauge", "Discovery streams open (agents connected).");
    int64_t streams = GET(m.streams);
    fprintf(fp, "remora_control_streams %" PRId64 "\n", streams > 0 ? streams : 0);
    rm_cp_agent_counts_t ac = {0};
    int have_source = 0;
    pthread_mutex_lock(&source_mutex);
    if (source_fn != NULL) {
        source_fn(source_arg, &ac);
        have_source = 1;
    }
    pthread_mutex_unlock(&source_mutex);
    if (have_source) {
        uint64_t behind = ac.connected > ac.current + ac.nacked ? ac.connected - ac.current - ac.nacked : 0;
        family(fp, "remora_control_agents", "gauge",
               "Agents past their Hello, by state: current (ACKed the newest version), behind (not yet), nacked (refused their "
               "last snapshot).");
        fprintf(fp, "remora_control_agents{state=\"current\"} %" PRIu64 "\n", ac.current);
        fprintf(fp, "remora_control_agents{state=\"behind\"} %" PRIu64 "\n", behind);
        fprintf(fp, "remora_control_agents{state=\"nacked\"} %" PRIu64 "\n", ac.nacked);
        family(fp, "remora_control_snapshot_version", "gauge", "The newest snapshot version.");
        fprintf(fp, "remora_control_snapshot_version %" PRIu64 "\n", ac.version);
    }
    family(fp, "remora_control_pushes_total", "counter", "Snapshots sent to agents, whole (full) or as changes (delta).");
    labelled(fp, "remora_control_pushes_total", "kind", kinds, m.pushes, 2);
    family(fp, "remora_control_push_bytes_total", "counter", "Encoded bytes of the snapshots sent to agents.");
    labelled(fp, "remora_control_push_bytes_total", "kind", kinds, m.push_bytes, 2);
    family(fp, "remora_control_answers_total", "counter", "Agents' answers to snapshots: ACK or NACK.");
    labelled(fp, "remora_control_answers_total", "result", answers, m.answers, 2);

    /* identity (identity.c) */
    static const char *const certify_reasons[RM_CP_CERTIFY__COUNT] = {"unknown_token", "expired_token", "token_in_use", "bad_csr",
                                                                      "internal"};
    family(fp, "remora_control_certificates_issued_total", "counter", "Workload certificates issued by Identity.Certify.");
    fprintf(fp, "remora_control_certificates_issued_total %" PRIu64 "\n", GET(m.issued));
    family(fp, "remora_control_certify_refusals_total", "counter", "Identity.Certify calls refused, by reason.");
    labelled(fp, "remora_control_certify_refusals_total", "reason", certify_reasons, m.certify_refused, RM_CP_CERTIFY__COUNT);
    family(fp, "remora_control_certificate_issue_duration_seconds", "histogram",
           "Time to check a CSR, sign the certificate and record the token's binding.");
    uint64_t cum = 0;
    for (size_t i = 0; i != NUM_ISSUE_BUCKETS; ++i) {
        cum += GET(m.issue_bucket[i]);
        fprintf(fp, "remora_control_certificate_issue_duration_seconds_bucket{le=\"%g\"} %" PRIu64 "\n", issue_buckets[i], cum);
    }
    uint64_t issued = GET(m.issued);
    fprintf(fp, "remora_control_certificate_issue_duration_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n", issued);
    fprintf(fp, "remora_control_certificate_issue_duration_seconds_sum %.6f\n", (double)GET(m.issue_us_sum) / 1e6);
    fprintf(fp, "remora_control_certificate_issue_duration_seconds_count %" PRIu64 "\n", issued);
    family(fp, "remora_control_tokens_created_total", "counter", "Bootstrap tokens made by Admin.CreateToken.");
    fprintf(fp, "remora_control_tokens_created_total %" PRIu64 "\n", GET(m.tokens_created));
    static const char *const apis[3] = {"admin", "discovery", "identity"};
    family(fp, "remora_control_auth_refusals_total", "counter",
           "Callers refused at the gRPC port's doors, by API and gRPC status (unauthenticated, permission_denied).");
    for (int a = 0; a != 3; ++a)
        for (int d = 0; d != 2; ++d)
            fprintf(fp, "remora_control_auth_refusals_total{api=\"%s\",code=\"%s\"} %" PRIu64 "\n", apis[a],
                    d ? "permission_denied" : "unauthenticated", GET(m.auth_refused[a][d]));
    static const char *const certs[RM_CP_CERT__COUNT] = {"issuer", "server", "webhook"};
    family(fp, "remora_control_certificate_expiry_seconds", "gauge",
           "Seconds until the certificate expires (negative once expired): the CA's issuer, the gRPC port's and the webhook's "
           "serving certificates.");
    int64_t now = (int64_t)time(NULL);
    for (int c = 0; c != RM_CP_CERT__COUNT; ++c) {
        int64_t na = GET(m.cert_not_after[c]);
        if (na != 0)
            fprintf(fp, "remora_control_certificate_expiry_seconds{certificate=\"%s\"} %" PRId64 "\n", certs[c], na - now);
    }

    /* apply (server.c) and the store (store.c) */
    static const char *const accepted[] = {"changed", "unchanged", "dry_run"};
    static const char *const refused[] = {"empty", "invalid", "reference", "store_error", "kubernetes_error"};
    family(fp, "remora_control_applies_total", "counter",
           "Admin.Apply calls accepted (remoractl apply): a new version (changed), nothing to change, or a dry run.");
    labelled(fp, "remora_control_applies_total", "result", accepted, m.applies, 3);
    family(fp, "remora_control_apply_refusals_total", "counter", "Admin.Apply calls refused, by reason class.");
    labelled(fp, "remora_control_apply_refusals_total", "reason", refused, m.applies + RM_CP_APPLY_EMPTY, 5);
    static const char *const results[] = {"ok", "error"};
    family(fp, "remora_control_store_writes_total", "counter", "Writes of the store's state file (store.pb), by result.");
    labelled(fp, "remora_control_store_writes_total", "result", results, m.store_writes, 2);
    if (GET(m.store_written)) {
        family(fp, "remora_control_store_state_bytes", "gauge", "Size of the state last written, in bytes.");
        fprintf(fp, "remora_control_store_state_bytes %" PRIu64 "\n", GET(m.store_bytes));
    }

    /* the injection webhook (webhook.c) */
    static const char *const reviews[RM_CP_REVIEW__COUNT] = {"injected", "skipped", "refused"};
    static const char *const skips[RM_CP_SKIP__COUNT] = {"not_pod",          "not_create",   "disabled",
                                                         "already_injected", "host_network", "other"};
    static const char *const werrors[RM_CP_WEBHOOK__COUNT] = {"bad_review", "malformed_http",   "body_too_large",     "not_found",
                                                              "bad_method", "bad_content_type", "connection_refused", "tls_failed"};
    family(fp, "remora_control_webhook_reviews_total", "counter",
           "AdmissionReviews answered: sidecar injected, pod allowed unchanged (skipped), or pod refused.");
    labelled(fp, "remora_control_webhook_reviews_total", "result", reviews, m.reviews, RM_CP_REVIEW__COUNT);
    family(fp, "remora_control_webhook_skips_total", "counter", "AdmissionReviews that allowed the pod unchanged, by reason.");
    labelled(fp, "remora_control_webhook_skips_total", "reason", skips, m.skips, RM_CP_SKIP__COUNT);
    family(fp, "remora_control_webhook_errors_total", "counter",
           "Webhook requests answered with an error status, and connections refused or failed, by reason.");
    labelled(fp, "remora_control_webhook_errors_total", "reason", werrors, m.webhook_errors, RM_CP_WEBHOOK__COUNT);

    /* --kubernetes (kube_source.c, kube.c): 30 series of zeros would only be noise without it */
    if (GET(m.kube))
        render_kube(fp);
    family(fp, "remora_control_ready", "gauge",
           "1 when GET /ready answers 200: the store is loaded and the discovery server listens.");
    fprintf(fp, "remora_control_ready %d\n", not_ready_because() == NULL);
    process_metrics(fp);
    if (fclose(fp) != 0)
        rm_fatal("open_memstream: out of memory");
    *len = outlen;
    return out;
}

/* -------------------------------------------------------------------------------- the monitoring listener */

#define POLL_MAX_MS 1000

typedef struct st_conn_t {
    int fd;
    int writing;
    uint64_t deadline_ms;
    http_parser parser;
    char in[4096];
    size_t in_len;
    /* the path (no query), cut at 64 bytes: longer ones are not ours anyway */
    char path[65];
    size_t path_len;
    size_t head_bytes;
    int head_too_large;
    char *out;
    size_t out_len, out_off;
    int close_after;
} conn_t;

struct st_rm_cp_metrics_server_t {
    int listen_fd, port;
    int wake[2];
    pthread_t thread;
    conn_t *conns[RM_CP_METRICS_MAX_CONNS];
    size_t num_conns;
    unsigned long refused;
};

static int
head_bytes(conn_t *c, size_t len)
{
    c->head_bytes += len;
    if (c->head_bytes > RM_CP_METRICS_MAX_HEAD_BYTES) {
        c->head_too_large = 1;
        return -1;
    }
    return 0;
}

static int
on_message_begin(http_parser *p)
{
    conn_t *c = p->data;
    c->path_len = 0;
    c->path[0] = '\0';
    c->head_bytes = 0;
    c->deadline_ms = rm_now_ms() + RM_CP_METRICS_READ_TIMEOUT_MS;
    return 0;
}

static int
on_url(http_parser *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    for (size_t i = 0; i != len && c->path_len < sizeof(c->path) - 1; ++i)
        c->path[c->path_len++] = at[i];
    c->path[c->path_len] = '\0';
    return head_bytes(c, len);
}

static int
on_header_part(http_parser *p, const char *at, size_t len)
{
    (void)at;
    return head_bytes(p->data, len);
}

static int
on_message_complete(http_parser *p)
{
    http_parser_pause(p, 1); /* one request at a time: what follows waits for this response */
    return 0;
}

/* a body (none is expected) is read and dropped: its bytes cost no memory, its time counts against the deadline */
static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_part,
    .on_header_value = on_header_part,
    .on_message_complete = on_message_complete,
};

static const char *
status_text(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 400:
        return "Bad Request";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 431:
        return "Request Header Fields Too Large";
    case 503:
        return "Service Unavailable";
    default:
        return "Internal Server Error";
    }
}

/* Takes `body` (malloc'ed). */
static void
set_response(conn_t *c, int status, const char *ctype, char *body, size_t blen, int head_only, const char *extra)
{
    char head[256];
    int n = snprintf(head, sizeof(head), "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s%s\r\n", status,
                     status_text(status), ctype, blen, c->close_after ? "Connection: close\r\n" : "", extra != NULL ? extra : "");
    size_t send_body = head_only ? 0 : blen;
    free(c->out);
    c->out = rm_malloc((size_t)n + send_body + 1);
    memcpy(c->out, head, (size_t)n);
    memcpy(c->out + n, body, send_body);
    free(body);
    c->out_len = (size_t)n + send_body;
    c->out_off = 0;
    c->writing = 1;
    c->deadline_ms = rm_now_ms() + RM_CP_METRICS_READ_TIMEOUT_MS;
}

static void
text_response(conn_t *c, int status, const char *text, int head_only, const char *extra)
{
    set_response(c, status, "text/plain; charset=utf-8", rm_strdup(text), strlen(text), head_only, extra);
}

static void
handle_request(conn_t *c)
{
    c->close_after = !http_should_keep_alive(&c->parser);
    int method = c->parser.method, head_only = method == HTTP_HEAD;
    size_t plen = strcspn(c->path, "?");
    c->path[plen] = '\0';
    int known = strcmp(c->path, "/metrics") == 0 || strcmp(c->path, "/ready") == 0 || strcmp(c->path, "/live") == 0;
    if (!known) {
        text_response(c, 404, "not found: this port serves GET /metrics, /ready and /live\n", head_only, NULL);
    } else if (method != HTTP_GET && method != HTTP_HEAD) {
        text_response(c, 405, "use GET\n", 0, "Allow: GET, HEAD\r\n");
    } else if (strcmp(c->path, "/metrics") == 0) {
        size_t len;
        char *text = rm_cp_metrics_render(&len);
        set_response(c, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, head_only, NULL);
    } else if (strcmp(c->path, "/live") == 0) {
        text_response(c, 200, "live\n", head_only, NULL);
    } else {
        const char *why = not_ready_because();
        if (why == NULL) {
            text_response(c, 200, "ready\n", head_only, NULL);
        } else {
            char body[256];
            snprintf(body, sizeof(body), "not ready: %s\n", why);
            text_response(c, 503, body, head_only, NULL);
        }
    }
}

static void
conn_free(conn_t *c)
{
    close(c->fd);
    free(c->out);
    free(c);
}

static void
parse_input(conn_t *c)
{
    if (c->in_len == 0)
        return;
    size_t n = http_parser_execute(&c->parser, &parser_settings, c->in, c->in_len);
    enum http_errno e = HTTP_PARSER_ERRNO(&c->parser);
    if (e == HPE_PAUSED) {
        memmove(c->in, c->in + n, c->in_len - n);
        c->in_len -= n;
        http_parser_pause(&c->parser, 0);
        handle_request(c);
        return;
    }
    c->in_len = 0;
    if (e != HPE_OK) {
        c->close_after = 1;
        if (c->head_too_large || e == HPE_HEADER_OVERFLOW) {
            char msg[128];
            snprintf(msg, sizeof(msg), "the request head is larger than %u bytes\n", RM_CP_METRICS_MAX_HEAD_BYTES);
            text_response(c, 431, msg, 0, NULL);
        } else {
            char msg[256];
            snprintf(msg, sizeof(msg), "malformed HTTP/1.1 request: %s\n", http_errno_description(e));
            text_response(c, 400, msg, 0, NULL);
        }
        rm_log_debug(LOG, "refused a request: %.*s", (int)(c->out_len > 80 ? 80 : c->out_len), c->out);
    }
}

/* Makes whatever progress the socket allows. Returns -1 when the connection is done. */
static int
conn_progress(conn_t *c)
{
    for (;;) {
        if (c->writing) {
            if (c->out_off == c->out_len) {
                if (c->close_after) {
                    shutdown(c->fd, SHUT_WR);
                    return -1;
                }
                free(c->out);
                c->out = NULL;
                c->out_len = c->out_off = 0;
                c->writing = 0;
                c->deadline_ms = rm_now_ms() + RM_CP_METRICS_IDLE_TIMEOUT_MS;
                parse_input(c); /* a request that came along with the last one */
                continue;
            }
            ssize_t r = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
            if (r > 0) {
                c->out_off += (size_t)r;
                continue;
            }
            if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
                return 0;
            return -1;
        }
        if (c->in_len == sizeof(c->in))
            return -1; /* the parser takes every byte it is given unless paused, so this cannot be: do not spin */
        ssize_t r = recv(c->fd, c->in + c->in_len, sizeof(c->in) - c->in_len, 0);
        if (r > 0) {
            c->in_len += (size_t)r;
            parse_input(c);
            continue;
        }
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
            return 0;
        return -1; /* closed by the peer, or an error */
    }
}

static void
accept_conns(rm_cp_metrics_server_t *ms)
{
    for (;;) {
        int fd = accept4(ms->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        if (ms->num_conns == RM_CP_METRICS_MAX_CONNS) {
            /* logged at the 1st, 2nd, 4th, 8th... so that a flood does not flood the log */
            ++ms->refused;
            if ((ms->refused & (ms->refused - 1)) == 0)
                rm_log_warn(LOG, "%u connections open: closing a new one (%lu so far)", RM_CP_METRICS_MAX_CONNS, ms->refused);
            close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        conn_t *c = rm_calloc(1, sizeof(*c));
        c->fd = fd;
        c->deadline_ms = rm_now_ms() + RM_CP_METRICS_READ_TIMEOUT_MS;
        http_parser_init(&c->parser, HTTP_REQUEST);
        c->parser.data = c;
        ms->conns[ms->num_conns++] = c;
    }
}

static void *
run(void *arg)
{
    rm_cp_metrics_server_t *ms = arg;
    struct pollfd fds[RM_CP_METRICS_MAX_CONNS + 2];
    for (;;) {
        uint64_t now = rm_now_ms(), next = now + POLL_MAX_MS;
        for (size_t i = 0; i < ms->num_conns;) {
            if (ms->conns[i]->deadline_ms <= now) {
                conn_free(ms->conns[i]);
                ms->conns[i] = ms->conns[--ms->num_conns];
                continue;
            }
            ++i;
        }
        fds[0] = (struct pollfd){.fd = ms->wake[0], .events = POLLIN};
        fds[1] = (struct pollfd){.fd = ms->listen_fd, .events = POLLIN};
        for (size_t i = 0; i != ms->num_conns; ++i) {
            fds[i + 2] = (struct pollfd){.fd = ms->conns[i]->fd, .events = ms->conns[i]->writing ? POLLOUT : POLLIN};
            if (ms->conns[i]->deadline_ms < next)
                next = ms->conns[i]->deadline_ms;
        }
        size_t n = ms->num_conns;
        int r = poll(fds, n + 2, next <= now ? 0 : (int)(next - now));
        if (r < 0 && errno != EINTR) {
            rm_log_error(LOG, "poll: %s", strerror(errno));
            break;
        }
        if (r <= 0)
            continue;
        if (fds[0].revents != 0)
            break;
        for (size_t i = n; i-- > 0;) {
            if (fds[i + 2].revents == 0)
                continue;
            if (conn_progress(ms->conns[i]) != 0) {
                conn_free(ms->conns[i]);
                ms->conns[i] = ms->conns[--ms->num_conns];
            }
        }
        if (fds[1].revents != 0)
            accept_conns(ms);
    }
    for (size_t i = 0; i != ms->num_conns; ++i)
        conn_free(ms->conns[i]);
    ms->num_conns = 0;
    return NULL;
}

rm_cp_metrics_server_t *
rm_cp_metrics_server_start(const char *addr, char *err, size_t errsz)
{
    struct sockaddr_storage ss;
    socklen_t sslen;
    const char *why;
    if (rm_parse_ip_port(addr, &ss, &sslen, &why) != 0) {
        snprintf(err, errsz, "--metrics-listen %s: %s (write ADDR:PORT with an IP address, e.g. 0.0.0.0:15014)", addr, why);
        return NULL;
    }
    rm_cp_metrics_server_t *ms = rm_calloc(1, sizeof(*ms));
    ms->wake[0] = ms->wake[1] = -1;
    ms->listen_fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (ms->listen_fd < 0 || setsockopt(ms->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
        bind(ms->listen_fd, (struct sockaddr *)&ss, sslen) != 0 || listen(ms->listen_fd, 64) != 0) {
        snprintf(err, errsz, "--metrics-listen %s: %s", addr, strerror(errno));
        goto Fail;
    }
    sslen = sizeof(ss);
    getsockname(ms->listen_fd, (struct sockaddr *)&ss, &sslen);
    ms->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
    if (pipe2(ms->wake, O_CLOEXEC | O_NONBLOCK) != 0) {
        snprintf(err, errsz, "pipe: %s", strerror(errno));
        goto Fail;
    }
    if (pthread_create(&ms->thread, NULL, run, ms) != 0) {
        snprintf(err, errsz, "cannot start the metrics listener's thread");
        goto Fail;
    }
    return ms;
Fail:
    if (ms->listen_fd >= 0)
        close(ms->listen_fd);
    if (ms->wake[0] >= 0) {
        close(ms->wake[0]);
        close(ms->wake[1]);
    }
    free(ms);
    return NULL;
}

int
rm_cp_metrics_server_port(const rm_cp_metrics_server_t *ms)
{
    return ms->port;
}

void
rm_cp_metrics_server_destroy(rm_cp_metrics_server_t *ms)
{
    if (ms == NULL)
        return;
    ssize_t r;
    do
        r = write(ms->wake[1], "x", 1);
    while (r < 0 && errno == EINTR);
    pthread_join(ms->thread, NULL);
    close(ms->listen_fd);
    close(ms->wake[0]);
    close(ms->wake[1]);
    free(ms);
}
