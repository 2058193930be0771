/*
 * Snapshot lifecycle, defaults, validation and the quick-flag producer.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>
#include "remora/log.h"
#include "remora/strutil.h"
#include "config/config.h"
#include "config/config_priv.h"
#include "config/regex.h"

#define RANGE(type, field, lo, hi)                                                                                                 \
    {                                                                                                                              \
#field, offsetof(type, field), (lo), (hi)                                                                                  \
    }

const rm_config_range_t rm_config__limit_ranges[] = {
    RANGE(rm_config_limits_t, max_headers, 1, 10000),
    RANGE(rm_config_limits_t, max_header_bytes, 1024, 16 * 1024 * 1024),
    /* HTTP/2 caps windows and stream counts at 2^31-1; a connection window below the RFC's initial 65535 cannot be
     * expressed, since it can only be grown by WINDOW_UPDATE */
    RANGE(rm_config_limits_t, h2_max_concurrent_streams, 1, 0x7fffffff),
    RANGE(rm_config_limits_t, stream_window_bytes, 1, 0x7fffffff),
    RANGE(rm_config_limits_t, connection_window_bytes, 65535, 0x7fffffff),
    RANGE(rm_config_limits_t, idle_timeout_ms, 1, UINT32_MAX),
    RANGE(rm_config_limits_t, detect_timeout_ms, 1, UINT32_MAX),
    RANGE(rm_config_limits_t, mesh_sniff_timeout_ms, RM_CONFIG_MIN_MESH_SNIFF_TIMEOUT_MS, RM_CONFIG_MAX_MESH_SNIFF_TIMEOUT_MS),
    RANGE(rm_config_limits_t, max_series_per_family, 1, 100000),
    RANGE(rm_config_limits_t, h2_premature_reset_min_streams, 1, UINT32_MAX),
    RANGE(rm_config_limits_t, h2_premature_reset_window_ms, 1, 3600000),
    RANGE(rm_config_limits_t, h2_max_consecutive_empty_frames, 0, UINT32_MAX),
    RANGE(rm_config_limits_t, h2_max_priority_frames_per_stream, 0, 1000000),
    RANGE(rm_config_limits_t, h2_max_window_update_frames_per_data_frame_sent, 1, 1000000),
    RANGE(rm_config_limits_t, h2_max_outbound_control_frames, 1, 1000000),
    RANGE(rm_config_limits_t, h2_max_outbound_frames, 1, 1000000),
    RANGE(rm_config_limits_t, max_request_uri_bytes, 64, 16 * 1024 * 1024),
    RANGE(rm_config_limits_t, request_headers_timeout_ms, 0, UINT32_MAX),
    RANGE(rm_config_limits_t, max_request_body_bytes, 0, UINT32_MAX),
};
const size_t rm_config__num_limit_ranges = sizeof(rm_config__limit_ranges) / sizeof(rm_config__limit_ranges[0]);

const rm_config_range_t rm_config__cluster_ranges[] = {
    RANGE(rm_config_cluster_t, connect_timeout_ms, 1, UINT32_MAX),
    RANGE(rm_config_cluster_t, h2_connections, 1, 64),
    RANGE(rm_config_cluster_t, h1_max_idle, 0, 65535),
    {"dns.min_refresh_ms", offsetof(rm_config_cluster_t, dns_min_refresh_ms), 1, UINT32_MAX},
    {"dns.max_refresh_ms", offsetof(rm_config_cluster_t, dns_max_refresh_ms), 1, UINT32_MAX},
    RANGE(rm_config_cluster_t, pool_idle_timeout_ms, 1, RM_CONFIG_MAX_ROUTE_MS),
    RANGE(rm_config_cluster_t, stream_idle_timeout_ms, 0, RM_CONFIG_MAX_ROUTE_MS),
};
const size_t rm_config__num_cluster_ranges = sizeof(rm_config__cluster_ranges) / sizeof(rm_config__cluster_ranges[0]);

const rm_config_range_t rm_config__budget_ranges[] = {
    {"percent", offsetof(rm_config_cluster_t, budget_percent), 0, 100},
    /* Gateway API GEP-3388: "interval can not be greater than one hour or less than one second" */
    {"interval_ms", offsetof(rm_config_cluster_t, budget_interval_ms), 1000, 3600000},
    {"min_retry_count", offsetof(rm_config_cluster_t, min_retry_count), 0, 1000000},
    {"min_retry_interval_ms", offsetof(rm_config_cluster_t, min_retry_interval_ms), 1000, 3600000},
};
const size_t rm_config__num_budget_ranges = sizeof(rm_config__budget_ranges) / sizeof(rm_config__budget_ranges[0]);

const rm_config_range_t rm_config__breaker_ranges[] = {
    RANGE(rm_config_breakers_t, max_connections, 0, 1000000),
    RANGE(rm_config_breakers_t, max_pending_requests, 0, 1000000),
    RANGE(rm_config_breakers_t, max_requests, 0, 1000000),
    RANGE(rm_config_breakers_t, max_retries, 0, 1000000),
};
const size_t rm_config__num_breaker_ranges = sizeof(rm_config__breaker_ranges) / sizeof(rm_config__breaker_ranges[0]);

const rm_config_range_t rm_config__outlier_ranges[] = {
    RANGE(rm_config_outlier_t, consecutive_5xx, 0, 1000000),
    RANGE(rm_config_outlier_t, consecutive_gateway_errors, 0, 1000000),
    RANGE(rm_config_outlier_t, interval_ms, 1, RM_CONFIG_MAX_ROUTE_MS),
    RANGE(rm_config_outlier_t, base_ejection_ms, 1, RM_CONFIG_MAX_ROUTE_MS),
    RANGE(rm_config_outlier_t, max_ejection_ms, 1, RM_CONFIG_MAX_ROUTE_MS),
    RANGE(rm_config_outlier_t, max_ejection_percent, 0, 100),
};
const size_t rm_config__num_outlier_ranges = sizeof(rm_config__outlier_ranges) / sizeof(rm_config__outlier_ranges[0]);

const rm_config_range_t rm_config__health_ranges[] = {
    RANGE(rm_config_health_check_t, interval_ms, 100, RM_CONFIG_MAX_ROUTE_MS),
    RANGE(rm_config_health_check_t, timeout_ms, 1, RM_CONFIG_MAX_ROUTE_MS),
    RANGE(rm_config_health_check_t, healthy_threshold, 1, 1000000),
    RANGE(rm_config_health_check_t, unhealthy_threshold, 1, 1000000),
};
const size_t rm_config__num_health_ranges = sizeof(rm_config__health_ranges) / sizeof(rm_config__health_ranges[0]);

const char *const rm_config__lb_type_names[RM_CONFIG_NUM_LB_TYPES] = {"default", "round_robin", "least_request", "peak_ewma",
                                                                      "ring_hash"};
const char *const rm_config__client_key_names[RM_CONFIG_NUM_CLIENT_KEYS] = {"identity", "source_address", "header"};

const rm_config_flag_name_t rm_config__retry_conditions[] = {
    {"connect-failure", RM_RETRY_ON_CONNECT_FAILURE},
    {"refused-stream", RM_RETRY_ON_REFUSED_STREAM},
    {"reset", RM_RETRY_ON_RESET},
    {NULL, 0},
};

#undef RANGE

int
rm_config__error(rm_config_error_t *err, const char *file, unsigned line, const char *fmt, ...)
{
    va_list ap;
    snprintf(err->file, sizeof(err->file), "%s", file != NULL ? file : "(config)");
    err->line = line;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    return -1;
}

const char *
rm_config_error_format(const rm_config_error_t *err, char *buf, size_t bufsz)
{
    if (err->line != 0)
        snprintf(buf, bufsz, "%s:%u: %s", err->file, err->line, err->message);
    else
        snprintf(buf, bufsz, "%s: %s", err->file, err->message);
    return buf;
}

static int
parse_port(const char *s, size_t len, uint16_t *port)
{
    unsigned long v = 0;
    if (len == 0 || len > 5)
        return -1;
    for (size_t i = 0; i != len; ++i) {
        if (!isdigit((unsigned char)s[i]))
            return -1;
        v = v * 10 + (unsigned)(s[i] - '0');
    }
    if (v < 1 || v > 65535)
        return -1;
    *port = (uint16_t)v;
    return 0;
}

const char *
rm_config__split_host_port(const char *s, const char **host, size_t *host_len, uint16_t *port)
{
    const char *colon;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (close == NULL)
            return "missing ']' after the IPv6 address";
        if (close[1] != ':')
            return "missing ':PORT' after the IPv6 address";
        *host = s + 1;
        *host_len = close - s - 1;
        colon = close + 1;
    } else {
        if ((colon = strrchr(s, ':')) == NULL)
            return "expected HOST:PORT (the port is required)";
        if (memchr(s, ':', colon - s) != NULL)
            return "IPv6 addresses must be written in brackets, as [::1]:PORT";
        *host = s;
        *host_len = colon - s;
    }
    if (parse_port(colon + 1, strlen(colon + 1), port) != 0)
        return "port must be 1-65535";
    return NULL;
}

const char *
rm_config__parse_bind_addr(const char *s, rm_config_addr_t *addr)
{
    const char *host, *reason;
    size_t host_len;
    uint16_t port;
    char buf[INET6_ADDRSTRLEN];
    struct sockaddr_in *sin = (void *)&addr->addr;
    struct sockaddr_in6 *sin6 = (void *)&addr->addr;

    if ((reason = rm_config__split_host_port(s, &host, &host_len, &port)) != NULL)
        return reason;
    if (host_len >= sizeof(buf))
        return "address must be an IP literal (a listening address cannot be a DNS name)";
    memcpy(buf, host, host_len);
    buf[host_len] = '\0';
    memset(&addr->addr, 0, sizeof(addr->addr));
    if (s[0] == '[') {
        if (inet_pton(AF_INET6, buf, &sin6->sin6_addr) != 1)
            return "not a valid IPv6 address";
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        addr->addrlen = sizeof(*sin6);
        return NULL;
    }
    if (host_len == 0 || strcmp(buf, "*") == 0) {
        sin->sin_addr.s_addr = htonl(INADDR_ANY);
    } else if (inet_pton(AF_INET, buf, &sin->sin_addr) != 1) {
        return "address must be an IP literal (a listening address cannot be a DNS name)";
    }
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    addr->addrlen = sizeof(*sin);
    return NULL;
}

static int
valid_dns_name(const char *s, size_t len)
{
    size_t label = 0;
    if (len == 0 || len > 253)
        return 0;
    for (size_t i = 0; i != len; ++i) {
        unsigned char c = s[i];
        if (c == '.') {
            if (label == 0)
                return 0;
            label = 0;
        } else if (isalnum(c) || c == '-' || c == '_') {
            if (++label > 63)
                return 0;
        } else {
            return 0;
        }
    }
    return 1;
}

const char *
rm_config__parse_endpoint(const char *s, rm_config_endpoint_t *ep)
{
    const char *host, *reason;
    size_t host_len;
    uint16_t port;
    char buf[INET6_ADDRSTRLEN];

    if ((reason = rm_config__split_host_port(s, &host, &host_len, &port)) != NULL)
        return reason;
    if (host_len == 0)
        return "host is empty";
    memset(ep, 0, sizeof(*ep));
    if (host_len < sizeof(buf)) {
        memcpy(buf, host, host_len);
        buf[host_len] = '\0';
        if (s[0] != '[' && inet_pton(AF_INET, buf, ep->addr.bytes) == 1) {
            ep->addr.family = AF_INET;
            ep->addr.port = port;
            ep->is_ip = 1;
        } else if (s[0] == '[') {
            if (inet_pton(AF_INET6, buf, ep->addr.bytes) != 1)
                return "not a valid IPv6 address";
            ep->addr.family = AF_INET6;
            ep->addr.port = port;
            ep->is_ip = 1;
        }
    }
    if (!ep->is_ip && !valid_dns_name(host, host_len))
        return "host must be an IP literal or a DNS name (letters, digits, '-', '_' and dots)";
    ep->host = rm_strndup(host, host_len);
    ep->port = port;
    return NULL;
}

socklen_t
rm_config_ip_to_sockaddr(const rm_config_ip_t *ip, struct sockaddr_storage *out)
{
    memset(out, 0, sizeof(*out));
    if (ip->family == AF_INET) {
        struct sockaddr_in *sin = (struct sockaddr_in *)out;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(ip->port);
        memcpy(&sin->sin_addr, ip->bytes, sizeof(sin->sin_addr));
        return sizeof(*sin);
    }
    if (ip->family == AF_INET6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)out;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(ip->port);
        memcpy(&sin6->sin6_addr, ip->bytes, sizeof(sin6->sin6_addr));
        sin6->sin6_scope_id = ip->scope_id;
        return sizeof(*sin6);
    }
    return 0;
}

int
rm_config_ip_set(rm_config_ip_t *ip, const struct sockaddr *sa)
{
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)sa;
        ip->family = AF_INET;
        ip->port = ntohs(sin->sin_port);
        ip->scope_id = 0;
        memset(ip->bytes, 0, sizeof(ip->bytes));
        memcpy(ip->bytes, &sin->sin_addr, sizeof(sin->sin_addr));
        return 0;
    }
    if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)sa;
        ip->family = AF_INET6;
        ip->port = ntohs(sin6->sin6_port);
        ip->scope_id = sin6->sin6_scope_id;
        memcpy(ip->bytes, &sin6->sin6_addr, sizeof(ip->bytes));
        return 0;
    }
    return -1;
}

char *
rm_config__normalize_dns_server(const char *s, const char **reason)
{
    rm_config_addr_t addr;
    char buf[96];
    struct sockaddr_in *sin = (void *)&addr.addr;
    struct sockaddr_in6 *sin6 = (void *)&addr.addr;

    memset(&addr, 0, sizeof(addr));
    /* a bare address means the standard port */
    if (inet_pton(AF_INET, s, &sin->sin_addr) == 1) {
        sin->sin_family = AF_INET;
        sin->sin_port = htons(53);
    } else if (inet_pton(AF_INET6, s, &sin6->sin6_addr) == 1) {
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(53);
    } else if ((*reason = rm_config__parse_bind_addr(s, &addr)) != NULL) {
        if (strcmp(*reason, "address must be an IP literal (a listening address cannot be a DNS name)") == 0)
            *reason = "a DNS server must be an IP literal";
        return NULL;
    } else if (addr.addr.ss_family == AF_INET && sin->sin_addr.s_addr == htonl(INADDR_ANY)) {
        *reason = "a DNS server must be an IP literal";
        return NULL;
    }
    return rm_strdup(rm_format_sockaddr((struct sockaddr *)&addr.addr, buf, sizeof(buf)));
}

const char *
rm_config__check_readable(const char *path, char *buf, size_t bufsz)
{
    struct stat st;
    int fd;
    if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
        snprintf(buf, bufsz, "cannot read: %s", strerror(errno));
        return buf;
    }
    int ok = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    close(fd);
    if (!ok) {
        snprintf(buf, bufsz, "not a regular file");
        return buf;
    }
    return NULL;
}

const char *
rm_config__check_otlp_endpoint(const char *s)
{
    const char *host, *reason;
    size_t host_len;
    uint16_t port;
    char buf[INET6_ADDRSTRLEN];
    unsigned char bin[sizeof(struct in6_addr)];

    if ((reason = rm_config__split_host_port(s, &host, &host_len, &port)) != NULL)
        return reason;
    if (host_len == 0 || host_len >= sizeof(buf))
        return "the receiver must be an IP literal and a port (127.0.0.1:4317, [::1]:4318)";
    memcpy(buf, host, host_len);
    buf[host_len] = '\0';
    if (inet_pton(s[0] == '[' ? AF_INET6 : AF_INET, buf, bin) != 1)
        return "the receiver must be an IP literal and a port (127.0.0.1:4317, [::1]:4318)";
    return NULL;
}

const char *
rm_config__check_log_path(const char *path, char *buf, size_t bufsz)
{
    struct stat st;
    if (strcmp(path, "stdout") == 0)
        return NULL;
    if (path[0] == '\0')
        return "must be stdout or a file path";
    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) {
            snprintf(buf, bufsz, "is a directory, not a file");
            return buf;
        }
        if (access(path, W_OK) != 0) {
            snprintf(buf, bufsz, "cannot be written: %s", strerror(errno));
            return buf;
        }
        return NULL;
    }
    if (errno != ENOENT) {
        snprintf(buf, bufsz, "cannot be used: %s", strerror(errno));
        return buf;
    }
    /* the file may be created later, by the writer: its directory must exist and be writable now */
    char dir[4096];
    const char *slash = strrchr(path, '/');
    if (slash == NULL) {
        snprintf(dir, sizeof(dir), ".");
    } else if (slash == path) {
        snprintf(dir, sizeof(dir), "/");
    } else if ((size_t)(slash - path) >= sizeof(dir)) {
        snprintf(buf, bufsz, "the path is too long");
        return buf;
    } else {
        memcpy(dir, path, slash - path);
        dir[slash - path] = '\0';
    }
    if (stat(dir, &st) != 0) {
        snprintf(buf, bufsz, "cannot be created: directory '%s': %s", dir, strerror(errno));
        return buf;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(buf, bufsz, "cannot be created: '%s' is not a directory", dir);
        return buf;
    }
    if (access(dir, W_OK | X_OK) != 0) {
        snprintf(buf, bufsz, "cannot be created in directory '%s': %s", dir, strerror(errno));
        return buf;
    }
    return NULL;
}

int
rm_config__valid_name(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > 128)
        return 0;
    for (size_t i = 0; i != len; ++i) {
        unsigned char c = name[i];
        if (!(isalnum(c) || c == '.' || c == '_' || c == '-' || c == ':' || c == '/'))
            return 0;
    }
    return 1;
}

int
rm_config__valid_rate_limit_name(const char *name)
{
    size_t len = strlen(name);
    if (len == 0 || len > RM_CONFIG_MAX_RATE_NAME)
        return 0;
    for (size_t i = 0; i != len; ++i) {
        unsigned char c = name[i];
        if (!(isalnum(c) || c == '.' || c == '_' || c == '-' || c == '/'))
            return 0;
    }
    return 1;
}

rm_lb_type_t
rm_config__effective_lb(const rm_config_cluster_t *cluster)
{
    if (cluster->lb != RM_LB_DEFAULT)
        return cluster->lb;
    return cluster->protocol == RM_UPSTREAM_HTTP1 ? RM_LB_ROUND_ROBIN : RM_LB_PEAK_EWMA;
}

void
rm_config_cluster_set_defaults(rm_config_cluster_t *cluster)
{
    memset(cluster, 0, sizeof(*cluster));
    cluster->protocol = RM_UPSTREAM_HTTP1;
    cluster->connect_timeout_ms = 1000;
    cluster->h2_connections = 1;
    cluster->h1_max_idle = 64;
    cluster->dns_min_refresh_ms = 1000;
    cluster->dns_max_refresh_ms = 300000;
    cluster->pool_idle_timeout_ms = 4000;
    cluster->stream_idle_timeout_ms = 300000;
    cluster->budget_percent = 20;
    cluster->budget_interval_ms = 10000;
    cluster->min_retry_count = 10;
    cluster->min_retry_interval_ms = 1000;
    cluster->ring_min_size = 1024;
    cluster->breakers.max_connections = 1024;
    cluster->breakers.max_pending_requests = 1024;
    cluster->breakers.max_requests = 4096;
    cluster->breakers.max_retries = 64;
    cluster->outlier.consecutive_5xx = 5;
    cluster->outlier.consecutive_gateway_errors = 5;
    cluster->outlier.interval_ms = 10000;
    cluster->outlier.base_ejection_ms = 30000;
    cluster->outlier.max_ejection_ms = 300000;
    cluster->outlier.max_ejection_percent = 50;
    cluster->health_check.interval_ms = 5000;
    cluster->health_check.timeout_ms = 1000;
    cluster->health_check.healthy_threshold = 2;
    cluster->health_check.unhealthy_threshold = 3;
}

void
rm_config_retry_set_defaults(rm_config_retry_t *retry)
{
    memset(retry, 0, sizeof(*retry));
    retry->backoff_base_ms = 25;
    retry->backoff_max_ms = 250;
    retry->max_replay_bytes = 65536;
}

static unsigned
default_workers(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        return 1;
    return n > RM_CONFIG_MAX_WORKERS ? RM_CONFIG_MAX_WORKERS : (unsigned)n;
}

rm_config_t *
rm_config_create_defaults(void)
{
    rm_config_t *c = rm_calloc(1, sizeof(*c));
    const char *reason;

    c->_refcnt = 1;
    c->num_workers = default_workers();
    if ((reason = rm_config__parse_bind_addr("127.0.0.1:15000", &c->admin_addr)) != NULL ||
        (reason = rm_config__parse_bind_addr("0.0.0.0:15020", &c->health_addr)) != NULL)
        abort();
    c->drain_timeout_ms = 10000;
    c->limits.max_headers = 100;
    c->limits.max_header_bytes = 64 * 1024;
    c->limits.h2_max_concurrent_streams = 1024;
    c->limits.stream_window_bytes = 256 * 1024;
    c->limits.connection_window_bytes = 4 * 1024 * 1024;
    c->limits.idle_timeout_ms = 300000;
    c->limits.detect_timeout_ms = 10000;
    c->limits.mesh_sniff_timeout_ms = RM_CONFIG_DEFAULT_MESH_SNIFF_TIMEOUT_MS;
    c->limits.max_series_per_family = 2000;
    c->limits.h2_premature_reset_min_streams = 500;
    c->limits.h2_premature_reset_window_ms = 1000;
    c->limits.h2_max_consecutive_empty_frames = 1;
    c->limits.h2_max_priority_frames_per_stream = 100;
    c->limits.h2_max_window_update_frames_per_data_frame_sent = 10;
    c->limits.h2_max_outbound_control_frames = 1000;
    c->limits.h2_max_outbound_frames = 10000;
    c->limits.max_request_uri_bytes = 16384;
    c->limits.request_headers_timeout_ms = 10000;
    c->limits.max_request_body_bytes = 0;
    /* tracing and access logs are off until configured; these are the values an enabled block starts from */
    c->telemetry.tracing.propagate_w3c = 1;
    c->telemetry.tracing.propagate_b3 = 1;
    c->telemetry.tracing.batch_size = 512;
    c->telemetry.tracing.batch_timeout_ms = 1000;
    c->telemetry.tracing.queue_size = 4096;
    c->telemetry.access_log.buffer_bytes = 1024 * 1024;
    return c;
}

rm_config_t *
rm_config_ref(rm_config_t *config)
{
    __atomic_add_fetch(&config->_refcnt, 1, __ATOMIC_RELAXED);
    return config;
}

/* --- the arena of a generated config (rm_config_arena_alloc) --- */

typedef struct st_rm_config_arena_block_t {
    struct st_rm_config_arena_block_t *next;
    size_t size, used;
} arena_block_t;

struct st_rm_config_arena_t {
    arena_block_t *blocks; /* the newest first */
    size_t total;
};

#define ARENA_ALIGN 16
#define ARENA_MIN_BLOCK (16u * 1024)
#define ARENA_MAX_BLOCK (1024u * 1024)

static size_t
align_up(size_t n, size_t a)
{
    return (n + a - 1) & ~(a - 1);
}

static void *
arena_alloc(rm_config_t *c, size_t size, size_t align)
{
    if (c->_arena == NULL)
        c->_arena = rm_calloc(1, sizeof(*c->_arena));
    struct st_rm_config_arena_t *a = c->_arena;
    arena_block_t *b = a->blocks;
    size_t off = b != NULL ? align_up(b->used, align) : 0;
    if (b == NULL || off + size > b->size) {
        /* blocks double with the arena (few blocks to search in rm_config_free_owned), bounded */
        size_t want = a->total < ARENA_MIN_BLOCK ? ARENA_MIN_BLOCK : a->total > ARENA_MAX_BLOCK ? ARENA_MAX_BLOCK : a->total;
        size_t need = align_up(sizeof(arena_block_t), ARENA_ALIGN) + size;
        if (want < need)
            want = align_up(need, 4096);
        void *p = mmap(NULL, want, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED)
            rm_fatal("out of memory (mmap of %zu bytes for the config)", want);
        b = p;
        b->size = want;
        b->used = align_up(sizeof(arena_block_t), ARENA_ALIGN);
        b->next = a->blocks;
        a->blocks = b;
        a->total += want;
        off = align_up(b->used, align);
    }
    b->used = off + size;
    return (char *)b + off; /* fresh anonymous pages are zero, and nothing here is reused */
}

void *
rm_config_arena_alloc(rm_config_t *config, size_t size)
{
    return arena_alloc(config, size != 0 ? size : 1, ARENA_ALIGN);
}

char *
rm_config_arena_strdup(rm_config_t *config, const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = arena_alloc(config, n, 1);
    memcpy(d, s, n);
    return d;
}

static int
in_arena(const struct st_rm_config_arena_t *a, const void *p)
{
    if (a == NULL)
        return 0;
    for (const arena_block_t *b = a->blocks; b != NULL; b = b->next)
        if ((const char *)p >= (const char *)b && (const char *)p < (const char *)b + b->size)
            return 1;
    return 0;
}

void
rm_config_free_owned(const rm_config_t *config, void *p)
{
    if (p != NULL && !in_arena(config->_arena, p))
        free(p);
}

static void
arena_destroy(struct st_rm_config_arena_t *a)
{
    if (a == NULL)
        return;
    while (a->blocks != NULL) {
        arena_block_t *b = a->blocks;
        a->blocks = b->next;
        munmap(b, b->size);
    }
    free(a);
}

static void
free_headers(rm_config_header_t *h, size_t n)
{
    for (size_t i = 0; i != n; ++i) {
        free(h[i].name);
        free(h[i].value);
    }
    free(h);
}

static void
free_header_mod(const rm_config_t *c, rm_config_header_mod_t *m)
{
    if (m == NULL)
        return;
    free_headers(m->set, m->num_set);
    free_headers(m->add, m->num_add);
    for (size_t i = 0; i != m->num_remove; ++i)
        free(m->remove[i]);
    free(m->remove);
    rm_config_free_owned(c, m);
}

static void
free_rate_limit(rm_config_rate_limit_t *rl)
{
    if (rl == NULL)
        return;
    free(rl->name);
    free(rl->client_header);
    for (size_t i = 0; i != rl->num_overrides; ++i) {
        for (size_t j = 0; j != rl->overrides[i].num_clients; ++j)
            free(rl->overrides[i].clients[j]);
        free(rl->overrides[i].clients);
    }
    free(rl->overrides);
    free(rl);
}

static void
free_route(const rm_config_t *c, rm_config_route_t *r)
{
    rm_config_free_owned(c, r->name);
    if (!r->authorities_borrowed) {
        for (size_t i = 0; i != r->num_authorities; ++i)
            rm_config_free_owned(c, r->authorities[i]);
        rm_config_free_owned(c, r->authorities);
    }
    rm_config_free_owned(c, r->path);
    for (size_t i = 0; i != r->num_headers; ++i) {
        rm_config_free_owned(c, r->headers[i].name);
        rm_config_free_owned(c, r->headers[i].value);
    }
    rm_config_free_owned(c, r->headers);
    rm_config_free_owned(c, r->method);
    for (size_t i = 0; i != r->num_backends; ++i)
        rm_config_free_owned(c, r->backends[i].cluster_name);
    rm_config_free_owned(c, r->backends);
    rm_config_free_owned(c, r->cluster_name);
    if (r->retry != NULL) {
        rm_config_free_owned(c, r->retry->http_statuses);
        rm_config_free_owned(c, r->retry);
    }
    free_header_mod(c, r->request_headers);
    free_header_mod(c, r->response_headers);
    for (size_t i = 0; i != r->num_mirrors; ++i)
        rm_config_free_owned(c, r->mirrors[i].cluster_name);
    rm_config_free_owned(c, r->mirrors);
    rm_config_free_owned(c, r->fault);
    if (r->redirect != NULL) {
        rm_config_free_owned(c, r->redirect->scheme);
        rm_config_free_owned(c, r->redirect->hostname);
        rm_config_free_owned(c, r->redirect->path);
        rm_config_free_owned(c, r->redirect);
    }
    if (r->url_rewrite != NULL) {
        rm_config_free_owned(c, r->url_rewrite->hostname);
        rm_config_free_owned(c, r->url_rewrite->path);
        rm_config_free_owned(c, r->url_rewrite);
    }
    rm_config_free_owned(c, r->session_name);
    free_rate_limit(r->rate_limit);
    rm_config_authz_free(r->authz);
    rm_route_compiled_free(r);
}

void
rm_config_free_routes(const rm_config_t *owner, rm_config_route_t *routes, size_t n)
{
    for (size_t i = 0; i != n; ++i)
        free_route(owner, routes + i);
    rm_config_free_owned(owner, routes);
}

static void
free_service_listeners(rm_config_t *c)
{
    /* a Service listener's name is its parent's; its fallback route is one of _fallback_routes (no
     * allocations of their own: free_route has nothing to free in them) */
    rm_config_free_owned(c, c->service_listeners);
    c->service_listeners = NULL;
    c->num_service_listeners = 0;
    rm_config_free_owned(c, c->_fallback_routes);
    c->_fallback_routes = NULL;
    rm_config_free_owned(c, c->_service_listener_index);
    c->_service_listener_index = NULL;
}

/*
 * Zeroed memory that lives as long as the config: in its arena when it has one (a generated config:
 * thousands of Service listeners, freed at once with it, not into the malloc arena of whichever thread
 * drops the last reference, where it would stay resident), else from the heap. Free with
 * rm_config_free_owned.
 */
static void *
config_calloc(rm_config_t *c, size_t n, size_t size)
{
    return c->_arena != NULL ? rm_config_arena_alloc(c, n * size) : rm_calloc(n, size);
}

rm_config_retry_t *
rm_config_route_retry(rm_config_t *config, rm_config_route_t *r)
{
    if (r->retry == NULL)
        r->retry = config_calloc(config, 1, sizeof(*r->retry));
    return r->retry;
}

rm_config_header_mod_t *
rm_config_route_header_mod(rm_config_t *config, rm_config_route_t *r, int response)
{
    rm_config_header_mod_t **m = response ? &r->response_headers : &r->request_headers;
    if (*m == NULL)
        *m = config_calloc(config, 1, sizeof(**m));
    return *m;
}

static void
destroy(rm_config_t *c)
{
    free_service_listeners(c);
    rm_config_free_owned(c, c->source);
    rm_config_free_owned(c, c->version);
    rm_config_free_owned(c, c->agent_namespace);
    for (size_t i = 0; i != c->num_dns_servers; ++i)
        rm_config_free_owned(c, c->dns_servers[i]);
    rm_config_free_owned(c, c->dns_servers);
    for (size_t i = 0; i != c->num_listeners; ++i) {
        rm_config_listener_t *l = c->listeners + i;
        rm_config_free_owned(c, l->name);
        rm_config_free_owned(c, l->tls_cert_file);
        rm_config_free_owned(c, l->tls_key_file);
        if (!l->routes_borrowed) {
            for (size_t j = 0; j != l->num_routes; ++j)
                free_route(c, l->routes + j);
            rm_config_free_owned(c, l->routes);
        }
        rm_config_free_owned(c, l->tcp_cluster_name);
        rm_config_free_owned(c, l->opaque_ports);
    }
    rm_config_free_owned(c, c->listeners);
    for (size_t i = 0; i != c->num_clusters; ++i) {
        rm_config_cluster_t *cl = c->clusters + i;
        rm_config_free_owned(c, cl->name);
        for (size_t j = 0; j != cl->num_endpoints; ++j) {
            rm_config_free_owned(c, cl->endpoints[j].host);
            rm_config_free_owned(c, cl->endpoints[j].peer_identity);
        }
        rm_config_free_owned(c, cl->endpoints);
        rm_config_free_owned(c, cl->tls_ca_file);
        rm_config_free_owned(c, cl->tls_server_name);
        rm_config_free_owned(c, cl->tls_cert_file);
        rm_config_free_owned(c, cl->tls_key_file);
        rm_config_free_owned(c, cl->peer_identity);
        rm_config_free_owned(c, cl->health_check.http_path);
        rm_config_free_owned(c, cl->health_check.grpc_service);
        if (!cl->inbound) {
            free_rate_limit(cl->rate_limit);
            rm_config_authz_free(cl->authz);
        }
        rm_config_free_owned(c, cl->addresses);
    }
    rm_config_free_owned(c, c->clusters);
    rm_config_free_owned(c, c->telemetry.tracing.otlp_endpoint);
    rm_config_free_owned(c, c->telemetry.tracing.service_name);
    rm_config_free_owned(c, c->telemetry.access_log.path);
    rm_config_free_owned(c, c->mesh_tls.identity_dir);
    free(c->local_addrs);
    arena_destroy(c->_arena);
    free(c);
}

void
rm_config_unref(rm_config_t *config)
{
    if (config == NULL)
        return;
    /* acq_rel: the thread that frees must see every other thread's last reads as finished */
    if (__atomic_sub_fetch(&config->_refcnt, 1, __ATOMIC_ACQ_REL) == 0)
        destroy(config);
}

ssize_t
rm_config_find_cluster(const rm_config_t *config, const char *name)
{
    for (size_t i = 0; i != config->num_clusters; ++i)
        if (strcmp(config->clusters[i].name, name) == 0)
            return (ssize_t)i;
    return -1;
}

/* --- validation --- */

static uint16_t
addr_port(const rm_config_addr_t *a)
{
    if (a->addr.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)&a->addr)->sin_port);
    if (a->addr.ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)&a->addr)->sin6_port);
    return 0;
}

static int
addr_is_any(const rm_config_addr_t *a)
{
    if (a->addr.ss_family == AF_INET)
        return ((const struct sockaddr_in *)&a->addr)->sin_addr.s_addr == htonl(INADDR_ANY);
    return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)&a->addr)->sin6_addr);
}

/* Two sockets of the same family and port collide if the addresses are equal or one is the wildcard. */
static int
addrs_conflict(const rm_config_addr_t *a, const rm_config_addr_t *b)
{
    if (a->addr.ss_family != b->addr.ss_family || addr_port(a) != addr_port(b))
        return 0;
    if (addr_is_any(a) || addr_is_any(b))
        return 1;
    if (a->addr.ss_family == AF_INET)
        return ((const struct sockaddr_in *)&a->addr)->sin_addr.s_addr == ((const struct sockaddr_in *)&b->addr)->sin_addr.s_addr;
    return memcmp(&((const struct sockaddr_in6 *)&a->addr)->sin6_addr, &((const struct sockaddr_in6 *)&b->addr)->sin6_addr,
                  sizeof(struct in6_addr)) == 0;
}

static const char *
check_addr(const rm_config_addr_t *a)
{
    if (a->addr.ss_family != AF_INET && a->addr.ss_family != AF_INET6)
        return "address is not set";
    if (addr_port(a) == 0)
        return "port must be 1-65535";
    return NULL;
}

static void
lower(char *s)
{
    for (; *s != '\0'; ++s)
        *s = tolower((unsigned char)*s);
}

static int
valid_token(const char *s)
{
    /* RFC 9110 tchar */
    if (*s == '\0')
        return 0;
    for (; *s != '\0'; ++s) {
        unsigned char c = *s;
        if (!(isalnum(c) || strchr("!#$%&'*+-.^_`|~", c) != NULL))
            return 0;
    }
    return 1;
}

int
rm_config__valid_token(const char *s)
{
    return valid_token(s);
}

static int
valid_field_value(const char *s)
{
    for (; *s != '\0'; ++s) {
        unsigned char c = *s;
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return 0;
    }
    return 1;
}

int
rm_config__grpc_status_code(const char *name)
{
    for (int i = 0; i != RM_GRPC_NUM_STATUSES; ++i)
        if (strcmp(rm_grpc_status_names[i], name) == 0)
            return i;
    return -1;
}

int
rm_config__parse_percent(const char *s, uint32_t *per_million)
{
    uint32_t whole = 0, frac = 0, scale = 10000;
    const char *p = s;
    if (!isdigit((unsigned char)*p))
        return -1;
    for (; isdigit((unsigned char)*p); ++p) {
        whole = whole * 10 + (uint32_t)(*p - '0');
        if (whole > 100)
            return -1;
    }
    if (*p == '.') {
        ++p;
        if (!isdigit((unsigned char)*p))
            return -1;
        for (; isdigit((unsigned char)*p); ++p) {
            /* a millionth of the whole is 0.0001 %: finer digits cannot be represented */
            if (scale == 1)
                return -1;
            scale /= 10;
            frac += (uint32_t)(*p - '0') * scale;
        }
    }
    if (*p != '\0' || whole * 10000 + frac > 1000000)
        return -1;
    *per_million = whole * 10000 + frac;
    return 0;
}

const char *
rm_config__format_percent(uint32_t per_million, char *buf, size_t bufsz)
{
    uint32_t frac = per_million % 10000;
    if (frac == 0) {
        snprintf(buf, bufsz, "%u", per_million / 10000);
    } else {
        int digits = 4;
        while (frac % 10 == 0) {
            frac /= 10;
            --digits;
        }
        snprintf(buf, bufsz, "%u.%0*u", per_million / 10000, digits, frac);
    }
    return buf;
}

const char *
rm_config__check_mod_header(const char *name, int request, rm_config_header_op_t op)
{
    static const char *const hop_by_hop[] = {"connection", "keep-alive", "proxy-connection", "te", "transfer-encoding", "upgrade"};
    if (name[0] == ':')
        return "is a pseudo-header field, which cannot be modified (to change the authority, set 'host')";
    if (!valid_token(name))
        return "is not a valid header name";
    for (size_t i = 0; i != sizeof(hop_by_hop) / sizeof(hop_by_hop[0]); ++i)
        if (strcasecmp(name, hop_by_hop[i]) == 0)
            return "is a hop-by-hop field: the agent manages it per connection";
    if (strcasecmp(name, "content-length") == 0)
        return "is part of the message framing, which the agent manages";
    if (request && op != RM_CONFIG_HEADER_SET && strcasecmp(name, "host") == 0)
        return "can only be set (setting it sets the request's authority)";
    return NULL;
}

const char *
rm_config__check_rewrite_path(rm_path_rewrite_t type, const char *path, rm_path_match_t route_match)
{
    if (type != RM_PATH_REWRITE_FULL && type != RM_PATH_REWRITE_PREFIX)
        return "type must be full or prefix";
    if (path == NULL || path[0] != '/')
        return "value must start with '/'";
    for (const char *p = path; *p != '\0'; ++p)
        if ((unsigned char)*p <= 0x20 || *p == 0x7f || *p == '?' || *p == '#')
            return "value must not contain '?', '#', whitespace or control characters";
    if (type == RM_PATH_REWRITE_PREFIX && route_match != RM_PATH_MATCH_PREFIX && route_match != RM_PATH_MATCH_ANY)
        return "type 'prefix' replaces the prefix the route matched, so the route must match with match.path.prefix (Gateway API "
               "ReplacePrefixMatch needs a PathPrefix match)";
    return NULL;
}

int
rm_config__valid_hostname(const char *s)
{
    return valid_dns_name(s, strlen(s));
}

/* A listener or endpoint description used in messages. */
static const char *
addr_str(const rm_config_addr_t *a, char *buf, size_t bufsz)
{
    return rm_format_sockaddr((const struct sockaddr *)&a->addr, buf, bufsz);
}

static const char *
suggest_cluster(const rm_config_t *c, const char *name)
{
    const char *best = NULL;
    size_t best_d = 3;
    for (size_t i = 0; i != c->num_clusters; ++i) {
        size_t d = rm_edit_distance(name, c->clusters[i].name, 2);
        if (d < best_d) {
            best_d = d;
            best = c->clusters[i].name;
        }
    }
    return best;
}

static int
validate_tls_files(rm_config_t *c, rm_config_error_t *err, unsigned line, const char *what, const char *const *keys,
                   char *const *files, size_t n)
{
    char buf[256];
    const char *reason;
    for (size_t i = 0; i != n; ++i) {
        if (files[i] != NULL && (reason = rm_config__check_readable(files[i], buf, sizeof(buf))) != NULL)
            return rm_config__error(err, c->source, line, "%s: tls.%s '%s': %s", what, keys[i], files[i], reason);
    }
    return 0;
}

static int
compare_u16(const void *a, const void *b)
{
    return (int)*(const uint16_t *)a - (int)*(const uint16_t *)b;
}

static int
validate_retry(rm_config_t *c, rm_config_route_t *r, const char *what, rm_config_error_t *err)
{
    rm_config_retry_t *rt = r->retry;

    if (r->per_try_timeout_ms > RM_CONFIG_MAX_ROUTE_MS)
        return rm_config__error(err, c->source, r->line, "%s: per_try_timeout_ms must be 0-%u, got %u", what,
                                RM_CONFIG_MAX_ROUTE_MS, r->per_try_timeout_ms);
    /* Gateway API: backendRequest must not exceed request */
    if (r->timeout_ms != 0 && r->per_try_timeout_ms > r->timeout_ms)
        return rm_config__error(err, c->source, r->line, "%s: per_try_timeout_ms (%u) must not exceed timeout_ms (%u)", what,
                                r->per_try_timeout_ms, r->timeout_ms);
    if (rt == NULL)
        return 0;
    if (rt->attempts > RM_CONFIG_MAX_RETRY_ATTEMPTS)
        return rm_config__error(err, c->source, r->line, "%s: retry.attempts must be 0-%d, got %u", what,
                                RM_CONFIG_MAX_RETRY_ATTEMPTS, rt->attempts);
    if (rt->attempts != 0) {
        /* a zero base (never valid) means the producer left the numbers unset: all of them get the defaults */
        if (rt->backoff_base_ms == 0) {
            rt->backoff_base_ms = 25;
            if (rt->max_replay_bytes == 0)
                rt->max_replay_bytes = 65536;
        }
        if (rt->backoff_max_ms == 0)
            rt->backoff_max_ms = rt->backoff_base_ms * 10;
    }
    if (rt->backoff_base_ms > RM_CONFIG_MAX_BACKOFF_MS)
        return rm_config__error(err, c->source, r->line, "%s: retry.backoff_ms must be 1-%d, got %u", what,
                                RM_CONFIG_MAX_BACKOFF_MS, rt->backoff_base_ms);
    if (rt->backoff_max_ms < rt->backoff_base_ms || rt->backoff_max_ms > RM_CONFIG_MAX_MAX_BACKOFF_MS)
        return rm_config__error(err, c->source, r->line, "%s: retry.max_backoff_ms must be retry.backoff_ms (%u)-%d, got %u", what,
                                rt->backoff_base_ms, RM_CONFIG_MAX_MAX_BACKOFF_MS, rt->backoff_max_ms);
    uint32_t known = 0;
    for (const rm_config_flag_name_t *f = rm_config__retry_conditions; f->name != NULL; ++f)
        known |= f->bit;
    if ((rt->conditions & ~known) != 0)
        return rm_config__error(err, c->source, r->line, "%s: retry.on has unknown condition bits 0x%x", what,
                                rt->conditions & ~known);
    if ((rt->grpc_status_mask >> RM_GRPC_NUM_STATUSES) != 0)
        return rm_config__error(err, c->source, r->line, "%s: retry.grpc_statuses: gRPC status codes are 0-16", what);
    if (rt->max_replay_bytes > RM_CONFIG_MAX_REPLAY_BYTES)
        return rm_config__error(err, c->source, r->line, "%s: retry.max_replay_bytes must be 0-%d, got %u", what,
                                RM_CONFIG_MAX_REPLAY_BYTES, rt->max_replay_bytes);
    if (rt->num_http_statuses != 0 && rt->http_statuses == NULL)
        return rm_config__error(err, c->source, r->line, "%s: retry.http_statuses is missing its array", what);
    for (size_t i = 0; i != rt->num_http_statuses; ++i)
        if (rt->http_statuses[i] < 100 || rt->http_statuses[i] > 599)
            return rm_config__error(err, c->source, r->line, "%s: retry.http_statuses must be 100-599, got %u", what,
                                    rt->http_statuses[i]);
    if (rt->num_http_statuses > 1) {
        qsort(rt->http_statuses, rt->num_http_statuses, sizeof(rt->http_statuses[0]), compare_u16);
        size_t n = 1;
        for (size_t i = 1; i != rt->num_http_statuses; ++i)
            if (rt->http_statuses[i] != rt->http_statuses[n - 1])
                rt->http_statuses[n++] = rt->http_statuses[i];
        rt->num_http_statuses = n;
    }
    return 0;
}

static int
validate_header_mod(rm_config_t *c, rm_config_route_t *r, const char *what, const char *key, rm_config_header_mod_t *m, int request,
                    rm_config_error_t *err)
{
    static const char *const ops[] = {"set", "add", "remove"};
    const char *reason;

    for (int op = RM_CONFIG_HEADER_SET; op <= RM_CONFIG_HEADER_REMOVE; ++op) {
        size_t n = op == RM_CONFIG_HEADER_SET ? m->num_set : op == RM_CONFIG_HEADER_ADD ? m->num_add : m->num_remove;
        for (size_t i = 0; i != n; ++i) {
            rm_config_header_t *h = op == RM_CONFIG_HEADER_SET ? m->set + i : op == RM_CONFIG_HEADER_ADD ? m->add + i : NULL;
            char *name = h != NULL ? h->name : m->remove[i];
            if (name == NULL)
                return rm_config__error(err, c->source, r->line, "%s: %s.%s[%zu]: a header name is required", what, key, ops[op],
                                        i);
            if ((reason = rm_config__check_mod_header(name, request, op)) != NULL)
                return rm_config__error(err, c->source, r->line, "%s: %s.%s '%s' %s", what, key, ops[op], name, reason);
            lower(name);
            if (h != NULL && (h->value == NULL || !valid_field_value(h->value)))
                return rm_config__error(err, c->source, r->line,
                                        "%s: %s.%s '%s': the value is missing or contains control characters", what, key, ops[op],
                                        name);
        }
    }
    /* Gateway API: a name appears at most once in `set` and in `remove` */
    for (size_t i = 0; i != m->num_set; ++i) {
        for (size_t j = 0; j != i; ++j)
            if (strcmp(m->set[i].name, m->set[j].name) == 0)
                return rm_config__error(err, c->source, r->line, "%s: %s.set '%s' is listed twice", what, key, m->set[i].name);
        for (size_t j = 0; j != m->num_remove; ++j)
            if (strcmp(m->set[i].name, m->remove[j]) == 0)
                return rm_config__error(err, c->source, r->line, "%s: %s: '%s' is both set and removed", what, key, m->set[i].name);
    }
    for (size_t i = 0; i != m->num_remove; ++i)
        for (size_t j = 0; j != i; ++j)
            if (strcmp(m->remove[i], m->remove[j]) == 0)
                return rm_config__error(err, c->source, r->line, "%s: %s.remove '%s' is listed twice", what, key, m->remove[i]);
    return 0;
}

static size_t
header_mod_count(const rm_config_header_mod_t *m)
{
    return m != NULL ? m->num_set + m->num_add + m->num_remove : 0;
}

static int
compare_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A rate limit of a route or a cluster (`what` ends in ": "), named `default_name` when it has no name. */
static int
validate_rate_limit(rm_config_t *c, rm_config_rate_limit_t *rl, unsigned line, const char *what, const char *default_name,
                    rm_config_error_t *err)
{
    /* the default name may hold characters a written one may not ('#', ':'): a second validation must accept it */
    if (rl->name == NULL)
        rl->name = rm_strdup(default_name);
    else if (strcmp(rl->name, default_name) != 0 && !rm_config__valid_rate_limit_name(rl->name))
        return rm_config__error(err, c->source, line, "%srate_limit.name '%s' may only contain letters, digits and . _ - / (1-%d)",
                                what, rl->name, RM_CONFIG_MAX_RATE_NAME);
    if (rl->total_rps > RM_CONFIG_MAX_RATE || rl->per_client_rps > RM_CONFIG_MAX_RATE)
        return rm_config__error(err, c->source, line, "%srate_limit: requests_per_second must be 1-%d, got %u", what,
                                RM_CONFIG_MAX_RATE, rl->total_rps > RM_CONFIG_MAX_RATE ? rl->total_rps : rl->per_client_rps);
    if (rl->total_burst > RM_CONFIG_MAX_RATE || rl->per_client_burst > RM_CONFIG_MAX_RATE)
        return rm_config__error(err, c->source, line, "%srate_limit: burst must be 0-%d, got %u", what, RM_CONFIG_MAX_RATE,
                                rl->total_burst > RM_CONFIG_MAX_RATE ? rl->total_burst : rl->per_client_burst);
    if (rl->total_rps == 0 && rl->per_client_rps == 0)
        return rm_config__error(err, c->source, line, "%srate_limit needs 'total' or 'per_client' (a positive requests_per_second)",
                                what);
    /* a burst of 0 means "as many as one second's rate", as when it is not given */
    if (rl->total_rps != 0 && rl->total_burst == 0)
        rl->total_burst = rl->total_rps;
    if (rl->per_client_rps != 0 && rl->per_client_burst == 0)
        rl->per_client_burst = rl->per_client_rps;
    if ((unsigned)rl->client_key >= RM_CONFIG_NUM_CLIENT_KEYS)
        return rm_config__error(err, c->source, line, "%srate_limit.client_key: unknown type %d", what, (int)rl->client_key);
    if (rl->client_key == RM_CLIENT_KEY_HEADER) {
        if (rl->client_header == NULL)
            return rm_config__error(err, c->source, line, "%srate_limit.client_key: type header needs 'header'", what);
        if (!valid_token(rl->client_header))
            return rm_config__error(err, c->source, line, "%srate_limit.client_key.header '%s' is not a valid header name", what,
                                    rl->client_header);
        lower(rl->client_header);
    } else if (rl->client_header != NULL) {
        return rm_config__error(err, c->source, line, "%srate_limit.client_key: 'header' is only used with type header", what);
    }
    if (rl->max_clients == 0)
        rl->max_clients = RM_CONFIG_DEFAULT_RATE_CLIENTS;
    if (rl->max_clients > RM_CONFIG_MAX_RATE_CLIENTS)
        return rm_config__error(err, c->source, line, "%srate_limit.max_clients must be 1-%d, got %u", what,
                                RM_CONFIG_MAX_RATE_CLIENTS, rl->max_clients);
    if (rl->num_overrides != 0 && rl->per_client_rps == 0)
        return rm_config__error(err, c->source, line, "%srate_limit.overrides needs per_client (overrides replace its rate)", what);
    size_t total = 0;
    for (size_t i = 0; i != rl->num_overrides; ++i) {
        rm_config_rate_override_t *o = rl->overrides + i;
        if (o->requests_per_second < 1 || o->requests_per_second > RM_CONFIG_MAX_RATE)
            return rm_config__error(err, c->source, line, "%srate_limit.overrides[%zu].requests_per_second must be 1-%d, got %u",
                                    what, i, RM_CONFIG_MAX_RATE, o->requests_per_second);
        if (o->burst > RM_CONFIG_MAX_RATE)
            return rm_config__error(err, c->source, line, "%srate_limit.overrides[%zu].burst must be 0-%d, got %u", what, i,
                                    RM_CONFIG_MAX_RATE, o->burst);
        if (o->burst == 0)
            o->burst = o->requests_per_second;
        if (o->num_clients < 1 || o->num_clients > RM_CONFIG_MAX_OVERRIDE_CLIENTS)
            return rm_config__error(err, c->source, line, "%srate_limit.overrides[%zu].clients must list 1-%d clients, got %zu",
                                    what, i, RM_CONFIG_MAX_OVERRIDE_CLIENTS, o->num_clients);
        for (size_t j = 0; j != o->num_clients; ++j)
            if (o->clients[j] == NULL || o->clients[j][0] == '\0' || !valid_field_value(o->clients[j]))
                return rm_config__error(err, c->source, line,
                                        "%srate_limit.overrides[%zu].clients: a client must be a non-empty string without "
                                        "control characters",
                                        what, i);
        total += o->num_clients;
    }
    /* a client in two overrides would have two rates */
    if (total > 1) {
        char **all = rm_calloc(total, sizeof(*all));
        size_t n = 0;
        for (size_t i = 0; i != rl->num_overrides; ++i)
            for (size_t j = 0; j != rl->overrides[i].num_clients; ++j)
                all[n++] = rl->overrides[i].clients[j];
        qsort(all, n, sizeof(*all), compare_str);
        for (size_t i = 1; i != n; ++i) {
            if (strcmp(all[i - 1], all[i]) == 0) {
                rm_config__error(err, c->source, line, "%srate_limit.overrides: client '%s' is listed twice", what, all[i]);
                free(all);
                return -1;
            }
        }
        free(all);
    }
    return 0;
}

static int
validate_route_policy(rm_config_t *c, rm_config_route_t *r, const char *what, rm_config_error_t *err)
{
    const char *reason = NULL; /* GCC 12 -O2 -fsanitize cannot see that it is set before use */

    if (validate_retry(c, r, what, err) != 0 ||
        (r->request_headers != NULL && validate_header_mod(c, r, what, "request_headers", r->request_headers, 1, err) != 0) ||
        (r->response_headers != NULL && validate_header_mod(c, r, what, "response_headers", r->response_headers, 0, err) != 0))
        return -1;

    for (size_t i = 0; i != r->num_mirrors; ++i) {
        rm_config_mirror_t *m = r->mirrors + i;
        if (m->cluster_name != NULL) {
            ssize_t idx = rm_config_find_cluster(c, m->cluster_name);
            if (idx < 0) {
                const char *hint = suggest_cluster(c, m->cluster_name);
                return rm_config__error(err, c->source, r->line, "%s: mirrors: cluster '%s' is not defined%s%s%s", what,
                                        m->cluster_name, hint != NULL ? " (did you mean '" : "", hint != NULL ? hint : "",
                                        hint != NULL ? "'?)" : "");
            }
            m->cluster_index = (size_t)idx;
        } else if (m->cluster_index >= c->num_clusters) {
            return rm_config__error(err, c->source, r->line, "%s: mirrors: cluster index %zu is out of range (%zu clusters)", what,
                                    m->cluster_index, c->num_clusters);
        }
        if (m->per_million > 1000000)
            return rm_config__error(err, c->source, r->line, "%s: mirrors: percent must be 0-100, got %u per million", what,
                                    m->per_million);
    }

    const rm_config_fault_t *f = r->fault;
    if (f != NULL) {
        if (f->delay_ms > RM_CONFIG_MAX_ROUTE_MS)
            return rm_config__error(err, c->source, r->line, "%s: fault.delay_ms must be 0-%u, got %u", what,
                                    RM_CONFIG_MAX_ROUTE_MS, f->delay_ms);
        if (f->delay_per_million > 1000000 || f->abort_per_million > 1000000)
            return rm_config__error(err, c->source, r->line, "%s: fault: delay_percent and abort_percent must be 0-100", what);
        if (f->abort_http_status != 0 && (f->abort_http_status < 200 || f->abort_http_status > 599))
            return rm_config__error(err, c->source, r->line, "%s: fault.abort_http_status must be 200-599, got %u", what,
                                    f->abort_http_status);
        if (f->abort_grpc_status != -1 && (f->abort_grpc_status < 1 || f->abort_grpc_status > 16))
            return rm_config__error(
                err, c->source, r->line,
                "%s: fault.abort_grpc_status must be a gRPC status 1-16 (-1 for none; OK is not an abort), got %d", what,
                f->abort_grpc_status);
        if (f->abort_per_million != 0 && f->abort_http_status == 0 && f->abort_grpc_status == -1)
            return rm_config__error(err, c->source, r->line, "%s: fault: an abort needs abort_http_status or abort_grpc_status",
                                    what);
    }

    rm_config_redirect_t *rd = r->redirect;
    if (rd != NULL) {
        if (r->url_rewrite != NULL)
            return rm_config__error(err, c->source, r->line, "%s: give either 'redirect' or 'url_rewrite', not both", what);
        if (rd->scheme != NULL) {
            lower(rd->scheme);
            if (strcmp(rd->scheme, "http") != 0 && strcmp(rd->scheme, "https") != 0)
                return rm_config__error(err, c->source, r->line, "%s: redirect.scheme must be http or https, got '%s'", what,
                                        rd->scheme);
        }
        if (rd->hostname != NULL) {
            if (!rm_config__valid_hostname(rd->hostname))
                return rm_config__error(err, c->source, r->line, "%s: redirect.hostname '%s' must be a DNS name", what,
                                        rd->hostname);
            lower(rd->hostname);
        }
        if (rd->port < 0 || rd->port > 65535)
            return rm_config__error(err, c->source, r->line, "%s: redirect.port must be 1-65535, got %d", what, rd->port);
        if (rd->status_code == 0)
            rd->status_code = 302;
        if (rd->status_code != 301 && rd->status_code != 302 && rd->status_code != 303 && rd->status_code != 307 &&
            rd->status_code != 308)
            return rm_config__error(err, c->source, r->line, "%s: redirect.status_code must be 301, 302, 303, 307 or 308, got %u",
                                    what, rd->status_code);
        if (rd->path_type == RM_PATH_REWRITE_NONE
                ? rd->path != NULL
                : (reason = rm_config__check_rewrite_path(rd->path_type, rd->path, r->path_match)) != NULL)
            return rm_config__error(err, c->source, r->line, "%s: redirect.path: %s", what,
                                    rd->path_type == RM_PATH_REWRITE_NONE ? "a value is set without a type" : reason);
    }

    rm_config_url_rewrite_t *rw = r->url_rewrite;
    if (rw != NULL) {
        if (rw->hostname == NULL && rw->path_type == RM_PATH_REWRITE_NONE)
            return rm_config__error(err, c->source, r->line, "%s: url_rewrite needs a hostname or a path", what);
        if (rw->hostname != NULL) {
            if (!rm_config__valid_hostname(rw->hostname))
                return rm_config__error(err, c->source, r->line, "%s: url_rewrite.hostname '%s' must be a DNS name", what,
                                        rw->hostname);
            lower(rw->hostname);
        }
        if (rw->path_type == RM_PATH_REWRITE_NONE
                ? rw->path != NULL
                : (reason = rm_config__check_rewrite_path(rw->path_type, rw->path, r->path_match)) != NULL)
            return rm_config__error(err, c->source, r->line, "%s: url_rewrite.path: %s", what,
                                    rw->path_type == RM_PATH_REWRITE_NONE ? "a value is set without a type" : reason);
    }

    switch (r->session_persistence) {
    case RM_SESSION_NONE:
        if (r->session_name != NULL)
            return rm_config__error(err, c->source, r->line, "%s: session_persistence: a name is set without a type", what);
        break;
    case RM_SESSION_HEADER:
    case RM_SESSION_COOKIE: {
        int header = r->session_persistence == RM_SESSION_HEADER;
        if (r->session_name == NULL)
            return rm_config__error(err, c->source, r->line, "%s: session_persistence: type %s needs a name", what,
                                    header ? "header" : "cookie");
        if (!valid_token(r->session_name))
            return rm_config__error(err, c->source, r->line, "%s: session_persistence.name '%s' is not a valid %s name", what,
                                    r->session_name, header ? "header" : "cookie");
        /* header names are case-insensitive, cookie names are not (RFC 6265) */
        if (header)
            lower(r->session_name);
    } break;
    default:
        return rm_config__error(err, c->source, r->line, "%s: session_persistence: unknown type %d", what,
                                (int)r->session_persistence);
    }
    return 0;
}

static int
validate_route(rm_config_t *c, rm_config_listener_t *l, size_t ri, rm_config_error_t *err)
{
    rm_config_route_t *r = l->routes + ri;
    char what[320];

    if (r->name != NULL) {
        if (!rm_config__valid_name(r->name))
            return rm_config__error(err, c->source, r->line,
                                    "listener '%s': route name '%s' may only contain letters, digits and . _ - : / (1-128)",
                                    l->name, r->name);
        for (size_t j = 0; j != ri; ++j)
            if (l->routes[j].name != NULL && strcmp(l->routes[j].name, r->name) == 0)
                return rm_config__error(err, c->source, r->line, "listener '%s': route '%s' is defined twice (first on line %u)",
                                        l->name, r->name, l->routes[j].line);
        snprintf(what, sizeof(what), "listener '%s': route '%s'", l->name, r->name);
    } else {
        snprintf(what, sizeof(what), "listener '%s': route #%zu", l->name, ri + 1);
    }

    if (r->num_backends != 0) {
        r->total_weight = 0;
        for (size_t i = 0; i != r->num_backends; ++i) {
            rm_config_backend_t *b = r->backends + i;
            ssize_t idx = b->cluster_name != NULL ? rm_config_find_cluster(c, b->cluster_name) : -1;
            if (idx < 0) {
                const char *hint = b->cluster_name != NULL ? suggest_cluster(c, b->cluster_name) : NULL;
                return rm_config__error(err, c->source, r->line, "%s: backend cluster '%s' is not defined%s%s%s", what,
                                        b->cluster_name != NULL ? b->cluster_name : "", hint != NULL ? " (did you mean '" : "",
                                        hint != NULL ? hint : "", hint != NULL ? "'?)" : "");
            }
            b->cluster_index = (size_t)idx;
            r->total_weight += b->weight;
        }
        if (r->total_weight == 0)
            return rm_config__error(err, c->source, r->line, "%s: every backend has weight 0: give at least one a positive weight",
                                    what);
        r->cluster_index = r->backends[0].cluster_index;
    } else if (r->cluster_name != NULL) {
        ssize_t idx = rm_config_find_cluster(c, r->cluster_name);
        if (idx < 0) {
            const char *hint = suggest_cluster(c, r->cluster_name);
            return rm_config__error(err, c->source, r->line, "%s: cluster '%s' is not defined%s%s%s", what, r->cluster_name,
                                    hint != NULL ? " (did you mean '" : "", hint != NULL ? hint : "", hint != NULL ? "'?)" : "");
        }
        r->cluster_index = (size_t)idx;
    } else if (r->redirect != NULL) {
        /* answered locally: make any use of the index by the data path fail loudly rather than pick cluster 0 */
        r->cluster_index = RM_CONFIG_NO_CLUSTER;
    } else if (r->cluster_index >= c->num_clusters) {
        return rm_config__error(err, c->source, r->line, "%s: cluster index %zu is out of range (%zu clusters)", what,
                                r->cluster_index, c->num_clusters);
    }

    if (r->method != NULL) {
        if (r->method[0] == '\0' ||
            strspn(r->method, "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") != strlen(r->method))
            return rm_config__error(err, c->source, r->line, "%s: match.method '%s' is not a valid HTTP method token", what,
                                    r->method);
    }

    for (size_t i = 0; i != r->num_authorities; ++i) {
        char *a = r->authorities[i];
        if (a[0] == '\0' || strpbrk(a, " \t\r\n/?#@") != NULL)
            return rm_config__error(err, c->source, r->line, "%s: match.authority '%s' must be a host name, HOST:PORT or *.DOMAIN",
                                    what, a);
        if (strchr(a + 1, '*') != NULL || (a[0] == '*' && a[1] != '.' && a[1] != '\0'))
            return rm_config__error(err, c->source, r->line,
                                    "%s: match.authority '%s': a wildcard is only allowed as a leading '*.' (or '*' alone)", what,
                                    a);
        const char *close = a[0] == '[' ? strchr(a, ']') : NULL, *host, *reason;
        size_t host_len;
        uint16_t port;
        if (a[0] == '[' && close == NULL)
            return rm_config__error(err, c->source, r->line, "%s: match.authority '%s': missing ']'", what, a);
        if ((close != NULL ? close[1] != '\0' : strchr(a, ':') != NULL) &&
            (reason = rm_config__split_host_port(a, &host, &host_len, &port)) != NULL)
            return rm_config__error(err, c->source, r->line, "%s: match.authority '%s': %s", what, a, reason);
        lower(a);
    }

    switch (r->path_match) {
    case RM_PATH_MATCH_ANY:
        if (r->path != NULL)
            return rm_config__error(err, c->source, r->line, "%s: a path is set without prefix/exact matching", what);
        break;
    case RM_PATH_MATCH_PREFIX:
    case RM_PATH_MATCH_EXACT: {
        const char *kind = r->path_match == RM_PATH_MATCH_PREFIX ? "prefix" : "exact";
        if (r->path == NULL || r->path[0] != '/')
            return rm_config__error(err, c->source, r->line, "%s: match.path.%s '%s' must start with '/'", what, kind,
                                    r->path != NULL ? r->path : "");
        if (strpbrk(r->path, "?# \t\r\n") != NULL)
            return rm_config__error(err, c->source, r->line,
                                    "%s: match.path.%s '%s' must not contain '?', '#' or whitespace (the query is not matched)",
                                    what, kind, r->path);
    } break;
    case RM_PATH_MATCH_REGEX:
        if (r->path == NULL || r->path[0] == '\0')
            return rm_config__error(err, c->source, r->line, "%s: match.path.regex must be a non-empty regular expression", what);
        break;
    default:
        return rm_config__error(err, c->source, r->line, "%s: unknown path match kind %d", what, (int)r->path_match);
    }

    for (size_t i = 0; i != r->num_headers; ++i) {
        rm_config_header_match_t *h = r->headers + i;
        if (h->name == NULL || !valid_token(h->name))
            return rm_config__error(err, c->source, r->line, "%s: match.headers: name '%s' is not a valid header name", what,
                                    h->name != NULL ? h->name : "");
        lower(h->name);
        if (h->is_regex && h->value == NULL)
            return rm_config__error(err, c->source, r->line, "%s: match.headers '%s': regex needs a value (the pattern)", what,
                                    h->name);
        if (!h->is_regex && h->value != NULL && !valid_field_value(h->value))
            return rm_config__error(err, c->source, r->line, "%s: match.headers '%s': value contains control characters", what,
                                    h->name);
    }

    if (validate_route_policy(c, r, what, err) != 0)
        return -1;
    if (r->rate_limit != NULL) {
        char def[300], w[330];
        if (r->name != NULL)
            snprintf(def, sizeof(def), "route/%s/%s", l->name, r->name);
        else
            snprintf(def, sizeof(def), "route/%s/#%zu", l->name, ri + 1);
        snprintf(w, sizeof(w), "%s: ", what);
        if (validate_rate_limit(c, r->rate_limit, r->line, w, def, err) != 0)
            return -1;
    }
    if (r->authz != NULL) {
        char w[330];
        snprintf(w, sizeof(w), "%s: ", what);
        if (rm_config__validate_authz(c, r->authz, r->line, w, err) != 0)
            return -1;
    }

    char msg[400];
    if (rm_route_compile(r, msg, sizeof(msg)) != 0)
        return rm_config__error(err, c->source, r->line, "%s: %s", what, msg);
    return 0;
}

static int
validate_listener(rm_config_t *c, size_t li, rm_config_error_t *err)
{
    rm_config_listener_t *l = c->listeners + li;
    const char *reason;
    char what[200], a1[96], a2[96];

    if (l->name == NULL) {
        snprintf(a1, sizeof(a1), "listener%zu", li);
        l->name = rm_strdup(a1);
    }
    if (!rm_config__valid_name(l->name))
        return rm_config__error(err, c->source, l->line,
                                "listener name '%s' may only contain letters, digits and . _ - : / (1-128)", l->name);
    snprintf(what, sizeof(what), "listener '%s'", l->name);
    for (size_t j = 0; j != li; ++j) {
        if (strcmp(c->listeners[j].name, l->name) == 0)
            return rm_config__error(err, c->source, l->line, "listener '%s' is defined twice (first on line %u)", l->name,
                                    c->listeners[j].line);
    }
    unsigned aline = l->addr.line != 0 ? l->addr.line : l->line;
    if ((reason = check_addr(&l->addr)) != NULL)
        return rm_config__error(err, c->source, aline, "%s: address: %s", what, reason);
    for (size_t j = 0; j != li; ++j) {
        if (addrs_conflict(&c->listeners[j].addr, &l->addr))
            return rm_config__error(err, c->source, aline, "%s: address %s overlaps listener '%s' (%s, line %u)", what,
                                    addr_str(&l->addr, a1, sizeof(a1)), c->listeners[j].name,
                                    addr_str(&c->listeners[j].addr, a2, sizeof(a2)), c->listeners[j].line);
    }
    if (addrs_conflict(&c->admin_addr, &l->addr))
        return rm_config__error(err, c->source, aline, "%s: address %s collides with the admin address", what,
                                addr_str(&l->addr, a1, sizeof(a1)));
    if (addrs_conflict(&c->health_addr, &l->addr))
        return rm_config__error(err, c->source, aline, "%s: address %s collides with the health address", what,
                                addr_str(&l->addr, a1, sizeof(a1)));

    if ((l->tls_cert_file == NULL) != (l->tls_key_file == NULL))
        return rm_config__error(err, c->source, l->line, "%s: tls needs both 'certificate' and 'key' (%s is missing)", what,
                                l->tls_cert_file == NULL ? "certificate" : "key");
    static const char *const keys[] = {"certificate", "key"};
    char *const files[] = {l->tls_cert_file, l->tls_key_file};
    if (validate_tls_files(c, err, l->line, what, keys, files, 2) != 0)
        return -1;

    if ((unsigned)l->direction > RM_DIRECTION_INBOUND)
        return rm_config__error(err, c->source, l->line, "%s: direction must be outbound or inbound", what);
    l->service_cluster = SIZE_MAX;
    l->parent = SIZE_MAX;
    l->tcp_cluster_index = SIZE_MAX;
    if (l->opaque) {
        if (l->direction != RM_DIRECTION_NONE)
            return rm_config__error(err, c->source, l->line,
                                    "%s: protocol tcp is for explicit listeners (a transparent listener detects)", what);
        if (l->tcp_cluster_name == NULL)
            return rm_config__error(err, c->source, l->line, "%s: protocol tcp needs 'cluster'", what);
        ssize_t ci = rm_config_find_cluster(c, l->tcp_cluster_name);
        if (ci < 0)
            return rm_config__error(err, c->source, l->line, "%s: cluster '%s' is not defined", what, l->tcp_cluster_name);
        l->tcp_cluster_index = (size_t)ci;
        if (l->tls_cert_file != NULL)
            return rm_config__error(err, c->source, l->line, "%s: protocol tcp relays bytes as they are: drop 'tls'", what);
    } else if (l->tcp_cluster_name != NULL) {
        return rm_config__error(err, c->source, l->line, "%s: 'cluster' goes with protocol tcp", what);
    }
    if (l->h2_only && l->opaque)
        return rm_config__error(err, c->source, l->line, "%s: protocol is either h2 or tcp", what);
    if (l->h2_only && l->direction != RM_DIRECTION_NONE)
        return rm_config__error(err, c->source, l->line,
                                "%s: protocol h2 is for explicit listeners (a transparent listener detects)", what);
    if (l->h2_only && l->peer_agent)
        return rm_config__error(err, c->source, l->line,
                                "%s: protocol h2 is not for 'peer: agent' listeners (agents choose the protocol by mesh ALPN)",
                                what);
    if (l->direction != RM_DIRECTION_NONE && l->opaque_ports == NULL) {
        l->opaque_ports = rm_calloc(rm_config_num_default_opaque_ports, sizeof(uint16_t));
        memcpy(l->opaque_ports, rm_config_default_opaque_ports, rm_config_num_default_opaque_ports * sizeof(uint16_t));
        l->num_opaque_ports = rm_config_num_default_opaque_ports;
    }
    for (size_t i = 0; i != l->num_opaque_ports; ++i) {
        if (l->opaque_ports[i] == 0)
            return rm_config__error(err, c->source, l->line, "%s: opaque_ports: a port must be 1-65535", what);
        /* kept sorted for rm_config_port_is_opaque */
        for (size_t j = i; j > 0 && l->opaque_ports[j - 1] > l->opaque_ports[j]; --j) {
            uint16_t t = l->opaque_ports[j];
            l->opaque_ports[j] = l->opaque_ports[j - 1];
            l->opaque_ports[j - 1] = t;
        }
    }

    /* no routes is valid here (a control-plane snapshot without services: every request gets 404);
     * the bootstrap parser insists on at least one, where none is surely a mistake */
    l->filters = 0;
    if (l->routes_borrowed) {
        /* the same list as an earlier listener's (rm_translate_snapshot): validated there, once */
        for (size_t j = 0; j != li; ++j) {
            if (c->listeners[j].routes == l->routes && !c->listeners[j].routes_borrowed) {
                l->filters = c->listeners[j].filters;
                return 0;
            }
        }
        return rm_config__error(err, c->source, l->line, "%s: borrows the routes of no earlier listener", what);
    }
    for (size_t i = 0; i != l->num_routes; ++i) {
        if (validate_route(c, l, i, err) != 0)
            return -1;
        const rm_config_route_t *r = l->routes + i;
        if (r->fault != NULL)
            l->filters |= RM_LISTENER_USES_FAULT;
        if (r->redirect != NULL)
            l->filters |= RM_LISTENER_USES_REDIRECT;
        if (header_mod_count(r->request_headers) + header_mod_count(r->response_headers) != 0)
            l->filters |= RM_LISTENER_USES_HEADER_MODIFIERS;
        if (r->url_rewrite != NULL)
            l->filters |= RM_LISTENER_USES_URL_REWRITE;
        /* a cluster's rate limit is applied by the router once the cluster is picked: no filter needed */
        if (r->rate_limit != NULL)
            l->filters |= RM_LISTENER_USES_RATE_LIMIT;
        /* like a rate limit: a cluster's policies are applied by the router */
        if (r->authz != NULL)
            l->filters |= RM_LISTENER_USES_AUTHZ;
    }
    return 0;
}

static int
check_ranges(rm_config_t *c, rm_config_error_t *err, unsigned line, const char *what, const void *base,
             const rm_config_range_t *ranges, size_t n)
{
    for (size_t i = 0; i != n; ++i) {
        uint32_t v = *(const uint32_t *)((const char *)base + ranges[i].offset);
        if (v < ranges[i].min || v > ranges[i].max)
            return rm_config__error(err, c->source, line, "%s%s must be %u-%u, got %u", what, ranges[i].name, ranges[i].min,
                                    ranges[i].max, v);
    }
    return 0;
}

/* Balancer, endpoint weights, breakers, outlier detection, health checks and the rate limit; `what` ends in ": ". */
static int
validate_cluster_policy(rm_config_t *c, rm_config_cluster_t *cl, const char *what, rm_config_error_t *err)
{
    char sub[260];

    for (size_t i = 0; i != cl->num_endpoints; ++i) {
        rm_config_endpoint_t *ep = cl->endpoints + i;
        if (ep->weight == 0)
            ep->weight = 1;
        if (ep->weight > RM_CONFIG_MAX_ENDPOINT_WEIGHT)
            return rm_config__error(err, c->source, ep->addr.line != 0 ? ep->addr.line : cl->line,
                                    "%sendpoint '%s': weight must be 1-%d, got %u", what, ep->host, RM_CONFIG_MAX_ENDPOINT_WEIGHT,
                                    ep->weight);
    }
    if ((unsigned)cl->lb >= RM_CONFIG_NUM_LB_TYPES)
        return rm_config__error(err, c->source, cl->line, "%sload_balancer: unknown type %d", what, (int)cl->lb);
    if (cl->ring_min_size < 1 || cl->ring_min_size > RM_CONFIG_MAX_RING_SIZE)
        return rm_config__error(err, c->source, cl->line, "%sload_balancer.ring_min_size must be 1-%d, got %u", what,
                                RM_CONFIG_MAX_RING_SIZE, cl->ring_min_size);
    snprintf(sub, sizeof(sub), "%scircuit_breakers.", what);
    if (check_ranges(c, err, cl->line, sub, &cl->breakers, rm_config__breaker_ranges, rm_config__num_breaker_ranges) != 0)
        return -1;
    if (cl->outlier.enabled) {
        const rm_config_outlier_t *o = &cl->outlier;
        snprintf(sub, sizeof(sub), "%soutlier_detection.", what);
        if (check_ranges(c, err, cl->line, sub, o, rm_config__outlier_ranges, rm_config__num_outlier_ranges) != 0)
            return -1;
        if (o->max_ejection_ms < o->base_ejection_ms)
            return rm_config__error(err, c->source, cl->line,
                                    "%soutlier_detection.max_ejection_ms (%u) must not be below base_ejection_ms (%u)", what,
                                    o->max_ejection_ms, o->base_ejection_ms);
        if (o->consecutive_5xx == 0 && o->consecutive_gateway_errors == 0)
            return rm_config__error(err, c->source, cl->line,
                                    "%soutlier_detection needs consecutive_5xx or consecutive_gateway_errors above 0", what);
    }
    if (cl->health_check.enabled) {
        const rm_config_health_check_t *h = &cl->health_check;
        snprintf(sub, sizeof(sub), "%shealth_check.", what);
        if (check_ranges(c, err, cl->line, sub, h, rm_config__health_ranges, rm_config__num_health_ranges) != 0)
            return -1;
        if (h->timeout_ms >= h->interval_ms)
            return rm_config__error(err, c->source, cl->line, "%shealth_check.timeout_ms (%u) must be below interval_ms (%u)", what,
                                    h->timeout_ms, h->interval_ms);
        if (h->grpc) {
            if (h->grpc_service == NULL)
                return rm_config__error(err, c->source, cl->line, "%shealth_check.grpc.service is not set", what);
            if (cl->protocol == RM_UPSTREAM_HTTP1)
                return rm_config__error(err, c->source, cl->line,
                                        "%shealth_check.grpc needs an h2 or auto cluster (gRPC is HTTP/2)", what);
        } else if (h->http_path == NULL || h->http_path[0] != '/') {
            return rm_config__error(err, c->source, cl->line, "%shealth_check.http.path must start with '/'", what);
        } else {
            for (const char *q = h->http_path; *q != '\0'; ++q)
                if ((unsigned char)*q <= ' ' || *q == 0x7f)
                    return rm_config__error(err, c->source, cl->line,
                                            "%shealth_check.http.path must not contain spaces or control characters", what);
        }
    }
    if (cl->rate_limit != NULL) {
        char def[160];
        snprintf(def, sizeof(def), "cluster/%s", cl->name);
        if (validate_rate_limit(c, cl->rate_limit, cl->line, what, def, err) != 0)
            return -1;
    }
    if (cl->authz != NULL && rm_config__validate_authz(c, cl->authz, cl->line, what, err) != 0)
        return -1;
    return 0;
}

static int
validate_cluster(rm_config_t *c, size_t ci, rm_config_error_t *err)
{
    rm_config_cluster_t *cl = c->clusters + ci;
    char what[200];
    const char *reason;

    if (cl->name == NULL)
        return rm_config__error(err, c->source, cl->line, "cluster #%zu: 'name' is required", ci + 1);
    if (!rm_config__valid_name(cl->name))
        return rm_config__error(err, c->source, cl->line,
                                "cluster name '%s' may only contain letters, digits and . _ - : / (1-128)", cl->name);
    for (size_t j = 0; j != ci; ++j)
        if (strcmp(c->clusters[j].name, cl->name) == 0)
            return rm_config__error(err, c->source, cl->line, "cluster '%s' is defined twice (first on line %u)", cl->name,
                                    c->clusters[j].line);
    snprintf(what, sizeof(what), "cluster '%s': ", cl->name);
    if ((unsigned)cl->protocol > RM_UPSTREAM_TCP)
        return rm_config__error(err, c->source, cl->line, "%sprotocol must be h2, http1, auto or tcp", what);
    for (size_t i = 0; i != cl->num_addresses; ++i) {
        const rm_config_addr_t *a = cl->addresses + i;
        unsigned line = a->line != 0 ? a->line : cl->line;
        char abuf[96];
        if ((reason = check_addr(a)) != NULL)
            return rm_config__error(err, c->source, line, "%saddresses[%zu]: %s", what, i, reason);
        if (addr_is_any(a))
            return rm_config__error(err, c->source, line, "%saddresses[%zu]: %s is a wildcard, not a virtual address", what, i,
                                    addr_str(a, abuf, sizeof(abuf)));
        for (size_t cj = 0; cj <= ci; ++cj) {
            const rm_config_cluster_t *other = c->clusters + cj;
            for (size_t k = 0; k != (cj == ci ? i : other->num_addresses); ++k)
                if (addrs_conflict(other->addresses + k, a))
                    return rm_config__error(err, c->source, line, "%saddress %s is also a virtual address of cluster '%s'", what,
                                            addr_str(a, abuf, sizeof(abuf)), other->name);
        }
    }
    /* no endpoints is valid here (a Service not yet scheduled: requests get 503 / UNAVAILABLE); the
     * bootstrap parser insists on at least one */
    for (size_t i = 0; i != cl->num_endpoints; ++i) {
        rm_config_endpoint_t *ep = cl->endpoints + i;
        if (ep->host == NULL || ep->host[0] == '\0' || ep->port == 0)
            return rm_config__error(err, c->source, cl->line, "%sendpoint #%zu needs a host and a port 1-65535", what, i + 1);
        if (ep->is_ip && ep->addr.family != AF_INET && ep->addr.family != AF_INET6)
            return rm_config__error(err, c->source, cl->line, "%sendpoint '%s' is marked as an IP literal without an address", what,
                                    ep->host);
        for (size_t j = 0; j != i; ++j)
            if (cl->endpoints[j].port == ep->port && strcasecmp(cl->endpoints[j].host, ep->host) == 0)
                return rm_config__error(err, c->source, cl->line, "%sendpoint '%s' port %u is listed twice", what, ep->host,
                                        ep->port);
    }
    if (check_ranges(c, err, cl->line, what, cl, rm_config__cluster_ranges, rm_config__num_cluster_ranges) != 0)
        return -1;
    char budget[240];
    snprintf(budget, sizeof(budget), "%sretry_budget.", what);
    if (check_ranges(c, err, cl->line, budget, cl, rm_config__budget_ranges, rm_config__num_budget_ranges) != 0)
        return -1;
    if (cl->dns_min_refresh_ms > cl->dns_max_refresh_ms)
        return rm_config__error(err, c->source, cl->line, "%sdns.min_refresh_ms (%u) must not exceed dns.max_refresh_ms (%u)", what,
                                cl->dns_min_refresh_ms, cl->dns_max_refresh_ms);
    if (validate_cluster_policy(c, cl, what, err) != 0)
        return -1;
    if (!cl->tls &&
        (cl->tls_ca_file != NULL || cl->tls_server_name != NULL || cl->tls_cert_file != NULL || cl->tls_key_file != NULL))
        return rm_config__error(err, c->source, cl->line, "%sTLS files or server name are set but TLS is off", what);
    if ((cl->tls_cert_file == NULL) != (cl->tls_key_file == NULL))
        return rm_config__error(err, c->source, cl->line, "%stls needs both 'certificate' and 'key' (%s is missing)", what,
                                cl->tls_cert_file == NULL ? "certificate" : "key");
    if (cl->tls_server_name != NULL && !valid_dns_name(cl->tls_server_name, strlen(cl->tls_server_name)))
        return rm_config__error(err, c->source, cl->line, "%stls.server_name '%s' must be a DNS name", what, cl->tls_server_name);
    if (cl->peer_identity != NULL && (strlen(cl->peer_identity) > 200 || (strncmp(cl->peer_identity, "/ns/", 4) != 0 &&
                                                                          (strncmp(cl->peer_identity, "spiffe://", 9) != 0 ||
                                                                           strchr(cl->peer_identity + 9, '/') == NULL))))
        return rm_config__error(err, c->source, cl->line,
                                "%smesh_identity '%s' must be a SPIFFE ID (spiffe://TRUST-DOMAIN/PATH, or /ns/NS/sa/SA in the "
                                "agent's own trust domain; at most 200 characters)",
                                what, cl->peer_identity);
    static const char *const keys[] = {"ca", "certificate", "key"};
    char *const files[] = {cl->tls_ca_file, cl->tls_cert_file, cl->tls_key_file};
    what[strlen(what) - 2] = '\0'; /* drop ": " */
    return validate_tls_files(c, err, cl->line, what, keys, files, 3);
}

static int
validate_telemetry(const rm_config_t *c, rm_config_error_t *err)
{
    const rm_config_tracing_t *t = &c->telemetry.tracing;
    const rm_config_access_log_t *a = &c->telemetry.access_log;
    const char *reason;
    char buf[512];

    if (t->enabled) {
        if (t->otlp_endpoint == NULL)
            return rm_config__error(err, c->source, t->line, "telemetry.tracing.otlp.endpoint is required");
        if ((reason = rm_config__check_otlp_endpoint(t->otlp_endpoint)) != NULL)
            return rm_config__error(err, c->source, t->line, "telemetry.tracing.otlp.endpoint '%s': %s", t->otlp_endpoint, reason);
        if (t->protocol != RM_OTLP_GRPC && t->protocol != RM_OTLP_HTTP)
            return rm_config__error(err, c->source, t->line, "telemetry.tracing.otlp.protocol must be grpc or http");
        if (!(t->sampling_percent >= 0 && t->sampling_percent <= 100))
            return rm_config__error(err, c->source, t->line, "telemetry.tracing.sampling_percent must be 0-100, got %g",
                                    t->sampling_percent);
        if (t->service_name != NULL && (t->service_name[0] == '\0' || strlen(t->service_name) > RM_CONFIG_MAX_SERVICE_NAME))
            return rm_config__error(err, c->source, t->line, "telemetry.tracing.service_name must be 1-%d characters",
                                    RM_CONFIG_MAX_SERVICE_NAME);
        if (t->batch_size < 1 || t->batch_size > RM_CONFIG_MAX_TRACE_BATCH)
            return rm_config__error(err, c->source, t->line, "telemetry.tracing.batch_size must be 1-%d, got %u",
                                    RM_CONFIG_MAX_TRACE_BATCH, t->batch_size);
        if (t->batch_timeout_ms < 1 || t->batch_timeout_ms > RM_CONFIG_MAX_TRACE_BATCH_TIMEOUT_MS)
            return rm_config__error(err, c->source, t->line, "telemetry.tracing.batch_timeout_ms must be 1-%d, got %u",
                                    RM_CONFIG_MAX_TRACE_BATCH_TIMEOUT_MS, t->batch_timeout_ms);
        if (t->queue_size < t->batch_size || t->queue_size > RM_CONFIG_MAX_TRACE_QUEUE)
            return rm_config__error(err, c->source, t->line,
                                    "telemetry.tracing.queue_size must be from batch_size (%u) to %d, got %u", t->batch_size,
                                    RM_CONFIG_MAX_TRACE_QUEUE, t->queue_size);
    }
    if (a->enabled) {
        if (a->path == NULL)
            return rm_config__error(err, c->source, a->line, "telemetry.access_log.path is required");
        if ((reason = rm_config__check_log_path(a->path, buf, sizeof(buf))) != NULL)
            return rm_config__error(err, c->source, a->line, "telemetry.access_log.path '%s': %s", a->path, reason);
        if (a->buffer_bytes < RM_CONFIG_MIN_ACCESS_LOG_BUFFER || a->buffer_bytes > RM_CONFIG_MAX_ACCESS_LOG_BUFFER)
            return rm_config__error(err, c->source, a->line, "telemetry.access_log.buffer_bytes must be %d-%u, got %u",
                                    RM_CONFIG_MIN_ACCESS_LOG_BUFFER, RM_CONFIG_MAX_ACCESS_LOG_BUFFER, a->buffer_bytes);
    }
    return 0;
}

/* Linkerd's default opaque ports (2.11+: SMTP 25 and 587, MySQL 3306, Galera 4444, PostgreSQL 5432, Redis
 * 6379, Elasticsearch 9300, Memcached 11211) plus the other common server-speaks-first protocols (FTP 21,
 * SSH 22, POP3 110, IMAP 143). Sorted. */
const uint16_t rm_config_default_opaque_ports[] = {21, 22, 25, 110, 143, 587, 3306, 4444, 5432, 6379, 9300, 11211};
const size_t rm_config_num_default_opaque_ports =
    sizeof(rm_config_default_opaque_ports) / sizeof(rm_config_default_opaque_ports[0]);

const char *
rm_config_mesh_tls_mode_name(rm_mesh_tls_mode_t mode)
{
    switch (mode) {
    case RM_MESH_TLS_STRICT:
        return "STRICT";
    case RM_MESH_TLS_DISABLE:
        return "DISABLE";
    default:
        return "PERMISSIVE";
    }
}

const char *
rm_config_direction_name(rm_direction_t direction)
{
    switch (direction) {
    case RM_DIRECTION_OUTBOUND:
        return "outbound";
    case RM_DIRECTION_INBOUND:
        return "inbound";
    default:
        return "none";
    }
}

int
rm_config_port_is_opaque(const rm_config_listener_t *l, uint16_t port)
{
    size_t lo = 0, hi = l->num_opaque_ports;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (l->opaque_ports[mid] == port)
            return 1;
        if (l->opaque_ports[mid] < port)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

static int
sockaddr_equal(const struct sockaddr *a, const struct sockaddr_storage *b)
{
    if (a->sa_family != b->ss_family)
        return 0;
    if (a->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
        return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
    }
    if (a->sa_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
        return x->sin6_port == y->sin6_port && memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr)) == 0;
    }
    return 0;
}

/* The order of _service_listener_index: parent listener, then address family, bytes and port. */
static int
compare_service_listener(const rm_config_listener_t *a_listener, size_t b_parent, const struct sockaddr *b)
{
    if (a_listener->parent != b_parent)
        return a_listener->parent < b_parent ? -1 : 1;
    const struct sockaddr *a = (const struct sockaddr *)&a_listener->addr.addr;
    if (a->sa_family != b->sa_family)
        return a->sa_family < b->sa_family ? -1 : 1;
    int d;
    if (a->sa_family == AF_INET) {
        const struct sockaddr_in *x = (const struct sockaddr_in *)a, *y = (const struct sockaddr_in *)b;
        if ((d = memcmp(&x->sin_addr, &y->sin_addr, sizeof(x->sin_addr))) != 0)
            return d;
        return x->sin_port == y->sin_port ? 0 : ntohs(x->sin_port) < ntohs(y->sin_port) ? -1 : 1;
    }
    if (a->sa_family == AF_INET6) {
        const struct sockaddr_in6 *x = (const struct sockaddr_in6 *)a, *y = (const struct sockaddr_in6 *)b;
        if ((d = memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr))) != 0)
            return d;
        return x->sin6_port == y->sin6_port ? 0 : ntohs(x->sin6_port) < ntohs(y->sin6_port) ? -1 : 1;
    }
    return 0;
}

typedef struct st_sl_sort_t {
    const rm_config_listener_t *l;
    size_t i;
} sl_sort_t;

static int
compare_sl_sort(const void *a, const void *b)
{
    const sl_sort_t *x = a, *y = b;
    int d = compare_service_listener(x->l, y->l->parent, (const struct sockaddr *)&y->l->addr.addr);
    /* equal keys keep their order: the first one built wins, as it did with a linear search */
    return d != 0 ? d : x->i < y->i ? -1 : 1;
}

static void
index_service_listeners(rm_config_t *c)
{
    rm_config_free_owned(c, c->_service_listener_index);
    c->_service_listener_index = NULL;
    if (c->num_service_listeners == 0)
        return;
    sl_sort_t *v = rm_calloc(c->num_service_listeners, sizeof(*v));
    for (size_t i = 0; i != c->num_service_listeners; ++i)
        v[i] = (sl_sort_t){c->service_listeners + i, i};
    qsort(v, c->num_service_listeners, sizeof(*v), compare_sl_sort);
    c->_service_listener_index = config_calloc(c, c->num_service_listeners, sizeof(size_t));
    for (size_t i = 0; i != c->num_service_listeners; ++i)
        c->_service_listener_index[i] = v[i].i;
    free(v);
}

/* O(log n): it runs for every intercepted connection, and a mesh has thousands of Service addresses. */
size_t
rm_config_find_service_listener(const rm_config_t *config, size_t listener_index, const struct sockaddr *dst)
{
    if (config->_service_listener_index == NULL) {
        /* while build_service_listeners runs: the listeners built so far, unsorted */
        for (size_t i = 0; i != config->num_service_listeners; ++i) {
            const rm_config_listener_t *sl = config->service_listeners + i;
            if (sl->parent == listener_index && sockaddr_equal(dst, &sl->addr.addr))
                return i;
        }
        return SIZE_MAX;
    }
    size_t lo = 0, hi = config->num_service_listeners;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (compare_service_listener(config->service_listeners + config->_service_listener_index[mid], listener_index, dst) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo != config->num_service_listeners) {
        size_t i = config->_service_listener_index[lo];
        const rm_config_listener_t *sl = config->service_listeners + i;
        if (sl->parent == listener_index && sockaddr_equal(dst, &sl->addr.addr))
            return i;
    }
    return SIZE_MAX;
}

static int
compare_in6(const void *a, const void *b)
{
    return memcmp(a, b, sizeof(struct in6_addr));
}

/* AF_INET and AF_INET6 as IPv6 (IPv4-mapped for AF_INET); 0 for any other family */
static int
to_in6(const struct sockaddr *sa, struct in6_addr *out)
{
    if (sa->sa_family == AF_INET6) {
        *out = ((const struct sockaddr_in6 *)sa)->sin6_addr;
        return 1;
    }
    if (sa->sa_family == AF_INET) {
        memset(out, 0, sizeof(*out));
        out->s6_addr[10] = out->s6_addr[11] = 0xff;
        memcpy(out->s6_addr + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
        return 1;
    }
    return 0;
}

int
rm_config_learn_local_addresses(rm_config_t *config)
{
    struct ifaddrs *ifs, *i;
    size_t n = 0;
    if (getifaddrs(&ifs) != 0)
        return -1;
    for (i = ifs; i != NULL; i = i->ifa_next)
        n += i->ifa_addr != NULL && (i->ifa_addr->sa_family == AF_INET || i->ifa_addr->sa_family == AF_INET6);
    if (n > RM_CONFIG_MAX_LOCAL_ADDRS) {
        freeifaddrs(ifs);
        return -1;
    }
    struct in6_addr *addrs = rm_calloc(n + 1, sizeof(*addrs));
    n = 0;
    for (i = ifs; i != NULL; i = i->ifa_next)
        if (i->ifa_addr != NULL && to_in6(i->ifa_addr, addrs + n))
            ++n;
    freeifaddrs(ifs);
    qsort(addrs, n, sizeof(addrs[0]), compare_in6);
    free(config->local_addrs);
    config->local_addrs = addrs;
    config->num_local_addrs = n;
    config->local_addrs_known = 1;
    return 0;
}

int
rm_config_addr_is_local(const rm_config_t *config, const struct sockaddr *addr)
{
    struct in6_addr a;
    if (!config->local_addrs_known)
        return 1;
    if (!to_in6(addr, &a))
        return 0;
    /* the whole of 127.0.0.0/8 is the host's own (Linux's local table), and ::1 */
    if (IN6_IS_ADDR_LOOPBACK(&a) || (IN6_IS_ADDR_V4MAPPED(&a) && a.s6_addr[12] == 127))
        return 1;
    return bsearch(&a, config->local_addrs, config->num_local_addrs, sizeof(a), compare_in6) != NULL;
}

/* c->clusters with room for n (its first c->num_clusters kept). The translation's array is in the config's arena
 * with room reserved (_clusters_capacity; its unused pages are never touched); if more is needed it moves to the heap. */
static void
resize_clusters(rm_config_t *c, size_t n)
{
    if (c->_arena != NULL && in_arena(c->_arena, c->clusters)) {
        if (n <= c->_clusters_capacity)
            return;
        rm_config_cluster_t *moved = rm_calloc(n + 1, sizeof(*moved));
        memcpy(moved, c->clusters, (n < c->num_clusters ? n : c->num_clusters) * sizeof(*moved));
        c->clusters = moved;
        return;
    }
    c->clusters = rm_realloc(c->clusters, (n != 0 ? n : 1) * sizeof(*c->clusters));
}

static void
drop_inbound_clusters(rm_config_t *c)
{
    while (c->num_clusters != 0 && c->clusters[c->num_clusters - 1].inbound) {
        rm_config_cluster_t *cl = &c->clusters[--c->num_clusters];
        rm_config_free_owned(c, cl->name);
        for (size_t j = 0; j != cl->num_endpoints; ++j) {
            rm_config_free_owned(c, cl->endpoints[j].host);
            rm_config_free_owned(c, cl->endpoints[j].peer_identity);
        }
        rm_config_free_owned(c, cl->endpoints);
    }
}

/* The inbound cluster of endpoint `ep` of Service `si` (rm_config_cluster_t.inbound), appended to c->clusters
 * (room reserved by the caller). */
static size_t
add_inbound_cluster(rm_config_t *c, size_t si, const rm_config_endpoint_t *ep, int to_localhost)
{
    const rm_config_cluster_t *svc = &c->clusters[si];
    rm_config_cluster_t *cl = &c->clusters[c->num_clusters];
    rm_config_cluster_set_defaults(cl);
    char name[300];
    snprintf(name, sizeof(name), "inbound%s/%s/%u", to_localhost ? "-local" : "", svc->name, ep->port);
    cl->name = rm_config_arena_strdup(c, name);
    cl->protocol = svc->protocol;
    cl->rate_limit = svc->rate_limit;
    cl->authz = svc->authz;
    cl->connect_timeout_ms = svc->connect_timeout_ms;
    cl->stream_idle_timeout_ms = svc->stream_idle_timeout_ms;
    cl->line = svc->line;
    cl->inbound = 1;
    cl->inbound_service = si;
    cl->endpoints = rm_config_arena_alloc(c, sizeof(*cl->endpoints));
    cl->num_endpoints = 1;
    rm_config_endpoint_t *e = cl->endpoints;
    *e = *ep;
    e->weight = 1;
    e->peer_identity = NULL; /* the inbound hop goes to the local application */
    if (to_localhost) {
        int v6 = ep->addr.family == AF_INET6;
        e->host = rm_config_arena_strdup(c, v6 ? "::1" : "127.0.0.1");
        memset(e->addr.bytes, 0, sizeof(e->addr.bytes));
        e->addr.scope_id = 0;
        if (v6) {
            memcpy(e->addr.bytes, &in6addr_loopback, sizeof(in6addr_loopback));
        } else {
            uint32_t lo = htonl(INADDR_LOOPBACK);
            memcpy(e->addr.bytes, &lo, sizeof(lo));
        }
    } else {
        e->host = rm_config_arena_strdup(c, ep->host);
    }
    return c->num_clusters++;
}

/* A route that takes every request of its listener or Service: no method, header or path condition
 * but "/" (its authorities aside: a Service listener does not compare them). */
static int
route_matches_all(const rm_config_route_t *r)
{
    return r->method == NULL && r->num_headers == 0 &&
           (r->path_match == RM_PATH_MATCH_ANY ||
            (r->path_match == RM_PATH_MATCH_PREFIX && r->path != NULL && strcmp(r->path, "/") == 0));
}

/* Whether OUTBOUND listener `li` gets a Service listener for virtual address `a`: when their families
 * match, or when no OUTBOUND listener has the address's family (an intercepted connection arrives on
 * the listener of its own family: 127.0.0.1 or [::1], docs/transparent.md). */
static int
outbound_takes(const rm_config_t *c, size_t li, const rm_config_addr_t *a)
{
    if (c->listeners[li].addr.addr.ss_family == a->addr.ss_family)
        return 1;
    for (size_t j = 0; j != c->num_listeners; ++j)
        if (c->listeners[j].direction == RM_DIRECTION_OUTBOUND && c->listeners[j].addr.addr.ss_family == a->addr.ss_family)
            return 0;
    return 1;
}

/*
 * The index of the outbound Service listeners (rm_config_listener_t.service_route_first/_count): the span
 * of the parent's routes from the first to the last route of the Service, so that a request on a virtual
 * address considers only those (the router still tests each route's Service inside the span). Only for
 * a parent whose every route names its Service (has_service: the control-plane translation's, which
 * builds a Service's routes one after the other, so a span holds no other Service's); a bootstrap
 * file's routes are matched to a Service by their clusters, and their listeners keep the scan of every route.
 */
static void
index_service_routes(rm_config_t *c, size_t num_services)
{
    uint32_t *first = rm_calloc(2 * num_services + 1, sizeof(*first)), *last = first + num_services;
    const rm_config_route_t *spans_of = NULL;
    int indexed = 0;
    for (size_t i = 0; i != c->num_service_listeners; ++i) {
        rm_config_listener_t *sl = c->service_listeners + i;
        const rm_config_listener_t *parent = c->listeners + sl->parent;
        sl->service_routes_indexed = 0;
        if (sl->direction != RM_DIRECTION_OUTBOUND || sl->service_cluster >= num_services || parent->num_routes >= UINT32_MAX)
            continue;
        if (spans_of != parent->routes || i == 0) {
            spans_of = parent->routes;
            indexed = 1;
            for (size_t ci = 0; ci != num_services; ++ci)
                first[ci] = UINT32_MAX;
            for (size_t ri = 0; ri != parent->num_routes && indexed; ++ri) {
                const rm_config_route_t *r = parent->routes + ri;
                indexed = r->has_service;
                if (r->has_service && r->service_cluster < num_services) {
                    if (first[r->service_cluster] == UINT32_MAX)
                        first[r->service_cluster] = (uint32_t)ri;
                    last[r->service_cluster] = (uint32_t)ri;
                }
            }
        }
        if (!indexed)
            continue;
        uint32_t f = first[sl->service_cluster];
        sl->service_routes_indexed = 1;
        sl->service_route_first = f != UINT32_MAX ? f : 0;
        sl->service_route_count = f != UINT32_MAX ? last[sl->service_cluster] - f + 1 : 0;
    }
    free(first);
}

/*
 * Service listeners (rm_config_listener_t.service_cluster): per OUTBOUND transparent listener and
 * virtual address (of the listener's family); per INBOUND transparent listener and IP endpoint that is
 * this agent's own (rm_config_addr_is_local), with its inbound cluster. They are small: the name is the parent's, the fallback
 * route is one per cluster (_fallback_routes), the routes are the parent's.
 */
static void
build_service_listeners(rm_config_t *c)
{
    free_service_listeners(c);
    drop_inbound_clusters(c);
    size_t n = 0, num_fallbacks = 0, num_inbound = 0, num_services = c->num_clusters;
    /* meshed Services are reached through the peer agents' inbound listeners (rm_config_cluster_t.agent_hop) */
    int has_outbound = 0;
    for (size_t li = 0; li != c->num_listeners; ++li)
        has_outbound |= c->listeners[li].direction == RM_DIRECTION_OUTBOUND;
    for (size_t ci = 0; ci != num_services; ++ci)
        c->clusters[ci].agent_hop = has_outbound && c->clusters[ci].meshed && c->clusters[ci].protocol != RM_UPSTREAM_TCP;
    for (size_t ci = 0; ci != num_services; ++ci) {
        int outbound = 0;
        for (size_t li = 0; li != c->num_listeners; ++li) {
            if (c->listeners[li].direction == RM_DIRECTION_OUTBOUND) {
                for (size_t ai = 0; ai != c->clusters[ci].num_addresses; ++ai) {
                    if (outbound_takes(c, li, &c->clusters[ci].addresses[ai])) {
                        ++n;
                        outbound = 1;
                    }
                }
            } else if (c->listeners[li].direction == RM_DIRECTION_INBOUND) {
                /* at most: endpoints already taken by an earlier Service are skipped below */
                for (size_t ei = 0; ei != c->clusters[ci].num_endpoints; ++ei) {
                    const rm_config_endpoint_t *ep = &c->clusters[ci].endpoints[ei];
                    struct sockaddr_storage ss;
                    if (ep->is_ip && ep->addr.family == c->listeners[li].addr.addr.ss_family &&
                        rm_config_ip_to_sockaddr(&ep->addr, &ss) != 0 && rm_config_addr_is_local(c, (const struct sockaddr *)&ss)) {
                        ++n;
                        ++num_fallbacks;
                        ++num_inbound;
                    }
                }
            }
        }
        num_fallbacks += outbound;
    }
    if (n == 0)
        return;
    c->service_listeners = config_calloc(c, n, sizeof(*c->service_listeners));
    if (num_inbound != 0)
        resize_clusters(c, c->num_clusters + num_inbound);
    for (size_t li = 0; li != c->num_listeners; ++li) {
        const rm_config_listener_t *parent = c->listeners + li;
        if (parent->direction != RM_DIRECTION_INBOUND)
            continue;
        for (size_t ci = 0; ci != num_services; ++ci) {
            for (size_t ei = 0; ei != c->clusters[ci].num_endpoints; ++ei) {
                const rm_config_endpoint_t *ep = &c->clusters[ci].endpoints[ei];
                struct sockaddr_storage ss;
                socklen_t sslen;
                /* only IP endpoints of the listener's family can be an original destination; the first Service wins */
                if (!ep->is_ip || ep->addr.family != parent->addr.addr.ss_family ||
                    (sslen = rm_config_ip_to_sockaddr(&ep->addr, &ss)) == 0 ||
                    !rm_config_addr_is_local(c, (const struct sockaddr *)&ss) ||
                    rm_config_find_service_listener(c, li, (const struct sockaddr *)&ss) != SIZE_MAX)
                    continue;
                size_t ic = add_inbound_cluster(c, ci, ep, parent->inbound_to_localhost);
                rm_config_listener_t *sl = c->service_listeners + c->num_service_listeners++;
                sl->name = parent->name;
                sl->addr.addr = ss;
                sl->addr.addrlen = sslen;
                sl->addr.line = ep->addr.line;
                sl->line = parent->line;
                sl->direction = parent->direction;
                sl->peer_agent = parent->peer_agent;
                sl->inbound_to_localhost = parent->inbound_to_localhost;
                sl->service_cluster = ic;
                sl->parent = li;
                sl->tcp_cluster_index = SIZE_MAX;
            }
        }
    }
    if (num_inbound != 0 && c->num_clusters != num_services + num_inbound) /* endpoints shared by Services: fewer */
        resize_clusters(c, c->num_clusters);
    for (size_t ci = 0; ci != num_services; ++ci) {
        for (size_t li = 0; li != c->num_listeners; ++li) {
            const rm_config_listener_t *parent = c->listeners + li;
            if (parent->direction != RM_DIRECTION_OUTBOUND)
                continue;
            for (size_t ai = 0; ai != c->clusters[ci].num_addresses; ++ai) {
                if (!outbound_takes(c, li, &c->clusters[ci].addresses[ai]))
                    continue;
                rm_config_listener_t *sl = c->service_listeners + c->num_service_listeners++;
                sl->name = parent->name;
                sl->addr = c->clusters[ci].addresses[ai];
                sl->routes = parent->routes;
                sl->num_routes = parent->num_routes;
                sl->routes_borrowed = 1;
                sl->filters = parent->filters;
                sl->line = parent->line;
                sl->direction = parent->direction;
                sl->peer_agent = parent->peer_agent;
                sl->service_cluster = ci;
                sl->parent = li;
                sl->tcp_cluster_index = SIZE_MAX;
            }
        }
    }
    num_fallbacks = 0;
    /* endpoints shared by Services: fewer than counted */
    if (c->num_service_listeners != n)
        if (c->_arena == NULL || !in_arena(c->_arena, c->service_listeners))
            c->service_listeners = rm_realloc(c->service_listeners, c->num_service_listeners * sizeof(*c->service_listeners));
    /* An outbound Service listener's fallback is never reached when one of the Service's own routes
     * (has_service) matches every request: then that route is the fallback, and needs no copy */
    size_t *covering = rm_calloc(num_services + 1, sizeof(*covering));
    const rm_config_route_t *covering_list = NULL; /* the routes `covering` indexes */
    for (size_t li = 0; li != c->num_listeners && covering_list == NULL; ++li) {
        const rm_config_listener_t *l = c->listeners + li;
        if (l->direction != RM_DIRECTION_OUTBOUND || l->num_routes == 0)
            continue;
        covering_list = l->routes;
        for (size_t ri = l->num_routes; ri != 0; --ri) {
            const rm_config_route_t *r = l->routes + ri - 1;
            if (r->has_service && r->service_cluster < num_services && route_matches_all(r))
                covering[r->service_cluster] = ri; /* the first such route of the Service: index + 1 */
        }
    }
    /* the other fallback routes, exactly: one per inbound cluster, one per Service with addresses and
     * no covering route (a Service's outbound listeners are consecutive) */
    for (size_t i = 0; i != c->num_service_listeners; ++i) {
        const rm_config_listener_t *sl = c->service_listeners + i;
        int covered = sl->direction == RM_DIRECTION_OUTBOUND && covering[sl->service_cluster] != 0 &&
                      c->listeners[sl->parent].routes == covering_list;
        num_fallbacks += !covered && (sl->direction == RM_DIRECTION_INBOUND || i == 0 ||
                                      sl[-1].service_cluster != sl->service_cluster || sl[-1].direction != sl->direction);
    }
    c->_fallback_routes = num_fallbacks != 0 ? config_calloc(c, num_fallbacks, sizeof(*c->_fallback_routes)) : NULL;
    for (size_t i = 0, k = 0; i != c->num_service_listeners; ++i) {
        rm_config_listener_t *sl = c->service_listeners + i;
        if (sl->direction == RM_DIRECTION_OUTBOUND && covering[sl->service_cluster] != 0 &&
            c->listeners[sl->parent].routes == covering_list) {
            sl->fallback_route = &c->listeners[sl->parent].routes[covering[sl->service_cluster] - 1];
            continue;
        }
        if (sl->direction == RM_DIRECTION_INBOUND || i == 0 || sl[-1].service_cluster != sl->service_cluster ||
            sl[-1].direction != sl->direction) {
            rm_config_route_t *fb = c->_fallback_routes + k++;
            fb->cluster_index = sl->service_cluster;
            fb->path_match = RM_PATH_MATCH_ANY;
            fb->line = c->listeners[sl->parent].line;
        }
        sl->fallback_route = c->_fallback_routes + k - 1;
    }
    free(covering);
    index_service_routes(c, num_services);
    index_service_listeners(c);
}

int
rm_config_validate(rm_config_t *c, rm_config_error_t *err)
{
    const char *reason;
    char a1[96], a2[96];

    if (c->num_workers < 1 || c->num_workers > RM_CONFIG_MAX_WORKERS)
        return rm_config__error(err, c->source, 0, "workers must be 1-%d, got %u", RM_CONFIG_MAX_WORKERS, c->num_workers);
    if (check_ranges(c, err, 0, "limits.", &c->limits, rm_config__limit_ranges, rm_config__num_limit_ranges) != 0)
        return -1;
    if ((reason = check_addr(&c->admin_addr)) != NULL)
        return rm_config__error(err, c->source, c->admin_addr.line, "admin: %s", reason);
    if ((reason = check_addr(&c->health_addr)) != NULL)
        return rm_config__error(err, c->source, c->health_addr.line, "health: %s", reason);
    if (addrs_conflict(&c->admin_addr, &c->health_addr))
        return rm_config__error(err, c->source, c->health_addr.line != 0 ? c->health_addr.line : c->admin_addr.line,
                                "health address %s collides with the admin address %s", addr_str(&c->health_addr, a1, sizeof(a1)),
                                addr_str(&c->admin_addr, a2, sizeof(a2)));
    for (size_t i = 0; i != c->num_dns_servers; ++i) {
        char *norm = rm_config__normalize_dns_server(c->dns_servers[i], &reason);
        if (norm == NULL)
            return rm_config__error(err, c->source, 0, "dns.servers '%s': %s", c->dns_servers[i], reason);
        free(norm);
    }
    for (size_t i = 0; i != c->num_clusters; ++i)
        if (validate_cluster(c, i, err) != 0)
            return -1;
    for (size_t i = 0; i != c->num_listeners; ++i)
        if (validate_listener(c, i, err) != 0)
            return -1;
    build_service_listeners(c);
    return validate_telemetry(c, err);
}

/* --- quick flags --- */

rm_config_t *
rm_config_from_quick(const rm_config_quick_t *quick, rm_config_error_t *err)
{
    static const char source[] = "command line";
    rm_config_t *c = rm_config_create_defaults();
    const char *reason;

    c->source = rm_strdup(source);
    if (quick->workers != 0)
        c->num_workers = quick->workers;

    c->clusters = rm_calloc(1, sizeof(*c->clusters));
    c->num_clusters = 1;
    rm_config_cluster_t *cl = c->clusters;
    rm_config_cluster_set_defaults(cl);
    cl->name = rm_strdup("upstream");
    if (quick->upstream_protocol == NULL || strcmp(quick->upstream_protocol, "http1") == 0) {
        cl->protocol = RM_UPSTREAM_HTTP1;
    } else if (strcmp(quick->upstream_protocol, "h2") == 0) {
        cl->protocol = RM_UPSTREAM_H2;
    } else if (strcmp(quick->upstream_protocol, "auto") == 0) {
        cl->protocol = RM_UPSTREAM_AUTO;
    } else {
        rm_config__error(err, source, 0, "upstream protocol '%s' must be h2, http1 or auto", quick->upstream_protocol);
        goto Error;
    }
    if (quick->upstream == NULL) {
        rm_config__error(err, source, 0, "an upstream HOST:PORT is required");
        goto Error;
    }
    cl->endpoints = rm_calloc(1, sizeof(*cl->endpoints));
    if ((reason = rm_config__parse_endpoint(quick->upstream, cl->endpoints)) != NULL) {
        rm_config__error(err, source, 0, "upstream '%s': %s", quick->upstream, reason);
        goto Error;
    }
    cl->num_endpoints = 1;

    if (quick->listen == NULL) {
        rm_config__error(err, source, 0, "a listen ADDR:PORT is required");
        goto Error;
    }
    c->listeners = rm_calloc(1, sizeof(*c->listeners));
    c->num_listeners = 1;
    rm_config_listener_t *l = c->listeners;
    l->name = rm_strdup("main");
    if ((reason = rm_config__parse_bind_addr(quick->listen, &l->addr)) != NULL) {
        rm_config__error(err, source, 0, "listen address '%s': %s", quick->listen, reason);
        goto Error;
    }
    l->routes = rm_calloc(1, sizeof(*l->routes));
    l->num_routes = 1;
    l->routes[0].name = rm_strdup("default");
    l->routes[0].cluster_name = rm_strdup("upstream");

    if (rm_config_validate(c, err) != 0)
        goto Error;
    return c;
Error:
    rm_config_unref(c);
    return NULL;
}
