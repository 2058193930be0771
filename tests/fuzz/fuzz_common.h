/*
 * Shared by the fuzz targets: the libFuzzer entry point's prototype and check(), which aborts with the violated
 * property so that libFuzzer (and the replay in ctest) reports the input.
 */
#ifndef remora_fuzz_common_h
#define remora_fuzz_common_h

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_CHECK(cond, what)                                                                                                     \
    do {                                                                                                                           \
        if (!(cond)) {                                                                                                             \
            fprintf(stderr, "%s:%d: property violated: %s\n", __FILE__, __LINE__, (what));                                         \
            abort();                                                                                                               \
        }                                                                                                                          \
    } while (0)

#endif
