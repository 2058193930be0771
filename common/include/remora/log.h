/*
 * Logging shared by every Remora program.
 *
 * Lines go to stderr as "LEVEL [component] message". The level is a process-wide setting that any
 * thread may read and the main thread may change at run time (admin API). Thread-safe: each line
 * is formatted into a local buffer and written with a single write(2).
 */
#ifndef remora__log_h
#define remora__log_h

#include <stdarg.h>

typedef enum en_rm_log_level_t {
    RM_LOG_ERROR = 0,
    RM_LOG_WARN = 1,
    RM_LOG_INFO = 2,
    RM_LOG_DEBUG = 3,
} rm_log_level_t;

/** The current level; messages above it are dropped. Relaxed atomic. */
extern volatile int rm_log_current_level;

/** Sets the level. Returns 0, or -1 if `name` is not one of error|warn|info|debug. */
int rm_log_set_level_by_name(const char *name);
/** Name of a level ("error", ...). */
const char *rm_log_level_name(rm_log_level_t level);

void rm_log_write(rm_log_level_t level, const char *component, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#define rm_log(level, component, ...)                                                                                              \
    do {                                                                                                                           \
        if ((int)(level) <= rm_log_current_level)                                                                                  \
            rm_log_write((level), (component), __VA_ARGS__);                                                                       \
    } while (0)
#define rm_log_error(comp, ...) rm_log(RM_LOG_ERROR, comp, __VA_ARGS__)
#define rm_log_warn(comp, ...) rm_log(RM_LOG_WARN, comp, __VA_ARGS__)
#define rm_log_info(comp, ...) rm_log(RM_LOG_INFO, comp, __VA_ARGS__)
#define rm_log_debug(comp, ...) rm_log(RM_LOG_DEBUG, comp, __VA_ARGS__)

/** Aborts with a message: for broken invariants and out of memory, never for peer input. */
void rm_fatal(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

#endif
