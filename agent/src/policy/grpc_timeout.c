#include <stdint.h>
#include "policy/grpc_timeout.h"

#define MAX_DIGITS 8
#define MAX_VALUE 99999999u

static uint64_t
mul_saturate(uint64_t a, uint64_t b)
{
    uint64_t r;
    return __builtin_mul_overflow(a, b, &r) ? UINT64_MAX : r;
}

int
rm_grpc_timeout_parse(const char *s, size_t len, uint64_t *out_us)
{
    if (len < 2 || len > MAX_DIGITS + 1)
        return -1;
    uint64_t value = 0;
    for (size_t i = 0; i != len - 1; ++i) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        value = value * 10 + (uint64_t)(s[i] - '0');
    }
    uint64_t us;
    switch (s[len - 1]) {
    case 'H':
        us = mul_saturate(value, 3600ull * 1000000);
        break;
    case 'M':
        us = mul_saturate(value, 60ull * 1000000);
        break;
    case 'S':
        us = mul_saturate(value, 1000000);
        break;
    case 'm':
        us = mul_saturate(value, 1000);
        break;
    case 'u':
        us = value;
        break;
    case 'n':
        /* up, not down: a deadline of a few nanoseconds is still a deadline, not "none" or "expired" */
        us = value / 1000 + (value % 1000 != 0);
        break;
    default:
        return -1;
    }
    *out_us = us;
    return 0;
}

size_t
rm_grpc_timeout_format(uint64_t us, char *buf)
{
    static const struct {
        uint64_t us;
        char unit;
    } units[] = {{1, 'u'}, {1000, 'm'}, {1000000, 'S'}, {60ull * 1000000, 'M'}, {3600ull * 1000000, 'H'}};
    uint64_t value = MAX_VALUE;
    char unit = 'H';
    for (size_t i = 0; i != sizeof(units) / sizeof(units[0]); ++i) {
        if (us / units[i].us <= MAX_VALUE) {
            value = us / units[i].us;
            unit = units[i].unit;
            break;
        }
    }

    char digits[MAX_DIGITS];
    size_t n = 0;
    do {
        digits[n++] = (char)('0' + value % 10);
        value /= 10;
    } while (value != 0);
    size_t len = 0;
    while (n != 0)
        buf[len++] = digits[--n];
    buf[len++] = unit;
    buf[len] = '\0';
    return len;
}
