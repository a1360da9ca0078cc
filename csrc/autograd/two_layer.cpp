// Autograd kernels of the tutorial's whole network: twolayer_ext::two_layer_forward (out,
// hidden), two_layer (out alone) and their backward ops two_layer_backward and
// two_layer_backward_recompute (common.h says how they are written and why).
//
// two_layer_forward's node saves what torch keeps for nn.Sequential(Linear, ReLU, Linear):
// hidden (grad_w2 reads it and the ReLU mask is re-derived from it), w2 if anything in layer
// 1 needs a gradient, x only if w1 needs one, w1 only if x does. hidden is a differentiable
// output: nothing reads its gradient in a first-order backward of `out`, but double backward
// does (two_layer_backward reads hidden, so the derivative of a gradient has a term through
// hidden, which flows back into x, w1 and b1 through this node), and so does any loss that
// uses hidden itself.
//
// Tangents: ḣ = mask ⊙ (ẋ W1ᵀ + x Ẇ1ᵀ + ḃ1), the mask read off hidden, and
// ȯut = ḣ W2ᵀ + hidden Ẇ2ᵀ + ḃ2.
#include <torch/csrc/dynamo/compiled_autograd.h>
#include <torch/library.h>

#include <mutex>

#include "../composite/decompositions.h"
#include "common.h"
#include "twolayer_ext/paths.h"

namespace twolayer_ext::autograd {
namespace {

using decomposition::Grads5;

variable_list to_variables(const Grads5& g) {
  return {or_undefined(std::get<0>(g)), or_undefined(std::get<1>(g)), or_undefined(std::get<2>(g)),
          or_undefined(std::get<3>(g)), or_undefined(std::get<4>(g))};
}

std::array<bool, 5> as_array(const std::vector<bool>& need) {
  return {need[0], need[1], need[2], need[3], need[4]};
}

// grad_fn of two_layer_forward's (out, hidden). Inputs: grad_out, grad_hidden. Outputs
// (next edges): x, w1, b1, w2, b2 (empty edges for absent biases).
struct TwoLayerBackward final : torch::autograd::TraceableFunction {
  MaybeSaved x, w1, w2;
  SavedVariable hidden;

  std::string name() const override { return "twolayer_ext::TwoLayerBackward"; }

  static variable_list run(const variable_list& grads, const at::Tensor& x, const at::Tensor& w1,
                           const at::Tensor& w2, const at::Tensor& hidden,
                           const std::vector<bool>& need) {
    const at::Tensor &grad_out = grads[0], &grad_hidden = grads[1];
    variable_list result(5);
    if (grad_out.defined()) {
      result = to_variables(
          op::two_layer_backward().call(grad_out, x, w1, w2, hidden, as_array(need)));
    }
    if (grad_hidden.defined() && (need[0] || need[1] || need[2])) {
      // A gradient of hidden itself reaches layer 1 through its ReLU (plain ATen ops: this
      // only happens in double backward or where a loss reads hidden).
      const auto layer1 = decomposition::relu_layer_backward(grad_hidden, hidden, x, w1,
                                                             {need[0], need[1], need[2]});
      const auto add = [&](size_t i, const OptTensor& g) {
        if (g.has_value()) result[i] = result[i].defined() ? result[i].add(*g) : *g;
      };
      add(0, std::get<0>(layer1));
      add(1, std::get<1>(layer1));
      add(2, std::get<2>(layer1));
    }
    return result;
  }

  variable_list apply(variable_list&& grads) override {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto self = getptr();
    return run(grads, x.unpack(self), w1.unpack(self), w2.unpack(self), hidden.unpack(self),
               needed_outputs(*this));
  }

  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    x.release();
    w1.release();
    w2.release();
    hidden.reset_data();
  }

  // Compiled autograd (common.h: compiled_apply).
  void compiled_args(CompiledNodeArgs& args) const override {
    x.collect(args);
    w1.collect(args);
    w2.collect(args);
    args.collect(hidden, /*is_output=*/true);
  }

  static variable_list apply_packed(const variable_list& grads,
                                    const std::vector<c10::IValue>& packed) {
    torch::dynamo::autograd::PackedArgs args(packed);
    const auto need = args.unpack<std::vector<bool>>();
    const auto x = args.unpack<at::Tensor>(), w1 = args.unpack<at::Tensor>();
    const auto w2 = args.unpack<at::Tensor>();
    return run(grads, x, w1, w2, args.unpack<at::Tensor>(), need);
  }

  variable_list apply_with_saved(const variable_list& grads, SwapSavedVariables& saved) override {
    for (MaybeSaved* v : {&x, &w1, &w2}) v->before(saved);
    saved.before(hidden);
    const auto self = getptr();
    torch::dynamo::autograd::PackedArgs args;
    args.pack(needed_outputs(*this));
    for (MaybeSaved* v : {&x, &w1, &w2}) args.pack(v->unpack(self));
    args.pack(hidden.unpack(self));
    variable_list result = compiled_apply(*this, saved, &apply_packed, args.vec(), grads);
    for (MaybeSaved* v : {&x, &w1, &w2}) v->after(saved);
    saved.after(hidden);
    return result;
  }
};

// grad_fn of two_layer's output where backward recomputes the hidden activation
// (backward_recomputes_hidden, paths.h: the fused path, where that is cheaper than keeping it). It
// saves the inputs only, so a training step keeps no rows x hidden tensor. Inputs: grad_out.
// Outputs: x, w1, b1, w2, b2.
struct TwoLayerRecomputeBackward final : torch::autograd::TraceableFunction {
  SavedVariable x, w1, b1, w2;

  std::string name() const override { return "twolayer_ext::TwoLayerRecomputeBackward"; }

  // With create_graph the op's own autograd kernel runs its decomposition, which recomputes
  // hidden with differentiable ATen ops: double backward sees hidden as the function of x,
  // w1 and b1 that it is.
  static variable_list run(const variable_list& grads, const at::Tensor& x, const at::Tensor& w1,
                           const at::Tensor& b1, const at::Tensor& w2,
                           const std::vector<bool>& need) {
    if (!grads[0].defined()) return variable_list(5);
    const OptTensor bias = b1.defined() ? OptTensor(b1) : std::nullopt;
    return to_variables(
        op::two_layer_backward_recompute().call(grads[0], x, w1, bias, w2, as_array(need)));
  }

  variable_list apply(variable_list&& grads) override {
    std::lock_guard<std::mutex> lock(mutex_);
    const auto self = getptr();
    return run(grads, x.unpack(self), w1.unpack(self), b1.unpack(self), w2.unpack(self),
               needed_outputs(*this));
  }

  void release_variables() override {
    std::lock_guard<std::mutex> lock(mutex_);
    for (SavedVariable* v : {&x, &w1, &b1, &w2}) v->reset_data();
  }

  // Compiled autograd (common.h: compiled_apply).
  void compiled_args(CompiledNodeArgs& args) const override {
    for (const SavedVariable* v : {&x, &w1, &b1, &w2}) args.collect(*v, /*is_output=*/false);
  }

  static variable_list apply_packed(const variable_list& grads,
                                    const std::vector<c10::IValue>& packed) {
    torch::dynamo::autograd::PackedArgs args(packed);
    const auto need = args.unpack<std::vector<bool>>();
    const auto x = args.unpack<at::Tensor>(), w1 = args.unpack<at::Tensor>();
    const auto b1 = args.unpack<at::Tensor>();
    return run(grads, x, w1, b1, args.unpack<at::Tensor>(), need);
  }

  variable_list apply_with_saved(const variable_list& grads, SwapSavedVariables& saved) override {
    for (SavedVariable* v : {&x, &w1, &b1, &w2}) saved.before(*v);
    const auto self = getptr();
    torch::dynamo::autograd::PackedArgs args;
    args.pack(needed_outputs(*this));
    for (SavedVariable* v : {&x, &w1, &b1, &w2}) args.pack(v->unpack(self));
    variable_list result = compiled_apply(*this, saved, &apply_packed, args.vec(), grads);
    for (SavedVariable* v : {&x, &w1, &b1, &w2}) saved.after(*v);
    return result;
  }
};

std::tuple<at::Tensor, at::Tensor> two_layer_forward_autograd(const at::Tensor& x,
                                                              const at::Tensor& w1,
                                                              const OptTensor& b1,
                                                              const at::Tensor& w2,
                                                              const OptTensor& b2) {
  const bool record = should_record(x, w1, b1, w2, b2);
  const bool forward_ad = any_tangent(x, w1, b1, w2, b2);
  at::Tensor out, hidden;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    std::tie(out, hidden) = op::two_layer_forward().call(x, w1, b1, w2, b2);
  }
  c10::intrusive_ptr<TwoLayerBackward> node;
  if (record) {
    node = c10::make_intrusive<TwoLayerBackward>();
    node->set_next_edges(torch::autograd::collect_next_edges(x, w1, b1, w2, b2));
    torch::autograd::set_history(variable_list{out, hidden}, node);
  }
  if (forward_ad) {
    const at::Tensor hidden_dot = relu_tangent(
        linear_tangent(primal(x), tangent(x), primal(w1), tangent(w1), tangent(b1), hidden),
        hidden);
    const at::Tensor out_dot =
        linear_tangent(hidden, hidden_dot, primal(w2), tangent(w2), tangent(b2), out);
    set_tangent(hidden, hidden_dot);
    set_tangent(out, out_dot);
  }
  if (record) {
    const bool need_x = node->should_compute_output(0), need_w1 = node->should_compute_output(1);
    const bool layer1 = need_x || need_w1 || node->should_compute_output(2);
    node->x.save(x, need_w1);
    node->w1.save(w1, need_x);
    node->w2.save(w2, layer1);
    node->hidden = SavedVariable(hidden, /*is_output=*/true);
    announce(node);
  }
  return {out, hidden};
}

// two_layer (the output alone): without a graph or tangents, the device kernel (which on the
// fused path writes no hidden activation); with a graph, the recompute node where the fused
// path recomputes hidden in backward, else two_layer_forward's node (which keeps hidden);
// with tangents, two_layer_forward's too, whose tangent formula reads hidden.
at::Tensor two_layer_autograd(const at::Tensor& x, const at::Tensor& w1, const OptTensor& b1,
                              const at::Tensor& w2, const OptTensor& b2) {
  const bool record = should_record(x, w1, b1, w2, b2);
  const bool forward_ad = any_tangent(x, w1, b1, w2, b2);
  if (!record && !forward_ad) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return op::two_layer().call(x, w1, b1, w2, b2);
  }
  if (forward_ad || !backward_recomputes_hidden(x, w1, w2)) {
    return std::get<0>(two_layer_forward_autograd(x, w1, b1, w2, b2));
  }
  at::Tensor out;
  {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    out = op::two_layer().call(x, w1, b1, w2, b2);
  }
  auto node = c10::make_intrusive<TwoLayerRecomputeBackward>();
  node->set_next_edges(torch::autograd::collect_next_edges(x, w1, b1, w2, b2));
  torch::autograd::set_history(out, node);
  node->x = SavedVariable(x, /*is_output=*/false);
  node->w1 = SavedVariable(w1, /*is_output=*/false);
  node->b1 = SavedVariable(b1, /*is_output=*/false);
  node->w2 = SavedVariable(w2, /*is_output=*/false);
  announce(node);
  return out;
}

// The backward ops: their kernels, unless their results are differentiated again (common.h).
Grads5 two_layer_backward_autograd(const at::Tensor& grad_out, const at::Tensor& x,
                                   const at::Tensor& w1, const at::Tensor& w2,
                                   const at::Tensor& hidden, std::array<bool, 5> output_mask) {
  if (should_record(grad_out, x, w1, w2, hidden) || any_tangent(grad_out, x, w1, w2, hidden)) {
    return decomposition::two_layer_backward(grad_out, x, w1, w2, hidden, output_mask);
  }
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op::two_layer_backward().call(grad_out, x, w1, w2, hidden, output_mask);
}

Grads5 two_layer_backward_recompute_autograd(const at::Tensor& grad_out, const at::Tensor& x,
                                             const at::Tensor& w1, const OptTensor& b1,
                                             const at::Tensor& w2,
                                             std::array<bool, 5> output_mask) {
  if (should_record(grad_out, x, w1, b1, w2) || any_tangent(grad_out, x, w1, b1, w2)) {
    return decomposition::two_layer_backward_recompute(grad_out, x, w1, b1, w2, output_mask);
  }
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op::two_layer_backward_recompute().call(grad_out, x, w1, b1, w2, output_mask);
}

}  // namespace

TORCH_LIBRARY_IMPL(twolayer_ext, Autograd, m) {
  m.impl("two_layer_forward", &two_layer_forward_autograd);
  m.impl("two_layer", &two_layer_autograd);
  m.impl("two_layer_backward", &two_layer_backward_autograd);
  m.impl("two_layer_backward_recompute", &two_layer_backward_recompute_autograd);
}

}  // namespace twolayer_ext::autograd
