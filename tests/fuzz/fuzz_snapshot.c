/*
 * Fuzz target for the control-plane snapshot (agent/src/config/translate.c): serialized remora.v1.Snapshot bytes, as
 * the control stream delivers them, decoded by protobuf-c and translated into a validated rm_config_t over a base
 * configuration with two listeners.
 *
 * Besides "no crash, no leak, no UB" it checks, for any input: a refused snapshot has a reason; an accepted one keeps
 * the base's listeners, has the version rm_translate_snapshot_version reads, and renders as JSON.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "config/config.h"
#include "config/translate.h"
#include "fuzz_common.h"

static const char base_yaml[] = "listeners:\n"
                                "  - {name: a, address: \"127.0.0.1:15001\", routes: [{cluster: c}]}\n"
                                "  - {name: b, address: \"127.0.0.1:15002\", routes: [{cluster: c}]}\n"
                                "clusters:\n"
                                "  - {name: c, endpoints: \"127.0.0.1:1\"}\n";

static rm_config_t *base;

static void
cleanup(void)
{
    rm_config_unref(base);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (base == NULL) {
        rm_config_error_t e;
        if ((base = rm_config_load_string(base_yaml, strlen(base_yaml), "base.yaml", &e)) == NULL) {
            fprintf(stderr, "fuzz_snapshot: base.yaml:%u: %s\n", e.line, e.message);
            abort();
        }
        atexit(cleanup);
    }
    char err[1024] = "";
    rm_config_t *cfg = rm_translate_snapshot(data, size, base, err, sizeof(err));
    uint64_t version = rm_translate_snapshot_version(data, size);
    if (cfg == NULL) {
        FUZZ_CHECK(err[0] != '\0', "a refused snapshot has a reason");
        return 0;
    }
    FUZZ_CHECK(cfg->num_listeners == base->num_listeners, "the base's listeners are kept");
    char v[32];
    snprintf(v, sizeof(v), "%llu", (unsigned long long)version);
    FUZZ_CHECK(cfg->version != NULL && strcmp(cfg->version, v) == 0, "the version is the snapshot's");
    free(rm_config_to_json(cfg));
    rm_config_unref(cfg);
    return 0;
}
