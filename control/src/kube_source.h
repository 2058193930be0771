/*
 * Kubernetes as the control plane's store and discovery source (remora-control --kubernetes,
 * docs/kubernetes-mode.md).
 *
 * One thread, started here, list-watches the remora.dev/v1 custom resources, core Services,
 * discovery.k8s.io/v1 EndpointSlices and Pods (kube.h), keeps them in a cache, and after each
 * burst of changes (debounced) builds the complete set of Remora resources: the custom resources
 * parsed by the same document code as `remoractl apply`, plus one Remora Service per port of each
 * core Service. The set's version is a hash of its content, so replicas that watch the same state
 * serve the same snapshot with the same version. It also writes each custom resource's status
 * conditions (Accepted, ResolvedRefs) and the trust-anchor ConfigMap of every namespace with
 * injected pods, and runs the writes and TokenReviews the gRPC server asks for.
 *
 * Threads: rm_kube_source_take() and rm_kube_source_dispatch() belong to the gRPC server's thread
 * (server.c), which owns the store; the submit functions may be called from any thread; start,
 * stop and destroy from the main thread. The two sides share only a mutex-protected hand-over.
 */
#ifndef remora_control__kube_source_h
#define remora_control__kube_source_h

#include <stddef.h>
#include <stdint.h>
#include "kube.h"
#include "resource.h"

/* Bounds (docs/kubernetes-mode.md). */
/** objects kept per watched kind; more are refused (logged) until some are deleted */
#define RM_KUBE_MAX_OBJECTS_PER_KIND 50000
/** one object, serialised */
#define RM_KUBE_MAX_OBJECT_BYTES (1536 * 1024)
/** quiet time after a change before a new state is built, and the longest a burst may delay it */
#define RM_KUBE_DEBOUNCE_MS 100
#define RM_KUBE_DEBOUNCE_MAX_MS 1000
/** an apply or delete answers once the watch shows the change, or fails after this long */
#define RM_KUBE_WRITE_WAIT_MS 15000
/** relist backoff after a broken watch: doubles from the first to the last */
#define RM_KUBE_BACKOFF_MIN_MS 200
#define RM_KUBE_BACKOFF_MAX_MS 10000
/** the audience a workload's projected service-account token must carry */
#define RM_KUBE_TOKEN_AUDIENCE "remora"
#define RM_KUBE_TRUST_ANCHOR_CONFIGMAP "remora-trust-anchor"
#define RM_KUBE_TRUST_ANCHOR_KEY "trust-anchor.pem"
#define RM_KUBE_INJECTED_ANNOTATION "remora.dev/injected"

typedef struct st_rm_kube_source_options_t {
    rm_kube_config_t api;
    /** the trust bundle written into the remora-trust-anchor ConfigMaps (copied; NULL: none written) */
    const char *trust_bundle_pem;
} rm_kube_source_options_t;

typedef struct st_rm_kube_source_t rm_kube_source_t;

/** Checks the API configuration and starts the thread. NULL with the reason in `err`. Main thread. */
rm_kube_source_t *rm_kube_source_start(const rm_kube_source_options_t *opts, char *err, size_t errsz);
/**
 * Stops the thread: every job not finished yet completes with an error (dispatched as usual), later
 * submissions fail at once. Main thread; call before stopping the gRPC server, which still
 * dispatches the failures while it drains.
 */
void rm_kube_source_stop(rm_kube_source_t *ks);
/** Stops if needed and frees everything. Main thread, after the server is destroyed. */
void rm_kube_source_destroy(rm_kube_source_t *ks);

/**
 * Server thread: when a state newer than the last taken one was built, moves its resources (sorted
 * by kind, namespace, name) into `out` (an empty list), sets *version and returns 1; else 0.
 */
int rm_kube_source_take(rm_kube_source_t *ks, rm_resource_list_t *out, uint64_t *version);

typedef struct st_rm_kube_result_t {
    /** 1: done (written and seen back; token authenticated) */
    int ok;
    /** the API server did not answer (or the source is stopping): retry later */
    int unavailable;
    /** the HTTP status of the failed request (404 for a delete of nothing), 0 if none */
    long http_status;
    char message[1024];
    /** apply and delete: the version of the first state that holds the change */
    uint64_t version;
    /** TokenReview: the service account's namespace and name, and the pod named by the token ("" if none) */
    char ns[64], sa[254], pod_name[254];
} rm_kube_result_t;

/** Called on the server's thread, from rm_kube_source_dispatch(), once per submitted job. */
typedef void (*rm_kube_done_cb)(void *ctx, const rm_kube_result_t *result);

typedef struct st_rm_kube_write_t {
    rm_kind_t kind;
    const char *ns, *name;
    /** the resource's document as JSON (rendered by render.c): apiVersion, kind, metadata, spec */
    const char *document;
} rm_kube_write_t;

/** Creates or replaces each custom resource (everything copied), then waits for the watch to show them. */
void rm_kube_source_apply(rm_kube_source_t *ks, const rm_kube_write_t *writes, size_t n, rm_kube_done_cb cb, void *ctx);
/** Deletes one custom resource, then waits for the watch to show it gone. */
void rm_kube_source_delete(rm_kube_source_t *ks, rm_kind_t kind, const char *ns, const char *name, rm_kube_done_cb cb, void *ctx);
/** Validates a projected service-account token with a TokenReview (audience RM_KUBE_TOKEN_AUDIENCE). */
void rm_kube_source_review(rm_kube_source_t *ks, const char *token, rm_kube_done_cb cb, void *ctx);
/**
 * Server thread: runs the callbacks of the jobs that finished, once the newest state is taken (call
 * rm_kube_source_take() first), so that the store holds every state a result's version names or a
 * newer one.
 */
void rm_kube_source_dispatch(rm_kube_source_t *ks);

/** The CRD plural of a kind ("services", "httproutes", ...). */
const char *rm_kube_plural(rm_kind_t kind);

#endif
