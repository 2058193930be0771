/*
 * The control plane's own metrics and its monitoring listener (see cp_metrics.h).
 *
 * Counters are plain uint64_t updated with relaxed atomic adds: a scrape may see one counter a
 * moment ahead of another, never a torn value. The listener is the webhook's server without TLS
 * (httpd.c): one thread, poll(), http_parser for HTTP/1.1, fixed bounds on connections, request
 * heads and time, so that a slow or hostile client costs one slot and never blocks the gRPC thread.
 */
#define _GNU_SOURCE /* open_memstream */
#include <dirent.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/resource.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "cp_metrics.h"
#include "httpd.h"

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
    uint64_t discovery[RM_CP_DISCOVERY__COUNT];
    uint64_t issued, issue_us_sum, issue_bucket[NUM_ISSUE_BUCKETS];
    uint64_t certify_refused[RM_CP_CERTIFY__COUNT];
    uint64_t tokens_created;
    uint64_t auth_refused[3][2];
    uint64_t applies[RM_CP_APPLY__COUNT];
    uint64_t deletes[RM_CP_DELETE__COUNT], token_reviews[RM_CP_TOKEN_REVIEW__COUNT];
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
rm_cp_metrics_discovery(rm_cp_discovery_result_t result, size_t n)
{
    if ((unsigned)result < RM_CP_DISCOVERY__COUNT && n != 0)
        ADD(m.discovery[result], (uint64_t)n);
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

void
rm_cp_metrics_delete(rm_cp_delete_result_t result)
{
    if ((unsigned)result < RM_CP_DELETE__COUNT)
        ADD(m.deletes[result], 1);
}

void
rm_cp_metrics_token_review(rm_cp_token_review_result_t result)
{
    if ((unsigned)result < RM_CP_TOKEN_REVIEW__COUNT)
        ADD(m.token_reviews[result], 1);
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
    static const char *const reviews[RM_CP_TOKEN_REVIEW__COUNT] = {"authenticated", "rejected", "error"};
    family(fp, "remora_control_token_reviews_total", "counter",
           "TokenReviews of projected service-account tokens (Identity.Certify), by result: authenticated, rejected, error "
           "(the Kubernetes API did not answer).");
    labelled(fp, "remora_control_token_reviews_total", "result", reviews, m.token_reviews, RM_CP_TOKEN_REVIEW__COUNT);
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
    static const char *const discovery[RM_CP_DISCOVERY__COUNT] = {"found", "unknown", "over_limit", "unscoped"};
    family(fp, "remora_control_discovery_names_total", "counter",
           "Names agents asked for on demand (Discover), by result: a Service (found), none (unknown), refused over a bound "
           "(over_limit), or asked on a stream in no scope (unscoped).");
    labelled(fp, "remora_control_discovery_names_total", "result", discovery, m.discovery, RM_CP_DISCOVERY__COUNT);

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
    static const char *const deletes[RM_CP_DELETE__COUNT] = {"deleted", "invalid",     "not_found",
                                                             "in_use",  "store_error", "kubernetes_error"};
    family(fp, "remora_control_deletes_total", "counter",
           "Admin.Delete calls (remoractl delete) by result: deleted (a new version), or refused: invalid, not_found, in_use, "
           "store_error, kubernetes_error.");
    labelled(fp, "remora_control_deletes_total", "result", deletes, m.deletes, RM_CP_DELETE__COUNT);
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

struct st_rm_cp_metrics_server_t {
    rm_httpd_t *httpd;
};

static void
text_response(rm_httpd_conn_t *c, int status, const char *text, unsigned flags, const char *extra)
{
    rm_httpd_respond(c, status, "text/plain; charset=utf-8", text, strlen(text), flags, extra);
}

/* the path, without its query, is one of ours */
static int
is_path(const char *url, size_t plen, const char *path)
{
    return plen == strlen(path) && memcmp(url, path, plen) == 0;
}

static void
handle_request(void *arg, rm_httpd_conn_t *c, const rm_httpd_request_t *req)
{
    (void)arg;
    if (req->error != RM_HTTPD_OK) {
        if (req->error == RM_HTTPD_INPUT_FULL)
            return; /* the parser takes every byte it is given unless paused, so this cannot be: close, do not spin */
        char msg[256];
        if (req->error == RM_HTTPD_HEAD_TOO_LARGE) {
            snprintf(msg, sizeof(msg), "the request head is larger than %u bytes\n", RM_CP_METRICS_MAX_HEAD_BYTES);
            text_response(c, 431, msg, 0, NULL);
        } else {
            snprintf(msg, sizeof(msg), "malformed HTTP/1.1 request: %s\n", req->error_text != NULL ? req->error_text : "?");
            text_response(c, 400, msg, 0, NULL);
        }
        size_t len;
        const char *out = rm_httpd_response(c, &len);
        rm_log_debug(LOG, "refused a request: %.*s", (int)(len > 80 ? 80 : len), out);
        return;
    }
    unsigned head_only = req->method == RM_HTTPD_HEAD ? RM_HTTPD_HEAD_ONLY : 0;
    size_t plen = strcspn(req->url, "?");
    const char *url = req->url;
    if (!is_path(url, plen, "/metrics") && !is_path(url, plen, "/ready") && !is_path(url, plen, "/live")) {
        text_response(c, 404, "not found: this port serves GET /metrics, /ready and /live\n", head_only, NULL);
    } else if (req->method != RM_HTTPD_GET && req->method != RM_HTTPD_HEAD) {
        text_response(c, 405, "use GET\n", 0, "Allow: GET, HEAD\r\n");
    } else if (is_path(url, plen, "/metrics")) {
        size_t len;
        char *text = rm_cp_metrics_render(&len);
        rm_httpd_respond(c, 200, "text/plain; version=0.0.4; charset=utf-8", text, len, head_only, NULL);
        free(text);
    } else if (is_path(url, plen, "/live")) {
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

rm_cp_metrics_server_t *
rm_cp_metrics_server_start(const char *addr, char *err, size_t errsz)
{
    rm_httpd_config_t cfg = {
        .listen = addr,
        .listen_flag = "--metrics-listen",
        .listen_example = "0.0.0.0:15014",
        .log_tag = LOG,
        .thread_name = "the metrics listener's thread",
        .max_conns = RM_CP_METRICS_MAX_CONNS,
        .backlog = 64,
        .in_buf_bytes = 4096,
        .max_url_bytes = 64, /* longer paths are not ours anyway */
        .max_head_bytes = RM_CP_METRICS_MAX_HEAD_BYTES,
        .max_body_bytes = 0, /* none is expected: read and dropped */
        .read_timeout_ms = RM_CP_METRICS_READ_TIMEOUT_MS,
        .idle_timeout_ms = RM_CP_METRICS_IDLE_TIMEOUT_MS,
        .handler = handle_request,
    };
    rm_httpd_t *httpd = rm_httpd_create(&cfg, err, errsz);
    if (httpd == NULL)
        return NULL;
    if (rm_httpd_start(httpd, err, errsz) != 0) {
        rm_httpd_destroy(httpd);
        return NULL;
    }
    rm_cp_metrics_server_t *ms = rm_calloc(1, sizeof(*ms));
    ms->httpd = httpd;
    return ms;
}

int
rm_cp_metrics_server_port(const rm_cp_metrics_server_t *ms)
{
    return rm_httpd_port(ms->httpd);
}

void
rm_cp_metrics_server_destroy(rm_cp_metrics_server_t *ms)
{
    if (ms == NULL)
        return;
    rm_httpd_destroy(ms->httpd);
    free(ms);
}
