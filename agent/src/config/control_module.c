#include <dlfcn.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "config/control_module.h"

static const rm_control_module_t *
try_load(const char *dir, char *tried, size_t triedlen)
{
    char path[PATH_MAX];
    snprintf(path, sizeof(path), "%s/%s", dir, RM_CONTROL_MODULE_FILE);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (h == NULL) {
        size_t used = strlen(tried);
        snprintf(tried + used, triedlen - used, "%s%s", used != 0 ? "; " : "", dlerror());
        return NULL;
    }
    const rm_control_module_t *m = dlsym(h, RM_CONTROL_MODULE_SYMBOL);
    if (m == NULL) {
        size_t used = strlen(tried);
        snprintf(tried + used, triedlen - used, "%s%s: no %s", used != 0 ? "; " : "", path, RM_CONTROL_MODULE_SYMBOL);
        dlclose(h);
    }
    /* never unloaded: gRPC keeps threads and globals for the life of the process */
    return m;
}

const rm_control_module_t *
rm_control_module_load(char *err, size_t errlen)
{
    char tried[2048] = "";
    const rm_control_module_t *m;
    const char *env = getenv("REMORA_AGENT_MODULE_DIR");
    if (env != NULL && env[0] != '\0' && (m = try_load(env, tried, sizeof(tried))) != NULL)
        return m;
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *dir = dirname(exe);
        if ((m = try_load(dir, tried, sizeof(tried))) != NULL)
            return m;
        char lib[PATH_MAX];
        snprintf(lib, sizeof(lib), "%s/../lib/remora", dir);
        if ((m = try_load(lib, tried, sizeof(tried))) != NULL)
            return m;
    }
    snprintf(err, errlen, "cannot load the control-plane module %s (%s)", RM_CONTROL_MODULE_FILE, tried);
    return NULL;
}
