/*
 * TLS contexts built from a config snapshot: one SSL_CTX per TLS listener (server side, ALPN h2 and
 * http/1.1) and one per TLS cluster (client side, peer verified against the CA bundle and the
 * server name, ALPN per the cluster's protocol). Built on the main thread when a snapshot is
 * loaded, so a bad certificate rejects the snapshot; then immutable and shared by all workers
 * (OpenSSL contexts are thread-safe once configured). Reference counted like the snapshot.
 */
#ifndef remora__tls_h
#define remora__tls_h

#include <stddef.h>
#include <openssl/ssl.h>
#include "config/config.h"

typedef struct st_rm_tls_set_t {
    int _refcnt;
    size_t num_listeners;
    SSL_CTX **listeners; /* [i] for config->listeners[i], NULL if cleartext */
    size_t num_clusters;
    SSL_CTX **clusters; /* [i] for config->clusters[i], NULL if cleartext */
} rm_tls_set_t;

/** Builds every context of `config`. Returns NULL with a message naming the file and the error. Main thread. */
rm_tls_set_t *rm_tls_set_create(const rm_config_t *config, char *err, size_t errlen);
rm_tls_set_t *rm_tls_set_ref(rm_tls_set_t *set);
void rm_tls_set_unref(rm_tls_set_t *set);

/** Process-wide OpenSSL initialisation; main thread, once. */
void rm_tls_init(void);

#endif
