// Every switch a path rule reads at run time, and the only code that reads them (README,
// "Path switches", lists them). Ours are environment variables, each read and validated the
// same way (csrc/paths/switches.cpp): read on every call (one getenv, so tests and
// benchmarks can flip them between calls), and an unknown value raises a ValueError naming
// the variable and its allowed values. torch's own settings are read through the API torch's
// kernels use.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace twolayer_ext {

// TWOLAYER_EXT_CPU_GEMM=aten: every CPU product as torch computes it (ATen's BLAS, in the
// operands' own dtype). Unset: the extension's float32 kernels, 16-bit-in-float32 products
// and AMX kernel (bfloat16 inference) where they were measured to win.
bool cpu_gemm_aten_forced();

// TWOLAYER_EXT_CPU_FUSED_MLP=1 / 0: the CPU two-layer ops always / never fully fused.
// Unset: the CPU rule (csrc/cpu/two_layer_fused.cpp).
std::optional<bool> cpu_fused_mlp_forced();

// TWOLAYER_EXT_CUDA_FUSED_MLP=1: the CUDA two-layer ops fully fused wherever the kernels'
// shared memory fits; 0 or unset: layered (the fused kernels are unmeasured on a GPU).
bool cuda_fused_mlp_on();

// Whether torch runs CUDA float32 matmuls on TF32 tensor cores
// (torch.backends.cuda.matmul.fp32_precision == "tf32", which the legacy allow_tf32 and
// torch.set_float32_matmul_precision also set): the fused kernels follow cuBLAS's choice.
bool cuda_matmul_tf32();

// Each environment switch's name and current value ("" when unset), after validation.
std::vector<std::pair<std::string, std::string>> switch_values();

}  // namespace twolayer_ext
