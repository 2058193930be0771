/*
 * The `grpc-timeout` request header of the gRPC HTTP/2 protocol
 * (https://github.com/grpc/grpc/blob/master/doc/PROTOCOL-HTTP2.md):
 *
 *     Timeout      → "grpc-timeout" TimeoutValue TimeoutUnit
 *     TimeoutValue → {positive integer as ASCII string of at most 8 digits}
 *     TimeoutUnit  → Hour / Minute / Second / Millisecond / Microsecond / Nanosecond
 *     Hour → "H"  Minute → "M"  Second → "S"  Millisecond → "m"  Microsecond → "u"  Nanosecond → "n"
 *
 * The agent reads it to bound a gRPC request by the client's deadline and writes it, lowered by the
 * time already spent, on the request it sends upstream. Durations are in microseconds.
 *
 * Pure: no I/O, no allocation, no state; any thread.
 */
#ifndef remora__grpc_timeout_h
#define remora__grpc_timeout_h

#include <stddef.h>
#include <stdint.h>

/** Size of the buffer rm_grpc_timeout_format() needs: 8 digits, a unit and a NUL. */
#define RM_GRPC_TIMEOUT_FORMAT_SIZE 10

/**
 * Parses a grpc-timeout value (`s`, `len` bytes, need not be NUL-terminated; peer input) into
 * microseconds. Accepted: 1 to 8 ASCII digits (leading zeros allowed, and a value of 0, which
 * gives 0: a deadline already expired) followed by exactly one of H M S m u n. Anything else is
 * rejected: empty, no digits, 9 or more digits, no unit, another unit, a sign, spaces or other
 * bytes anywhere (the HTTP layer has already trimmed the field value). Nanoseconds round up to
 * whole microseconds (1n is 1 us), so a tiny but positive deadline never becomes 0. The result
 * cannot overflow (the largest, 99999999H, is about 3.6e17 us) and saturates at UINT64_MAX if that
 * ever changed. Returns 0 with *out_us set, or -1 leaving *out_us untouched.
 */
int rm_grpc_timeout_parse(const char *s, size_t len, uint64_t *out_us);

/**
 * Writes `us` as a grpc-timeout value into `buf` (at least RM_GRPC_TIMEOUT_FORMAT_SIZE bytes),
 * NUL-terminated, and returns its length (without the NUL). The unit is the finest of u, m, S, M, H
 * whose value fits in 8 digits, and the value is truncated, so the header never states more time
 * than `us`: at most 1/10^5 of it is lost. Durations beyond 99999999 hours (11 millennia) are
 * written as "99999999H". `us` 0 is written "0u": it states no time at all, as asked; the protocol
 * says "positive", but gRPC implementations (and rm_grpc_timeout_parse) read it as an expired
 * deadline. Callers do not send it: a request whose deadline has passed is answered with
 * DEADLINE_EXCEEDED by the agent itself. Nanoseconds are never used (no precision to gain).
 */
size_t rm_grpc_timeout_format(uint64_t us, char *buf);

#endif
