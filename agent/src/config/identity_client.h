/*
 * The agent's identity client (docs/identity.md): one thread, in the control-plane module (its gRPC
 * client is config/h2rpc.c), that obtains and rotates the workload certificate with
 * remora.v1.Identity/Certify.
 *
 * Schedule: at start, at once unless an identity is in service already; then at 70% of the
 * certificate's lifetime, jittered by +-5% of the lifetime so that agents started together do not
 * renew together. A failed attempt (control plane away, refusal) is retried with exponential backoff
 * (1 s doubling to 30 s, never longer than a quarter of the time the certificate has left, at least
 * 1 s); the certificate in service keeps serving until it expires.
 *
 * Each attempt re-reads the token file (a projected token may be rewritten), asks `make_csr` for a
 * new key and CSR, sends it with the token and the node id, and hands the answer to `install`.
 * The identity types live in tls/ (tls/identity.h), above this layer: the executable's callbacks
 * bridge the two, so this file sees only bytes.
 *
 * Each attempt connects anew over TLS (control_client.h: the trust bundle file is read again, so a
 * bundle rotated into the state directory is used), fails fast when the control plane is away, and
 * sends the token in the request.
 *
 * Thread: start/stop from the main thread; every callback runs on the identity thread.
 */
#ifndef remora__identity_client_h
#define remora__identity_client_h

#include <stddef.h>
#include <stdint.h>

typedef struct st_rm_identity_client_t rm_identity_client_t;

typedef struct st_rm_identity_client_options_t {
    /** control plane address "IP:PORT" (copied) */
    const char *address;
    /** the node id the token is bound to (copied) */
    const char *node_id;
    /** the bootstrap token's file (copied; read before every attempt, surrounding whitespace ignored) */
    const char *token_file;
    /** the trust bundle (PEM) the control plane's certificate must chain to (copied); NULL only when insecure */
    const char *trust_anchor_file;
    /** plaintext (remora-agent --control-insecure: development only) */
    int insecure;
    /** Makes a key and a CSR (DER, malloc'ed; the caller frees it). *key is opaque, passed to install or release_key. */
    int (*make_csr)(void *ctx, void **key, uint8_t **csr_der, size_t *csr_len, char *err, size_t errlen);
    /**
     * Puts the new identity in service (and persists it). Consumes `key`. Returns 0, or -1 with a
     * message (the attempt counts as failed).
     */
    int (*install)(void *ctx, void *key, const uint8_t *const *chain_der, const size_t *chain_len, size_t n, const char *bundle_pem,
                   char *err, size_t errlen);
    void (*release_key)(void *ctx, void *key);
    /** The validity of the identity in service: 0 with both set, -1 when there is none. */
    int (*validity)(void *ctx, int64_t *not_before, int64_t *not_after);
    /** After every attempt: success or failure with the reason (for metrics). */
    void (*on_result)(void *ctx, int success, const char *why);
    void *ctx;
} rm_identity_client_options_t;

/** Starts the identity thread. Returns NULL with a message if it cannot start. */
rm_identity_client_t *rm_identity_client_start(const rm_identity_client_options_t *opts, char *err, size_t errlen);
/** Stops the thread (a call in flight is cancelled) and frees the client. */
void rm_identity_client_stop(rm_identity_client_t *client);

#endif
