// The one GEMM entry point of the CUDA ops:
//
//   C[m, n] = sum_k A'(m, k) * B(n, k)            (C = A' @ B.T)
//
// with the Linear+ReLU prologue/epilogue options in GemmParams. Defined, and
// instantiated for the four dtypes, in fused_gemm.cu, which picks the kernel
// (pipelined_gemm.cuh where the operands allow it, else tiled_gemm.cuh). Only
// this declaration is included elsewhere (layer.cu), so each kernel is compiled once.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace twolayer_ext::cuda {

struct GemmParams {
  const void* a = nullptr;  // A(m, k) = a[m * a_sm + k * a_sk]
  int64_t a_sm = 0, a_sk = 0;
  const void* b = nullptr;  // B(n, k) = b[n * b_sn + k * b_sk]
  int64_t b_sn = 0, b_sk = 0;
  void* c = nullptr;  // C(m, n) = c[m * ldc + n]
  int64_t ldc = 0;
  int64_t M = 0, N = 0, K = 0;
  // Prologue: A'(m, k) = A(m, k) iff packed mask bit (m, k) is set (bit (k, m)
  // if mask_a_t), else 0; no mask: A' = A.
  const uint8_t* mask_a = nullptr;
  int64_t mask_a_ld = 0;
  bool mask_a_t = false;
  // Epilogue: + bias[n] (may be null); with relu, ReLU and (if mask_out is set)
  // the packed mask bits of the output.
  const void* bias = nullptr;
  bool relu = false;
  uint8_t* mask_out = nullptr;
  int64_t mask_out_ld = 0;
  // If set: bias_grad[m] = sum_k A'(m, k), the row sums of the masked A, i.e.
  // grad_bias when A' is the masked grad_yᵀ of a grad_weight product. Only the
  // pipelined kernel reduces it (inside the GEMM); launch_fused_gemm says whether
  // it did, and the caller runs the separate pass (fused_passes.h) when not.
  void* bias_grad = nullptr;
};

// Enqueues C = A' @ B.T on `stream` (a no-op when M == 0). T is float, double,
// __half or __nv_bfloat16; `tf32` allows TF32 tensor cores for float
// (torch.backends.cuda.matmul.allow_tf32). The tensor-core kernels (16-bit types,
// TF32) need compute capability 8.0+: on an older current device this raises a
// clear error instead of launching. Returns whether p.bias_grad was written
// (true when it is null or M == 0).
template <typename T>
bool launch_fused_gemm(const GemmParams& p, bool tf32, cudaStream_t stream);

}  // namespace twolayer_ext::cuda
