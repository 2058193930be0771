/*
 * The control-plane client lives in a loadable module (remora-agent-control.so, built from
 * control_client.c, identity_client.c, h2rpc.c and translate.c): its gRPC client is its own (h2rpc.c,
 * on the executable's nghttp2 and OpenSSL), and the module still keeps protobuf-c and the generated
 * remora.v1 code out of an agent without --control (about 0.3 MB resident, docs/BENCHMARKS.md "Idle memory").
 *
 * The module finds everything else (config, logging) in the executable, which exports its symbols.
 * Thread: load from the main thread.
 */
#ifndef remora__control_module_h
#define remora__control_module_h

#include "config/control_client.h"
#include "config/identity_client.h"

typedef struct st_rm_control_module_t {
    rm_control_client_t *(*start)(const rm_control_options_t *opts, char *err, size_t errlen);
    void (*stop)(rm_control_client_t *client);
    rm_config_t *(*load_persisted)(const char *state_dir, rm_config_t *base, uint64_t *version, char *err, size_t errlen);
    /* the workload-identity client (config/identity_client.h) */
    rm_identity_client_t *(*identity_start)(const rm_identity_client_options_t *opts, char *err, size_t errlen);
    void (*identity_stop)(rm_identity_client_t *client);
} rm_control_module_t;

/** The module's entry table, exported under this name. */
#define RM_CONTROL_MODULE_SYMBOL "rm_control_module"
#define RM_CONTROL_MODULE_FILE "remora-agent-control.so"

/**
 * Loads the module: $REMORA_AGENT_MODULE_DIR if set, else the executable's directory, else
 * ../lib/remora relative to it. Returns its table, or NULL with a reason naming the paths tried.
 */
const rm_control_module_t *rm_control_module_load(char *err, size_t errlen);

#endif
