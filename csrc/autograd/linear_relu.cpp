// Autograd kernels of twolayer_ext::linear_relu (y, mask = linear_relu(x, weight, bias)), of
// linear_relu_output (y alone) and of their backward op linear_relu_backward (common.h says
// how they are written and why).
//
// The node saves x only if weight needs a gradient, weight only if x does, and the packed
// bit mask (1/8 byte per output) instead of the ReLU output that torch keeps. Backward is the
// single op linear_relu_backward, asked only for the gradients autograd needs. The tangent is
// mask ⊙ (ẋ Wᵀ + x Ẇᵀ + ḃ), the mask read off y.
#include <torch/csrc/dynamo/compiled_autograd.h>
#include <torch/library.h>

#include <mutex>

#include "../composite/decompositions.h"
#include "common.h"

namespace twolayer_ext::autograd {
namespace {

// grad_fn of y. Inputs: grad_y. Outputs (next edges): x, weight, bias (an empty edge if
// bias is None).
struct LinearReluBackward final : torch::autograd::TraceableFunction {
  MaybeSaved x, weight;
  SavedVariable mask;

  std::string name() const override { return "twolayer_ext::LinearReluBackward"; }

  // The gradients of x, weight and bias that `need` asks for, by one backward op call.
  static variable_list run(const variable_list& grads, const at::Tensor& x,
                           const at::Tensor& weight, const at::Tensor& mask,
                           const std::vector<bool>& need) {
    if (!grads[0].defined() || !(need[0] || need[1] || need[2])) return variable_list(3);
    const std::array<bool, 3> mask_out{need[0], need[1], need[2]};
    auto [gx, gw, gb] = op::linear_relu_backward().call(grads[0], x, weight, mask, mask_out);
    return {or_undefined(gx), or_undefined(gw), or_undefined(gb)};
  }

  variable_list apply(variable_list&& grads) override {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto self = getptr();
    return run(grads, x.unpack(self), weight.unpack(self), mask.unpack(self),
               needed_outputs(*this));
  }

  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    x.release();
    weight.release();
    mask.reset_data();
  }

  // Compiled autograd (common.h: compiled_apply).
  void compiled_args(CompiledNodeArgs& args) const override {
    x.collect(args);
    weight.collect(args);
    args.collect(mask, /*is_output=*/true);
  }

  static variable_list apply_packed(const variable_list& grads,
                                    const std::vector<c10::IValue>& packed) {
    torch::dynamo::autograd::PackedArgs args(packed);
    const auto need = args.unpack<std::vector<bool>>();
    const auto x = args.unpack<at::Tensor>(), weight = args.unpack<at::Tensor>();
    return run(grads, x, weight, args.unpack<at::Tensor>(), need);
  }

  variable_list apply_with_saved(const variable_list& grads, SwapSavedVariables& saved) override {
    x.before(saved);
    weight.before(saved);
    saved.before(mask);
    const auto self = getptr();
    torch::dynamo::autograd::PackedArgs args;
    args.pack(needed_outputs(*this));
    args.pack(x.unpack(self));
    args.pack(weight.unpack(self));
    args.pack(mask.unpack(self));
    variable_list result = compiled_apply(*this, saved, &apply_packed, args.vec(), grads);
    x.after(saved);
    weight.after(saved);
    saved.after(mask);
    return result;
  }
};

// y and, if `with_mask` or a graph is recorded, the mask (undefined otherwise: without a
// graph the CPU kernel of linear_relu_output builds none).
std::tuple<at::Tensor, at::Tensor> linear_relu_autograd_impl(const at::Tensor& x,
                                                             const at::Tensor& weight,
                                                             const OptTensor& bias,
                                                             bool with_mask) {
  const bool record = should_record(x, weight, bias);
  const bool forward_ad = any_tangent(x, weight, bias);
  at::Tensor y, mask;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    if (record || with_mask) {
      std::tie(y, mask) = op::linear_relu().call(x, weight, bias);
    } else {
      y = op::linear_relu_output().call(x, weight, bias);
    }
  }
  c10::intrusive_ptr<LinearReluBackward> node;
  if (record) {
    node = c10::make_intrusive<LinearReluBackward>();
    node->set_next_edges(torch::autograd::collect_next_edges(x, weight, bias));
    torch::autograd::set_history(y, node);
  }
  if (forward_ad) {
    const at::Tensor pre_dot = linear_tangent(primal(x), tangent(x), primal(weight),
                                              tangent(weight), tangent(bias), y);
    set_tangent(y, relu_tangent(pre_dot, y));
  }
  if (record) {
    node->x.save(x, node->should_compute_output(1));
    node->weight.save(weight, node->should_compute_output(0));
    node->mask = SavedVariable(mask, /*is_output=*/true);
    announce(node);
  }
  return {y, mask};
}

std::tuple<at::Tensor, at::Tensor> linear_relu_autograd(const at::Tensor& x,
                                                        const at::Tensor& weight,
                                                        const OptTensor& bias) {
  return linear_relu_autograd_impl(x, weight, bias, /*with_mask=*/true);
}

at::Tensor linear_relu_output_autograd(const at::Tensor& x, const at::Tensor& weight,
                                       const OptTensor& bias) {
  return std::get<0>(linear_relu_autograd_impl(x, weight, bias, /*with_mask=*/false));
}

// The backward op: its kernel, unless its result is differentiated again (create_graph,
// a tangent, or a torch.func transform above it): then its decomposition.
std::tuple<OptTensor, OptTensor, OptTensor> linear_relu_backward_autograd(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& mask, std::array<bool, 3> output_mask) {
  if (should_record(grad_y, x, weight) || any_tangent(grad_y, x, weight)) {
    return decomposition::linear_relu_backward(grad_y, x, weight, mask, output_mask);
  }
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op::linear_relu_backward().call(grad_y, x, weight, mask, output_mask);
}

}  // namespace

TORCH_LIBRARY_IMPL(twolayer_ext, Autograd, m) {
  m.impl("linear_relu", &linear_relu_autograd);
  m.impl("linear_relu_output", &linear_relu_output_autograd);
  m.impl("linear_relu_backward", &linear_relu_backward_autograd);
}

}  // namespace twolayer_ext::autograd
