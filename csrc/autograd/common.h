// Shared helpers for the ops' C++ autograd kernels (csrc/autograd/*.cpp).
//
// Why C++: a Python autograd formula (torch.library.register_autograd) costs
// tens of microseconds per call and again per backward, which at the
// tutorial's sizes is as much as the GEMMs. These kernels are registered for
// the Autograd dispatch key, so a training step runs no Python below the
// module's forward call.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/zeros.h>
#include <torch/csrc/autograd/custom_function.h>

#include <initializer_list>
#include <optional>
#include <string>
#include <vector>

#include "twolayer_ext/op_handle.h"

namespace twolayer_ext::autograd {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The forward op of an autograd kernel and its backward op. Each kernel keeps
// one in a function-local static, so the schemas are looked up once.
template <typename ForwardSig, typename BackwardSig>
struct OpPair {
  c10::TypedOperatorHandle<ForwardSig> forward;
  c10::TypedOperatorHandle<BackwardSig> backward;
  OpPair(const char* forward_name, const char* backward_name)
      : forward(op_handle<ForwardSig>(forward_name)),
        backward(op_handle<BackwardSig>(backward_name)) {}
};

inline bool requires_grad(const at::Tensor& t) { return t.defined() && t.requires_grad(); }
inline bool requires_grad(const OptTensor& t) { return t.has_value() && requires_grad(*t); }

// Does autograd have to record this call? If not, the op runs below autograd
// directly and no graph node is built (inference, torch.no_grad()).
template <typename... Ts>
bool should_record(const Ts&... inputs) {
  return at::GradMode::is_enabled() && (requires_grad(inputs) || ...);
}

// Autograd numbers its edges over the tensor arguments that were given: an
// absent optional (bias=None) has no edge. Maps argument positions to edges.
template <size_t N>
struct EdgeMap {
  std::array<int, N> edge{};
  explicit EdgeMap(std::array<bool, N> given) {
    int next = 0;
    for (size_t i = 0; i < N; ++i) edge[i] = given[i] ? next++ : -1;
  }
  // Whether argument `arg` needs a gradient in the current forward or backward pass.
  bool needs(const AutogradContext* ctx, size_t arg) const {
    return edge[arg] >= 0 && ctx->needs_input_grad(static_cast<size_t>(edge[arg]));
  }
};

// Saves each tensor whose values backward reads (keep[i]); for the others keeps
// only a 0-byte stand-in with the same shape, dtype and device (a broadcast
// scalar), because the backward ops check the shapes of all their arguments.
// This is torch's own rule (x is saved only when the weight needs a gradient,
// and the other way round), so backward keeps no more memory than torch does.
inline void save_needed(AutogradContext* ctx, std::initializer_list<bool> keep,
                        std::initializer_list<at::Tensor> tensors) {
  variable_list to_save;
  int i = 0;
  auto k = keep.begin();
  for (const at::Tensor& t : tensors) {
    to_save.push_back(*k ? t : at::Tensor());
    if (!*k) {
      ctx->saved_data["standin" + std::to_string(i)] =
          at::zeros({}, t.options()).expand_symint(t.sym_sizes());
    }
    ++k;
    ++i;
  }
  ctx->save_for_backward(std::move(to_save));
}

// The tensors saved by save_needed, with stand-ins where a tensor was not kept.
inline variable_list saved_or_standins(AutogradContext* ctx) {
  variable_list saved = ctx->get_saved_variables();
  for (size_t i = 0; i < saved.size(); ++i) {
    if (!saved[i].defined()) saved[i] = ctx->saved_data["standin" + std::to_string(i)].toTensor();
  }
  return saved;
}

// Calls a backward op. In a plain backward pass (grad mode off) it runs below
// autograd; with create_graph=True it goes through the op's own autograd
// formula (double backward, registered in Python, twolayer_ext/ops.py).
template <typename Signature, typename... Args>
auto call_backward_op(const c10::TypedOperatorHandle<Signature>& op, Args&&... args) {
  if (at::GradMode::is_enabled()) return op.call(std::forward<Args>(args)...);
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  return op.call(std::forward<Args>(args)...);
}

inline at::Tensor or_undefined(const OptTensor& t) { return t.has_value() ? *t : at::Tensor(); }

}  // namespace twolayer_ext::autograd
