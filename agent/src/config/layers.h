/*
 * Helpers for the agent's configuration layers (docs/configuration.md, "Layers"): built-in defaults < the
 * --config file < REMORA_* environment < command-line flags. settings.c merges the layers; this module answers what
 * only the YAML reader can: on which line of the file a top-level setting was given.
 */
#ifndef remora__config_layers_h
#define remora__config_layers_h

/**
 * For each key of the NULL-terminated `keys`, the 1-based line of that key in the top-level mapping of the YAML file
 * `path`, or 0 when the file does not give it (lines[i] for keys[i]; `lines` has room for every key). A file that
 * cannot be read or parsed leaves every line 0 (its errors are reported by the bootstrap loader). Main thread; reads
 * the file (at most 16 MiB).
 */
void rm_config_top_level_lines(const char *path, const char *const *keys, unsigned *lines);

#endif
