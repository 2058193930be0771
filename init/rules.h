/*
 * remora-init's rule generation: the options that shape a pod's interception rules, the parsers
 * that validate them, the reader of the current `*-save -t nat` state, and the renderers of the
 * `iptables-restore --noflush` batches. Pure: no I/O, no process, no global state, so that the
 * batches are unit-tested against golden files (tests/golden/remora-init/).
 *
 * Every function may be called from any thread on distinct objects. Allocation failures abort
 * (rm_malloc). Parsers report a human-readable reason in a caller-provided buffer.
 */
#ifndef remora__init_rules_h
#define remora__init_rules_h

#include <stddef.h>
#include <stdint.h>

/** Address families, as bits. */
#define RM_INIT_IPV4 1u
#define RM_INIT_IPV6 2u

/** Every chain remora-init owns starts with this prefix; any chain with it is removed by --remove. */
#define RM_INIT_CHAIN_PREFIX "REMORA_"

/** A list of TCP ports, deduplicated, in the order given. */
typedef struct st_rm_init_ports_t {
    uint16_t *ports;
    size_t len;
} rm_init_ports_t;

/** A network prefix with its host bits cleared. */
typedef struct st_rm_init_cidr_t {
    unsigned family; /* RM_INIT_IPV4 or RM_INIT_IPV6 */
    uint8_t addr[16];
    unsigned prefix;
} rm_init_cidr_t;

/** A list of prefixes of either family, deduplicated, in the order given. */
typedef struct st_rm_init_cidrs_t {
    rm_init_cidr_t *cidrs;
    size_t len;
} rm_init_cidrs_t;

/** What shapes the rules. Owns its lists (rm_init_options_dispose). */
typedef struct st_rm_init_options_t {
    uint32_t proxy_uid;
    uint16_t inbound_port;  /* REDIRECT target of inbound TCP (15006) */
    uint16_t outbound_port; /* REDIRECT target of outbound TCP (15001) */
    uint16_t admin_port;    /* never captured inbound (15000) */
    uint16_t health_port;   /* never captured inbound (15020) */
    uint16_t control_port;  /* never captured outbound (15010) */
    rm_init_ports_t exclude_inbound_ports;
    rm_init_ports_t exclude_outbound_ports;
    rm_init_cidrs_t exclude_inbound_cidrs;  /* matched against the source of inbound connections */
    rm_init_cidrs_t exclude_outbound_cidrs; /* matched against the destination of outbound connections */
    unsigned families;                      /* RM_INIT_IPV4 | RM_INIT_IPV6 */
} rm_init_options_t;

/** Fills `opts` with the defaults (proxy UID 2102, ports 15006/15001/15000/15020/15010, both families). */
void rm_init_options_init(rm_init_options_t *opts);
/** Frees the lists held by `opts`. */
void rm_init_options_dispose(rm_init_options_t *opts);

/**
 * Parses a decimal TCP port (1..65535) into *port. Returns 0, or -1 with a reason naming `what`
 * in `err`.
 */
int rm_init_parse_port(const char *s, const char *what, uint16_t *port, char *err, size_t errsz);
/** Parses a decimal UID (0..4294967294). Returns 0, or -1 with a reason in `err`. */
int rm_init_parse_uid(const char *s, uint32_t *uid, char *err, size_t errsz);
/**
 * Parses a comma-separated list of ports ("80,443") and appends them to `list`, skipping
 * duplicates. An empty string is an empty list. Returns 0, or -1 with a reason naming `what`.
 */
int rm_init_parse_ports(const char *s, const char *what, rm_init_ports_t *list, char *err, size_t errsz);
/**
 * Parses a comma-separated list of prefixes ("10.0.0.0/8,fd00::/8"; an address without "/N" is a
 * host prefix) with inet_pton and appends them to `list`, host bits cleared, duplicates skipped.
 * Returns 0, or -1 with a reason naming `what`.
 */
int rm_init_parse_cidrs(const char *s, const char *what, rm_init_cidrs_t *list, char *err, size_t errsz);

/**
 * What the nat table holds of ours, read from `iptables-save -t nat` output: the chains named
 * RM_INIT_CHAIN_PREFIX* and the rules of other chains that jump to them. Owns its strings.
 */
typedef struct st_rm_init_state_t {
    char **chains; /* chain names */
    size_t num_chains;
    char **jumps; /* rule specs as saved, without the leading "-A ": "PREROUTING -p tcp -j REMORA_INBOUND" */
    size_t num_jumps;
} rm_init_state_t;

/** Reads the `*nat` section of `save_text` (NUL-terminated) into `state` (zeroed first). */
void rm_init_state_parse(rm_init_state_t *state, const char *save_text);
/** Frees what `state` holds and zeroes it. */
void rm_init_state_dispose(rm_init_state_t *state);

/**
 * Renders the batch that installs the rules of `family` (RM_INIT_IPV4 or RM_INIT_IPV6) for
 * `iptables-restore --noflush`, given what the table holds now (`state`, NULL for an empty table):
 * the own chains are declared (which creates or flushes them), stale own chains are flushed and
 * deleted, existing jumps to own chains are deleted and the rules and jumps are added. Applying it
 * twice leaves the table as after once. Returns a NUL-terminated string the caller frees.
 */
char *rm_init_render_install(const rm_init_options_t *opts, unsigned family, const rm_init_state_t *state);

/**
 * Renders the batch that removes everything of ours that `state` shows (own chains and the jumps to
 * them), leaving every other rule untouched. Returns a NUL-terminated string the caller frees.
 */
char *rm_init_render_remove(const rm_init_state_t *state);

#endif
