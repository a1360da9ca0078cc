// The element-wise passes (passes_impl.h) for AVX512; setup.py compiles this file with the AVX512
// -m flags (ISA_FLAGS).
#define CPU_CAPABILITY AVX512
#define CPU_CAPABILITY_AVX512
#include "passes_impl.h"
