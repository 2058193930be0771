/*
 * remoractl's operations commands (docs/control-plane.md):
 *
 *   remoractl proxy NODE stats|config|clusters|log-level [LEVEL] [--timeout D]
 *       one admin command on one agent, relayed by the control plane on that agent's discovery stream
 *       (Admin.Proxy): the agent's admin port stays on its loopback;
 *   remoractl check [--webhook ADDR:PORT] [--webhook-name DNS] [--wait D] [-o text|json]
 *       the mesh's health, like `linkerd check`: the control plane, its certificate authority, the
 *       injection webhook's serving certificate and every agent, one line per check; exit 1 if any failed.
 *
 * They reach the control plane with remoractl's own connection and error handling (remoractl.c),
 * passed in as an rm_ctl_env_t. Main thread of remoractl only; failures exit with remoractl's codes.
 */
#ifndef remora_control__remoractl_ops_h
#define remora_control__remoractl_ops_h

#include "remora/rpc.h"

typedef struct st_rm_ctl_env_t {
    /** the control plane's address; a command's own --control / -c replaces *control_addr */
    const char **control_addr;
    /** --ca (NULL when not given) and --insecure */
    const char *ca_file;
    int insecure;
    /** a channel to *control_addr with remoractl's credentials; exits 2 when they are missing or unreadable */
    rm_rpc_client_t *(*connect)(void);
    /** exits with remoractl's message and code for a failed call */
    void (*die_rpc)(const rm_rpc_status_t *st);
} rm_ctl_env_t;

extern const char rm_ctl_proxy_help[], rm_ctl_check_help[];

/** Each returns the exit code; `argv[0]` is the command's name. */
int rm_ctl_proxy(int argc, char **argv, const rm_ctl_env_t *env);
int rm_ctl_check(int argc, char **argv, const rm_ctl_env_t *env);

#endif
