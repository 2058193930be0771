/*
 * The control plane's certificate authority (docs/identity.md): a trust anchor (self-signed root)
 * and an issuer (an intermediate signed by an anchor) that signs the agents' workload certificates.
 *
 * Either generated at first start into DIR/ca/ (trust-anchor.pem, trust-anchor.key, issuer.pem,
 * issuer.key; keys 0600; ECDSA P-256; anchor valid 10 years, issuer 1 year and re-issued from the
 * anchor when less than 30 days remain at start), or supplied by the user as three files: a trust
 * bundle (one or more anchors, PEM), the issuer's certificate and the issuer's key. Supplied files
 * are checked: the issuer must be a CA certificate that verifies against one of the anchors, and
 * the key must match it.
 *
 * Workload certificates: the subject is empty but for an O=remora attribute, the identity is one
 * URI SAN spiffe://<trust-domain>/ns/<ns>/sa/<sa>, key usage digitalSignature (critical), extended
 * key usage serverAuth and clientAuth, basicConstraints CA:FALSE, a random 128-bit serial,
 * notBefore one minute in the past (clock skew; a tenth of the lifetime when shorter), notAfter = now + lifetime but never after
 * the issuer's notAfter. Only the CSR's public key is used; its subject and extensions are ignored.
 *
 * Not thread-safe: one thread (the server's) uses a CA after rm_ca_open returns. Errors are
 * returned with a message; only OOM aborts.
 */
#ifndef remora_control__ca_h
#define remora_control__ca_h

#include <stddef.h>
#include <stdint.h>

typedef struct st_rm_ca_t rm_ca_t;

#define RM_CA_DEFAULT_TRUST_DOMAIN "remora.local"
#define RM_CA_DEFAULT_CERT_LIFETIME_S (24 * 3600)
#define RM_CA_MIN_CERT_LIFETIME_S 10
/* a workload certificate never outlives a year (the generated issuer's lifetime) */
#define RM_CA_MAX_CERT_LIFETIME_S (365 * 24 * 3600)

typedef struct st_rm_ca_options_t {
    /** the control plane's state directory (generated material lives in DIR/ca) */
    const char *state_dir;
    /** NULL: RM_CA_DEFAULT_TRUST_DOMAIN */
    const char *trust_domain;
    /** all three NULL (generate or reuse DIR/ca), or all three set (supplied by the user) */
    const char *trust_anchor_file, *issuer_cert_file, *issuer_key_file;
    /** workload certificate lifetime, seconds (0: RM_CA_DEFAULT_CERT_LIFETIME_S) */
    uint32_t cert_lifetime_s;
} rm_ca_options_t;

/** Loads or generates the CA. Returns NULL with a message naming the file and the problem. */
rm_ca_t *rm_ca_open(const rm_ca_options_t *opts, char *err, size_t errsz);
void rm_ca_destroy(rm_ca_t *ca);

/** Parses "90", "90s", "15m", "24h", "7d" into seconds (> 0). Returns 0, or -1 when it does not parse. */
int rm_ca_parse_duration(const char *s, int64_t *seconds);

/** 1 when `s` is a valid trust domain (lower-case DNS name, at most 253 characters). */
int rm_ca_valid_trust_domain(const char *s);

const char *rm_ca_trust_domain(const rm_ca_t *ca);
/** Every trust anchor, PEM (owned by the CA). */
const char *rm_ca_bundle_pem(const rm_ca_t *ca);
size_t rm_ca_num_anchors(const rm_ca_t *ca);
/** The issuer's subject (one line, owned by the CA) and notAfter (Unix seconds). */
const char *rm_ca_issuer_subject(const rm_ca_t *ca);
int64_t rm_ca_issuer_not_after(const rm_ca_t *ca);
uint32_t rm_ca_cert_lifetime(const rm_ca_t *ca);

/** Writes spiffe://<td>/ns/<ns>/sa/<sa> into buf. */
void rm_ca_spiffe_id(const rm_ca_t *ca, const char *ns, const char *sa, char *buf, size_t bufsz);

/**
 * Signs a workload certificate for (ns, sa) with the public key of `csr_der` (a PKCS#10 request
 * whose self-signature must verify and whose key must be ECDSA P-256). On success returns 0 and
 * sets *leaf_der (malloc'ed, the caller frees) and *not_after; the issuer's DER is
 * rm_ca_issuer_der(). Returns -1 with the reason in `err` for a bad CSR (the caller's fault), -2
 * for an internal failure.
 */
int rm_ca_issue(rm_ca_t *ca, const uint8_t *csr_der, size_t csr_len, const char *ns, const char *sa, uint8_t **leaf_der,
                size_t *leaf_len, int64_t *not_after, char *err, size_t errsz);

/** The control plane's own identity, in its serving certificate (docs/identity.md, "The control plane's own doors"). */
#define RM_CA_CONTROL_NAMESPACE "remora-system"
#define RM_CA_CONTROL_SERVICE_ACCOUNT "remora-control"

/**
 * Makes a new key (ECDSA P-256) and signs a serving certificate for the control plane itself: the
 * workload profile (serverAuth and clientAuth) with the SANs DNS:<dns_name>, DNS:localhost and
 * URI:spiffe://<td>/ns/remora-system/sa/remora-control, valid for the workload certificate
 * lifetime (never past the issuer). Workload certificates never carry a DNS SAN, so no workload can
 * pose as the control plane. Returns 0 with *chain_pem (the certificate then the issuer's, PEM) and
 * *key_pem (PKCS#8 PEM), both malloc'ed, and the validity; -1 with the reason.
 */
int rm_ca_issue_server(rm_ca_t *ca, const char *dns_name, char **chain_pem, char **key_pem, int64_t *not_before, int64_t *not_after,
                       char *err, size_t errsz);

/** At most this many DNS names in a serving certificate. */
#define RM_CA_MAX_SERVING_NAMES 16

/**
 * The same with the DNS SANs `dns_names` (at most RM_CA_MAX_SERVING_NAMES, each a DNS name of at
 * most 253 characters) instead of DNS:<dns_name> and DNS:localhost: the injection webhook's
 * certificate (docs/injection.md). It reads only what rm_ca_open set and never changes the CA, so
 * unlike the rest of this API it may be called from another thread (the webhook's) while the
 * server's thread uses the CA. Returns 0, or -1 with the reason.
 */
int rm_ca_issue_serving(rm_ca_t *ca, const char *const *dns_names, size_t num_dns_names, char **chain_pem, char **key_pem,
                        int64_t *not_before, int64_t *not_after, char *err, size_t errsz);

/** The issuer's certificate, DER (owned by the CA). */
const uint8_t *rm_ca_issuer_der(const rm_ca_t *ca, size_t *len);

#endif
