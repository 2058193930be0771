/*
 * Fuzz target for the `grpc-timeout` request header (agent/src/policy/grpc_timeout.c): the input is the field value.
 *
 * Besides "no crash, no UB" it checks, for any input:
 *   - only 1 to 8 digits followed by one unit of H M S m u n parse;
 *   - a parsed value formats (rm_grpc_timeout_format) into at most 9 characters that parse again to at most the value
 *     and lose at most 1/10^5 of it (the header never states more time than is left).
 * A violated property aborts.
 */
#include <string.h>
#include "fuzz_common.h"
#include "policy/grpc_timeout.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *s = (const char *)data;
    uint64_t us = 12345;
    if (rm_grpc_timeout_parse(s, size, &us) != 0) {
        FUZZ_CHECK(us == 12345, "a refused value leaves the output alone");
        return 0;
    }
    FUZZ_CHECK(size >= 2 && size <= 9 && strchr("HMSmun", s[size - 1]) != NULL, "digits and a unit");
    for (size_t i = 0; i + 1 < size; ++i)
        FUZZ_CHECK(s[i] >= '0' && s[i] <= '9', "only digits before the unit");
    char buf[RM_GRPC_TIMEOUT_FORMAT_SIZE];
    size_t n = rm_grpc_timeout_format(us, buf);
    FUZZ_CHECK(n == strlen(buf) && n >= 2 && n <= 9, "a formatted value has 2 to 9 characters");
    uint64_t back = 0;
    FUZZ_CHECK(rm_grpc_timeout_parse(buf, n, &back) == 0, "a formatted value parses");
    FUZZ_CHECK(back <= us, "formatting never adds time");
    FUZZ_CHECK(us - back <= us / 100000, "formatting loses at most 1/10^5");
    return 0;
}
