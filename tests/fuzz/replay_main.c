/*
 * Replays a fuzz corpus through a libFuzzer entry point, without libFuzzer: each argument is a file or a directory of
 * files, each file is one input. Used by ctest, so that the corpus in the repository is a regression test in every
 * build (sanitizers included). A crashing or property-violating input aborts; an empty corpus is an error too.
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
run_file(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (fp == NULL) {
        perror(path);
        return -1;
    }
    size_t cap = 4096, len = 0;
    uint8_t *buf = malloc(cap);
    size_t n;
    while (buf != NULL && (n = fread(buf + len, 1, cap - len, fp)) != 0) {
        len += n;
        if (len == cap)
            buf = realloc(buf, cap *= 2);
    }
    int failed = buf == NULL || ferror(fp);
    fclose(fp);
    if (failed) {
        fprintf(stderr, "%s: read error\n", path);
        free(buf);
        return -1;
    }
    LLVMFuzzerTestOneInput(buf, len);
    free(buf);
    return 0;
}

static int
run_path(const char *path, size_t *count)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        perror(path);
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        ++*count;
        return run_file(path);
    }
    DIR *dir = opendir(path);
    if (dir == NULL) {
        perror(path);
        return -1;
    }
    struct dirent *e;
    int rv = 0;
    while (rv == 0 && (e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char child[4096];
        snprintf(child, sizeof(child), "%s/%s", path, e->d_name);
        rv = run_path(child, count);
    }
    closedir(dir);
    return rv;
}

int
main(int argc, char **argv)
{
    size_t count = 0;
    for (int i = 1; i < argc; ++i)
        if (run_path(argv[i], &count) != 0)
            return 1;
    if (count == 0) {
        fprintf(stderr, "no input found\n");
        return 1;
    }
    printf("replayed %zu inputs\n", count);
    return 0;
}
