/*
 * The control plane's certificate authority (see ca.h). OpenSSL 3 EVP and X509 APIs only.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "ca.h"

#define LOG "ca"
#define ANCHOR_DAYS (10 * 365)
#define ISSUER_DAYS 365
/* a generated issuer with less than this left is re-issued at start */
#define ISSUER_RENEW_S (30 * 24 * 3600)
#define SKEW_S 60

struct st_rm_ca_t {
    char *trust_domain;
    uint32_t lifetime_s;
    STACK_OF(X509) * anchors;
    char *bundle_pem;
    X509 *issuer;
    EVP_PKEY *issuer_key;
    uint8_t *issuer_der;
    size_t issuer_der_len;
    char issuer_subject[256];
    int64_t issuer_not_after;
};

/* Appends OpenSSL's first queued error (if any) to `err` and clears the queue. */
static void
ossl_reason(char *buf, size_t bufsz)
{
    unsigned long e = ERR_get_error();
    if (e == 0) {
        snprintf(buf, bufsz, "unknown OpenSSL error");
    } else {
        ERR_error_string_n(e, buf, bufsz);
    }
    ERR_clear_error();
}

int
rm_ca_parse_duration(const char *s, int64_t *seconds)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || errno != 0 || v <= 0)
        return -1;
    long long unit = 1;
    if (*end != '\0') {
        switch (*end++) {
        case 's':
            break;
        case 'm':
            unit = 60;
            break;
        case 'h':
            unit = 3600;
            break;
        case 'd':
            unit = 86400;
            break;
        default:
            return -1;
        }
        if (*end != '\0')
            return -1;
    }
    if (v > INT64_MAX / unit / 2)
        return -1;
    *seconds = v * unit;
    return 0;
}

int
rm_ca_valid_trust_domain(const char *s)
{
    size_t len = strlen(s), label = 0;
    if (len == 0 || len > 253)
        return 0;
    for (const char *p = s; *p != '\0'; ++p) {
        if (*p == '.') {
            if (label == 0 || p[-1] == '-')
                return 0;
            label = 0;
        } else if ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || (*p == '-' && label != 0)) {
            if (++label > 63)
                return 0;
        } else {
            return 0;
        }
    }
    return label != 0 && s[len - 1] != '-';
}

static int64_t
asn1_time_unix(const ASN1_TIME *t)
{
    struct tm tm;
    if (ASN1_TIME_to_tm(t, &tm) != 1)
        return 0;
    return (int64_t)timegm(&tm);
}

/* ------------------------------------------------------------------------------------ files */

static int
write_file(const char *path, const char *data, size_t len, mode_t mode, char *err, size_t errsz)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0) {
        snprintf(err, errsz, "%s: %s", tmp, strerror(errno));
        return -1;
    }
    /* the umask must not widen or narrow what we ask for */
    fchmod(fd, mode);
    size_t off = 0;
    while (off < len) {
        ssize_t n = write(fd, data + off, len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(err, errsz, "%s: %s", tmp, strerror(errno));
            close(fd);
            unlink(tmp);
            return -1;
        }
        off += (size_t)n;
    }
    if (fsync(fd) != 0 || close(fd) != 0 || rename(tmp, path) != 0) {
        snprintf(err, errsz, "%s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

static char *
bio_to_string(BIO *bio, size_t *len)
{
    char *data;
    long n = BIO_get_mem_data(bio, &data);
    char *s = rm_malloc((size_t)n + 1);
    memcpy(s, data, (size_t)n);
    s[n] = '\0';
    if (len != NULL)
        *len = (size_t)n;
    return s;
}

static int
write_cert(const char *path, X509 *cert, char *err, size_t errsz)
{
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(bio, cert);
    size_t len;
    char *pem = bio_to_string(bio, &len);
    BIO_free(bio);
    int r = write_file(path, pem, len, 0644, err, errsz);
    free(pem);
    return r;
}

static int
write_key(const char *path, EVP_PKEY *key, char *err, size_t errsz)
{
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL);
    size_t len;
    char *pem = bio_to_string(bio, &len);
    BIO_free(bio);
    int r = write_file(path, pem, len, 0600, err, errsz);
    OPENSSL_cleanse(pem, len);
    free(pem);
    return r;
}

/* Reads every certificate of a PEM file. Returns NULL with a reason (none found, unreadable). */
static STACK_OF(X509) * read_certs(const char *path, const char *what, char *err, size_t errsz)
{
    BIO *bio = BIO_new_file(path, "r");
    if (bio == NULL) {
        snprintf(err, errsz, "%s %s: cannot read: %s", what, path, strerror(errno));
        ERR_clear_error();
        return NULL;
    }
    STACK_OF(X509) *certs = sk_X509_new_null();
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL)
        sk_X509_push(certs, x);
    BIO_free(bio);
    ERR_clear_error();
    if (sk_X509_num(certs) == 0) {
        snprintf(err, errsz, "%s %s: no PEM certificate in the file", what, path);
        sk_X509_free(certs);
        return NULL;
    }
    return certs;
}

static EVP_PKEY *
read_key(const char *path, const char *what, char *err, size_t errsz)
{
    BIO *bio = BIO_new_file(path, "r");
    if (bio == NULL) {
        snprintf(err, errsz, "%s %s: cannot read: %s", what, path, strerror(errno));
        ERR_clear_error();
        return NULL;
    }
    EVP_PKEY *key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    BIO_free(bio);
    if (key == NULL) {
        char why[256];
        ossl_reason(why, sizeof(why));
        snprintf(err, errsz, "%s %s: not a PEM private key (%s)", what, path, why);
    }
    return key;
}

/* ------------------------------------------------------------------------------ certificates */

static int
add_ext(X509 *cert, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    if (ext == NULL)
        return -1;
    int r = X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return r == 1 ? 0 : -1;
}

static int
random_serial(X509 *cert)
{
    unsigned char bytes[16];
    if (RAND_bytes(bytes, sizeof(bytes)) != 1)
        return -1;
    bytes[0] &= 0x7f; /* positive */
    bytes[0] |= 0x01; /* and 16 bytes long */
    BIGNUM *bn = BN_bin2bn(bytes, sizeof(bytes), NULL);
    int r = bn != NULL && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) != NULL ? 0 : -1;
    BN_free(bn);
    return r;
}

/*
 * A certificate for `pubkey` named `cn` (NULL: no subject but O=remora), signed by issuer/key
 * (issuer NULL: self-signed), valid from now - SKEW_S (less for short lifetimes) to not_after.
 */
static X509 *
make_cert(EVP_PKEY *pubkey, const char *cn, X509 *issuer, EVP_PKEY *issuer_key, int64_t not_after, int is_ca, const char *san)
{
    X509 *cert = X509_new();
    time_t now = time(NULL);
    /* backdated for clock skew, by at most a tenth of the lifetime: agents renew at 70% of notBefore..notAfter */
    long skew = not_after - now < 10 * SKEW_S ? (long)(not_after - now) / 10 : SKEW_S;
    X509_NAME *name = X509_NAME_new();
    int ok = X509_set_version(cert, 2) == 1 && random_serial(cert) == 0 &&
             X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const unsigned char *)"remora", -1, -1, 0) == 1 &&
             (cn == NULL || X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0) == 1) &&
             X509_set_subject_name(cert, name) == 1 &&
             X509_set_issuer_name(cert, issuer != NULL ? X509_get_subject_name(issuer) : name) == 1 &&
             X509_time_adj_ex(X509_getm_notBefore(cert), 0, -skew, &now) != NULL &&
             X509_time_adj_ex(X509_getm_notAfter(cert), 0, (long)(not_after - now), &now) != NULL &&
             X509_set_pubkey(cert, pubkey) == 1;
    X509_NAME_free(name);
    X509 *signer = issuer != NULL ? issuer : cert;
    if (ok && is_ca)
        ok =
            add_ext(cert, signer, NID_basic_constraints, issuer == NULL ? "critical,CA:TRUE" : "critical,CA:TRUE,pathlen:0") == 0 &&
            add_ext(cert, signer, NID_key_usage, "critical,keyCertSign,cRLSign") == 0 &&
            add_ext(cert, signer, NID_subject_key_identifier, "hash") == 0;
    if (ok && !is_ca)
        ok = add_ext(cert, signer, NID_basic_constraints, "critical,CA:FALSE") == 0 &&
             add_ext(cert, signer, NID_key_usage, "critical,digitalSignature") == 0 &&
             add_ext(cert, signer, NID_ext_key_usage, "serverAuth,clientAuth") == 0 &&
             add_ext(cert, signer, NID_subject_alt_name, san) == 0;
    if (ok && issuer != NULL)
        ok = add_ext(cert, signer, NID_authority_key_identifier, "keyid:always") == 0;
    if (ok)
        ok = X509_sign(cert, issuer_key, EVP_sha256()) > 0;
    if (!ok) {
        X509_free(cert);
        return NULL;
    }
    return cert;
}

/* 0 when `cert` is a CA certificate that verifies against `anchors` (at time now), else -1 with the reason. */
static int
verify_issuer(STACK_OF(X509) * anchors, X509 *cert, char *why, size_t whysz)
{
    if (X509_check_ca(cert) == 0) {
        snprintf(why, whysz, "it is not a CA certificate (basicConstraints CA:TRUE is missing)");
        return -1;
    }
    X509_STORE *store = X509_STORE_new();
    for (int i = 0; i != sk_X509_num(anchors); ++i)
        X509_STORE_add_cert(store, sk_X509_value(anchors, i));
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    X509_STORE_CTX_init(ctx, store, cert, NULL);
    int r = X509_verify_cert(ctx);
    if (r != 1)
        snprintf(why, whysz, "%s", X509_verify_cert_error_string(X509_STORE_CTX_get_error(ctx)));
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    ERR_clear_error();
    return r == 1 ? 0 : -1;
}

static void
path_join(char *buf, size_t bufsz, const char *dir, const char *name)
{
    snprintf(buf, bufsz, "%s/%s", dir, name);
}

/* Generates (or reuses) DIR/ca/. */
static int
load_generated(rm_ca_t *ca, const char *state_dir, char *err, size_t errsz)
{
    char dir[4096], anchor_pem[4200], anchor_key[4200], issuer_pem[4200], issuer_key[4200];
    snprintf(dir, sizeof(dir), "%s/ca", state_dir);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errsz, "cannot create %s: %s", dir, strerror(errno));
        return -1;
    }
    path_join(anchor_pem, sizeof(anchor_pem), dir, "trust-anchor.pem");
    path_join(anchor_key, sizeof(anchor_key), dir, "trust-anchor.key");
    path_join(issuer_pem, sizeof(issuer_pem), dir, "issuer.pem");
    path_join(issuer_key, sizeof(issuer_key), dir, "issuer.key");
    time_t now = time(NULL);

    EVP_PKEY *akey = NULL;
    if (access(anchor_pem, F_OK) != 0) {
        akey = EVP_EC_gen("P-256");
        X509 *anchor =
            akey != NULL ? make_cert(akey, "remora trust anchor", NULL, akey, now + ANCHOR_DAYS * 86400LL, 1, NULL) : NULL;
        if (anchor == NULL) {
            char why[256];
            ossl_reason(why, sizeof(why));
            snprintf(err, errsz, "cannot generate the trust anchor: %s", why);
            EVP_PKEY_free(akey);
            return -1;
        }
        int r = write_key(anchor_key, akey, err, errsz) == 0 ? write_cert(anchor_pem, anchor, err, errsz) : -1;
        X509_free(anchor);
        /* a new anchor invalidates any issuer left from before */
        unlink(issuer_pem);
        if (r != 0) {
            EVP_PKEY_free(akey);
            return -1;
        }
        rm_log_info(LOG, "generated a trust anchor in %s (valid %d days)", anchor_pem, ANCHOR_DAYS);
    }
    if ((ca->anchors = read_certs(anchor_pem, "trust anchor", err, errsz)) == NULL) {
        EVP_PKEY_free(akey);
        return -1;
    }

    /* reuse the issuer unless it is missing, does not chain to the anchors, or expires soon */
    STACK_OF(X509) *ic = access(issuer_pem, F_OK) == 0 ? read_certs(issuer_pem, "issuer certificate", err, errsz) : NULL;
    EVP_PKEY *ikey = ic != NULL ? read_key(issuer_key, "issuer key", err, errsz) : NULL;
    char why[256] = "";
    int reuse = ic != NULL && ikey != NULL && verify_issuer(ca->anchors, sk_X509_value(ic, 0), why, sizeof(why)) == 0 &&
                X509_check_private_key(sk_X509_value(ic, 0), ikey) == 1 &&
                asn1_time_unix(X509_get0_notAfter(sk_X509_value(ic, 0))) > now + ISSUER_RENEW_S;
    ERR_clear_error();
    if (reuse) {
        ca->issuer = sk_X509_shift(ic);
        ca->issuer_key = ikey;
        sk_X509_pop_free(ic, X509_free);
        EVP_PKEY_free(akey);
        return 0;
    }
    if (ic != NULL)
        sk_X509_pop_free(ic, X509_free);
    EVP_PKEY_free(ikey);
    if (akey == NULL && (akey = read_key(anchor_key, "trust anchor key", err, errsz)) == NULL)
        return -1;
    /* sign with the anchor whose key we hold */
    X509 *anchor = NULL;
    for (int i = 0; i != sk_X509_num(ca->anchors); ++i)
        if (X509_check_private_key(sk_X509_value(ca->anchors, i), akey) == 1)
            anchor = sk_X509_value(ca->anchors, i);
    ERR_clear_error();
    if (anchor == NULL) {
        snprintf(err, errsz, "%s does not match any certificate of %s", anchor_key, anchor_pem);
        EVP_PKEY_free(akey);
        return -1;
    }
    int64_t anchor_end = asn1_time_unix(X509_get0_notAfter(anchor)), end = now + ISSUER_DAYS * 86400LL;
    ca->issuer_key = EVP_EC_gen("P-256");
    ca->issuer = ca->issuer_key != NULL
                     ? make_cert(ca->issuer_key, "remora issuer", anchor, akey, end < anchor_end ? end : anchor_end, 1, NULL)
                     : NULL;
    EVP_PKEY_free(akey);
    if (ca->issuer == NULL) {
        ossl_reason(why, sizeof(why));
        snprintf(err, errsz, "cannot generate the issuer: %s", why);
        return -1;
    }
    if (write_key(issuer_key, ca->issuer_key, err, errsz) != 0 || write_cert(issuer_pem, ca->issuer, err, errsz) != 0)
        return -1;
    rm_log_info(LOG, "generated an issuer in %s (valid %d days)", issuer_pem, ISSUER_DAYS);
    return 0;
}

static int
load_supplied(rm_ca_t *ca, const rm_ca_options_t *opts, char *err, size_t errsz)
{
    if ((ca->anchors = read_certs(opts->trust_anchor_file, "--trust-anchor", err, errsz)) == NULL)
        return -1;
    for (int i = 0; i != sk_X509_num(ca->anchors); ++i) {
        if (X509_check_ca(sk_X509_value(ca->anchors, i)) == 0) {
            snprintf(err, errsz, "--trust-anchor %s: certificate %d is not a CA certificate (basicConstraints CA:TRUE is missing)",
                     opts->trust_anchor_file, i + 1);
            return -1;
        }
    }
    STACK_OF(X509) *ic = read_certs(opts->issuer_cert_file, "--issuer-cert", err, errsz);
    if (ic == NULL)
        return -1;
    ca->issuer = sk_X509_shift(ic);
    sk_X509_pop_free(ic, X509_free);
    char why[256];
    if (verify_issuer(ca->anchors, ca->issuer, why, sizeof(why)) != 0) {
        snprintf(err, errsz, "--issuer-cert %s does not verify against --trust-anchor %s: %s", opts->issuer_cert_file,
                 opts->trust_anchor_file, why);
        return -1;
    }
    if ((ca->issuer_key = read_key(opts->issuer_key_file, "--issuer-key", err, errsz)) == NULL)
        return -1;
    if (X509_check_private_key(ca->issuer, ca->issuer_key) != 1) {
        ERR_clear_error();
        snprintf(err, errsz, "--issuer-key %s is not the key of --issuer-cert %s", opts->issuer_key_file, opts->issuer_cert_file);
        return -1;
    }
    return 0;
}

rm_ca_t *
rm_ca_open(const rm_ca_options_t *opts, char *err, size_t errsz)
{
    const char *td = opts->trust_domain != NULL ? opts->trust_domain : RM_CA_DEFAULT_TRUST_DOMAIN;
    if (!rm_ca_valid_trust_domain(td)) {
        snprintf(err, errsz, "--trust-domain '%s': not a lower-case DNS name", td);
        return NULL;
    }
    int supplied = (opts->trust_anchor_file != NULL) + (opts->issuer_cert_file != NULL) + (opts->issuer_key_file != NULL);
    if (supplied != 0 && supplied != 3) {
        snprintf(err, errsz, "--trust-anchor, --issuer-cert and --issuer-key go together (give all three, or none to generate)");
        return NULL;
    }
    rm_ca_t *ca = rm_calloc(1, sizeof(*ca));
    ca->trust_domain = rm_strdup(td);
    ca->lifetime_s = opts->cert_lifetime_s != 0 ? opts->cert_lifetime_s : RM_CA_DEFAULT_CERT_LIFETIME_S;
    if ((supplied == 3 ? load_supplied(ca, opts, err, errsz) : load_generated(ca, opts->state_dir, err, errsz)) != 0) {
        rm_ca_destroy(ca);
        return NULL;
    }
    BIO *bio = BIO_new(BIO_s_mem());
    for (int i = 0; i != sk_X509_num(ca->anchors); ++i)
        PEM_write_bio_X509(bio, sk_X509_value(ca->anchors, i));
    ca->bundle_pem = bio_to_string(bio, NULL);
    BIO_free(bio);
    unsigned char *der = NULL;
    int n = i2d_X509(ca->issuer, &der);
    if (n <= 0)
        rm_fatal("cannot encode the issuer certificate");
    ca->issuer_der = rm_malloc((size_t)n);
    memcpy(ca->issuer_der, der, (size_t)n);
    ca->issuer_der_len = (size_t)n;
    OPENSSL_free(der);
    X509_NAME_oneline(X509_get_subject_name(ca->issuer), ca->issuer_subject, sizeof(ca->issuer_subject));
    ca->issuer_not_after = asn1_time_unix(X509_get0_notAfter(ca->issuer));
    if (ca->issuer_not_after <= time(NULL)) {
        snprintf(err, errsz, "the issuer certificate (%s) has expired", ca->issuer_subject);
        rm_ca_destroy(ca);
        return NULL;
    }
    return ca;
}

void
rm_ca_destroy(rm_ca_t *ca)
{
    if (ca == NULL)
        return;
    free(ca->trust_domain);
    if (ca->anchors != NULL)
        sk_X509_pop_free(ca->anchors, X509_free);
    free(ca->bundle_pem);
    X509_free(ca->issuer);
    EVP_PKEY_free(ca->issuer_key);
    free(ca->issuer_der);
    free(ca);
}

const char *
rm_ca_trust_domain(const rm_ca_t *ca)
{
    return ca->trust_domain;
}

const char *
rm_ca_bundle_pem(const rm_ca_t *ca)
{
    return ca->bundle_pem;
}

size_t
rm_ca_num_anchors(const rm_ca_t *ca)
{
    return (size_t)sk_X509_num(ca->anchors);
}

const char *
rm_ca_issuer_subject(const rm_ca_t *ca)
{
    return ca->issuer_subject;
}

int64_t
rm_ca_issuer_not_after(const rm_ca_t *ca)
{
    return ca->issuer_not_after;
}

uint32_t
rm_ca_cert_lifetime(const rm_ca_t *ca)
{
    return ca->lifetime_s;
}

const uint8_t *
rm_ca_issuer_der(const rm_ca_t *ca, size_t *len)
{
    *len = ca->issuer_der_len;
    return ca->issuer_der;
}

void
rm_ca_spiffe_id(const rm_ca_t *ca, const char *ns, const char *sa, char *buf, size_t bufsz)
{
    snprintf(buf, bufsz, "spiffe://%s/ns/%s/sa/%s", ca->trust_domain, ns, sa);
}

int
rm_ca_issue(rm_ca_t *ca, const uint8_t *csr_der, size_t csr_len, const char *ns, const char *sa, uint8_t **leaf_der,
            size_t *leaf_len, int64_t *not_after, char *err, size_t errsz)
{
    const unsigned char *p = csr_der;
    X509_REQ *req = d2i_X509_REQ(NULL, &p, (long)csr_len);
    if (req == NULL || p != csr_der + csr_len) {
        ERR_clear_error();
        X509_REQ_free(req);
        snprintf(err, errsz, "the CSR is not a DER PKCS#10 request");
        return -1;
    }
    EVP_PKEY *pub = X509_REQ_get0_pubkey(req);
    char group[64] = "";
    size_t glen = 0;
    if (pub == NULL || EVP_PKEY_get_base_id(pub) != EVP_PKEY_EC ||
        EVP_PKEY_get_utf8_string_param(pub, "group", group, sizeof(group), &glen) != 1 || strcmp(group, "prime256v1") != 0) {
        ERR_clear_error();
        X509_REQ_free(req);
        snprintf(err, errsz, "the CSR's key must be ECDSA P-256");
        return -1;
    }
    if (X509_REQ_verify(req, pub) != 1) {
        ERR_clear_error();
        X509_REQ_free(req);
        snprintf(err, errsz, "the CSR's signature does not verify with its own key");
        return -1;
    }
    char san[600], id[512];
    rm_ca_spiffe_id(ca, ns, sa, id, sizeof(id));
    snprintf(san, sizeof(san), "URI:%s", id);
    int64_t end = (int64_t)time(NULL) + ca->lifetime_s;
    if (end > ca->issuer_not_after)
        end = ca->issuer_not_after;
    X509 *cert = make_cert(pub, NULL, ca->issuer, ca->issuer_key, end, 0, san);
    X509_REQ_free(req);
    if (cert == NULL) {
        char why[256];
        ossl_reason(why, sizeof(why));
        snprintf(err, errsz, "cannot sign the certificate: %s", why);
        return -2;
    }
    unsigned char *der = NULL;
    int n = i2d_X509(cert, &der);
    X509_free(cert);
    if (n <= 0) {
        snprintf(err, errsz, "cannot encode the certificate");
        return -2;
    }
    *leaf_der = rm_malloc((size_t)n);
    memcpy(*leaf_der, der, (size_t)n);
    *leaf_len = (size_t)n;
    OPENSSL_free(der);
    *not_after = end;
    return 0;
}

int
rm_ca_issue_server(rm_ca_t *ca, const char *dns_name, char **chain_pem, char **key_pem, int64_t *not_before, int64_t *not_after,
                   char *err, size_t errsz)
{
    const char *names[] = {dns_name, "localhost"};
    return rm_ca_issue_serving(ca, names, 2, chain_pem, key_pem, not_before, not_after, err, errsz);
}

int
rm_ca_issue_serving(rm_ca_t *ca, const char *const *dns_names, size_t num_dns_names, char **chain_pem, char **key_pem,
                    int64_t *not_before, int64_t *not_after, char *err, size_t errsz)
{
    char id[512], san[RM_CA_MAX_SERVING_NAMES * 256 + 600];
    rm_ca_spiffe_id(ca, RM_CA_CONTROL_NAMESPACE, RM_CA_CONTROL_SERVICE_ACCOUNT, id, sizeof(id));
    size_t off = (size_t)snprintf(san, sizeof(san), "URI:%s", id);
    if (num_dns_names > RM_CA_MAX_SERVING_NAMES) {
        snprintf(err, errsz, "more than %u DNS names", RM_CA_MAX_SERVING_NAMES);
        return -1;
    }
    for (size_t i = 0; i != num_dns_names; ++i) {
        /* the names go into an OpenSSL configuration string: no separators inside one */
        if (dns_names[i][0] == '\0' || strlen(dns_names[i]) > 253 || strpbrk(dns_names[i], ",:= \t\r\n") != NULL) {
            snprintf(err, errsz, "'%.64s' is not a DNS name", dns_names[i]);
            return -1;
        }
        off += (size_t)snprintf(san + off, sizeof(san) - off, ",DNS:%s", dns_names[i]);
    }
    int64_t now = (int64_t)time(NULL), end = now + ca->lifetime_s;
    if (end > ca->issuer_not_after)
        end = ca->issuer_not_after;
    if (end <= now) {
        snprintf(err, errsz, "the issuer has expired");
        return -1;
    }
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *cert = key != NULL ? make_cert(key, "remora-control", ca->issuer, ca->issuer_key, end, 0, san) : NULL;
    if (cert == NULL) {
        char why[256];
        ossl_reason(why, sizeof(why));
        snprintf(err, errsz, "cannot make the control plane's certificate: %s", why);
        EVP_PKEY_free(key);
        return -1;
    }
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(bio, cert);
    PEM_write_bio_X509(bio, ca->issuer);
    *chain_pem = bio_to_string(bio, NULL);
    BIO_free(bio);
    bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL);
    *key_pem = bio_to_string(bio, NULL);
    BIO_free(bio);
    *not_before = asn1_time_unix(X509_get0_notBefore(cert));
    *not_after = end;
    X509_free(cert);
    EVP_PKEY_free(key);
    return 0;
}
