#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "net/resolver.h"
#include "obs/stats.h"
#include "tls/mesh.h"
#include "upstream/health.h"
#include "upstream/health_out.h"
#include "upstream/outlier.h"
#include "net/sockio.h"

/*
 * The pure state machine
 */

int
rm_health_sm_record(rm_health_sm_t *sm, rm_health_result_t result, uint32_t healthy_threshold, uint32_t unhealthy_threshold)
{
    rm_health_state_t before = sm->state;
    int ok = result == RM_HEALTH_SUCCESS;
    switch (sm->state) {
    case RM_HEALTH_PENDING:
        sm->state = ok ? RM_HEALTH_HEALTHY : RM_HEALTH_UNHEALTHY;
        break;
    case RM_HEALTH_HEALTHY:
        if (ok) {
            sm->failures = 0;
        } else if (result == RM_HEALTH_FAILURE || ++sm->failures >= unhealthy_threshold) {
            /* an explicit bad answer is believed at once (Envoy too); silence needs the threshold */
            sm->state = RM_HEALTH_UNHEALTHY;
        }
        break;
    case RM_HEALTH_UNHEALTHY:
        if (!ok)
            sm->successes = 0;
        else if (++sm->successes >= healthy_threshold)
            sm->state = RM_HEALTH_HEALTHY;
        break;
    }
    if (sm->state == before)
        return 0;
    sm->successes = 0;
    sm->failures = 0;
    return 1;
}

const char *
rm_health_result_name(rm_health_result_t result)
{
    static const char *const names[RM_HEALTH_NUM_RESULTS] = {"success", "failure", "timeout", "connect_failure"};
    return (unsigned)result < RM_HEALTH_NUM_RESULTS ? names[result] : "unknown";
}

const char *
rm_health_state_name(rm_health_state_t state)
{
    switch (state) {
    case RM_HEALTH_HEALTHY:
        return "healthy";
    case RM_HEALTH_UNHEALTHY:
        return "unhealthy";
    default:
        return "pending";
    }
}

/*
 * Checkers (main thread)
 */

typedef struct st_hc_cluster_t hc_cluster_t;

typedef enum en_wire_t { WIRE_H1, WIRE_H2 } wire_t;

typedef struct st_checker_t {
    hc_cluster_t *cluster;
    struct st_checker_t *next;
    /** "ip:port" as upstream/cluster.c names endpoints: the key of the agent-wide record */
    char name[80];
    struct sockaddr_storage addr;
    socklen_t addrlen;
    /** Host / :authority (owned) */
    char *authority;
    rm_outlier_host_t *oh;
    rm_health_sm_t sm;
    rm_health_result_t last;
    int checked;
    /** between checks: the next one; during a check: its timeout (heap: freed in its close callback) */
    uv_timer_t *timer;
    /* the check in flight (sock != NULL) */
    h2o_socket_t *sock;
    wire_t wire;
    void *h2;
    rm_health_out_t output;
    unsigned seen : 1;
    /* a check over mesh mTLS (docs/mesh-tls.md): the handshake and the SPIFFE ID the peer agent must present */
    rm_mesh_handshake_t mesh_hs;
    /** the endpoint's own identity when it is not the cluster's (rm_config_endpoint_t.peer_identity; owned), else NULL */
    char *mesh_identity;
    char mesh_expected[RM_MESH_MAX_ID];
} checker_t;

/* A host-name endpoint, resolved on the main loop. */
typedef struct st_hc_dns_t {
    hc_cluster_t *cluster;
    char *host;
    uint16_t port;
    rm_resolver_query_t *query;
    uv_timer_t *timer;
    struct sockaddr_storage *addrs;
    size_t num_addrs;
    unsigned seen : 1;
} hc_dns_t;

struct st_hc_cluster_t {
    char *name;
    hc_cluster_t *next;
    rm_config_health_check_t config; /* strings owned */
    rm_upstream_protocol_t protocol;
    SSL_CTX *ssl_ctx; /* own reference, NULL for cleartext */
    char *tls_server_name;
    /* the endpoints are agents expecting mesh mTLS: their configured identity (owned; NULL: plaintext checks) */
    char *mesh_identity;
    uint32_t dns_min_refresh_ms, dns_max_refresh_ms;
    /* the IP endpoints of the config ("host", port, address) */
    rm_config_endpoint_t *ips;
    size_t num_ips;
    hc_dns_t **dns;
    size_t num_dns;
    checker_t *checkers;
    rm_outlier_cluster_t *oc;
    uint64_t checks[RM_HEALTH_NUM_RESULTS];
    unsigned seen : 1;
};

static struct {
    /* MeshTLS DISABLE in the snapshot in service: checks to agents are plaintext */
    int mesh_disabled;
    uv_loop_t *loop;
    const rm_health_h2_codec_t *h2;
    rm_resolver_t *resolver;
    char **dns_servers;
    size_t num_dns_servers;
    hc_cluster_t *clusters;
    uint64_t rand;
} hc;

void
rm_health_register_h2(const rm_health_h2_codec_t *codec)
{
    hc.h2 = codec;
}

void
rm_health_init(uv_loop_t *loop)
{
    hc.loop = loop;
    hc.rand = uv_hrtime() | 1;
}

static uint64_t
next_random(void)
{
    hc.rand ^= hc.rand >> 12;
    hc.rand ^= hc.rand << 25;
    hc.rand ^= hc.rand >> 27;
    return hc.rand * 2685821657736338717ULL;
}

static void start_check(checker_t *ck);
static void on_timer(uv_timer_t *timer);

static char *
make_authority(const char *host, uint16_t port)
{
    char buf[300];
    snprintf(buf, sizeof(buf), strchr(host, ':') != NULL ? "[%s]:%u" : "%s:%u", host, (unsigned)port);
    return rm_strdup(buf);
}

/* Ends the exchange in flight (if any): the socket, the session, the buffers. */
static void
close_exchange(checker_t *ck)
{
    if (ck->sock != NULL) {
        rm_mesh_handshake_end(&ck->mesh_hs);
        rm_socket_close(ck->sock);
        ck->sock = NULL;
    }
    if (ck->h2 != NULL) {
        hc.h2->destroy(ck->h2);
        ck->h2 = NULL;
    }
    rm_health_out_dispose(&ck->output);
}

static void
schedule(checker_t *ck, uint64_t delay_ms)
{
    uv_timer_start(ck->timer, on_timer, delay_ms, 0);
}

static void
finish(checker_t *ck, rm_health_result_t result, const char *why)
{
    hc_cluster_t *cl = ck->cluster;
    close_exchange(ck);
    uv_timer_stop(ck->timer);
    ++cl->checks[result];
    ck->last = result;
    ck->checked = 1;
    rm_health_state_t before = ck->sm.state;
    if (rm_health_sm_record(&ck->sm, result, cl->config.healthy_threshold, cl->config.unhealthy_threshold)) {
        rm_outlier_set_health(ck->oh, ck->sm.state != RM_HEALTH_UNHEALTHY);
        if (ck->sm.state == RM_HEALTH_UNHEALTHY)
            rm_log_warn("health", "cluster %s: endpoint %s unhealthy (%s%s%s)", cl->name, ck->name, rm_health_result_name(result),
                        why != NULL ? ": " : "", why != NULL ? why : "");
        else if (before != RM_HEALTH_PENDING)
            rm_log_info("health", "cluster %s: endpoint %s healthy again", cl->name, ck->name);
    }
    /* +-10 % jitter keeps the checks of many endpoints (and agents) from marching in step */
    uint64_t interval = cl->config.interval_ms, span = interval / 5;
    uint64_t delay = interval - interval / 10 + (span != 0 ? next_random() % (span + 1) : 0);
    schedule(ck, delay);
}

/* Output (upstream/health_out.h): at most one write in flight (an h2o rule); frames produced meanwhile wait. */
static void flush(checker_t *ck);

static void
on_write(h2o_socket_t *sock, const char *err)
{
    checker_t *ck = sock->data;
    rm_health_out_written(&ck->output);
    if (err != NULL) {
        finish(ck, RM_HEALTH_CONNECT_FAILURE, err);
        return;
    }
    flush(ck);
}

static void
flush(checker_t *ck)
{
    if (rm_health_out_flush(&ck->output, ck->sock, hc.h2, ck->h2, on_write) != 0)
        finish(ck, RM_HEALTH_FAILURE, "HTTP/2 session error");
}

int
rm_health_grpc_serving_status(const uint8_t *body, size_t len)
{
    if (len < 5 || body[0] != 0)
        return -1; /* compressed or truncated: we asked for nothing compressed */
    size_t mlen = ((size_t)body[1] << 24) | ((size_t)body[2] << 16) | ((size_t)body[3] << 8) | body[4];
    if (mlen > len - 5)
        return -1;
    const uint8_t *p = body + 5, *end = p + mlen;
    int status = 0; /* proto3: an absent field is 0 (UNKNOWN) */
    while (p < end) {
        uint64_t key = 0, v = 0;
        for (int shift = 0;; shift += 7) {
            if (p == end || shift > 63)
                return -1;
            key |= (uint64_t)(*p & 0x7f) << shift;
            if ((*p++ & 0x80) == 0)
                break;
        }
        switch (key & 7) {
        case 0:
            for (int shift = 0;; shift += 7) {
                if (p == end || shift > 63)
                    return -1;
                v |= (uint64_t)(*p & 0x7f) << shift;
                if ((*p++ & 0x80) == 0)
                    break;
            }
            if ((key >> 3) == 1)
                status = (int)(v & 0x7fffffff);
            break;
        case 1:
            if (end - p < 8)
                return -1;
            p += 8;
            break;
        case 2:
            for (int shift = 0;; shift += 7) {
                if (p == end || shift > 63)
                    return -1;
                v |= (uint64_t)(*p & 0x7f) << shift;
                if ((*p++ & 0x80) == 0)
                    break;
            }
            if (v > (uint64_t)(end - p))
                return -1;
            p += v;
            break;
        case 5:
            if (end - p < 4)
                return -1;
            p += 4;
            break;
        default:
            return -1;
        }
    }
    return status;
}

static void
h2_done(checker_t *ck)
{
    int status, grpc_status;
    const uint8_t *body;
    size_t body_len;
    char why[128];
    hc.h2->result(ck->h2, &status, &grpc_status, &body, &body_len);
    if (!ck->cluster->config.grpc) {
        if (status >= 200 && status <= 299) {
            finish(ck, RM_HEALTH_SUCCESS, NULL);
        } else {
            snprintf(why, sizeof(why), "HTTP status %d", status);
            finish(ck, RM_HEALTH_FAILURE, why);
        }
        return;
    }
    if (status != 200 || grpc_status != 0) {
        snprintf(why, sizeof(why), "HTTP status %d, grpc-status %d", status, grpc_status);
        finish(ck, RM_HEALTH_FAILURE, why);
        return;
    }
    int serving = rm_health_grpc_serving_status(body, body_len);
    if (serving != 1 /* SERVING */) {
        snprintf(why, sizeof(why), serving < 0 ? "malformed HealthCheckResponse" : "serving status %d", serving);
        finish(ck, RM_HEALTH_FAILURE, why);
        return;
    }
    finish(ck, RM_HEALTH_SUCCESS, NULL);
}

/* HTTP/1.1: the status line is all a check needs ("Connection: close", nothing else is read). */
static int
h1_status(const char *s, size_t len, int *status)
{
    if (len == 0) /* nothing read yet: h2o's empty input buffer has no bytes (NULL), which memchr must not get */
        return 0;
    const char *eol = memchr(s, '\n', len);
    if (eol == NULL)
        return len > 8192 ? -1 : 0;
    if (eol - s < 12 || memcmp(s, "HTTP/1.", 7) != 0 || s[8] != ' ')
        return -1;
    if (s[9] < '1' || s[9] > '9' || s[10] < '0' || s[10] > '9' || s[11] < '0' || s[11] > '9')
        return -1;
    *status = (s[9] - '0') * 100 + (s[10] - '0') * 10 + (s[11] - '0');
    return 1;
}

static void
on_read(h2o_socket_t *sock, const char *err)
{
    checker_t *ck = sock->data;
    char why[64];
    if (ck->wire == WIRE_H1) {
        int status = 0, r = h1_status(sock->input->bytes, sock->input->size, &status);
        if (r < 0) {
            finish(ck, RM_HEALTH_FAILURE, "malformed HTTP/1.1 response");
        } else if (r > 0) {
            snprintf(why, sizeof(why), "HTTP status %d", status);
            finish(ck, status >= 200 && status <= 299 ? RM_HEALTH_SUCCESS : RM_HEALTH_FAILURE, why);
        } else if (err != NULL) {
            finish(ck, RM_HEALTH_CONNECT_FAILURE, "connection closed before the response");
        }
        return;
    }
    if (sock->input->size != 0) {
        int r = hc.h2->recv(ck->h2, sock->input->bytes, sock->input->size);
        h2o_buffer_consume(&sock->input, sock->input->size);
        if (r < 0) {
            finish(ck, RM_HEALTH_FAILURE, "HTTP/2 protocol error");
            return;
        }
        if (r == 2) {
            finish(ck, RM_HEALTH_CONNECT_FAILURE, "GOAWAY before the response");
            return;
        }
        if (r > 0) {
            h2_done(ck);
            return;
        }
    }
    if (err != NULL) {
        finish(ck, RM_HEALTH_CONNECT_FAILURE, "connection closed before the response");
        return;
    }
    flush(ck);
}

static void
send_request(checker_t *ck, wire_t wire)
{
    hc_cluster_t *cl = ck->cluster;
    ck->wire = wire;
    rm_health_out_init(&ck->output);
    if (wire == WIRE_H1) {
        char req[4096];
        int n = snprintf(req, sizeof(req),
                         "GET %s HTTP/1.1\r\nhost: %s\r\nuser-agent: remora-health-check\r\nconnection: close\r\n\r\n",
                         cl->config.http_path, ck->authority);
        if (n < 0 || (size_t)n >= sizeof(req)) {
            finish(ck, RM_HEALTH_FAILURE, "request too long");
            return;
        }
        rm_health_out_append(&ck->output, req, (size_t)n);
    } else {
        if (hc.h2 == NULL) {
            finish(ck, RM_HEALTH_FAILURE, "no HTTP/2 codec in this build");
            return;
        }
        rm_health_h2_request_t req = {.authority = ck->authority, .grpc = cl->config.grpc};
        uint8_t body[5 + 2 + 5 + 512];
        if (cl->config.grpc) {
            /* HealthCheckRequest{service = 1: string}, gRPC-framed (uncompressed) */
            const char *svc = cl->config.grpc_service != NULL ? cl->config.grpc_service : "";
            size_t slen = strlen(svc), m = 0;
            if (slen > 512) {
                finish(ck, RM_HEALTH_FAILURE, "gRPC service name too long");
                return;
            }
            uint8_t msg[2 + 2 + 512];
            if (slen != 0) {
                msg[m++] = 0x0a; /* field 1, length-delimited */
                if (slen < 128) {
                    msg[m++] = (uint8_t)slen;
                } else {
                    msg[m++] = (uint8_t)(slen | 0x80);
                    msg[m++] = (uint8_t)(slen >> 7);
                }
                memcpy(msg + m, svc, slen);
                m += slen;
            }
            body[0] = 0;
            body[1] = (uint8_t)(m >> 24);
            body[2] = (uint8_t)(m >> 16);
            body[3] = (uint8_t)(m >> 8);
            body[4] = (uint8_t)m;
            memcpy(body + 5, msg, m);
            req.method = "POST";
            req.path = "/grpc.health.v1.Health/Check";
            req.body = body;
            req.body_len = 5 + m;
        } else {
            req.method = "GET";
            req.path = cl->config.http_path;
        }
        if ((ck->h2 = hc.h2->create(&req)) == NULL) {
            finish(ck, RM_HEALTH_FAILURE, "HTTP/2 session could not be created");
            return;
        }
    }
    h2o_socket_read_start(ck->sock, on_read);
    flush(ck);
}

static wire_t
plain_wire(hc_cluster_t *cl)
{
    return cl->config.grpc || cl->protocol == RM_UPSTREAM_H2 ? WIRE_H2 : WIRE_H1;
}

static void
on_handshake(h2o_socket_t *sock, const char *err)
{
    checker_t *ck = sock->data;
    if (err != NULL) {
        finish(ck, RM_HEALTH_CONNECT_FAILURE, err);
        return;
    }
    wire_t wire = plain_wire(ck->cluster);
    h2o_iovec_t proto = h2o_socket_ssl_get_selected_protocol(sock);
    if (ck->cluster->protocol == RM_UPSTREAM_AUTO && !ck->cluster->config.grpc)
        wire = h2o_memis(proto.base, proto.len, H2O_STRLIT("h2")) ? WIRE_H2 : WIRE_H1;
    send_request(ck, wire);
}

static void
on_mesh_handshake(h2o_socket_t *sock, const char *err)
{
    checker_t *ck = sock->data;
    rm_mesh_handshake_end(&ck->mesh_hs);
    rm_mesh_result_t result = rm_mesh_handshake_result(&ck->mesh_hs, RM_MESH_OUTBOUND, err);
    if (result != RM_MESH_SUCCESS && result != RM_MESH_RESUMED) {
        finish(ck, RM_HEALTH_CONNECT_FAILURE, ck->mesh_hs.why);
        return;
    }
    send_request(ck, plain_wire(ck->cluster));
}

/* A check of an agent's endpoint goes over mesh mTLS as requests do (upstream/cluster.c); 1 if it started. */
static int
start_mesh_handshake(checker_t *ck, h2o_socket_t *sock)
{
    hc_cluster_t *cl = ck->cluster;
    if (cl->mesh_identity == NULL || hc.mesh_disabled ||
        rm_mesh_expected_id(ck->mesh_identity != NULL ? ck->mesh_identity : cl->mesh_identity, ck->mesh_expected,
                            sizeof(ck->mesh_expected)) != 0)
        return 0;
    SSL_CTX *ctx = rm_mesh_tls_client_ctx(ck->mesh_expected, plain_wire(cl) == WIRE_H2 ? RM_MESH_PROTO_H2 : RM_MESH_PROTO_HTTP1);
    if (ctx == NULL)
        return 0;
    rm_mesh_handshake_start(&ck->mesh_hs, sock, ck->mesh_expected);
    h2o_socket_ssl_handshake(sock, ctx, "remora.mesh", on_mesh_handshake);
    SSL_CTX_free(ctx); /* the connection's SSL holds its own reference */
    return 1;
}

static void
on_connect(h2o_socket_t *sock, const char *err)
{
    checker_t *ck = sock->data;
    if (err != NULL) {
        finish(ck, RM_HEALTH_CONNECT_FAILURE, err);
        return;
    }
    int on = 1;
    setsockopt(h2o_socket_get_fd(sock), IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    hc_cluster_t *cl = ck->cluster;
    if (cl->ssl_ctx != NULL) {
        const char *sni = cl->tls_server_name;
        char host[256];
        if (sni == NULL) {
            /* the endpoint's host as configured: the authority without its port */
            snprintf(host, sizeof(host), "%s", ck->authority[0] == '[' ? ck->authority + 1 : ck->authority);
            char *colon = strrchr(host, ck->authority[0] == '[' ? ']' : ':');
            if (colon != NULL)
                *colon = '\0';
            sni = host;
        }
        h2o_socket_ssl_handshake(sock, cl->ssl_ctx, sni, on_handshake);
        return;
    }
    if (start_mesh_handshake(ck, sock))
        return;
    send_request(ck, plain_wire(cl));
}

static void
start_check(checker_t *ck)
{
    ck->sock = h2o_socket_connect(hc.loop, (struct sockaddr *)&ck->addr, ck->addrlen, on_connect);
    if (ck->sock == NULL) {
        finish(ck, RM_HEALTH_CONNECT_FAILURE, "no socket");
        return;
    }
    ck->sock->data = ck;
    uv_timer_start(ck->timer, on_timer, ck->cluster->config.timeout_ms, 0);
}

static void
on_timer(uv_timer_t *timer)
{
    checker_t *ck = timer->data;
    if (ck->sock != NULL)
        finish(ck, RM_HEALTH_TIMEOUT, "no answer within timeout_ms");
    else
        start_check(ck);
}

static checker_t *
checker_create(hc_cluster_t *cl, const struct sockaddr *addr, socklen_t addrlen, const char *name, const char *host, uint16_t port)
{
    checker_t *ck = rm_calloc(1, sizeof(*ck));
    ck->cluster = cl;
    memcpy(&ck->addr, addr, addrlen); /* at most sizeof(ck->addr): an AF_INET or AF_INET6 address */
    ck->addrlen = addrlen;
    snprintf(ck->name, sizeof(ck->name), "%s", name);
    ck->authority = make_authority(host, port);
    ck->oh = rm_outlier_host_acquire(cl->oc, ck->name);
    ck->timer = rm_calloc(1, sizeof(*ck->timer));
    uv_timer_init(hc.loop, ck->timer);
    ck->timer->data = ck;
    ck->next = cl->checkers;
    cl->checkers = ck;
    schedule(ck, 0); /* the first check of a new endpoint runs at once */
    return ck;
}

static void
checker_destroy(checker_t *ck)
{
    close_exchange(ck);
    uv_close((uv_handle_t *)ck->timer, (uv_close_cb)free);
    /* nobody checks it now: the health check no longer keeps it out */
    rm_outlier_set_health(ck->oh, 1);
    rm_outlier_host_release(ck->oh);
    free(ck->authority);
    free(ck->mesh_identity);
    free(ck);
}

static socklen_t
sockaddr_len(const struct sockaddr_storage *ss)
{
    return ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

/* `addr` (`addrlen` bytes: AF_INET or AF_INET6) may be on the caller's stack: a new checker copies it */
static void
ensure_checker(hc_cluster_t *cl, const struct sockaddr *addr, socklen_t addrlen, const char *host, uint16_t port,
               const char *identity)
{
    char name[80];
    rm_format_sockaddr(addr, name, sizeof(name));
    checker_t *ck = cl->checkers;
    while (ck != NULL && strcmp(ck->name, name) != 0)
        ck = ck->next;
    if (ck == NULL)
        ck = checker_create(cl, addr, addrlen, name, host, port);
    ck->seen = 1;
    if (!(ck->mesh_identity == NULL ? identity == NULL : identity != NULL && strcmp(ck->mesh_identity, identity) == 0)) {
        free(ck->mesh_identity);
        ck->mesh_identity = identity != NULL ? rm_strdup(identity) : NULL;
    }
}

/* The checkers of `cl` follow its endpoint addresses now: IP endpoints and the last answers of its names. */
static void
sync_checkers(hc_cluster_t *cl)
{
    for (checker_t *ck = cl->checkers; ck != NULL; ck = ck->next)
        ck->seen = 0;
    for (size_t i = 0; i != cl->num_ips; ++i) {
        struct sockaddr_storage ss; /* the config's address is compact (rm_config_ip_t) */
        socklen_t len = rm_config_ip_to_sockaddr(&cl->ips[i].addr, &ss);
        if (len != 0)
            ensure_checker(cl, (const struct sockaddr *)&ss, len, cl->ips[i].host, cl->ips[i].port, cl->ips[i].peer_identity);
    }
    for (size_t i = 0; i != cl->num_dns; ++i)
        for (size_t j = 0; j != cl->dns[i]->num_addrs; ++j)
            ensure_checker(cl, (const struct sockaddr *)&cl->dns[i]->addrs[j], sockaddr_len(&cl->dns[i]->addrs[j]),
                           cl->dns[i]->host, cl->dns[i]->port, NULL);
    for (checker_t **p = &cl->checkers; *p != NULL;) {
        checker_t *ck = *p;
        if (ck->seen) {
            p = &ck->next;
        } else {
            *p = ck->next;
            checker_destroy(ck);
        }
    }
}

/*
 * Host-name endpoints: resolved on the main loop, again at the cluster's DNS refresh.
 */

static void on_dns_timer(uv_timer_t *timer);

static void
on_dns_answer(const rm_resolver_result_t *result, void *data)
{
    hc_dns_t *t = data;
    hc_cluster_t *cl = t->cluster;
    t->query = NULL;
    uint32_t next_ms;
    if (result->status == RM_RESOLVER_OK) {
        free(t->addrs);
        t->addrs = rm_calloc(result->num_addrs, sizeof(*t->addrs));
        memcpy(t->addrs, result->addrs, result->num_addrs * sizeof(*t->addrs));
        t->num_addrs = result->num_addrs;
        next_ms = rm_resolver_refresh_ms(result->ttl_s, cl->dns_min_refresh_ms, cl->dns_max_refresh_ms);
    } else {
        /* keep the last good answer; try again soon */
        rm_log_warn("health", "cluster %s: resolving %s: %s", cl->name, t->host, result->error);
        next_ms = rm_resolver_refresh_ms(1, cl->dns_min_refresh_ms, cl->dns_max_refresh_ms);
    }
    uv_timer_start(t->timer, on_dns_timer, next_ms, 0);
    sync_checkers(cl);
}

static void
dns_resolve(hc_dns_t *t)
{
    if (hc.resolver == NULL) {
        char err[256];
        hc.resolver = rm_resolver_create(hc.loop, (const char *const *)hc.dns_servers, hc.num_dns_servers, err, sizeof(err));
        if (hc.resolver == NULL) {
            rm_log_error("health", "DNS resolver: %s", err);
            uv_timer_start(t->timer, on_dns_timer, 5000, 0);
            return;
        }
    }
    t->query = rm_resolver_resolve(hc.resolver, t->host, t->port, on_dns_answer, t);
}

static void
on_dns_timer(uv_timer_t *timer)
{
    dns_resolve(timer->data);
}

static void
dns_destroy(hc_dns_t *t)
{
    if (t->query != NULL)
        rm_resolver_cancel(t->query);
    uv_close((uv_handle_t *)t->timer, (uv_close_cb)free);
    free(t->host);
    free(t->addrs);
    free(t);
}

/*
 * Reconcile
 */

static void
free_settings(rm_config_health_check_t *h)
{
    free(h->http_path);
    free(h->grpc_service);
}

static void
cluster_destroy(hc_cluster_t *cl)
{
    while (cl->checkers != NULL) {
        checker_t *ck = cl->checkers;
        cl->checkers = ck->next;
        checker_destroy(ck);
    }
    for (size_t i = 0; i != cl->num_dns; ++i)
        dns_destroy(cl->dns[i]);
    free(cl->dns);
    for (size_t i = 0; i != cl->num_ips; ++i) {
        free(cl->ips[i].host);
        free(cl->ips[i].peer_identity);
    }
    free(cl->ips);
    free_settings(&cl->config);
    if (cl->ssl_ctx != NULL)
        SSL_CTX_free(cl->ssl_ctx);
    free(cl->tls_server_name);
    free(cl->mesh_identity);
    rm_outlier_cluster_release(cl->oc);
    free(cl->name);
    free(cl);
}

static void
cluster_update(hc_cluster_t *cl, const rm_config_cluster_t *config, SSL_CTX *ssl_ctx)
{
    free_settings(&cl->config);
    cl->config = config->health_check;
    cl->config.http_path = config->health_check.http_path != NULL ? rm_strdup(config->health_check.http_path) : NULL;
    cl->config.grpc_service = config->health_check.grpc_service != NULL ? rm_strdup(config->health_check.grpc_service) : NULL;
    cl->protocol = config->protocol;
    if (ssl_ctx != NULL)
        SSL_CTX_up_ref(ssl_ctx);
    if (cl->ssl_ctx != NULL)
        SSL_CTX_free(cl->ssl_ctx);
    cl->ssl_ctx = ssl_ctx;
    free(cl->tls_server_name);
    cl->tls_server_name = config->tls_server_name != NULL ? rm_strdup(config->tls_server_name) : NULL;
    free(cl->mesh_identity);
    cl->mesh_identity = (config->agent_hop || config->peer_agent) && !config->tls && config->peer_identity != NULL
                            ? rm_strdup(config->peer_identity)
                            : NULL;
    cl->dns_min_refresh_ms = config->dns_min_refresh_ms;
    cl->dns_max_refresh_ms = config->dns_max_refresh_ms;

    for (size_t i = 0; i != cl->num_ips; ++i) {
        free(cl->ips[i].host);
        free(cl->ips[i].peer_identity);
    }
    free(cl->ips);
    cl->ips = rm_calloc(config->num_endpoints != 0 ? config->num_endpoints : 1, sizeof(*cl->ips));
    cl->num_ips = 0;
    for (size_t i = 0; i != cl->num_dns; ++i)
        cl->dns[i]->seen = 0;
    hc_dns_t **dns = rm_calloc(config->num_endpoints != 0 ? config->num_endpoints : 1, sizeof(*dns));
    size_t num_dns = 0;
    for (size_t i = 0; i != config->num_endpoints; ++i) {
        const rm_config_endpoint_t *ep = config->endpoints + i;
        if (ep->is_ip) {
            cl->ips[cl->num_ips] = *ep;
            cl->ips[cl->num_ips].host = rm_strdup(ep->host);
            cl->ips[cl->num_ips].peer_identity = ep->peer_identity != NULL ? rm_strdup(ep->peer_identity) : NULL;
            ++cl->num_ips;
            continue;
        }
        hc_dns_t *t = NULL;
        for (size_t j = 0; j != cl->num_dns; ++j) {
            if (!cl->dns[j]->seen && cl->dns[j]->port == ep->port && strcasecmp(cl->dns[j]->host, ep->host) == 0) {
                t = cl->dns[j];
                break;
            }
        }
        if (t == NULL) {
            t = rm_calloc(1, sizeof(*t));
            t->cluster = cl;
            t->host = rm_strdup(ep->host);
            t->port = ep->port;
            t->timer = rm_calloc(1, sizeof(*t->timer));
            uv_timer_init(hc.loop, t->timer);
            t->timer->data = t;
            dns_resolve(t);
        }
        t->seen = 1;
        dns[num_dns++] = t;
    }
    for (size_t i = 0; i != cl->num_dns; ++i)
        if (!cl->dns[i]->seen)
            dns_destroy(cl->dns[i]);
    free(cl->dns);
    cl->dns = dns;
    cl->num_dns = num_dns;
    sync_checkers(cl);
}

/* The DNS servers of the snapshot; a change replaces the resolver (its queries in flight are sent again). */
static void
update_dns_servers(const rm_config_t *config)
{
    int same = hc.dns_servers != NULL && hc.num_dns_servers == config->num_dns_servers;
    for (size_t i = 0; same && i != config->num_dns_servers; ++i)
        same = strcmp(hc.dns_servers[i], config->dns_servers[i]) == 0;
    if (same)
        return;
    for (size_t i = 0; i != hc.num_dns_servers; ++i)
        free(hc.dns_servers[i]);
    free(hc.dns_servers);
    hc.num_dns_servers = config->num_dns_servers;
    hc.dns_servers = rm_calloc(config->num_dns_servers != 0 ? config->num_dns_servers : 1, sizeof(char *));
    for (size_t i = 0; i != config->num_dns_servers; ++i)
        hc.dns_servers[i] = rm_strdup(config->dns_servers[i]);
    if (hc.resolver == NULL)
        return;
    rm_resolver_destroy(hc.resolver); /* cancels its queries */
    hc.resolver = NULL;
    for (hc_cluster_t *cl = hc.clusters; cl != NULL; cl = cl->next) {
        for (size_t i = 0; i != cl->num_dns; ++i) {
            if (cl->dns[i]->query != NULL) {
                cl->dns[i]->query = NULL;
                dns_resolve(cl->dns[i]);
            }
        }
    }
}

void
rm_health_reconcile(const rm_config_t *config, const rm_tls_set_t *tls)
{
    update_dns_servers(config);
    hc.mesh_disabled = config->mesh_tls.mode == RM_MESH_TLS_DISABLE;

    for (hc_cluster_t *cl = hc.clusters; cl != NULL; cl = cl->next)
        cl->seen = 0;
    for (size_t i = 0; i != config->num_clusters; ++i) {
        const rm_config_cluster_t *cc = config->clusters + i;
        if (!cc->health_check.enabled)
            continue;
        hc_cluster_t *cl;
        for (cl = hc.clusters; cl != NULL; cl = cl->next)
            if (strcmp(cl->name, cc->name) == 0)
                break;
        if (cl == NULL) {
            cl = rm_calloc(1, sizeof(*cl));
            cl->name = rm_strdup(cc->name);
            cl->oc = rm_outlier_cluster_acquire(cc->name);
            cl->next = hc.clusters;
            hc.clusters = cl;
        }
        cl->seen = 1;
        SSL_CTX *ctx = cc->tls && tls != NULL && i < tls->num_clusters ? tls->clusters[i] : NULL;
        cluster_update(cl, cc, ctx);
    }
    for (hc_cluster_t **p = &hc.clusters; *p != NULL;) {
        hc_cluster_t *cl = *p;
        if (cl->seen) {
            p = &cl->next;
        } else {
            *p = cl->next;
            cluster_destroy(cl);
        }
    }
}

void
rm_health_stop(void)
{
    while (hc.clusters != NULL) {
        hc_cluster_t *cl = hc.clusters;
        hc.clusters = cl->next;
        cluster_destroy(cl);
    }
    if (hc.resolver != NULL) {
        rm_resolver_destroy(hc.resolver);
        hc.resolver = NULL;
    }
    for (size_t i = 0; i != hc.num_dns_servers; ++i)
        free(hc.dns_servers[i]);
    free(hc.dns_servers);
    hc.dns_servers = NULL;
    hc.num_dns_servers = 0;
}

/*
 * Metrics and admin
 */

char *
rm_health_render(void)
{
    if (hc.clusters == NULL)
        return NULL;
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);
    if (fp == NULL)
        rm_fatal("open_memstream failed");
    fputs("# HELP remora_upstream_health_checks_total Active health checks run by the agent, by result.\n"
          "# TYPE remora_upstream_health_checks_total counter\n",
          fp);
    for (hc_cluster_t *cl = hc.clusters; cl != NULL; cl = cl->next) {
        for (int r = 0; r != RM_HEALTH_NUM_RESULTS; ++r) {
            fputs("remora_upstream_health_checks_total{cluster=\"", fp);
            rm_stats_fprint_label_value(fp, cl->name);
            fprintf(fp, "\",result=\"%s\"} %llu\n", rm_health_result_name((rm_health_result_t)r),
                    (unsigned long long)cl->checks[r]);
        }
    }
    fputs("# HELP remora_upstream_endpoints_health Endpoints of health-checked clusters, by health-check state.\n"
          "# TYPE remora_upstream_endpoints_health gauge\n",
          fp);
    for (hc_cluster_t *cl = hc.clusters; cl != NULL; cl = cl->next) {
        unsigned counts[3] = {0, 0, 0};
        for (checker_t *ck = cl->checkers; ck != NULL; ck = ck->next)
            ++counts[ck->sm.state];
        static const rm_health_state_t order[] = {RM_HEALTH_HEALTHY, RM_HEALTH_UNHEALTHY, RM_HEALTH_PENDING};
        for (size_t s = 0; s != 3; ++s) {
            fputs("remora_upstream_endpoints_health{cluster=\"", fp);
            rm_stats_fprint_label_value(fp, cl->name);
            fprintf(fp, "\",state=\"%s\"} %u\n", rm_health_state_name(order[s]), counts[order[s]]);
        }
    }
    fclose(fp);
    return text;
}

char *
rm_health_describe(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&text, &len);
    if (fp == NULL)
        rm_fatal("open_memstream failed");
    for (hc_cluster_t *cl = hc.clusters; cl != NULL; cl = cl->next)
        for (checker_t *ck = cl->checkers; ck != NULL; ck = ck->next)
            fprintf(fp, "%s %s: %s (health check: %s)\n", cl->name, ck->name, rm_health_state_name(ck->sm.state),
                    ck->checked ? rm_health_result_name(ck->last) : "not run yet");
    fclose(fp);
    return text;
}
