// The kernels of the passes around cuBLAS (passes.h), launched by passes.cu; also run
// by the host emulation in tests/cuda_emulation/.
#pragma once

#include <cstdint>

#include "dtypes.cuh"

namespace twolayer_ext::cuda::passes {

// One thread per mask byte: 8 consecutive columns of one row. The dropped elements
// are set to +0 (relu(-0.0) = 0, as torch).
template <typename T>
__global__ void relu_mask_kernel(T* y, int64_t rows, int64_t n, int64_t nbytes,
                                 uint8_t* __restrict__ mask) {
  for (int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; b < rows * nbytes;
       b += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = b / nbytes, j0 = (b % nbytes) * 8;
    T* row = y + i * n;
    uint8_t bits = 0;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      if (j0 + j < n) {
        // !(v <= 0) keeps NaN, as torch.relu and threshold_backward do.
        const bool keep = !(Numeric<T>::to_acc(row[j0 + j]) <= 0);
        bits |= uint8_t(keep) << j;
        if (!keep) row[j0 + j] = Numeric<T>::zero();
      }
    }
    if (mask != nullptr) mask[b] = bits;
  }
}

// Where the gradient passes, per element (i, j) of the layer output.
struct KeepAll {
  __device__ bool operator()(int64_t, int64_t) const { return true; }
};
struct KeepPacked {
  const uint8_t* mask;
  int64_t ld;
  __device__ bool operator()(int64_t i, int64_t j) const { return mask_bit(mask, ld, i, j); }
};
template <typename T>
struct KeepOutput {
  const T* y;
  int64_t ld;
  __device__ bool operator()(int64_t i, int64_t j) const {
    return !(Numeric<T>::to_acc(y[i * ld + j]) <= 0);
  }
};

// Block: 32 columns x 8 row lanes; grid: column strips x row chunks. Each block
// masks its chunk's rows of its strip and sums them per column: lane partials
// added in lane order, then (more than one chunk) the chunk partials in chunk
// order by sum_chunks_kernel. Every sum has a fixed order: deterministic.
constexpr int kStrip = 32, kLanes = 8;

template <typename T, typename Keep>
__global__ void masked_grad_kernel(const T* g, int64_t gs0, int64_t gs1, Keep keep, int64_t rows,
                                   int64_t n, int64_t chunk_rows, T* gm,
                                   typename Numeric<T>::acc* partial, T* grad_bias) {
  using acc_t = typename Numeric<T>::acc;
  __shared__ acc_t lane_sum[kLanes][kStrip + 1];
  const int64_t col = int64_t(blockIdx.x) * kStrip + threadIdx.x;
  const int64_t r0 = int64_t(blockIdx.y) * chunk_rows;
  const int64_t r1 = r0 + chunk_rows < rows ? r0 + chunk_rows : rows;
  acc_t s = 0;
  if (col < n) {
    // g and gm may be the same memory: each element is read before it is written,
    // by the same thread.
    for (int64_t i = r0 + threadIdx.y; i < r1; i += kLanes) {
      const T v = keep(i, col) ? g[i * gs0 + col * gs1] : Numeric<T>::zero();
      if (gm != nullptr) gm[i * n + col] = v;
      s += Numeric<T>::to_acc(v);
    }
  }
  if (partial == nullptr && grad_bias == nullptr) return;  // uniform over the block
  lane_sum[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && col < n) {
    acc_t t = 0;
#pragma unroll
    for (int l = 0; l < kLanes; ++l) t += lane_sum[l][threadIdx.x];
    if (partial != nullptr) {
      partial[int64_t(blockIdx.y) * n + col] = t;
    } else {
      grad_bias[col] = Numeric<T>::from_acc(t);
    }
  }
}

template <typename T>
__global__ void sum_chunks_kernel(const typename Numeric<T>::acc* __restrict__ partial,
                                  int64_t chunks, int64_t n, T* __restrict__ grad_bias) {
  for (int64_t col = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; col < n;
       col += int64_t(gridDim.x) * blockDim.x) {
    typename Numeric<T>::acc t = 0;
    for (int64_t c = 0; c < chunks; ++c) t += partial[c * n + col];
    grad_bias[col] = Numeric<T>::from_acc(t);
  }
}

}  // namespace twolayer_ext::cuda::passes
