// The instruction set every CPU kernel of ours runs (the float32 GEMM kernels and the
// element-wise passes alike): the one ATen itself runs (torch.backends.cpu.get_cpu_capability(),
// so ATEN_CPU_CAPABILITY=avx2 or =default narrows ours with ATen's, for tests and
// measurements), where the CPU has every feature setup.py compiles our per-ISA files for
// (ISA_FLAGS). Chosen once per process, as ATen chooses.
#pragma once

namespace twolayer_ext::cpu {

enum class Isa { kDefault, kAvx2, kAvx512 };

Isa isa();

// "avx512", "avx2" or "default".
const char* isa_name(Isa isa);

// Whether the CPU is Intel's. There ATen's BLAS (MKL) runs Intel's own kernels and beats ours
// on far more shapes than on AMD, so the path rules that weigh ours against it differ
// (gemm_f32.cpp, two_layer_fused.cpp).
bool intel_cpu();

// Whether ATen's view of the CPU (at::cpu::get_cpu_capabilities, cpuinfo) lists `feature`
// ("avx512_bf16", "amx_tile", ...) as present. Read once per process.
bool cpu_has(const char* feature);

}  // namespace twolayer_ext::cpu
