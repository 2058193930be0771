/*
 * Fuzz target for REMORA_APP_PROBES (agent/src/admin/app_probe.c, rm_app_probes_create): the JSON the injector puts in
 * the agent's environment, describing the application's original probes. The environment is trusted more than a
 * peer, but the value is built from the pod spec, i.e. from user input; a bad value must be refused with a message.
 *
 * Besides "no crash, no leak, no UB" it checks: an input is accepted with at most RM_APP_PROBES_MAX probes, or
 * refused with a message that names REMORA_APP_PROBES.
 */
#include <stdlib.h>
#include <string.h>
#include "admin/app_probe.h"
#include "fuzz_common.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* an environment variable: NUL-terminated, so the text ends at the first NUL */
    char *json = malloc(size + 1);
    memcpy(json, data, size);
    json[size] = '\0';
    char err[512] = "";
    /* parsing uses neither the loop nor the HTTP/2 codec: they serve probes later */
    rm_app_probes_t *probes = rm_app_probes_create(NULL, json, NULL, NULL, err, sizeof(err));
    if (probes == NULL) {
        FUZZ_CHECK(strstr(err, "REMORA_APP_PROBES") != NULL, "a refusal names the variable");
    } else {
        FUZZ_CHECK(rm_app_probes_count(probes) <= RM_APP_PROBES_MAX, "at most RM_APP_PROBES_MAX probes");
        rm_app_probes_destroy(probes);
    }
    free(json);
    return 0;
}
