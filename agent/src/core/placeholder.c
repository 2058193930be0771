typedef int rm_placeholder_core_t;
