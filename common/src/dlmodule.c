#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "remora/dlmodule.h"

/* `symbol` of `dir`/`file`, or NULL with the reason appended to `tried` */
static const void *
try_load(const char *dir, const char *file, const char *symbol, char *tried, size_t triedlen)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", dir, file);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    size_t used = strlen(tried);
    if (h == NULL) {
        snprintf(tried + used, triedlen - used, "%s%s", used != 0 ? "; " : "", dlerror());
        return NULL;
    }
    const void *m = dlsym(h, symbol);
    if (m == NULL) {
        snprintf(tried + used, triedlen - used, "%s%s: no %s", used != 0 ? "; " : "", path, symbol);
        dlclose(h);
    }
    return m;
}

const void *
rm_dlmodule_load(const char *file, const char *symbol, const char *what, char *err, size_t errlen)
{
    char tried[2048] = "";
    const void *m;
    const char *env = getenv("REMORA_AGENT_MODULE_DIR");
    if (env != NULL && env[0] != '\0' && (m = try_load(env, file, symbol, tried, sizeof(tried))) != NULL)
        return m;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *dir = dirname(exe);
        if ((m = try_load(dir, file, symbol, tried, sizeof(tried))) != NULL)
            return m;
        char lib[PATH_MAX];
        snprintf(lib, sizeof(lib), "%s/../lib/remora", dir);
        if ((m = try_load(lib, file, symbol, tried, sizeof(tried))) != NULL)
            return m;
    }
    snprintf(err, errlen, "cannot load the %s module %s (%s)", what, file, tried);
    return NULL;
}
