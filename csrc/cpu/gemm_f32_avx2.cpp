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
  // torch.relu: v where v > 0 or NaN (not <= 0, unordered), else +0.
  static Vec relu(Vec v) { return _mm256_and_ps(_mm256_cmp_ps(v, zero(), _CMP_NLE_UQ), v); }
  static __m128 reduce4(Vec a, Vec b, Vec c, Vec d) {
    // Per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3], the same for c, d, then [a b c d].
    const __m256 ab = _mm256_add_ps(_mm256_unpacklo_ps(a, b), _mm256_unpackhi_ps(a, b));
    const __m256 cd = _mm256_add_ps(_mm256_unpacklo_ps(c, d), _mm256_unpackhi_ps(c, d));
    const __m256 s = _mm256_add_ps(_mm256_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm256_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
    return _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
  }
};

}  // namespace

#include "gemm_f32_tiles.h"

}  // namespace twolayer_ext::cpu::avx2

#pragma GCC pop_options
#endif
