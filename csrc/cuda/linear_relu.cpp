// CUDA kernels for twolayer_ext::linear_relu and linear_relu_backward: argument
// checks and shapes here, the products (cuBLAS) and the passes around them in layer.h.
//
// Forward: one product with bias, then one pass for ReLU and the packed mask.
// Backward: one pass masks grad_y and reduces the bias gradient, then the grad_x and
// grad_weight products, each only when its gradient is requested.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "layer.h"
#include "twolayer_ext/checks.h"

namespace twolayer_ext::cuda {
namespace {

constexpr const char* kFwd = "twolayer_ext::linear_relu";
constexpr const char* kBwd = "twolayer_ext::linear_relu_backward";

std::tuple<at::Tensor, at::Tensor> linear_relu(const at::Tensor& x, const at::Tensor& weight,
                                               const OptTensor& bias) {
  check_linear_relu_args(kFwd, x, weight, bias, kCudaDtypes);
  TORCH_INTERNAL_ASSERT(x.is_cuda());  // the dispatcher's CUDA key, and checked same device
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t rows = leading_rows(x), out_features = weight.size(0);
  at::Tensor y = at::empty({rows, out_features}, x.options());
  at::Tensor mask = at::empty({rows, mask_bytes(out_features)}, x.options().dtype(at::kByte));
  linear_forward(y, x.reshape({rows, weight.size(1)}), weight, bias, /*relu=*/true, mask);
  return {y.view(with_last_dim(x, out_features)), mask};
}

std::tuple<OptTensor, OptTensor, OptTensor> linear_relu_backward(const at::Tensor& grad_y,
                                                                 const at::Tensor& x,
                                                                 const at::Tensor& weight,
                                                                 const at::Tensor& mask,
                                                                 std::array<bool, 3> output_mask) {
  check_linear_relu_backward_args(kBwd, grad_y, x, weight, mask, kCudaDtypes);
  TORCH_INTERNAL_ASSERT(x.is_cuda());
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t rows = leading_rows(x);
  auto [grad_x, grad_w, grad_b] =
      linear_backward(grad_y.reshape({rows, weight.size(0)}), ReluKeep{mask, {}},
                      /*g_owned=*/false, x.reshape({rows, weight.size(1)}), weight, output_mask);
  if (grad_x) grad_x = grad_x->view(x.sizes());
  return {grad_x, grad_w, grad_b};
}

}  // namespace

TORCH_LIBRARY_IMPL(twolayer_ext, CUDA, m) {
  m.impl("linear_relu", &linear_relu);
  m.impl("linear_relu_backward", &linear_relu_backward);
}

}  // namespace twolayer_ext::cuda
