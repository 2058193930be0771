#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include "remora/log.h"

volatile int rm_log_current_level = RM_LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

const char *
rm_log_level_name(rm_log_level_t level)
{
    return (unsigned)level < 4 ? level_names[level] : "unknown";
}

int
rm_log_set_level_by_name(const char *name)
{
    for (int i = 0; i < 4; ++i) {
        if (strcmp(name, level_names[i]) == 0) {
            __atomic_store_n(&rm_log_current_level, i, __ATOMIC_RELAXED);
            return 0;
        }
    }
    return -1;
}

__attribute__((format(printf, 3, 0))) static void
vwrite_line(const char *level, const char *component, const char *fmt, va_list args)
{
    char buf[2048];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int off = snprintf(buf, sizeof(buf), "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ %-5s [%s] ", tm.tm_year + 1900, tm.tm_mon + 1,
                       tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000, level, component);
    if (off < 0)
        return;
    int n = vsnprintf(buf + off, sizeof(buf) - off - 1, fmt, args);
    if (n < 0)
        return;
    size_t len = off + ((size_t)n < sizeof(buf) - off - 1 ? (size_t)n : sizeof(buf) - off - 2);
    buf[len++] = '\n';
    /* a single write keeps lines from different threads whole */
    ssize_t r = write(2, buf, len);
    (void)r;
}

void
rm_log_write(rm_log_level_t level, const char *component, const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    vwrite_line(rm_log_level_name(level), component, fmt, args);
    va_end(args);
}

void
rm_fatal(const char *fmt, ...)
{
    va_list args;
    va_start(args, fmt);
    vwrite_line("FATAL", "remora", fmt, args);
    va_end(args);
    abort();
}
