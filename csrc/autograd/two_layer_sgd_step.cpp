// Autograd kernel for twolayer_ext::two_layer_sgd_step: the step is not
// differentiable, so this records no graph. It does what ATen's in-place ops
// get from their autograd and ADInplaceOrView kernels and a custom op would
// otherwise not: it bumps the version counter of every tensor it updates
// (so a graph that saved an old weight fails loudly in backward instead of
// reading the new one), and returns a loss that does not require grad.
// Where a derivative is being taken (forward-mode tangents, torch.func's grad and jvp
// transforms) it raises instead of dropping that derivative; its vmap kernel
// (csrc/vmap/two_layer.cpp) raises too.
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/grad_mode.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/library.h>

#include <utility>
#include <vector>

#include "twolayer_ext/op_handle.h"

namespace twolayer_ext::autograd {
namespace {

constexpr const char* kOp = "twolayer_ext::two_layer_sgd_step";

// Like torch.optim, the step may update leaf parameters that require grad, in
// any grad mode. With grad mode on, a non-leaf that requires grad has history
// that an in-place update would silently invalidate (torch's own in-place ops
// refuse it too); under no_grad, as for them, it is allowed.
void check_updatable(const char* name, const at::Tensor& t) {
  TORCH_CHECK(!at::GradMode::is_enabled() || !t.requires_grad() || t.is_leaf(), kOp, ": ", name,
              " is updated in place, so it must be a leaf tensor (a parameter), but it "
              "requires grad and was computed by autograd (it has a grad_fn)");
}

// The step's loss and updates are not differentiable: a transform that differentiates
// through it would get a zero derivative with no error.
void check_not_differentiated(const at::Tensor& x, const at::Tensor& y, const at::Tensor& w1,
                              const OptTensor& b1, const at::Tensor& w2, const OptTensor& b2) {
  using torch::autograd::isFwGradDefined;
  TORCH_CHECK(!(isFwGradDefined(x) || isFwGradDefined(y) || isFwGradDefined(w1) ||
                isFwGradDefined(b1) || isFwGradDefined(w2) || isFwGradDefined(b2)),
              kOp, " is not differentiable, so it does not support forward-mode AD "
              "(torch.autograd.forward_ad, torch.func.jvp / jacfwd): an input has a tangent. "
              "Take derivatives of twolayer_ext.two_layer_mlp (or TwoLayerNet's forward) instead");
  // torch.func's grad and jvp transforms wrap the tensors they differentiate.
  const auto wrapped = [](const at::Tensor& t) {
    return t.defined() && t.key_set().has(c10::DispatchKey::FuncTorchGradWrapper);
  };
  const auto wrapped_opt = [&](const OptTensor& t) { return t.has_value() && wrapped(*t); };
  TORCH_CHECK(!(wrapped(x) || wrapped(y) || wrapped(w1) || wrapped_opt(b1) || wrapped(w2) ||
                wrapped_opt(b2)),
              kOp, " is not differentiable and updates its parameters in place, so it cannot "
              "run on the tensors of torch.func's grad, vjp, jacrev, hessian, jvp or jacfwd "
              "transforms. Take derivatives of twolayer_ext.two_layer_mlp (or TwoLayerNet's "
              "forward) instead");
  // The loss is not connected to x and y, whatever the grad mode (the Python API runs the
  // step under no_grad): a derivative with respect to them, such as
  // torch.autograd.functional.jacobian takes, would be zero.
  TORCH_CHECK(!x.requires_grad() && !y.requires_grad(), kOp,
              " is not differentiable, but ", x.requires_grad() ? "x" : "y",
              " requires grad: the loss it returns is not connected to it. Detach it, or take "
              "derivatives of a loss on twolayer_ext.two_layer_mlp (or TwoLayerNet's forward)");
}

at::Tensor two_layer_sgd_step_autograd(const at::Tensor& x, const at::Tensor& y,
                                       const at::Tensor& w1, const OptTensor& b1,
                                       const at::Tensor& w2, const OptTensor& b2, double lr,
                                       c10::string_view reduction) {
  check_not_differentiated(x, y, w1, b1, w2, b2);
  std::vector<std::pair<const char*, at::Tensor>> updated{{"w1", w1}, {"w2", w2}};
  if (present(b1)) updated.emplace_back("b1", *b1);
  if (present(b2)) updated.emplace_back("b2", *b2);
  for (const auto& [name, t] : updated) check_updatable(name, t);
  at::Tensor loss;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    loss = op::two_layer_sgd_step().call(x, y, w1, b1, w2, b2, lr, reduction);
  }
  for (const auto& [name, t] : updated) t.unsafeGetTensorImpl()->bump_version();
  return loss;
}

}  // namespace

TORCH_LIBRARY_IMPL(twolayer_ext, Autograd, m) {
  m.impl("two_layer_sgd_step", &two_layer_sgd_step_autograd);
}

}  // namespace twolayer_ext::autograd
