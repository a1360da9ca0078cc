// The element-wise passes (passes_impl.h) for the baseline instruction set, on any CPU.
#define CPU_CAPABILITY DEFAULT

#include "passes_impl.h"
