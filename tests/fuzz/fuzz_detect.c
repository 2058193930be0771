/*
 * Fuzz target for protocol detection (net/detect.c): the input is the first bytes of a connection.
 *
 * Besides "no crash, no UB" it checks, for both listener kinds and any input:
 *   - a verdict reached on a prefix does not change when more bytes arrive (the listener acts on the
 *     first verdict that is not NEED_MORE);
 *   - a transparent listener never waits past the HTTP/2 preface or the longest method token plus a space;
 *   - an explicit listener never answers OPAQUE.
 * A violated property aborts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "net/detect.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void
check(int cond, const char *what)
{
    if (!cond) {
        fprintf(stderr, "fuzz_detect: property violated: %s\n", what);
        abort();
    }
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    for (int transparent = 0; transparent != 2; ++transparent) {
        rm_detect_verdict_t first = RM_DETECT_NEED_MORE;
        size_t decided_at = 0; /* 0: never decided */
        for (size_t len = 1; len <= size; ++len) {
            rm_detect_verdict_t v = rm_detect_classify((const char *)data, len, transparent);
            if (!transparent)
                check(v != RM_DETECT_IS_OPAQUE, "an explicit listener answered opaque");
            if (first == RM_DETECT_NEED_MORE) {
                first = v;
                decided_at = len;
            } else {
                check(v == first, "the verdict changed when more bytes came");
            }
        }
        /* the preface is 24 bytes; a method token is given up at RM_DETECT_MAX_METHOD_LEN characters */
        if (first == RM_DETECT_NEED_MORE)
            check(size <= 24 && size <= RM_DETECT_MAX_METHOD_LEN, "still waiting after the preface / the longest method");
        check(decided_at <= 25, "decided later than the 25th byte");
    }
    return 0;
}
