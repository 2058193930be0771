/*
 * Seed generator for corpus/snapshot and corpus/delta (not a test): applies policy files in order, one apply each, the
 * way `remoractl apply` does (parse, check, store) and writes the control plane's encodings, i.e. the bytes an agent
 * receives.
 *
 *   gen_snapshot OUT FILE.yaml...
 *       OUT: the remora.v1.Snapshot of the resulting store (in memory).
 *   gen_snapshot --delta OUT N STEP...
 *       a STEP is FILE.yaml (an apply) or -KIND/NS/NAME (a delete, as `remoractl delete`); the store is a file store in
 *       a temporary directory. OUT: a fuzz_delta input: the 4-byte big-endian length of the full snapshot after the
 *       first N steps, that snapshot, then the incremental snapshot from it to the state after every step
 *       (rm_store_delta, as the server sends it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "document.h"
#include "store.h"

static int
apply_file(rm_store_t *store, const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) {
        perror(path);
        return -1;
    }
    static char text[1 << 20];
    size_t n = fread(text, 1, sizeof(text), fp);
    fclose(fp);
    rm_batch_t batch;
    rm_batch_init(&batch);
    rm_batch_parse(&batch, path, text, n);
    rm_batch_check(&batch, rm_store_exists_cb, store);
    for (size_t j = 0; j != batch.errors.size; ++j)
        fprintf(stderr, "%s:%u: %s\n", batch.errors.entries[j].file, batch.errors.entries[j].line, batch.errors.entries[j].message);
    if (batch.errors.size != 0)
        return -1;
    rm_store_action_t *actions = calloc(batch.resources.size + 1, sizeof(*actions));
    int changed;
    char err[512];
    int rc = rm_store_apply(store, &batch, 0, actions, &changed, err, sizeof(err));
    if (rc != 0)
        fprintf(stderr, "%s\n", err);
    free(actions);
    rm_batch_dispose(&batch);
    return rc;
}

/* -KIND/NS/NAME */
static int
delete_one(rm_store_t *store, const char *arg)
{
    char buf[512], err[512];
    snprintf(buf, sizeof(buf), "%s", arg + 1);
    char *ns = strchr(buf, '/'), *name = ns != NULL ? strchr(ns + 1, '/') : NULL;
    rm_kind_t kind;
    if (name == NULL || (*ns++ = '\0', *name++ = '\0', rm_kind_parse(buf, &kind)) != 0) {
        fprintf(stderr, "%s: not -KIND/NS/NAME\n", arg);
        return -1;
    }
    if (rm_store_delete(store, kind, ns, name, err, sizeof(err)) != 0) {
        fprintf(stderr, "%s: %s\n", arg, err);
        return -1;
    }
    return 0;
}

static int
step(rm_store_t *store, const char *arg)
{
    return arg[0] == '-' ? delete_one(store, arg) : apply_file(store, arg);
}

static int
write_out(const char *path, const void *a, size_t alen, const void *b, size_t blen)
{
    FILE *out = fopen(path, "wb");
    if (out == NULL || fwrite(a, 1, alen, out) != alen || (blen != 0 && fwrite(b, 1, blen, out) != blen) || fclose(out) != 0) {
        perror(path);
        return 1;
    }
    return 0;
}

static int
delta(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: %s --delta OUT N STEP...\n", argv[0]);
        return 2;
    }
    int base_steps = atoi(argv[3]);
    char dir[] = "/tmp/rm_gen_snapshot.XXXXXX", err[512];
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    rm_store_t *store = rm_store_open(dir, err, sizeof(err));
    if (store == NULL) {
        fprintf(stderr, "%s\n", err);
        return 1;
    }
    int rc = 0;
    uint8_t *base = NULL;
    size_t base_len = 0;
    uint64_t base_version = 0;
    for (int i = 4; i <= argc && rc == 0; ++i) {
        if (i - 4 == base_steps) {
            const uint8_t *b = rm_store_snapshot(store, &base_len);
            base = malloc(base_len + 4);
            base[0] = (uint8_t)(base_len >> 24), base[1] = (uint8_t)(base_len >> 16), base[2] = (uint8_t)(base_len >> 8),
            base[3] = (uint8_t)base_len;
            memcpy(base + 4, b, base_len);
            base_version = rm_store_version(store);
        }
        if (i < argc && step(store, argv[i]) != 0)
            rc = 1;
    }
    if (rc == 0 && base == NULL) {
        fprintf(stderr, "N is larger than the number of steps\n");
        rc = 1;
    }
    size_t len;
    uint8_t *d = rc == 0 ? rm_store_delta(store, base_version, NULL, NULL, &len, NULL) : NULL;
    if (rc == 0 && d == NULL) {
        fprintf(stderr, "no delta from version %llu\n", (unsigned long long)base_version);
        rc = 1;
    }
    if (rc == 0)
        rc = write_out(argv[2], base, base_len + 4, d, len);
    free(d);
    free(base);
    rm_store_close(store);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        rc = 1;
    return rc;
}

int
main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "--delta") == 0)
        return delta(argc, argv);
    if (argc < 3) {
        fprintf(stderr, "usage: %s OUT FILE.yaml...\n       %s --delta OUT N STEP...\n", argv[0], argv[0]);
        return 2;
    }
    rm_store_t *store = rm_store_open_memory();
    for (int i = 2; i < argc; ++i)
        if (apply_file(store, argv[i]) != 0)
            return 1;
    size_t len;
    const uint8_t *bytes = rm_store_snapshot(store, &len);
    int rc = write_out(argv[1], bytes, len, NULL, 0);
    rm_store_close(store);
    return rc;
}
