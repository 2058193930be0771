/*
 * A small Kubernetes API client (docs/kubernetes-mode.md): HTTPS with the service account's bearer
 * token and the cluster's CA (libcurl), JSON bodies (jansson), synchronous requests for LIST pages,
 * writes and TokenReviews, and streaming WATCH requests driven by one curl multi handle.
 *
 * Thread: a client and everything made from it belong to one thread (the Kubernetes source's;
 * kube_source.h). Errors are returned with a message; only OOM aborts. jansson and libcurl appear
 * only here and in kube_source.c.
 */
#ifndef remora_control__kube_h
#define remora_control__kube_h

#include <stddef.h>

/* jansson's json_t; its header is included only by kube.c and kube_source.c, so the gRPC server and
 * main.c, which include kube_source.h, do not see it */
struct json_t;

/* Bounds (docs/kubernetes-mode.md). */
/** one watch event (one line of a watch stream) */
#define RM_KUBE_MAX_LINE_BYTES (4 * 1024 * 1024)
/** one response body (a LIST page of at most RM_KUBE_LIST_PAGE objects, a write's answer) */
#define RM_KUBE_MAX_RESPONSE_BYTES (64 * 1024 * 1024)
#define RM_KUBE_LIST_PAGE 500
/** a synchronous request (LIST page, write, TokenReview) fails after this long */
#define RM_KUBE_REQUEST_TIMEOUT_MS 10000

#define RM_KUBE_SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"

typedef struct st_rm_kube_config_t {
    /** "https://10.96.0.1:443"; NULL: https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT */
    const char *api_url;
    /** NULL: RM_KUBE_SA_DIR/token (re-read before every request: projected tokens rotate) */
    const char *token_file;
    /** NULL: RM_KUBE_SA_DIR/ca.crt */
    const char *ca_file;
} rm_kube_config_t;

typedef struct st_rm_kube_client_t rm_kube_client_t;

/** Checks the configuration (the token and CA files are readable, the URL is http(s)). NULL with the reason in `err`. */
rm_kube_client_t *rm_kube_client_create(const rm_kube_config_t *config, char *err, size_t errsz);
/** Ends every watch and frees the client. */
void rm_kube_client_destroy(rm_kube_client_t *c);
const char *rm_kube_client_url(const rm_kube_client_t *c);

/**
 * One request: `method` ("GET", "POST", "PUT", "PATCH", "DELETE"), `path` (with its query string),
 * `body` (serialised JSON or NULL) sent as `content_type` (NULL: application/json). Returns the HTTP
 * status, with the parsed JSON answer in *resp when it is JSON (caller decrefs; NULL otherwise), or
 * -1 when no answer came (connection, TLS, timeout, oversized body), with the reason in `err`.
 */
long rm_kube_request(rm_kube_client_t *c, const char *method, const char *path, const char *content_type, const char *body,
                     struct json_t **resp, char *err, size_t errsz);

typedef struct st_rm_kube_watch_t rm_kube_watch_t;

/**
 * Called for each event line of a watch (the parsed JSON object, borrowed for the call). Return 0 to
 * go on, -1 to end the watch (it then finishes with RM_KUBE_WATCH_STOPPED).
 */
typedef int (*rm_kube_event_cb)(void *ctx, struct json_t *event);

typedef enum en_rm_kube_watch_end_t {
    /** the server ended the stream after a good answer (timeoutSeconds): watch again from the last resourceVersion */
    RM_KUBE_WATCH_CLEAN,
    /** connection lost, HTTP error status, oversized or unparseable line: relist after a backoff */
    RM_KUBE_WATCH_BROKEN,
    /** the event callback asked to stop (e.g. a 410 Gone ERROR event) */
    RM_KUBE_WATCH_STOPPED,
} rm_kube_watch_end_t;

/** Called once when the watch is over; the watch is freed right after. `why` describes a broken one. */
typedef void (*rm_kube_end_cb)(void *ctx, rm_kube_watch_end_t end, long http_status, const char *why);

/** Starts a streaming GET of `path` (watch=1 and the rest of the query included by the caller). */
rm_kube_watch_t *rm_kube_watch_start(rm_kube_client_t *c, const char *path, rm_kube_event_cb on_event, rm_kube_end_cb on_end,
                                     void *ctx);
/** Ends a watch now, without calling its end callback; frees it. */
void rm_kube_watch_cancel(rm_kube_watch_t *w);

/** Drives every watch for at most `timeout_ms` (returns earlier when data arrives): callbacks run from here. */
void rm_kube_poll(rm_kube_client_t *c, int timeout_ms);

/** URL-escapes a path segment or query value into `buf`. Returns buf. */
const char *rm_kube_escape(const char *s, char *buf, size_t bufsz);

#endif
