// The micro-kernels of gemm_f32_tiles.h for AVX2 + FMA (8 floats per vector),
// for CPUs without AVX-512. Only this TU is compiled for AVX2 (GCC target
// pragma); gemm_f32.cpp calls it after a run-time CPU check.
#include "gemm_f32_isa.h"

#if TWOLAYER_EXT_HAVE_GEMM_KERNELS
#include <immintrin.h>

#include <algorithm>
#include <cstdint>

#pragma GCC push_options
#pragma GCC target("avx2,fma")

namespace twolayer_ext::cpu::avx2 {
namespace {

struct V {
  using Vec = __m256;
  static constexpr int kWidth = 8;
  // 12 accumulators of the 16 ymm registers, leaving room for the operands.
  static constexpr int kNtRows = 3, kNtCols = 4, kBcRows = 6, kBcVecs = 2;
  // Lane i is loaded/stored where i < n (the sign bit of each 32-bit lane).
  static __m256i first(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
  }
  static Vec zero() { return _mm256_setzero_ps(); }
  static Vec load(const float* p) { return _mm256_loadu_ps(p); }
  static Vec load(const float* p, int n) { return _mm256_maskload_ps(p, first(n)); }
  static Vec set1(float s) { return _mm256_set1_ps(s); }
  static Vec fmadd(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
  static void store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
  static void store(float* p, Vec v, int n) { _mm256_maskstore_ps(p, first(n), v); }
  static float reduce_add(Vec v) {
    const __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    const __m128 h = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
  }
};

}  // namespace

#include "gemm_f32_tiles.h"

}  // namespace twolayer_ext::cpu::avx2

#pragma GCC pop_options
#endif
