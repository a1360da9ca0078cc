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
// GCC's AVX-512 intrinsics start some results from _mm512_undefined_*(), which -Wall reports.
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
  // torch.relu: v where v > 0 or NaN (not <= 0, unordered), else +0.
  static Vec relu(Vec v) {
    return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, zero(), _CMP_NLE_UQ), v);
  }
  static __m128 reduce4(Vec a, Vec b, Vec c, Vec d) {
    // Per 128-bit lane: [a0+a2, b0+b2, a1+a3, b1+b3], the same for c, d, then [a b c d].
    const __m512 ab = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
    const __m512 cd = _mm512_add_ps(_mm512_unpacklo_ps(c, d), _mm512_unpackhi_ps(c, d));
    const __m512 s = _mm512_add_ps(_mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(1, 0, 1, 0)),
                                   _mm512_shuffle_ps(ab, cd, _MM_SHUFFLE(3, 2, 3, 2)));
    // The four lanes' partial sums added: 512 -> 256 -> 128 bits.
    const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(s), 1));
    const __m256 h = _mm256_add_ps(_mm512_castps512_ps256(s), hi);
    return _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
  }
};

}  // namespace

#include "gemm_f32_tiles.h"

}  // namespace twolayer_ext::cpu::avx512

#pragma GCC diagnostic pop
#pragma GCC pop_options
#endif
