#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "remoractl_util.h"

void
rm_ctl_die(int code, const char *fmt, ...)
{
    va_list ap;
    fputs("remoractl: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(code);
}

int64_t
rm_ctl_parse_duration_ms(const char *s)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno != 0 || !(v >= 0))
        return -1;
    double scale = strcmp(end, "ms") == 0                  ? 1
                   : strcmp(end, "s") == 0 || *end == '\0' ? 1000
                   : strcmp(end, "m") == 0                 ? 60000
                   : strcmp(end, "h") == 0                 ? 3600000
                                                           : -1;
    if (scale < 0 || v * scale > 86400e3)
        return -1;
    return (int64_t)(v * scale + 0.5);
}
