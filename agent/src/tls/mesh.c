/*
 * Mesh mTLS contexts, handshake callbacks, client session cache and counters (see mesh.h).
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/err.h>
#include <openssl/x509v3.h>
#include <h2o/socket.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "obs/stats.h"
#include "tls/identity.h"
#include "tls/mesh.h"

/* what a client context checks and keys its sessions by (SSL_CTX ex_data) */
typedef struct st_client_info_t {
    char expected[RM_MESH_MAX_ID];
    char serial[80];
} client_info_t;

typedef struct st_client_ctx_t {
    char expected[RM_MESH_MAX_ID];
    rm_mesh_proto_t proto;
    SSL_CTX *ctx;
} client_ctx_t;

typedef struct st_session_t {
    char key[RM_MESH_MAX_ID + 200];
    SSL_SESSION *sess;
} session_t;

static pthread_mutex_t mutex = PTHREAD_MUTEX_INITIALIZER;
/* the identity the contexts below were built with (own reference) */
static rm_identity_t *built_for;
static SSL_CTX *server_ctx;
static client_ctx_t client_ctxs[RM_MESH_MAX_CLIENT_CTX];
static size_t num_client_ctxs;
/* direct-mapped by key hash: a new ticket replaces what is in its slot */
static session_t sessions[RM_MESH_MAX_SESSIONS];
static int client_info_index = -1;
/* the rm_mesh_handshake_t of an SSL driven over memory BIOs (rm_mesh_handshake_attach) */
static int handshake_index = -1;

static uint64_t handshakes[2][RM_MESH_NUM_RESULTS];
static uint64_t plaintext_refused;
static uint64_t connections[2][2];
static uint64_t tcp_denied;

/* handshakes in progress on this thread (a worker): the callbacks find theirs by socket */
static __thread h2o_linklist_t registry;

static const char *const result_names[RM_MESH_NUM_RESULTS] = {"success",   "resumed",     "peer_identity_mismatch",
                                                              "untrusted", "no_identity", "error"};
static const char *const direction_names[2] = {"outbound", "inbound"};

const char *
rm_mesh_result_name(rm_mesh_result_t result)
{
    return (unsigned)result < RM_MESH_NUM_RESULTS ? result_names[result] : "error";
}

void
rm_mesh_count_handshake(rm_mesh_direction_t dir, rm_mesh_result_t result)
{
    __atomic_add_fetch(&handshakes[dir != RM_MESH_OUTBOUND][(unsigned)result < RM_MESH_NUM_RESULTS ? result : RM_MESH_ERROR], 1,
                       __ATOMIC_RELAXED);
}

void
rm_mesh_count_plaintext_refused(void)
{
    __atomic_add_fetch(&plaintext_refused, 1, __ATOMIC_RELAXED);
}

void
rm_mesh_count_connection(rm_mesh_direction_t dir, int tls)
{
    __atomic_add_fetch(&connections[dir != RM_MESH_OUTBOUND][tls != 0], 1, __ATOMIC_RELAXED);
}

void
rm_mesh_count_tcp_denied(void)
{
    __atomic_add_fetch(&tcp_denied, 1, __ATOMIC_RELAXED);
}

/*
 * Handshake registry
 */

/* Unlinks `hs` from the registry if it was linked, and starts it over for `sock`. */
static void
reset_handshake(rm_mesh_handshake_t *hs, h2o_socket_t *sock, const char *expected)
{
    rm_mesh_handshake_end(hs);
    hs->sock = sock;
    hs->expected = expected;
    hs->peer_id[0] = '\0';
    hs->failure = RM_MESH_SUCCESS;
    hs->why[0] = '\0';
    hs->resumed = 0;
}

void
rm_mesh_handshake_start(rm_mesh_handshake_t *hs, h2o_socket_t *sock, const char *expected)
{
    if (registry.next == NULL)
        h2o_linklist_init_anchor(&registry);
    reset_handshake(hs, sock, expected);
    h2o_linklist_insert(&registry, &hs->_link);
}

void
rm_mesh_handshake_end(rm_mesh_handshake_t *hs)
{
    if (hs->_link.next != NULL && h2o_linklist_is_linked(&hs->_link))
        h2o_linklist_unlink(&hs->_link);
}

void
rm_mesh_handshake_attach(rm_mesh_handshake_t *hs, SSL *ssl, h2o_socket_t *sock, const char *expected)
{
    reset_handshake(hs, sock, expected);
    SSL_set_ex_data(ssl, handshake_index, hs);
}

static rm_mesh_handshake_t *
attached_handshake(SSL *ssl)
{
    return ssl != NULL && handshake_index >= 0 ? SSL_get_ex_data(ssl, handshake_index) : NULL;
}

/* h2o's TLS sockets read and write through a BIO whose data is the h2o_socket_t; an SSL over memory BIOs
 * names its socket in its attached handshake (its BIO's data is no socket) */
static h2o_socket_t *
socket_of(SSL *ssl)
{
    rm_mesh_handshake_t *hs = attached_handshake(ssl);
    if (hs != NULL)
        return hs->sock;
    BIO *bio = ssl != NULL ? SSL_get_rbio(ssl) : NULL;
    return bio != NULL ? BIO_get_data(bio) : NULL;
}

static rm_mesh_handshake_t *
find_handshake(SSL *ssl)
{
    rm_mesh_handshake_t *attached = attached_handshake(ssl);
    if (attached != NULL)
        return attached;
    h2o_socket_t *sock = socket_of(ssl);
    if (sock == NULL || registry.next == NULL)
        return NULL;
    for (h2o_linklist_t *n = registry.next; n != &registry; n = n->next) {
        rm_mesh_handshake_t *hs = H2O_STRUCT_FROM_MEMBER(rm_mesh_handshake_t, _link, n);
        if (hs->sock == sock)
            return hs;
    }
    return NULL;
}

/* The certificate's spiffe:// URI SAN into out[RM_MESH_MAX_ID]; 0, or -1 if it has none (or too long, or several). */
static int
spiffe_id_of(X509 *cert, char *out)
{
    GENERAL_NAMES *names = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
    int found = 0;
    for (int i = 0; names != NULL && i != sk_GENERAL_NAME_num(names); ++i) {
        const GENERAL_NAME *gn = sk_GENERAL_NAME_value(names, i);
        if (gn->type != GEN_URI)
            continue;
        const unsigned char *s = ASN1_STRING_get0_data(gn->d.uniformResourceIdentifier);
        int len = ASN1_STRING_length(gn->d.uniformResourceIdentifier);
        if (len < 10 || memcmp(s, "spiffe://", 9) != 0)
            continue;
        if (found || len >= RM_MESH_MAX_ID || memchr(s, '\0', (size_t)len) != NULL) {
            found = -1; /* several SPIFFE IDs, or an unusable one: no identity */
            break;
        }
        memcpy(out, s, (size_t)len);
        out[len] = '\0';
        found = 1;
    }
    GENERAL_NAMES_free(names);
    if (found != 1) {
        out[0] = '\0';
        return -1;
    }
    return 0;
}

static int
verify_cb(int ok, X509_STORE_CTX *store)
{
    SSL *ssl = X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx());
    rm_mesh_handshake_t *hs = find_handshake(ssl);
    if (hs == NULL)
        return 0; /* not a handshake we started: refuse */
    int depth = X509_STORE_CTX_get_error_depth(store);
    if (!ok) {
        if (hs->failure == RM_MESH_SUCCESS) {
            hs->failure = RM_MESH_UNTRUSTED;
            char id[RM_MESH_MAX_ID] = "";
            X509 *cert = X509_STORE_CTX_get_current_cert(store);
            if (cert != NULL)
                spiffe_id_of(cert, id);
            snprintf(hs->why, sizeof(hs->why), "peer certificate%s%s not trusted: %s", id[0] != '\0' ? " of " : "", id,
                     X509_verify_cert_error_string(X509_STORE_CTX_get_error(store)));
        }
        return 0;
    }
    if (depth != 0)
        return 1;
    X509 *cert = X509_STORE_CTX_get_current_cert(store);
    if (cert == NULL || spiffe_id_of(cert, hs->peer_id) != 0) {
        hs->failure = RM_MESH_ERROR;
        snprintf(hs->why, sizeof(hs->why), "peer certificate has no (single) spiffe:// URI SAN");
        return 0;
    }
    if (hs->expected != NULL && strcmp(hs->peer_id, hs->expected) != 0) {
        hs->failure = RM_MESH_PEER_IDENTITY_MISMATCH;
        snprintf(hs->why, sizeof(hs->why), "peer identity %s is not the expected %s", hs->peer_id, hs->expected);
        return 0;
    }
    return 1;
}

/* the cache key of a client session: endpoint address, expected SPIFFE ID, our certificate's serial */
static int
session_key(SSL *ssl, char *key, size_t keylen)
{
    h2o_socket_t *sock = socket_of(ssl);
    const client_info_t *info = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), client_info_index);
    struct sockaddr_storage ss;
    if (sock == NULL || info == NULL || h2o_socket_getpeername(sock, (struct sockaddr *)&ss) == 0)
        return -1;
    char addr[80];
    rm_format_sockaddr((struct sockaddr *)&ss, addr, sizeof(addr));
    snprintf(key, keylen, "%s|%s|%s", addr, info->expected, info->serial);
    return 0;
}

static session_t *
session_slot(const char *key)
{
    return &sessions[rm_fnv1a(RM_FNV1A_INIT, key, strlen(key)) % RM_MESH_MAX_SESSIONS];
}

static int
new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    char key[sizeof(sessions[0].key)];
    if (!SSL_SESSION_is_resumable(sess) || session_key(ssl, key, sizeof(key)) != 0)
        return 0;
    const client_info_t *info = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), client_info_index);
    pthread_mutex_lock(&mutex);
    if (built_for == NULL || strcmp(info->serial, built_for->serial) != 0) {
        /* a context of an earlier certificate: its key could never be looked up again (flush_locked) */
        pthread_mutex_unlock(&mutex);
        return 0;
    }
    session_t *slot = session_slot(key);
    if (slot->sess != NULL)
        SSL_SESSION_free(slot->sess);
    snprintf(slot->key, sizeof(slot->key), "%s", key);
    slot->sess = sess;
    pthread_mutex_unlock(&mutex);
    return 1; /* the cache keeps the reference */
}

static void
info_cb(const SSL *cssl, int where, int ret)
{
    SSL *ssl = (SSL *)cssl;
    if ((where & SSL_CB_HANDSHAKE_START) != 0 && !SSL_is_server(ssl) && SSL_get_session(ssl) == NULL) {
        /* before the ClientHello is made: offer the ticket kept for this endpoint and identity */
        char key[sizeof(sessions[0].key)];
        if (session_key(ssl, key, sizeof(key)) == 0) {
            pthread_mutex_lock(&mutex);
            session_t *slot = session_slot(key);
            if (slot->sess != NULL && strcmp(slot->key, key) == 0)
                SSL_set_session(ssl, slot->sess);
            pthread_mutex_unlock(&mutex);
        }
    }
    if ((where & SSL_CB_HANDSHAKE_DONE) != 0) {
        rm_mesh_handshake_t *hs = find_handshake(ssl);
        if (hs == NULL)
            return;
        hs->resumed = SSL_session_reused(ssl) != 0;
        if (hs->peer_id[0] == '\0') {
            /* a resumed session: no verification ran; the identity is the session's (verified when it was made) */
            X509 *peer = SSL_get0_peer_certificate(ssl);
            if (peer != NULL)
                spiffe_id_of(peer, hs->peer_id);
        }
    }
}

rm_mesh_result_t
rm_mesh_handshake_result(rm_mesh_handshake_t *hs, rm_mesh_direction_t dir, const char *err)
{
    rm_mesh_result_t result;
    if (err != NULL) {
        result = hs->failure != RM_MESH_SUCCESS ? hs->failure : RM_MESH_ERROR;
        if (hs->why[0] == '\0')
            snprintf(hs->why, sizeof(hs->why), "%s", err);
    } else if (hs->peer_id[0] == '\0' || (hs->expected != NULL && strcmp(hs->peer_id, hs->expected) != 0)) {
        result = hs->peer_id[0] == '\0' ? RM_MESH_ERROR : RM_MESH_PEER_IDENTITY_MISMATCH;
        snprintf(hs->why, sizeof(hs->why), "peer identity %s is not the expected %s",
                 hs->peer_id[0] != '\0' ? hs->peer_id : "(none)", hs->expected != NULL ? hs->expected : "(any)");
    } else {
        result = hs->resumed ? RM_MESH_RESUMED : RM_MESH_SUCCESS;
    }
    rm_mesh_count_handshake(dir, result);
    return result;
}

int
rm_mesh_expected_id(const char *configured, char *out, size_t outlen)
{
    if (configured[0] != '/') {
        if (strlen(configured) >= outlen)
            return -1;
        strcpy(out, configured);
        return 0;
    }
    rm_identity_t *id = rm_identity_current();
    if (id == NULL)
        return -1;
    const char *td = id->spiffe_id + 9, *end = strchr(td, '/');
    size_t tdlen = end != NULL ? (size_t)(end - td) : strlen(td);
    int n = snprintf(out, outlen, "spiffe://%.*s%s", (int)tdlen, td, configured);
    rm_identity_unref(id);
    return n > 0 && (size_t)n < outlen ? 0 : -1;
}

int
rm_mesh_alpn_proto(h2o_iovec_t alpn)
{
    if (h2o_memis(alpn.base, alpn.len, H2O_STRLIT(RM_MESH_ALPN_H2)))
        return RM_MESH_PROTO_H2;
    if (h2o_memis(alpn.base, alpn.len, H2O_STRLIT(RM_MESH_ALPN_HTTP1)))
        return RM_MESH_PROTO_HTTP1;
    if (h2o_memis(alpn.base, alpn.len, H2O_STRLIT(RM_MESH_ALPN_TCP)))
        return RM_MESH_PROTO_TCP;
    return -1;
}

/*
 * Contexts
 */

static void
client_info_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    free(ptr);
}

static SSL_CTX *
base_ctx(const SSL_METHOD *method, const rm_identity_t *id)
{
    SSL_CTX *ctx = SSL_CTX_new(method);
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS); /* idle pooled hops give their record buffers back */
    char err[256];
    if (rm_identity_configure_ssl_ctx(ctx, id, err, sizeof(err)) != 0) {
        rm_log_error("mesh-tls", "cannot use the identity %s: %s", id->spiffe_id, err);
        SSL_CTX_free(ctx);
        return NULL;
    }
    SSL_CTX_set_info_callback(ctx, info_cb);
    /* no close_notify: h2o would send ours and then wait to read the peer's, which a peer that is gone or
     * unreachable never sends, keeping the socket (past the worker's loop at shutdown). The hop's own
     * framing (HTTP/2 GOAWAY, HTTP/1.1 message lengths) ends its exchanges, as over TCP. */
    SSL_CTX_set_quiet_shutdown(ctx, 1);
    return ctx;
}

static SSL_CTX *
make_server_ctx(const rm_identity_t *id)
{
    SSL_CTX *ctx = base_ctx(TLS_server_method(), id);
    if (ctx == NULL)
        return NULL;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, verify_cb);
    static const unsigned char sid_ctx[] = "remora-mesh";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof(sid_ctx) - 1);
    SSL_CTX_set_num_tickets(ctx, 1);
    SSL_CTX_set_timeout(ctx, RM_MESH_TICKET_LIFETIME_S);
    /* one context for every mesh id (one ticket key, one rotation); the listener hands each id's hellos to its own
     * terminator (net/listener.c), which checks the id it got */
    static const h2o_iovec_t alpn[] = {
        {H2O_STRLIT(RM_MESH_ALPN_H2)}, {H2O_STRLIT(RM_MESH_ALPN_HTTP1)}, {H2O_STRLIT(RM_MESH_ALPN_TCP)}, {NULL, 0}};
    h2o_ssl_register_alpn_protocols(ctx, alpn);
    return ctx;
}

static SSL_CTX *
make_client_ctx(const rm_identity_t *id, const char *expected, rm_mesh_proto_t proto)
{
    SSL_CTX *ctx = base_ctx(TLS_client_method(), id);
    if (ctx == NULL)
        return NULL;
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, verify_cb);
    static const unsigned char alpn_h2[] = "\x0e" RM_MESH_ALPN_H2;
    static const unsigned char alpn_h1[] = "\x11" RM_MESH_ALPN_HTTP1;
    static const unsigned char alpn_tcp[] = "\x0f" RM_MESH_ALPN_TCP;
    _Static_assert(sizeof(RM_MESH_ALPN_H2) - 1 == 0x0e && sizeof(RM_MESH_ALPN_HTTP1) - 1 == 0x11 &&
                       sizeof(RM_MESH_ALPN_TCP) - 1 == 0x0f,
                   "ALPN length prefixes");
    if (proto == RM_MESH_PROTO_H2)
        SSL_CTX_set_alpn_protos(ctx, alpn_h2, sizeof(alpn_h2) - 1);
    else if (proto == RM_MESH_PROTO_TCP)
        SSL_CTX_set_alpn_protos(ctx, alpn_tcp, sizeof(alpn_tcp) - 1);
    else
        SSL_CTX_set_alpn_protos(ctx, alpn_h1, sizeof(alpn_h1) - 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, new_session_cb);
    client_info_t *info = rm_calloc(1, sizeof(*info));
    snprintf(info->expected, sizeof(info->expected), "%s", expected);
    snprintf(info->serial, sizeof(info->serial), "%s", id->serial);
    SSL_CTX_set_ex_data(ctx, client_info_index, info);
    return ctx;
}

static void
flush_locked(void)
{
    if (server_ctx != NULL)
        SSL_CTX_free(server_ctx);
    server_ctx = NULL;
    for (size_t i = 0; i != num_client_ctxs; ++i)
        SSL_CTX_free(client_ctxs[i].ctx);
    num_client_ctxs = 0;
    /* the sessions' keys carry the old certificate's serial: none would be offered again, each would hold its
     * peer's certificates until a colliding key replaced it (one session per endpoint and rotation) */
    for (size_t i = 0; i != RM_MESH_MAX_SESSIONS; ++i) {
        SSL_SESSION_free(sessions[i].sess);
        sessions[i].sess = NULL;
    }
}

/* Under the mutex: the identity in service (borrowed, valid until unlock), the contexts rebuilt if it changed. */
static rm_identity_t *
identity_locked(void)
{
    rm_identity_t *id = rm_identity_current();
    if (id != built_for) {
        flush_locked();
        rm_identity_unref(built_for);
        built_for = id; /* takes the reference */
        if (id != NULL)
            rm_log_info("mesh-tls", "mesh mTLS contexts use %s (serial %s)", id->spiffe_id, id->serial);
    } else {
        rm_identity_unref(id);
    }
    return built_for;
}

SSL_CTX *
rm_mesh_tls_server_ctx(void)
{
    pthread_mutex_lock(&mutex);
    rm_identity_t *id = identity_locked();
    SSL_CTX *ctx = NULL;
    if (id != NULL) {
        if (server_ctx == NULL)
            server_ctx = make_server_ctx(id);
        if ((ctx = server_ctx) != NULL)
            SSL_CTX_up_ref(ctx);
    }
    pthread_mutex_unlock(&mutex);
    return ctx;
}

SSL_CTX *
rm_mesh_tls_client_ctx(const char *expected, rm_mesh_proto_t proto)
{
    if (expected == NULL || strlen(expected) >= RM_MESH_MAX_ID)
        return NULL;
    pthread_mutex_lock(&mutex);
    rm_identity_t *id = identity_locked();
    SSL_CTX *ctx = NULL;
    if (id != NULL) {
        for (size_t i = 0; i != num_client_ctxs; ++i) {
            if (client_ctxs[i].proto == proto && strcmp(client_ctxs[i].expected, expected) == 0) {
                ctx = client_ctxs[i].ctx;
                break;
            }
        }
        if (ctx == NULL && (ctx = make_client_ctx(id, expected, proto)) != NULL) {
            if (num_client_ctxs == RM_MESH_MAX_CLIENT_CTX) {
                for (size_t i = 0; i != num_client_ctxs; ++i)
                    SSL_CTX_free(client_ctxs[i].ctx);
                num_client_ctxs = 0;
            }
            client_ctx_t *e = &client_ctxs[num_client_ctxs++];
            snprintf(e->expected, sizeof(e->expected), "%s", expected);
            e->proto = proto;
            e->ctx = ctx;
        }
        if (ctx != NULL)
            SSL_CTX_up_ref(ctx);
    }
    pthread_mutex_unlock(&mutex);
    return ctx;
}

/*
 * Metrics
 */

static char *
render_metrics(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);
    fputs("# HELP remora_mesh_tls_handshakes_total Mesh mTLS handshakes between agents, by direction and result.\n"
          "# TYPE remora_mesh_tls_handshakes_total counter\n",
          fp);
    for (int d = 0; d != 2; ++d)
        for (int r = 0; r != RM_MESH_NUM_RESULTS; ++r)
            fprintf(fp, "remora_mesh_tls_handshakes_total{direction=\"%s\",result=\"%s\"} %" PRIu64 "\n", direction_names[d],
                    result_names[r], __atomic_load_n(&handshakes[d][r], __ATOMIC_RELAXED));
    fprintf(fp,
            "# HELP remora_mesh_tls_plaintext_refused_total Plaintext connections to a Service this node serves refused "
            "under MeshTLS STRICT.\n# TYPE remora_mesh_tls_plaintext_refused_total counter\n"
            "remora_mesh_tls_plaintext_refused_total %" PRIu64 "\n",
            __atomic_load_n(&plaintext_refused, __ATOMIC_RELAXED));
    fputs("# HELP remora_mesh_tls_connections_total Connections on agent-to-agent hops, by direction and whether they are "
          "mesh mTLS.\n# TYPE remora_mesh_tls_connections_total counter\n",
          fp);
    for (int d = 0; d != 2; ++d)
        for (int t = 0; t != 2; ++t)
            fprintf(fp, "remora_mesh_tls_connections_total{direction=\"%s\",tls=\"%s\"} %" PRIu64 "\n", direction_names[d],
                    t ? "true" : "false", __atomic_load_n(&connections[d][t], __ATOMIC_RELAXED));
    size_t kept = 0;
    pthread_mutex_lock(&mutex);
    for (size_t i = 0; i != RM_MESH_MAX_SESSIONS; ++i)
        kept += sessions[i].sess != NULL;
    pthread_mutex_unlock(&mutex);
    fprintf(fp,
            "# HELP remora_mesh_tls_client_sessions TLS sessions kept to resume outbound mesh mTLS hops (at most %d).\n"
            "# TYPE remora_mesh_tls_client_sessions gauge\nremora_mesh_tls_client_sessions %zu\n",
            RM_MESH_MAX_SESSIONS, kept);
    fprintf(fp,
            "# HELP remora_tcp_authz_denied_total Opaque TCP connections refused by an authorization policy.\n"
            "# TYPE remora_tcp_authz_denied_total counter\nremora_tcp_authz_denied_total %" PRIu64 "\n",
            __atomic_load_n(&tcp_denied, __ATOMIC_RELAXED));
    fclose(fp);
    return text;
}

void
rm_mesh_tls_init(void)
{
    if (client_info_index >= 0)
        return;
    client_info_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, client_info_free);
    handshake_index = SSL_get_ex_new_index(0, NULL, NULL, NULL, NULL);
    rm_stats_register_renderer(render_metrics);
}
