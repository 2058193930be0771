/*
 * Fuzz target for the injection webhook's request body (control/src/webhook.c, rm_webhook_review): the input is the
 * body of a POST /inject, an AdmissionReview in JSON, as a Kubernetes API server (or anybody reaching the port) sends it.
 *
 * Besides "no crash, no leak, no UB" it checks, for any input:
 *   - the answer is 200 or 400 and always has a body;
 *   - a 200 body is a JSON AdmissionReview whose response carries a uid, and a JSONPatch response has a base64 patch.
 * A violated property aborts.
 */
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "fuzz_common.h"
#include "webhook.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static rm_inject_config_t cfg;
    static int inited;
    if (!inited) {
        rm_inject_config_init(&cfg);
        inited = 1;
    }
    int status = 0;
    char log_line[512];
    char *resp = rm_webhook_review(&cfg, (const char *)data, size, &status, log_line, sizeof(log_line));
    FUZZ_CHECK(resp != NULL, "a body for every answer");
    FUZZ_CHECK(status == 200 || status == 400, "status 200 or 400");
    if (status == 200) {
        json_error_t jerr;
        json_t *review = json_loads(resp, 0, &jerr);
        FUZZ_CHECK(review != NULL, "a 200 body is JSON");
        json_t *response = json_object_get(review, "response");
        FUZZ_CHECK(json_is_object(response), "an AdmissionReview with a response");
        FUZZ_CHECK(json_is_string(json_object_get(response, "uid")), "the response has a uid");
        json_t *type = json_object_get(response, "patchType");
        if (type != NULL)
            FUZZ_CHECK(json_is_string(json_object_get(response, "patch")), "a patchType comes with a patch");
        json_decref(review);
    }
    free(resp);
    return 0;
}
