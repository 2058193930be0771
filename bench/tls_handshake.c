/*
 * TLS handshakes per second against one server (docs/BENCHMARKS.md, "Mesh mTLS"): connect, handshake
 * (TLS 1.3, optional client certificate and ALPN), close; again, for a bounded time. With --resume,
 * every handshake after the first offers the session ticket the previous one received, so the
 * server does a resumption (PSK) handshake instead of a full one when it accepts it.
 *
 *   rm-tls-handshake --connect 127.0.0.1:15006 [--cert F --key F] [--ca F] [--alpn a,b] [--sni NAME]
 *                    [--resume] [--duration S]
 *
 * Prints one line: "handshakes N seconds S rate R/s resumed K failed F". One thread, blocking sockets:
 * run several processes for more load. Bounded: at most --duration seconds (default 5, at most 600).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

static SSL_SESSION *last_session;

static int
on_new_session(SSL *ssl, SSL_SESSION *sess)
{
    (void)ssl;
    if (last_session != NULL)
        SSL_SESSION_free(last_session);
    last_session = sess;
    return 1; /* we keep the reference */
}

static double
now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[128];
    const char *colon = strrchr(s, ':');
    if (colon == NULL || (size_t)(colon - s) >= sizeof(host))
        return -1;
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    int port = atoi(colon + 1);
    if (port <= 0 || port > 65535)
        return -1;
    memset(ss, 0, sizeof(*ss));
    struct sockaddr_in *in4 = (struct sockaddr_in *)ss;
    if (inet_pton(AF_INET, host, &in4->sin_addr) == 1) {
        in4->sin_family = AF_INET;
        in4->sin_port = htons((uint16_t)port);
        *len = sizeof(*in4);
        return 0;
    }
    return -1;
}

/* "a,b" -> the wire form of an ALPN list */
static size_t
alpn_wire(const char *list, unsigned char *out, size_t cap)
{
    size_t n = 0;
    while (*list != '\0') {
        const char *end = strchr(list, ',');
        size_t len = end != NULL ? (size_t)(end - list) : strlen(list);
        if (len == 0 || len > 255 || n + 1 + len > cap)
            return 0;
        out[n++] = (unsigned char)len;
        memcpy(out + n, list, len);
        n += len;
        list += len + (end != NULL);
    }
    return n;
}

/* Waits briefly for the server's NewSessionTicket (TLS 1.3 sends it after the handshake). */
static void
read_tickets(SSL *ssl, int fd)
{
    double until = now_s() + 0.05;
    char buf[256];
    while (last_session == NULL && now_s() < until) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 10) <= 0)
            continue;
        int r = SSL_read(ssl, buf, sizeof(buf));
        if (r <= 0) {
            int e = SSL_get_error(ssl, r);
            if (e != SSL_ERROR_WANT_READ)
                return;
        }
    }
}

static void
usage(void)
{
    fprintf(stderr, "usage: rm-tls-handshake --connect IP:PORT [--cert F --key F] [--ca F] [--alpn a,b] [--sni NAME] "
                    "[--resume] [--duration S]\n");
    exit(2);
}

int
main(int argc, char **argv)
{
    const char *connect_to = NULL, *cert = NULL, *key = NULL, *ca = NULL, *alpn = NULL, *sni = NULL;
    int resume = 0;
    double duration = 5;
    for (int i = 1; i < argc; ++i) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "--resume") == 0) {
            resume = 1;
            continue;
        }
        if (v == NULL)
            usage();
        ++i;
        if (strcmp(a, "--connect") == 0)
            connect_to = v;
        else if (strcmp(a, "--cert") == 0)
            cert = v;
        else if (strcmp(a, "--key") == 0)
            key = v;
        else if (strcmp(a, "--ca") == 0)
            ca = v;
        else if (strcmp(a, "--alpn") == 0)
            alpn = v;
        else if (strcmp(a, "--sni") == 0)
            sni = v;
        else if (strcmp(a, "--duration") == 0)
            duration = atof(v);
        else
            usage();
    }
    struct sockaddr_storage addr;
    socklen_t addrlen;
    if (connect_to == NULL || parse_addr(connect_to, &addr, &addrlen) != 0 || duration <= 0 || duration > 600)
        usage();

    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    if (cert != NULL && (SSL_CTX_use_certificate_chain_file(ctx, cert) != 1 ||
                         SSL_CTX_use_PrivateKey_file(ctx, key != NULL ? key : cert, SSL_FILETYPE_PEM) != 1)) {
        fprintf(stderr, "rm-tls-handshake: cannot load %s / %s\n", cert, key != NULL ? key : cert);
        return 1;
    }
    if (ca != NULL) {
        if (SSL_CTX_load_verify_locations(ctx, ca, NULL) != 1) {
            fprintf(stderr, "rm-tls-handshake: cannot load %s\n", ca);
            return 1;
        }
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL); /* the chain only: mesh certificates carry no DNS name */
    }
    unsigned char wire[512];
    size_t wire_len = alpn != NULL ? alpn_wire(alpn, wire, sizeof(wire)) : 0;
    if (alpn != NULL && (wire_len == 0 || SSL_CTX_set_alpn_protos(ctx, wire, (unsigned)wire_len) != 0)) {
        fprintf(stderr, "rm-tls-handshake: bad --alpn %s\n", alpn);
        return 2;
    }
    if (resume) {
        SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
        SSL_CTX_sess_set_new_cb(ctx, on_new_session);
    }

    unsigned long done = 0, resumed = 0, failed = 0;
    double start = now_s(), end = start + duration;
    char first_error[256] = "";
    while (now_s() < end) {
        int fd = socket(addr.ss_family, SOCK_STREAM, 0);
        int on = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
        if (fd < 0 || connect(fd, (struct sockaddr *)&addr, addrlen) != 0) {
            if (first_error[0] == '\0')
                snprintf(first_error, sizeof(first_error), "connect: %s", strerror(errno));
            ++failed;
            if (fd >= 0)
                close(fd);
            usleep(1000);
            continue;
        }
        SSL *ssl = SSL_new(ctx);
        SSL_set_fd(ssl, fd);
        if (sni != NULL)
            SSL_set_tlsext_host_name(ssl, sni);
        SSL_SESSION *offer = NULL;
        if (resume && last_session != NULL) {
            offer = last_session;
            last_session = NULL;
            SSL_set_session(ssl, offer);
        }
        if (SSL_connect(ssl) == 1) {
            ++done;
            if (SSL_session_reused(ssl))
                ++resumed;
            if (resume)
                read_tickets(ssl, fd);
            SSL_shutdown(ssl);
        } else {
            ++failed;
            if (first_error[0] == '\0')
                ERR_error_string_n(ERR_get_error(), first_error, sizeof(first_error));
        }
        if (offer != NULL)
            SSL_SESSION_free(offer);
        SSL_free(ssl);
        close(fd);
        ERR_clear_error();
    }
    double secs = now_s() - start;
    printf("handshakes %lu seconds %.2f rate %.0f/s resumed %lu failed %lu\n", done, secs, (double)done / secs, resumed, failed);
    if (failed != 0 && first_error[0] != '\0')
        fprintf(stderr, "rm-tls-handshake: first failure: %s\n", first_error);
    if (last_session != NULL)
        SSL_SESSION_free(last_session);
    SSL_CTX_free(ctx);
    return done != 0 ? 0 : 1;
}
