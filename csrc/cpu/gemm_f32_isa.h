// What gemm_f32.cpp needs from the per-ISA kernel TUs (gemm_f32_avx512.cpp,
// gemm_f32_avx2.cpp): the arguments of one product, and a function per ISA
// that computes a part of its output (a range of nt tiles; rows by column panels
// of a bcast product), which the caller splits across threads.
#pragma once

#include <cstdint>

// The kernels use GCC's target pragmas and x86 intrinsics.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define TWOLAYER_EXT_HAVE_GEMM_KERNELS 1
#else
#define TWOLAYER_EXT_HAVE_GEMM_KERNELS 0
#endif

namespace twolayer_ext::cpu {

// Y[i, j] = bias[j] + sum_k X[i*ldx + k] * W[j*ldw + k], i < M, j < N, through torch.relu
// where relu (cpu_gemm.h).
struct GemmNt {
  const float* X;
  int64_t ldx;
  const float* W;
  int64_t ldw;
  const float* bias;
  float* Y;
  int64_t ldy, M, N, K;
  bool relu;
};

// S[a, k] = bias[k] + sum_t A[t*sat + a*saa] * B[t*ldb + k], a < M, k < N, t < T, then
// C[a, k] = S[a, k] (relu(S[a, k]) where relu), or C[a, k] += *add_alpha * S[a, k] in one
// rounding (cpu_gemm.h).
struct GemmBcast {
  const float* A;
  int64_t sat, saa;
  const float* B;
  int64_t ldb;
  const float* bias;
  float* C;
  int64_t ldc, M, N, T;
  const float* add_alpha;
  bool relu;
};

// Output tile of each kernel: nt_rows x nt_cols outputs; bcast_rows x bcast_cols.
struct TileShape {
  int nt_rows, nt_cols, bcast_rows, bcast_cols;
};

#if TWOLAYER_EXT_HAVE_GEMM_KERNELS
namespace avx512 {
void nt_range(const GemmNt& g, int64_t t0, int64_t t1);
void bcast_range(const GemmBcast& g, int64_t r0, int64_t r1, int64_t p0, int64_t p1);
extern const TileShape kShape;
}  // namespace avx512
namespace avx2 {
void nt_range(const GemmNt& g, int64_t t0, int64_t t1);
void bcast_range(const GemmBcast& g, int64_t r0, int64_t r1, int64_t p0, int64_t p1);
extern const TileShape kShape;
}  // namespace avx2
#endif

}  // namespace twolayer_ext::cpu
