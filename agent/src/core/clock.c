#include "core/clock.h"

__thread rm_clock_t rm_clock_;
