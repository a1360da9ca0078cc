// Autograd kernel for twolayer_ext::two_layer_forward (out, hidden), the
// tutorial's whole network: one graph node, one backward op call.
//
// Saves what torch keeps for nn.Sequential(Linear, ReLU, Linear): hidden
// (grad_w2 reads it and the ReLU mask is re-derived from it), w2 if anything
// in layer 1 needs a gradient, x only if w1 needs one, w1 only if x does.
//
// hidden is a differentiable output. Nothing reads its gradient in a first-order
// backward, but double backward does: two_layer_backward reads hidden, so the
// derivative of a gradient (a gradient penalty, a Hessian-vector product) has a
// term through hidden, and that term has to flow back into x, w1 and b1 through
// this node.
#include <ATen/ops/le.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/where.h>
#include <torch/library.h>

#include "common.h"
#include "twolayer_ext/fused_mlp.h"

namespace twolayer_ext::autograd {
namespace {

const OpPair<TwoLayerForwardSig, TwoLayerBackwardSig>& ops() {
  static const OpPair<TwoLayerForwardSig, TwoLayerBackwardSig> pair(
      "twolayer_ext::two_layer_forward", "twolayer_ext::two_layer_backward");
  return pair;
}

// Arguments: x, w1, b1 (optional), w2, b2 (optional).
EdgeMap<5> edges(bool has_b1, bool has_b2) {
  return EdgeMap<5>({true, true, has_b1, true, has_b2});
}

class TwoLayerFunction : public torch::autograd::Function<TwoLayerFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w1,
                               const OptTensor& b1, const at::Tensor& w2, const OptTensor& b2) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [out, hidden] = ops().forward.call(x, w1, b1, w2, b2);
    const auto e = edges(present(b1), present(b2));
    const bool need_x = e.needs(ctx, 0), need_w1 = e.needs(ctx, 1), need_b1 = e.needs(ctx, 2);
    save_needed(ctx, {need_w1, need_x, need_x || need_w1 || need_b1, true}, {x, w1, w2, hidden});
    ctx->saved_data["has_b1"] = present(b1);
    ctx->saved_data["has_b2"] = present(b2);
    ctx->set_materialize_grads(false);  // don't build zeros for the gradient that is not used
    return {out, hidden};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor &grad_out = grads[0], &grad_hidden = grads[1];
    const auto e = edges(ctx->saved_data["has_b1"].toBool(), ctx->saved_data["has_b2"].toBool());
    const variable_list s = saved_or_standins(ctx);  // x, w1, w2, hidden
    std::array<bool, 5> need{};
    for (size_t i = 0; i < 5; ++i) need[i] = e.needs(ctx, i);
    variable_list result(5);
    if (grad_out.defined()) {
      auto [gx, gw1, gb1, gw2, gb2] =
          call_backward_op(ops().backward, grad_out, s[0], s[1], s[2], s[3], need);
      result = {or_undefined(gx), or_undefined(gw1), or_undefined(gb1), or_undefined(gw2),
                or_undefined(gb2)};
    }
    if (grad_hidden.defined()) add_hidden_grad(result, grad_hidden, s[0], s[1], s[3], need);
    return result;
  }

 private:
  // Layer 1's gradients from a gradient of its output, hidden = relu(x w1ᵀ + b1)
  // (double backward only, so plain differentiable ATen ops): the ReLU passes it
  // where hidden > 0 or NaN (threshold_backward's rule).
  static void add_hidden_grad(variable_list& result, const at::Tensor& grad_hidden,
                              const at::Tensor& x, const at::Tensor& w1, const at::Tensor& hidden,
                              const std::array<bool, 5>& need) {
    const at::Tensor gh =
        at::where(at::le(hidden, 0), at::zeros({}, grad_hidden.options()), grad_hidden);
    const at::Tensor gh2 = gh.reshape({-1, w1.size(0)});
    const auto add = [&](size_t i, const at::Tensor& g) {
      result[i] = result[i].defined() ? result[i].add(g) : g;
    };
    if (need[0]) add(0, at::matmul(gh, w1));
    if (need[1]) add(1, gh2.t().mm(x.reshape({-1, w1.size(1)})));
    if (need[2]) add(2, gh2.sum(0));
  }
};

std::tuple<at::Tensor, at::Tensor> two_layer_forward_autograd(const at::Tensor& x,
                                                              const at::Tensor& w1,
                                                              const OptTensor& b1,
                                                              const at::Tensor& w2,
                                                              const OptTensor& b2) {
  if (!should_record(x, w1, b1, w2, b2)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return ops().forward.call(x, w1, b1, w2, b2);
  }
  variable_list out = TwoLayerFunction::apply(x, w1, b1, w2, b2);
  return {out[0], out[1]};
}

const c10::TypedOperatorHandle<TwoLayerSig>& output_only() {
  static const auto op = op_handle<TwoLayerSig>("twolayer_ext::two_layer");
  return op;
}

// The network without its hidden activation saved: backward recomputes it
// (two_layer_backward_recompute), where the fused path makes that cheaper than keeping it
// (recompute_hidden, fused_mlp.h). It saves the inputs only, so a training step keeps no
// rows x hidden tensor. With create_graph, backward recomputes hidden through
// two_layer_forward's own node instead, so that double backward sees hidden as the
// function of x, w1 and b1 that it is.
class TwoLayerRecomputeFunction : public torch::autograd::Function<TwoLayerRecomputeFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& w1,
                            const OptTensor& b1, const at::Tensor& w2, const OptTensor& b2) {
    at::Tensor out;
    {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      out = output_only().call(x, w1, b1, w2, b2);
    }
    ctx->save_for_backward({x, w1, present(b1) ? *b1 : at::Tensor(), w2});
    ctx->saved_data["has_b1"] = present(b1);
    ctx->saved_data["has_b2"] = present(b2);
    return out;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto recompute =
        op_handle<TwoLayerBackwardRecomputeSig>("twolayer_ext::two_layer_backward_recompute");
    const auto e = edges(ctx->saved_data["has_b1"].toBool(), ctx->saved_data["has_b2"].toBool());
    const variable_list s = ctx->get_saved_variables();  // x, w1, b1 (or undefined), w2
    const OptTensor b1 = s[2].defined() ? OptTensor(s[2]) : std::nullopt;
    std::array<bool, 5> need{};
    for (size_t i = 0; i < 5; ++i) need[i] = e.needs(ctx, i);
    OptTensor gx, gw1, gb1, gw2, gb2;
    if (at::GradMode::is_enabled()) {  // create_graph: every step differentiable
      const at::Tensor hidden = std::get<1>(ops().forward.call(s[0], s[1], b1, s[3], std::nullopt));
      std::tie(gx, gw1, gb1, gw2, gb2) =
          ops().backward.call(grads[0], s[0], s[1], s[3], hidden, need);
    } else {
      at::AutoDispatchBelowADInplaceOrView below_autograd;
      std::tie(gx, gw1, gb1, gw2, gb2) = recompute.call(grads[0], s[0], s[1], b1, s[3], need);
    }
    return {or_undefined(gx), or_undefined(gw1), or_undefined(gb1), or_undefined(gw2),
            or_undefined(gb2)};
  }
};

// two_layer (the output alone): without a graph, the device kernel (which on the fused
// path writes no hidden activation); with one, the node above where the fused path
// recomputes hidden in backward, else two_layer_forward's node (which keeps hidden).
at::Tensor two_layer_autograd(const at::Tensor& x, const at::Tensor& w1, const OptTensor& b1,
                              const at::Tensor& w2, const OptTensor& b2) {
  if (!should_record(x, w1, b1, w2, b2)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return output_only().call(x, w1, b1, w2, b2);
  }
  if (recompute_hidden(x, w1, w2)) {
    return TwoLayerRecomputeFunction::apply(x, w1, b1, w2, b2);
  }
  return TwoLayerFunction::apply(x, w1, b1, w2, b2)[0];
}

}  // namespace

TORCH_LIBRARY_IMPL(twolayer_ext, Autograd, m) {
  m.impl("two_layer_forward", &two_layer_forward_autograd);
  m.impl("two_layer", &two_layer_autograd);
}

}  // namespace twolayer_ext::autograd
