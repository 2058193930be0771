/*
 * c-ares driven by a libuv loop: c-ares tells us which sockets it wants watched (sock_state_cb), we
 * keep one uv_poll_t per socket and one uv_timer_t for its retransmission deadlines, and feed
 * readiness back with ares_process_fd. Answers are queued and handed to callers from a uv_idle_t so
 * that no caller code ever runs inside c-ares or inside rm_resolver_resolve.
 */
#include <ares.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "net/resolver.h"

#define LOG_COMPONENT "dns"

enum en_query_state_t {
    QUERY_IN_FLIGHT,  /* c-ares holds a pointer to it and will call on_addrinfo */
    QUERY_PENDING,    /* answered, on resolver->_pending or resolver->_batch */
    QUERY_DELIVERING, /* its callback is running */
};

struct st_rm_resolver_query_t {
    rm_resolver_t *_resolver;
    rm_resolver_cb _cb; /* NULL once cancelled */
    void *_data;
    uint16_t _port;
    enum en_query_state_t _state;
    rm_resolver_result_t _result;
    struct sockaddr_storage *_addrs;
    /* link in _pending or _batch; pprev lets a query leave either list without knowing which */
    rm_resolver_query_t *_next, **_pprev;
};

typedef struct st_sock_poll_t {
    uv_poll_t handle;
    rm_resolver_t *resolver;
    ares_socket_t fd;
    struct st_sock_poll_t *next;
} sock_poll_t;

struct st_rm_resolver_t {
    uv_loop_t *_loop;
    ares_channel _channel;
    uv_timer_t _timer;
    uv_idle_t _deliver;
    sock_poll_t *_polls;
    rm_resolver_query_t *_pending; /* answered, to be delivered by the next run of _deliver */
    rm_resolver_query_t **_pending_tail;
    rm_resolver_query_t *_batch; /* being delivered by the current run of _deliver */
    size_t _num_in_flight;       /* queries c-ares still holds */
    size_t _num_active;          /* of which not cancelled */
    size_t _num_handles;         /* uv handles whose close callback has not run yet */
    int _destroyed;
};

static pthread_once_t library_once = PTHREAD_ONCE_INIT;
static int library_status = ARES_SUCCESS;

static void
library_init(void)
{
    library_status = ares_library_init(ARES_LIB_INIT_ALL);
}

static void set_error(char *errbuf, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void
set_error(char *errbuf, size_t errlen, const char *fmt, ...)
{
    va_list args;
    if (errlen == 0)
        return;
    va_start(args, fmt);
    vsnprintf(errbuf, errlen, fmt, args);
    va_end(args);
}

const char *
rm_resolver_strerror(int status)
{
    switch (status) {
    case RM_RESOLVER_OK:
        return "success";
    case RM_RESOLVER_ENOTFOUND:
        return "NXDOMAIN: no such name";
    case RM_RESOLVER_ENODATA:
        return "the name has no IPv4 or IPv6 address";
    case RM_RESOLVER_ETIMEOUT:
        return "timed out waiting for the DNS server";
    case RM_RESOLVER_EREFUSED:
        return "the DNS server refused the query";
    case RM_RESOLVER_ESERVFAIL:
        return "the DNS server failed (SERVFAIL)";
    case RM_RESOLVER_ECONNREFUSED:
        return "no DNS server could be reached or gave a usable answer";
    case RM_RESOLVER_EBADNAME:
        return "malformed host name";
    case RM_RESOLVER_EBADRESP:
        return "malformed or unsupported DNS response";
    case RM_RESOLVER_EOTHER:
        return "DNS resolution failed";
    default:
        return "unknown error";
    }
}

static int
convert_status(int ares_status)
{
    switch (ares_status) {
    case ARES_SUCCESS:
        return RM_RESOLVER_OK;
    case ARES_ENOTFOUND:
    case ARES_ENONAME:
        return RM_RESOLVER_ENOTFOUND;
    case ARES_ENODATA:
        return RM_RESOLVER_ENODATA;
    case ARES_ETIMEOUT:
        return RM_RESOLVER_ETIMEOUT;
    case ARES_EREFUSED:
        return RM_RESOLVER_EREFUSED;
    case ARES_ESERVFAIL:
        return RM_RESOLVER_ESERVFAIL;
    case ARES_ECONNREFUSED:
        return RM_RESOLVER_ECONNREFUSED;
    case ARES_EBADNAME:
    case ARES_EBADSTR:
        return RM_RESOLVER_EBADNAME;
    case ARES_EBADRESP:
    case ARES_EFORMERR:
    case ARES_ENOTIMP:
    case ARES_EBADQUERY:
        return RM_RESOLVER_EBADRESP;
    case ARES_ENOMEM:
        rm_fatal("c-ares: out of memory");
    default:
        return RM_RESOLVER_EOTHER;
    }
}

uint32_t
rm_resolver_refresh_ms(uint32_t ttl_s, uint32_t min_ms, uint32_t max_ms)
{
    uint64_t ms = (uint64_t)ttl_s * 1000;
    if (ms > max_ms)
        ms = max_ms;
    if (ms < min_ms)
        ms = min_ms;
    return (uint32_t)ms;
}

static void
free_query(rm_resolver_query_t *q)
{
    free(q->_addrs);
    free(q);
}

static void
append_pending(rm_resolver_t *r, rm_resolver_query_t *q)
{
    q->_next = NULL;
    q->_pprev = r->_pending_tail;
    *r->_pending_tail = q;
    r->_pending_tail = &q->_next;
}

static void
list_unlink(rm_resolver_t *r, rm_resolver_query_t *q)
{
    if (r->_pending_tail == &q->_next)
        r->_pending_tail = q->_pprev;
    *q->_pprev = q->_next;
    if (q->_next != NULL)
        q->_next->_pprev = q->_pprev;
    q->_next = NULL;
    q->_pprev = NULL;
}

static void
free_list(rm_resolver_t *r, rm_resolver_query_t **head)
{
    while (*head != NULL) {
        rm_resolver_query_t *q = *head;
        list_unlink(r, q);
        free_query(q);
    }
}

static void
maybe_free_resolver(rm_resolver_t *r)
{
    if (r->_destroyed && r->_num_handles == 0)
        free(r);
}

static void
on_handle_close(uv_handle_t *handle)
{
    rm_resolver_t *r = handle->data;
    --r->_num_handles;
    maybe_free_resolver(r);
}

static void
on_poll_close(uv_handle_t *handle)
{
    sock_poll_t *p = (sock_poll_t *)handle;
    rm_resolver_t *r = p->resolver;
    free(p);
    --r->_num_handles;
    maybe_free_resolver(r);
}

static void on_timer(uv_timer_t *timer);

/* Must follow every call into c-ares that may add, answer or retransmit a request. */
static void
rearm_timer(rm_resolver_t *r)
{
    struct timeval tv;
    if (r->_destroyed)
        return;
    if (ares_timeout(r->_channel, NULL, &tv) == NULL) {
        uv_timer_stop(&r->_timer);
        return;
    }
    /* rounding down would wake us just before the deadline, to find nothing to do and spin */
    uint64_t ms = (uint64_t)tv.tv_sec * 1000 + ((uint64_t)tv.tv_usec + 999) / 1000;
    uv_timer_start(&r->_timer, on_timer, ms, 0);
}

static void
on_timer(uv_timer_t *timer)
{
    rm_resolver_t *r = timer->data;
    ares_process_fd(r->_channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    rearm_timer(r);
}

static void
on_poll(uv_poll_t *handle, int status, int events)
{
    sock_poll_t *p = (sock_poll_t *)handle;
    rm_resolver_t *r = p->resolver;
    ares_socket_t fd = p->fd;
    /* p may be closed by c-ares below (state callback): only r and fd are used afterwards. On a poll
     * error let c-ares read and write, so that it meets the error on the socket and fails over. */
    ares_socket_t rfd = status < 0 || (events & UV_READABLE) != 0 ? fd : ARES_SOCKET_BAD;
    ares_socket_t wfd = status < 0 || (events & UV_WRITABLE) != 0 ? fd : ARES_SOCKET_BAD;
    ares_process_fd(r->_channel, rfd, wfd);
    rearm_timer(r);
}

static void
on_sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
    rm_resolver_t *r = data;
    sock_poll_t **slot = &r->_polls;
    while (*slot != NULL && (*slot)->fd != fd)
        slot = &(*slot)->next;

    if (!readable && !writable) {
        /* c-ares closes fd as soon as we return: the poll handle must leave epoll before that, and
         * must not linger, since a new socket may get the same number. */
        sock_poll_t *p = *slot;
        if (p == NULL)
            return;
        *slot = p->next;
        uv_close((uv_handle_t *)&p->handle, on_poll_close);
        return;
    }

    sock_poll_t *p = *slot;
    if (p == NULL) {
        p = rm_calloc(1, sizeof(*p));
        p->resolver = r;
        p->fd = fd;
        int ret = uv_poll_init_socket(r->_loop, &p->handle, fd);
        if (ret != 0) {
            /* the requests on this socket will time out through the timer; nothing better to do */
            rm_log_error(LOG_COMPONENT, "cannot watch DNS socket %d: %s", fd, uv_strerror(ret));
            free(p);
            return;
        }
        ++r->_num_handles;
        p->next = r->_polls;
        r->_polls = p;
    }
    int ret = uv_poll_start(&p->handle, (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0), on_poll);
    if (ret != 0)
        rm_log_error(LOG_COMPONENT, "cannot watch DNS socket %d: %s", fd, uv_strerror(ret));
}

static void
fill_result(rm_resolver_query_t *q, int ares_status, struct ares_addrinfo *ai)
{
    int status = convert_status(ares_status);
    size_t n = 0;
    int64_t ttl = INT64_MAX;

    if (status == RM_RESOLVER_OK && ai != NULL) {
        for (struct ares_addrinfo_node *node = ai->nodes; node != NULL; node = node->ai_next)
            ++n;
        q->_addrs = rm_calloc(n, sizeof(*q->_addrs));
        n = 0;
        for (struct ares_addrinfo_node *node = ai->nodes; node != NULL; node = node->ai_next) {
            struct sockaddr_storage *ss = &q->_addrs[n];
            if (node->ai_family == AF_INET && node->ai_addrlen >= sizeof(struct sockaddr_in)) {
                memcpy(ss, node->ai_addr, sizeof(struct sockaddr_in));
                ((struct sockaddr_in *)ss)->sin_port = htons(q->_port);
            } else if (node->ai_family == AF_INET6 && node->ai_addrlen >= sizeof(struct sockaddr_in6)) {
                memcpy(ss, node->ai_addr, sizeof(struct sockaddr_in6));
                ((struct sockaddr_in6 *)ss)->sin6_port = htons(q->_port);
            } else {
                continue;
            }
            if (node->ai_ttl < ttl)
                ttl = node->ai_ttl;
            ++n;
        }
        /* an address reached through CNAMEs is only good while every link of the chain is */
        for (struct ares_addrinfo_cname *cname = ai->cnames; cname != NULL; cname = cname->next)
            if (cname->ttl < ttl)
                ttl = cname->ttl;
    }
    if (status == RM_RESOLVER_OK && n == 0)
        status = RM_RESOLVER_ENODATA;

    q->_result.status = status;
    if (status == RM_RESOLVER_OK) {
        q->_result.addrs = q->_addrs;
        q->_result.num_addrs = n;
        q->_result.ttl_s = ttl < 0 ? 0 : ttl > UINT32_MAX ? UINT32_MAX : (uint32_t)ttl;
    } else {
        q->_result.error = rm_resolver_strerror(status);
    }
}

static void on_deliver(uv_idle_t *idle);

static void
queue_for_delivery(rm_resolver_t *r, rm_resolver_query_t *q)
{
    q->_state = QUERY_PENDING;
    append_pending(r, q);
    uv_idle_start(&r->_deliver, on_deliver);
}

static int
parse_literal(const char *host, uint16_t port, struct sockaddr_storage **addrs)
{
    struct in_addr a4;
    struct in6_addr a6;
    if (inet_pton(AF_INET, host, &a4) == 1) {
        struct sockaddr_in *sin = rm_calloc(1, sizeof(struct sockaddr_storage));
        sin->sin_family = AF_INET;
        sin->sin_addr = a4;
        sin->sin_port = htons(port);
        *addrs = (struct sockaddr_storage *)sin;
        return 1;
    }
    if (inet_pton(AF_INET6, host, &a6) == 1) {
        struct sockaddr_in6 *sin6 = rm_calloc(1, sizeof(struct sockaddr_storage));
        sin6->sin6_family = AF_INET6;
        sin6->sin6_addr = a6;
        sin6->sin6_port = htons(port);
        *addrs = (struct sockaddr_storage *)sin6;
        return 1;
    }
    return 0;
}

/* Called by c-ares, possibly synchronously from ares_getaddrinfo: only records the answer. */
static void
on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *ai)
{
    rm_resolver_query_t *q = arg;
    rm_resolver_t *r = q->_resolver;

    --r->_num_in_flight;
    if (q->_cb == NULL || r->_destroyed) {
        if (ai != NULL)
            ares_freeaddrinfo(ai);
        free_query(q);
        return;
    }
    --r->_num_active;
    fill_result(q, status, ai);
    if (ai != NULL)
        ares_freeaddrinfo(ai);
    queue_for_delivery(r, q);
}

static void
on_deliver(uv_idle_t *idle)
{
    rm_resolver_t *r = idle->data;

    /* Only what was answered before this run: a callback that re-resolves an IP literal (answered at
     * once) must not keep the loop here forever. */
    r->_batch = r->_pending;
    r->_pending = NULL;
    r->_pending_tail = &r->_pending;
    if (r->_batch != NULL)
        r->_batch->_pprev = &r->_batch;

    /* a callback may destroy the resolver, which frees the rest of the batch; r stays allocated until
     * its handles' close callbacks, which run later in this loop iteration */
    rm_resolver_query_t *q;
    while (!r->_destroyed && (q = r->_batch) != NULL) {
        list_unlink(r, q);
        q->_state = QUERY_DELIVERING;
        q->_cb(&q->_result, q->_data);
        free_query(q);
    }
    if (!r->_destroyed && r->_pending == NULL)
        uv_idle_stop(&r->_deliver);
}

rm_resolver_query_t *
rm_resolver_resolve(rm_resolver_t *r, const char *host, uint16_t port, rm_resolver_cb cb, void *data)
{
    rm_resolver_query_t *q = rm_calloc(1, sizeof(*q));
    q->_resolver = r;
    q->_cb = cb;
    q->_data = data;
    q->_port = port;

    /* c-ares 1.18 (Debian) sends A and AAAA queries for an IPv4 literal before answering it itself,
     * so a literal would wait for (or time out on) the DNS server: answer literals here. */
    if (parse_literal(host, port, &q->_addrs)) {
        q->_result.addrs = q->_addrs;
        q->_result.num_addrs = 1;
        queue_for_delivery(r, q);
        return q;
    }

    q->_state = QUERY_IN_FLIGHT;
    ++r->_num_in_flight;
    ++r->_num_active;

    /* NOSORT: RFC 6724 sorting would connect() UDP sockets towards the answers, and the load balancer
     * decides the order anyway */
    struct ares_addrinfo_hints hints = {.ai_flags = ARES_AI_NOSORT, .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    ares_getaddrinfo(r->_channel, host, NULL, &hints, on_addrinfo, q);
    rearm_timer(r);
    return q;
}

void
rm_resolver_cancel(rm_resolver_query_t *q)
{
    rm_resolver_t *r = q->_resolver;

    switch (q->_state) {
    case QUERY_IN_FLIGHT:
        if (q->_cb == NULL)
            return;
        q->_cb = NULL;
        if (--r->_num_active == 0 && r->_num_in_flight != 0) {
            /* Nobody waits for the remaining requests: drop them now rather than letting their sockets
             * and timer keep the loop alive until they time out. on_addrinfo frees them. */
            ares_cancel(r->_channel);
            rearm_timer(r);
        }
        break;
    case QUERY_PENDING:
        list_unlink(r, q);
        free_query(q);
        if (r->_pending == NULL && r->_batch == NULL)
            uv_idle_stop(&r->_deliver);
        break;
    case QUERY_DELIVERING:
        /* inside its own callback: on_deliver frees it when the callback returns */
        break;
    }
}

static int
set_servers(ares_channel channel, const char *const *servers, size_t num_servers, char *errbuf, size_t errlen)
{
    struct ares_addr_port_node *nodes = rm_calloc(num_servers, sizeof(*nodes));
    int ret = -1;

    for (size_t i = 0; i < num_servers; ++i) {
        struct sockaddr_storage ss;
        socklen_t sslen;
        const char *err;
        if (rm_parse_ip_port(servers[i], &ss, &sslen, &err) != 0) {
            set_error(errbuf, errlen, "DNS server \"%s\": %s", servers[i], err);
            goto Exit;
        }
        struct ares_addr_port_node *node = &nodes[i];
        uint16_t port;
        if (ss.ss_family == AF_INET) {
            const struct sockaddr_in *sin = (const void *)&ss;
            node->family = AF_INET;
            node->addr.addr4 = sin->sin_addr;
            port = ntohs(sin->sin_port);
        } else {
            const struct sockaddr_in6 *sin6 = (const void *)&ss;
            node->family = AF_INET6;
            memcpy(&node->addr.addr6, &sin6->sin6_addr, sizeof(sin6->sin6_addr));
            port = ntohs(sin6->sin6_port);
        }
        if (port == 0) {
            set_error(errbuf, errlen, "DNS server \"%s\": port must not be 0", servers[i]);
            goto Exit;
        }
        node->udp_port = port;
        node->tcp_port = port;
        node->next = i + 1 < num_servers ? &nodes[i + 1] : NULL;
    }

    int status = ares_set_servers_ports(channel, nodes);
    if (status != ARES_SUCCESS) {
        set_error(errbuf, errlen, "cannot set DNS servers: %s", ares_strerror(status));
        goto Exit;
    }
    ret = 0;

Exit:
    free(nodes);
    return ret;
}

rm_resolver_t *
rm_resolver_create_with_options(uv_loop_t *loop, const rm_resolver_options_t *opts, char *errbuf, size_t errlen)
{
    pthread_once(&library_once, library_init);
    if (library_status != ARES_SUCCESS) {
        set_error(errbuf, errlen, "c-ares initialization failed: %s", ares_strerror(library_status));
        return NULL;
    }
    if (opts->timeout_ms > INT32_MAX || opts->tries > INT32_MAX) {
        set_error(errbuf, errlen, "DNS timeout or tries out of range");
        return NULL;
    }

    rm_resolver_t *r = rm_calloc(1, sizeof(*r));
    r->_loop = loop;
    r->_pending_tail = &r->_pending;

    struct ares_options ao = {.sock_state_cb = on_sock_state, .sock_state_cb_data = r};
    int optmask = ARES_OPT_SOCK_STATE_CB;
    /* c-ares 1.18 treats SERVFAIL and REFUSED as a broken server: it tries the next one and, when all
     * are spent, reports ARES_ECONNREFUSED, hiding the answer. With a single server there is nothing
     * to fail over to, so take its answer as it is (resolv.conf sets no flags, so none are lost). */
    if (opts->num_servers == 1) {
        ao.flags = ARES_FLAG_NOCHECKRESP;
        optmask |= ARES_OPT_FLAGS;
    }
    if (opts->timeout_ms != 0) {
        ao.timeout = (int)opts->timeout_ms;
        optmask |= ARES_OPT_TIMEOUTMS;
    }
    if (opts->tries != 0) {
        ao.tries = (int)opts->tries;
        optmask |= ARES_OPT_TRIES;
    }
    int status = ares_init_options(&r->_channel, &ao, optmask);
    if (status != ARES_SUCCESS) {
        set_error(errbuf, errlen, "c-ares: %s", ares_strerror(status));
        free(r);
        return NULL;
    }
    /* before any query, so that the servers of resolv.conf are never contacted */
    if (opts->num_servers != 0 && set_servers(r->_channel, opts->servers, opts->num_servers, errbuf, errlen) != 0) {
        ares_destroy(r->_channel);
        free(r);
        return NULL;
    }

    uv_timer_init(loop, &r->_timer);
    r->_timer.data = r;
    uv_idle_init(loop, &r->_deliver);
    r->_deliver.data = r;
    r->_num_handles = 2;
    return r;
}

rm_resolver_t *
rm_resolver_create(uv_loop_t *loop, const char *const *servers, size_t num_servers, char *errbuf, size_t errlen)
{
    rm_resolver_options_t opts = {.servers = servers, .num_servers = num_servers};
    return rm_resolver_create_with_options(loop, &opts, errbuf, errlen);
}

void
rm_resolver_destroy(rm_resolver_t *r)
{
    r->_destroyed = 1;
    /* c-ares calls back every request with ARES_EDESTRUCTION (on_addrinfo frees them, seeing
     * _destroyed) and reports each of its sockets closed, which closes the poll handles */
    ares_destroy(r->_channel);
    r->_channel = NULL;
    free_list(r, &r->_pending);
    free_list(r, &r->_batch);
    while (r->_polls != NULL) {
        sock_poll_t *p = r->_polls;
        r->_polls = p->next;
        uv_close((uv_handle_t *)&p->handle, on_poll_close);
    }
    uv_close((uv_handle_t *)&r->_timer, on_handle_close);
    uv_close((uv_handle_t *)&r->_deliver, on_handle_close);
}
