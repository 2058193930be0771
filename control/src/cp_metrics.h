/*
 * The control plane's own metrics (Prometheus text on the monitoring listener, `--metrics-listen`):
 * every decision it takes on behalf of agents and of the cluster is counted here. Counters are
 * process-wide atomics, safe from any thread; rendering reads them without locks.
 *
 * The discovery server (server.c) reports its streams and pushes through the calls below, and gives
 * the agents' current state through the source it registers.
 */
#ifndef remora__control_cp_metrics_h
#define remora__control_cp_metrics_h

#include <stddef.h>
#include <stdint.h>

/** How a snapshot was sent to an agent. */
typedef enum {
    RM_CP_PUSH_FULL = 0,  /* the whole state (first push, agent too far behind, after a NACK) */
    RM_CP_PUSH_DELTA = 1, /* only what changed since the version the agent ACKed */
} rm_cp_push_kind_t;

/** A discovery stream opened (+1) or ended (-1). */
void rm_cp_metrics_stream(int delta);
/** A snapshot of `bytes` (encoded message size) sent to one agent. */
void rm_cp_metrics_push(rm_cp_push_kind_t kind, size_t bytes);
/** An agent answered a snapshot: ACK (nack == 0) or NACK (nack == 1). */
void rm_cp_metrics_answer(int nack);

/** What became of a name of an agent's Discover (on-demand discovery, docs/control-plane.md). */
typedef enum {
    RM_CP_DISCOVERY_FOUND = 0,  /* names a Service: added to the scope's discovered set, or in the scope already */
    RM_CP_DISCOVERY_UNKNOWN,    /* names no Service */
    RM_CP_DISCOVERY_OVER_LIMIT, /* refused: past 32 names in a message, over 253 bytes, or the scope's 256 discovered */
    RM_CP_DISCOVERY_UNSCOPED,   /* asked on a stream in no scope (it receives everything already) */
    RM_CP_DISCOVERY__COUNT
} rm_cp_discovery_result_t;
/** `n` names of Discover messages came to `result` (remora_control_discovery_names_total). */
void rm_cp_metrics_discovery(rm_cp_discovery_result_t result, size_t n);

/** The agents as the discovery server sees them at the moment of a scrape. */
typedef struct {
    uint64_t connected; /* streams past their Hello */
    uint64_t current;   /* of those, agents whose ACKed version is the newest */
    uint64_t nacked;    /* of those, agents whose last answer was a NACK */
    uint64_t version;   /* the newest snapshot version */
} rm_cp_agent_counts_t;

/**
 * Registers the function a scrape calls for rm_cp_agent_counts_t (any thread: it must lock what it
 * reads). One source; NULL unregisters (before the server is destroyed).
 */
void rm_cp_metrics_set_agent_source(void (*fn)(void *arg, rm_cp_agent_counts_t *out), void *arg);

/* ------------------------------------------------------------------------------------------------
 * The other decisions. Each call is one atomic add (relaxed); any thread. */

/** Identity.Certify refused, by reason (the keys of IdentityStatusResponse.refusals). */
typedef enum {
    RM_CP_CERTIFY_UNKNOWN_TOKEN = 0, /* no token, a token this control plane never made, or one the TokenReview refused */
    RM_CP_CERTIFY_EXPIRED_TOKEN,     /* an unused token past its first-use deadline, or a bound one that lapsed */
    RM_CP_CERTIFY_TOKEN_IN_USE,      /* the token is bound to another node id (node mismatch) */
    RM_CP_CERTIFY_BAD_CSR,           /* an empty, oversized or invalid CSR, a bad node id */
    RM_CP_CERTIFY_INTERNAL,          /* signing or recording failed; the Kubernetes API did not answer */
    RM_CP_CERTIFY__COUNT
} rm_cp_certify_refusal_t;
/** A workload certificate was issued; `duration_us` from the CSR check to the signed certificate. */
void rm_cp_metrics_certify_issued(uint64_t duration_us);
void rm_cp_metrics_certify_refused(rm_cp_certify_refusal_t reason);
/** Admin.CreateToken made a bootstrap token. */
void rm_cp_metrics_token_created(void);

/** A door of the gRPC port refused a caller: `api` 0 admin, 1 discovery, 2 identity (rm_auth_api_t); `denied` 0 for
 * UNAUTHENTICATED, 1 for PERMISSION_DENIED. */
void rm_cp_metrics_auth_refused(int api, int denied);

/** What `remoractl apply` (Admin.Apply) came to. */
typedef enum {
    RM_CP_APPLY_CHANGED = 0, /* accepted: a new version */
    RM_CP_APPLY_UNCHANGED,   /* accepted: everything was already so */
    RM_CP_APPLY_DRY_RUN,     /* accepted as a dry run */
    RM_CP_APPLY_EMPTY,       /* refused: no documents */
    RM_CP_APPLY_INVALID,     /* refused: a document does not parse or validate (YAML, schema, values) */
    RM_CP_APPLY_REFERENCE,   /* refused: the documents are valid but refer to what does not exist */
    RM_CP_APPLY_STORE_ERROR, /* refused: the store could not write the change */
    RM_CP_APPLY_KUBE_ERROR,  /* refused: the Kubernetes API refused or did not take the change (--kubernetes) */
    RM_CP_APPLY__COUNT
} rm_cp_apply_result_t;
void rm_cp_metrics_apply(rm_cp_apply_result_t result);

/** What `remoractl delete` (Admin.Delete) came to. */
typedef enum {
    RM_CP_DELETE_DELETED = 0, /* deleted: a new version */
    RM_CP_DELETE_INVALID,     /* refused: no kind or no name */
    RM_CP_DELETE_NOT_FOUND,   /* refused: no such resource */
    RM_CP_DELETE_IN_USE,      /* refused: served resources still refer to it */
    RM_CP_DELETE_STORE_ERROR, /* refused: the store could not write the change */
    RM_CP_DELETE_KUBE_ERROR,  /* refused: the Kubernetes API refused or did not take the deletion (--kubernetes) */
    RM_CP_DELETE__COUNT
} rm_cp_delete_result_t;
void rm_cp_metrics_delete(rm_cp_delete_result_t result);

/** --kubernetes: what a TokenReview of a projected service-account token (Identity.Certify) came to. */
typedef enum {
    RM_CP_TOKEN_REVIEW_AUTHENTICATED = 0, /* a service account's token for audience remora */
    RM_CP_TOKEN_REVIEW_REJECTED, /* not authenticated, another audience, not a service account, or names unfit for a SPIFFE ID */
    RM_CP_TOKEN_REVIEW_ERROR,    /* the Kubernetes API did not answer, or not with a TokenReview */
    RM_CP_TOKEN_REVIEW__COUNT
} rm_cp_token_review_result_t;
void rm_cp_metrics_token_review(rm_cp_token_review_result_t result);

/**
 * The store wrote its state file (`rc` 0) or failed to (`rc` != 0); `bytes` is the state's encoded
 * size. Returns `rc`, so that it wraps the write: `if (rm_cp_metrics_store_write(write_state(...), len) != 0)`.
 */
int rm_cp_metrics_store_write(int rc, size_t bytes);

/** The injection webhook answered an AdmissionReview. */
typedef enum {
    RM_CP_REVIEW_INJECTED = 0,
    RM_CP_REVIEW_SKIPPED,
    RM_CP_REVIEW_REFUSED, /* allowed: false (the pod's annotations are invalid) */
    RM_CP_REVIEW__COUNT
} rm_cp_review_result_t;
/** Why a pod was allowed unchanged. */
typedef enum {
    RM_CP_SKIP_NOT_POD = 0,      /* the object is not a Pod */
    RM_CP_SKIP_NOT_CREATE,       /* an operation other than CREATE */
    RM_CP_SKIP_DISABLED,         /* remora.dev/inject: disabled */
    RM_CP_SKIP_ALREADY_INJECTED, /* annotated as injected, or it has the proxy container */
    RM_CP_SKIP_HOST_NETWORK,     /* hostNetwork pod */
    RM_CP_SKIP_OTHER,
    RM_CP_SKIP__COUNT
} rm_cp_skip_reason_t;
/** `skip` only counts with RM_CP_REVIEW_SKIPPED. */
void rm_cp_metrics_review(rm_cp_review_result_t result, rm_cp_skip_reason_t skip);
/** A webhook request answered with an error status instead of an AdmissionReview. */
typedef enum {
    RM_CP_WEBHOOK_BAD_REVIEW = 0,   /* 400: malformed JSON or not an AdmissionReview v1 */
    RM_CP_WEBHOOK_MALFORMED_HTTP,   /* 400: not HTTP/1.1 the parser accepts, or a request target too long */
    RM_CP_WEBHOOK_BODY_TOO_LARGE,   /* 413 */
    RM_CP_WEBHOOK_NOT_FOUND,        /* 404 */
    RM_CP_WEBHOOK_BAD_METHOD,       /* 405 */
    RM_CP_WEBHOOK_BAD_CONTENT_TYPE, /* 415 */
    RM_CP_WEBHOOK_CONN_REFUSED,     /* a connection over the bound, closed at once */
    RM_CP_WEBHOOK_TLS_FAILED,       /* a TLS handshake failed or timed out */
    RM_CP_WEBHOOK__COUNT
} rm_cp_webhook_error_t;
void rm_cp_metrics_webhook_error(rm_cp_webhook_error_t what);

/** Certificates whose expiry is exported (remora_control_certificate_expiry_seconds). */
typedef enum {
    RM_CP_CERT_ISSUER = 0, /* the CA's issuer (intermediate) */
    RM_CP_CERT_SERVER,     /* the gRPC port's serving certificate */
    RM_CP_CERT_WEBHOOK,    /* the webhook's serving certificate */
    RM_CP_CERT__COUNT
} rm_cp_cert_t;
/** The certificate (re-)issued or loaded, valid until `not_after` (Unix seconds). */
void rm_cp_metrics_cert(rm_cp_cert_t cert, int64_t not_after);

/** --kubernetes: one event of a watch (`type`: ADDED, MODIFIED, DELETED, BOOKMARK, ERROR; other values count as ERROR). */
void rm_cp_metrics_kube_event(const char *type);
/** --kubernetes: a kind was listed again after its first list (`gone`: because the watch's history expired, 410 Gone). */
void rm_cp_metrics_kube_relist(int gone);
/** --kubernetes: a watch broke (a transport error or a non-200 answer) or a list failed. */
void rm_cp_metrics_kube_watch_error(void);
void rm_cp_metrics_kube_list_error(void);
/** --kubernetes: one request to the API server (not a watch): `status` its HTTP status, <= 0 when none came. */
void rm_cp_metrics_kube_request(const char *verb, long status);
/** --kubernetes: the source started; the remora_control_kube_* families are rendered from then on. */
void rm_cp_metrics_kube_started(void);
/** --kubernetes: a new state was built from the cache (every kind listed). */
void rm_cp_metrics_kube_state_built(void);

/* ------------------------------------------------------------------------------------------------
 * Readiness, rendering and the monitoring listener. */

/** The conditions of GET /ready: each starts false; ready when all are true. */
typedef enum {
    RM_CP_READY_STORE = 0, /* the store is loaded (--kubernetes: every watched kind listed) */
    RM_CP_READY_DISCOVERY, /* the discovery server listens */
    RM_CP_READY__COUNT
} rm_cp_ready_cond_t;
/** Any thread. */
void rm_cp_metrics_set_ready(rm_cp_ready_cond_t cond, int ok);

/**
 * The exposition (Prometheus text format 0.0.4, # HELP and # TYPE for each family), malloc'ed and
 * NUL-terminated, *len its length; the caller frees it. Any thread; only OOM aborts.
 */
char *rm_cp_metrics_render(size_t *len);

/* Bounds of the monitoring listener (docs/control-plane.md, "Metrics"). */
#define RM_CP_METRICS_MAX_CONNS 32          /* more are accepted and closed at once */
#define RM_CP_METRICS_MAX_HEAD_BYTES 8192   /* a request head (no body is read); 431 beyond */
#define RM_CP_METRICS_READ_TIMEOUT_MS 10000 /* to receive a request and to send its response */
#define RM_CP_METRICS_IDLE_TIMEOUT_MS 60000 /* between keep-alive requests */

typedef struct st_rm_cp_metrics_server_t rm_cp_metrics_server_t;

/**
 * Binds `listen` ("ADDR:PORT", an IP literal; port 0 picks one) and serves GET /metrics, /ready and
 * /live (plaintext HTTP/1.1, keep-alive) on a thread of its own; a slow or broken client only holds
 * one of its connection slots until its timeout. Returns NULL with the reason in `err`. Main thread.
 */
rm_cp_metrics_server_t *rm_cp_metrics_server_start(const char *listen, char *err, size_t errsz);
/** The bound port. */
int rm_cp_metrics_server_port(const rm_cp_metrics_server_t *ms);
/** Stops the thread, closes every connection, frees everything. NULL is a no-op. Main thread. */
void rm_cp_metrics_server_destroy(rm_cp_metrics_server_t *ms);

#endif
