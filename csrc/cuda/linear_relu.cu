// CUDA kernels for twolayer_ext::linear_relu and linear_relu_backward.
//
// Forward: one fused GEMM (bias + ReLU + packed mask in the epilogue).
// Backward: grad_x and grad_weight are GEMMs that apply the mask while loading
// grad_y tiles; grad_bias is reduced by the grad_weight GEMM (a column
// reduction of the masked grad_y on its own when grad_weight is not wanted).
// Each is computed only when its gradient is requested.
#include <ATen/Dispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "bias_grad.cuh"
#include "cuda_ops.h"
#include "fused_gemm.h"
#include "launch_utils.cuh"
#include "twolayer_ext/checks.h"

namespace twolayer_ext::cuda {
namespace {

constexpr const char* kFwd = "twolayer_ext::linear_relu";
constexpr const char* kBwd = "twolayer_ext::linear_relu_backward";

void check_cuda(const char* op, const at::Tensor& x) {
  TORCH_CHECK(x.is_cuda(), op, ": expected CUDA tensors, got x on ", x.device());
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> linear_relu(const at::Tensor& x, const at::Tensor& weight,
                                               const std::optional<at::Tensor>& bias) {
  check_linear_relu_args(kFwd, x, weight, bias, kCudaDtypes);
  check_cuda(kFwd, x);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t out_features = weight.size(0), in_features = weight.size(1);
  const int64_t rows = leading_rows(x);
  const at::Tensor x2 = x.reshape({rows, in_features});
  const at::Tensor b = bias.has_value() && bias->defined() ? bias->contiguous() : at::Tensor();
  at::Tensor y = at::empty({rows, out_features}, x.options());
  at::Tensor mask = at::empty({rows, mask_bytes(out_features)}, x.options().dtype(at::kByte));
  const bool tf32 = use_tf32(x);
  check_tensor_core_arch(kFwd, x, tf32 || x.element_size() == 2);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "linear_relu_cuda",
                                  [&] {
    using T = typename DeviceType<scalar_t>::type;
    GemmParams p;
    p.a = x2.data_ptr();
    p.a_sm = x2.stride(0);
    p.a_sk = x2.stride(1);
    p.b = weight.data_ptr();
    p.b_sn = weight.stride(0);
    p.b_sk = weight.stride(1);
    p.c = y.data_ptr();
    p.ldc = out_features;
    p.M = rows;
    p.N = out_features;
    p.K = in_features;
    p.bias = b.defined() ? b.data_ptr() : nullptr;
    p.relu = true;
    p.mask_out = mask.data_ptr<uint8_t>();
    p.mask_out_ld = mask_bytes(out_features);
    launch_fused_gemm<T>(p, tf32, c10::cuda::getCurrentCUDAStream());
  });
  auto out_sizes = x.sizes().vec();
  out_sizes.back() = out_features;
  return {y.view(out_sizes), mask};
}

std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>>
linear_relu_backward(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
                     const at::Tensor& mask, std::array<bool, 3> output_mask) {
  check_linear_relu_backward_args(kBwd, grad_y, x, weight, mask, kCudaDtypes);
  check_cuda(kBwd, x);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t out_features = weight.size(0), in_features = weight.size(1);
  const int64_t rows = leading_rows(x);
  const at::Tensor g2 = grad_y.reshape({rows, out_features});
  const at::Tensor x2 = x.reshape({rows, in_features});
  const int64_t mask_ld = mask_bytes(out_features);
  const bool tf32 = use_tf32(x);
  check_tensor_core_arch(kBwd, x, tf32 || x.element_size() == 2);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  std::optional<at::Tensor> grad_x, grad_w, grad_b;
  if (output_mask[2]) grad_b = at::empty({out_features}, weight.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(),
                                  "linear_relu_backward_cuda", [&] {
    using T = typename DeviceType<scalar_t>::type;
    if (output_mask[0]) {  // grad_x[m, i] = sum_o g'(m, o) * W(o, i)
      at::Tensor gx = at::empty({rows, in_features}, x.options());
      GemmParams p;
      p.a = g2.data_ptr();
      p.a_sm = g2.stride(0);
      p.a_sk = g2.stride(1);
      p.mask_a = mask.data_ptr<uint8_t>();
      p.mask_a_ld = mask_ld;
      p.b = weight.data_ptr();  // B(i, o) = W(o, i)
      p.b_sn = weight.stride(1);
      p.b_sk = weight.stride(0);
      p.c = gx.data_ptr();
      p.ldc = in_features;
      p.M = rows;
      p.N = in_features;
      p.K = out_features;
      if (out_features == 0) gx.zero_();
      launch_fused_gemm<T>(p, tf32, stream);
      grad_x = gx.view(x.sizes());
    }
    if (output_mask[1]) {  // grad_w[o, i] = sum_m g'(m, o) * x(m, i)
      at::Tensor gw = at::empty({out_features, in_features}, weight.options());
      GemmParams p;
      p.a = g2.data_ptr();  // A(o, m) = g(m, o)
      p.a_sm = g2.stride(1);
      p.a_sk = g2.stride(0);
      p.mask_a = mask.data_ptr<uint8_t>();
      p.mask_a_ld = mask_ld;
      p.mask_a_t = true;
      p.b = x2.data_ptr();  // B(i, m) = x(m, i)
      p.b_sn = x2.stride(1);
      p.b_sk = x2.stride(0);
      p.c = gw.data_ptr();
      p.ldc = in_features;
      p.M = out_features;
      p.N = in_features;
      p.K = rows;
      p.bias_grad = grad_b ? grad_b->data_ptr() : nullptr;  // grad_b[o] = sum_m g'(m, o)
      launch_fused_gemm<T>(p, tf32, stream);
      grad_w = gw;
    } else if (grad_b) {
      launch_bias_grad<T>(static_cast<const T*>(g2.data_ptr()), g2.stride(0), g2.stride(1),
                          mask.data_ptr<uint8_t>(), mask_ld, rows, out_features,
                          static_cast<T*>(grad_b->data_ptr()), stream);
    }
  });
  return {grad_x, grad_w, grad_b};
}

TORCH_LIBRARY_IMPL(twolayer_ext, CUDA, m) {
  m.impl("linear_relu", &linear_relu);
  m.impl("linear_relu_backward", &linear_relu_backward);
}

}  // namespace twolayer_ext::cuda
