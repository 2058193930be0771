/*
 * The agent's workload identity (see identity.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "obs/stats.h"
#include "tls/identity.h"

static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
static rm_identity_t *current;
static uint64_t rotations[2]; /* [0] failure, [1] success */

static void
ossl_error(char *err, size_t errlen, const char *what)
{
    char buf[256];
    unsigned long e = ERR_get_error();
    ERR_error_string_n(e, buf, sizeof(buf));
    snprintf(err, errlen, "%s: %s", what, e != 0 ? buf : "unknown error");
    ERR_clear_error();
}

static int64_t
asn1_time_unix(const ASN1_TIME *t)
{
    struct tm tm;
    if (ASN1_TIME_to_tm(t, &tm) != 1)
        return 0;
    return (int64_t)timegm(&tm);
}

rm_identity_t *
rm_identity_ref(rm_identity_t *id)
{
    __atomic_add_fetch(&id->_refcnt, 1, __ATOMIC_RELAXED);
    return id;
}

void
rm_identity_unref(rm_identity_t *id)
{
    if (id == NULL || __atomic_sub_fetch(&id->_refcnt, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    EVP_PKEY_free(id->key);
    X509_free(id->cert);
    sk_X509_pop_free(id->chain, X509_free);
    sk_X509_pop_free(id->anchors, X509_free);
    free(id->cert_chain_pem);
    free(id->bundle_pem);
    free(id);
}

rm_identity_t *
rm_identity_current(void)
{
    pthread_mutex_lock(&mutex);
    rm_identity_t *id = current != NULL && current->not_after > (int64_t)time(NULL) ? rm_identity_ref(current) : NULL;
    pthread_mutex_unlock(&mutex);
    return id;
}

void
rm_identity_publish(rm_identity_t *id)
{
    rm_identity_ref(id);
    pthread_mutex_lock(&mutex);
    rm_identity_t *old = current;
    current = id;
    pthread_mutex_unlock(&mutex);
    rm_identity_unref(old);
}

void
rm_identity_count_rotation(int success)
{
    __atomic_add_fetch(&rotations[success ? 1 : 0], 1, __ATOMIC_RELAXED);
}

int
rm_identity_configure_ssl_ctx(SSL_CTX *ctx, const rm_identity_t *id, char *err, size_t errlen)
{
    if (SSL_CTX_use_certificate(ctx, id->cert) != 1 || SSL_CTX_use_PrivateKey(ctx, id->key) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1) {
        ossl_error(err, errlen, "identity certificate");
        return -1;
    }
    for (int i = 0; i != sk_X509_num(id->chain); ++i) {
        if (SSL_CTX_add1_chain_cert(ctx, sk_X509_value(id->chain, i)) != 1) {
            ossl_error(err, errlen, "identity chain");
            return -1;
        }
    }
    X509_STORE *store = X509_STORE_new();
    for (int i = 0; i != sk_X509_num(id->anchors); ++i)
        X509_STORE_add_cert(store, sk_X509_value(id->anchors, i));
    SSL_CTX_set_cert_store(ctx, store);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    return 0;
}

int
rm_identity_make_csr(EVP_PKEY **key, uint8_t **csr_der, size_t *csr_len, char *err, size_t errlen)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    if (k == NULL) {
        ossl_error(err, errlen, "cannot generate a P-256 key");
        return -1;
    }
    X509_REQ *req = X509_REQ_new();
    unsigned char *der = NULL;
    int n = -1;
    if (X509_REQ_set_version(req, 0) == 1 && X509_REQ_set_pubkey(req, k) == 1 && X509_REQ_sign(req, k, EVP_sha256()) > 0)
        n = i2d_X509_REQ(req, &der);
    X509_REQ_free(req);
    if (n <= 0) {
        ossl_error(err, errlen, "cannot make the CSR");
        EVP_PKEY_free(k);
        return -1;
    }
    *csr_der = rm_malloc((size_t)n);
    memcpy(*csr_der, der, (size_t)n);
    *csr_len = (size_t)n;
    OPENSSL_free(der);
    *key = k;
    return 0;
}

static char *
bio_string(BIO *bio)
{
    char *data;
    long n = BIO_get_mem_data(bio, &data);
    char *s = rm_malloc((size_t)n + 1);
    memcpy(s, data, (size_t)n);
    s[n] = '\0';
    return s;
}

/* Fills the derived fields and checks the identity (key match, chain, SAN). */
static int
finish(rm_identity_t *id, char *err, size_t errlen)
{
    if (X509_check_private_key(id->cert, id->key) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "the private key does not match the certificate");
        return -1;
    }
    id->not_before = asn1_time_unix(X509_get0_notBefore(id->cert));
    id->not_after = asn1_time_unix(X509_get0_notAfter(id->cert));
    ASN1_INTEGER *serial = X509_get_serialNumber(id->cert);
    BIGNUM *bn = ASN1_INTEGER_to_BN(serial, NULL);
    char *hex = bn != NULL ? BN_bn2hex(bn) : NULL;
    snprintf(id->serial, sizeof(id->serial), "%s", hex != NULL ? hex : "?");
    OPENSSL_free(hex);
    BN_free(bn);
    GENERAL_NAMES *names = X509_get_ext_d2i(id->cert, NID_subject_alt_name, NULL, NULL);
    for (int i = 0; names != NULL && i != sk_GENERAL_NAME_num(names); ++i) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, i);
        if (g->type == GEN_URI && ASN1_STRING_length(g->d.uniformResourceIdentifier) < (int)sizeof(id->spiffe_id) &&
            strncmp((const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier), "spiffe://", 9) == 0) {
            memcpy(id->spiffe_id, ASN1_STRING_get0_data(g->d.uniformResourceIdentifier),
                   (size_t)ASN1_STRING_length(g->d.uniformResourceIdentifier));
            id->spiffe_id[ASN1_STRING_length(g->d.uniformResourceIdentifier)] = '\0';
        }
    }
    GENERAL_NAMES_free(names);
    if (id->spiffe_id[0] == '\0') {
        snprintf(err, errlen, "the certificate has no spiffe:// URI SAN");
        return -1;
    }
    X509_STORE *store = X509_STORE_new();
    for (int i = 0; i != sk_X509_num(id->anchors); ++i)
        X509_STORE_add_cert(store, sk_X509_value(id->anchors, i));
    X509_STORE_CTX *vctx = X509_STORE_CTX_new();
    X509_STORE_CTX_init(vctx, store, id->cert, id->chain);
    int ok = X509_verify_cert(vctx) == 1;
    if (!ok)
        snprintf(err, errlen, "the certificate does not verify against the trust bundle: %s",
                 X509_verify_cert_error_string(X509_STORE_CTX_get_error(vctx)));
    X509_STORE_CTX_free(vctx);
    X509_STORE_free(store);
    ERR_clear_error();
    if (!ok)
        return -1;
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(bio, id->cert);
    for (int i = 0; i != sk_X509_num(id->chain); ++i)
        PEM_write_bio_X509(bio, sk_X509_value(id->chain, i));
    id->cert_chain_pem = bio_string(bio);
    BIO_free(bio);
    bio = BIO_new(BIO_s_mem());
    for (int i = 0; i != sk_X509_num(id->anchors); ++i)
        PEM_write_bio_X509(bio, sk_X509_value(id->anchors, i));
    id->bundle_pem = bio_string(bio);
    BIO_free(bio);
    return 0;
}

static STACK_OF(X509) * pem_certs(BIO *bio)
{
    STACK_OF(X509) *certs = sk_X509_new_null();
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL)
        sk_X509_push(certs, x);
    ERR_clear_error();
    return certs;
}

static rm_identity_t *
new_identity(void)
{
    rm_identity_t *id = rm_calloc(1, sizeof(*id));
    id->_refcnt = 1;
    id->chain = sk_X509_new_null();
    return id;
}

rm_identity_t *
rm_identity_create(EVP_PKEY *key, const uint8_t *const *chain_der, const size_t *chain_len, size_t n, const char *bundle_pem,
                   char *err, size_t errlen)
{
    rm_identity_t *id = new_identity();
    EVP_PKEY_up_ref(key);
    id->key = key;
    for (size_t i = 0; i != n; ++i) {
        const unsigned char *p = chain_der[i];
        X509 *x = d2i_X509(NULL, &p, (long)chain_len[i]);
        if (x == NULL) {
            ERR_clear_error();
            snprintf(err, errlen, "certificate %zu of the chain does not parse", i + 1);
            goto Fail;
        }
        if (i == 0)
            id->cert = x;
        else
            sk_X509_push(id->chain, x);
    }
    if (id->cert == NULL) {
        snprintf(err, errlen, "the control plane sent no certificate");
        goto Fail;
    }
    BIO *bio = BIO_new_mem_buf(bundle_pem, -1);
    id->anchors = pem_certs(bio);
    BIO_free(bio);
    if (sk_X509_num(id->anchors) == 0) {
        snprintf(err, errlen, "the trust bundle holds no certificate");
        goto Fail;
    }
    if (finish(id, err, errlen) != 0)
        goto Fail;
    return id;
Fail:
    rm_identity_unref(id);
    return NULL;
}

static int
write_file(const char *dir, const char *name, const char *data, char *err, size_t errlen)
{
    char path[4096], tmp[4200];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "%.400s: %s", tmp, strerror(errno));
        return -1;
    }
    size_t len = strlen(data), off = 0;
    while (off < len) {
        ssize_t w = write(fd, data + off, len - off);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            snprintf(err, errlen, "%.400s: %s", tmp, strerror(errno));
            close(fd);
            unlink(tmp);
            return -1;
        }
        off += (size_t)w;
    }
    if (fsync(fd) != 0 || close(fd) != 0 || rename(tmp, path) != 0) {
        snprintf(err, errlen, "%.400s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

int
rm_identity_save(const rm_identity_t *id, const char *dir, char *err, size_t errlen)
{
    BIO *bio = BIO_new(BIO_s_mem());
    PEM_write_bio_PrivateKey(bio, id->key, NULL, NULL, 0, NULL, NULL);
    char *key_pem = bio_string(bio);
    BIO_free(bio);
    /* the key first: a certificate on disk always has its key beside it */
    int r = write_file(dir, RM_IDENTITY_KEY_FILE, key_pem, err, errlen) == 0 &&
                    write_file(dir, RM_IDENTITY_CERT_FILE, id->cert_chain_pem, err, errlen) == 0 &&
                    write_file(dir, RM_IDENTITY_BUNDLE_FILE, id->bundle_pem, err, errlen) == 0
                ? 0
                : -1;
    OPENSSL_cleanse(key_pem, strlen(key_pem));
    free(key_pem);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return r;
}

rm_identity_t *
rm_identity_load(const char *dir, char *err, size_t errlen)
{
    char path[4096];
    err[0] = '\0';
    snprintf(path, sizeof(path), "%s/%s", dir, RM_IDENTITY_CERT_FILE);
    BIO *bio = BIO_new_file(path, "r");
    if (bio == NULL) {
        ERR_clear_error();
        if (errno != ENOENT)
            snprintf(err, errlen, "%.400s: %s", path, strerror(errno));
        return NULL;
    }
    rm_identity_t *id = new_identity();
    sk_X509_free(id->chain);
    id->chain = pem_certs(bio);
    BIO_free(bio);
    id->cert = sk_X509_num(id->chain) != 0 ? sk_X509_shift(id->chain) : NULL;
    if (id->cert == NULL) {
        snprintf(err, errlen, "%.400s: no PEM certificate", path);
        goto Fail;
    }
    snprintf(path, sizeof(path), "%s/%s", dir, RM_IDENTITY_KEY_FILE);
    if ((bio = BIO_new_file(path, "r")) == NULL || (id->key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL)) == NULL) {
        BIO_free(bio);
        ossl_error(err, errlen, path);
        goto Fail;
    }
    BIO_free(bio);
    snprintf(path, sizeof(path), "%s/%s", dir, RM_IDENTITY_BUNDLE_FILE);
    if ((bio = BIO_new_file(path, "r")) == NULL) {
        ossl_error(err, errlen, path);
        goto Fail;
    }
    id->anchors = pem_certs(bio);
    BIO_free(bio);
    char why[400];
    if (finish(id, why, sizeof(why)) != 0) {
        snprintf(err, errlen, "the identity in %.400s: %s", dir, why);
        goto Fail;
    }
    return id;
Fail:
    rm_identity_unref(id);
    return NULL;
}

static void
format_time(int64_t t, char *buf, size_t bufsz)
{
    time_t tt = (time_t)t;
    struct tm tm;
    gmtime_r(&tt, &tm);
    strftime(buf, bufsz, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

char *
rm_identity_describe(void)
{
    pthread_mutex_lock(&mutex);
    rm_identity_t *id = current != NULL ? rm_identity_ref(current) : NULL;
    pthread_mutex_unlock(&mutex);
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);
    if (id == NULL) {
        fputs("identity: none\n", fp);
    } else {
        char nb[32], na[32];
        format_time(id->not_before, nb, sizeof(nb));
        format_time(id->not_after, na, sizeof(na));
        char subject[256];
        X509_NAME_oneline(X509_get_issuer_name(id->cert), subject, sizeof(subject));
        fprintf(fp, "identity: %s\nserial: %s\nnot_before: %s\nnot_after: %s\nexpired: %s\nissuer: %s\ntrust_anchors: %d\n",
                id->spiffe_id, id->serial, nb, na, id->not_after <= (int64_t)time(NULL) ? "yes" : "no", subject,
                sk_X509_num(id->anchors));
    }
    fprintf(fp, "rotations_success: %" PRIu64 "\nrotations_failure: %" PRIu64 "\n",
            __atomic_load_n(&rotations[1], __ATOMIC_RELAXED), __atomic_load_n(&rotations[0], __ATOMIC_RELAXED));
    fclose(fp);
    rm_identity_unref(id);
    return text;
}

static char *
render_metrics(void)
{
    pthread_mutex_lock(&mutex);
    int64_t expiry = current != NULL ? current->not_after : 0;
    pthread_mutex_unlock(&mutex);
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);
    if (expiry != 0)
        fprintf(fp,
                "# HELP remora_identity_cert_expiry_timestamp_seconds When the workload certificate in service expires, since "
                "the Unix epoch.\n# TYPE remora_identity_cert_expiry_timestamp_seconds gauge\n"
                "remora_identity_cert_expiry_timestamp_seconds %" PRId64 "\n",
                expiry);
    fprintf(fp,
            "# HELP remora_identity_rotations_total Attempts to obtain a workload certificate from the control plane, by "
            "result.\n# TYPE remora_identity_rotations_total counter\n"
            "remora_identity_rotations_total{result=\"success\"} %" PRIu64 "\n"
            "remora_identity_rotations_total{result=\"failure\"} %" PRIu64 "\n",
            __atomic_load_n(&rotations[1], __ATOMIC_RELAXED), __atomic_load_n(&rotations[0], __ATOMIC_RELAXED));
    fclose(fp);
    return text;
}

void
rm_identity_init(void)
{
    rm_stats_register_renderer(render_metrics);
}

int
rm_identity_cb_make_csr(void *ctx, void **key, uint8_t **csr_der, size_t *csr_len, char *err, size_t errlen)
{
    EVP_PKEY *k;
    if (rm_identity_make_csr(&k, csr_der, csr_len, err, errlen) != 0)
        return -1;
    *key = k;
    return 0;
}

int
rm_identity_cb_install(void *ctx, void *key, const uint8_t *const *chain_der, const size_t *chain_len, size_t n,
                       const char *bundle_pem, char *err, size_t errlen)
{
    const char *dir = ctx;
    rm_identity_t *id = rm_identity_create(key, chain_der, chain_len, n, bundle_pem, err, errlen);
    EVP_PKEY_free(key);
    if (id == NULL)
        return -1;
    /* persisted first: an agent restarted right after this serves the same identity */
    char why[512];
    if (dir != NULL && rm_identity_save(id, dir, why, sizeof(why)) != 0)
        rm_log_error("identity", "the new certificate is in service but could not be kept in %s: %s", dir, why);
    rm_identity_publish(id);
    rm_identity_unref(id);
    return 0;
}

void
rm_identity_cb_release_key(void *ctx, void *key)
{
    EVP_PKEY_free(key);
}

int
rm_identity_cb_validity(void *ctx, int64_t *not_before, int64_t *not_after)
{
    rm_identity_t *id = rm_identity_current();
    if (id == NULL)
        return -1;
    *not_before = id->not_before;
    *not_after = id->not_after;
    rm_identity_unref(id);
    return 0;
}

void
rm_identity_cb_on_result(void *ctx, int success, const char *why)
{
    rm_identity_count_rotation(success);
}
