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

/** Checks that `path` is a readable regular file. Returns NULL, or a reason (written into buf). */
const char *rm_config__check_readable(const char *path, char *buf, size_t bufsz);

/** 1 if `name` is a valid listener / cluster / route name (letters, digits, "._-:/", 1-128 bytes). */
int rm_config__valid_name(const char *name);

#endif
