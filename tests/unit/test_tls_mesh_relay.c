/*
 * tls/mesh_relay.c: the opaque relay's mesh mTLS over memory buffers, a client and a server relay in one
 * process with identities from the control plane's CA (control/src/ca.h), the bytes carried between them
 * by the test. Checked: the handshake (remora.mesh/tcp, both SPIFFE IDs), TLS 1.3 half-close both ways
 * (close_notify then the other side still writes; after sending close_notify a side still reads), the
 * bound on plaintext appended per read, the two output buffers (nothing new is taken while a write is in
 * flight), a peer with another identity, a truncated record, and plaintext that is not TLS.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <netinet/in.h>
#include <unistd.h>
#include <cmocka.h>
#include <h2o.h>
#include <h2o/socket/uv-binding.h>
#include "ca.h"
#include "tls/identity.h"
#include "tls/mesh_relay.h"

static char dir[256];
static uv_loop_t loop;
/* the two ends of a loopback TCP connection, as h2o sockets: only their input buffers and peer addresses are used */
static h2o_socket_t *csock, *ssock;

static h2o_socket_t *
wrap_fd(int fd)
{
    uv_tcp_t *tcp = malloc(sizeof(*tcp));
    uv_tcp_init(&loop, tcp);
    assert_int_equal(uv_tcp_open(tcp, fd), 0);
    return h2o_uv_socket_create((uv_stream_t *)tcp, (uv_close_cb)free);
}

static void
connect_pair(void)
{
    int l = socket(AF_INET, SOCK_STREAM, 0), c = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    assert_int_equal(bind(l, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(l, 1), 0);
    assert_int_equal(getsockname(l, (struct sockaddr *)&a, &alen), 0);
    assert_int_equal(connect(c, (struct sockaddr *)&a, sizeof(a)), 0);
    int s = accept(l, NULL, NULL);
    assert_true(s >= 0);
    close(l);
    csock = wrap_fd(c);
    ssock = wrap_fd(s);
}

static void
close_pair(void)
{
    h2o_socket_close(csock);
    h2o_socket_close(ssock);
    uv_run(&loop, UV_RUN_NOWAIT);
}

static rm_identity_t *
obtain(rm_ca_t *ca, const char *sa)
{
    EVP_PKEY *key;
    uint8_t *csr, *leaf;
    size_t csr_len, leaf_len, issuer_len;
    int64_t not_after;
    char err[512];
    assert_int_equal(rm_identity_make_csr(&key, &csr, &csr_len, err, sizeof(err)), 0);
    assert_int_equal(rm_ca_issue(ca, csr, csr_len, "shop", sa, &leaf, &leaf_len, &not_after, err, sizeof(err)), 0);
    const uint8_t *ders[2] = {leaf, rm_ca_issuer_der(ca, &issuer_len)};
    size_t lens[2] = {leaf_len, issuer_len};
    rm_identity_t *id = rm_identity_create(key, ders, lens, 2, rm_ca_bundle_pem(ca), err, sizeof(err));
    if (id == NULL)
        fail_msg("%s", err);
    EVP_PKEY_free(key);
    free(csr);
    free(leaf);
    return id;
}

static int
setup(void **state)
{
    snprintf(dir, sizeof(dir), "/tmp/rm_mesh_relay_test.XXXXXX");
    if (mkdtemp(dir) == NULL)
        return -1;
    rm_ca_options_t o = {.state_dir = dir, .cert_lifetime_s = 3600};
    char err[512];
    rm_ca_t *ca = rm_ca_open(&o, err, sizeof(err));
    if (ca == NULL)
        return -1;
    rm_identity_t *id = obtain(ca, "web");
    rm_identity_publish(id);
    rm_identity_unref(id);
    rm_ca_destroy(ca);
    rm_mesh_tls_init();
    uv_loop_init(&loop);
    return 0;
}

static int
teardown(void **state)
{
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Moves what `from` has to send into `to_sock`'s input (as the network would); returns the bytes moved. */
static size_t
carry(rm_mesh_relay_t *from, h2o_socket_t *to_sock)
{
    size_t moved = 0;
    for (;;) {
        h2o_iovec_t out = rm_mesh_relay_take_output(from);
        if (out.len == 0)
            return moved;
        /* a second take while the first is "being written" gives nothing */
        assert_int_equal(rm_mesh_relay_take_output(from).len, 0);
        assert_true(rm_mesh_relay_has_output(from));
        h2o_iovec_t dst = h2o_buffer_reserve(&to_sock->input, out.len);
        memcpy(dst.base, out.base, out.len);
        to_sock->input->size += out.len;
        moved += out.len;
        rm_mesh_relay_output_done(from);
    }
}

static char expected[512];

static void
handshake(rm_mesh_relay_t *c, rm_mesh_relay_t *s, rm_mesh_relay_status_t *cr, rm_mesh_relay_status_t *sr)
{
    *cr = *sr = RM_MESH_RELAY_WANT;
    for (int i = 0; i != 10 && (*cr == RM_MESH_RELAY_WANT || *sr == RM_MESH_RELAY_WANT); ++i) {
        if (*cr == RM_MESH_RELAY_WANT)
            *cr = rm_mesh_relay_handshake(c);
        carry(c, ssock);
        if (*sr == RM_MESH_RELAY_WANT)
            *sr = rm_mesh_relay_handshake(s);
        carry(s, csock);
    }
}

static rm_mesh_relay_status_t
read_all(rm_mesh_relay_t *t, h2o_buffer_t **plain, size_t max)
{
    char err[300];
    rm_mesh_relay_status_t r;
    do {
        size_t before = (*plain)->size;
        r = rm_mesh_relay_read(t, plain, max, err, sizeof(err));
        assert_true((*plain)->size - before <= max);
    } while (r == RM_MESH_RELAY_DONE);
    if (r == RM_MESH_RELAY_ERROR)
        fail_msg("%s", err);
    return r;
}

static void
test_half_close_both_ways(void **state)
{
    rm_identity_t *id = rm_identity_current();
    snprintf(expected, sizeof(expected), "%s", id->spiffe_id);
    rm_identity_unref(id);
    connect_pair();
    rm_mesh_relay_t *c = rm_mesh_relay_client(expected, csock), *s = rm_mesh_relay_server(ssock);
    assert_non_null(c);
    assert_non_null(s);
    rm_mesh_relay_status_t cr, sr;
    handshake(c, s, &cr, &sr);
    assert_int_equal(cr, RM_MESH_RELAY_DONE);
    assert_int_equal(sr, RM_MESH_RELAY_DONE);
    assert_true(rm_mesh_relay_alpn_ok(c) && rm_mesh_relay_alpn_ok(s));
    assert_string_equal(rm_mesh_relay_handshake_state(c)->peer_id, expected);
    assert_string_equal(rm_mesh_relay_handshake_state(s)->peer_id, expected);
    assert_int_equal(rm_mesh_handshake_result(rm_mesh_relay_handshake_state(s), RM_MESH_INBOUND, NULL), RM_MESH_SUCCESS);

    h2o_buffer_t *plain;
    h2o_buffer_init(&plain, &h2o_socket_buffer_prototype);
    /* the client's request, then its end (close_notify): the server reads both */
    assert_int_equal(rm_mesh_relay_write(c, "request", 7), 0);
    rm_mesh_relay_close_notify(c);
    assert_int_equal(rm_mesh_relay_write(c, "late", 4), -1); /* nothing after our own close_notify */
    carry(c, ssock);
    assert_int_equal(read_all(s, &plain, 65536), RM_MESH_RELAY_EOF);
    assert_true(h2o_memis(plain->bytes, plain->size, H2O_STRLIT("request")));
    h2o_buffer_consume(&plain, plain->size);

    /* the server answers after the client's close_notify, 200 KB, read back at most 10000 bytes per call */
    size_t n = 200000;
    char *big = malloc(n);
    for (size_t i = 0; i != n; ++i)
        big[i] = (char)(i * 7);
    assert_int_equal(rm_mesh_relay_write(s, big, n), 0);
    carry(s, csock);
    assert_int_equal(read_all(c, &plain, 10000), RM_MESH_RELAY_WANT); /* the client still reads after its close_notify */
    assert_int_equal(plain->size, n);
    assert_memory_equal(plain->bytes, big, n);
    h2o_buffer_consume(&plain, plain->size);
    /* then the server ends its side too */
    rm_mesh_relay_close_notify(s);
    carry(s, csock);
    assert_int_equal(read_all(c, &plain, 65536), RM_MESH_RELAY_EOF);
    assert_int_equal(plain->size, 0);

    free(big);
    h2o_buffer_dispose(&plain);
    rm_mesh_relay_destroy(c);
    rm_mesh_relay_destroy(s);
    close_pair();
}

static void
test_wrong_identity_truncation_and_plaintext(void **state)
{
    char other[600];
    snprintf(other, sizeof(other), "%s-other", expected);
    connect_pair();
    rm_mesh_relay_t *c = rm_mesh_relay_client(other, csock), *s = rm_mesh_relay_server(ssock);
    rm_mesh_relay_status_t cr, sr;
    handshake(c, s, &cr, &sr);
    assert_int_equal(cr, RM_MESH_RELAY_ERROR);
    rm_mesh_handshake_t *hs = rm_mesh_relay_handshake_state(c);
    assert_int_equal(hs->failure, RM_MESH_PEER_IDENTITY_MISMATCH);
    assert_non_null(strstr(hs->why, other));
    assert_non_null(strstr(hs->why, expected));
    rm_mesh_relay_destroy(c);
    rm_mesh_relay_destroy(s);
    close_pair();

    /* a record cut short stays wanted (the caller sees its socket end: a truncation), a damaged one is an error */
    connect_pair();
    c = rm_mesh_relay_client(expected, csock);
    s = rm_mesh_relay_server(ssock);
    handshake(c, s, &cr, &sr);
    assert_int_equal(sr, RM_MESH_RELAY_DONE);
    assert_int_equal(rm_mesh_relay_write(c, "0123456789", 10), 0);
    h2o_iovec_t out = rm_mesh_relay_take_output(c);
    assert_true(out.len > 10);
    h2o_iovec_t dst = h2o_buffer_reserve(&ssock->input, out.len);
    memcpy(dst.base, out.base, out.len - 1);
    ssock->input->size += out.len - 1;
    h2o_buffer_t *plain;
    h2o_buffer_init(&plain, &h2o_socket_buffer_prototype);
    char err[300];
    assert_int_equal(rm_mesh_relay_read(s, &plain, 65536, err, sizeof(err)), RM_MESH_RELAY_WANT);
    assert_int_equal(plain->size, 0);
    dst = h2o_buffer_reserve(&ssock->input, 1);
    dst.base[0] = (char)(out.base[out.len - 1] ^ 1); /* the last byte, damaged */
    ssock->input->size += 1;
    rm_mesh_relay_output_done(c);
    assert_int_equal(rm_mesh_relay_read(s, &plain, 65536, err, sizeof(err)), RM_MESH_RELAY_ERROR);
    assert_non_null(strstr(err, "TLS read"));
    rm_mesh_relay_destroy(c);
    rm_mesh_relay_destroy(s);
    close_pair();

    /* plaintext where a ClientHello should be: the server's handshake fails */
    connect_pair();
    s = rm_mesh_relay_server(ssock);
    dst = h2o_buffer_reserve(&ssock->input, 64);
    memcpy(dst.base, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27);
    ssock->input->size += 27;
    assert_int_equal(rm_mesh_relay_handshake(s), RM_MESH_RELAY_ERROR);
    assert_true(rm_mesh_relay_handshake_state(s)->why[0] != '\0');
    rm_mesh_relay_destroy(s);
    h2o_buffer_dispose(&plain);
    close_pair();
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_half_close_both_ways),
        cmocka_unit_test(test_wrong_identity_truncation_and_plaintext),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
