/*
 * Mesh mTLS for the opaque relay over memory buffers (see mesh_relay.h).
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>
#include <h2o/socket.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "tls/mesh_relay.h"

struct st_rm_mesh_relay_t {
    SSL *ssl;
    /* ciphertext from the peer: the plain socket's input buffer (not owned) */
    h2o_buffer_t **in;
    /* ciphertext to the peer: `pending` fills while `inflight` is being written */
    h2o_buffer_t *pending, *inflight;
    rm_mesh_handshake_t hs;
    char expected[RM_MESH_MAX_ID];
    unsigned writing : 1;
    unsigned shut_sent : 1;
};

/*
 * A BIO over the relay's buffers: reads consume the socket's input, writes append to the pending output.
 * It never blocks and never fails a write (the caller bounds what it encrypts), so SSL_write never wants to write.
 */

static BIO_METHOD *bio_method;
static pthread_once_t bio_once = PTHREAD_ONCE_INIT;

static int
bio_write(BIO *b, const char *buf, int len)
{
    rm_mesh_relay_t *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (len <= 0)
        return 0;
    h2o_iovec_t dst = h2o_buffer_reserve(&t->pending, (size_t)len);
    if (dst.base == NULL)
        return -1;
    memcpy(dst.base, buf, (size_t)len);
    t->pending->size += (size_t)len;
    return len;
}

static int
bio_read(BIO *b, char *buf, int len)
{
    rm_mesh_relay_t *t = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    h2o_buffer_t *in = *t->in;
    if (len <= 0)
        return 0;
    if (in->size == 0) {
        BIO_set_retry_read(b);
        return -1;
    }
    size_t n = in->size < (size_t)len ? in->size : (size_t)len;
    memcpy(buf, in->bytes, n);
    h2o_buffer_consume(t->in, n);
    return (int)n;
}

static long
bio_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int
bio_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

static void
make_bio_method(void)
{
    bio_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "remora mesh relay");
    BIO_meth_set_write(bio_method, bio_write);
    BIO_meth_set_read(bio_method, bio_read);
    BIO_meth_set_ctrl(bio_method, bio_ctrl);
    BIO_meth_set_create(bio_method, bio_create);
}

static rm_mesh_relay_t *
create(SSL_CTX *ctx, h2o_socket_t *sock, const char *expected)
{
    pthread_once(&bio_once, make_bio_method);
    rm_mesh_relay_t *t = rm_calloc(1, sizeof(*t));
    t->in = &sock->input;
    h2o_buffer_init(&t->pending, &h2o_socket_buffer_prototype);
    h2o_buffer_init(&t->inflight, &h2o_socket_buffer_prototype);
    t->ssl = SSL_new(ctx);
    SSL_CTX_free(ctx); /* the SSL holds its own reference */
    if (t->ssl == NULL)
        rm_fatal("SSL_new failed");
    BIO *bio = BIO_new(bio_method);
    if (bio == NULL)
        rm_fatal("BIO_new failed");
    BIO_set_data(bio, t);
    SSL_set_bio(t->ssl, bio, bio);
    /* the relay ends each direction with close_notify (the contexts are quiet for the HTTP hops: mesh.c) */
    SSL_set_quiet_shutdown(t->ssl, 0);
    if (expected != NULL) {
        snprintf(t->expected, sizeof(t->expected), "%s", expected);
        SSL_set_tlsext_host_name(t->ssl, "remora.mesh");
        SSL_set_connect_state(t->ssl);
        rm_mesh_handshake_attach(&t->hs, t->ssl, sock, t->expected);
    } else {
        SSL_set_accept_state(t->ssl);
        rm_mesh_handshake_attach(&t->hs, t->ssl, sock, NULL);
    }
    return t;
}

rm_mesh_relay_t *
rm_mesh_relay_client(const char *expected, h2o_socket_t *sock)
{
    SSL_CTX *ctx = rm_mesh_tls_client_ctx(expected, RM_MESH_PROTO_TCP);
    return ctx != NULL ? create(ctx, sock, expected) : NULL;
}

rm_mesh_relay_t *
rm_mesh_relay_server(h2o_socket_t *sock)
{
    SSL_CTX *ctx = rm_mesh_tls_server_ctx();
    return ctx != NULL ? create(ctx, sock, NULL) : NULL;
}

void
rm_mesh_relay_destroy(rm_mesh_relay_t *t)
{
    if (t == NULL)
        return;
    SSL_free(t->ssl);
    h2o_buffer_dispose(&t->pending);
    h2o_buffer_dispose(&t->inflight);
    free(t);
}

static void
ssl_error(char *err, size_t errlen, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    char buf[256];
    if (e != 0)
        ERR_error_string_n(e, buf, sizeof(buf));
    else
        snprintf(buf, sizeof(buf), "connection ended without close_notify");
    snprintf(err, errlen, "%s: %s", what, buf);
    ERR_clear_error();
}

rm_mesh_relay_status_t
rm_mesh_relay_handshake(rm_mesh_relay_t *t)
{
    ERR_clear_error();
    int r = SSL_do_handshake(t->ssl);
    if (r == 1)
        return RM_MESH_RELAY_DONE;
    if (SSL_get_error(t->ssl, r) == SSL_ERROR_WANT_READ)
        return RM_MESH_RELAY_WANT;
    if (t->hs.why[0] == '\0')
        ssl_error(t->hs.why, sizeof(t->hs.why), "TLS handshake");
    else
        ERR_clear_error();
    return RM_MESH_RELAY_ERROR;
}

rm_mesh_handshake_t *
rm_mesh_relay_handshake_state(rm_mesh_relay_t *t)
{
    return &t->hs;
}

int
rm_mesh_relay_alpn_ok(rm_mesh_relay_t *t)
{
    const unsigned char *p = NULL;
    unsigned len = 0;
    SSL_get0_alpn_selected(t->ssl, &p, &len);
    return p != NULL && h2o_memis(p, len, H2O_STRLIT(RM_MESH_ALPN_TCP));
}

rm_mesh_relay_status_t
rm_mesh_relay_read(rm_mesh_relay_t *t, h2o_buffer_t **plain, size_t max, char *err, size_t errlen)
{
    size_t appended = 0;
    ERR_clear_error();
    while (appended < max) {
        size_t want = max - appended < 16384 ? max - appended : 16384;
        h2o_iovec_t dst = h2o_buffer_reserve(plain, want);
        if (dst.base == NULL) {
            snprintf(err, errlen, "out of memory");
            return RM_MESH_RELAY_ERROR;
        }
        if (dst.len < want)
            want = dst.len;
        int n = SSL_read(t->ssl, dst.base, (int)want);
        if (n > 0) {
            (*plain)->size += (size_t)n;
            appended += (size_t)n;
            continue;
        }
        switch (SSL_get_error(t->ssl, n)) {
        case SSL_ERROR_WANT_READ:
            return appended != 0 ? RM_MESH_RELAY_DONE : RM_MESH_RELAY_WANT;
        case SSL_ERROR_ZERO_RETURN:
            return RM_MESH_RELAY_EOF;
        default:
            ssl_error(err, errlen, "TLS read");
            return RM_MESH_RELAY_ERROR;
        }
    }
    return RM_MESH_RELAY_DONE;
}

int
rm_mesh_relay_write(rm_mesh_relay_t *t, const void *data, size_t len)
{
    if (t->shut_sent)
        return -1;
    if (len == 0)
        return 0;
    ERR_clear_error();
    size_t written = 0;
    if (SSL_write_ex(t->ssl, data, len, &written) != 1 || written != len) {
        ERR_clear_error();
        return -1;
    }
    return 0;
}

void
rm_mesh_relay_close_notify(rm_mesh_relay_t *t)
{
    if (t->shut_sent)
        return;
    t->shut_sent = 1;
    ERR_clear_error();
    SSL_shutdown(t->ssl); /* 0: sent, the peer's not received yet; reading goes on (TLS 1.3 half-close) */
    ERR_clear_error();
}

int
rm_mesh_relay_has_output(rm_mesh_relay_t *t)
{
    return t->writing || t->pending->size != 0;
}

h2o_iovec_t
rm_mesh_relay_take_output(rm_mesh_relay_t *t)
{
    if (t->writing || t->pending->size == 0)
        return h2o_iovec_init(NULL, 0);
    h2o_buffer_t *swap = t->inflight;
    t->inflight = t->pending;
    t->pending = swap;
    t->writing = 1;
    return h2o_iovec_init(t->inflight->bytes, t->inflight->size);
}

void
rm_mesh_relay_output_done(rm_mesh_relay_t *t)
{
    h2o_buffer_consume(&t->inflight, t->inflight->size);
    t->writing = 0;
}
