// The output-only ops on devices without kernels of their own (CUDA), composed of the ops
// that have them: linear_relu_output is linear_relu's output, two_layer is
// two_layer_forward's output, and two_layer_backward_recompute is two_layer_backward on a
// hidden activation computed by two_layer_forward. The CPU kernels (csrc/cpu/) build no
// mask and, on the fused path, write no hidden activation.
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "twolayer_ext/op_handle.h"

namespace twolayer_ext::composite {
namespace {

at::Tensor two_layer(const at::Tensor& x, const at::Tensor& w1, const OptTensor& b1,
                     const at::Tensor& w2, const OptTensor& b2) {
  static const auto forward = op_handle<TwoLayerForwardSig>("twolayer_ext::two_layer_forward");
  return std::get<0>(forward.call(x, w1, b1, w2, b2));
}

std::tuple<OptTensor, OptTensor, OptTensor, OptTensor, OptTensor> two_layer_backward_recompute(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w1, const OptTensor& b1,
    const at::Tensor& w2, std::array<bool, 5> output_mask) {
  static const auto forward = op_handle<TwoLayerForwardSig>("twolayer_ext::two_layer_forward");
  static const auto backward = op_handle<TwoLayerBackwardSig>("twolayer_ext::two_layer_backward");
  const at::Tensor hidden = std::get<1>(forward.call(x, w1, b1, w2, std::nullopt));
  return backward.call(grad_out, x, w1, w2, hidden, output_mask);
}

// linear_relu_output: linear_relu's output (the CUDA kernel builds the mask anyway).
at::Tensor linear_relu_output(const at::Tensor& x, const at::Tensor& weight,
                              const OptTensor& bias) {
  static const auto op = op_handle<std::tuple<at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, const OptTensor&)>("twolayer_ext::linear_relu");
  return std::get<0>(op.call(x, weight, bias));
}

}  // namespace

TORCH_LIBRARY_IMPL(twolayer_ext, CompositeExplicitAutograd, m) {
  m.impl("linear_relu_output", &linear_relu_output);
  m.impl("two_layer", &two_layer);
  m.impl("two_layer_backward_recompute", &two_layer_backward_recompute);
}

}  // namespace twolayer_ext::composite
