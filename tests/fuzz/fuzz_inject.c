/*
 * Fuzz target for sidecar injection (control/src/inject.c): the pod JSON -> JSON Patch generator and the RFC 6902
 * applier, whose output and input the webhook and `remoractl inject|uninject` trust.
 *
 * The input is JSON. An object is a pod (or a pod template) and goes through the generator:
 *   - rm_inject_pod's patch applies to the pod without error (rm_jsonpatch_apply), and the patched pod is then
 *     left alone by a second injection (never patched twice);
 *   - rm_uninject_pod on the injected pod gives a patch that applies too, and the result is not injected any more.
 * An array [document, patch] goes straight through rm_jsonpatch_apply (arbitrary patches: no crash, leak or UB).
 * A violated property aborts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "fuzz_common.h"
#include "inject.h"

static const rm_inject_config_t *
config(void)
{
    static rm_inject_config_t cfg;
    static int inited;
    if (!inited) {
        rm_inject_config_init(&cfg);
        inited = 1;
    }
    return &cfg;
}

static void
apply_ok(json_t *doc, const json_t *patch, const char *what)
{
    char err[512];
    if (rm_jsonpatch_apply(doc, patch, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_inject: %s: %s\n", what, err);
        FUZZ_CHECK(0, "a generated patch applies");
    }
}

static void
pod(const json_t *in)
{
    char reason[512];
    json_t *patch = NULL, *warnings = json_array();
    rm_inject_result_t r = rm_inject_pod(config(), in, &patch, warnings, reason, sizeof(reason));
    json_decref(warnings);
    if (r != RM_INJECT_PATCH) {
        FUZZ_CHECK(patch == NULL, "no patch unless RM_INJECT_PATCH");
        return;
    }
    FUZZ_CHECK(json_is_array(patch), "a patch is an array");
    json_t *injected = json_deep_copy(in);
    apply_ok(injected, patch, "inject");
    json_decref(patch);

    json_t *again = NULL;
    r = rm_inject_pod(config(), injected, &again, NULL, reason, sizeof(reason));
    FUZZ_CHECK(r != RM_INJECT_PATCH, "an injected pod is not injected twice");
    json_decref(again);

    json_t *un = NULL;
    r = rm_uninject_pod(injected, &un, reason, sizeof(reason));
    if (r == RM_INJECT_PATCH) {
        apply_ok(injected, un, "uninject");
        json_decref(un);
        json_t *un2 = NULL;
        FUZZ_CHECK(rm_uninject_pod(injected, &un2, reason, sizeof(reason)) == RM_INJECT_SKIP, "an uninjected pod is not injected");
        json_decref(un2);
    } else {
        FUZZ_CHECK(un == NULL, "no patch unless RM_INJECT_PATCH");
    }
    json_decref(injected);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    json_error_t jerr;
    json_t *in = json_loadb((const char *)data, size, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (in == NULL)
        return 0;
    if (json_is_object(in)) {
        pod(in);
    } else if (json_is_array(in) && json_array_size(in) == 2) {
        char err[512];
        json_t *doc = json_deep_copy(json_array_get(in, 0));
        (void)rm_jsonpatch_apply(doc, json_array_get(in, 1), err, sizeof(err));
        json_decref(doc);
    }
    json_decref(in);
    return 0;
}
