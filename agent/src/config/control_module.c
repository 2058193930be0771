#include "remora/dlmodule.h"
#include "config/control_module.h"

const rm_control_module_t *
rm_control_module_load(char *err, size_t errlen)
{
    return rm_dlmodule_load(RM_CONTROL_MODULE_FILE, RM_CONTROL_MODULE_SYMBOL, "control-plane", err, errlen);
}
