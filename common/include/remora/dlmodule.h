/*
 * Loading the agent's optional modules (shared objects built beside the executable: the control-plane
 * client, the OTLP exporter), so that their libraries (gRPC, protobuf-c) are mapped only when a
 * feature needs them.
 *
 * A module `file` is looked for in $REMORA_AGENT_MODULE_DIR, then in the executable's directory,
 * then in ../lib/remora relative to it. Modules are never unloaded: gRPC keeps threads and globals
 * for the life of the process.
 */
#ifndef remora__dlmodule_h
#define remora__dlmodule_h

#include <stddef.h>

/**
 * The address of `symbol` in the first module `file` that loads and has it; NULL with `err` naming
 * `what` and every place tried (and why it failed). Any thread.
 */
const void *rm_dlmodule_load(const char *file, const char *symbol, const char *what, char *err, size_t errlen);

#endif
