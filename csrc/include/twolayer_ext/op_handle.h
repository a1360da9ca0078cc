// Typed dispatcher handles of the extension's own ops, for the C++ code that calls them
// (the autograd, vmap and composite kernels): each op's C++ signature is written here once,
// beside its accessor, and its schema (csrc/ops.cpp) is looked up on first use. Light on
// purpose: no autograd headers.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/string_view.h>

#include <array>
#include <tuple>

#include "twolayer_ext/tensor_util.h"

namespace twolayer_ext {

// C++ signatures of the schemas in csrc/ops.cpp.
using LinearReluSig = std::tuple<at::Tensor, at::Tensor>(const at::Tensor& x,
                                                         const at::Tensor& weight,
                                                         const OptTensor& bias);
using LinearReluOutputSig = at::Tensor(const at::Tensor& x, const at::Tensor& weight,
                                       const OptTensor& bias);
using LinearReluBackwardSig = std::tuple<OptTensor, OptTensor, OptTensor>(
    const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
    const at::Tensor& mask, std::array<bool, 3> output_mask);
using ReluSig = at::Tensor(const at::Tensor& x);
using ReluBackwardSig = at::Tensor(const at::Tensor& grad_y, const at::Tensor& y);
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
using TwoLayerSgdStepSig = at::Tensor(const at::Tensor& x, const at::Tensor& y,
                                      const at::Tensor& w1, const OptTensor& b1,
                                      const at::Tensor& w2, const OptTensor& b2, double lr,
                                      c10::string_view reduction);

// The typed dispatcher handle of a registered op ("twolayer_ext::name").
template <typename Signature>
c10::TypedOperatorHandle<Signature> op_handle(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

// op::name(): the handle of twolayer_ext::name, looked up once (a function-local static of an
// inline function: one per program).
namespace op {
#define TWOLAYER_EXT_OP_HANDLE(name, Signature)                                  \
  inline const c10::TypedOperatorHandle<Signature>& name() {                    \
    static const auto handle = op_handle<Signature>("twolayer_ext::" #name);    \
    return handle;                                                               \
  }
TWOLAYER_EXT_OP_HANDLE(linear_relu, LinearReluSig)
TWOLAYER_EXT_OP_HANDLE(linear_relu_output, LinearReluOutputSig)
TWOLAYER_EXT_OP_HANDLE(linear_relu_backward, LinearReluBackwardSig)
TWOLAYER_EXT_OP_HANDLE(relu, ReluSig)
TWOLAYER_EXT_OP_HANDLE(relu_backward, ReluBackwardSig)
TWOLAYER_EXT_OP_HANDLE(two_layer_forward, TwoLayerForwardSig)
TWOLAYER_EXT_OP_HANDLE(two_layer, TwoLayerSig)
TWOLAYER_EXT_OP_HANDLE(two_layer_backward, TwoLayerBackwardSig)
TWOLAYER_EXT_OP_HANDLE(two_layer_backward_recompute, TwoLayerBackwardRecomputeSig)
TWOLAYER_EXT_OP_HANDLE(two_layer_sgd_step, TwoLayerSgdStepSig)
#undef TWOLAYER_EXT_OP_HANDLE
}  // namespace op

}  // namespace twolayer_ext
