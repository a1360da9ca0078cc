// Picks the per-ISA kernels of passes.h, once per process.
#include "passes.h"

#include <ATen/Version.h>

#include <string>

namespace twolayer_ext::cpu::passes {
namespace {

enum class Isa { kDefault, kAvx2, kAvx512 };

Isa pick() {
#if TWOLAYER_EXT_ISA_PASSES
  // ATen's own choice (which honours ATEN_CPU_CAPABILITY), where the CPU also has every
  // feature setup.py compiled that file for (ISA_FLAGS).
  const std::string aten = at::get_cpu_capability();
  const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                    __builtin_cpu_supports("f16c");
  const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") &&
                      __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                      __builtin_cpu_supports("avx512dq");
  if (aten == "AVX512" && avx512) return Isa::kAvx512;
  if ((aten == "AVX512" || aten == "AVX2") && avx2) return Isa::kAvx2;
#endif
  return Isa::kDefault;
}

Isa isa() {
  static const Isa chosen = pick();
  return chosen;
}

}  // namespace

#if TWOLAYER_EXT_ISA_PASSES
#define TWOLAYER_EXT_ISA_CALL(fn, ...) \
  switch (isa()) {                     \
    case Isa::kAvx512:                 \
      return AVX512::fn(__VA_ARGS__);  \
    case Isa::kAvx2:                   \
      return AVX2::fn(__VA_ARGS__);    \
    case Isa::kDefault:                \
      break;                           \
  }                                    \
  return DEFAULT::fn(__VA_ARGS__)
#else
#define TWOLAYER_EXT_ISA_CALL(fn, ...) return DEFAULT::fn(__VA_ARGS__)
#endif

template <typename T>
void relu_mask_rows(T* y, uint8_t* mask, int64_t begin, int64_t end, int64_t n) {
  TWOLAYER_EXT_ISA_CALL(relu_mask_rows<T>, y, mask, begin, end, n);
}

template <typename T>
void select_kept(const T* y, const T* v, T* out, int64_t begin, int64_t end) {
  TWOLAYER_EXT_ISA_CALL(select_kept<T>, y, v, out, begin, end);
}

template <typename T>
void mask_grad_rows(const T* g, int64_t gs0, int64_t gs1, KeepSource<T> keep, int64_t begin,
                    int64_t end, int64_t n, T* gm, at::opmath_type<T>* part) {
  TWOLAYER_EXT_ISA_CALL(mask_grad_rows<T>, g, gs0, gs1, keep, begin, end, n, gm, part);
}
#undef TWOLAYER_EXT_ISA_CALL

const char* instruction_set() {
  switch (isa()) {
    case Isa::kAvx512:
      return "avx512";
    case Isa::kAvx2:
      return "avx2";
    case Isa::kDefault:
      break;
  }
  return "default";
}

TWOLAYER_EXT_INSTANTIATE_PASSES()

}  // namespace twolayer_ext::cpu::passes
