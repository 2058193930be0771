/*
 * Fuzz target for the ClientHello ALPN peek (agent/src/net/detect.c, rm_detect_mesh_alpn) that tells mesh mTLS from
 * the application's own TLS on an inbound connection: the input is the first bytes of the connection.
 *
 * Besides "no crash, no UB" it checks, for any input:
 *   - the verdict reached on a prefix does not change when more bytes arrive (the listener acts on the first one);
 *   - the peek never waits for more than the first record (RM_DETECT_MAX_CLIENT_HELLO bytes).
 * A violated property aborts.
 */
#include "fuzz_common.h"
#include "net/detect.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rm_detect_alpn_t first = RM_DETECT_ALPN_NEED_MORE;
    /* every prefix of the first 64 bytes, then every 61st and the last two: a full scan is quadratic */
    for (size_t len = 0; len <= size; len = len < 64 || len + 2 >= size ? len + 1 : len + 61 < size - 1 ? len + 61 : size - 1) {
        rm_detect_alpn_t v = rm_detect_mesh_alpn(data, len);
        FUZZ_CHECK(v == RM_DETECT_ALPN_NEED_MORE || v == RM_DETECT_ALPN_MESH || v == RM_DETECT_ALPN_OTHER, "a known verdict");
        if (first == RM_DETECT_ALPN_NEED_MORE)
            first = v;
        else
            FUZZ_CHECK(v == first, "the verdict changed when more bytes came");
        if (v == RM_DETECT_ALPN_NEED_MORE)
            FUZZ_CHECK(len < RM_DETECT_MAX_CLIENT_HELLO, "waited past the first record");
    }
    return 0;
}
