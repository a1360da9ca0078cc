// CUDA kernels for twolayer_ext::two_layer_forward / two_layer_backward: the
// tutorial's whole network, relu(x W1ᵀ + b1) W2ᵀ + b2, one op each way.
//
// Forward: the fused linear_relu GEMM, then the same tiled GEMM with a bias
// epilogue for layer 2. Backward: grad_w2, grad_b2 and grad_h from grad_out;
// the ReLU mask is re-packed from the saved hidden activation; then layer 1's
// fused backward (mask applied while loading grad_h tiles).
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "bias_grad.cuh"
#include "cuda_ops.h"
#include "fused_gemm.h"
#include "launch_utils.cuh"
#include "twolayer_ext/checks.h"

namespace twolayer_ext::cuda {
namespace {

constexpr const char* kFwd = "twolayer_ext::two_layer_forward";
constexpr const char* kBwd = "twolayer_ext::two_layer_backward";

// Packed ReLU mask of a contiguous [rows, n] ReLU output: one thread per byte.
template <typename T>
__global__ void pack_relu_mask_kernel(const T* __restrict__ h, int64_t rows, int64_t n,
                                      uint8_t* __restrict__ mask, int64_t nbytes) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < rows * nbytes;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / nbytes, b = i % nbytes;
    uint8_t bits = 0;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      const int64_t c = b * 8 + j;
      if (c < n) bits |= uint8_t(!(Conv<T>::to(h[r * n + c]) <= 0)) << j;
    }
    mask[i] = bits;
  }
}

std::tuple<at::Tensor, at::Tensor> two_layer_forward(const at::Tensor& x, const at::Tensor& w1,
                                                     const std::optional<at::Tensor>& b1,
                                                     const at::Tensor& w2,
                                                     const std::optional<at::Tensor>& b2) {
  check_two_layer_args(kFwd, x, w1, b1, w2, b2, kCudaDtypes);
  TORCH_CHECK(x.is_cuda(), kFwd, ": expected CUDA tensors, got x on ", x.device());
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t rows = leading_rows(x), hidden = w1.size(0), out_features = w2.size(0);
  at::Tensor h = std::get<0>(linear_relu(x, w1, b1));
  const at::Tensor h2 = h.reshape({rows, hidden});
  const at::Tensor bias = b2.has_value() && b2->defined() ? b2->contiguous() : at::Tensor();
  at::Tensor out = at::empty({rows, out_features}, x.options());
  const bool tf32 = use_tf32(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "two_layer_fwd",
                                  [&] {
    using T = typename DeviceType<scalar_t>::type;
    GemmParams p;
    p.a = h2.data_ptr();
    p.a_sm = h2.stride(0);
    p.a_sk = h2.stride(1);
    p.b = w2.data_ptr();
    p.b_sn = w2.stride(0);
    p.b_sk = w2.stride(1);
    p.c = out.data_ptr();
    p.ldc = out_features;
    p.M = rows;
    p.N = out_features;
    p.K = hidden;
    p.bias = bias.defined() ? bias.data_ptr() : nullptr;
    launch_fused_gemm<T>(p, tf32, c10::cuda::getCurrentCUDAStream());
  });
  auto out_sizes = x.sizes().vec();
  out_sizes.back() = out_features;
  return {out.view(out_sizes), h};
}

using OptT = std::optional<at::Tensor>;

std::tuple<OptT, OptT, OptT, OptT, OptT> two_layer_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2,
    const at::Tensor& hidden, std::array<bool, 5> output_mask) {
  check_two_layer_backward_args(kBwd, grad_out, x, w1, w2, hidden, kCudaDtypes);
  TORCH_CHECK(x.is_cuda(), kBwd, ": expected CUDA tensors, got x on ", x.device());
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t rows = leading_rows(x), hid = w1.size(0), out_features = w2.size(0);
  const at::Tensor g2 = grad_out.reshape({rows, out_features});
  const at::Tensor h2 = hidden.reshape({rows, hid}).contiguous();
  const bool tf32 = use_tf32(x);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  OptT gx, gw1, gb1, gw2, gb2;
  at::Tensor grad_h, mask;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "two_layer_bwd",
                                  [&] {
    using T = typename DeviceType<scalar_t>::type;
    if (output_mask[4]) gb2 = at::empty({out_features}, w2.options());
    if (output_mask[3]) {  // grad_w2[o, j] = sum_m g(m, o) * h(m, j)
      at::Tensor gw = at::empty({out_features, hid}, w2.options());
      GemmParams p;
      p.a = g2.data_ptr();
      p.a_sm = g2.stride(1);
      p.a_sk = g2.stride(0);
      p.b = h2.data_ptr();
      p.b_sn = h2.stride(1);
      p.b_sk = h2.stride(0);
      p.c = gw.data_ptr();
      p.ldc = hid;
      p.M = out_features;
      p.N = hid;
      p.K = rows;
      p.bias_grad = gb2 ? gb2->data_ptr() : nullptr;  // grad_b2[o] = sum_m g(m, o)
      launch_fused_gemm<T>(p, tf32, stream);
      gw2 = gw;
    } else if (gb2) {
      launch_bias_grad<T>(static_cast<const T*>(g2.data_ptr()), g2.stride(0), g2.stride(1),
                          nullptr, 0, rows, out_features, static_cast<T*>(gb2->data_ptr()),
                          stream);
    }
    if (output_mask[0] || output_mask[1] || output_mask[2]) {
      grad_h = at::empty({rows, hid}, x.options());  // grad_h[m, j] = sum_o g(m, o) * w2(o, j)
      GemmParams p;
      p.a = g2.data_ptr();
      p.a_sm = g2.stride(0);
      p.a_sk = g2.stride(1);
      p.b = w2.data_ptr();
      p.b_sn = w2.stride(1);
      p.b_sk = w2.stride(0);
      p.c = grad_h.data_ptr();
      p.ldc = hid;
      p.M = rows;
      p.N = hid;
      p.K = out_features;
      launch_fused_gemm<T>(p, tf32, stream);
      const int64_t nbytes = mask_bytes(hid);
      mask = at::empty({rows, nbytes}, x.options().dtype(at::kByte));
      if (rows * nbytes > 0) {
        const unsigned blocks = unsigned(std::min<int64_t>((rows * nbytes + 255) / 256, 4096));
        pack_relu_mask_kernel<T><<<blocks, 256, 0, stream>>>(
            static_cast<const T*>(h2.data_ptr()), rows, hid, mask.data_ptr<uint8_t>(), nbytes);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    }
  });
  if (grad_h.defined()) {
    std::tie(gx, gw1, gb1) = linear_relu_backward(grad_h.view(hidden.sizes()), x, w1, mask,
                                                  {output_mask[0], output_mask[1], output_mask[2]});
  }
  return {gx, gw1, gb1, gw2, gb2};
}

}  // namespace

TORCH_LIBRARY_IMPL(twolayer_ext, CUDA, m) {
  m.impl("two_layer_forward", &two_layer_forward);
  m.impl("two_layer_backward", &two_layer_backward);
}

}  // namespace twolayer_ext::cuda
