/*
 * remora-init's command line: every option, validated into rm_init_options_t plus the mode
 * (install, --remove, --dry-run) and the netfilter backend. Pure (no I/O); uses getopt_long, so
 * one thread at a time.
 */
#ifndef remora__init_cmdline_h
#define remora__init_cmdline_h

#include <stddef.h>
#include "rules.h"

typedef enum en_rm_init_backend_t {
    RM_INIT_BACKEND_AUTO,   /* whatever the system's `iptables` is */
    RM_INIT_BACKEND_NFT,    /* iptables-nft-restore / ip6tables-nft-restore */
    RM_INIT_BACKEND_LEGACY, /* iptables-legacy-restore / ip6tables-legacy-restore */
} rm_init_backend_t;

typedef struct st_rm_init_cmdline_t {
    rm_init_options_t opts;
    rm_init_backend_t backend;
    int dry_run;
    int remove;
    int help;
} rm_init_cmdline_t;

/** The --help text. */
extern const char rm_init_usage[];

/**
 * Parses argv into `cmd` (initialised with the defaults first; release with
 * rm_init_cmdline_dispose even on failure). Returns 0, or -1 with a reason in `err` (bad value,
 * unknown option, conflicting options, stray argument).
 */
int rm_init_cmdline_parse(rm_init_cmdline_t *cmd, int argc, char **argv, char *err, size_t errsz);

void rm_init_cmdline_dispose(rm_init_cmdline_t *cmd);

#endif
