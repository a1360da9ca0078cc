// Autograd kernel for twolayer_ext::two_layer_forward (out, hidden), the
// tutorial's whole network: one graph node, one backward op call.
//
// Saves what torch keeps for nn.Sequential(Linear, ReLU, Linear): hidden
// (grad_w2 reads it and the ReLU mask is re-derived from it), w2 if anything
// in layer 1 needs a gradient, x only if w1 needs one, w1 only if x does.
#include <torch/library.h>

#include "common.h"

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
    ctx->mark_non_differentiable({hidden});
    ctx->set_materialize_grads(false);  // hidden never gets a gradient: don't build zeros for it
    return {out, hidden};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor& grad_out = grads[0];
    if (!grad_out.defined()) return variable_list(5);
    const auto e = edges(ctx->saved_data["has_b1"].toBool(), ctx->saved_data["has_b2"].toBool());
    const variable_list s = saved_or_standins(ctx);  // x, w1, w2, hidden
    std::array<bool, 5> need{};
    for (size_t i = 0; i < 5; ++i) need[i] = e.needs(ctx, i);
    auto [gx, gw1, gb1, gw2, gb2] =
        call_backward_op(ops().backward, grad_out, s[0], s[1], s[2], s[3], need);
    return {or_undefined(gx), or_undefined(gw1), or_undefined(gb1), or_undefined(gw2),
            or_undefined(gb2)};
  }
};

std::tuple<at::Tensor, at::Tensor> two_layer_forward_autograd(const at::Tensor& x,
                                                              const at::Tensor& w1, const OptTensor& b1,
                                                              const at::Tensor& w2,
                                                              const OptTensor& b2) {
  if (!should_record(x, w1, b1, w2, b2)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return ops().forward.call(x, w1, b1, w2, b2);
  }
  variable_list out = TwoLayerFunction::apply(x, w1, b1, w2, b2);
  return {out[0], out[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(twolayer_ext, Autograd, m) {
  m.impl("two_layer_forward", &two_layer_forward_autograd);
}

}  // namespace twolayer_ext::autograd
