/*
 * Asynchronous DNS resolver on a libuv loop (c-ares underneath; this is the only module that
 * includes <ares.h>, and c-ares error codes are converted here).
 *
 * Used by upstream clusters whose endpoints are host names: a cluster resolves a name, connects to
 * the addresses it got, and resolves it again after rm_resolver_refresh_ms(ttl) milliseconds.
 *
 * One resolver per loop: each worker thread (and the main thread, if it needs one) creates its own.
 * A resolver and its queries are used only by the thread that runs its loop; nothing here is
 * thread-safe except that several threads may create resolvers at the same time.
 *
 * Callbacks are ALWAYS delivered asynchronously, from the loop (an idle handle, so at the latest
 * one loop iteration after the answer arrived), never from inside rm_resolver_resolve nor from
 * inside c-ares. This holds for answers known at once (IP literals, /etc/hosts entries, which
 * c-ares answers synchronously, immediate failures), so a caller may hold half-built state across
 * rm_resolver_resolve. From inside a callback, the caller may start new queries, cancel other
 * queries, and even destroy the resolver.
 *
 * IP literals are answered without any lookup. Names are looked up in /etc/hosts first (so
 * "localhost" works without a server), then in DNS using the servers given at creation (or those
 * of /etc/resolv.conf when none are given), with the search domains and ndots of /etc/resolv.conf.
 * There is no cache: every call sends its queries (an A and an AAAA, in parallel).
 *
 * Out of memory aborts the process (rm_fatal); every other failure is a status in the result.
 */
#ifndef remora__resolver_h
#define remora__resolver_h

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

typedef struct st_rm_resolver_t rm_resolver_t;
typedef struct st_rm_resolver_query_t rm_resolver_query_t;

/** Status of a resolution: 0 on success, one of these (all negative) on failure. */
typedef enum en_rm_resolver_status_t {
    RM_RESOLVER_OK = 0,
    RM_RESOLVER_ENOTFOUND = -1, /* NXDOMAIN: the name does not exist (nor with any search domain) */
    RM_RESOLVER_ENODATA = -2,   /* the name exists but has no A or AAAA record */
    RM_RESOLVER_ETIMEOUT = -3,  /* no server answered within timeout x tries */
    RM_RESOLVER_EREFUSED = -4,  /* the server answered REFUSED (see ECONNREFUSED) */
    RM_RESOLVER_ESERVFAIL = -5, /* the server answered SERVFAIL (see ECONNREFUSED) */
    /* No server gave a usable answer: unreachable (ICMP port unreachable, TCP reset), or, when
     * several servers are configured (or the system's are used), every one of them answered
     * SERVFAIL or REFUSED: c-ares then fails over to the next server and hides the rcode. */
    RM_RESOLVER_ECONNREFUSED = -6,
    RM_RESOLVER_EBADNAME = -7, /* the host name is malformed */
    RM_RESOLVER_EBADRESP = -8, /* malformed answer, FORMERR or NOTIMP */
    RM_RESOLVER_EOTHER = -9,   /* anything else (out of file descriptors, ...) */
} rm_resolver_status_t;

/** What a query produced, as handed to its callback. */
typedef struct st_rm_resolver_result_t {
    /** RM_RESOLVER_OK or a negative rm_resolver_status_t. */
    int status;
    /** NULL on success; otherwise a static human-readable reason (see rm_resolver_strerror). */
    const char *error;
    /**
     * On success, num_addrs >= 1 addresses (sockaddr_in or sockaddr_in6, IPv4 and IPv6 mixed, in
     * the order of the answers, not sorted) with the port given to rm_resolver_resolve filled in.
     * On failure NULL and 0. Owned by the resolver and valid only until the callback returns.
     */
    const struct sockaddr_storage *addrs;
    size_t num_addrs;
    /**
     * Smallest TTL in seconds among the records of the answer (addresses and CNAMEs). 0 when the
     * answer did not come from DNS (IP literal, /etc/hosts) or on failure: callers should feed it to
     * rm_resolver_refresh_ms, which applies a floor.
     */
    uint32_t ttl_s;
} rm_resolver_result_t;

/**
 * Called exactly once per query that is neither cancelled nor destroyed with its resolver, on the
 * loop's thread. `result` and everything it points to is valid only during the call; the query
 * handle becomes invalid when the callback returns (rm_resolver_cancel on it inside its own
 * callback is a harmless no-op).
 */
typedef void (*rm_resolver_cb)(const rm_resolver_result_t *result, void *data);

/** Options for rm_resolver_create_with_options. Zero-initialize, then set what you need. */
typedef struct st_rm_resolver_options_t {
    /**
     * DNS servers as "IP:PORT" or "[IPV6]:PORT" (IP literals only: the resolver never needs a
     * resolver to find its servers). When num_servers is 0, the servers of /etc/resolv.conf are used.
     * Copied: the strings need not outlive the call. With exactly one server, its SERVFAIL and REFUSED
     * answers are reported as such; with several, they make c-ares try the next server instead (see
     * RM_RESOLVER_ECONNREFUSED).
     */
    const char *const *servers;
    size_t num_servers;
    /**
     * Time to wait for an answer on the first try, in ms; later tries wait longer (c-ares doubles it
     * after each round over all servers). 0 means the default (/etc/resolv.conf's "options timeout:",
     * else c-ares's built-in value).
     */
    uint32_t timeout_ms;
    /** Number of rounds over the servers; 0 means the default ("options attempts:", else c-ares's). */
    uint32_t tries;
} rm_resolver_options_t;

/**
 * Creates a resolver that runs on `loop`. `servers` (num_servers entries, "IP:PORT" or
 * "[IPV6]:PORT") replace /etc/resolv.conf's servers; with num_servers == 0 the system's servers
 * are used. Thread: the loop's thread. The loop must outlive the resolver.
 * Returns the resolver (free it with rm_resolver_destroy), or NULL with a message in errbuf
 * (errlen bytes, always NUL-terminated if errlen > 0), e.g. for a malformed server address.
 */
rm_resolver_t *rm_resolver_create(uv_loop_t *loop, const char *const *servers, size_t num_servers, char *errbuf, size_t errlen);

/** Same as rm_resolver_create, with timeouts as well. `opts` is only read during the call. */
rm_resolver_t *rm_resolver_create_with_options(uv_loop_t *loop, const rm_resolver_options_t *opts, char *errbuf, size_t errlen);

/**
 * Stops the resolver: every pending query is cancelled (no callback is called afterwards, not even
 * with an error), its sockets are closed and each of its uv handles is uv_close'd. The memory is
 * freed by the close callbacks, so run the loop once more (e.g. uv_run(loop, UV_RUN_DEFAULT)) before
 * uv_loop_close, which then returns 0 as far as the resolver is concerned. Safe to call from inside
 * one of the resolver's own callbacks. `r` is invalid afterwards. Thread: the loop's thread.
 */
void rm_resolver_destroy(rm_resolver_t *r);

/**
 * Starts resolving `host` (a name, or an IPv4/IPv6 literal which is answered without a query) to its
 * IPv4 and IPv6 addresses. `cb` is called later, from the loop, with the addresses and `port`; never
 * from inside this call. `host` and `cb` must not be NULL; `host` is copied (or no longer needed)
 * when the call returns; `data` is passed to `cb` untouched and is owned by the caller.
 * Returns a handle usable with rm_resolver_cancel until the callback returns. Never NULL: every
 * failure, including an invalid name, is reported through the callback.
 * Thread: the loop's thread.
 */
rm_resolver_query_t *rm_resolver_resolve(rm_resolver_t *r, const char *host, uint16_t port, rm_resolver_cb cb, void *data);

/**
 * Cancels a query: its callback will not be called. The handle is invalid afterwards. When no
 * uncancelled query remains, the outstanding DNS requests are abandoned at once, so a cancelled
 * query never keeps the loop alive until its timeout. Thread: the loop's thread.
 */
void rm_resolver_cancel(rm_resolver_query_t *q);

/** Static English description of a rm_resolver_status_t ("success" for 0, "unknown error" otherwise). */
const char *rm_resolver_strerror(int status);

/**
 * When to resolve again, in ms, given the TTL of the last answer: ttl_s * 1000 clamped to
 * [min_ms, max_ms] (min_ms wins if min_ms > max_ms). Use the same with a small ttl_s for retrying
 * after a failure. Pure function; any thread.
 */
uint32_t rm_resolver_refresh_ms(uint32_t ttl_s, uint32_t min_ms, uint32_t max_ms);

#endif
