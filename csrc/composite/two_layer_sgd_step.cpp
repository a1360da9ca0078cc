// twolayer_ext::two_layer_sgd_step: one whole training step of the tutorial's
// network (forward, MSE loss, backward, SGD update) in one op call.
//
// Why: at the seed's sizes a step written the usual way (module call, loss,
// loss.backward(), optimizer.step()) spends ~0.2 ms in Python, the autograd
// engine and the optimizer, as much as its 26 MFLOP of arithmetic
// (docs/BENCHMARKS.md). Here the step is six dispatcher calls and no graph.
//
// It is composed of the two-layer ops and ATen, for every device at once
// (CompositeExplicitAutograd): the products are exactly the ones
// two_layer_forward/two_layer_backward run under autograd, and the loss
// gradient and update are torch's own mse_loss_backward and SGD arithmetic, so
// the new weights are bitwise those of TwoLayerNet + loss.backward() +
// torch.optim.SGD (tests/test_sgd_step.py).
#include <ATen/core/Tensor.h>
#include <ATen/ops/_foreach_add.h>
#include <ATen/ops/mse_loss.h>
#include <ATen/ops/mse_loss_backward.h>
#include <ATen/ops/ones.h>
#include <torch/csrc/autograd/utils/grad_layout_contract.h>
#include <torch/library.h>

#include <string_view>
#include <vector>

#include "twolayer_ext/checks.h"
#include "twolayer_ext/op_handle.h"

namespace twolayer_ext::composite {
namespace {

constexpr const char* kOp = "twolayer_ext::two_layer_sgd_step";

// at::Reduction values, without pulling in the header that defines them.
int64_t reduction_enum(std::string_view reduction) {
  if (reduction == "sum") return 2;
  if (reduction == "mean") return 1;
  TORCH_CHECK_VALUE(false, kOp, ": reduction must be 'sum' or 'mean', but got '",
                    std::string(reduction), "'");
}

at::Tensor two_layer_sgd_step(const at::Tensor& x, const at::Tensor& y, const at::Tensor& w1,
                              const OptTensor& b1, const at::Tensor& w2, const OptTensor& b2,
                              double lr, c10::string_view reduction) {
  check_two_layer_args(kOp, x, w1, b1, w2, b2, x.is_cuda() ? kCudaDtypes : kCpuDtypes);
  check_same(kOp, "y", y, "x", x);
  const auto out_shape = with_last_dim(x, w2.size(0));
  TORCH_CHECK_VALUE(y.sizes() == at::IntArrayRef(out_shape), kOp,
                    ": y must have the network's output shape ", shape_str(out_shape), ", but got ",
                    shape_str(y.sizes()));
  const int64_t red = reduction_enum(reduction);
  const bool has_b1 = present(b1), has_b2 = present(b2);

  static const auto forward = op_handle<TwoLayerForwardSig>("twolayer_ext::two_layer_forward");
  static const auto backward = op_handle<TwoLayerBackwardSig>("twolayer_ext::two_layer_backward");
  // Runs below autograd (csrc/autograd/two_layer_sgd_step.cpp records no graph
  // and bumps the updated tensors' versions once the step is done).
  auto [out, hidden] = forward.call(x, w1, b1, w2, b2);
  at::Tensor loss = at::mse_loss(out, y, red);
  // d loss / d out exactly as loss.backward() computes it: mse_loss_backward
  // seeded with d loss / d loss = 1.
  const at::Tensor grad_out = at::mse_loss_backward(at::ones({}, loss.options()), out, y, red);
  auto [gx, gw1, gb1, gw2, gb2] =
      backward.call(grad_out, x, w1, w2, hidden, {false, true, has_b1, true, has_b2});
  std::vector<at::Tensor> params{w1, w2}, grads{*gw1, *gw2};
  if (has_b1) params.push_back(*b1), grads.push_back(*gb1);
  if (has_b2) params.push_back(*b2), grads.push_back(*gb2);
  // Each gradient in the layout AccumulateGrad would give p.grad (a transposed
  // weight gets a transposed grad), so that the update below takes the same
  // ATen kernel path as SGD's: for 16-bit dtypes, add_ rounds differently on
  // its vectorised (same strides) and strided paths.
  for (size_t i = 0; i < params.size(); ++i) {
    if (!torch::autograd::utils::obeys_layout_contract(grads[i], params[i])) {
      grads[i] = torch::autograd::utils::clone_obey_contract(grads[i], params[i]);
    }
  }
  at::_foreach_add_(params, grads, -lr);  // torch.optim.SGD: p.add_(grad, alpha=-lr)
  return loss;
}

}  // namespace

TORCH_LIBRARY_IMPL(twolayer_ext, CompositeExplicitAutograd, m) {
  m.impl("two_layer_sgd_step", &two_layer_sgd_step);
}

}  // namespace twolayer_ext::composite
