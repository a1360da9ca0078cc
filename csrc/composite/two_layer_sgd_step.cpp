// twolayer_ext::two_layer_sgd_step: one whole training step of the tutorial's
// network (forward, MSE loss, backward, SGD update) in one op call, and its
// autocast kernel (the mixed-precision step): one implementation for both.
//
// Why: at the tutorial's sizes a step written the usual way (module call, loss,
// loss.backward(), optimizer.step()) spends ~0.2 ms in Python, the autograd
// engine and the optimizer, as much as its 26 MFLOP of arithmetic
// (docs/BENCHMARKS.md). Here the step is six dispatcher calls and no graph.
//
// It is composed of the two-layer ops and ATen, for every device at once
// (CompositeExplicitAutograd): the products are exactly the ones
// two_layer_forward/two_layer_backward run under autograd, and the loss
// gradient and update are torch's own mse_loss_backward and SGD arithmetic, so
// the new weights are bitwise those of TwoLayerNet + loss.backward() +
// torch.optim.SGD (tests/test_sgd_step.py), with or without autocast. The CPU's
// kernel (csrc/cpu/two_layer_sgd_step.cpp) is this step with another backward
// (two_layer_sgd_step.h: StepBackward), one that applies W1's update itself.
#include <ATen/autocast_mode.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/_foreach_add.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/mse_loss.h>
#include <ATen/ops/mse_loss_backward.h>
#include <ATen/ops/ones.h>
#include <torch/csrc/autograd/utils/grad_layout_contract.h>
#include <torch/library.h>

#include <string_view>
#include <vector>

#include "two_layer_sgd_step.h"
#include "twolayer_ext/checks.h"
#include "twolayer_ext/op_handle.h"
#include "twolayer_ext/paths.h"

namespace twolayer_ext::composite {
namespace {

// at::Reduction values, without pulling in the header that defines them.
int64_t reduction_enum(std::string_view reduction) {
  if (reduction == "sum") return 2;
  if (reduction == "mean") return 1;
  TORCH_CHECK_VALUE(false, kSgdStepOp, ": reduction must be 'sum' or 'mean', but got '",
                    std::string(reduction), "'");
}

// The step's own arguments (the network's are checked by two_layer_forward).
int64_t check_target_and_reduction(const at::Tensor& x, const at::Tensor& y, const at::Tensor& w2,
                                   c10::string_view reduction) {
  check_same(kSgdStepOp, "y", y, "x", x);
  const auto out_shape = with_last_dim(x, w2.size(0));
  TORCH_CHECK_VALUE(y.sizes() == at::IntArrayRef(out_shape), kSgdStepOp,
                    ": y must have the network's output shape ", at::IntArrayRef(out_shape),
                    ", but got ", y.sizes());
  return reduction_enum(reduction);
}

}  // namespace

StepGrads ops_backward(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w1,
                       const OptTensor& b1, const at::Tensor& w2, const at::Tensor& hidden,
                       std::array<bool, 5> need, double /*lr*/) {
  return hidden.defined() ? op::two_layer_backward().call(grad_out, x, w1, w2, hidden, need)
                          : op::two_layer_backward_recompute().call(grad_out, x, w1, b1, w2, need);
}

int64_t check_sgd_step_args(const at::Tensor& x, const at::Tensor& y, const at::Tensor& w1,
                            const OptTensor& b1, const at::Tensor& w2, const OptTensor& b2,
                            c10::string_view reduction) {
  check_two_layer_args(kSgdStepOp, x, w1, b1, w2, b2, x.is_cuda() ? kCudaDtypes : kCpuDtypes);
  return check_target_and_reduction(x, y, w2, reduction);
}

// With `compute` (autocast), the network runs on copies of x and the parameters in that
// dtype and the loss in float32 (autocast's policy for mse_loss), and each gradient is cast
// back to its parameter's dtype before the update, as autograd's cast nodes and
// AccumulateGrad would do.
at::Tensor sgd_step(const at::Tensor& x, const at::Tensor& y, const at::Tensor& w1,
                    const OptTensor& b1, const at::Tensor& w2, const OptTensor& b2, double lr,
                    int64_t reduction, std::optional<at::ScalarType> compute,
                    StepBackward backward) {
  // The network runs on copies under autocast: a backward applying updates would lose them.
  TORCH_INTERNAL_ASSERT(!compute || backward == &ops_backward);
  const auto cast = [&](const at::Tensor& t) { return compute ? t.to(*compute) : t; };
  const auto cast_opt = [&](const OptTensor& t) { return present(t) ? OptTensor(cast(*t)) : t; };
  const at::Tensor xc = cast(x), w1c = cast(w1), w2c = cast(w2);
  const bool has_b1 = present(b1), has_b2 = present(b2);

  // The ops that TwoLayerNet's autograd node runs for these shapes (csrc/autograd/two_layer.cpp):
  // where the fused path recomputes the hidden activation in backward, the forward writes none.
  const bool recompute = backward_recomputes_hidden(xc, w1c, w2c);
  const OptTensor b1c = cast_opt(b1);
  at::Tensor out, hidden;
  if (recompute) {
    out = op::two_layer().call(xc, w1c, b1c, w2c, cast_opt(b2));
  } else {
    std::tie(out, hidden) = op::two_layer_forward().call(xc, w1c, b1c, w2c, cast_opt(b2));
  }
  const at::Tensor out_l = compute ? out.to(at::kFloat) : out;
  const at::Tensor y_l = compute ? y.to(at::kFloat) : y;
  at::Tensor loss = at::mse_loss(out_l, y_l, reduction);
  // d loss / d out exactly as loss.backward() computes it: mse_loss_backward
  // seeded with d loss / d loss = 1.
  at::Tensor grad_out = at::mse_loss_backward(at::ones({}, loss.options()), out_l, y_l, reduction);
  if (compute) grad_out = grad_out.to(*compute);
  const std::array<bool, 5> need{false, true, has_b1, true, has_b2};
  auto [gx, gw1, gb1, gw2, gb2] = backward(grad_out, xc, w1c, b1c, w2c, hidden, need, lr);
  // The gradients the backward has not applied itself.
  std::vector<at::Tensor> params, grads;
  const auto add = [&](const at::Tensor& p, const OptTensor& g) {
    if (g) params.push_back(p), grads.push_back(*g);
  };
  add(w1, gw1), add(w2, gw2);
  if (has_b1) add(*b1, gb1);
  if (has_b2) add(*b2, gb2);
  // Each gradient as AccumulateGrad would leave p.grad: in p's dtype and p's layout (a
  // transposed weight gets a transposed grad), so that the update below takes the same
  // ATen kernel path as SGD's: for 16-bit dtypes, add_ rounds differently on its
  // vectorised (same strides) and strided paths.
  for (size_t i = 0; i < params.size(); ++i) {
    if (grads[i].scalar_type() != params[i].scalar_type()) {
      grads[i] = at::empty_like(params[i]).copy_(grads[i]);
    } else if (!torch::autograd::utils::obeys_layout_contract(grads[i], params[i])) {
      grads[i] = torch::autograd::utils::clone_obey_contract(grads[i], params[i]);
    }
  }
  at::_foreach_add_(params, grads, -lr);  // torch.optim.SGD: p.add_(grad, alpha=-lr)
  return loss;
}

namespace {

// The op on every device (the CPU's kernel, csrc/cpu/two_layer_sgd_step.cpp, runs the same
// step with a backward of its own). Runs below autograd (csrc/autograd/two_layer_sgd_step.cpp
// records no graph and bumps the updated tensors' versions once the step is done).
at::Tensor two_layer_sgd_step(const at::Tensor& x, const at::Tensor& y, const at::Tensor& w1,
                              const OptTensor& b1, const at::Tensor& w2, const OptTensor& b2,
                              double lr, c10::string_view reduction) {
  const int64_t red = check_sgd_step_args(x, y, w1, b1, w2, b2, reduction);
  return sgd_step(x, y, w1, b1, w2, b2, lr, red, std::nullopt, &ops_backward);
}

// Under autocast: the mixed-precision step, as autograd would run it (the network
// in the autocast dtype, like two_layer_forward's autocast kernel; the loss in
// float32; the parameters updated in their own dtype). Below this key, the ops
// and the in-place update dispatch as usual, so ADInplaceOrView bumps the
// parameters' versions; no_grad, as torch.optim steps run.
template <c10::DeviceType kDevice, c10::DispatchKey kKey>
at::Tensor two_layer_sgd_step_autocast(const at::Tensor& x, const at::Tensor& y,
                                       const at::Tensor& w1, const OptTensor& b1,
                                       const at::Tensor& w2, const OptTensor& b2, double lr,
                                       c10::string_view reduction) {
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(kKey);
  const at::NoGradGuard no_grad;
  const int64_t red = check_target_and_reduction(x, y, w2, reduction);
  return sgd_step(x, y, w1, b1, w2, b2, lr, red, at::autocast::get_autocast_dtype(kDevice),
                  &ops_backward);
}

}  // namespace

TORCH_LIBRARY_IMPL(twolayer_ext, CompositeExplicitAutograd, m) {
  m.impl("two_layer_sgd_step", &two_layer_sgd_step);
}
TORCH_LIBRARY_IMPL(twolayer_ext, AutocastCPU, m) {
  m.impl("two_layer_sgd_step",
         &two_layer_sgd_step_autocast<c10::DeviceType::CPU, c10::DispatchKey::AutocastCPU>);
}
TORCH_LIBRARY_IMPL(twolayer_ext, AutocastCUDA, m) {
  m.impl("two_layer_sgd_step",
         &two_layer_sgd_step_autocast<c10::DeviceType::CUDA, c10::DispatchKey::AutocastCUDA>);
}

}  // namespace twolayer_ext::composite
