// The tangent formulas shared by the autograd kernels (common.h).
#include "common.h"

#include <ATen/ops/linear.h>
#include <ATen/ops/threshold_backward.h>
#include <torch/csrc/dynamo/compiled_autograd.h>

#include <mutex>
#include <string>
#include <unordered_set>

namespace twolayer_ext::autograd {

at::Tensor linear_tangent(const at::Tensor& x, const at::Tensor& x_dot, const at::Tensor& w,
                          const at::Tensor& w_dot, const at::Tensor& b_dot,
                          const at::Tensor& out) {
  at::Tensor sum;
  const auto add = [&](const at::Tensor& term) { sum = sum.defined() ? sum.add(term) : term; };
  if (x_dot.defined()) add(at::linear(x_dot, w));
  if (w_dot.defined()) add(at::linear(x, w_dot));
  if (b_dot.defined()) add(b_dot);
  if (sum.defined() && sum.sym_sizes() != out.sym_sizes()) {
    sum = sum.expand_symint(out.sym_sizes());  // only ḃ: a row, for every row
  }
  return sum;
}

at::Tensor relu_tangent(const at::Tensor& pre_dot, const at::Tensor& y) {
  return pre_dot.defined() ? at::threshold_backward(pre_dot, y, 0) : pre_dot;
}

void set_tangent(const at::Tensor& t, const at::Tensor& tangent) {
  if (tangent.defined()) t._set_fw_grad(tangent, /*level=*/0, /*is_inplace_op=*/false);
}

void MaybeSaved::collect(CompiledNodeArgs& args) const {
  args.collect(saved_, /*is_output=*/false);
  args.collect(standin_);
}

void MaybeSaved::before(SwapSavedVariables& saved) {
  saved.before(saved_);
  saved.before(standin_);
}

void MaybeSaved::after(SwapSavedVariables& saved) {
  saved.after(saved_);
  saved.after(standin_);
}

std::vector<bool> needed_outputs(const Node& node) {
  std::vector<bool> need(node.num_outputs());
  for (size_t i = 0; i < need.size(); ++i) need[i] = node.task_should_compute_output(i);
  return need;
}

variable_list compiled_apply(const Node& node, SwapSavedVariables& saved, PackedFunction fn,
                             const std::vector<c10::IValue>& packed, const variable_list& grads) {
  namespace ca = torch::dynamo::autograd;
  std::vector<at::TypePtr> schema;
  schema.reserve(packed.size());
  for (const c10::IValue& value : packed) {
    schema.push_back(value.isTensor() ? c10::TensorType::get() : value.type());
  }
  const auto& compiler = ca::getPyCompilerInterface();
  // Bound once per node type and process, as PyTorch's generated nodes do (compiled
  // autograd keeps the functions in one process-wide namespace, by name).
  const std::string name = node.name();
  {
    static std::mutex mutex;
    static std::unordered_set<std::string> bound;
    std::lock_guard<std::mutex> lock(mutex);
    if (bound.insert(name).second) {
      compiler->bind_function(saved.get_py_compiler(), name, fn, std::move(schema));
    }
  }
  const c10::IValue output_metadata =
      ca::IValuePacker<std::vector<std::optional<torch::autograd::InputMetadata>>>::pack(
          ca::get_input_metadata(node.next_edges()));
  return compiler->call_function(saved.get_py_compiler(), "apply_functional", name, grads,
                                 packed, output_metadata);
}

}  // namespace twolayer_ext::autograd
