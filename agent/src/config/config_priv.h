/*
 * Helpers shared by the configuration producers (bootstrap YAML, quick flags) and the validator.
 * Private to agent/src/config/. Pure functions, any thread; reasons are static strings.
 */
#ifndef remora__config_priv_h
#define remora__config_priv_h

#include <stdarg.h>
#include "config/config.h"

/** Largest accepted worker count. */
#define RM_CONFIG_MAX_WORKERS 64

/** A numeric setting with its accepted range, so the parser and the validator agree. */
typedef struct st_rm_config_range_t {
    const char *name;
    size_t offset; /* of a uint32_t inside the owning struct */
    uint32_t min, max;
} rm_config_range_t;

/** The `limits` block, in document order. */
extern const rm_config_range_t rm_config__limit_ranges[];
extern const size_t rm_config__num_limit_ranges;
/** The numeric settings of a cluster (rm_config_cluster_t offsets). */
extern const rm_config_range_t rm_config__cluster_ranges[];
extern const size_t rm_config__num_cluster_ranges;

/** The `retry_budget` block of a cluster (rm_config_cluster_t offsets; names as in the YAML block). */
extern const rm_config_range_t rm_config__budget_ranges[];
extern const size_t rm_config__num_budget_ranges;

/** The `circuit_breakers` block of a cluster (rm_config_breakers_t offsets). */
extern const rm_config_range_t rm_config__breaker_ranges[];
extern const size_t rm_config__num_breaker_ranges;
/** The `outlier_detection` block of a cluster (rm_config_outlier_t offsets, without `enabled`). */
extern const rm_config_range_t rm_config__outlier_ranges[];
extern const size_t rm_config__num_outlier_ranges;
/** The `health_check` numbers of a cluster (rm_config_health_check_t offsets). */
extern const rm_config_range_t rm_config__health_ranges[];
extern const size_t rm_config__num_health_ranges;

/** Backend and limit policy bounds shared by the parser and the validator. */
#define RM_CONFIG_MAX_ENDPOINT_WEIGHT 1000000
#define RM_CONFIG_MAX_RING_SIZE 8388608
#define RM_CONFIG_DEFAULT_RING_SIZE 1024
#define RM_CONFIG_MAX_RATE 10000000 /* requests per second, and burst */
#define RM_CONFIG_MAX_RATE_CLIENTS 10000000
#define RM_CONFIG_DEFAULT_RATE_CLIENTS 10000
#define RM_CONFIG_MAX_OVERRIDE_CLIENTS 1000
#define RM_CONFIG_MAX_RATE_NAME 128

/** Names of rm_lb_type_t values as in the YAML (index = value; [RM_LB_DEFAULT] is "default"). */
#define RM_CONFIG_NUM_LB_TYPES 5
extern const char *const rm_config__lb_type_names[RM_CONFIG_NUM_LB_TYPES];
/** The balancer in force for a cluster: `lb` with RM_LB_DEFAULT resolved by `protocol`. */
rm_lb_type_t rm_config__effective_lb(const rm_config_cluster_t *cluster);
/** Names of rm_client_key_t values as in the YAML (index = value). */
#define RM_CONFIG_NUM_CLIENT_KEYS 3
extern const char *const rm_config__client_key_names[RM_CONFIG_NUM_CLIENT_KEYS];
/** 1 if `name` is a valid rate limit name: [A-Za-z0-9._/-]{1,128}. */
int rm_config__valid_rate_limit_name(const char *name);
/** 1 if `s` is an HTTP token (RFC 9110 tchar, which is also RFC 6265's cookie-name). */
int rm_config__valid_token(const char *s);

/** Authorization bounds shared by the parser, the validator and the control plane (docs/configuration.md). */
#define RM_CONFIG_MAX_AUTHZ_POLICIES 64 /* per target */
#define RM_CONFIG_MAX_AUTHZ_RULES 32    /* per policy */
#define RM_CONFIG_MAX_AUTHZ_ENTRIES 16  /* from / to entries per rule */
#define RM_CONFIG_MAX_AUTHZ_VALUES 32   /* values per list */
#define RM_CONFIG_MAX_AUTHZ_VALUE_BYTES 512
typedef enum en_rm_config_authz_value_t {
    RM_CONFIG_AUTHZ_IDENTITY,
    RM_CONFIG_AUTHZ_NAMESPACE,
    RM_CONFIG_AUTHZ_METHOD,
    RM_CONFIG_AUTHZ_PATH,
    RM_CONFIG_AUTHZ_GRPC_METHOD,
} rm_config_authz_value_t;
/** Why `s` is not a valid value of its kind (static storage), or NULL when it is. */
const char *rm_config__authz_value_error(rm_config_authz_value_t type, const char *s);
/** Names of rm_authz_action_t values as in the bootstrap YAML (index = value): "allow", "deny", "audit". */
extern const char *const rm_config__authz_action_names[3];
/**
 * Checks the policies of one target (counts, names unique on the target, values); `what` prefixes
 * the message ("route 'x' of listener 'y': "). Returns 0, or -1 with `err` filled (line `line`).
 */
int rm_config__validate_authz(const rm_config_t *c, const rm_config_authz_t *authz, unsigned line, const char *what,
                              rm_config_error_t *err);

/** Retry bounds shared by the parser and the validator. */
#define RM_CONFIG_MAX_RETRY_ATTEMPTS 10
#define RM_CONFIG_MAX_BACKOFF_MS 60000
#define RM_CONFIG_MAX_MAX_BACKOFF_MS 600000
#define RM_CONFIG_MAX_REPLAY_BYTES (16 * 1024 * 1024)
/** Upper bound of every route-level duration (timeouts, fault delay): one day. */
#define RM_CONFIG_MAX_ROUTE_MS 86400000

/** Retry condition names (YAML `retry.on`) and their RM_RETRY_ON_* bits, NULL-terminated. */
typedef struct st_rm_config_flag_name_t {
    const char *name;
    uint32_t bit;
} rm_config_flag_name_t;
extern const rm_config_flag_name_t rm_config__retry_conditions[];

/** gRPC status code names as in the gRPC spec ("OK" ... "UNAUTHENTICATED"), indexed by code 0-16. */
/** The code of an upper-case gRPC status name, or -1. */
int rm_config__grpc_status_code(const char *name);

/**
 * Parses a percentage "0".."100" with up to 4 decimals ("10", "0.5", "99.9999") into parts per million.
 * Returns 0, or -1 if `s` is anything else.
 */
int rm_config__parse_percent(const char *s, uint32_t *per_million);
/** Formats parts per million as a percentage without trailing zeros ("10", "0.5") into buf (at least 16 bytes). */
const char *rm_config__format_percent(uint32_t per_million, char *buf, size_t bufsz);

/** Operations of a header modifier, for rm_config__check_mod_header. */
typedef enum en_rm_config_header_op_t {
    RM_CONFIG_HEADER_SET,
    RM_CONFIG_HEADER_ADD,
    RM_CONFIG_HEADER_REMOVE,
} rm_config_header_op_t;
/**
 * Checks a header name of a request (`request` = 1) or response modifier, in any case: an HTTP token,
 * not a pseudo-header, not a hop-by-hop or framing field, `host` only set in requests. Returns NULL,
 * or a reason (static string).
 */
const char *rm_config__check_mod_header(const char *name, int request, rm_config_header_op_t op);
/**
 * Checks a redirect / URL rewrite path of `type` (RM_PATH_REWRITE_FULL or _PREFIX) for a route whose
 * path match is `route_match`. Returns NULL, or a reason (static string).
 */
const char *rm_config__check_rewrite_path(rm_path_rewrite_t type, const char *path, rm_path_match_t route_match);
/** 1 if `s` is a DNS name usable as a redirect or rewrite hostname (letters, digits, '-', '_', dots). */
int rm_config__valid_hostname(const char *s);

/** Fills `err` ("file" truncated to fit) and returns -1. */
int rm_config__error(rm_config_error_t *err, const char *file, unsigned line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/**
 * Splits "HOST:PORT" or "[V6]:PORT"; `host` points into `s` (brackets removed). The port must be
 * 1-65535. Returns NULL, or a reason naming what is wrong.
 */
const char *rm_config__split_host_port(const char *s, const char **host, size_t *host_len, uint16_t *port);

/**
 * Parses a local address to bind: "IP:PORT", "[V6]:PORT", "*:PORT" or ":PORT" (IPv4 any).
 * Returns NULL, or a reason. addr->line is left untouched.
 */
const char *rm_config__parse_bind_addr(const char *s, rm_config_addr_t *addr);

/**
 * Parses an upstream endpoint "HOST:PORT" (IP literal or DNS name) into `ep` (ep->host allocated).
 * Returns NULL, or a reason (then nothing is allocated).
 */
const char *rm_config__parse_endpoint(const char *s, rm_config_endpoint_t *ep);

/**
 * Normalizes a DNS server "IP" or "IP:PORT" / "[V6]:PORT" into a newly allocated "IP:PORT" string
 * (port 53 when absent). Returns NULL with *reason set on error.
 */
char *rm_config__normalize_dns_server(const char *s, const char **reason);

/** Telemetry bounds shared by the parser and the validator. */
#define RM_CONFIG_MAX_TRACE_BATCH 65536
#define RM_CONFIG_MAX_TRACE_BATCH_TIMEOUT_MS 600000
#define RM_CONFIG_MAX_TRACE_QUEUE 1048576
#define RM_CONFIG_MIN_ACCESS_LOG_BUFFER 4096
#define RM_CONFIG_MAX_ACCESS_LOG_BUFFER (256u * 1024 * 1024)
#define RM_CONFIG_MAX_SERVICE_NAME 255
/** Checks an OTLP receiver address: "IP:PORT" or "[V6]:PORT", an IP literal. Returns NULL, or a reason (static). */
const char *rm_config__check_otlp_endpoint(const char *s);
/**
 * Checks an access log destination: "stdout", or a file that exists and is writable (not a directory),
 * or whose directory exists and lets the file be created. No file is created. Returns NULL, or a
 * reason (written into buf).
 */
const char *rm_config__check_log_path(const char *path, char *buf, size_t bufsz);

/** Checks that `path` is a readable regular file. Returns NULL, or a reason (written into buf). */
const char *rm_config__check_readable(const char *path, char *buf, size_t bufsz);

/** 1 if `name` is a valid listener / cluster / route name (letters, digits, "._-:/", 1-128 bytes). */
int rm_config__valid_name(const char *name);

#endif
