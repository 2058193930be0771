/*
 * Fuzz target for the agent's bootstrap YAML (agent/src/config/bootstrap.c through rm_config_load_string, with
 * rm_config_validate): the input is the file's text.
 *
 * Besides "no crash, no leak, no UB" it checks: a refused input has a message; an accepted snapshot renders as JSON
 * (rm_config_to_json, what /config_dump serves) that jansson parses.
 */
#include <stdlib.h>
#include <jansson.h>
#include "config/config.h"
#include "fuzz_common.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rm_config_error_t err;
    rm_config_t *cfg = rm_config_load_string((const char *)data, size, "fuzz.yaml", &err);
    if (cfg == NULL) {
        FUZZ_CHECK(err.message[0] != '\0', "a refusal has a message");
        return 0;
    }
    char *json = rm_config_to_json(cfg);
    json_error_t jerr;
    json_t *doc = json_loads(json, 0, &jerr);
    if (doc == NULL)
        fprintf(stderr, "fuzz_bootstrap: %s at %d:%d in\n%s\n", jerr.text, jerr.line, jerr.column, json);
    FUZZ_CHECK(doc != NULL, "the config dump is JSON");
    json_decref(doc);
    free(json);
    rm_config_unref(cfg);
    return 0;
}
