// What the fused two-layer kernels (fused_mlp_simt.cuh, fused_mlp_tc.cuh) share: their
// arguments, the thread block's shape, the backward's chunks of row blocks and the kernel
// that adds the chunks' partial sums. Included by fused_mlp.cu (and the host emulation in
// tests/cuda_emulation/).
#pragma once

#include <cstdint>
#include <utility>

#include "dtypes.cuh"
#include "fused_mlp_layout.h"

namespace twolayer_ext::cuda::fused_mlp {

using cuda_mlp::kBlockRows;

constexpr int kThreads = 256;  // threads per block: 8 warps
// Thread blocks at most. The forward's blocks loop over the row blocks; the backward's
// each take a chunk of consecutive row blocks and write one set of partial weight
// gradients (at 32 -> 128 -> 3: 1024 x 18 KB).
constexpr int64_t kMaxBlocks = 1024;

C10_HOST_DEVICE inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The backward's chunks: {count, row blocks per chunk}, from `rows` alone (so the order in
// which partial sums are added does not depend on the GPU). rows > 0.
inline std::pair<int64_t, int64_t> chunking(int64_t rows) {
  const int64_t blocks = ceil_div(rows, kBlockRows);
  const int64_t per_chunk = ceil_div(blocks, blocks < kMaxBlocks ? blocks : kMaxBlocks);
  return {ceil_div(blocks, per_chunk), per_chunk};
}

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

// The row blocks a thread block takes, [begin, end) by step: in the forward every
// gridDim.x-th from its own index; in the backward its chunk of consecutive ones.
struct RowBlocks {
  int64_t begin, end, step;
};

template <typename T>
__device__ inline RowBlocks forward_row_blocks(const MlpParams<T>& p) {
  return {blockIdx.x, ceil_div(p.rows, kBlockRows), gridDim.x};
}

template <typename T>
__device__ inline RowBlocks backward_row_blocks(const MlpParams<T>& p) {
  const int64_t first = blockIdx.x * p.blocks_per_chunk;
  return {first, min(ceil_div(p.rows, kBlockRows), first + p.blocks_per_chunk), 1};
}

// The rows of row block `block`: kBlockRows, fewer in the last.
template <typename T>
__device__ inline int rows_of(const MlpParams<T>& p, int64_t block) {
  return static_cast<int>(min(kBlockRows, p.rows - block * kBlockRows));
}

// Where each weight gradient of a row of partial sums goes (null: not asked for).
template <typename T>
struct Segments {
  cuda_mlp::Partials at;  // the row's layout
  T* dst[4];              // grad_w1, grad_b1, grad_w2, grad_b2
};

// dst[j] = bias[j] in the accumulation type, for j < n; nothing without a bias.
template <typename T, typename Acc>
__device__ void load_bias(Acc* dst, const T* bias, int64_t stride, int n) {
  if (bias == nullptr) return;
  for (int j = threadIdx.x; j < n; j += kThreads) dst[j] = Numeric<T>::to_acc(bias[j * stride]);
}

// dst = the partial sums added over chunks in chunk order, rounded to T once.
template <typename T>
__global__ void reduce_partials_kernel(const typename Numeric<T>::acc* partials, int64_t chunks,
                                       const Segments<T> seg) {
  using Acc = typename Numeric<T>::acc;
  const int64_t* const begin = seg.at.begin;
  const int64_t n = begin[4];
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    int s = 0;
    while (e >= begin[s + 1]) ++s;
    if (seg.dst[s] == nullptr) continue;
    Acc sum = partials[e];
    for (int64_t c = 1; c < chunks; ++c) sum += partials[c * n + e];
    seg.dst[s][e - begin[s]] = Numeric<T>::from_acc(sum);
  }
}

}  // namespace twolayer_ext::cuda::fused_mlp
