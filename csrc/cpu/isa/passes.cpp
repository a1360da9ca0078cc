// Runs the per-ISA kernels of passes.h that isa.h picks.
#include "passes.h"

#include "isa.h"

namespace twolayer_ext::cpu::passes {
namespace {

// The per-ISA files exist only where the compiler could build them (setup.py).
Isa passes_isa() {
#if TWOLAYER_EXT_ISA_PASSES
  return cpu::isa();
#else
  return Isa::kDefault;
#endif
}

}  // namespace

#if TWOLAYER_EXT_ISA_PASSES
#define TWOLAYER_EXT_ISA_CALL(fn, ...) \
  switch (passes_isa()) {              \
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

template <typename T>
void widen_to_float(const T* src, float* dst, int64_t begin, int64_t end) {
  TWOLAYER_EXT_ISA_CALL(widen_to_float<T>, src, dst, begin, end);
}

template <typename T>
void round_from_float(const float* src, T* dst, int64_t begin, int64_t end) {
  TWOLAYER_EXT_ISA_CALL(round_from_float<T>, src, dst, begin, end);
}
#undef TWOLAYER_EXT_ISA_CALL

const char* instruction_set() { return isa_name(passes_isa()); }

TWOLAYER_EXT_INSTANTIATE_PASSES()

}  // namespace twolayer_ext::cpu::passes
