// CUDA kernels for twolayer_ext::relu and relu_backward (the tutorial's MyReLU).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "dtypes.cuh"
#include "twolayer_ext/checks.h"

namespace twolayer_ext::cuda {
namespace {

constexpr const char* kFwd = "twolayer_ext::relu";
constexpr const char* kBwd = "twolayer_ext::relu_backward";
constexpr int kThreads = 256;

// Grid-stride loops with 64-bit indices. `v <= 0 ? 0 : v` lets NaN through
// (torch.relu); backward is threshold_backward: grad where y > 0 or y is NaN.
template <typename T>
__global__ void relu_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const T v = x[i];
    y[i] = Numeric<T>::to_acc(v) <= 0 ? Numeric<T>::zero() : v;
  }
}

template <typename T>
__global__ void relu_backward_kernel(const T* __restrict__ g, const T* __restrict__ y,
                                     T* __restrict__ out, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    out[i] = Numeric<T>::to_acc(y[i]) <= 0 ? Numeric<T>::zero() : g[i];
  }
}

unsigned grid_for(int64_t n) {
  return unsigned(std::min<int64_t>((n + kThreads - 1) / kThreads, 8192));
}

at::Tensor relu_cuda(const at::Tensor& x) {
  check_floating(kFwd, "x", x, kCudaDtypes);
  TORCH_CHECK(x.is_cuda(), kFwd, ": expected a CUDA tensor, got x on ", x.device());
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor xc = x.contiguous();
  at::Tensor y = at::empty(x.sizes(), x.options());
  const int64_t n = xc.numel();
  if (n == 0) return y;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "relu_cuda", [&] {
    using T = typename DeviceType<scalar_t>::type;
    relu_kernel<T><<<grid_for(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        static_cast<const T*>(xc.data_ptr()), static_cast<T*>(y.data_ptr()), n);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return y;
}

at::Tensor relu_backward_cuda(const at::Tensor& grad_y, const at::Tensor& y) {
  check_relu_backward_args(kBwd, grad_y, y, kCudaDtypes);
  TORCH_CHECK(y.is_cuda(), kBwd, ": expected CUDA tensors, got y on ", y.device());
  const c10::cuda::CUDAGuard guard(y.device());
  const at::Tensor gc = grad_y.contiguous(), yc = y.contiguous();
  at::Tensor out = at::empty(y.sizes(), y.options());
  const int64_t n = yc.numel();
  if (n == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, y.scalar_type(), "relu_backward_cuda", [&] {
        using T = typename DeviceType<scalar_t>::type;
        relu_backward_kernel<T><<<grid_for(n), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            static_cast<const T*>(gc.data_ptr()), static_cast<const T*>(yc.data_ptr()),
            static_cast<T*>(out.data_ptr()), n);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(twolayer_ext, CUDA, m) {
  m.impl("relu", &relu_cuda);
  m.impl("relu_backward", &relu_backward_cuda);
}

}  // namespace twolayer_ext::cuda
