/*
 * The control plane's CA and bootstrap tokens: generation and reuse of the trust anchor and issuer
 * (key modes), issuing (chain verifies against the bundle, SPIFFE URI SAN from the caller never from
 * the CSR, key usage, EKU, lifetime and its cap), CSR refusals, supplied files checked, durations,
 * and the token store (single workload, expiry, lapse, durability, only hashes on disk).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include "ca.h"
#include "token.h"

static char dir[256];

static int
setup(void **state)
{
    snprintf(dir, sizeof(dir), "/tmp/rm_ca_test.XXXXXX");
    return mkdtemp(dir) != NULL ? 0 : -1;
}

static int
teardown(void **state)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static rm_ca_t *
open_ca(const char *td, uint32_t lifetime_s)
{
    rm_ca_options_t o = {.state_dir = dir, .trust_domain = td, .cert_lifetime_s = lifetime_s};
    char err[512] = "";
    rm_ca_t *ca = rm_ca_open(&o, err, sizeof(err));
    if (ca == NULL)
        fail_msg("rm_ca_open: %s", err);
    return ca;
}

/* A DER CSR for a new key of the given type, with a subject and SAN that must be ignored. */
static uint8_t *
make_csr(int rsa, size_t *len, int corrupt)
{
    EVP_PKEY *key = rsa ? EVP_RSA_gen(2048) : EVP_EC_gen("P-256");
    X509_REQ *req = X509_REQ_new();
    X509_NAME *name = X509_NAME_new();
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"spiffe://evil/ns/kube-system/sa/admin", -1, -1, 0);
    X509_REQ_set_subject_name(req, name);
    X509_NAME_free(name);
    STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
    sk_X509_EXTENSION_push(exts,
                           X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, "URI:spiffe://evil/ns/kube-system/sa/admin"));
    X509_REQ_add_extensions(req, exts);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_set_pubkey(req, key);
    X509_REQ_sign(req, key, EVP_sha256());
    unsigned char *der = NULL;
    int n = i2d_X509_REQ(req, &der);
    assert_true(n > 0);
    uint8_t *out = malloc((size_t)n);
    memcpy(out, der, (size_t)n);
    if (corrupt)
        out[n - 5] ^= 0x55; /* inside the signature */
    *len = (size_t)n;
    OPENSSL_free(der);
    X509_REQ_free(req);
    EVP_PKEY_free(key);
    return out;
}

static STACK_OF(X509) * bundle_certs(const rm_ca_t *ca)
{
    BIO *bio = BIO_new_mem_buf(rm_ca_bundle_pem(ca), -1);
    STACK_OF(X509) *certs = sk_X509_new_null();
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL)
        sk_X509_push(certs, x);
    BIO_free(bio);
    return certs;
}

static X509 *
issue(rm_ca_t *ca, const char *ns, const char *sa, int64_t *not_after)
{
    size_t csr_len, leaf_len;
    uint8_t *csr = make_csr(0, &csr_len, 0), *leaf = NULL;
    char err[256];
    assert_int_equal(rm_ca_issue(ca, csr, csr_len, ns, sa, &leaf, &leaf_len, not_after, err, sizeof(err)), 0);
    const unsigned char *p = leaf;
    X509 *cert = d2i_X509(NULL, &p, (long)leaf_len);
    assert_non_null(cert);
    free(csr);
    free(leaf);
    return cert;
}

/* 1 when cert verifies against the CA's bundle with the issuer as intermediate. */
static int
verifies(rm_ca_t *ca, X509 *cert)
{
    STACK_OF(X509) *anchors = bundle_certs(ca);
    X509_STORE *store = X509_STORE_new();
    for (int i = 0; i != sk_X509_num(anchors); ++i)
        X509_STORE_add_cert(store, sk_X509_value(anchors, i));
    size_t ilen;
    const unsigned char *p = rm_ca_issuer_der(ca, &ilen);
    X509 *issuer = d2i_X509(NULL, &p, (long)ilen);
    STACK_OF(X509) *chain = sk_X509_new_null();
    sk_X509_push(chain, issuer);
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    X509_STORE_CTX_init(ctx, store, cert, chain);
    X509_STORE_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
    int ok = X509_verify_cert(ctx) == 1;
    X509_STORE_CTX_free(ctx);
    sk_X509_pop_free(chain, X509_free);
    X509_STORE_free(store);
    sk_X509_pop_free(anchors, X509_free);
    return ok;
}

static void
test_generate_issue_verify(void **state)
{
    rm_ca_t *ca = open_ca("mesh.test", 0);
    assert_string_equal(rm_ca_trust_domain(ca), "mesh.test");
    assert_int_equal(rm_ca_cert_lifetime(ca), 86400);
    assert_int_equal(rm_ca_num_anchors(ca), 1);
    const char *keys[] = {"ca/trust-anchor.key", "ca/issuer.key"};
    for (int i = 0; i != 2; ++i) {
        char path[512];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", dir, keys[i]);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
    }

    int64_t not_after;
    time_t before = time(NULL);
    X509 *cert = issue(ca, "shop", "web", &not_after);
    assert_true(verifies(ca, cert));
    /* lifetime */
    assert_true(not_after >= before + 86400 && not_after <= time(NULL) + 86400);
    int day, sec;
    ASN1_TIME_diff(&day, &sec, NULL, X509_get0_notAfter(cert));
    assert_true(day == 0 || (day == 1 && sec <= 0));
    /* exactly one SAN: the URI from the caller; the CSR's SAN and subject are ignored */
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    assert_int_equal(sk_GENERAL_NAME_num(names), 1);
    const GENERAL_NAME *g = sk_GENERAL_NAME_value(names, 0);
    assert_int_equal(g->type, GEN_URI);
    assert_string_equal((const char *)ASN1_STRING_get0_data(g->d.uniformResourceIdentifier), "spiffe://mesh.test/ns/shop/sa/web");
    GENERAL_NAMES_free(names);
    char subject[256];
    X509_NAME_oneline(X509_get_subject_name(cert), subject, sizeof(subject));
    assert_null(strstr(subject, "evil"));
    /* usages */
    assert_int_equal(X509_get_key_usage(cert), KU_DIGITAL_SIGNATURE);
    assert_int_equal(X509_get_extended_key_usage(cert), XKU_SSL_SERVER | XKU_SSL_CLIENT);
    assert_int_equal(X509_check_ca(cert), 0);
    /* a serial per certificate */
    X509 *other = issue(ca, "shop", "web", &not_after);
    assert_int_not_equal(ASN1_INTEGER_cmp(X509_get0_serialNumber(cert), X509_get0_serialNumber(other)), 0);
    X509_free(other);

    /* reopened: the same anchor and issuer */
    char bundle[4096];
    snprintf(bundle, sizeof(bundle), "%s", rm_ca_bundle_pem(ca));
    rm_ca_destroy(ca);
    ca = open_ca(NULL, 60);
    assert_string_equal(rm_ca_bundle_pem(ca), bundle);
    assert_string_equal(rm_ca_trust_domain(ca), "remora.local");
    assert_true(verifies(ca, cert));
    X509_free(cert);
    /* a short lifetime */
    before = time(NULL);
    cert = issue(ca, "default", "a", &not_after);
    assert_true(not_after >= before + 60 && not_after <= time(NULL) + 60);
    assert_true(verifies(ca, cert));
    X509_free(cert);
    rm_ca_destroy(ca);
}

static void
test_bad_csr(void **state)
{
    rm_ca_t *ca = open_ca(NULL, 0);
    char err[256];
    uint8_t *leaf = NULL;
    size_t leaf_len, len;
    int64_t na;
    const uint8_t garbage[] = {0x30, 0x03, 1, 2, 3};
    assert_int_equal(rm_ca_issue(ca, garbage, sizeof(garbage), "a", "b", &leaf, &leaf_len, &na, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "PKCS#10"));
    uint8_t *csr = make_csr(1, &len, 0);
    assert_int_equal(rm_ca_issue(ca, csr, len, "a", "b", &leaf, &leaf_len, &na, err, sizeof(err)), -1);
    assert_non_null(strstr(err, "P-256"));
    free(csr);
    csr = make_csr(0, &len, 1);
    assert_int_equal(rm_ca_issue(ca, csr, len, "a", "b", &leaf, &leaf_len, &na, err, sizeof(err)), -1);
    assert_null(leaf);
    free(csr);
    rm_ca_destroy(ca);
}

static void
write_pem(const char *name, X509 *cert, EVP_PKEY *key)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *fp = fopen(path, "a");
    assert_non_null(fp);
    if (cert != NULL)
        PEM_write_X509(fp, cert);
    if (key != NULL)
        PEM_write_PrivateKey(fp, key, NULL, NULL, 0, NULL, NULL);
    fclose(fp);
}

static X509 *
read_pem(const char *rel)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, rel);
    FILE *fp = fopen(path, "r");
    assert_non_null(fp);
    X509 *x = PEM_read_X509(fp, NULL, NULL, NULL);
    fclose(fp);
    return x;
}

static void
test_supplied(void **state)
{
    /* a generated CA in a sibling directory serves as "the user's" material */
    rm_ca_destroy(open_ca(NULL, 0));
    char a[512], ic[512], ik[512], other[512], both[512], err[512];
    snprintf(a, sizeof(a), "%s/ca/trust-anchor.pem", dir);
    snprintf(ic, sizeof(ic), "%s/ca/issuer.pem", dir);
    snprintf(ik, sizeof(ik), "%s/ca/issuer.key", dir);
    /* another anchor, self-signed */
    EVP_PKEY *k2 = EVP_EC_gen("P-256");
    X509 *root2 = X509_new();
    X509_set_version(root2, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(root2), 7);
    X509_NAME *n = X509_get_subject_name(root2);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"other root", -1, -1, 0);
    X509_set_issuer_name(root2, n);
    X509_gmtime_adj(X509_getm_notBefore(root2), 0);
    X509_gmtime_adj(X509_getm_notAfter(root2), 86400);
    X509_set_pubkey(root2, k2);
    X509_EXTENSION *bc = X509V3_EXT_conf_nid(NULL, NULL, NID_basic_constraints, "critical,CA:TRUE");
    X509_add_ext(root2, bc, -1);
    X509_EXTENSION_free(bc);
    X509_sign(root2, k2, EVP_sha256());
    write_pem("other.pem", root2, NULL);
    write_pem("otherkey.pem", NULL, k2);
    snprintf(other, sizeof(other), "%s/other.pem", dir);
    /* a bundle of two anchors: the other one first */
    X509 *anchor = read_pem("ca/trust-anchor.pem");
    write_pem("both.pem", root2, NULL);
    write_pem("both.pem", anchor, NULL);
    snprintf(both, sizeof(both), "%s/both.pem", dir);
    X509_free(anchor);

    rm_ca_options_t o = {.state_dir = "/nonexistent", .trust_anchor_file = both, .issuer_cert_file = ic, .issuer_key_file = ik};
    rm_ca_t *ca = rm_ca_open(&o, err, sizeof(err));
    assert_non_null(ca);
    assert_int_equal(rm_ca_num_anchors(ca), 2);
    int64_t na;
    X509 *cert = issue(ca, "x", "y", &na);
    assert_true(verifies(ca, cert));
    X509_free(cert);
    rm_ca_destroy(ca);

    o.trust_anchor_file = other;
    assert_null(rm_ca_open(&o, err, sizeof(err)));
    assert_non_null(strstr(err, "does not verify against --trust-anchor"));
    o.trust_anchor_file = a;
    char wrongkey[512];
    snprintf(wrongkey, sizeof(wrongkey), "%s/otherkey.pem", dir);
    o.issuer_key_file = wrongkey;
    assert_null(rm_ca_open(&o, err, sizeof(err)));
    assert_non_null(strstr(err, "is not the key of --issuer-cert"));
    o.issuer_key_file = ic; /* a certificate, not a key */
    assert_null(rm_ca_open(&o, err, sizeof(err)));
    assert_non_null(strstr(err, "not a PEM private key"));
    o.issuer_key_file = NULL;
    assert_null(rm_ca_open(&o, err, sizeof(err)));
    assert_non_null(strstr(err, "go together"));
    o.issuer_key_file = ik;
    o.issuer_cert_file = "/nonexistent/issuer.pem";
    assert_null(rm_ca_open(&o, err, sizeof(err)));
    assert_non_null(strstr(err, "cannot read"));
    o.issuer_cert_file = ic;
    o.trust_domain = "Bad_Domain";
    assert_null(rm_ca_open(&o, err, sizeof(err)));
    assert_non_null(strstr(err, "--trust-domain"));
    X509_free(root2);
    EVP_PKEY_free(k2);
}

static void
test_durations_and_names(void **state)
{
    int64_t s;
    assert_int_equal(rm_ca_parse_duration("90", &s), 0);
    assert_int_equal(s, 90);
    assert_int_equal(rm_ca_parse_duration("15m", &s), 0);
    assert_int_equal(s, 900);
    assert_int_equal(rm_ca_parse_duration("24h", &s), 0);
    assert_int_equal(s, 86400);
    assert_int_equal(rm_ca_parse_duration("2d", &s), 0);
    assert_int_equal(s, 172800);
    assert_int_equal(rm_ca_parse_duration("0s", &s), -1);
    assert_int_equal(rm_ca_parse_duration("1x", &s), -1);
    assert_int_equal(rm_ca_parse_duration("1hh", &s), -1);
    assert_int_equal(rm_ca_parse_duration("", &s), -1);
    assert_true(rm_ca_valid_trust_domain("remora.local"));
    assert_true(rm_ca_valid_trust_domain("a-b.example.com"));
    assert_false(rm_ca_valid_trust_domain("Remora.local"));
    assert_false(rm_ca_valid_trust_domain("a..b"));
    assert_false(rm_ca_valid_trust_domain("-a.b"));
    assert_false(rm_ca_valid_trust_domain(""));
    assert_true(rm_token_valid_name("default"));
    assert_false(rm_token_valid_name("Default"));
    assert_false(rm_token_valid_name("a/b"));
}

static void
test_tokens(void **state)
{
    char err[512], why[512], tok[RM_TOKEN_LEN + 1], tok2[RM_TOKEN_LEN + 1];
    rm_tokens_t *t = rm_tokens_open(dir, err, sizeof(err));
    assert_non_null(t);
    int64_t expires;
    assert_int_equal(rm_tokens_create(t, "shop", "web", 3600, tok, &expires, err, sizeof(err)), 0);
    assert_int_equal(strlen(tok), RM_TOKEN_LEN);
    assert_int_equal(strncmp(tok, RM_TOKEN_PREFIX, strlen(RM_TOKEN_PREFIX)), 0);
    const char *ns, *sa;
    assert_int_equal(rm_tokens_check(t, tok, "node-a", &ns, &sa, why, sizeof(why)), RM_TOKEN_OK);
    assert_string_equal(ns, "shop");
    assert_string_equal(sa, "web");
    assert_int_equal(rm_tokens_record(t, tok, "node-a", time(NULL) + 100, err, sizeof(err)), 0);
    /* bound: the same node renews, another node is refused */
    assert_int_equal(rm_tokens_check(t, tok, "node-a", &ns, &sa, why, sizeof(why)), RM_TOKEN_OK);
    assert_int_equal(rm_tokens_check(t, tok, "node-b", &ns, &sa, why, sizeof(why)), RM_TOKEN_IN_USE);
    assert_non_null(strstr(why, "node-a"));
    assert_int_equal(rm_tokens_check(t, "rmt1.nope", "node-a", &ns, &sa, why, sizeof(why)), RM_TOKEN_UNKNOWN);
    /* an unused token past its ttl */
    assert_int_equal(rm_tokens_create(t, "shop", "late", 1, tok2, &expires, err, sizeof(err)), 0);
    sleep(1);
    usleep(100000);
    assert_int_equal(rm_tokens_check(t, tok2, "node-c", &ns, &sa, why, sizeof(why)), RM_TOKEN_EXPIRED);
    rm_tokens_close(t);

    /* durable, hashed, 0600 */
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", dir, RM_TOKENS_FILE);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    FILE *fp = fopen(path, "r");
    char buf[4096];
    size_t n = fread(buf, 1, sizeof(buf) - 1, fp);
    buf[n] = '\0';
    fclose(fp);
    assert_null(strstr(buf, tok + strlen(RM_TOKEN_PREFIX)));
    t = rm_tokens_open(dir, err, sizeof(err));
    assert_non_null(t);
    assert_int_equal(rm_tokens_check(t, tok, "node-b", &ns, &sa, why, sizeof(why)), RM_TOKEN_IN_USE);
    /* a lapsed binding: the last certificate expired */
    assert_int_equal(rm_tokens_record(t, tok, "node-a", time(NULL) - 1, err, sizeof(err)), 0);
    assert_int_equal(rm_tokens_check(t, tok, "node-a", &ns, &sa, why, sizeof(why)), RM_TOKEN_LAPSED);
    rm_tokens_close(t);

    /* a damaged file is an error, not an empty store */
    fp = fopen(path, "w");
    fputs("garbage\n", fp);
    fclose(fp);
    assert_null(rm_tokens_open(dir, err, sizeof(err)));
    assert_non_null(strstr(err, "tokens.db:1"));
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_generate_issue_verify, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_csr, setup, teardown),
        cmocka_unit_test_setup_teardown(test_supplied, setup, teardown),
        cmocka_unit_test(test_durations_and_names),
        cmocka_unit_test_setup_teardown(test_tokens, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
