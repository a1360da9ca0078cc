// What the fused two-layer kernels (fused_mlp_simt.cuh, fused_mlp_tc.cuh) share: their
// arguments and the thread block's shape. Included by fused_mlp.cu only.
#pragma once

#include <cstdint>

#include "dtypes.cuh"
#include "twolayer_ext/fused_mlp.h"

namespace twolayer_ext::cuda::fused_mlp {

using cuda_mlp::kBlockRows;

constexpr int kThreads = 256;  // threads per block: 8 warps

// A 2-D operand in global memory, any strides.
template <typename T>
struct Strided {
  const T* p;
  int64_t s0, s1;
  __device__ __forceinline__ T at(int64_t i, int64_t j) const { return p[i * s0 + j * s1]; }
};

template <typename T>
struct MlpParams {
  Strided<T> x, w1, w2;
  const T* b1;  // null: no bias (forward, and backward when it recomputes hidden)
  const T* b2;  // null: no bias (forward)
  int64_t b1_stride, b2_stride;
  int64_t rows;
  int in, hidden, out;
  // Forward.
  T* y;             // [rows, out], contiguous
  T* hidden_store;  // [rows, hidden], contiguous, or null
  // Backward.
  Strided<T> grad_out;
  Strided<T> hidden_saved;             // p null: recompute each block's hidden activation
  T* grad_x;                           // [rows, in], contiguous, or null
  typename Numeric<T>::acc* partials;  // [chunks, layout.partials]
  int64_t blocks_per_chunk;
  bool need_gw1, need_gb1, need_gw2, need_gb2;
};

}  // namespace twolayer_ext::cuda::fused_mlp
