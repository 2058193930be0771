/*
 * The stats source of the control client (control_stats.h). It lives in the executable, not in the
 * control-plane module: main.c sets it without loading gRPC, and the module reads it when it runs.
 */
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
