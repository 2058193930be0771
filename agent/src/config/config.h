/*
 * The agent's runtime configuration: one immutable, reference-counted snapshot.
 *
 * A snapshot is built whole by a producer (the bootstrap YAML parser, the quick command-line flags,
 * and later the control-plane translation), validated, and then only read. Workers keep a
 * reference while they use it and streams keep a reference to the snapshot they started with, so a
 * reload never changes what an in-flight request sees. Everything a snapshot points to is owned by
 * it and freed by the last rm_config_unref().
 *
 * Thread-safety: rm_config_ref/unref may be called from any thread (atomic). Nothing else mutates
 * a published snapshot.
 */
#ifndef remora__config_h
#define remora__config_h

#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/types.h>

typedef enum en_rm_upstream_protocol_t {
    RM_UPSTREAM_HTTP1 = 0,
    RM_UPSTREAM_H2 = 1,
    /** HTTP/2 if the TLS handshake negotiates "h2" by ALPN, else HTTP/1.1 (plain TCP: HTTP/1.1) */
    RM_UPSTREAM_AUTO = 2,
    /** opaque TCP: bytes are relayed as they are (a Service with `protocol: tcp`); HTTP requests that
     * still reach such a cluster are sent as HTTP/1.1 */
    RM_UPSTREAM_TCP = 3,
} rm_upstream_protocol_t;

/**
 * Which way a listener's traffic goes (docs/transparent.md). Explicit listeners are NONE; the
 * transparent listeners of `--transparent` are OUTBOUND (the pod's app -> the mesh, port 15001) or
 * INBOUND (the mesh -> the pod's app, port 15006). Metrics and logs read it as
 * `stream->listener->direction` (rm_config_direction_name gives "outbound" / "inbound" / "none").
 */
typedef enum en_rm_direction_t {
    RM_DIRECTION_NONE = 0,
    RM_DIRECTION_OUTBOUND = 1,
    RM_DIRECTION_INBOUND = 2,
} rm_direction_t;

typedef enum en_rm_path_match_t {
    RM_PATH_MATCH_ANY = 0,
    RM_PATH_MATCH_PREFIX = 1,
    RM_PATH_MATCH_EXACT = 2,
    /** PCRE2 regular expression matched against the whole path (anchored at both ends) */
    RM_PATH_MATCH_REGEX = 3,
} rm_path_match_t;

/** A socket address plus the source line it was declared on. */
typedef struct st_rm_config_addr_t {
    struct sockaddr_storage addr;
    socklen_t addrlen;
    /** line of the declaration in the source file, 0 if unknown (defaults, command line) */
    unsigned line;
} rm_config_addr_t;

/**
 * An IP address and port in 28 bytes, where a snapshot holds thousands (an endpoint per Service and more; a
 * sockaddr_storage is 128 bytes): the socket address is built on the caller's stack when it is needed
 * (rm_config_ip_to_sockaddr), plus the source line it was declared on.
 */
typedef struct st_rm_config_ip_t {
    /** AF_INET or AF_INET6; 0: none */
    uint16_t family;
    /** host byte order */
    uint16_t port;
    /** AF_INET6: the scope (interface index), 0 for none */
    uint32_t scope_id;
    /** the address in network byte order: the first 4 bytes for AF_INET, all 16 for AF_INET6 */
    uint8_t bytes[16];
    /** line of the declaration in the source file, 0 if unknown */
    unsigned line;
} rm_config_ip_t;

/** Builds the socket address of `ip` in `out` (zeroed first) and returns its length, or 0 (out zeroed) when
 * `ip` holds no AF_INET / AF_INET6 address. Any thread. */
socklen_t rm_config_ip_to_sockaddr(const rm_config_ip_t *ip, struct sockaddr_storage *out);
/** Sets `ip` (all but `line`) from an AF_INET or AF_INET6 socket address. Returns 0, or -1 for another family
 * (then `ip` is unchanged). Any thread. */
int rm_config_ip_set(rm_config_ip_t *ip, const struct sockaddr *sa);

typedef struct st_rm_config_endpoint_t {
    /** host as written: an IP literal or a DNS name (owned) */
    char *host;
    /** the identity this endpoint's agent presents ("/ns/NS/sa/SA", owned) when it is not the cluster's
     * peer_identity (a Service endpoint with its own serviceAccount); NULL: the cluster's */
    char *peer_identity;
    /** the address when is_ip (rm_config_ip_to_sockaddr); its line in any case */
    rm_config_ip_t addr;
    /** load-balancing weight (default 1; every address a host name resolves to gets it) */
    uint32_t weight;
    uint16_t port;
    /** 1 if `host` is an IP literal; then `addr` is filled in */
    uint8_t is_ip;
} rm_config_endpoint_t;

/*
 * Backend and limit policy (BackendTrafficPolicy / RateLimitPolicy from the control plane; the
 * bootstrap's per-cluster and per-route keys). Plain data, interpreted by agent/src/upstream
 * (balancers, breakers, outlier detection, health checks) and agent/src/filters (rate limits).
 */
typedef enum en_rm_lb_type_t {
    RM_LB_DEFAULT = 0, /* PeakEWMA for HTTP/2 and gRPC clusters, RoundRobin for HTTP/1.1 */
    RM_LB_ROUND_ROBIN = 1,
    RM_LB_LEAST_REQUEST = 2, /* power of two choices over active requests */
    RM_LB_PEAK_EWMA = 3,     /* power of two choices over peak-EWMA latency x (active + 1), Linkerd's */
    RM_LB_RING_HASH = 4,     /* consistent hash: the route's sessionPersistence key, else the source address */
} rm_lb_type_t;

/** Circuit breakers of a cluster, agent-wide (all workers together). 0 means no limit. */
typedef struct st_rm_config_breakers_t {
    uint32_t max_connections;      /* default 1024; shared out with at least one per worker per endpoint */
    uint32_t max_pending_requests; /* default 1024: waiting for a connection or a stream */
    uint32_t max_requests;         /* default 4096: active at once */
    uint32_t max_retries;          /* default 64: retries in flight at once */
} rm_config_breakers_t;

/** Outlier detection (passive), agent-wide per endpoint address. `enabled` 0: off (the default). */
typedef struct st_rm_config_outlier_t {
    int enabled;
    uint32_t consecutive_5xx;            /* 0: not by 5xx (default 5) */
    uint32_t consecutive_gateway_errors; /* connect failure, reset, 502/503/504, gRPC UNAVAILABLE; 0: off (default 5) */
    uint32_t interval_ms;                /* default 10000 */
    uint32_t base_ejection_ms;           /* default 30000, x times ejected */
    uint32_t max_ejection_ms;            /* default 300000 */
    uint32_t max_ejection_percent;       /* default 50 */
} rm_config_outlier_t;

/** Active health checking. `enabled` 0: off (the default). */
typedef struct st_rm_config_health_check_t {
    int enabled;
    /** 1: grpc.health.v1.Health/Check with `grpc_service`; 0: HTTP GET of `http_path` (2xx healthy) */
    int grpc;
    char *http_path;              /* owned */
    char *grpc_service;           /* owned, "" for the whole server */
    uint32_t interval_ms;         /* default 5000 */
    uint32_t timeout_ms;          /* default 1000 */
    uint32_t healthy_threshold;   /* default 2 */
    uint32_t unhealthy_threshold; /* default 3 */
} rm_config_health_check_t;

typedef enum en_rm_session_persistence_t {
    RM_SESSION_NONE = 0,
    RM_SESSION_HEADER = 1, /* the value of header `name` */
    RM_SESSION_COOKIE = 2, /* the value of cookie `name` */
} rm_session_persistence_t;

typedef enum en_rm_client_key_t {
    RM_CLIENT_KEY_IDENTITY = 0, /* the mTLS peer identity, else the source address (default) */
    RM_CLIENT_KEY_SOURCE = 1,   /* the source address */
    RM_CLIENT_KEY_HEADER = 2,   /* the value of `header` */
} rm_client_key_t;

typedef struct st_rm_config_rate_override_t {
    uint32_t requests_per_second;
    uint32_t burst; /* 0: = requests_per_second */
    char **clients; /* owned: identities, addresses, or header values */
    size_t num_clients;
} rm_config_rate_override_t;

/** A local rate limit (GCRA), agent-wide. A zero rate disables that part. */
typedef struct st_rm_config_rate_limit_t {
    /** the policy's name, the key of its agent-wide buckets and of its counters (owned) */
    char *name;
    uint32_t total_rps, total_burst;
    uint32_t per_client_rps, per_client_burst;
    rm_client_key_t client_key;
    char *client_header; /* owned, lower-case; with RM_CLIENT_KEY_HEADER */
    rm_config_rate_override_t *overrides;
    size_t num_overrides;
    /** bound of the per-client table (LRU; default 10000) */
    uint32_t max_clients;
} rm_config_rate_limit_t;

/*
 * Authorization (AuthorizationPolicy from the control plane; the bootstrap's per-route and
 * per-cluster `authorization`). Plain data, interpreted by agent/src/filters/authz*.c, which
 * documents the semantics. Patterns (identities, paths) are exact, or a prefix when they end in '*'.
 */
typedef enum en_rm_authz_action_t {
    RM_AUTHZ_ALLOW = 0,
    RM_AUTHZ_DENY = 1,
    RM_AUTHZ_AUDIT = 2,
} rm_authz_action_t;

/** A caller: exactly one of the lists is non-empty (owned strings). */
typedef struct st_rm_config_authz_from_t {
    char **identities; /* SPIFFE IDs or prefixes */
    size_t num_identities;
    char **namespaces; /* the "ns" segment of the caller's SPIFFE ID */
    size_t num_namespaces;
} rm_config_authz_from_t;

/** A request: each non-empty list must match (owned strings). */
typedef struct st_rm_config_authz_to_t {
    char **methods; /* upper case */
    size_t num_methods;
    char **paths; /* without the query */
    size_t num_paths;
    char **grpc_methods; /* "pkg.Service/Method", or a prefix ending in a star */
    size_t num_grpc_methods;
} rm_config_authz_to_t;

typedef struct st_rm_config_authz_rule_t {
    rm_config_authz_from_t *from; /* empty: any caller */
    size_t num_from;
    rm_config_authz_to_t *to; /* empty: any request */
    size_t num_to;
} rm_config_authz_rule_t;

typedef struct st_rm_config_authz_policy_t {
    /** the policy's name: its counters' label ("<namespace>/<name>" from the control plane; owned) */
    char *name;
    rm_authz_action_t action;
    rm_config_authz_rule_t *rules; /* empty: the policy matches no request */
    size_t num_rules;
} rm_config_authz_policy_t;

/** The authorization policies of one target (a route, or a cluster = a Service). */
typedef struct st_rm_config_authz_t {
    rm_config_authz_policy_t *policies;
    size_t num_policies;
} rm_config_authz_t;

typedef struct st_rm_config_header_match_t {
    /** lower-cased header name (owned) */
    char *name;
    /** exact value to match (owned), or NULL to match on presence only */
    char *value;
    /** 1: `value` is a PCRE2 regular expression matched against the whole field value */
    int is_regex;
} rm_config_header_match_t;

/*
 * Request policy of a route (bootstrap YAML per route; HTTPRoute/GRPCRoute rule fields from the
 * control plane). All of it is plain data: the hot-path code in agent/src/policy and
 * agent/src/filters interprets it. Every `*_per_million` is a probability in parts per million
 * (Gateway API `percent: 10` is 100000).
 */

/** Retry conditions (bit set in rm_config_retry_t.conditions); Envoy's names. */
#define RM_RETRY_ON_CONNECT_FAILURE 0x1u /* connect refused / timed out / TLS failure / no endpoint */
#define RM_RETRY_ON_REFUSED_STREAM 0x2u  /* REFUSED_STREAM, or a stream id above a GOAWAY's last-stream-id */
#define RM_RETRY_ON_RESET 0x4u           /* the upstream reset or closed before any response head */

typedef struct st_rm_config_retry_t {
    /** retries after the first try (GEP-1731 `attempts`); 0: the route has no retry policy */
    uint32_t attempts;
    /** base of the full-jitter exponential backoff (default 25 ms) and its cap (default 10x base) */
    uint32_t backoff_base_ms;
    uint32_t backoff_max_ms;
    /** RM_RETRY_ON_* bits */
    uint32_t conditions;
    /** HTTP statuses retried (owned, sorted ascending at validation) */
    uint16_t *http_statuses;
    size_t num_http_statuses;
    /** gRPC statuses retried: bit (1 << code) for codes 0..16, read from trailers-only responses and trailers */
    uint32_t grpc_status_mask;
    /** request bodies up to this size are kept for replay (default 65536); larger ones are not retried.
     * 0 means exactly that (only requests without a body are retried), except in a policy whose
     * backoff_base_ms is 0 too: rm_config_validate then takes the numbers as unset and fills in
     * every default. Producers call rm_config_retry_set_defaults() before setting fields. */
    uint32_t max_replay_bytes;
} rm_config_retry_t;

/**
 * A header field to set or add (owned strings; the name lower-cased at validation). Pseudo-header
 * fields, hop-by-hop fields (connection, keep-alive, proxy-connection, te, transfer-encoding,
 * upgrade) and content-length are refused by validation: framing and connection management are
 * the agent's. In a request modifier `host` may only be set, and setting it sets the request's
 * authority (:authority in HTTP/2, Host in HTTP/1.1).
 */
typedef struct st_rm_config_header_t {
    char *name;
    char *value;
} rm_config_header_t;

/** Gateway API HTTPHeaderFilter: set (replace all of that name), add (append), remove (all of that name). */
typedef struct st_rm_config_header_mod_t {
    rm_config_header_t *set;
    size_t num_set;
    rm_config_header_t *add;
    size_t num_add;
    char **remove;
    size_t num_remove;
} rm_config_header_mod_t;

/** RequestMirror: a copy of the request to another cluster, response discarded. */
typedef struct st_rm_config_mirror_t {
    char *cluster_name; /* owned; resolved into cluster_index at validation */
    size_t cluster_index;
    uint32_t per_million; /* default 1000000 (every request) */
} rm_config_mirror_t;

/** FaultInjection (ExtensionRef filter / bootstrap `fault:`). A zero per_million disables that half. */
typedef struct st_rm_config_fault_t {
    uint32_t delay_ms;
    uint32_t delay_per_million;
    /** answer locally with this HTTP status (0: none) ... */
    uint16_t abort_http_status;
    /** ... or, for gRPC requests, this gRPC status (-1: none; a gRPC request with only an HTTP status gets the mapped gRPC status)
     */
    int abort_grpc_status;
    uint32_t abort_per_million;
} rm_config_fault_t;

typedef enum en_rm_path_rewrite_t {
    RM_PATH_REWRITE_NONE = 0,
    RM_PATH_REWRITE_FULL = 1,   /* ReplaceFullPath */
    RM_PATH_REWRITE_PREFIX = 2, /* ReplacePrefixMatch: replaces the route's PathPrefix match */
} rm_path_rewrite_t;

/** RequestRedirect (Gateway API): answers the request with a redirect, never reaches a backend. */
typedef struct st_rm_config_redirect_t {
    char *scheme;         /* owned, NULL: the request's */
    char *hostname;       /* owned, NULL: the request's */
    int port;             /* 0: the scheme's default / the request's */
    uint16_t status_code; /* 301, 302, 303, 307 or 308 (0 at validation: 302) */
    rm_path_rewrite_t path_type;
    char *path; /* owned; with path_type != NONE */
} rm_config_redirect_t;

/** URLRewrite (Gateway API): rewrites the authority and/or path before the request goes upstream. */
typedef struct st_rm_config_url_rewrite_t {
    char *hostname; /* owned, NULL: keep */
    rm_path_rewrite_t path_type;
    char *path; /* owned; with path_type != NONE */
} rm_config_url_rewrite_t;

/** One backend of a weighted split (canary): a share `weight` / total of the requests. */
typedef struct st_rm_config_backend_t {
    /** cluster name (owned), resolved into cluster_index at validation */
    char *cluster_name;
    size_t cluster_index;
    uint32_t weight;
} rm_config_backend_t;

typedef struct st_rm_config_route_t {
    /* What rm_router_match reads for every route it tests comes first (the first cache line: the conditions, the
     * Service, the flags); the policy blocks that most routes leave at their defaults are pointers, NULL when
     * absent (a route per Service and more, issue 12). */
    /**
     * Authorities (Host / :authority) this route answers, lower-cased, exact match, with or
     * without ":port" (the port is stripped from the request before comparison if no entry has one).
     * A leading "*." matches any subdomain. Empty: any authority.
     */
    char **authorities;
    uint32_t num_authorities;
    rm_path_match_t path_match;
    /** path or prefix (owned), NULL for RM_PATH_MATCH_ANY */
    char *path;
    /** request method to match exactly (owned), NULL for any */
    char *method;
    rm_config_header_match_t *headers;
    uint32_t num_headers;
    /** the Service (cluster index) whose routes this one is part of, when has_service (the control-plane
     * translation sets it: the parentRef). A Service listener (transparent outbound, docs/transparent.md)
     * matches a route of its Service by it; without it, by the route's clusters. */
    uint32_t service_cluster;
    unsigned line;
    /** sessionPersistence (an rm_session_persistence_t): endpoint choice by consistent hash of this key, whatever
     * the cluster's balancer (the key's name: session_name) */
    uint8_t session_persistence;
    unsigned has_service : 1;
    /** `authorities` belongs to another route of the same snapshot (the control-plane translation gives
     * every route of a Service one list): freed with that route, not this one */
    unsigned authorities_borrowed : 1;
    /** index into rm_config_t.clusters, resolved at validation (with backends: the first backend's).
     * A route with `redirect` answers the request itself and uses no cluster: its cluster_index is
     * RM_CONFIG_NO_CLUSTER unless a cluster was given anyway, and the data path must not use it. */
    size_t cluster_index;
    /** weighted split over several clusters; empty: every request goes to cluster_index */
    rm_config_backend_t *backends;
    uint32_t num_backends;
    /** time from the request's arrival to the end of the response, 0 for none: past it the proxy
     * answers 504 / DEADLINE_EXCEEDED (or ends a started response) and cancels the upstream */
    uint32_t timeout_ms;
    /** sum of the backends' weights (> 0 when num_backends > 0), set at validation */
    uint64_t total_weight;
    /** per-try timeout (Gateway API `backendRequest`), 0 for none: an attempt that has no response head by then is
     * abandoned (retried if the policy allows, else 504 / DEADLINE_EXCEEDED) */
    uint32_t per_try_timeout_ms;
    uint32_t num_mirrors;
    /** the retry policy (owned), NULL for none (as `attempts` 0); producers get one with rm_config_route_retry */
    rm_config_retry_t *retry;
    /** compiled regular expressions for RM_PATH_MATCH_REGEX and regex header matches, owned by the
     * snapshot and built at validation (opaque here: see config/regex.h) */
    void *_compiled;
    /** optional name for stats and logs (owned, may be NULL) */
    char *name;
    /** header modifiers (owned), NULL for none (as empty lists); producers get one with rm_config_route_header_mod */
    rm_config_header_mod_t *request_headers;
    rm_config_header_mod_t *response_headers;
    /** RequestMirror filters (num_mirrors of them) */
    rm_config_mirror_t *mirrors;
    /** fault injection (owned), NULL for none */
    rm_config_fault_t *fault;
    /** RequestRedirect (owned), NULL for none; a route with a redirect needs no cluster */
    rm_config_redirect_t *redirect;
    /** URLRewrite (owned), NULL for none */
    rm_config_url_rewrite_t *url_rewrite;
    char *session_name; /* owned; header name lower-cased, or cookie name */
    /** a rate limit on this route (owned), NULL for none */
    rm_config_rate_limit_t *rate_limit;
    /** the authorization policies that target this route (owned), NULL for none */
    rm_config_authz_t *authz;
    /**
     * name of the target cluster as written (owned). rm_config_validate resolves it into
     * cluster_index; a producer that sets cluster_index directly leaves it NULL.
     */
    char *cluster_name;
} rm_config_route_t;

/** rm_config_route_t.cluster_index of a route that sends nothing upstream (a redirect without a cluster). */
#define RM_CONFIG_NO_CLUSTER SIZE_MAX

#define RM_LISTENER_USES_FAULT 0x1u
#define RM_LISTENER_USES_REDIRECT 0x2u
#define RM_LISTENER_USES_HEADER_MODIFIERS 0x4u
#define RM_LISTENER_USES_URL_REWRITE 0x8u
/* a route of the listener has a rate limit (a cluster's is applied by the router, whatever the listener) */
#define RM_LISTENER_USES_RATE_LIMIT 0x10u
/* a route of the listener has authorization policies (a cluster's are applied by the router) */
#define RM_LISTENER_USES_AUTHZ 0x20u
#define RM_LISTENER_USES_ALL 0x3fu

typedef struct st_rm_config_listener_t {
    /** name for stats (owned); "listener0"... if not given */
    char *name;
    rm_config_addr_t addr;
    /** TLS: PEM certificate chain and key files (owned), both NULL for cleartext */
    char *tls_cert_file;
    char *tls_key_file;
    /** routes, first match wins */
    rm_config_route_t *routes;
    size_t num_routes;
    /** RM_LISTENER_USES_* bits: the request filters some route of the listener needs (set by
     * rm_config_validate), so that a listener's streams run only those */
    unsigned filters;
    unsigned line;
    /** transparent interception (docs/transparent.md): NONE for an explicit listener. A transparent
     * listener reads the original destination (SO_ORIGINAL_DST) of each connection and sends what it
     * does not recognise as HTTP on as opaque TCP. */
    rm_direction_t direction;
    /** INBOUND: forward to 127.0.0.1 / ::1 at the original port instead of the original address */
    unsigned inbound_to_localhost : 1;
    /** `peer: agent`: the callers are agents, so the HTTP/2 codec honours the marker fields (RM_MARKER_* in
     * proxy/message.h) instead of only removing them; an INBOUND transparent listener does too */
    unsigned peer_agent : 1;
    /** `protocol: tcp` on an explicit listener: every connection is relayed as opaque TCP to
     * `tcp_cluster_name` (owned), resolved into tcp_cluster_index at validation; no detection */
    unsigned opaque : 1;
    char *tcp_cluster_name;
    size_t tcp_cluster_index;
    /** transparent listeners: original destination ports that skip detection and are relayed as
     * opaque TCP at once (server-speaks-first protocols; owned, sorted). rm_config_validate fills
     * the default list (rm_config_default_opaque_ports) when the producer left it NULL. */
    uint16_t *opaque_ports;
    size_t num_opaque_ports;
    /**
     * A Service listener (set by rm_config_validate, never by producers): the view of the OUTBOUND
     * transparent listener `parent` for connections whose original destination is a virtual address
     * of cluster `service_cluster`. It borrows the parent's routes (routes_borrowed) and
     * rm_router_match considers only the routes of that Service, without comparing the authority
     * (the address chose the Service): with service_routes_indexed, only those of `routes` from
     * service_route_first, service_route_count of them (the span of the Service's routes, rm_config_validate;
     * when every route of the parent names its Service, as the control-plane translation's do), else all; `fallback_route`
     * (rm_config_t._fallback_routes: one per cluster) sends what none of them matches to the Service's cluster; `name` is the
     * parent's (borrowed). Ordinary listeners have fallback_route NULL (service_cluster and parent are then SIZE_MAX once
     * validated). An ordinary listener may borrow the routes of an earlier listener too
     * (routes_borrowed: the control-plane translation gives every listener one list): it serves the
     * same routes, validated once.
     */
    size_t service_cluster;
    size_t parent;
    rm_config_route_t *fallback_route;
    unsigned routes_borrowed : 1;
    unsigned service_routes_indexed : 1;
    /** `protocol: h2` on an explicit listener: HTTP/2 only (prior knowledge in cleartext, ALPN h2 only over TLS); every
     * connection goes to the HTTP/2 server, so a bad preface gets GOAWAY PROTOCOL_ERROR (docs/hardening.md) */
    unsigned h2_only : 1;
    /** connections open at once on this listener, across workers (0: no limit); more are accepted and closed at once,
     * counted in remora_downstream_connections_refused_total{reason="max_connections"} */
    uint32_t max_connections;
    uint32_t service_route_first;
    uint32_t service_route_count;
} rm_config_listener_t;

typedef struct st_rm_config_cluster_t {
    char *name;
    rm_config_endpoint_t *endpoints;
    /* (the fields are ordered so that the 4-byte ones pair up: one cluster per Service, issue 12) */
    uint32_t num_endpoints;
    rm_upstream_protocol_t protocol;
    /** upstream TLS: enabled flag, CA bundle to verify the peer (owned, NULL: system default), name to verify and send as SNI
     * (owned, NULL: the endpoint host), optional client certificate and key (owned, may be NULL) */
    int tls;
    /** the Service's virtual addresses: how many (see `addresses`) */
    uint32_t num_addresses;
    char *tls_ca_file;
    char *tls_server_name;
    char *tls_cert_file;
    char *tls_key_file;
    uint32_t connect_timeout_ms;
    /** HTTP/2 connections kept per endpoint per worker (streams are spread over them) */
    uint32_t h2_connections;
    /** idle HTTP/1.1 connections kept per endpoint per worker */
    uint32_t h1_max_idle;
    /** re-resolution interval bounds for DNS endpoints: the record TTL clamped into [min, max] */
    uint32_t dns_min_refresh_ms;
    uint32_t dns_max_refresh_ms;
    /** a pooled upstream connection unused this long is closed (default 4000 ms: below the 5 s
     * keep-alive timeouts of Node.js and others, so the pool closes first) */
    uint32_t pool_idle_timeout_ms;
    /** a request with no bytes either way for this long ends (default 300000 ms; 0: none) */
    uint32_t stream_idle_timeout_ms;
    /** retry budget (GEP-3388 retryConstraint): retries may add `budget_percent` % of the requests
     * seen in the last `budget_interval_ms`, and at least `min_retry_count` per `min_retry_interval_ms`
     * (defaults 20 %, 10 s, 10, 1 s) */
    uint32_t budget_percent;
    uint32_t budget_interval_ms;
    uint32_t min_retry_count;
    uint32_t min_retry_interval_ms;
    rm_lb_type_t lb;
    /** RingHash: minimum ring entries (default 1024, at most 8388608) */
    uint32_t ring_min_size;
    rm_config_breakers_t breakers;
    rm_config_outlier_t outlier;
    rm_config_health_check_t health_check;
    /** a rate limit on requests routed to this cluster (a RateLimitPolicy targeting the Service; owned), NULL for none */
    rm_config_rate_limit_t *rate_limit;
    /** the authorization policies that target the Service (owned; an inbound cluster shares its Service's), NULL for none */
    rm_config_authz_t *authz;
    /** the Service's virtual addresses (`spec.addresses`, IP literal + port; owned): an outbound
     * transparent connection whose original destination is one of them goes to this cluster */
    rm_config_addr_t *addresses;
    /** an inbound cluster built by rm_config_validate (never by producers): one endpoint of Service
     * `inbound_service` served by this node, reached at its own address (or loopback with
     * inbound_to_localhost); it shares that Service's rate_limit (not owned here) */
    size_t inbound_service;
    unsigned line;
    unsigned inbound : 1;
    /** `peer: agent`: the endpoints are agents (their inbound listeners); over HTTP/2 the requests carry the marker
     * fields (original protocol, HTTP/1.1 name case) and responses' markers are honoured (docs/architecture.md) */
    unsigned peer_agent : 1;
    /** the Service's endpoints run an agent (control plane: a Service's `spec.meshed`, true by default) */
    unsigned meshed : 1;
    /** set by rm_config_validate, never by producers: `meshed`, an HTTP Service (not tcp, not an inbound
     * cluster) and the config has an OUTBOUND transparent listener. The connections to its endpoints
     * are then intercepted by the peer agents' inbound listeners, so every request except an Upgrade
     * goes over HTTP/2 with the `peer: agent` markers whatever `protocol` says; `protocol` stays the
     * application's, which the serving agent's inbound cluster speaks (docs/transparent.md) */
    unsigned agent_hop : 1;
    /** the SPIFFE ID the endpoints' agents must present on the mesh mTLS hop (owned, NULL: unknown): a whole one
     * ("spiffe://TD/ns/NS/sa/SA", the bootstrap's `mesh_identity`), or "/ns/NS/sa/SA" in the agent's own trust
     * domain (the control-plane translation, from the Service's namespace and `spec.serviceAccount`). With agent_hop or peer_agent,
     * an agent identity and a mode other than DISABLE, connections to the endpoints are mesh mTLS verified against it (tls/mesh.h,
     * docs/mesh-tls.md). One identity for every endpoint today; a per-endpoint one (headless Services, pods addressed directly)
     * would sit on rm_config_endpoint_t. */
    char *peer_identity;
} rm_config_cluster_t;

typedef struct st_rm_config_limits_t {
    /** request/response header fields per message (default 100); more: 431 / RST_STREAM */
    uint32_t max_headers;
    /** total bytes of a header block (default 64 KiB); more: 431 / RST_STREAM */
    uint32_t max_header_bytes;
    /** HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS advertised downstream (default 1024) */
    uint32_t h2_max_concurrent_streams;
    /** HTTP/2 per-stream receive window and the per-stream body buffer bound (default 256 KiB) */
    uint32_t stream_window_bytes;
    /** HTTP/2 per-connection receive window (default 4 MiB) */
    uint32_t connection_window_bytes;
    /** idle timeout of downstream and pooled upstream connections (default 300 s) */
    uint32_t idle_timeout_ms;
    /** how long a new connection may take to send its first bytes (protocol detection, default 10 s) */
    uint32_t detect_timeout_ms;
    /** how long a connection to an opaque destination waits for a peer agent's mesh ClientHello before it is taken for
     * plaintext (net/listener.c; default RM_CONFIG_DEFAULT_MESH_SNIFF_TIMEOUT_MS, at most detect_timeout_ms applies;
     * --mesh-sniff-timeout-ms) */
    uint32_t mesh_sniff_timeout_ms;
    /** series per labelled metric family (docs/metrics.md; default 2000); a new label set over it is dropped and counted */
    uint32_t max_series_per_family;
    /* HTTP/2 abuse limits (Envoy's defaults; docs/hardening.md). Over a limit: GOAWAY ENHANCE_YOUR_CALM, counted in
     * remora_downstream_h2_abuse_total, logged once per connection. */
    /** premature resets are judged once this many streams have closed on a connection (default 500) */
    uint32_t h2_premature_reset_min_streams;
    /** a stream reset by the client (or by the agent because of the client's frames) within this time of its start and
     * before any response head is premature; more than half premature closes the connection (default 1000 ms) */
    uint32_t h2_premature_reset_window_ms;
    /** consecutive DATA/HEADERS/CONTINUATION frames with an empty payload and no END_STREAM (default 1) */
    uint32_t h2_max_consecutive_empty_frames;
    /** PRIORITY frames per stream opened: more than this x (1 + streams) (default 100) */
    uint32_t h2_max_priority_frames_per_stream;
    /** WINDOW_UPDATE frames: more than 5 + 2 x (streams + this x DATA frames sent) (default 10) */
    uint32_t h2_max_window_update_frames_per_data_frame_sent;
    /** control frames (SETTINGS/PING ACKs, RST_STREAM) queued for a peer that does not read (default 1000) */
    uint32_t h2_max_outbound_control_frames;
    /** frames of any type queued and not yet written to the socket (default 10000) */
    uint32_t h2_max_outbound_frames;
    /* Downstream request limits (docs/hardening.md "HTTP/1.1 limits"), counted in remora_downstream_limit_total{kind}. */
    /** bytes of a request target / :path (default 16384); more: 414 */
    uint32_t max_request_uri_bytes;
    /** HTTP/1.1: from the first byte of a request head to its end (default 10000 ms; 0: none); over: 408 and close */
    uint32_t request_headers_timeout_ms;
    /** request body bytes (default 0: no limit); more: 413 before the response started, else a reset */
    uint32_t max_request_body_bytes;
} rm_config_limits_t;

/* limits.mesh_sniff_timeout_ms: a mesh caller sends its ClientHello as soon as TCP is connected, the default covers a
 * retransmission or two; the range is checked in the file and on the command line */
#define RM_CONFIG_DEFAULT_MESH_SNIFF_TIMEOUT_MS 500
#define RM_CONFIG_MIN_MESH_SNIFF_TIMEOUT_MS 1
#define RM_CONFIG_MAX_MESH_SNIFF_TIMEOUT_MS 60000

/** Where spans go (the Telemetry kind's tracing.otlp; the bootstrap's telemetry.tracing). */
typedef enum en_rm_otlp_protocol_t {
    RM_OTLP_GRPC = 0, /* OTLP/gRPC: opentelemetry.proto.collector.trace.v1.TraceService/Export */
    RM_OTLP_HTTP = 1, /* OTLP/HTTP protobuf: POST /v1/traces, application/x-protobuf */
} rm_otlp_protocol_t;

/** Tracing. `enabled` 0 (the default): no span is built or exported. */
typedef struct st_rm_config_tracing_t {
    int enabled;
    /** "IP:PORT" of the OTLP receiver (owned) */
    char *otlp_endpoint;
    rm_otlp_protocol_t protocol;
    /** share of requests without a sampling decision that are sampled, 0..100 (default 0) */
    double sampling_percent;
    /** formats injected upstream (both are always extracted; W3C wins when both are present) */
    unsigned propagate_w3c : 1;
    unsigned propagate_b3 : 1;
    /** the resource's service.name (owned; NULL: "remora-agent") */
    char *service_name;
    /** spans per export batch (default 512), longest wait before a partial batch goes (default 1000 ms) */
    uint32_t batch_size;
    uint32_t batch_timeout_ms;
    /** bound of the export queue in spans (default 4096); a full queue drops and counts */
    uint32_t queue_size;
    unsigned line;
} rm_config_tracing_t;

/** JSON access log. `enabled` 0 (the default): nothing is formatted or written. */
typedef struct st_rm_config_access_log_t {
    int enabled;
    /** "stdout" or a file path (owned); a file is reopened on SIGUSR1 */
    char *path;
    /** bound of the buffer between the workers and the writer (default 1 MiB); a full buffer drops and counts */
    uint32_t buffer_bytes;
    unsigned line;
} rm_config_access_log_t;

typedef struct st_rm_config_telemetry_t {
    rm_config_tracing_t tracing;
    rm_config_access_log_t access_log;
} rm_config_telemetry_t;

/** The MeshTLS mode (mesh-wide; the MeshTLS kind, the bootstrap's `mesh_tls.mode`; docs/mesh-tls.md). */
typedef enum en_rm_mesh_tls_mode_t {
    RM_MESH_TLS_PERMISSIVE = 0, /* the default: mesh mTLS out; mTLS and plaintext accepted in */
    RM_MESH_TLS_STRICT = 1,     /* mesh mTLS out; plaintext HTTP to a Service this node serves is refused */
    RM_MESH_TLS_DISABLE = 2,    /* plaintext out; mesh mTLS that arrives is still terminated */
} rm_mesh_tls_mode_t;

typedef struct st_rm_config_mesh_tls_t {
    rm_mesh_tls_mode_t mode;
    /** bootstrap `mesh_tls.identity_dir`: a directory holding identity.key, identity.crt and trust-bundle.pem
     * (tls/identity.h) that the agent serves with when it has no --identity-token (owned, NULL: none) */
    char *identity_dir;
    unsigned line;
} rm_config_mesh_tls_t;

typedef struct st_rm_config_t {
    /** reference count; use rm_config_ref/unref */
    int _refcnt;
    /** where it came from, for messages: a file path, "command line", or "control plane" (owned) */
    char *source;
    /** monotonically increasing within the process; set when published */
    uint64_t generation;
    /** version string reported by the producer (owned, may be NULL) */
    char *version;
    /** control-plane mode before the first snapshot: requests get 503 / UNAVAILABLE "not configured yet" */
    int awaiting_snapshot;
    /** a control-plane snapshot of a scope (Snapshot.scoped): a request whose authority matches no route may be
     * held while the agent asks the control plane for the name (config/ondemand.h) */
    unsigned scoped : 1;

    unsigned num_workers;
    rm_config_addr_t admin_addr;
    rm_config_addr_t health_addr;
    uint32_t drain_timeout_ms;
    rm_config_limits_t limits;
    /** DNS servers for c-ares as "IP:PORT" strings (owned); empty: c-ares' defaults */
    char **dns_servers;
    size_t num_dns_servers;

    rm_config_listener_t *listeners;
    size_t num_listeners;
    rm_config_cluster_t *clusters;
    size_t num_clusters;
    /** tracing and access logs (the Telemetry kind; the bootstrap's `telemetry`) */
    rm_config_telemetry_t telemetry;
    /** mesh mTLS between agents (the MeshTLS kind; the bootstrap's `mesh_tls`) */
    rm_config_mesh_tls_t mesh_tls;
    /** the namespace the agent's workload runs in (`--namespace`; owned; NULL: unknown): a Telemetry there
     * overrides the root namespace's */
    char *agent_namespace;
    /** Service listeners (see rm_config_listener_t.service_cluster), built by rm_config_validate; no socket
     * is opened for them. One per OUTBOUND transparent listener and virtual address of a cluster (routes:
     * the parent's, restricted to that Service), and one per INBOUND transparent listener and IP endpoint
     * of a cluster, i.e. per Service this node may serve (addr: the endpoint; service_cluster: its inbound
     * cluster, appended to `clusters` with `inbound` set; no routes: the fallback route goes there) */
    rm_config_listener_t *service_listeners;
    size_t num_service_listeners;
    /** this agent's own addresses (rm_config_learn_local_addresses: the host's or pod's interfaces; IPv4 as
     * IPv4-mapped IPv6; sorted; owned), when `local_addrs_known`. Then an INBOUND Service listener (and its
     * inbound cluster) is built only for an IP endpoint at one of them or on loopback (127.0.0.0/8, ::1): a
     * control-plane snapshot lists the endpoints of the whole mesh, and only the agent's own can be the original
     * destination of an inbound connection. Unknown (bootstrap files, quick flags): every IP endpoint, as written. */
    struct in6_addr *local_addrs;
    size_t num_local_addrs;
    unsigned local_addrs_known : 1;
    /** the Service listeners' fallback routes, one per cluster that has a Service listener (owned; the
     * listeners point into it), and the Service listeners' indexes sorted by (parent, address) for
     * rm_config_find_service_listener */
    rm_config_route_t *_fallback_routes;
    size_t *_service_listener_index;
    /** clusters a `clusters` array in the arena has room for (the translation reserves room for the inbound
     * clusters rm_config_validate appends; when they do not fit, the array moves to the heap) */
    size_t _clusters_capacity;
    /** where a generated config's small objects live (rm_config_arena_alloc), freed as a whole with it */
    struct st_rm_config_arena_t *_arena;
} rm_config_t;

/** An error with a location; filled by the producers below. */
typedef struct st_rm_config_error_t {
    char file[256];
    unsigned line;
    char message[512];
} rm_config_error_t;

/** Formats an error as "FILE:LINE: MESSAGE" into buf. */
const char *rm_config_error_format(const rm_config_error_t *err, char *buf, size_t bufsz);

/** Allocates a snapshot holding the defaults (refcount 1, no listeners or clusters). Aborts on OOM. Any thread. */
rm_config_t *rm_config_create_defaults(void);
/**
 * Fills a cluster with the default settings (protocol http1, connect_timeout_ms 1000, h2_connections 1,
 * h1_max_idle 64, DNS refresh 1000..300000 ms, pool idle 4 s, stream idle 5 min, retry budget 20 % over 10 s
 * plus 10 per second, no TLS); pointer fields are set to NULL, nothing is
 * freed. For producers that build clusters by hand. Any thread.
 */
void rm_config_cluster_set_defaults(rm_config_cluster_t *cluster);
/**
 * Fills a retry policy with the defaults of an enabled policy minus the attempts (attempts 0, backoff 25 ms
 * capped at 250 ms, no conditions, no statuses, max_replay_bytes 65536); nothing is freed. Any thread.
 */
void rm_config_retry_set_defaults(rm_config_retry_t *retry);
/**
 * The retry policy of route `r` (of `config`), created zeroed when the route has none (attempts 0: no retry,
 * as the absent policy; a producer then calls rm_config_retry_set_defaults before setting fields): in the
 * config's arena when it has one (a generated config), else from the heap; owned by the route either way.
 * For producers, before validation. Aborts on OOM.
 */
rm_config_retry_t *rm_config_route_retry(rm_config_t *config, rm_config_route_t *r);
/** The request (`response` 0) or response (1) header modifier of route `r`, created empty when the route has none
 * (as rm_config_route_retry). For producers. Aborts on OOM. */
rm_config_header_mod_t *rm_config_route_header_mod(rm_config_t *config, rm_config_route_t *r, int response);

/**
 * Parses and validates the bootstrap YAML file at `path`. Returns a new snapshot (refcount 1), or
 * NULL with `err` filled (file, line and a message naming what to fix). Any thread; no I/O but
 * reading the file (certificate files are checked for readability, not loaded).
 */
rm_config_t *rm_config_load_file(const char *path, rm_config_error_t *err);
/**
 * Same, from a string; `name` is used as the file name in errors and its directory (if it has one)
 * as the base of relative TLS file paths. `yaml` need not be NUL-terminated.
 */
rm_config_t *rm_config_load_string(const char *yaml, size_t len, const char *name, rm_config_error_t *err);

/** The quick flags: one listener on `listen` routing everything to one cluster at `upstream`. */
typedef struct st_rm_config_quick_t {
    const char *listen;            /* "ADDR:PORT" */
    const char *upstream;          /* "HOST:PORT" */
    const char *upstream_protocol; /* "h2" | "http1" | "auto", NULL: http1 */
    unsigned workers;              /* 0: default */
} rm_config_quick_t;

/** Builds a snapshot from quick flags. Returns NULL with `err` (file "command line") on bad values. */
rm_config_t *rm_config_from_quick(const rm_config_quick_t *quick, rm_config_error_t *err);

/**
 * Validates cross references and values of a snapshot built by a producer and resolves
 * rm_config_route_t.cluster_index (from cluster_name when set) and every mirror's cluster_index. It
 * also normalizes: unnamed listeners get "listener<index>", authorities, header names (matches and
 * modifiers) and redirect/rewrite host names are lower-cased, retry statuses sorted and
 * deduplicated, defaults filled into enabled retry policies and redirects, and the routes' regular
 * expressions compiled into rm_config_route_t._compiled (freed with the snapshot). Returns 0, or -1
 * with `err` (file = config->source, line = the offending object's line). Producers call it before
 * returning; the snapshot must not be published yet. Calling it again on the same snapshot is allowed.
 */
int rm_config_validate(rm_config_t *config, rm_config_error_t *err);

/**
 * Renders the snapshot as JSON (for /config_dump), in the shape of the bootstrap YAML plus "source",
 * "generation" and "version". Returns a malloc'ed NUL-terminated string (caller frees); aborts on OOM.
 * Any thread.
 */
char *rm_config_to_json(const rm_config_t *config);

/** Takes a reference (atomic, any thread); returns `config`. */
rm_config_t *rm_config_ref(rm_config_t *config);
/** Drops a reference (atomic, any thread); the last one frees the snapshot and all it owns. NULL is ignored. */
void rm_config_unref(rm_config_t *config);

/**
 * Memory for the small objects of a generated config (the control-plane translation: names, authorities,
 * paths, endpoints): zeroed, aligned for any type, in pages of the config's own (mmap) that are returned
 * to the system when the config is freed, instead of one malloc chunk each. What is allocated here is
 * never freed alone: the config's destructor and anyone replacing such a field must skip it
 * (rm_config_free_owned). The arena grows by blocks of 16 KiB to 1 MiB; its size is bounded by the
 * snapshot's (RM_H2RPC_MAX_MESSAGE_BYTES, 16 MiB).
 */
void *rm_config_arena_alloc(rm_config_t *config, size_t size);
char *rm_config_arena_strdup(rm_config_t *config, const char *s);
/** free(p) unless p is in the config's arena. */
void rm_config_free_owned(const rm_config_t *config, void *p);
/** Frees routes that `owner` (whose arena they may use) does not hold, and the array. */
void rm_config_free_routes(const rm_config_t *owner, rm_config_route_t *routes, size_t n);

/** Frees authorization policies (NULL allowed). Any thread. */
void rm_config_authz_free(rm_config_authz_t *authz);
/** A deep copy of `authz` (NULL for NULL); aborts on OOM. Any thread. */
rm_config_authz_t *rm_config_authz_copy(const rm_config_authz_t *authz);

/**
 * The Service listener of OUTBOUND listener `listener_index` for original destination `dst` (the
 * cluster whose `addresses` hold it), or SIZE_MAX. Linear in the number of virtual addresses. Any thread.
 */
size_t rm_config_find_service_listener(const rm_config_t *config, size_t listener_index, const struct sockaddr *dst);
/** Most local addresses rm_config_learn_local_addresses takes; with more, they stay unknown (every endpoint). */
#define RM_CONFIG_MAX_LOCAL_ADDRS 1024
/**
 * Fills config->local_addrs from the interfaces' addresses (getifaddrs: the network namespace of the
 * calling thread) and sets local_addrs_known. Returns 0, or -1 (getifaddrs failed, or more than
 * RM_CONFIG_MAX_LOCAL_ADDRS addresses) with nothing changed, so that every IP endpoint keeps its
 * inbound Service listener. Call before rm_config_validate. Any thread; one netlink dump.
 */
int rm_config_learn_local_addresses(rm_config_t *config);
/** 1 if INBOUND Service listeners are built for `addr` (AF_INET or AF_INET6): local_addrs unknown, a loopback
 * address, or one of local_addrs. Any thread. */
int rm_config_addr_is_local(const rm_config_t *config, const struct sockaddr *addr);
/** 1 if original destination port `port` skips detection on listener `l` (its opaque_ports). Any thread. */
int rm_config_port_is_opaque(const rm_config_listener_t *l, uint16_t port);
/** "PERMISSIVE", "STRICT" or "DISABLE". */
const char *rm_config_mesh_tls_mode_name(rm_mesh_tls_mode_t mode);
/** "outbound", "inbound" or "none". */
const char *rm_config_direction_name(rm_direction_t direction);
/** The default opaque (server-speaks-first) ports of transparent listeners, sorted (docs/transparent.md). */
extern const uint16_t rm_config_default_opaque_ports[];
extern const size_t rm_config_num_default_opaque_ports;

/** Finds a cluster by name; returns its index or -1. Linear: for setup, not per request. */
ssize_t rm_config_find_cluster(const rm_config_t *config, const char *name);

#endif
