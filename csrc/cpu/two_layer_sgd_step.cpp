// CPU kernel for twolayer_ext::two_layer_sgd_step: the step every device runs
// (csrc/composite/two_layer_sgd_step.cpp), with W1's update applied inside its gradient's
// product (two_layer_backward_sgd): each tile of grad_w1 is subtracted, times lr, from W1
// as it is computed, instead of written out and added by a pass of its own (at the
// tutorial's size a pass over 400 KB of gradient and 400 KB of weight: docs/BENCHMARKS.md,
// "SGD's update inside the gradient's product"). The update is ATen's add_ on the same
// gradient, bitwise: w1 + (-lr) * grad rounded once.
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "../composite/two_layer_sgd_step.h"
#include "twolayer_ext/cpu_ops.h"

namespace twolayer_ext::cpu {
namespace {

composite::StepGrads backward_with_w1_update(const at::Tensor& grad_out, const at::Tensor& x,
                                             const at::Tensor& w1, const OptTensor& b1,
                                             const at::Tensor& w2, const at::Tensor& hidden,
                                             std::array<bool, 5> need, double lr) {
  if (!hidden.defined()) {  // recomputed block by block: the product has no tiles of W1's own
    return composite::ops_backward(grad_out, x, w1, b1, w2, hidden, need, lr);
  }
  return two_layer_backward_sgd(grad_out, x, w1, w2, hidden, need, lr);
}

at::Tensor two_layer_sgd_step(const at::Tensor& x, const at::Tensor& y, const at::Tensor& w1,
                              const OptTensor& b1, const at::Tensor& w2, const OptTensor& b2,
                              double lr, c10::string_view reduction) {
  const int64_t red = composite::check_sgd_step_args(x, y, w1, b1, w2, b2, reduction);
  return composite::sgd_step(x, y, w1, b1, w2, b2, lr, red, std::nullopt,
                             &backward_with_w1_update);
}

}  // namespace

TORCH_LIBRARY_IMPL(twolayer_ext, CPU, m) {
  m.impl("two_layer_sgd_step", &two_layer_sgd_step);
}

}  // namespace twolayer_ext::cpu
