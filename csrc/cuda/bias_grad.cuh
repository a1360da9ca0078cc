// Column sums of a (masked) gradient: grad_bias[n] = sum over rows m of g(m, n),
// counting only entries whose packed ReLU mask bit is set (mask may be null).
#pragma once

#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "dtypes.cuh"

namespace twolayer_ext::cuda {

// One block per 32 columns; each of its 8 thread rows strides over the rows and
// the 8 partial sums are added in a fixed order: deterministic.
template <typename T>
__global__ void bias_grad_kernel(const T* __restrict__ g, int64_t gs0, int64_t gs1,
                                 const uint8_t* __restrict__ mask, int64_t mask_ld, int64_t rows,
                                 int64_t n, T* __restrict__ out) {
  using acc_t = typename Conv<T>::acc;
  __shared__ acc_t part[8][33];
  const int64_t col = int64_t(blockIdx.x) * 32 + threadIdx.x;
  acc_t s = 0;
  if (col < n) {
    for (int64_t m = threadIdx.y; m < rows; m += 8)
      if (mask == nullptr || mask_bit(mask, mask_ld, m, col))
        s += Conv<T>::to(g[m * gs0 + col * gs1]);
  }
  part[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && col < n) {
    acc_t t = 0;
#pragma unroll
    for (int y = 0; y < 8; ++y) t += part[y][threadIdx.x];
    out[col] = Conv<T>::from(t);
  }
}

template <typename T>
void launch_bias_grad(const T* g, int64_t gs0, int64_t gs1, const uint8_t* mask, int64_t mask_ld,
                      int64_t rows, int64_t n, T* out, cudaStream_t stream) {
  if (n == 0) return;
  const dim3 block{32, 8}, grid{unsigned((n + 31) / 32)};
  bias_grad_kernel<T><<<grid, block, 0, stream>>>(g, gs0, gs1, mask, mask_ld, rows, n, out);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace twolayer_ext::cuda
