// The element-wise passes of the CPU kernels: ReLU with its packed mask (linear_relu's
// epilogue), relu / relu_backward, the backward's masked gradient with its bias-gradient
// partial sums, and the 16-bit <-> float conversions of the products run in float32.
//
// Written once with at::vec::Vectorized (passes_impl.h) and compiled once per instruction
// set, as ATen compiles its own kernels: passes_avx512.cpp, passes_avx2.cpp and
// passes_default.cpp (setup.py gives each its -m flags). The functions below pick one per
// process: the instruction set ATen itself runs (torch.backends.cpu.get_cpu_capability(),
// so ATEN_CPU_CAPABILITY=avx2 or =default selects the narrower kernels for tests and
// measurements), when the CPU has every feature the file was compiled for. Each works on a
// range of rows, so that callers split the work with at::parallel_for.
//
// Which elements pass the ReLU: !(v <= 0), i.e. v > 0 or NaN. torch.relu keeps NaN,
// threshold_backward passes its gradient, relu'(0) = 0. The mask has bit j % 8 of byte j / 8
// set for column j of a row, mask_bytes(n) bytes per row.
#pragma once

#include <ATen/OpMathType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

namespace twolayer_ext::cpu::passes {

// Rows [begin, end) of a contiguous [rows, n] block y, in place: y = relu(y), and, when mask
// is not null, its bits (row i at mask + i * mask_bytes(n)).
template <typename T>
void relu_mask_rows(T* y, uint8_t* mask, int64_t begin, int64_t end, int64_t n);

// out[i] = v[i] where y[i] passed the ReLU, else +0, for i in [begin, end): relu(x) is
// select_kept(x, x) and relu_backward(grad, y) is select_kept(y, grad).
template <typename T>
void select_kept(const T* y, const T* v, T* out, int64_t begin, int64_t end);

// Where the backward's ReLU mask comes from: the packed bits of linear_relu (mask != null,
// mask_bytes(n) per row), or else the layer's output y ([rows, n], contiguous).
template <typename T>
struct KeepSource {
  const uint8_t* mask;
  const T* y;
};

// Rows [begin, end) of the gradient g (element [i, j] at g[i * gs0 + j * gs1]): the masked
// gradient (g where kept, else +0: a select, so a masked-out NaN or Inf becomes 0, as in
// torch) to gm [rows, n] (if gm is not null; gm may be g itself when gs1 == 1), and added to
// part[0..n) row by row, in row order (if part is not null; float for the 16-bit types).
template <typename T>
void mask_grad_rows(const T* g, int64_t gs0, int64_t gs1, KeepSource<T> keep, int64_t begin,
                    int64_t end, int64_t n, T* gm, at::opmath_type<T>* part);

// 16-bit <-> float over [begin, end) of flat arrays, as at::Tensor::to converts: widen_to_float
// is exact; round_from_float rounds each element to nearest, ties to even (T = c10::BFloat16
// or c10::Half). The 16-bit products in float32 (matmul.cpp) convert their operands and
// results with these: one vector loop, without TensorIterator's per-call set-up.
template <typename T>
void widen_to_float(const T* src, float* dst, int64_t begin, int64_t end);
template <typename T>
void round_from_float(const float* src, T* dst, int64_t begin, int64_t end);

// The instruction set these functions run ("avx512", "avx2" or "default").
const char* instruction_set();

// The same functions for one instruction set: defined by passes_impl.h in its per-ISA file,
// called by the functions above (passes.cpp).
#define TWOLAYER_EXT_DECLARE_ISA_PASSES(ISA)                                                   \
  namespace ISA {                                                                              \
  template <typename T>                                                                        \
  void relu_mask_rows(T* y, uint8_t* mask, int64_t begin, int64_t end, int64_t n);             \
  template <typename T>                                                                        \
  void select_kept(const T* y, const T* v, T* out, int64_t begin, int64_t end);                \
  template <typename T>                                                                        \
  void mask_grad_rows(const T* g, int64_t gs0, int64_t gs1, KeepSource<T> keep, int64_t begin, \
                      int64_t end, int64_t n, T* gm, at::opmath_type<T>* part);                \
  template <typename T>                                                                        \
  void widen_to_float(const T* src, float* dst, int64_t begin, int64_t end);                   \
  template <typename T>                                                                        \
  void round_from_float(const float* src, T* dst, int64_t begin, int64_t end);                 \
  }
TWOLAYER_EXT_DECLARE_ISA_PASSES(DEFAULT)
#if TWOLAYER_EXT_ISA_PASSES
TWOLAYER_EXT_DECLARE_ISA_PASSES(AVX2)
TWOLAYER_EXT_DECLARE_ISA_PASSES(AVX512)
#endif
#undef TWOLAYER_EXT_DECLARE_ISA_PASSES

// The passes' explicit instantiations for every CPU dtype, in the namespace where this is
// expanded: passes.cpp (the functions above) and passes_impl.h (one instruction set's).
#define TWOLAYER_EXT_INSTANTIATE_PASSES_FOR(T)                                                 \
  template void relu_mask_rows<T>(T*, uint8_t*, int64_t, int64_t, int64_t);                    \
  template void select_kept<T>(const T*, const T*, T*, int64_t, int64_t);                      \
  template void mask_grad_rows<T>(const T*, int64_t, int64_t, KeepSource<T>, int64_t, int64_t, \
                                  int64_t, T*, at::opmath_type<T>*);
#define TWOLAYER_EXT_INSTANTIATE_CONVERSIONS_FOR(T)                    \
  template void widen_to_float<T>(const T*, float*, int64_t, int64_t); \
  template void round_from_float<T>(const float*, T*, int64_t, int64_t);
#define TWOLAYER_EXT_INSTANTIATE_PASSES()                 \
  TWOLAYER_EXT_INSTANTIATE_PASSES_FOR(float)              \
  TWOLAYER_EXT_INSTANTIATE_PASSES_FOR(double)             \
  TWOLAYER_EXT_INSTANTIATE_PASSES_FOR(c10::BFloat16)      \
  TWOLAYER_EXT_INSTANTIATE_PASSES_FOR(c10::Half)          \
  TWOLAYER_EXT_INSTANTIATE_CONVERSIONS_FOR(c10::BFloat16) \
  TWOLAYER_EXT_INSTANTIATE_CONVERSIONS_FOR(c10::Half)

}  // namespace twolayer_ext::cpu::passes
