// AVX-512 float32 kernels behind csrc/include/twolayer_ext/cpu_gemm.h.
//
// Two register-blocked micro-kernels, no packing (at the tutorial's sizes,
// copying 256-400 KB of operands would cost as much as the arithmetic):
//   * nt:    4x6 tile of dot products along k (x rows by W rows, both
//            k-contiguous), 24 zmm accumulators reduced once at the end;
//   * bcast: 6x64 tile, one broadcast scalar of A times four zmm of a B row
//            per step, 24 zmm accumulators stored directly.
// Each output element is computed by one thread in a fixed order, so results
// do not depend on the thread count. Only the leaf kernels are compiled for
// AVX-512 (GCC target pragma); the rest of the library stays baseline x86-64
// and calls them only after a run-time CPU check.
#include "twolayer_ext/cpu_gemm.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define TWOLAYER_EXT_HAVE_AVX512_KERNELS 1
#include <immintrin.h>
#endif

namespace twolayer_ext::cpu {

#if TWOLAYER_EXT_HAVE_AVX512_KERNELS

namespace {
constexpr int kNtRows = 4, kNtCols = 6;  // nt tile: x rows x W rows
constexpr int kBcRows = 6, kBcVecs = 4;  // bcast tile: C rows x zmm vectors (64 floats)
}  // namespace

#pragma GCC push_options
#pragma GCC target("avx512f,fma")
#pragma GCC diagnostic push
// GCC's _mm512_reduce_add_ps starts from _mm256_undefined_pd(), which -Wall reports.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace {

template <int MR, int NR>
__attribute__((noinline)) void nt_tile(const float* X, int64_t ldx, const float* W, int64_t ldw,
                                       const float* bias, float* Y, int64_t ldy, int64_t K) {
  __m512 acc[MR][NR];
#pragma GCC unroll 8
  for (int a = 0; a < MR; ++a)
#pragma GCC unroll 8
    for (int b = 0; b < NR; ++b) acc[a][b] = _mm512_setzero_ps();
  for (int64_t k = 0; k < K; k += 16) {
    // The last step loads only the K % 16 remaining floats (masked loads read nothing beyond).
    const __mmask16 m = K - k >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << (K - k)) - 1);
    __m512 w[NR];
#pragma GCC unroll 8
    for (int b = 0; b < NR; ++b) w[b] = _mm512_maskz_loadu_ps(m, W + b * ldw + k);
#pragma GCC unroll 8
    for (int a = 0; a < MR; ++a) {
      const __m512 x = _mm512_maskz_loadu_ps(m, X + a * ldx + k);
#pragma GCC unroll 8
      for (int b = 0; b < NR; ++b) acc[a][b] = _mm512_fmadd_ps(x, w[b], acc[a][b]);
    }
  }
#pragma GCC unroll 8
  for (int a = 0; a < MR; ++a)
#pragma GCC unroll 8
    for (int b = 0; b < NR; ++b)
      Y[a * ldy + b] = _mm512_reduce_add_ps(acc[a][b]) + (bias ? bias[b] : 0.f);
}

template <int MR>
void nt_tile_cols(int nr, const float* X, int64_t ldx, const float* W, int64_t ldw,
                  const float* bias, float* Y, int64_t ldy, int64_t K) {
  switch (nr) {
    case 1: return nt_tile<MR, 1>(X, ldx, W, ldw, bias, Y, ldy, K);
    case 2: return nt_tile<MR, 2>(X, ldx, W, ldw, bias, Y, ldy, K);
    case 3: return nt_tile<MR, 3>(X, ldx, W, ldw, bias, Y, ldy, K);
    case 4: return nt_tile<MR, 4>(X, ldx, W, ldw, bias, Y, ldy, K);
    case 5: return nt_tile<MR, 5>(X, ldx, W, ldw, bias, Y, ldy, K);
    default: return nt_tile<MR, kNtCols>(X, ldx, W, ldw, bias, Y, ldy, K);
  }
}

// Tiles [t0, t1) of the nt product, numbered W-block-major so one thread's run
// of tiles re-reads the same six W rows from cache.
__attribute__((noinline)) void nt_tiles(const float* X, int64_t ldx, const float* W, int64_t ldw,
                                        const float* bias, float* Y, int64_t ldy, int64_t M,
                                        int64_t N, int64_t K, int64_t t0, int64_t t1) {
  const int64_t row_blocks = (M + kNtRows - 1) / kNtRows;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t j0 = (t / row_blocks) * kNtCols, i0 = (t % row_blocks) * kNtRows;
    const int nr = static_cast<int>(std::min<int64_t>(kNtCols, N - j0));
    const int mr = static_cast<int>(std::min<int64_t>(kNtRows, M - i0));
    const float* x = X + i0 * ldx;
    const float* w = W + j0 * ldw;
    const float* b = bias ? bias + j0 : nullptr;
    float* y = Y + i0 * ldy + j0;
    switch (mr) {
      case 1: nt_tile_cols<1>(nr, x, ldx, w, ldw, b, y, ldy, K); break;
      case 2: nt_tile_cols<2>(nr, x, ldx, w, ldw, b, y, ldy, K); break;
      case 3: nt_tile_cols<3>(nr, x, ldx, w, ldw, b, y, ldy, K); break;
      default: nt_tile_cols<kNtRows>(nr, x, ldx, w, ldw, b, y, ldy, K); break;
    }
  }
}

template <int MR, int NV>
__attribute__((noinline)) void bcast_tile(const float* A, int64_t sat, int64_t saa, const float* B,
                                          int64_t ldb, float* C, int64_t ldc, int64_t T,
                                          __mmask16 last) {
  __m512 acc[MR][NV];
#pragma GCC unroll 8
  for (int a = 0; a < MR; ++a)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[a][v] = _mm512_setzero_ps();
  for (int64_t t = 0; t < T; ++t) {
    __m512 b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v)
      b[v] = _mm512_maskz_loadu_ps(v == NV - 1 ? last : __mmask16(0xFFFF), B + t * ldb + v * 16);
#pragma GCC unroll 8
    for (int a = 0; a < MR; ++a) {
      const __m512 s = _mm512_set1_ps(A[t * sat + a * saa]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[a][v] = _mm512_fmadd_ps(s, b[v], acc[a][v]);
    }
  }
#pragma GCC unroll 8
  for (int a = 0; a < MR; ++a)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v)
      _mm512_mask_storeu_ps(C + a * ldc + v * 16, v == NV - 1 ? last : __mmask16(0xFFFF),
                            acc[a][v]);
}

template <int MR>
void bcast_tile_vecs(int nv, const float* A, int64_t sat, int64_t saa, const float* B,
                     int64_t ldb, float* C, int64_t ldc, int64_t T, __mmask16 last) {
  switch (nv) {
    case 1: return bcast_tile<MR, 1>(A, sat, saa, B, ldb, C, ldc, T, last);
    case 2: return bcast_tile<MR, 2>(A, sat, saa, B, ldb, C, ldc, T, last);
    case 3: return bcast_tile<MR, 3>(A, sat, saa, B, ldb, C, ldc, T, last);
    default: return bcast_tile<MR, kBcVecs>(A, sat, saa, B, ldb, C, ldc, T, last);
  }
}

// Tiles [t0, t1) of the bcast product, numbered column-panel-major so one
// thread's run of tiles re-reads the same 64-column panel of B from cache.
__attribute__((noinline)) void bcast_tiles(const float* A, int64_t sat, int64_t saa,
                                           const float* B, int64_t ldb, float* C, int64_t ldc,
                                           int64_t M, int64_t N, int64_t T, int64_t t0,
                                           int64_t t1) {
  constexpr int64_t kPanel = kBcVecs * 16;
  const int64_t row_blocks = (M + kBcRows - 1) / kBcRows;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t k0 = (t / row_blocks) * kPanel, a0 = (t % row_blocks) * kBcRows;
    const int64_t width = std::min<int64_t>(kPanel, N - k0);
    const int nv = static_cast<int>((width + 15) / 16);
    const __mmask16 last = width % 16 ? __mmask16((1u << (width % 16)) - 1) : __mmask16(0xFFFF);
    const int mr = static_cast<int>(std::min<int64_t>(kBcRows, M - a0));
    const float* a = A + a0 * saa;
    const float* b = B + k0;
    float* c = C + a0 * ldc + k0;
    switch (mr) {
      case 1: bcast_tile_vecs<1>(nv, a, sat, saa, b, ldb, c, ldc, T, last); break;
      case 2: bcast_tile_vecs<2>(nv, a, sat, saa, b, ldb, c, ldc, T, last); break;
      case 3: bcast_tile_vecs<3>(nv, a, sat, saa, b, ldb, c, ldc, T, last); break;
      case 4: bcast_tile_vecs<4>(nv, a, sat, saa, b, ldb, c, ldc, T, last); break;
      case 5: bcast_tile_vecs<5>(nv, a, sat, saa, b, ldb, c, ldc, T, last); break;
      default: bcast_tile_vecs<kBcRows>(nv, a, sat, saa, b, ldb, c, ldc, T, last); break;
    }
  }
}

}  // namespace

#pragma GCC diagnostic pop
#pragma GCC pop_options

namespace {
// Tiles per parallel chunk: about 2^18 multiply-adds (~3 us), so small products such as
// the seed's layer 2 stay on one thread instead of paying an OpenMP fork/join.
int64_t grain(int64_t macs_per_tile) {
  return std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(1, macs_per_tile));
}
}  // namespace

bool use_fast_gemm(int64_t m, int64_t n, int64_t k) {
  static const bool cpu_ok = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
  if (!cpu_ok || k > 1024 || m * n * k > (int64_t{1} << 29)) return false;
  const char* choice = std::getenv("TWOLAYER_EXT_CPU_GEMM");  // "aten": always use ATen's BLAS
  return choice == nullptr || std::strcmp(choice, "aten") != 0;
}

void gemm_nt_f32(const float* X, int64_t ldx, const float* W, int64_t ldw, const float* bias,
                 float* Y, int64_t ldy, int64_t M, int64_t N, int64_t K) {
  const int64_t tiles = ((M + kNtRows - 1) / kNtRows) * ((N + kNtCols - 1) / kNtCols);
  at::parallel_for(0, tiles, grain(kNtRows * kNtCols * K), [&](int64_t t0, int64_t t1) {
    nt_tiles(X, ldx, W, ldw, bias, Y, ldy, M, N, K, t0, t1);
  });
}

void gemm_bcast_f32(const float* A, int64_t sat, int64_t saa, const float* B, int64_t ldb,
                    float* C, int64_t ldc, int64_t M, int64_t N, int64_t T) {
  const int64_t tiles = ((M + kBcRows - 1) / kBcRows) * ((N + kBcVecs * 16 - 1) / (kBcVecs * 16));
  at::parallel_for(0, tiles, grain(kBcRows * kBcVecs * 16 * T), [&](int64_t t0, int64_t t1) {
    bcast_tiles(A, sat, saa, B, ldb, C, ldc, M, N, T, t0, t1);
  });
}

#else  // no AVX-512 kernels in this build: ATen's BLAS everywhere

bool use_fast_gemm(int64_t, int64_t, int64_t) { return false; }
void gemm_nt_f32(const float*, int64_t, const float*, int64_t, const float*, float*, int64_t,
                 int64_t, int64_t, int64_t) {
  TORCH_INTERNAL_ASSERT(false, "gemm_nt_f32: built without the AVX-512 kernels");
}
void gemm_bcast_f32(const float*, int64_t, int64_t, const float*, int64_t, float*, int64_t,
                    int64_t, int64_t, int64_t) {
  TORCH_INTERNAL_ASSERT(false, "gemm_bcast_f32: built without the AVX-512 kernels");
}

#endif

}  // namespace twolayer_ext::cpu
