/*
 * Seed generator for corpus/snapshot (not a test): applies policy files in order, one apply each, the way
 * `remoractl apply` does (parse, check, store in memory) and writes the control plane's encoding of the resulting
 * remora.v1.Snapshot, i.e. the bytes an agent receives.
 *
 *   gen_snapshot OUT FILE.yaml...
 */
#include <stdio.h>
#include <stdlib.h>
#include "document.h"
#include "store.h"

int
main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s OUT FILE.yaml...\n", argv[0]);
        return 2;
    }
    rm_store_t *store = rm_store_open_memory();
    for (int i = 2; i < argc; ++i) {
        /* one apply per file, in order */
        FILE *fp = fopen(argv[i], "rb");
        if (fp == NULL) {
            perror(argv[i]);
            return 1;
        }
        static char text[1 << 20];
        size_t n = fread(text, 1, sizeof(text), fp);
        fclose(fp);
        rm_batch_t batch;
        rm_batch_init(&batch);
        rm_batch_parse(&batch, argv[i], text, n);
        rm_batch_check(&batch, rm_store_exists_cb, store);
        for (size_t j = 0; j != batch.errors.size; ++j)
            fprintf(stderr, "%s:%u: %s\n", batch.errors.entries[j].file, batch.errors.entries[j].line,
                    batch.errors.entries[j].message);
        if (batch.errors.size != 0)
            return 1;
        rm_store_action_t *actions = calloc(batch.resources.size + 1, sizeof(*actions));
        int changed;
        char err[512];
        if (rm_store_apply(store, &batch, 0, actions, &changed, err, sizeof(err)) != 0) {
            fprintf(stderr, "%s\n", err);
            return 1;
        }
        free(actions);
        rm_batch_dispose(&batch);
    }
    size_t len;
    const uint8_t *bytes = rm_store_snapshot(store, &len);
    FILE *out = fopen(argv[1], "wb");
    if (out == NULL || fwrite(bytes, 1, len, out) != len || fclose(out) != 0) {
        perror(argv[1]);
        return 1;
    }
    rm_store_close(store);
    return 0;
}
