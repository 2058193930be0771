/*
 * The agent's identity (tls/identity.h) against the control plane's CA (control/src/ca.h): a CSR
 * from the agent's key, the certificate built into an identity (SPIFFE ID, validity, chain checked
 * against the bundle), kept in a state directory (0600) and loaded back, rejected when the key or the
 * bundle does not match; the current-identity swap; and two SSL_CTXs configured from identities that
 * complete a mutually authenticated TLS handshake in memory, as the data path will use them.
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
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include "ca.h"
#include "tls/identity.h"

static char dir[256];

static int
setup(void **state)
{
    snprintf(dir, sizeof(dir), "/tmp/rm_identity_test.XXXXXX");
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
open_ca(const char *sub)
{
    char path[400];
    snprintf(path, sizeof(path), "%s/%s", dir, sub);
    mkdir(path, 0700);
    rm_ca_options_t o = {.state_dir = path, .cert_lifetime_s = 3600};
    char err[512];
    rm_ca_t *ca = rm_ca_open(&o, err, sizeof(err));
    if (ca == NULL)
        fail_msg("%s", err);
    return ca;
}

/* What the agent does with a Certify answer. */
static rm_identity_t *
obtain(rm_ca_t *ca, const char *sa, const char *bundle, char *err, size_t errlen)
{
    EVP_PKEY *key;
    uint8_t *csr, *leaf;
    size_t csr_len, leaf_len, issuer_len;
    int64_t not_after;
    assert_int_equal(rm_identity_make_csr(&key, &csr, &csr_len, err, errlen), 0);
    assert_int_equal(rm_ca_issue(ca, csr, csr_len, "shop", sa, &leaf, &leaf_len, &not_after, err, errlen), 0);
    const uint8_t *ders[2] = {leaf, rm_ca_issuer_der(ca, &issuer_len)};
    size_t lens[2] = {leaf_len, issuer_len};
    rm_identity_t *id = rm_identity_create(key, ders, lens, 2, bundle != NULL ? bundle : rm_ca_bundle_pem(ca), err, errlen);
    if (id != NULL)
        assert_int_equal(id->not_after, not_after);
    EVP_PKEY_free(key);
    free(csr);
    free(leaf);
    return id;
}

static void
test_create_save_load(void **state)
{
    rm_ca_t *ca = open_ca("ca1"), *other = open_ca("ca2");
    char err[512];
    rm_identity_t *id = obtain(ca, "web", NULL, err, sizeof(err));
    assert_non_null(id);
    assert_string_equal(id->spiffe_id, "spiffe://remora.local/ns/shop/sa/web");
    assert_true(id->not_after > time(NULL) + 3500 && id->not_after <= time(NULL) + 3600);
    assert_true(id->not_before <= time(NULL));
    assert_int_equal(sk_X509_num(id->chain), 1);
    assert_non_null(strstr(id->cert_chain_pem, "BEGIN CERTIFICATE"));

    /* a chain from another CA does not verify against this bundle */
    assert_null(obtain(other, "web", rm_ca_bundle_pem(ca), err, sizeof(err)));
    assert_non_null(strstr(err, "does not verify against the trust bundle"));

    char sdir[400];
    snprintf(sdir, sizeof(sdir), "%s/state", dir);
    mkdir(sdir, 0700);
    assert_null(rm_identity_load(sdir, err, sizeof(err)));
    assert_string_equal(err, ""); /* none kept yet: not an error */
    assert_int_equal(rm_identity_save(id, sdir, err, sizeof(err)), 0);
    const char *files[] = {RM_IDENTITY_KEY_FILE, RM_IDENTITY_CERT_FILE, RM_IDENTITY_BUNDLE_FILE};
    for (int i = 0; i != 3; ++i) {
        char path[600];
        struct stat st;
        snprintf(path, sizeof(path), "%s/%s", sdir, files[i]);
        assert_int_equal(stat(path, &st), 0);
        assert_int_equal(st.st_mode & 0777, 0600);
    }
    rm_identity_t *loaded = rm_identity_load(sdir, err, sizeof(err));
    assert_non_null(loaded);
    assert_string_equal(loaded->spiffe_id, id->spiffe_id);
    assert_string_equal(loaded->serial, id->serial);
    assert_int_equal(loaded->not_after, id->not_after);
    rm_identity_unref(loaded);

    /* another identity's key beside this certificate: refused */
    rm_identity_t *other_id = obtain(ca, "db", NULL, err, sizeof(err));
    char odir[400];
    snprintf(odir, sizeof(odir), "%s/other", dir);
    mkdir(odir, 0700);
    assert_int_equal(rm_identity_save(other_id, odir, err, sizeof(err)), 0);
    char from[600], to[600];
    snprintf(from, sizeof(from), "%s/%s", odir, RM_IDENTITY_KEY_FILE);
    snprintf(to, sizeof(to), "%s/%s", sdir, RM_IDENTITY_KEY_FILE);
    assert_int_equal(rename(from, to), 0);
    assert_null(rm_identity_load(sdir, err, sizeof(err)));
    assert_non_null(strstr(err, "does not match"));

    /* the current identity: none, then swapped atomically, the old one still usable by its holders */
    assert_null(rm_identity_current());
    rm_identity_publish(id);
    rm_identity_t *cur = rm_identity_current();
    assert_ptr_equal(cur, id);
    rm_identity_publish(other_id);
    assert_string_equal(cur->spiffe_id, "spiffe://remora.local/ns/shop/sa/web");
    rm_identity_unref(cur);
    cur = rm_identity_current();
    assert_ptr_equal(cur, other_id);
    rm_identity_unref(cur);
    char *text = rm_identity_describe();
    assert_non_null(strstr(text, "identity: spiffe://remora.local/ns/shop/sa/db\n"));
    assert_non_null(strstr(text, "expired: no\n"));
    free(text);

    rm_identity_unref(id);
    rm_identity_unref(other_id);
    rm_ca_destroy(ca);
    rm_ca_destroy(other);
}

/* Moves bytes between two memory BIO pairs until both handshakes are done (or stuck). */
static int
handshake(SSL *client, SSL *server)
{
    for (int i = 0; i != 100; ++i) {
        int c = SSL_do_handshake(client), s = SSL_do_handshake(server);
        if (c == 1 && s == 1)
            return 1;
        if ((c != 1 && SSL_get_error(client, c) != SSL_ERROR_WANT_READ) ||
            (s != 1 && SSL_get_error(server, s) != SSL_ERROR_WANT_READ))
            return 0;
    }
    return 0;
}

static void
test_mutual_tls(void **state)
{
    rm_ca_t *ca = open_ca("ca");
    char err[512];
    rm_identity_t *a = obtain(ca, "client", NULL, err, sizeof(err)), *b = obtain(ca, "server", NULL, err, sizeof(err));
    assert_non_null(a);
    assert_non_null(b);
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method()), *sctx = SSL_CTX_new(TLS_server_method());
    assert_int_equal(rm_identity_configure_ssl_ctx(cctx, a, err, sizeof(err)), 0);
    assert_int_equal(rm_identity_configure_ssl_ctx(sctx, b, err, sizeof(err)), 0);
    SSL_CTX_set_verify(sctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    /* the identities may be released: the contexts hold their own references */
    rm_identity_unref(a);
    rm_identity_unref(b);

    SSL *client = SSL_new(cctx), *server = SSL_new(sctx);
    BIO *c2s, *s2c;
    BIO_new_bio_pair(&c2s, 0, &s2c, 0);
    SSL_set_bio(client, c2s, c2s);
    SSL_set_bio(server, s2c, s2c);
    SSL_set_connect_state(client);
    SSL_set_accept_state(server);
    assert_true(handshake(client, server));
    assert_int_equal(SSL_get_verify_result(client), X509_V_OK);
    assert_int_equal(SSL_get_verify_result(server), X509_V_OK);
    /* each side sees the other's SPIFFE ID */
    X509 *peer = SSL_get1_peer_certificate(server);
    assert_non_null(peer);
    GENERAL_NAMES *names = X509_get_ext_d2i(peer, NID_subject_alt_name, NULL, NULL);
    assert_string_equal((const char *)ASN1_STRING_get0_data(sk_GENERAL_NAME_value(names, 0)->d.uniformResourceIdentifier),
                        "spiffe://remora.local/ns/shop/sa/client");
    GENERAL_NAMES_free(names);
    X509_free(peer);
    SSL_free(client);
    SSL_free(server);

    /* a client of another CA is refused by the server */
    rm_ca_t *other = open_ca("other");
    rm_identity_t *stranger = obtain(other, "client", NULL, err, sizeof(err));
    SSL_CTX *xctx = SSL_CTX_new(TLS_client_method());
    assert_int_equal(rm_identity_configure_ssl_ctx(xctx, stranger, err, sizeof(err)), 0);
    SSL_CTX_set_verify(xctx, SSL_VERIFY_NONE, NULL);
    client = SSL_new(xctx);
    server = SSL_new(sctx);
    BIO_new_bio_pair(&c2s, 0, &s2c, 0);
    SSL_set_bio(client, c2s, c2s);
    SSL_set_bio(server, s2c, s2c);
    SSL_set_connect_state(client);
    SSL_set_accept_state(server);
    assert_false(handshake(client, server));
    ERR_clear_error();
    SSL_free(client);
    SSL_free(server);
    SSL_CTX_free(xctx);
    rm_identity_unref(stranger);
    SSL_CTX_free(cctx);
    SSL_CTX_free(sctx);
    rm_ca_destroy(other);
    rm_ca_destroy(ca);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_save_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mutual_tls, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
