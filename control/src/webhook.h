/*
 * The sidecar-injection webhook of remora-control (docs/injection.md): HTTPS on its own thread,
 * POST /inject takes an AdmissionReview v1 and answers with the same uid and, for a pod to inject,
 * a base64 JSON Patch (patchType JSONPatch) computed by inject.c; GET /healthz answers 200.
 *
 * The serving certificate is issued at start by the control plane's CA for the given DNS names
 * (rm_ca_issue_serving; the chain holds the issuer, so clients verify it against the trust
 * anchor, which is the MutatingWebhookConfiguration's caBundle) and re-issued at half its
 * lifetime without a restart; connections keep the certificate they started with.
 *
 * Bounds: RM_WEBHOOK_MAX_CONNS connections (more are accepted and closed at once), request bodies
 * of at most RM_WEBHOOK_MAX_BODY_BYTES (413 beyond), header blocks of at most 80 KiB
 * (http_parser's limit, 400 beyond), RM_WEBHOOK_READ_TIMEOUT_MS for a TLS handshake, a request or
 * a response to be sent, RM_WEBHOOK_IDLE_TIMEOUT_MS between keep-alive requests. Bad input never
 * stops the server: it is answered (400, 404, 405, 413, 415) and the next request is served.
 */
#ifndef remora_control__webhook_h
#define remora_control__webhook_h

#include <stddef.h>
#include "ca.h"
#include "inject.h"

#define RM_WEBHOOK_MAX_CONNS 128
#define RM_WEBHOOK_MAX_BODY_BYTES (4u << 20)
#define RM_WEBHOOK_READ_TIMEOUT_MS 10000
#define RM_WEBHOOK_IDLE_TIMEOUT_MS 60000
#define RM_WEBHOOK_DEFAULT_DNS_NAME "remora-control.remora-system.svc"

typedef struct st_rm_webhook_t rm_webhook_t;

typedef struct st_rm_webhook_options_t {
    /** "ADDR:PORT" (an IP literal; port 0 picks a free port) */
    const char *listen;
    /** the certificate's DNS names (none: RM_WEBHOOK_DEFAULT_DNS_NAME); at most RM_CA_MAX_SERVING_NAMES */
    const char *const *dns_names;
    size_t num_dns_names;
    /** borrowed, read-only, must outlive the webhook */
    const rm_inject_config_t *config;
    /** borrowed; only rm_ca_issue_serving is called on it, from the webhook's thread */
    rm_ca_t *ca;
} rm_webhook_options_t;

/**
 * Issues the certificate, binds the address and starts the webhook's thread. Returns NULL with
 * the reason in `err` (a bad address, a port in use, a certificate that cannot be made). Main thread.
 */
rm_webhook_t *rm_webhook_start(const rm_webhook_options_t *opts, char *err, size_t errsz);

/** The bound port. */
int rm_webhook_port(const rm_webhook_t *wh);

/** Stops the thread (open connections are closed), then frees everything. Main thread. */
void rm_webhook_destroy(rm_webhook_t *wh);

/**
 * The pure part, for tests and the server alike: answers one request body. Sets *status (200,
 * 400) and returns the response body (malloc'ed, the caller frees it): an AdmissionReview, or a
 * one-line message for 400. `log_line` (may be NULL) receives what happened to the pod, for the log.
 */
char *rm_webhook_review(const rm_inject_config_t *cfg, const char *body, size_t len, int *status, char *log_line,
                        size_t log_linesz);

#endif
