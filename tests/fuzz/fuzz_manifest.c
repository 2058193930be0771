/*
 * Fuzz target for Kubernetes manifests (control/src/manifest.c): a stream of YAML documents or JSON values, as
 * `remoractl inject|uninject` reads them from a file or a pipe.
 *
 * Besides "no crash, no leak, no UB" it checks, for any input that parses:
 *   - the documents emitted again as YAML (and as JSON when they were read from JSON) parse back (rm_manifest_parse) to as many
 * documents, equal to the originals (json_equal): what remoractl writes is what it read. A violated property aborts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include "fuzz_common.h"
#include "manifest.h"

static void
round_trip(const rm_manifest_t *m, rm_manifest_format_t format)
{
    /* a null document (JSON "null") reads back from YAML as an empty document, which the reader leaves out */
    json_t **want = calloc(m->num_docs + 1, sizeof(*want));
    size_t n = 0;
    for (size_t i = 0; i != m->num_docs; ++i)
        if (format == RM_MANIFEST_JSON || !json_is_null(m->docs[i]))
            want[n++] = m->docs[i];
    char *text = rm_manifest_emit(want, n, format);
    FUZZ_CHECK(text != NULL, "emit gives text");
    rm_manifest_t back;
    char err[512];
    if (rm_manifest_parse(text, strlen(text), "emitted", &back, err, sizeof(err)) != 0) {
        fprintf(stderr, "fuzz_manifest: %s\n--- emitted:\n%s\n", err, text);
        FUZZ_CHECK(0, "emitted documents parse");
    }
    if (back.num_docs != n)
        fprintf(stderr, "fuzz_manifest: %zu documents back, %zu written\n--- emitted:\n%s\n", back.num_docs, n, text);
    FUZZ_CHECK(back.num_docs == n, "as many documents back");
    for (size_t i = 0; i != n; ++i) {
        if (!json_equal(back.docs[i], want[i])) {
            char *a = json_dumps(want[i], JSON_ENCODE_ANY), *b = json_dumps(back.docs[i], JSON_ENCODE_ANY);
            fprintf(stderr, "fuzz_manifest: document %zu differs\n  read:   %s\n  back:   %s\n--- emitted:\n%s\n", i, a, b, text);
            FUZZ_CHECK(0, "documents equal after a round trip");
        }
    }
    rm_manifest_dispose(&back);
    free(text);
    free(want);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rm_manifest_t m;
    char err[512];
    if (rm_manifest_parse((const char *)data, size, "fuzz", &m, err, sizeof(err)) != 0)
        return 0;
    /* remoractl writes in the format it read; YAML can hold every document, a JSON stream only objects and arrays
     * (it is recognized by its first character) */
    if (m.format == RM_MANIFEST_JSON)
        round_trip(&m, RM_MANIFEST_JSON);
    round_trip(&m, RM_MANIFEST_YAML);
    rm_manifest_dispose(&m);
    return 0;
}
