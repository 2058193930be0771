/* net/detect.c: rm_detect_mesh_alpn, the ClientHello ALPN peek that tells mesh mTLS from the application's
 * TLS (docs/mesh-tls.md). ClientHellos are made by OpenSSL itself (memory BIOs), plus hand-made edge cases. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/ssl.h>
#include "net/detect.h"

/* The first flight of an OpenSSL client offering `alpn` (wire format; NULL: no ALPN). Returns its length. */
static size_t
client_hello(const unsigned char *alpn, size_t alpn_len, int tls13_only, unsigned char *out, size_t outsz)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (tls13_only)
        SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    if (alpn != NULL)
        SSL_CTX_set_alpn_protos(ctx, alpn, (unsigned)alpn_len);
    SSL *ssl = SSL_new(ctx);
    BIO *rbio = BIO_new(BIO_s_mem()), *wbio = BIO_new(BIO_s_mem());
    SSL_set_bio(ssl, rbio, wbio);
    SSL_set_tlsext_host_name(ssl, "remora.mesh");
    assert_int_equal(SSL_connect(ssl), -1); /* wants to read the ServerHello */
    int n = BIO_read(wbio, out, (int)outsz);
    assert_true(n > 5);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    return (size_t)n;
}

static const unsigned char mesh_h2[] = "\x0eremora.mesh/h2";
static const unsigned char mesh_h1_after_h2[] = "\x02h2\x11remora.mesh/http1";
static const unsigned char app[] = "\x02h2\x08http/1.1";
static const unsigned char lookalike[] = "\x0bremora.mesh"; /* the prefix without a protocol */

static void
test_real_client_hellos(void **state)
{
    unsigned char buf[8192];
    size_t n = client_hello(mesh_h2, sizeof(mesh_h2) - 1, 1, buf, sizeof(buf));
    assert_int_equal(rm_detect_mesh_alpn(buf, n), RM_DETECT_ALPN_MESH);
    /* every prefix of the record asks for more */
    for (size_t i = 0; i != n; ++i)
        assert_int_equal(rm_detect_mesh_alpn(buf, i), RM_DETECT_ALPN_NEED_MORE);
    /* bytes after the record (a client that sent more) do not matter */
    assert_int_equal(rm_detect_mesh_alpn(buf, n), RM_DETECT_ALPN_MESH);

    n = client_hello(mesh_h1_after_h2, sizeof(mesh_h1_after_h2) - 1, 0, buf, sizeof(buf));
    assert_int_equal(rm_detect_mesh_alpn(buf, n), RM_DETECT_ALPN_MESH);

    n = client_hello(app, sizeof(app) - 1, 0, buf, sizeof(buf));
    assert_int_equal(rm_detect_mesh_alpn(buf, n), RM_DETECT_ALPN_OTHER);

    n = client_hello(lookalike, sizeof(lookalike) - 1, 0, buf, sizeof(buf));
    assert_int_equal(rm_detect_mesh_alpn(buf, n), RM_DETECT_ALPN_OTHER);

    n = client_hello(NULL, 0, 0, buf, sizeof(buf));
    assert_int_equal(rm_detect_mesh_alpn(buf, n), RM_DETECT_ALPN_OTHER);
}

static void
test_corrupted_never_overreads(void **state)
{
    unsigned char buf[8192];
    size_t n = client_hello(mesh_h2, sizeof(mesh_h2) - 1, 1, buf, sizeof(buf));
    /* every single-byte change gives one of the three answers, reading only the record (ASan checks the bounds:
     * each copy is exactly as long as the record) */
    for (size_t i = 0; i != n; ++i) {
        for (int v = 0; v < 256; v += 51) {
            unsigned char *copy = malloc(n);
            memcpy(copy, buf, n);
            copy[i] = (unsigned char)v;
            rm_detect_alpn_t r = rm_detect_mesh_alpn(copy, n);
            assert_true(r == RM_DETECT_ALPN_NEED_MORE || r == RM_DETECT_ALPN_MESH || r == RM_DETECT_ALPN_OTHER);
            free(copy);
        }
    }
}

static void
test_edge_cases(void **state)
{
    /* not a handshake record, or not TLS */
    assert_int_equal(rm_detect_mesh_alpn((const unsigned char *)"\x17\x03\x03\x00\x05hello", 10), RM_DETECT_ALPN_OTHER);
    assert_int_equal(rm_detect_mesh_alpn((const unsigned char *)"GET / HTTP/1.1\r\n", 16), RM_DETECT_ALPN_OTHER);
    /* a record longer than TLS allows is not waited for */
    assert_int_equal(rm_detect_mesh_alpn((const unsigned char *)"\x16\x03\x01\x40\x01", 5), RM_DETECT_ALPN_OTHER);
    assert_int_equal(rm_detect_mesh_alpn((const unsigned char *)"\x16\x03\x01\x40\x00", 5), RM_DETECT_ALPN_NEED_MORE);
    /* an empty record, and a record that is not a ClientHello (ServerHello type 2) */
    assert_int_equal(rm_detect_mesh_alpn((const unsigned char *)"\x16\x03\x01\x00\x00", 5), RM_DETECT_ALPN_OTHER);
    assert_int_equal(rm_detect_mesh_alpn((const unsigned char *)"\x16\x03\x01\x00\x04\x02\x00\x00\x00", 9), RM_DETECT_ALPN_OTHER);
    /* a ClientHello longer than its record (split over several records): not parsed, the application's */
    assert_int_equal(rm_detect_mesh_alpn((const unsigned char *)"\x16\x03\x01\x00\x04\x01\x00\x10\x00", 9), RM_DETECT_ALPN_OTHER);
    /* the largest record waited for */
    unsigned char *big = calloc(1, RM_DETECT_MAX_CLIENT_HELLO);
    memcpy(big, "\x16\x03\x01\x40\x00\x01", 6);
    assert_int_equal(rm_detect_mesh_alpn(big, RM_DETECT_MAX_CLIENT_HELLO - 1), RM_DETECT_ALPN_NEED_MORE);
    assert_int_equal(rm_detect_mesh_alpn(big, RM_DETECT_MAX_CLIENT_HELLO), RM_DETECT_ALPN_OTHER);
    free(big);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_real_client_hellos),
        cmocka_unit_test(test_corrupted_never_overreads),
        cmocka_unit_test(test_edge_cases),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
