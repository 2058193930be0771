/* in progress */ typedef int rm_placeholder_t;
