// Autograd kernel for twolayer_ext::relu: saves the output (as torch.relu
// does); backward is relu_backward (torch's threshold_backward semantics).
#include <torch/library.h>

#include "common.h"

namespace twolayer_ext::autograd {
namespace {

using UnarySig = at::Tensor(const at::Tensor&);
using BackwardSig = at::Tensor(const at::Tensor&, const at::Tensor&);

const OpPair<UnarySig, BackwardSig>& ops() {
  static const OpPair<UnarySig, BackwardSig> pair("twolayer_ext::relu",
                                                  "twolayer_ext::relu_backward");
  return pair;
}

class ReLUFunction : public torch::autograd::Function<ReLUFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    at::Tensor y = ops().forward.call(x);
    ctx->save_for_backward({y});
    return y;
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    const at::Tensor y = ctx->get_saved_variables()[0];
    return {call_backward_op(ops().backward, grads[0], y)};
  }
};

at::Tensor relu_autograd(const at::Tensor& x) {
  if (!should_record(x)) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    return ops().forward.call(x);
  }
  return ReLUFunction::apply(x);
}

}  // namespace

TORCH_LIBRARY_IMPL(twolayer_ext, Autograd, m) { m.impl("relu", &relu_autograd); }

}  // namespace twolayer_ext::autograd
