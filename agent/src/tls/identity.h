/*
 * The agent's workload identity (docs/identity.md): its private key, its certificate (with the
 * issuer's certificate behind it) and the mesh's trust bundle.
 *
 * An rm_identity_t is immutable and reference counted; the agent-wide "current" identity is swapped
 * atomically on rotation (rm_identity_publish). The data path takes the current one with
 * rm_identity_current() when it builds a TLS context or starts a handshake and keeps its reference
 * as long as it uses it: connections made with an older identity are not disturbed by a rotation.
 *
 * State directory (remora-agent --state-dir DIR), written on every rotation, tmp+rename, 0600:
 *   DIR/identity.key        the private key (PKCS#8 PEM, ECDSA P-256)
 *   DIR/identity.crt        the certificate then the issuer's certificate (PEM)
 *   DIR/trust-bundle.pem    every trust anchor (PEM)
 * An agent that restarts loads them (rm_identity_load) and serves with them until they expire,
 * whether the control plane is reachable or not.
 *
 * Metrics (registered by rm_identity_init): remora_identity_cert_expiry_timestamp_seconds (absent
 * until an identity is in service) and remora_identity_rotations_total{result="success"|"failure"}.
 *
 * Threads: every function may be called from any thread. Errors are returned with a message.
 */
#ifndef remora__tls_identity_h
#define remora__tls_identity_h

#include <stddef.h>
#include <stdint.h>
#include <openssl/ssl.h>

#define RM_IDENTITY_KEY_FILE "identity.key"
#define RM_IDENTITY_CERT_FILE "identity.crt"
#define RM_IDENTITY_BUNDLE_FILE "trust-bundle.pem"

typedef struct st_rm_identity_t {
    int _refcnt;
    /** the private key, the certificate, the intermediates (issuer) and the trust anchors */
    EVP_PKEY *key;
    X509 *cert;
    STACK_OF(X509) * chain;
    STACK_OF(X509) * anchors;
    /** PEM of the certificate then the intermediates, and of the trust bundle (NUL-terminated) */
    char *cert_chain_pem, *bundle_pem;
    /** the certificate's URI SAN (spiffe://...), its serial (hex) and validity (Unix seconds) */
    char spiffe_id[512];
    char serial[80];
    int64_t not_before, not_after;
} rm_identity_t;

/** Registers the metrics. Main thread, once, before workers start. */
void rm_identity_init(void);

/**
 * The identity in service with a new reference (rm_identity_unref when done), or NULL when there is
 * none or it has expired (a certificate serves until it expires, not after).
 */
rm_identity_t *rm_identity_current(void);
rm_identity_t *rm_identity_ref(rm_identity_t *id);
void rm_identity_unref(rm_identity_t *id);

/**
 * Puts the identity's key and certificate chain into `ctx` and makes it verify peers against the
 * trust bundle (SSL_VERIFY_PEER; the caller adds SPIFFE ID checks and FAIL_IF_NO_PEER_CERT as its
 * mode wants). The context takes its own references. Returns 0, or -1 with a message.
 */
int rm_identity_configure_ssl_ctx(SSL_CTX *ctx, const rm_identity_t *id, char *err, size_t errlen);

/**
 * Makes a new ECDSA P-256 key and a PKCS#10 CSR for it (DER, malloc'ed). The subject is empty: the
 * control plane takes the identity from the bootstrap token. Returns 0, or -1 with a message.
 */
int rm_identity_make_csr(EVP_PKEY **key, uint8_t **csr_der, size_t *csr_len, char *err, size_t errlen);

/**
 * Builds an identity from `key` (a reference is taken), the certificate chain the control plane
 * returned (DER, leaf first) and the trust bundle (PEM). Checks that the key matches the
 * certificate, that the chain verifies against the bundle now, and that the certificate carries a
 * spiffe:// URI SAN. Returns it with one reference, or NULL with a message.
 */
rm_identity_t *rm_identity_create(EVP_PKEY *key, const uint8_t *const *chain_der, const size_t *chain_len, size_t n,
                                  const char *bundle_pem, char *err, size_t errlen);

/** Writes the identity's three files into `dir` (0600, atomically each). Returns 0, or -1 with a message. */
int rm_identity_save(const rm_identity_t *id, const char *dir, char *err, size_t errlen);

/**
 * Loads the identity kept in `dir`. Returns it (one reference), NULL with err[0] == '\0' when there
 * is none, or NULL with a message (unreadable, inconsistent, or expired).
 */
rm_identity_t *rm_identity_load(const char *dir, char *err, size_t errlen);

/** Makes `id` (a reference is taken) the current identity; the previous one is released. */
void rm_identity_publish(rm_identity_t *id);

/** Counts one rotation attempt for remora_identity_rotations_total. */
void rm_identity_count_rotation(int success);

/*
 * The callbacks of config/identity_client.h (rm_identity_client_options_t), with `ctx` the state
 * directory (const char *): make_csr makes a key (an EVP_PKEY *) and its CSR; install builds the
 * identity, saves it in the state directory and publishes it; validity reads the current one;
 * on_result counts the attempt. Identity thread.
 */
int rm_identity_cb_make_csr(void *ctx, void **key, uint8_t **csr_der, size_t *csr_len, char *err, size_t errlen);
int rm_identity_cb_install(void *ctx, void *key, const uint8_t *const *chain_der, const size_t *chain_len, size_t n,
                           const char *bundle_pem, char *err, size_t errlen);
void rm_identity_cb_release_key(void *ctx, void *key);
int rm_identity_cb_validity(void *ctx, int64_t *not_before, int64_t *not_after);
void rm_identity_cb_on_result(void *ctx, int success, const char *why);

/** Plain text for the admin API's GET /identity (malloc'ed): the current identity or "none". */
char *rm_identity_describe(void);

#endif
