#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <h2o/socket.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "tls/tls.h"

void
rm_tls_init(void)
{
    /* no OpenSSL clean-up at exit: gRPC's threads (control module, OTLP) may still be ending then, and a thread
     * that ends after the clean-up deleted OpenSSL's thread key leaks its error state; main() releases its own */
    OPENSSL_init_ssl(OPENSSL_INIT_NO_ATEXIT, NULL);
}

static void
openssl_error(char *err, size_t errlen, const char *what, const char *file)
{
    char buf[256];
    unsigned long e = ERR_get_error();
    ERR_error_string_n(e, buf, sizeof(buf));
    snprintf(err, errlen, "%s %s: %s", what, file != NULL ? file : "", e != 0 ? buf : "unknown error");
    ERR_clear_error();
}

static SSL_CTX *
create_server_ctx(const rm_config_listener_t *l, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* an idle connection gives its record buffers back (about 9 KiB per connection; docs/hardening.md) */
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (SSL_CTX_use_certificate_chain_file(ctx, l->tls_cert_file) != 1) {
        openssl_error(err, errlen, "listener certificate", l->tls_cert_file);
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey_file(ctx, l->tls_key_file, SSL_FILETYPE_PEM) != 1) {
        openssl_error(err, errlen, "listener key", l->tls_key_file);
        goto fail;
    }
    if (SSL_CTX_check_private_key(ctx) != 1) {
        openssl_error(err, errlen, "listener key does not match certificate", l->tls_key_file);
        goto fail;
    }
    static const h2o_iovec_t alpn[] = {{H2O_STRLIT("h2")}, {H2O_STRLIT("http/1.1")}, {NULL, 0}};
    static const h2o_iovec_t alpn_h2[] = {{H2O_STRLIT("h2")}, {NULL, 0}}; /* `protocol: h2` listeners */
    h2o_ssl_register_alpn_protocols(ctx, l->h2_only ? alpn_h2 : alpn);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

static SSL_CTX *
create_client_ctx(const rm_config_cluster_t *c, char *err, size_t errlen)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    if (c->tls_ca_file != NULL) {
        if (SSL_CTX_load_verify_locations(ctx, c->tls_ca_file, NULL) != 1) {
            openssl_error(err, errlen, "cluster CA", c->tls_ca_file);
            goto fail;
        }
    } else {
        SSL_CTX_set_default_verify_paths(ctx);
    }
    if (c->tls_cert_file != NULL) {
        if (SSL_CTX_use_certificate_chain_file(ctx, c->tls_cert_file) != 1) {
            openssl_error(err, errlen, "cluster client certificate", c->tls_cert_file);
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(ctx, c->tls_key_file, SSL_FILETYPE_PEM) != 1) {
            openssl_error(err, errlen, "cluster client key", c->tls_key_file);
            goto fail;
        }
    }
    /* h2o skips the hostname check under TLS 1.3: verify the peer ourselves, on the context's
     * parameters, which every connection of this cluster inherits */
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    const char *name = c->tls_server_name;
    if (name == NULL && c->num_endpoints != 0)
        name = c->endpoints[0].host;
    if (name != NULL) {
        X509_VERIFY_PARAM *param = SSL_CTX_get0_param(ctx);
        unsigned char bin[16];
        if (inet_pton(AF_INET, name, bin) == 1 || inet_pton(AF_INET6, name, bin) == 1)
            X509_VERIFY_PARAM_set1_ip_asc(param, name);
        else
            X509_VERIFY_PARAM_set1_host(param, name, 0);
    }
    static const unsigned char alpn_h2[] = "\x02h2";
    static const unsigned char alpn_h1[] = "\x08http/1.1";
    static const unsigned char alpn_auto[] = "\x02h2\x08http/1.1";
    switch (c->protocol) {
    case RM_UPSTREAM_H2:
        SSL_CTX_set_alpn_protos(ctx, alpn_h2, sizeof(alpn_h2) - 1);
        break;
    case RM_UPSTREAM_HTTP1:
        SSL_CTX_set_alpn_protos(ctx, alpn_h1, sizeof(alpn_h1) - 1);
        break;
    case RM_UPSTREAM_AUTO:
        SSL_CTX_set_alpn_protos(ctx, alpn_auto, sizeof(alpn_auto) - 1);
        break;
    case RM_UPSTREAM_TCP:
        break; /* opaque bytes: no ALPN */
    }
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}

rm_tls_set_t *
rm_tls_set_create(const rm_config_t *config, char *err, size_t errlen)
{
    rm_tls_set_t *set = rm_calloc(1, sizeof(*set));
    set->_refcnt = 1;
    set->num_listeners = config->num_listeners;
    set->listeners = rm_calloc(config->num_listeners, sizeof(SSL_CTX *));
    set->num_clusters = config->num_clusters;
    set->clusters = rm_calloc(config->num_clusters, sizeof(SSL_CTX *));
    for (size_t i = 0; i != config->num_listeners; ++i) {
        const rm_config_listener_t *l = &config->listeners[i];
        if (l->tls_cert_file != NULL && (set->listeners[i] = create_server_ctx(l, err, errlen)) == NULL)
            goto fail;
    }
    for (size_t i = 0; i != config->num_clusters; ++i) {
        const rm_config_cluster_t *c = &config->clusters[i];
        if (c->tls && (set->clusters[i] = create_client_ctx(c, err, errlen)) == NULL)
            goto fail;
    }
    return set;
fail:
    rm_tls_set_unref(set);
    return NULL;
}

rm_tls_set_t *
rm_tls_set_ref(rm_tls_set_t *set)
{
    __atomic_add_fetch(&set->_refcnt, 1, __ATOMIC_RELAXED);
    return set;
}

void
rm_tls_set_unref(rm_tls_set_t *set)
{
    if (set == NULL || __atomic_sub_fetch(&set->_refcnt, 1, __ATOMIC_ACQ_REL) != 0)
        return;
    for (size_t i = 0; i != set->num_listeners; ++i)
        if (set->listeners[i] != NULL)
            SSL_CTX_free(set->listeners[i]);
    for (size_t i = 0; i != set->num_clusters; ++i)
        if (set->clusters[i] != NULL)
            SSL_CTX_free(set->clusters[i]);
    free(set->listeners);
    free(set->clusters);
    free(set);
}
