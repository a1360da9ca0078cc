// Autograd kernel for twolayer_ext::two_layer_sgd_step: the step is not
// differentiable, so this records no graph. It does what ATen's in-place ops
// get from their autograd and ADInplaceOrView kernels and a custom op would
// otherwise not: it bumps the version counter of every tensor it updates
// (so a graph that saved an old weight fails loudly in backward instead of
// reading the new one), and returns a loss that does not require grad.
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <torch/library.h>

#include <utility>
#include <vector>

#include "twolayer_ext/op_handle.h"

namespace twolayer_ext::autograd {
namespace {

constexpr const char* kOp = "twolayer_ext::two_layer_sgd_step";

using StepSig = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                           const OptTensor&, const at::Tensor&, const OptTensor&, double,
                           c10::string_view);

// Like torch.optim, the step may update leaf parameters that require grad, in
// any grad mode. With grad mode on, a non-leaf that requires grad has history
// that an in-place update would silently invalidate (torch's own in-place ops
// refuse it too); under no_grad, as for them, it is allowed.
void check_updatable(const char* name, const at::Tensor& t) {
  TORCH_CHECK(!at::GradMode::is_enabled() || !t.requires_grad() || t.is_leaf(), kOp, ": ", name,
              " is updated in place, so it must be a leaf tensor (a parameter), but it "
              "requires grad and was computed by autograd (it has a grad_fn)");
}

at::Tensor two_layer_sgd_step_autograd(const at::Tensor& x, const at::Tensor& y,
                                       const at::Tensor& w1, const OptTensor& b1,
                                       const at::Tensor& w2, const OptTensor& b2, double lr,
                                       c10::string_view reduction) {
  std::vector<std::pair<const char*, at::Tensor>> updated{{"w1", w1}, {"w2", w2}};
  if (present(b1)) updated.emplace_back("b1", *b1);
  if (present(b2)) updated.emplace_back("b2", *b2);
  for (const auto& [name, t] : updated) check_updatable(name, t);
  static const auto step = op_handle<StepSig>(kOp);
  at::Tensor loss;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    loss = step.call(x, y, w1, b1, w2, b2, lr, reduction);
  }
  for (const auto& [name, t] : updated) t.unsafeGetTensorImpl()->bump_version();
  return loss;
}

}  // namespace

TORCH_LIBRARY_IMPL(twolayer_ext, Autograd, m) {
  m.impl("two_layer_sgd_step", &two_layer_sgd_step_autograd);
}

}  // namespace twolayer_ext::autograd
