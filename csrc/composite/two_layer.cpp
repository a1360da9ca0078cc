// twolayer_ext::two_layer (the network's output alone) and two_layer_backward_recompute
// on devices without kernels of their own (CUDA): two_layer_forward's output, and
// two_layer_backward on a hidden activation computed by two_layer_forward. The CPU kernels
// (csrc/cpu/two_layer.cpp) write no hidden activation on the fused path.
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

}  // namespace

TORCH_LIBRARY_IMPL(twolayer_ext, CompositeExplicitAutograd, m) {
  m.impl("two_layer", &two_layer);
  m.impl("two_layer_backward_recompute", &two_layer_backward_recompute);
}

}  // namespace twolayer_ext::composite
