// Typed dispatcher handles, for C++ code that calls the extension's own ops
// (the autograd kernels, the composite training step). Light on purpose: no
// autograd headers.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <array>
#include <tuple>

#include "twolayer_ext/tensor_util.h"

namespace twolayer_ext {

// C++ signatures of the schemas in csrc/ops.cpp that other C++ code calls.
using TwoLayerForwardSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor& x,
                                                              const at::Tensor& w1,
                                                              const OptTensor& b1,
                                                              const at::Tensor& w2,
                                                              const OptTensor& b2);
using TwoLayerSig = at::Tensor(const at::Tensor& x, const at::Tensor& w1, const OptTensor& b1,
                               const at::Tensor& w2, const OptTensor& b2);
using TwoLayerBackwardSig = std::tuple<OptTensor, OptTensor, OptTensor, OptTensor, OptTensor>(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2,
    const at::Tensor& hidden, std::array<bool, 5> output_mask);

using TwoLayerBackwardRecomputeSig =
    std::tuple<OptTensor, OptTensor, OptTensor, OptTensor, OptTensor>(
        const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w1, const OptTensor& b1,
        const at::Tensor& w2, std::array<bool, 5> output_mask);

// The typed dispatcher handle of a registered op ("twolayer_ext::name").
// Callers keep it in a function-local static, so the schema is looked up once.
template <typename Signature>
c10::TypedOperatorHandle<Signature> op_handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

}  // namespace twolayer_ext
