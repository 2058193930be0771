/*
 * Kubernetes as the store and the discovery source (see kube_source.h, docs/kubernetes-mode.md).
 *
 * The thread's loop: (re)list the kinds that need it (synchronous, paged), drive the watches for up
 * to 50 ms, run the jobs the server submitted, and when the cache changed and every kind is listed,
 * rebuild the whole state once the burst is over. Rebuilding from the cache every time (instead of
 * patching the last state) keeps the result a pure function of the watched objects: what makes two
 * replicas compute the same bytes and so the same version.
 */
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <jansson.h>
#include <openssl/crypto.h>
#include "remora/log.h"
#include "remora/rpc.h"
#include "remora/strutil.h"
#include "remora/v1/service.pb-c.h"
#include "cp_metrics.h"
#include "document.h"
#include "kube_source.h"
#include "token.h"

#define LOG "kube"
#define CRD_PREFIX "/apis/remora.dev/v1"
#define API_VERSION "remora.dev/v1"
#define WATCH_TIMEOUT_S 300
/* ConfigMaps already written are checked again this often (someone may have changed them) */
#define TRUST_ANCHOR_RECHECK_MS (10 * 60 * 1000)
#define TRUST_ANCHOR_RETRY_MS 5000
/* a failed status write pauses the status queue this long */
#define STATUS_RETRY_MS 5000
/* messages kept from one rebuild to the next, so that a warning is logged once, not at every rebuild */
#define MAX_REMEMBERED_WARNINGS 1000

typedef enum { T_CR, T_SERVICE, T_SLICE, T_POD } type_what_t;

typedef struct st_type_t {
    /* name: for messages ("services.remora.dev", "services") */
    const char *prefix, *plural, *name;
    type_what_t what;
    /* T_CR: the kind */
    rm_kind_t kind;
} type_t;

static const char *const kind_names[RM_KIND__ALL] = {
    [RM_KIND_SERVICE] = "services.remora.dev",
    [RM_KIND_HTTP_ROUTE] = "httproutes.remora.dev",
    [RM_KIND_GRPC_ROUTE] = "grpcroutes.remora.dev",
    [RM_KIND_FAULT_INJECTION] = "faultinjections.remora.dev",
    [RM_KIND_BACKEND_TRAFFIC_POLICY] = "backendtrafficpolicies.remora.dev",
    [RM_KIND_RATE_LIMIT_POLICY] = "ratelimitpolicies.remora.dev",
    [RM_KIND_TELEMETRY] = "telemetries.remora.dev",
    [RM_KIND_AUTHORIZATION_POLICY] = "authorizationpolicies.remora.dev",
    [RM_KIND_MESH_TLS] = "meshtlses.remora.dev",
    [RM_KIND_EGRESS_POLICY] = "egresspolicies.remora.dev",
};

static const char *const plurals[RM_KIND__ALL] = {
    [RM_KIND_SERVICE] = "services",
    [RM_KIND_HTTP_ROUTE] = "httproutes",
    [RM_KIND_GRPC_ROUTE] = "grpcroutes",
    [RM_KIND_FAULT_INJECTION] = "faultinjections",
    [RM_KIND_BACKEND_TRAFFIC_POLICY] = "backendtrafficpolicies",
    [RM_KIND_RATE_LIMIT_POLICY] = "ratelimitpolicies",
    [RM_KIND_TELEMETRY] = "telemetries",
    [RM_KIND_AUTHORIZATION_POLICY] = "authorizationpolicies",
    [RM_KIND_MESH_TLS] = "meshtlses",
    [RM_KIND_EGRESS_POLICY] = "egresspolicies",
};

#define NUM_TYPES (RM_KIND__ALL + 3)

typedef struct st_rm_kube_source_t rm_kube_source_t;

typedef struct st_wstate_t {
    rm_kube_source_t *ks;
    type_t type;
    /* "ns/name" -> the object (trimmed to what is used) */
    json_t *objects;
    char *rv;
    int synced, need_list;
    rm_kube_watch_t *watch;
    uint64_t next_ms;
    uint32_t backoff_ms;
    int gone;
    /* the next list is a relist because the watch's history expired (410 Gone) */
    int relist_gone;
    int over_limit_logged;
} wstate_t;

typedef enum { J_APPLY, J_DELETE, J_REVIEW } job_kind_t;

typedef struct st_item_t {
    rm_kind_t kind;
    char *ns, *name, *doc, *rv;
    int seen;
} item_t;

typedef struct st_job_t job_t;
struct st_job_t {
    job_kind_t kind;
    rm_kube_done_cb cb;
    void *ctx;
    item_t *items;
    size_t n;
    char *token;
    uint64_t deadline_ms;
    rm_kube_result_t res;
    job_t *next;
};

struct st_rm_kube_source_t {
    rm_kube_client_t *client;
    char *bundle;
    pthread_t thread;
    int started;
    wstate_t types[NUM_TYPES];
    /* cache changed since the last rebuild: first and last change */
    int dirty, force;
    uint64_t dirty_first_ms, dirty_last_ms;
    uint64_t built_version;
    /* writes waiting for the watch */
    job_t *waiting;
    /* namespaces whose trust-anchor ConfigMap is known good: "ns" -> true */
    json_t *ta_done;
    uint64_t ta_next_ms, ta_recheck_ms;
    int ta_failing;
    /* status patches to write: "plural/ns/name" -> {path, body}, in the order they were queued */
    json_t *status_queue;
    uint64_t status_retry_ms;
    /* warnings logged at the last rebuild */
    json_t *warned, *warned_next;

    /* shared with the server's thread */
    pthread_mutex_t mutex;
    int stopping;
    job_t *todo, *done;
    int has_state;
    rm_resource_list_t state;
    uint64_t state_version;
};

const char *
rm_kube_plural(rm_kind_t kind)
{
    return plurals[kind];
}

/* ------------------------------------------------------------------------------------ small helpers */

static const char *
jstr(const json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s != NULL ? s : "";
}

static const char *
jpath(const json_t *o, const char *a, const char *b)
{
    return jstr(json_object_get(o, a), b);
}

static void warn_once(rm_kube_source_t *ks, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Logs a warning unless the same text was logged at the previous rebuild. */
static void
warn_once(rm_kube_source_t *ks, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (json_object_size(ks->warned_next) < MAX_REMEMBERED_WARNINGS)
        json_object_set_new(ks->warned_next, msg, json_true());
    if (json_object_get(ks->warned, msg) == NULL)
        rm_log_warn(LOG, "%s", msg);
}

static void
now_rfc3339(char *buf, size_t bufsz)
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, bufsz, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static void
type_path(const wstate_t *w, char *buf, size_t bufsz)
{
    snprintf(buf, bufsz, "%s/%s", w->type.prefix, w->type.plural);
}

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The keys of an object, sorted: iteration order must not depend on the order events came in. */
static const char **
sorted_keys(json_t *obj, size_t *n)
{
    *n = json_object_size(obj);
    const char **keys = rm_calloc(*n + 1, sizeof(keys[0]));
    size_t i = 0;
    const char *k;
    json_t *v;
    json_object_foreach(obj, k, v) keys[i++] = k;
    qsort(keys, *n, sizeof(keys[0]), cmp_str);
    return keys;
}

/* ------------------------------------------------------------------------------------------- cache */

/* Only what the translation reads is kept: Pods are the many objects, and of a Pod that is little. */
static json_t *
trim(const wstate_t *w, json_t *obj)
{
    json_t *meta = json_object_get(obj, "metadata");
    if (w->type.what != T_POD) {
        json_t *copy = json_deep_copy(obj);
        json_object_del(json_object_get(copy, "metadata"), "managedFields");
        return copy;
    }
    json_t *out = json_object(), *m = json_object(), *spec = json_object(), *status = json_object();
    json_object_set(m, "name", json_object_get(meta, "name"));
    json_object_set(m, "namespace", json_object_get(meta, "namespace"));
    const char *injected = jstr(json_object_get(meta, "annotations"), RM_KUBE_INJECTED_ANNOTATION);
    if (injected[0] != '\0') {
        json_t *ann = json_object();
        json_object_set_new(ann, RM_KUBE_INJECTED_ANNOTATION, json_string(injected));
        json_object_set_new(m, "annotations", ann);
    }
    json_object_set(spec, "serviceAccountName", json_object_get(json_object_get(obj, "spec"), "serviceAccountName"));
    json_object_set(status, "phase", json_object_get(json_object_get(obj, "status"), "phase"));
    json_object_set_new(out, "metadata", m);
    json_object_set_new(out, "spec", spec);
    json_object_set_new(out, "status", status);
    return out;
}

static void
key_of(json_t *obj, char *buf, size_t bufsz)
{
    snprintf(buf, bufsz, "%s/%s", jpath(obj, "metadata", "namespace"), jpath(obj, "metadata", "name"));
}

static void note_seen(rm_kube_source_t *ks, const wstate_t *w, const char *key, const char *rv, int deleted);

/* Do two versions of a custom resource differ only in status and resourceVersion? */
static int
same_but_status(json_t *a, json_t *b)
{
    json_t *x = json_deep_copy(a), *y = json_deep_copy(b);
    json_object_del(x, "status");
    json_object_del(y, "status");
    json_object_del(json_object_get(x, "metadata"), "resourceVersion");
    json_object_del(json_object_get(y, "metadata"), "resourceVersion");
    int same = json_equal(x, y);
    json_decref(x);
    json_decref(y);
    return same;
}

static void
mark_dirty(rm_kube_source_t *ks)
{
    uint64_t now = rm_now_ms();
    if (!ks->dirty)
        ks->dirty_first_ms = now;
    ks->dirty = 1;
    ks->dirty_last_ms = now;
}

/* Stores (or removes) one object; marks the cache dirty only when what is kept changed. */
static void
cache_put(rm_kube_source_t *ks, wstate_t *w, json_t *obj, int deleted)
{
    char key[600];
    key_of(obj, key, sizeof(key));
    const char *rv = jpath(obj, "metadata", "resourceVersion");
    if (deleted) {
        if (json_object_get(w->objects, key) != NULL) {
            json_object_del(w->objects, key);
            mark_dirty(ks);
        }
    } else {
        json_t *t = trim(w, obj);
        json_t *old = json_object_get(w->objects, key);
        if (old == NULL && json_object_size(w->objects) >= RM_KUBE_MAX_OBJECTS_PER_KIND) {
            if (!w->over_limit_logged)
                rm_log_error(LOG, "%s: more than %d objects; %s and further new ones are ignored", w->type.name,
                             RM_KUBE_MAX_OBJECTS_PER_KIND, key);
            w->over_limit_logged = 1;
            json_decref(t);
            return;
        }
        /* a Pod's resourceVersion changes with its status; only the kept fields matter */
        if (old != NULL && w->type.what == T_POD && json_equal(old, t)) {
            json_decref(t);
        } else if (old != NULL && w->type.what == T_CR && same_but_status(old, t)) {
            /* our own status writes come back this way: kept (the next comparison needs them), no rebuild */
            json_object_set_new(w->objects, key, t);
        } else {
            json_object_set_new(w->objects, key, t);
            mark_dirty(ks);
        }
    }
    if (w->type.what == T_CR)
        note_seen(ks, w, key, rv, deleted);
}

static int
handle_event(void *ctx, json_t *ev)
{
    wstate_t *w = ctx;
    rm_kube_source_t *ks = w->ks;
    const char *type = jstr(ev, "type");
    json_t *obj = json_object_get(ev, "object");
    rm_cp_metrics_kube_event(type);
    if (!json_is_object(obj))
        return 0;
    const char *rv = jpath(obj, "metadata", "resourceVersion");
    if (strcmp(type, "ERROR") == 0) {
        json_int_t code = json_integer_value(json_object_get(obj, "code"));
        if (code == 410) {
            rm_log_info(LOG, "%s: watch from resourceVersion %s expired (410 Gone): relisting", w->type.name, w->rv);
            w->gone = 1;
        } else {
            rm_log_warn(LOG, "%s: watch error %lld: %.300s", w->type.name, (long long)code, jstr(obj, "message"));
        }
        return -1;
    }
    if (strcmp(type, "BOOKMARK") != 0) {
        char *dump = json_dumps(obj, JSON_COMPACT);
        size_t len = dump != NULL ? strlen(dump) : 0;
        free(dump);
        if (len > RM_KUBE_MAX_OBJECT_BYTES) {
            char key[600];
            key_of(obj, key, sizeof(key));
            rm_log_error(LOG, "%s %s: the object is larger than %d bytes; ignored", w->type.name, key, RM_KUBE_MAX_OBJECT_BYTES);
        } else if (strcmp(type, "ADDED") == 0 || strcmp(type, "MODIFIED") == 0) {
            cache_put(ks, w, obj, 0);
        } else if (strcmp(type, "DELETED") == 0) {
            cache_put(ks, w, obj, 1);
        }
    }
    if (rv[0] != '\0') {
        free(w->rv);
        w->rv = rm_strdup(rv);
    }
    w->backoff_ms = 0;
    return 0;
}

/* The next attempt (a list when need_list, else a watch from the last resourceVersion): now, or after a backoff. */
static void
schedule(wstate_t *w, int need_list, int backoff)
{
    w->need_list |= need_list;
    if (!backoff) {
        w->next_ms = rm_now_ms();
        return;
    }
    w->backoff_ms = w->backoff_ms == 0 ? RM_KUBE_BACKOFF_MIN_MS : w->backoff_ms * 2;
    if (w->backoff_ms > RM_KUBE_BACKOFF_MAX_MS)
        w->backoff_ms = RM_KUBE_BACKOFF_MAX_MS;
    /* jitter: replicas that lost the API server together do not come back together */
    w->next_ms = rm_now_ms() + w->backoff_ms / 2 + (uint64_t)rand() % (w->backoff_ms / 2 + 1);
}

static void start_watch(rm_kube_source_t *ks, wstate_t *w);

static void
on_watch_end(void *ctx, rm_kube_watch_end_t end, long status, const char *why)
{
    wstate_t *w = ctx;
    w->watch = NULL;
    if (end == RM_KUBE_WATCH_CLEAN) {
        rm_log_debug(LOG, "%s: watch ended by the server; watching again from %s", w->type.name, w->rv);
        schedule(w, 0, 0);
    } else if (end == RM_KUBE_WATCH_STOPPED && w->gone) {
        /* the events since our resourceVersion are gone: only a new list is complete */
        w->gone = 0;
        w->relist_gone = 1;
        schedule(w, 1, 0);
    } else {
        /* as client-go's reflector: watch again from the last resourceVersion after a backoff; if the
         * server no longer has that history it answers 410 and the kind is relisted */
        schedule(w, 0, 1);
        rm_cp_metrics_kube_watch_error();
        rm_log_warn(LOG, "%s: the watch broke (%s); watching again from resourceVersion %s in %u ms", w->type.name,
                    why[0] != '\0' ? why : "error", w->rv != NULL ? w->rv : "0", (unsigned)w->backoff_ms);
    }
}

static void
start_watch(rm_kube_source_t *ks, wstate_t *w)
{
    char path[512], base[256], rv[128];
    type_path(w, base, sizeof(base));
    snprintf(path, sizeof(path), "%s?watch=1&allowWatchBookmarks=true&timeoutSeconds=%d&resourceVersion=%s", base, WATCH_TIMEOUT_S,
             rm_kube_escape(w->rv != NULL ? w->rv : "0", rv, sizeof(rv)));
    w->watch = rm_kube_watch_start(ks->client, path, handle_event, on_watch_end, w);
}

/* LIST, all pages, then replace the kind's cache with the result. Returns 0, or -1 (logged). */
static int
list_type(rm_kube_source_t *ks, wstate_t *w)
{
    char base[256], path[1200], err[1024], cont[800] = "";
    type_path(w, base, sizeof(base));
    json_t *fresh = json_object();
    char *rv = NULL;
    for (int page = 0;; ++page) {
        char esc[800];
        snprintf(path, sizeof(path), "%s?limit=%d%s%s", base, RM_KUBE_LIST_PAGE, cont[0] != '\0' ? "&continue=" : "",
                 cont[0] != '\0' ? rm_kube_escape(cont, esc, sizeof(esc)) : "");
        json_t *resp;
        long status = rm_kube_request(ks->client, "GET", path, NULL, NULL, &resp, err, sizeof(err));
        if (status != 200) {
            rm_log_warn(LOG, "%s: cannot list: %s", w->type.name, err);
            rm_cp_metrics_kube_list_error();
            json_decref(resp);
            json_decref(fresh);
            free(rv);
            return -1;
        }
        json_t *items = json_object_get(resp, "items");
        size_t i;
        json_t *obj;
        json_array_foreach(items, i, obj)
        {
            char key[600];
            key_of(obj, key, sizeof(key));
            if (json_object_size(fresh) >= RM_KUBE_MAX_OBJECTS_PER_KIND) {
                if (!w->over_limit_logged)
                    rm_log_error(LOG, "%s: more than %d objects; the rest are ignored", w->type.name, RM_KUBE_MAX_OBJECTS_PER_KIND);
                w->over_limit_logged = 1;
                break;
            }
            json_object_set_new(fresh, key, trim(w, obj));
        }
        if (page == 0) {
            free(rv);
            rv = rm_strdup(jpath(resp, "metadata", "resourceVersion"));
        }
        snprintf(cont, sizeof(cont), "%s", jpath(resp, "metadata", "continue"));
        json_decref(resp);
        if (cont[0] == '\0')
            break;
    }
    if (!json_equal(fresh, w->objects))
        mark_dirty(ks);
    json_decref(w->objects);
    w->objects = fresh;
    free(w->rv);
    w->rv = rv;
    if (!w->synced) {
        rm_log_info(LOG, "%s: listed %zu at resourceVersion %s", w->type.name, json_object_size(fresh), rv);
    } else {
        rm_log_info(LOG, "%s: relisted %zu at resourceVersion %s", w->type.name, json_object_size(fresh), rv);
        rm_cp_metrics_kube_relist(w->relist_gone);
    }
    w->relist_gone = 0;
    w->synced = 1;
    w->need_list = 0;
    w->backoff_ms = 0;
    if (w->type.what == T_CR) {
        /* a write waiting for the watch may be in this list (or gone from it) */
        for (job_t *j = ks->waiting; j != NULL; j = j->next)
            for (size_t k = 0; k != j->n; ++k) {
                item_t *it = &j->items[k];
                if (it->seen || it->kind != w->type.kind)
                    continue;
                char key[600];
                snprintf(key, sizeof(key), "%s/%s", it->ns, it->name);
                json_t *o = json_object_get(w->objects, key);
                note_seen(ks, w, key, o != NULL ? jpath(o, "metadata", "resourceVersion") : "", o == NULL);
            }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------- translation */

typedef struct st_entry_t {
    rm_kind_t kind;
    /* the custom resource (borrowed from the cache); NULL for a Service derived from a core Service */
    json_t *obj;
    const char *plural;
    char key[600];
    rm_batch_t batch;
    int accepted, included;
    char accept_msg[1024], refs_msg[1024];
} entry_t;

static void
errors_text(const rm_batch_t *b, char *buf, size_t bufsz)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i != b->errors.size && off + 1 < bufsz; ++i) {
        const rm_doc_error_t *e = &b->errors.entries[i];
        off += snprintf(buf + off, bufsz - off, "%sline %u: %s", i != 0 ? "; " : "", e->line, e->message);
    }
}

/* A custom resource as a document: apiVersion, kind, metadata (name, namespace, labels), spec. */
static char *
cr_document(const wstate_t *w, json_t *obj)
{
    json_t *doc = json_object(), *meta = json_object(), *m = json_object_get(obj, "metadata");
    json_object_set_new(doc, "apiVersion", json_string(API_VERSION));
    json_object_set(doc, "kind", json_object_get(obj, "kind"));
    if (json_object_get(doc, "kind") == NULL)
        json_object_set_new(doc, "kind", json_string(rm_kind_name(w->type.kind)));
    json_object_set(meta, "name", json_object_get(m, "name"));
    json_object_set(meta, "namespace", json_object_get(m, "namespace"));
    /* labels are the user's; annotations are kept out (kubectl writes its last-applied copy there) */
    if (json_object_size(json_object_get(m, "labels")) != 0)
        json_object_set(meta, "labels", json_object_get(m, "labels"));
    json_object_set_new(doc, "metadata", meta);
    json_t *spec = json_object_get(obj, "spec");
    json_object_set(doc, "spec", spec != NULL ? spec : json_object());
    if (spec == NULL)
        json_decref(json_object_get(doc, "spec"));
    /* indented: a message's line number then points at the field */
    char *text = json_dumps(doc, JSON_INDENT(1) | JSON_SORT_KEYS);
    json_decref(doc);
    return text;
}

static int
is_ipv6(const char *ip)
{
    return strchr(ip, ':') != NULL;
}

static void
host_port(const char *ip, long port, char *buf, size_t bufsz)
{
    snprintf(buf, bufsz, is_ipv6(ip) ? "[%s]:%ld" : "%s:%ld", ip, port);
}

static const char *
port_protocol(json_t *port)
{
    const char *ap = jstr(port, "appProtocol"), *name = jstr(port, "name");
    if (ap[0] != '\0') {
        if (strcasecmp(ap, "http") == 0 || strcasecmp(ap, "http1") == 0)
            return "http1";
        if (strcasecmp(ap, "kubernetes.io/h2c") == 0 || strcasecmp(ap, "h2c") == 0 || strcasecmp(ap, "http2") == 0)
            return "http2";
        if (strcasecmp(ap, "grpc") == 0)
            return "grpc";
        return "tcp";
    }
    /* Istio's convention: the name's prefix up to the first dash */
    static const struct {
        const char *prefix, *protocol;
    } prefixes[] = {{"http2", "http2"}, {"h2c", "http2"}, {"http", "http1"}, {"grpc", "grpc"}, {"tcp", "tcp"}};
    for (size_t i = 0; i != sizeof(prefixes) / sizeof(prefixes[0]); ++i) {
        size_t l = strlen(prefixes[i].prefix);
        if (strncasecmp(name, prefixes[i].prefix, l) == 0 && (name[l] == '\0' || name[l] == '-'))
            return prefixes[i].protocol;
    }
    return "tcp";
}

typedef struct st_ep_t {
    char address[80];
    const char *sa;
    int injected, has_pod;
} ep_t;

static int
cmp_ep(const void *a, const void *b)
{
    return strcmp(((const ep_t *)a)->address, ((const ep_t *)b)->address);
}

/* The Remora Service documents of one core Service: one per TCP port. Appends (name, document) pairs. */
static void
derive_service(rm_kube_source_t *ks, json_t *svc, json_t *slices_by_svc, json_t *out_names, json_t *out_docs)
{
    const char *ns = jpath(svc, "metadata", "namespace"), *name = jpath(svc, "metadata", "name");
    json_t *spec = json_object_get(svc, "spec");
    const char *type = jstr(spec, "type"), *cip = jstr(spec, "clusterIP");
    if (strcmp(type, "ExternalName") == 0) {
        rm_log_debug(LOG, "service %s/%s: skipped: ExternalName services have no endpoints", ns, name);
        return;
    }
    if (strcmp(cip, "None") == 0) {
        rm_log_debug(LOG, "service %s/%s: skipped: headless (no virtual address to intercept)", ns, name);
        return;
    }
    if (cip[0] == '\0') {
        rm_log_debug(LOG, "service %s/%s: skipped: no cluster IP yet", ns, name);
        return;
    }
    json_t *ips = json_object_get(spec, "clusterIPs");
    json_t *own_ips = NULL;
    if (json_array_size(ips) == 0) {
        own_ips = json_array();
        json_array_append_new(own_ips, json_string(cip));
        ips = own_ips;
    }
    json_t *ports = json_object_get(spec, "ports");
    size_t n_tcp = 0, i;
    json_t *port;
    json_array_foreach(ports, i, port)
    {
        const char *proto = jstr(port, "protocol");
        n_tcp += proto[0] == '\0' || strcmp(proto, "TCP") == 0;
    }
    wstate_t *pods = &ks->types[RM_KIND__ALL + 2];
    char svc_key[600];
    snprintf(svc_key, sizeof(svc_key), "%s/%s", ns, name);
    json_t *own_slices = json_object_get(slices_by_svc, svc_key);
    json_array_foreach(ports, i, port)
    {
        const char *proto = jstr(port, "protocol"), *pname = jstr(port, "name");
        long pnum = (long)json_integer_value(json_object_get(port, "port"));
        if (!(proto[0] == '\0' || strcmp(proto, "TCP") == 0)) {
            rm_log_debug(LOG, "service %s/%s: port %ld/%s skipped: only TCP is proxied", ns, name, pnum, proto);
            continue;
        }
        char rname[300];
        if (n_tcp == 1)
            snprintf(rname, sizeof(rname), "%s", name);
        else if (pname[0] != '\0')
            snprintf(rname, sizeof(rname), "%s-%s", name, pname);
        else
            snprintf(rname, sizeof(rname), "%s-%ld", name, pnum);
        /* the endpoints: ready addresses of this Service's EndpointSlices, at the slice's port of the same name */
        ep_t *eps = NULL;
        size_t n_eps = 0;
        size_t si;
        json_t *slice;
        json_array_foreach(own_slices, si, slice)
        {
            const char *at = jstr(slice, "addressType");
            if (strcmp(at, "IPv4") != 0 && strcmp(at, "IPv6") != 0)
                continue;
            long target = -1;
            size_t j;
            json_t *sp;
            json_array_foreach(json_object_get(slice, "ports"), j, sp)
            {
                if (strcmp(jstr(sp, "name"), pname) == 0 && json_is_integer(json_object_get(sp, "port")))
                    target = (long)json_integer_value(json_object_get(sp, "port"));
            }
            if (target <= 0 || target > 65535)
                continue;
            json_t *ep;
            json_array_foreach(json_object_get(slice, "endpoints"), j, ep)
            {
                json_t *ready = json_object_get(json_object_get(ep, "conditions"), "ready");
                json_t *addrs = json_object_get(ep, "addresses");
                if (json_is_false(ready) || json_array_size(addrs) == 0)
                    continue;
                const char *ip = json_string_value(json_array_get(addrs, 0));
                if (ip == NULL || strlen(ip) > 45)
                    continue;
                eps = rm_realloc(eps, (n_eps + 1) * sizeof(eps[0]));
                ep_t *e = &eps[n_eps++];
                memset(e, 0, sizeof(*e));
                host_port(ip, target, e->address, sizeof(e->address));
                json_t *ref = json_object_get(ep, "targetRef");
                if (strcmp(jstr(ref, "kind"), "Pod") == 0) {
                    char pkey[600];
                    const char *pns = jstr(ref, "namespace");
                    snprintf(pkey, sizeof(pkey), "%s/%s", pns[0] != '\0' ? pns : ns, jstr(ref, "name"));
                    json_t *pod = json_object_get(pods->objects, pkey);
                    if (pod != NULL) {
                        e->has_pod = 1;
                        e->sa = jpath(pod, "spec", "serviceAccountName");
                        if (e->sa[0] == '\0')
                            e->sa = "default";
                        e->injected = jstr(json_object_get(json_object_get(pod, "metadata"), "annotations"),
                                           RM_KUBE_INJECTED_ANNOTATION)[0] != '\0';
                    }
                }
            }
        }
        if (n_eps > 1)
            qsort(eps, n_eps, sizeof(eps[0]), cmp_ep);
        /* the same address in two slices (a slice being replaced): once */
        size_t u = 0;
        for (size_t j = 0; j != n_eps; ++j)
            if (u == 0 || strcmp(eps[u - 1].address, eps[j].address) != 0)
                eps[u++] = eps[j];
        n_eps = u;
        /* the Service's identity: the most common service account of its pods (ties: the first by name) */
        const char *best = NULL;
        size_t best_n = 0, n_sas = 0, n_injected = 0, n_pods = 0;
        for (size_t j = 0; j != n_eps; ++j) {
            if (!eps[j].has_pod)
                continue;
            ++n_pods;
            n_injected += eps[j].injected;
            size_t c = 0, first = 1;
            for (size_t l = 0; l != n_eps; ++l) {
                if (eps[l].has_pod && strcmp(eps[l].sa, eps[j].sa) == 0) {
                    ++c;
                    if (l < j)
                        first = 0;
                }
            }
            if (!first)
                continue;
            ++n_sas;
            if (c > best_n || (c == best_n && strcmp(eps[j].sa, best) < 0))
                best = eps[j].sa, best_n = c;
        }
        if (n_sas > 1)
            warn_once(ks,
                      "service %s/%s: its pods run as %zu service accounts; the Service's identity is %s, the other endpoints "
                      "carry their own",
                      ns, rname, n_sas, best);
        int meshed = n_pods != 0 && n_injected == n_eps;
        if (n_injected != 0 && !meshed)
            warn_once(ks, "service %s/%s: %zu of %zu endpoints are injected; treated as not meshed until all are", ns, rname,
                      n_injected, n_eps);
        json_t *doc = json_object(), *meta = json_object(), *dspec = json_object(), *addrs = json_array(), *jeps = json_array();
        json_object_set_new(doc, "apiVersion", json_string(API_VERSION));
        json_object_set_new(doc, "kind", json_string("Service"));
        json_object_set_new(meta, "name", json_string(rname));
        json_object_set_new(meta, "namespace", json_string(ns));
        json_object_set_new(doc, "metadata", meta);
        json_object_set_new(dspec, "protocol", json_string(port_protocol(port)));
        size_t l;
        json_t *ip;
        json_array_foreach(ips, l, ip)
        {
            char hp[80];
            if (json_string_value(ip) == NULL || strlen(json_string_value(ip)) > 45)
                continue;
            host_port(json_string_value(ip), pnum, hp, sizeof(hp));
            json_array_append_new(addrs, json_string(hp));
        }
        json_object_set_new(dspec, "addresses", addrs);
        for (size_t j = 0; j != n_eps; ++j) {
            json_t *e = json_object();
            json_object_set_new(e, "address", json_string(eps[j].address));
            if (eps[j].has_pod && best != NULL && strcmp(eps[j].sa, best) != 0 && rm_token_valid_name(eps[j].sa))
                json_object_set_new(e, "serviceAccount", json_string(eps[j].sa));
            json_array_append_new(jeps, e);
        }
        json_object_set_new(dspec, "endpoints", jeps);
        json_object_set_new(dspec, "meshed", json_string(meshed ? "true" : "false"));
        if (best != NULL && rm_token_valid_name(best))
            json_object_set_new(dspec, "serviceAccount", json_string(best));
        json_object_set_new(doc, "spec", dspec);
        char *text = json_dumps(doc, JSON_INDENT(1));
        json_array_append_new(out_names, json_string(rname));
        json_array_append_new(out_docs, json_string(text));
        free(text);
        json_decref(doc);
        free(eps);
    }
    json_decref(own_ips);
}

static int
cmp_resource_ptr(const void *a, const void *b)
{
    return rm_resource_cmp(a, b);
}

typedef struct st_index_t {
    rm_resource_t **list;
    size_t n;
} index_t;

static int
index_exists(void *ctx, rm_kind_t kind, const char *ns, const char *name)
{
    index_t *ix = ctx;
    rm_resource_t key = {.kind = kind, .ns = ns, .name = name}, *kp = &key;
    return ix->n != 0 && bsearch(&kp, ix->list, ix->n, sizeof(ix->list[0]), cmp_resource_ptr) != NULL;
}

static void
build_index(entry_t *e, size_t n, index_t *ix)
{
    ix->n = 0;
    for (size_t i = 0; i != n; ++i)
        if (e[i].included)
            ix->list[ix->n++] = e[i].batch.resources.entries[0];
    qsort(ix->list, ix->n, sizeof(ix->list[0]), cmp_resource_ptr);
}

/* The status conditions of a custom resource: written through /status only when they differ. */
static void
write_status(rm_kube_source_t *ks, entry_t *e)
{
    json_t *obj = e->obj, *meta = json_object_get(obj, "metadata");
    json_int_t gen = json_integer_value(json_object_get(meta, "generation"));
    struct {
        const char *type, *status, *reason, *message;
    } want[2];
    want[0].type = "Accepted";
    want[0].status = e->accepted ? "True" : "False";
    want[0].reason = e->accepted ? "Accepted" : "Invalid";
    want[0].message = e->accepted ? "the document is valid" : e->accept_msg;
    want[1].type = "ResolvedRefs";
    int is_route = e->kind == RM_KIND_HTTP_ROUTE || e->kind == RM_KIND_GRPC_ROUTE;
    if (!e->accepted) {
        want[1].status = "Unknown", want[1].reason = "Invalid", want[1].message = "the document is invalid (see Accepted)";
    } else if (e->refs_msg[0] != '\0') {
        want[1].status = "False", want[1].reason = is_route ? "BackendNotFound" : "TargetNotFound", want[1].message = e->refs_msg;
    } else {
        want[1].status = "True", want[1].reason = "ResolvedRefs", want[1].message = "every reference resolves";
    }
    /* an EgressPolicy refers to nothing the store holds (ServiceAccounts, host patterns that may match no Service
     * yet): Accepted only */
    int nconds = e->kind == RM_KIND_EGRESS_POLICY ? 1 : 2;
    json_t *have = json_object_get(json_object_get(obj, "status"), "conditions");
    int same = json_array_size(have) == (size_t)nconds;
    char now[40];
    now_rfc3339(now, sizeof(now));
    json_t *conds = json_array();
    for (int i = 0; i != nconds; ++i) {
        json_t *old = NULL, *c;
        size_t j;
        json_array_foreach(have, j, c) if (strcmp(jstr(c, "type"), want[i].type) == 0) old = c;
        if (old == NULL || strcmp(jstr(old, "status"), want[i].status) != 0 || strcmp(jstr(old, "reason"), want[i].reason) != 0 ||
            strcmp(jstr(old, "message"), want[i].message) != 0 ||
            json_integer_value(json_object_get(old, "observedGeneration")) != gen)
            same = 0;
        json_t *nc = json_object();
        json_object_set_new(nc, "type", json_string(want[i].type));
        json_object_set_new(nc, "status", json_string(want[i].status));
        json_object_set_new(nc, "reason", json_string(want[i].reason));
        json_object_set_new(nc, "message", json_string(want[i].message));
        json_object_set_new(nc, "observedGeneration", json_integer(gen));
        /* the transition time moves only when the status does: replicas then write identical content */
        const char *ltt = old != NULL && strcmp(jstr(old, "status"), want[i].status) == 0 ? jstr(old, "lastTransitionTime") : "";
        json_object_set_new(nc, "lastTransitionTime", json_string(ltt[0] != '\0' ? ltt : now));
        json_array_append_new(conds, nc);
    }
    if (same) {
        json_decref(conds);
        json_object_del(ks->status_queue, e->key);
        return;
    }
    json_t *patch = json_object(), *st = json_object();
    json_object_set_new(st, "conditions", conds);
    json_object_set_new(patch, "status", st);
    char path[800], en[300], es[300];
    snprintf(path, sizeof(path), CRD_PREFIX "/namespaces/%s/%s/%s/status", rm_kube_escape(jstr(meta, "namespace"), es, sizeof(es)),
             e->plural, rm_kube_escape(jstr(meta, "name"), en, sizeof(en)));
    json_t *job = json_object();
    json_object_set_new(job, "path", json_string(path));
    json_object_set_new(job, "body", patch);
    json_object_set_new(ks->status_queue, e->key, job);
}

/*
 * Writes queued status patches for at most `budget_ms`: thousands of them (the first state of a big
 * cluster) must not hold up the watches, and so the next state, for as long as they take.
 */
static void
flush_status(rm_kube_source_t *ks, uint64_t budget_ms)
{
    uint64_t now = rm_now_ms(), until = now + budget_ms;
    if (now < ks->status_retry_ms)
        return;
    void *it;
    while ((it = json_object_iter(ks->status_queue)) != NULL && rm_now_ms() < until) {
        char key[600];
        snprintf(key, sizeof(key), "%s", json_object_iter_key(it));
        json_t *job = json_object_iter_value(it);
        char *body = json_dumps(json_object_get(job, "body"), JSON_COMPACT);
        char err[1024];
        json_t *resp;
        long status =
            rm_kube_request(ks->client, "PATCH", jstr(job, "path"), "application/merge-patch+json", body, &resp, err, sizeof(err));
        free(body);
        json_decref(resp);
        if (status == 404) {
            rm_log_debug(LOG, "%s: gone before its status was written", key);
        } else if (status < 0 || status >= 500 || status == 429) {
            /* the API server is failing or busy: kept, and the queue paused */
            rm_log_warn(LOG, "%s: cannot write the status (retried in %d s): %s", key, STATUS_RETRY_MS / 1000, err);
            ks->status_retry_ms = rm_now_ms() + STATUS_RETRY_MS;
            return;
        } else if (status >= 300) {
            /* refused (RBAC, validation): dropped; written again when the state changes */
            rm_log_warn(LOG, "%s: cannot write the status: %s", key, err);
        } else {
            rm_log_debug(LOG, "%s: status written", key);
        }
        json_object_del(ks->status_queue, key);
    }
}

/* The remora-trust-anchor ConfigMap in every namespace with an injected pod. */
static void
write_trust_anchors(rm_kube_source_t *ks, int after_rebuild)
{
    if (ks->bundle == NULL)
        return;
    uint64_t now = rm_now_ms();
    if (now >= ks->ta_recheck_ms) {
        json_object_clear(ks->ta_done);
        ks->ta_recheck_ms = now + TRUST_ANCHOR_RECHECK_MS;
    }
    /* after a rebuild (new injected pods may be there) unless a failure is waiting for its retry */
    if (now < ks->ta_next_ms && !(after_rebuild && !ks->ta_failing))
        return;
    wstate_t *pods = &ks->types[RM_KIND__ALL + 2];
    const char *k;
    json_t *pod;
    int failed = 0;
    json_object_foreach(pods->objects, k, pod)
    {
        const char *ns = jpath(pod, "metadata", "namespace");
        if (jstr(json_object_get(json_object_get(pod, "metadata"), "annotations"), RM_KUBE_INJECTED_ANNOTATION)[0] == '\0' ||
            json_object_get(ks->ta_done, ns) != NULL)
            continue;
        char path[600], err[1024], esc[300];
        rm_kube_escape(ns, esc, sizeof(esc));
        snprintf(path, sizeof(path), "/api/v1/namespaces/%s/configmaps/" RM_KUBE_TRUST_ANCHOR_CONFIGMAP, esc);
        json_t *cm;
        long status = rm_kube_request(ks->client, "GET", path, NULL, NULL, &cm, err, sizeof(err));
        json_t *body = NULL;
        const char *method = NULL;
        if (status == 404) {
            body = json_object();
            json_t *meta = json_object(), *labels = json_object(), *data = json_object();
            json_object_set_new(body, "apiVersion", json_string("v1"));
            json_object_set_new(body, "kind", json_string("ConfigMap"));
            json_object_set_new(meta, "name", json_string(RM_KUBE_TRUST_ANCHOR_CONFIGMAP));
            json_object_set_new(meta, "namespace", json_string(ns));
            json_object_set_new(labels, "app.kubernetes.io/managed-by", json_string("remora-control"));
            json_object_set_new(meta, "labels", labels);
            json_object_set_new(body, "metadata", meta);
            json_object_set_new(data, RM_KUBE_TRUST_ANCHOR_KEY, json_string(ks->bundle));
            json_object_set_new(body, "data", data);
            method = "POST";
            snprintf(path, sizeof(path), "/api/v1/namespaces/%s/configmaps", esc);
        } else if (status == 200) {
            if (strcmp(jpath(cm, "data", RM_KUBE_TRUST_ANCHOR_KEY), ks->bundle) != 0) {
                body = json_deep_copy(cm);
                json_t *data = json_object_get(body, "data");
                if (!json_is_object(data)) {
                    data = json_object();
                    json_object_set_new(body, "data", data);
                }
                json_object_set_new(data, RM_KUBE_TRUST_ANCHOR_KEY, json_string(ks->bundle));
                method = "PUT";
            }
        } else {
            rm_log_warn(LOG, "the trust anchor ConfigMap of namespace %s: %s", ns, err);
            failed = 1;
        }
        json_decref(cm);
        if (body != NULL) {
            char *text = json_dumps(body, JSON_COMPACT);
            json_decref(body);
            json_t *resp;
            status = rm_kube_request(ks->client, method, path, NULL, text, &resp, err, sizeof(err));
            free(text);
            json_decref(resp);
            /* 409: another replica wrote it first; checked again next time */
            if (status == 200 || status == 201) {
                rm_log_info(LOG, "%s the trust anchor ConfigMap %s/" RM_KUBE_TRUST_ANCHOR_CONFIGMAP,
                            strcmp(method, "POST") == 0 ? "created" : "updated", ns);
                json_object_set_new(ks->ta_done, ns, json_true());
            } else {
                if (status != 409)
                    rm_log_warn(LOG, "cannot write the trust anchor ConfigMap of namespace %s: %s", ns, err);
                failed = 1;
            }
        } else if (status == 200) {
            json_object_set_new(ks->ta_done, ns, json_true());
        }
    }
    ks->ta_failing = failed;
    ks->ta_next_ms = failed ? now + TRUST_ANCHOR_RETRY_MS : ks->ta_recheck_ms;
}

static uint64_t
state_hash(rm_resource_t **list, size_t n)
{
    uint64_t h = RM_FNV1A_INIT;
    for (size_t i = 0; i != n; ++i) {
        uint8_t hdr[9];
        hdr[0] = (uint8_t)list[i]->kind;
        for (int b = 0; b != 8; ++b)
            hdr[1 + b] = (uint8_t)((uint64_t)list[i]->len >> (8 * b));
        h = rm_fnv1a(h, hdr, sizeof(hdr));
        h = rm_fnv1a(h, list[i]->bytes, list[i]->len);
    }
    /* 63 bits: versions travel as signed 64-bit integers in JSON output; never 0 (no version) */
    h &= 0x7fffffffffffffffull;
    return h != 0 ? h : 1;
}

static void complete_writes(rm_kube_source_t *ks);

static void
rebuild(rm_kube_source_t *ks)
{
    ks->dirty = 0;
    ks->force = 0;
    json_decref(ks->warned_next);
    ks->warned_next = json_object();
    size_t cap = 16, n = 0;
    entry_t *e = rm_calloc(cap, sizeof(*e));
    json_t *cr_services = json_object();
    for (int t = 0; t != RM_KIND__ALL; ++t) {
        wstate_t *w = &ks->types[t];
        size_t nk;
        const char **keys = sorted_keys(w->objects, &nk);
        for (size_t i = 0; i != nk; ++i) {
            if (n == cap)
                e = rm_realloc(e, (cap *= 2) * sizeof(*e));
            entry_t *x = &e[n++];
            memset(x, 0, sizeof(*x));
            x->kind = w->type.kind;
            x->obj = json_object_get(w->objects, keys[i]);
            x->plural = w->type.plural;
            snprintf(x->key, sizeof(x->key), "%s/%s", w->type.plural, keys[i]);
            rm_batch_init(&x->batch);
            char *doc = cr_document(w, x->obj);
            rm_batch_parse(&x->batch, x->key, doc, strlen(doc));
            free(doc);
            x->accepted = x->batch.errors.size == 0 && x->batch.resources.size == 1;
            if (!x->accepted)
                errors_text(&x->batch, x->accept_msg, sizeof(x->accept_msg));
            x->included = x->accepted;
            if (x->kind == RM_KIND_SERVICE)
                json_object_set_new(cr_services, keys[i], json_true());
        }
        free(keys);
    }
    /* Services derived from core Services; a remora.dev Service of the same namespace/name wins */
    wstate_t *svcs = &ks->types[RM_KIND__ALL];
    size_t nk;
    const char **keys = sorted_keys(svcs->objects, &nk);
    json_t *derived = json_object();
    /* EndpointSlices by the Service they belong to ("ns/name"), once per rebuild */
    json_t *slices_by_svc = json_object();
    const char *sk;
    json_t *slice;
    json_object_foreach(ks->types[RM_KIND__ALL + 1].objects, sk, slice)
    {
        char key[600];
        snprintf(key, sizeof(key), "%s/%s", jpath(slice, "metadata", "namespace"),
                 jstr(json_object_get(json_object_get(slice, "metadata"), "labels"), "kubernetes.io/service-name"));
        json_t *list = json_object_get(slices_by_svc, key);
        if (list == NULL) {
            list = json_array();
            json_object_set_new(slices_by_svc, key, list);
        }
        json_array_append(list, slice);
    }
    for (size_t i = 0; i != nk; ++i) {
        json_t *svc = json_object_get(svcs->objects, keys[i]);
        json_t *names = json_array(), *docs = json_array();
        derive_service(ks, svc, slices_by_svc, names, docs);
        const char *ns = jpath(svc, "metadata", "namespace");
        for (size_t j = 0; j != json_array_size(names); ++j) {
            char key[600];
            snprintf(key, sizeof(key), "%s/%s", ns, json_string_value(json_array_get(names, j)));
            if (json_object_get(cr_services, key) != NULL) {
                rm_log_debug(LOG, "service %s: the remora.dev/v1 Service of that name is used instead of the derived one", key);
                continue;
            }
            if (json_object_get(derived, key) != NULL) {
                warn_once(ks, "service %s: derived twice (from core Service %s and another); the first is kept", key, keys[i]);
                continue;
            }
            if (n == cap)
                e = rm_realloc(e, (cap *= 2) * sizeof(*e));
            entry_t *x = &e[n++];
            memset(x, 0, sizeof(*x));
            x->kind = RM_KIND_SERVICE;
            snprintf(x->key, sizeof(x->key), "core service %s", keys[i]);
            rm_batch_init(&x->batch);
            const char *doc = json_string_value(json_array_get(docs, j));
            rm_batch_parse(&x->batch, x->key, doc, strlen(doc));
            x->accepted = x->batch.errors.size == 0 && x->batch.resources.size == 1;
            if (!x->accepted) {
                errors_text(&x->batch, x->accept_msg, sizeof(x->accept_msg));
                warn_once(ks, "%s: cannot become the Remora Service %s: %s", x->key, key, x->accept_msg);
            }
            x->included = x->accepted;
            json_object_set_new(derived, key, json_true());
        }
        json_decref(names);
        json_decref(docs);
    }
    free(keys);
    json_decref(slices_by_svc);
    json_decref(derived);
    json_decref(cr_services);
    /* a virtual address belongs to one Service (agents refuse a snapshot where two share one): the first
     * in order keeps it, remora.dev Services before derived ones */
    json_t *addrs = json_object();
    for (size_t i = 0; i != n; ++i) {
        if (!e[i].included || e[i].kind != RM_KIND_SERVICE)
            continue;
        const Remora__V1__Service *svc = (const Remora__V1__Service *)e[i].batch.resources.entries[0]->msg;
        for (size_t k = 0; svc->spec != NULL && k != svc->spec->n_addresses && e[i].included; ++k) {
            const char *owner = json_string_value(json_object_get(addrs, svc->spec->addresses[k]));
            if (owner == NULL)
                continue;
            e[i].included = e[i].accepted = 0;
            snprintf(e[i].accept_msg, sizeof(e[i].accept_msg), "spec.addresses: '%s' is also an address of %s",
                     svc->spec->addresses[k], owner);
        }
        for (size_t k = 0; e[i].included && svc->spec != NULL && k != svc->spec->n_addresses; ++k)
            json_object_set_new(addrs, svc->spec->addresses[k], json_string(e[i].key));
    }
    json_decref(addrs);
    /* references: a resource whose references do not all resolve is left out, which may leave others
     * dangling in turn: repeat until nothing changes (at most once per resource) */
    index_t ix = {rm_calloc(n + 1, sizeof(rm_resource_t *)), 0};
    for (size_t round = 0; round <= n; ++round) {
        build_index(e, n, &ix);
        int changed = 0;
        for (size_t i = 0; i != n; ++i) {
            if (!e[i].included)
                continue;
            size_t off = 0;
            for (size_t r = 0; r != e[i].batch.num_refs; ++r) {
                rm_ref_t *ref = &e[i].batch.refs[r];
                if (index_exists(&ix, ref->kind, ref->ns, ref->name))
                    continue;
                if (off + 1 < sizeof(e[i].refs_msg))
                    off +=
                        snprintf(e[i].refs_msg + off, sizeof(e[i].refs_msg) - off, "%s%s: %s %s/%s does not exist or is not served",
                                 off != 0 ? "; " : "", ref->what, rm_kind_name(ref->kind), ref->ns, ref->name);
                e[i].included = 0;
                changed = 1;
            }
        }
        if (!changed)
            break;
    }
    build_index(e, n, &ix);
    for (size_t i = 0; i != n; ++i)
        if (e[i].obj != NULL && e[i].accepted && e[i].refs_msg[0] != '\0')
            warn_once(ks, "%s: not served: %s", e[i].key, e[i].refs_msg);
        else if (e[i].obj != NULL && !e[i].accepted)
            warn_once(ks, "%s: invalid: %s", e[i].key, e[i].accept_msg);
    uint64_t version = state_hash(ix.list, ix.n);
    if (version != ks->built_version) {
        rm_resource_list_t out = {0};
        for (size_t i = 0; i != ix.n; ++i) {
            rm_resource_t *r = rm_resource_create(ix.list[i]->kind, ix.list[i]->bytes, ix.list[i]->len);
            if (r == NULL)
                rm_fatal("a parsed resource does not unpack");
            rm_resource_list_push(&out, r);
        }
        pthread_mutex_lock(&ks->mutex);
        rm_resource_list_dispose(&ks->state);
        ks->state = out;
        ks->state_version = version;
        ks->has_state = 1;
        pthread_mutex_unlock(&ks->mutex);
        rm_log_info(LOG, "state %llu: %zu resources (%zu not served)", (unsigned long long)version, ix.n, n - ix.n);
        ks->built_version = version;
        rm_cp_metrics_kube_state_built();
    }
    /* every kind is listed and a state is there for the server to take: GET /ready may say so */
    rm_cp_metrics_set_ready(RM_CP_READY_STORE, 1);
    for (size_t i = 0; i != n; ++i)
        if (e[i].obj != NULL)
            write_status(ks, &e[i]);
    for (size_t i = 0; i != n; ++i)
        rm_batch_dispose(&e[i].batch);
    free(ix.list);
    free(e);
    json_decref(ks->warned);
    ks->warned = ks->warned_next;
    ks->warned_next = json_object();
    write_trust_anchors(ks, 1);
    complete_writes(ks);
}

/* ----------------------------------------------------------------------------------------------- jobs */

static void
finish_job(rm_kube_source_t *ks, job_t *j)
{
    pthread_mutex_lock(&ks->mutex);
    j->next = ks->done;
    ks->done = j;
    pthread_mutex_unlock(&ks->mutex);
}

static int
rv_reached(const char *seen, const char *want)
{
    if (strcmp(seen, want) == 0)
        return 1;
    /* resourceVersions are opaque, but where both are numbers (etcd's revisions) a later one also counts */
    char *e1, *e2;
    unsigned long long a = strtoull(seen, &e1, 10), b = strtoull(want, &e2, 10);
    return seen[0] != '\0' && want[0] != '\0' && *e1 == '\0' && *e2 == '\0' && a >= b;
}

static void
note_seen(rm_kube_source_t *ks, const wstate_t *w, const char *key, const char *rv, int deleted)
{
    for (job_t *j = ks->waiting; j != NULL; j = j->next) {
        for (size_t k = 0; k != j->n; ++k) {
            item_t *it = &j->items[k];
            if (it->seen || it->kind != w->type.kind)
                continue;
            size_t nl = strlen(it->ns);
            if (strncmp(key, it->ns, nl) != 0 || key[nl] != '/' || strcmp(key + nl + 1, it->name) != 0)
                continue;
            if (j->kind == J_DELETE ? deleted : (!deleted && it->rv != NULL && rv_reached(rv, it->rv))) {
                it->seen = 1;
                ks->force = 1;
                mark_dirty(ks);
            }
        }
    }
}

/* After a rebuild: writes the watch has shown complete with the version that holds them. */
static void
complete_writes(rm_kube_source_t *ks)
{
    uint64_t now = rm_now_ms();
    job_t **pp = &ks->waiting;
    while (*pp != NULL) {
        job_t *j = *pp;
        size_t seen = 0;
        for (size_t k = 0; k != j->n; ++k)
            seen += j->items[k].seen;
        if (seen == j->n) {
            j->res.ok = 1;
            j->res.version = ks->built_version;
        } else if (now >= j->deadline_ms) {
            j->res.unavailable = 1;
            snprintf(j->res.message, sizeof(j->res.message),
                     "written to the Kubernetes API, but its watch did not show the change within %d s",
                     RM_KUBE_WRITE_WAIT_MS / 1000);
        } else {
            pp = &j->next;
            continue;
        }
        *pp = j->next;
        finish_job(ks, j);
    }
}

static void
item_path(const item_t *it, int with_name, char *buf, size_t bufsz)
{
    char ens[300], ename[300];
    rm_kube_escape(it->ns, ens, sizeof(ens));
    rm_kube_escape(it->name, ename, sizeof(ename));
    if (with_name)
        snprintf(buf, bufsz, CRD_PREFIX "/namespaces/%s/%s/%s", ens, plurals[it->kind], ename);
    else
        snprintf(buf, bufsz, CRD_PREFIX "/namespaces/%s/%s", ens, plurals[it->kind]);
}

/* Creates or replaces one custom resource; sets it->rv. Returns 0 or -1 with the reason in the job. */
static int
write_item(rm_kube_source_t *ks, job_t *j, item_t *it)
{
    char path[800], err[1024];
    json_error_t je;
    for (int attempt = 0; attempt != 3; ++attempt) {
        json_t *doc = json_loads(it->doc, 0, &je);
        if (doc == NULL) {
            snprintf(j->res.message, sizeof(j->res.message), "%s/%s: the rendered document does not parse: %s",
                     rm_kind_lower(it->kind), it->name, je.text);
            return -1;
        }
        json_t *meta = json_object_get(doc, "metadata");
        json_object_set_new(meta, "namespace", json_string(it->ns));
        item_path(it, 1, path, sizeof(path));
        json_t *cur;
        long status = rm_kube_request(ks->client, "GET", path, NULL, NULL, &cur, err, sizeof(err));
        const char *method = "PUT";
        if (status == 404) {
            method = "POST";
            item_path(it, 0, path, sizeof(path));
        } else if (status == 200) {
            json_object_set_new(meta, "resourceVersion", json_string(jpath(cur, "metadata", "resourceVersion")));
        } else {
            json_decref(cur);
            json_decref(doc);
            j->res.unavailable = status < 0 || status >= 500;
            j->res.http_status = status;
            snprintf(j->res.message, sizeof(j->res.message), "%s/%s: %.700s", rm_kind_lower(it->kind), it->name, err);
            return -1;
        }
        json_decref(cur);
        char *body = json_dumps(doc, JSON_COMPACT);
        json_decref(doc);
        json_t *resp;
        status = rm_kube_request(ks->client, method, path, NULL, body, &resp, err, sizeof(err));
        free(body);
        if (status == 200 || status == 201) {
            free(it->rv);
            it->rv = rm_strdup(jpath(resp, "metadata", "resourceVersion"));
            json_decref(resp);
            rm_log_info(LOG, "%s %s/%s/%s (resourceVersion %s)", strcmp(method, "POST") == 0 ? "created" : "replaced",
                        plurals[it->kind], it->ns, it->name, it->rv);
            return 0;
        }
        json_decref(resp);
        if (status == 409)
            continue; /* raced with another writer: read again */
        j->res.unavailable = status < 0 || status >= 500;
        j->res.http_status = status;
        snprintf(j->res.message, sizeof(j->res.message), "%s/%s: %.700s", rm_kind_lower(it->kind), it->name, err);
        return -1;
    }
    snprintf(j->res.message, sizeof(j->res.message), "%s/%s: kept changing while being written (409 Conflict three times)",
             rm_kind_lower(it->kind), it->name);
    j->res.unavailable = 1;
    return -1;
}

static void
review(rm_kube_source_t *ks, job_t *j)
{
    json_t *body = json_object(), *spec = json_object(), *aud = json_array();
    json_object_set_new(body, "apiVersion", json_string("authentication.k8s.io/v1"));
    json_object_set_new(body, "kind", json_string("TokenReview"));
    json_object_set_new(spec, "token", json_string(j->token));
    json_array_append_new(aud, json_string(RM_KUBE_TOKEN_AUDIENCE));
    json_object_set_new(spec, "audiences", aud);
    json_object_set_new(body, "spec", spec);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    char err[1024];
    json_t *resp;
    long status =
        rm_kube_request(ks->client, "POST", "/apis/authentication.k8s.io/v1/tokenreviews", NULL, text, &resp, err, sizeof(err));
    OPENSSL_cleanse(text, strlen(text));
    free(text);
    if (status != 200 && status != 201) {
        j->res.unavailable = 1;
        snprintf(j->res.message, sizeof(j->res.message), "the TokenReview failed: %.900s", err);
        json_decref(resp);
        return;
    }
    json_t *st = json_object_get(resp, "status");
    if (!json_is_true(json_object_get(st, "authenticated"))) {
        const char *e = jstr(st, "error");
        snprintf(j->res.message, sizeof(j->res.message),
                 "the Kubernetes API does not accept the token for audience " RM_KUBE_TOKEN_AUDIENCE "%s%.300s",
                 e[0] != '\0' ? ": " : "", e);
        json_decref(resp);
        return;
    }
    json_t *auds = json_object_get(st, "audiences");
    int has_aud = auds == NULL;
    size_t i;
    json_t *a;
    json_array_foreach(auds, i, a) has_aud |=
        strcmp(json_string_value(a) != NULL ? json_string_value(a) : "", RM_KUBE_TOKEN_AUDIENCE) == 0;
    const char *user = jpath(st, "user", "username");
    const char *prefix = "system:serviceaccount:";
    if (!has_aud) {
        snprintf(j->res.message, sizeof(j->res.message), "the token is not for audience " RM_KUBE_TOKEN_AUDIENCE);
    } else if (strncmp(user, prefix, strlen(prefix)) != 0 || strchr(user + strlen(prefix), ':') == NULL) {
        snprintf(j->res.message, sizeof(j->res.message), "the token belongs to '%.200s', not to a service account", user);
    } else {
        const char *rest = user + strlen(prefix), *colon = strchr(rest, ':');
        snprintf(j->res.ns, sizeof(j->res.ns), "%.*s", (int)(colon - rest < 63 ? colon - rest : 63), rest);
        snprintf(j->res.sa, sizeof(j->res.sa), "%s", colon + 1);
        json_t *pn =
            json_object_get(json_object_get(json_object_get(st, "user"), "extra"), "authentication.kubernetes.io/pod-name");
        const char *pod = json_string_value(json_array_get(pn, 0));
        snprintf(j->res.pod_name, sizeof(j->res.pod_name), "%s", pod != NULL ? pod : "");
        if (!rm_token_valid_name(j->res.ns) || !rm_token_valid_name(j->res.sa))
            snprintf(j->res.message, sizeof(j->res.message), "the service account %s/%s cannot be named in a SPIFFE ID", j->res.ns,
                     j->res.sa);
        else
            j->res.ok = 1;
    }
    json_decref(resp);
}

static void
run_job(rm_kube_source_t *ks, job_t *j)
{
    if (j->kind == J_REVIEW) {
        review(ks, j);
        finish_job(ks, j);
        return;
    }
    if (j->kind == J_DELETE) {
        item_t *it = &j->items[0];
        char path[800], err[1024];
        item_path(it, 1, path, sizeof(path));
        json_t *resp;
        long status = rm_kube_request(ks->client, "DELETE", path, NULL, NULL, &resp, err, sizeof(err));
        json_decref(resp);
        if (status != 200 && status != 202) {
            j->res.http_status = status;
            j->res.unavailable = status < 0 || status >= 500;
            if (status == 404)
                snprintf(j->res.message, sizeof(j->res.message),
                         "%s/%s not found in namespace %s (in the Kubernetes API: Services derived from core Services are removed "
                         "with them)",
                         rm_kind_lower(it->kind), it->name, it->ns);
            else
                snprintf(j->res.message, sizeof(j->res.message), "%s", err);
            finish_job(ks, j);
            return;
        }
        rm_log_info(LOG, "deleted %s/%s/%s", plurals[it->kind], it->ns, it->name);
    } else {
        for (size_t k = 0; k != j->n; ++k) {
            if (write_item(ks, j, &j->items[k]) != 0) {
                if (k != 0) {
                    size_t l = strlen(j->res.message);
                    snprintf(j->res.message + l, sizeof(j->res.message) - l, " (the %zu resource(s) before it were written)", k);
                }
                finish_job(ks, j);
                return;
            }
        }
    }
    j->deadline_ms = rm_now_ms() + RM_KUBE_WRITE_WAIT_MS;
    j->next = ks->waiting;
    ks->waiting = j;
    /* the watch may already have shown it (a delete of something the cache no longer has) */
    for (size_t k = 0; k != j->n; ++k) {
        item_t *it = &j->items[k];
        wstate_t *w = &ks->types[it->kind];
        char key[600];
        snprintf(key, sizeof(key), "%s/%s", it->ns, it->name);
        json_t *o = json_object_get(w->objects, key);
        note_seen(ks, w, key, o != NULL ? jpath(o, "metadata", "resourceVersion") : "", o == NULL);
    }
}

static void
free_job(job_t *j)
{
    for (size_t k = 0; k != j->n; ++k) {
        free(j->items[k].ns);
        free(j->items[k].name);
        free(j->items[k].doc);
        free(j->items[k].rv);
    }
    free(j->items);
    if (j->token != NULL) {
        OPENSSL_cleanse(j->token, strlen(j->token));
        free(j->token);
    }
    free(j);
}

static void
submit(rm_kube_source_t *ks, job_t *j)
{
    pthread_mutex_lock(&ks->mutex);
    if (ks->stopping) {
        j->res.unavailable = 1;
        snprintf(j->res.message, sizeof(j->res.message), "the control plane is stopping");
        j->next = ks->done;
        ks->done = j;
    } else {
        job_t **pp = &ks->todo;
        while (*pp != NULL)
            pp = &(*pp)->next;
        *pp = j;
    }
    pthread_mutex_unlock(&ks->mutex);
}

void
rm_kube_source_apply(rm_kube_source_t *ks, const rm_kube_write_t *writes, size_t n, rm_kube_done_cb cb, void *ctx)
{
    job_t *j = rm_calloc(1, sizeof(*j));
    j->kind = J_APPLY;
    j->cb = cb;
    j->ctx = ctx;
    j->n = n;
    j->items = rm_calloc(n + 1, sizeof(j->items[0]));
    for (size_t k = 0; k != n; ++k) {
        j->items[k].kind = writes[k].kind;
        j->items[k].ns = rm_strdup(writes[k].ns);
        j->items[k].name = rm_strdup(writes[k].name);
        j->items[k].doc = rm_strdup(writes[k].document);
    }
    submit(ks, j);
}

void
rm_kube_source_delete(rm_kube_source_t *ks, rm_kind_t kind, const char *ns, const char *name, rm_kube_done_cb cb, void *ctx)
{
    job_t *j = rm_calloc(1, sizeof(*j));
    j->kind = J_DELETE;
    j->cb = cb;
    j->ctx = ctx;
    j->n = 1;
    j->items = rm_calloc(1, sizeof(j->items[0]));
    j->items[0].kind = kind;
    j->items[0].ns = rm_strdup(ns);
    j->items[0].name = rm_strdup(name);
    submit(ks, j);
}

void
rm_kube_source_review(rm_kube_source_t *ks, const char *token, rm_kube_done_cb cb, void *ctx)
{
    job_t *j = rm_calloc(1, sizeof(*j));
    j->kind = J_REVIEW;
    j->cb = cb;
    j->ctx = ctx;
    j->token = rm_strdup(token);
    submit(ks, j);
}

void
rm_kube_source_dispatch(rm_kube_source_t *ks)
{
    pthread_mutex_lock(&ks->mutex);
    /* a state not taken yet may be the one a finished write's version names: the jobs wait for the take */
    job_t *list = ks->has_state && !ks->stopping ? NULL : ks->done;
    if (list != NULL)
        ks->done = NULL;
    pthread_mutex_unlock(&ks->mutex);
    /* oldest first */
    job_t *rev = NULL;
    while (list != NULL) {
        job_t *next = list->next;
        list->next = rev;
        rev = list;
        list = next;
    }
    while (rev != NULL) {
        job_t *next = rev->next;
        rev->cb(rev->ctx, &rev->res);
        free_job(rev);
        rev = next;
    }
}

int
rm_kube_source_take(rm_kube_source_t *ks, rm_resource_list_t *out, uint64_t *version)
{
    pthread_mutex_lock(&ks->mutex);
    int has = ks->has_state;
    if (has) {
        *out = ks->state;
        memset(&ks->state, 0, sizeof(ks->state));
        *version = ks->state_version;
        ks->has_state = 0;
    }
    pthread_mutex_unlock(&ks->mutex);
    return has;
}

/* ------------------------------------------------------------------------------------------- thread */

static int
all_synced(rm_kube_source_t *ks)
{
    for (int t = 0; t != NUM_TYPES; ++t)
        if (!ks->types[t].synced)
            return 0;
    return 1;
}

static void *
run(void *arg)
{
    rm_kube_source_t *ks = arg;
    int was_synced = 0;
    for (;;) {
        pthread_mutex_lock(&ks->mutex);
        int stopping = ks->stopping;
        job_t *todo = ks->todo;
        ks->todo = NULL;
        pthread_mutex_unlock(&ks->mutex);
        if (stopping) {
            /* jobs submitted after the last look fail, with the ones waiting for the watch */
            while (todo != NULL) {
                job_t *next = todo->next;
                todo->res.unavailable = 1;
                snprintf(todo->res.message, sizeof(todo->res.message), "the control plane is stopping");
                finish_job(ks, todo);
                todo = next;
            }
            while (ks->waiting != NULL) {
                job_t *j = ks->waiting;
                ks->waiting = j->next;
                j->res.unavailable = 1;
                snprintf(j->res.message, sizeof(j->res.message), "the control plane is stopping");
                finish_job(ks, j);
            }
            break;
        }
        uint64_t now = rm_now_ms();
        for (int t = 0; t != NUM_TYPES; ++t) {
            wstate_t *w = &ks->types[t];
            if (w->watch != NULL || now < w->next_ms)
                continue;
            if (w->need_list && list_type(ks, w) != 0) {
                schedule(w, 1, 1);
                continue;
            }
            start_watch(ks, w);
        }
        while (todo != NULL) {
            job_t *next = todo->next;
            run_job(ks, todo);
            todo = next;
        }
        rm_kube_poll(ks->client, 50);
        now = rm_now_ms();
        if (all_synced(ks)) {
            if (!was_synced) {
                rm_log_info(LOG, "every kind listed: serving the state of the Kubernetes API at %s",
                            rm_kube_client_url(ks->client));
                was_synced = 1;
                ks->force = 1;
                mark_dirty(ks);
            }
            if (ks->dirty && (ks->force || now - ks->dirty_last_ms >= RM_KUBE_DEBOUNCE_MS ||
                              now - ks->dirty_first_ms >= RM_KUBE_DEBOUNCE_MAX_MS))
                rebuild(ks);
            else if (ks->waiting != NULL)
                complete_writes(ks);
            if (now >= ks->ta_next_ms && !ks->dirty)
                write_trust_anchors(ks, 0);
            if (!ks->dirty)
                flush_status(ks, 100);
        } else if (ks->waiting != NULL) {
            complete_writes(ks);
        }
    }
    return NULL;
}

rm_kube_source_t *
rm_kube_source_start(const rm_kube_source_options_t *opts, char *err, size_t errsz)
{
    rm_kube_client_t *client = rm_kube_client_create(&opts->api, err, errsz);
    if (client == NULL)
        return NULL;
    rm_kube_source_t *ks = rm_calloc(1, sizeof(*ks));
    ks->client = client;
    ks->bundle = opts->trust_bundle_pem != NULL ? rm_strdup(opts->trust_bundle_pem) : NULL;
    ks->ta_done = json_object();
    ks->status_queue = json_object();
    ks->warned = json_object();
    ks->warned_next = json_object();
    pthread_mutex_init(&ks->mutex, NULL);
    for (int k = 0; k != RM_KIND__ALL; ++k)
        ks->types[k].type = (type_t){CRD_PREFIX, plurals[k], kind_names[k], T_CR, (rm_kind_t)k};
    ks->types[RM_KIND__ALL].type = (type_t){"/api/v1", "services", "services", T_SERVICE, RM_KIND__ALL};
    ks->types[RM_KIND__ALL + 1].type =
        (type_t){"/apis/discovery.k8s.io/v1", "endpointslices", "endpointslices.discovery.k8s.io", T_SLICE, RM_KIND__ALL};
    ks->types[RM_KIND__ALL + 2].type = (type_t){"/api/v1", "pods", "pods", T_POD, RM_KIND__ALL};
    for (int t = 0; t != NUM_TYPES; ++t) {
        ks->types[t].objects = json_object();
        ks->types[t].need_list = 1;
        ks->types[t].ks = ks;
    }
    int rc = pthread_create(&ks->thread, NULL, run, ks);
    if (rc != 0)
        rm_fatal("cannot start the Kubernetes thread: %s", strerror(rc));
    ks->started = 1;
    rm_cp_metrics_kube_started();
    rm_log_info(LOG, "watching the Kubernetes API at %s", rm_kube_client_url(client));
    return ks;
}

void
rm_kube_source_stop(rm_kube_source_t *ks)
{
    pthread_mutex_lock(&ks->mutex);
    int was = ks->stopping;
    ks->stopping = 1;
    pthread_mutex_unlock(&ks->mutex);
    if (!was && ks->started)
        pthread_join(ks->thread, NULL);
    ks->started = 0;
}

void
rm_kube_source_destroy(rm_kube_source_t *ks)
{
    if (ks == NULL)
        return;
    rm_kube_source_stop(ks);
    rm_kube_source_dispatch(ks);
    rm_kube_client_destroy(ks->client);
    for (int t = 0; t != NUM_TYPES; ++t) {
        json_decref(ks->types[t].objects);
        free(ks->types[t].rv);
    }
    rm_resource_list_dispose(&ks->state);
    json_decref(ks->ta_done);
    json_decref(ks->status_queue);
    json_decref(ks->warned);
    json_decref(ks->warned_next);
    free(ks->bundle);
    pthread_mutex_destroy(&ks->mutex);
    free(ks);
}
