// Autograd kernels of twolayer_ext::relu and its backward op relu_backward (common.h says
// how they are written and why). The node saves the output (as torch.relu does); backward
// and the tangent are relu_backward's rule (torch's threshold_backward): passed where y > 0
// or y is NaN.
#include <torch/csrc/dynamo/compiled_autograd.h>
#include <torch/library.h>

#include <mutex>

#include "../composite/decompositions.h"
#include "common.h"

namespace twolayer_ext::autograd {
namespace {

// grad_fn of y. Inputs: grad_y. Outputs: x.
struct ReluBackward final : torch::autograd::TraceableFunction {
  SavedVariable y;

  std::string name() const override { return "twolayer_ext::ReluBackward"; }

  static variable_list run(const variable_list& grads, const at::Tensor& y,
                           const std::vector<bool>& need) {
    if (!grads[0].defined() || !need[0]) return variable_list(1);
    return {op::relu_backward().call(grads[0], y)};
  }

  variable_list apply(variable_list&& grads) override {
    std::lock_guard<std::mutex> lock(mutex_);
    return run(grads, y.unpack(getptr()), needed_outputs(*this));
  }

  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    y.reset_data();
  }

  // Compiled autograd (common.h: compiled_apply).
  void compiled_args(CompiledNodeArgs& args) const override {
    args.collect(y, /*is_output=*/true);
  }

  static variable_list apply_packed(const variable_list& grads,
                                    const std::vector<c10::IValue>& packed) {
    torch::dynamo::autograd::PackedArgs args(packed);
    const auto need = args.unpack<std::vector<bool>>();
    return run(grads, args.unpack<at::Tensor>(), need);
  }

  variable_list apply_with_saved(const variable_list& grads, SwapSavedVariables& saved) override {
    saved.before(y);
    torch::dynamo::autograd::PackedArgs args;
    args.pack(needed_outputs(*this));
    args.pack(y.unpack(getptr()));
    variable_list result = compiled_apply(*this, saved, &apply_packed, args.vec(), grads);
    saved.after(y);
    return result;
  }
};

at::Tensor relu_autograd(const at::Tensor& x) {
  const bool record = should_record(x);
  const bool forward_ad = has_tangent(x);
  at::Tensor y;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    y = op::relu().call(x);
  }
  if (record) {
    auto node = c10::make_intrusive<ReluBackward>();
    node->set_next_edges(torch::autograd::collect_next_edges(x));
    torch::autograd::set_history(y, node);
    if (forward_ad) set_tangent(y, relu_tangent(tangent(x), y));
    node->y = SavedVariable(y, /*is_output=*/true);
    announce(node);
  } else if (forward_ad) {
    set_tangent(y, relu_tangent(tangent(x), y));
  }
  return y;
}

// The backward op: its kernel, unless its result is differentiated again (common.h).
at::Tensor relu_backward_autograd(const at::Tensor& grad_y, const at::Tensor& y) {
  if (should_record(grad_y, y) || any_tangent(grad_y, y)) {
    return decomposition::relu_backward(grad_y, y);
  }
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op::relu_backward().call(grad_y, y);
}

}  // namespace

TORCH_LIBRARY_IMPL(twolayer_ext, Autograd, m) {
  m.impl("relu", &relu_autograd);
  m.impl("relu_backward", &relu_backward_autograd);
}

}  // namespace twolayer_ext::autograd
