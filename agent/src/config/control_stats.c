/*
 * The stats source of the control client (control_stats.h). It lives in the executable, not in the
 * control-plane module: main.c sets it without loading gRPC, and the module reads it when it runs.
 */
#include <inttypes.h>
#include "config/control_stats.h"

static rm_control_stats_source_t stats_source;

void
rm_control_set_stats_source(rm_control_stats_source_t source)
{
    __atomic_store_n(&stats_source, source, __ATOMIC_RELEASE);
}

rm_control_stats_source_t
rm_control_get_stats_source(void)
{
    return __atomic_load_n(&stats_source, __ATOMIC_ACQUIRE);
}

static uint64_t updates[2], update_bytes[2];

void
rm_control_count_update(rm_control_update_kind_t kind, size_t bytes)
{
    __atomic_add_fetch(&updates[kind], 1, __ATOMIC_RELAXED);
    __atomic_add_fetch(&update_bytes[kind], (uint64_t)bytes, __ATOMIC_RELAXED);
}

void
rm_control_updates(rm_control_update_kind_t kind, uint64_t *count, uint64_t *bytes)
{
    *count = __atomic_load_n(&updates[kind], __ATOMIC_RELAXED);
    *bytes = __atomic_load_n(&update_bytes[kind], __ATOMIC_RELAXED);
}

void
rm_control_render_updates(FILE *fp)
{
    static const char *const names[2] = {"full", "delta"};
    fputs("# HELP remora_control_updates_total Snapshots received from the control plane, whole (full) or incremental (delta).\n"
          "# TYPE remora_control_updates_total counter\n",
          fp);
    for (int k = 0; k != 2; ++k)
        fprintf(fp, "remora_control_updates_total{kind=\"%s\"} %" PRIu64 "\n", names[k],
                __atomic_load_n(&updates[k], __ATOMIC_RELAXED));
    fputs("# HELP remora_control_update_bytes_total Bytes of the snapshots received from the control plane (encoded size).\n"
          "# TYPE remora_control_update_bytes_total counter\n",
          fp);
    for (int k = 0; k != 2; ++k)
        fprintf(fp, "remora_control_update_bytes_total{kind=\"%s\"} %" PRIu64 "\n", names[k],
                __atomic_load_n(&update_bytes[k], __ATOMIC_RELAXED));
}
