/*
 * Agent-wide families that no worker counts: the process (CPU, memory, file descriptors, start
 * time; the names every Prometheus client library exports), the build, and the configuration in
 * service (its version, when it was applied, how many updates were refused).
 *
 * Thread: the setters may be called from any thread (the version under a mutex, the rest atomics);
 * rendering runs on the main thread at scrape.
 */
#ifndef remora__obs_process_h
#define remora__obs_process_h

#include <stdio.h>

/** Where a refused configuration update came from (remora_config_nacks_total{source}). */
typedef enum en_rm_obs_config_source_t {
    RM_OBS_CONFIG_CONTROL_PLANE = 0, /* a snapshot NACKed to the control plane */
    RM_OBS_CONFIG_FILE = 1,          /* a bootstrap file reload (SIGHUP) rejected */
    RM_OBS_CONFIG_SOURCES
} rm_obs_config_source_t;

/** Sets the labels of remora_build_info (`version` is copied). Main thread, at start. */
void rm_obs_set_build_info(const char *version);
/** A configuration is in service: `version` (copied) is the producer's version, or NULL to use `generation`. */
void rm_obs_config_applied(const char *version, unsigned long long generation);
/** A configuration update was refused. Any thread. */
void rm_obs_config_rejected(rm_obs_config_source_t source);
/** Writes the process, build and config families in Prometheus text 0.0.4. Main thread. */
void rm_obs_render_process(FILE *fp);

#endif
