// The micro-kernels of gemm_f32_tiles.h for AVX-512 (16 floats per vector).
// Only this TU is compiled for AVX-512 (GCC target pragma); gemm_f32.cpp calls
// it after a run-time CPU check.
#include "gemm_f32_isa.h"

#if TWOLAYER_EXT_HAVE_GEMM_KERNELS
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#pragma GCC push_options
#pragma GCC target("avx512f,fma")
#pragma GCC diagnostic push
// GCC's _mm512_reduce_add_ps starts from _mm256_undefined_pd(), which -Wall reports.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace twolayer_ext::cpu::avx512 {
namespace {

struct V {
  using Vec = __m512;
  static constexpr int kWidth = 16;
  // 24 accumulators of the 32 zmm registers.
  static constexpr int kNtRows = 4, kNtCols = 6, kBcRows = 6, kBcVecs = 4;
  static __mmask16 first(int n) { return static_cast<__mmask16>((1u << n) - 1); }
  static Vec zero() { return _mm512_setzero_ps(); }
  static Vec load(const float* p) { return _mm512_loadu_ps(p); }
  static Vec load(const float* p, int n) { return _mm512_maskz_loadu_ps(first(n), p); }
  static Vec set1(float s) { return _mm512_set1_ps(s); }
  static Vec fmadd(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
  static void store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
  static void store(float* p, Vec v, int n) { _mm512_mask_storeu_ps(p, first(n), v); }
  static float reduce_add(Vec v) { return _mm512_reduce_add_ps(v); }
};

}  // namespace

#include "gemm_f32_tiles.h"

}  // namespace twolayer_ext::cpu::avx512

#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif
