/*
 * What every remoractl command shares: its exit codes, the one-line fatal error and the duration
 * syntax of its flags (--timeout, --wait). Main thread of remoractl only.
 */
#ifndef remora_control__remoractl_util_h
#define remora_control__remoractl_util_h

#include <stdint.h>

/* remoractl's exit codes (docs/control-plane.md, "remoractl") */
enum {
    EXIT_REFUSED = 1,
    EXIT_USAGE = 2,
    EXIT_UNREACHABLE = 3,
    EXIT_TIMEOUT = 4,
};

/** Prints "remoractl: MESSAGE" on standard error and exits with `code`. */
void rm_ctl_die(int code, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));

/**
 * A flag's duration: "250ms", "5s", "2m", "1h", or a plain number of seconds ("2", "0.5"), up to 24 h.
 * Returns milliseconds (rounded), or -1 when it does not parse; callers check their own range.
 */
int64_t rm_ctl_parse_duration_ms(const char *s);

#endif
