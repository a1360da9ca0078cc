// float32 GEMM kernels for the shapes of the tutorial's layers, where they beat
// the BLAS that ATen calls (measurements: docs/BENCHMARKS.md). AVX-512 or AVX2,
// chosen at run time; everything else (other dtypes, CPUs without AVX2, large
// shapes, odd strides) goes through ATen's BLAS. Defined in
// csrc/cpu/gemm_f32.cpp (dispatch) and gemm_f32_tiles.h (the kernels).
#pragma once

#include <cstdint>

namespace twolayer_ext::cpu {

// Whether the kernels below should run a product with m x n outputs and
// reduction length k: the CPU has AVX-512F or AVX2+FMA, the environment does
// not set TWOLAYER_EXT_CPU_GEMM=aten, and the shape is one they were measured
// to win on (reduction ≤ 1024, at most 2^29 multiply-adds; MKL's packed,
// cache-blocked GEMM is faster beyond that). TWOLAYER_EXT_CPU_GEMM=avx2 runs
// the AVX2 kernels on an AVX-512 CPU (tests, benchmarks/cpu_gemm_paths.py).
bool use_fast_gemm(int64_t m, int64_t n, int64_t k);

// Y[i, j] = bias[j] + sum_k X[i*ldx + k] * W[j*ldw + k] for i < M, j < N
// (x @ W.T + b, nn.Linear's forward; bias may be null). Both operands are
// read along k with unit stride, as they lie in memory: no packing.
void gemm_nt_f32(const float* X, int64_t ldx, const float* W, int64_t ldw, const float* bias,
                 float* Y, int64_t ldy, int64_t M, int64_t N, int64_t K);

// C[a, k] = sum_t A[t*sat + a*saa] * B[t*ldb + k] for a < M, k < N, t < T.
// B is read row by row with unit stride; A is read one scalar at a time, so any
// strides work: A = grad^T (sat = out, saa = 1) gives grad_weight = grad^T @ x,
// A = grad (sat = 1, saa = out) gives grad_x = grad @ W.
void gemm_bcast_f32(const float* A, int64_t sat, int64_t saa, const float* B, int64_t ldb, float* C,
                    int64_t ldc, int64_t M, int64_t N, int64_t T);

}  // namespace twolayer_ext::cpu
