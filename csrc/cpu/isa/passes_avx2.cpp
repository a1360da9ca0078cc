// The element-wise passes (passes_impl.h) for AVX2; setup.py compiles this file with the AVX2 -m
// flags (ISA_FLAGS).
#define CPU_CAPABILITY AVX2
#define CPU_CAPABILITY_AVX2
#include "passes_impl.h"
