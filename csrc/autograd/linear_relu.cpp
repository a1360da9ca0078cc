// Autograd kernel for twolayer_ext::linear_relu (y, mask = linear_relu(x, weight, bias)).
//
// Saves x only if weight needs a gradient, weight only if x does, and the
// packed bit mask (1/8 byte per output) instead of the ReLU output that
// torch keeps. Backward is the single op linear_relu_backward, asked only for
// the gradients autograd needs.
#include <torch/library.h>

#include "common.h"

namespace twolayer_ext::autograd {
namespace {

using ForwardSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&,
                                                      const OptTensor&);
using BackwardSig = std::tuple<OptTensor, OptTensor, OptTensor>(const at::Tensor&,
                                                                const at::Tensor&,
                                                                const at::Tensor&,
                                                                const at::Tensor&,
                                                                std::array<bool, 3>);

const OpPair<ForwardSig, BackwardSig>& ops() {
  static const OpPair<ForwardSig, BackwardSig> pair("twolayer_ext::linear_relu",
                                                    "twolayer_ext::linear_relu_backward");
  return pair;
}

// Arguments: x, weight, bias (optional).
EdgeMap<3> edges(bool has_bias) { return EdgeMap<3>({true, true, has_bias}); }

class LinearReLUFunction : public torch::autograd::Function<LinearReLUFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& weight,
                               const OptTensor& bias) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    auto [y, mask] = ops().forward.call(x, weight, bias);
    const auto e = edges(present(bias));
    save_needed(ctx, {e.needs(ctx, 1), e.needs(ctx, 0), true}, {x, weight, mask});
    ctx->saved_data["has_bias"] = present(bias);
    ctx->mark_non_differentiable({mask});
    ctx->set_materialize_grads(false);  // mask never gets a gradient: don't build zeros for it
    return {y, mask};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor& grad_y = grads[0];
    if (!grad_y.defined()) return {at::Tensor(), at::Tensor(), at::Tensor()};
    const auto e = edges(ctx->saved_data["has_bias"].toBool());
    const variable_list s = saved_or_standins(ctx);  // x, weight, mask
    auto [gx, gw, gb] =
        call_backward_op(ops().backward, grad_y, s[0], s[1], s[2],
                         std::array<bool, 3>{e.needs(ctx, 0), e.needs(ctx, 1), e.needs(ctx, 2)});
    return {or_undefined(gx), or_undefined(gw), or_undefined(gb)};
  }
};

std::tuple<at::Tensor, at::Tensor> linear_relu_autograd(const at::Tensor& x,
                                                        const at::Tensor& weight,
                                                        const OptTensor& bias) {
  if (!should_record(x, weight, bias)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return ops().forward.call(x, weight, bias);
  }
  variable_list out = LinearReLUFunction::apply(x, weight, bias);
  return {out[0], out[1]};
}

// linear_relu_output (the output alone): with a graph, the node above (which keeps the
// mask); without one, the device kernel, which on the CPU builds no mask.
at::Tensor linear_relu_output_autograd(const at::Tensor& x, const at::Tensor& weight,
                                       const OptTensor& bias) {
  if (!should_record(x, weight, bias)) {
    static const auto output_only =
        op_handle<at::Tensor(const at::Tensor&, const at::Tensor&, const OptTensor&)>(
            "twolayer_ext::linear_relu_output");
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return output_only.call(x, weight, bias);
  }
  return LinearReLUFunction::apply(x, weight, bias)[0];
}

}  // namespace

TORCH_LIBRARY_IMPL(twolayer_ext, Autograd, m) {
  m.impl("linear_relu", &linear_relu_autograd);
  m.impl("linear_relu_output", &linear_relu_output_autograd);
}

}  // namespace twolayer_ext::autograd
