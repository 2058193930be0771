/*
 * Fuzz target for the policy documents (control/src/document.c): the YAML that `remoractl apply` sends and the
 * control plane parses and validates (rm_batch_parse, then rm_batch_check of the batch as a whole).
 *
 * Besides "no crash, no leak, no UB" it checks: every document that was seen either became a resource or produced
 * an error (nothing is dropped silently), and every error names the file.
 */
#include <string.h>
#include "document.h"
#include "fuzz_common.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    rm_batch_t batch;
    rm_batch_init(&batch);
    rm_batch_parse(&batch, "fuzz.yaml", data, size);
    rm_batch_check(&batch, NULL, NULL);
    /* errors beyond RM_DOC_ERRORS_MAX are counted in one last entry */
    if (batch.errors.size < RM_DOC_ERRORS_MAX)
        FUZZ_CHECK(batch.resources.size + batch.errors.size >= batch.num_documents, "every document is a resource or an error");
    for (size_t i = 0; i != batch.errors.size; ++i)
        FUZZ_CHECK(batch.errors.entries[i].file != NULL && strcmp(batch.errors.entries[i].file, "fuzz.yaml") == 0,
                   "errors name the file");
    rm_batch_dispose(&batch);
    return 0;
}
