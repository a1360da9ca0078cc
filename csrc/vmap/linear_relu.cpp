// vmap kernels of twolayer_ext::linear_relu, linear_relu_output and linear_relu_backward
// (common.h). With x batched and the weight and bias shared (per-sample gradients, Jacobians
// with respect to the input), the samples are more rows for one kernel call.
#include <torch/library.h>

#include "../composite/decompositions.h"
#include "common.h"

namespace twolayer_ext::vmap {
namespace {

// Whether only x is batched at this call's level: then the kernel takes the batch as rows.
bool only_x_batched(const at::Tensor& x, const at::Tensor& weight, const OptTensor& bias,
                    int64_t level) {
  return batched(x, level) && !batched(weight, level) && !batched(bias, level);
}

std::tuple<at::Tensor, at::Tensor> linear_relu_batched(const at::Tensor& x,
                                                       const at::Tensor& weight,
                                                       const OptTensor& bias) {
  const int64_t level = vmap_level(x, weight, bias);
  if (!only_x_batched(x, weight, bias, level)) return decomposition::linear_relu(x, weight, bias);
  const at::Tensor xb = batch_first(x, level);
  auto [y, mask] = below_vmap([&] { return op::linear_relu().call(xb, weight, bias); });
  return {rebatch(y, level), rebatch(mask_per_sample(mask, xb), level)};
}

at::Tensor linear_relu_output_batched(const at::Tensor& x, const at::Tensor& weight,
                                      const OptTensor& bias) {
  const int64_t level = vmap_level(x, weight, bias);
  if (!only_x_batched(x, weight, bias, level)) {
    return decomposition::linear_relu_output(x, weight, bias);
  }
  const at::Tensor xb = batch_first(x, level);
  return rebatch(below_vmap([&] { return op::linear_relu_output().call(xb, weight, bias); }),
                 level);
}

}  // namespace

TORCH_LIBRARY_IMPL(twolayer_ext, FuncTorchBatched, m) {
  m.impl("linear_relu", &linear_relu_batched);
  m.impl("linear_relu_output", &linear_relu_output_batched);
  m.impl("linear_relu_backward", &decomposition::linear_relu_backward);
}

TORCH_LIBRARY_IMPL(twolayer_ext, Batched, m) {
  m.impl("linear_relu", &decomposition::linear_relu);
  m.impl("linear_relu_output", &decomposition::linear_relu_output);
  m.impl("linear_relu_backward", &decomposition::linear_relu_backward);
}

}  // namespace twolayer_ext::vmap
