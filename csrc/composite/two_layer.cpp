// twolayer_ext::two_layer (the network's output alone) on devices without a kernel
// of their own: two_layer_forward's output. The CPU kernel (csrc/cpu/two_layer.cpp)
// runs the fused path that writes no hidden activation.
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

}  // namespace

TORCH_LIBRARY_IMPL(twolayer_ext, CompositeExplicitAutograd, m) { m.impl("two_layer", &two_layer); }

}  // namespace twolayer_ext::composite
