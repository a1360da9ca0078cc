// linear_relu_output on devices without a kernel of their own (CUDA): linear_relu's output,
// composed of that op (the CUDA kernel builds the mask anyway). The CPU kernel
// (csrc/cpu/linear_relu.cpp) builds no mask.
#include <ATen/core/Tensor.h>
#include <torch/library.h>

#include "twolayer_ext/op_handle.h"

namespace twolayer_ext::composite {
namespace {

at::Tensor linear_relu_output(const at::Tensor& x, const at::Tensor& weight,
                              const OptTensor& bias) {
  return std::get<0>(op::linear_relu().call(x, weight, bias));
}

}  // namespace

TORCH_LIBRARY_IMPL(twolayer_ext, CompositeExplicitAutograd, m) {
  m.impl("linear_relu_output", &linear_relu_output);
}

}  // namespace twolayer_ext::composite
