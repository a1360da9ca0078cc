// Shared by the ops' autograd kernels (csrc/autograd/*.cpp).
//
// Each kernel is written the way PyTorch's generated VariableType kernels are, so that every
// autograd mode and torch.func transform treats the extension's ops as it treats at::linear:
// - it runs the op below autograd (the device kernel);
// - with a graph to record, it attaches a hand-written torch::autograd::Node, whose backward
//   calls the backward op for exactly the gradients autograd needs;
// - where an input carries a forward-mode tangent (torch.autograd.forward_ad, torch.func.jvp
//   and jacfwd), it sets the outputs' tangents with ATen ops, which are differentiable again.
// Not torch::autograd::Function: functorch refuses those (grad, vjp, jacrev, ...) and they
// have no jvp. Not Python (torch.library.register_autograd): tens of microseconds per call,
// as much as the tutorial's products (docs/ARCHITECTURE.md), and functorch refuses it too.
// The backward ops' own kernels run their decomposition (csrc/composite/decompositions.h)
// when their result is differentiated again, the kernel otherwise.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/ops/scalar_tensor.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/csrc/autograd/saved_variable.h>
#include <torch/version.h>

#include "twolayer_ext/op_handle.h"
#include "twolayer_ext/tensor_util.h"

namespace twolayer_ext::autograd {

using torch::autograd::Node;
using torch::autograd::SavedVariable;
using torch::autograd::variable_list;
using torch::dynamo::autograd::CompiledNodeArgs;  // declared by node.h, defined in
using torch::dynamo::autograd::SwapSavedVariables;  // torch/csrc/dynamo/compiled_autograd.h

inline bool requires_grad(const at::Tensor& t) { return t.defined() && t.requires_grad(); }
inline bool requires_grad(const OptTensor& t) { return t.has_value() && requires_grad(*t); }

// Does autograd have to record this call? If not, no node is built (inference,
// torch.no_grad(), a plain backward pass).
template <typename... Ts>
bool should_record(const Ts&... inputs) {
  return at::GradMode::is_enabled() && (requires_grad(inputs) || ...);
}

// Forward-mode AD. Level 0, as ATen's kernels read it: torch.func.jvp gives each of its
// levels its own wrapper tensors, on which level 0 is that transform's tangent.
inline bool has_tangent(const at::Tensor& t) { return torch::autograd::isFwGradDefined(t); }
inline bool has_tangent(const OptTensor& t) { return torch::autograd::isFwGradDefined(t); }

template <typename... Ts>
bool any_tangent(const Ts&... inputs) {
  return (has_tangent(inputs) || ...);
}

// A tensor's tangent, undefined where it has none.
inline at::Tensor tangent(const at::Tensor& t) {
  return has_tangent(t) ? t._fw_grad(0) : at::Tensor();
}
inline at::Tensor tangent(const OptTensor& t) { return present(t) ? tangent(*t) : at::Tensor(); }

// The value without its tangent, for use in tangent formulas (whose own results must not
// carry a tangent of the same level).
inline at::Tensor primal(const at::Tensor& t) { return has_tangent(t) ? t._fw_primal(0) : t; }

// The tangent of out = x wᵀ + b from those of its inputs: ẋ wᵀ + x ẇᵀ + ḃ, with x and w the
// primals; undefined if no input has a tangent. Shaped like `out`.
at::Tensor linear_tangent(const at::Tensor& x, const at::Tensor& x_dot, const at::Tensor& w,
                          const at::Tensor& w_dot, const at::Tensor& b_dot,
                          const at::Tensor& out);

// The tangent of relu's output y from that of its input (undefined stays undefined): passed
// where y > 0 or NaN, as torch's relu (threshold_backward(ẋ, y, 0)).
at::Tensor relu_tangent(const at::Tensor& pre_dot, const at::Tensor& y);

// Sets t's tangent (if `tangent` is defined).
void set_tangent(const at::Tensor& t, const at::Tensor& tangent);

// A tensor argument of a backward op whose values backward may not read: kept (as autograd
// saves tensors: version-checked, freed after backward) where they are read, else only a
// stand-in of the same shape, dtype and device, since the backward ops check every argument's
// shape: one zero expanded (0 bytes), or for a column-major matrix (tensor_util.h) one zero
// column expanded, whose strides (1, 0) still tell the ops the layout to return a weight's
// gradient in. This is torch's own rule for linear (x is kept only when the weight needs
// a gradient, and the other way round), so backward keeps no more memory than torch does.
// A leaf that requires grad (a parameter) stands in for itself, unversioned like the zeros:
// the graph's AccumulateGrad node keeps it alive anyway, and building the zeros costs three
// dispatcher calls per step (docs/BENCHMARKS.md, "The drop-in step: fewer dispatcher
// calls").
class MaybeSaved {
 public:
  void save(const at::Tensor& t, bool keep_values, bool is_output = false) {
    if (keep_values) {
      saved_ = SavedVariable(t, is_output);
      return;
    }
    if (t.requires_grad() && t.is_leaf()) {
      standin_ = t;
      return;
    }
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    if (column_major(t)) {
      standin_ = at::zeros_symint({t.sym_size(0), 1}, t.options()).expand_symint(t.sym_sizes());
    } else {
      standin_ = at::scalar_tensor(0, t.options()).expand_symint(t.sym_sizes());
    }
  }
  at::Tensor unpack(const c10::intrusive_ptr<Node>& node) const {
    return standin_.defined() ? standin_ : saved_.unpack(node);
  }
  void release() { saved_.reset_data(); }

  // Compiled autograd (see compiled_apply below).
  void collect(CompiledNodeArgs& args) const;
  void before(SwapSavedVariables& saved);
  void after(SwapSavedVariables& saved);

 private:
  SavedVariable saved_;
  at::Tensor standin_;
};

inline at::Tensor or_undefined(const OptTensor& t) { return t.has_value() ? *t : at::Tensor(); }

// Runs torch.autograd.graph's node-creation hooks on a node whose outputs and saved tensors
// are all set, as PyTorch's own kernels do (torch 2.14 and newer; earlier torch has none).
inline void announce(const c10::intrusive_ptr<Node>& node) {
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 14)
  torch::autograd::fire_node_creation_hooks(node);
#else
  (void)node;
#endif
}

// Which of a node's next edges (the forward op's inputs) need a gradient in this backward.
std::vector<bool> needed_outputs(const Node& node);

// Compiled autograd (torch._dynamo.compiled_autograd) traces a backward graph without running
// the nodes' formulas: each node's apply_with_saved hands it a plain function of the incoming
// gradients and the node's packed state (`fn`, which unpacks `packed` in the order it was
// packed), which compiled autograd calls in its graph, as it does for PyTorch's own nodes.
using PackedFunction = variable_list (*)(const variable_list& grads,
                                         const std::vector<c10::IValue>& packed);
variable_list compiled_apply(const Node& node, SwapSavedVariables& saved, PackedFunction fn,
                             const std::vector<c10::IValue>& packed, const variable_list& grads);

}  // namespace twolayer_ext::autograd
