// twolayer_ext::two_layer_sgd_step's implementation (two_layer_sgd_step.cpp), shared with
// the CPU kernel (csrc/cpu/two_layer_sgd_step.cpp), which runs the same step with a backward
// of its own: one that applies W1's update inside W1's gradient product.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <array>
#include <optional>
#include <tuple>

#include "twolayer_ext/tensor_util.h"

namespace twolayer_ext::composite {

constexpr const char* kSgdStepOp = "twolayer_ext::two_layer_sgd_step";

// The gradients (x, w1, b1, w2, b2) of a step, as two_layer_backward returns them, except
// that a parameter's comes back empty where the backward has already applied it
// (p.add_(grad, alpha=-lr), bitwise).
using StepGrads = std::tuple<OptTensor, OptTensor, OptTensor, OptTensor, OptTensor>;

// A step's backward: grad_out and the forward's hidden activation (undefined where the
// backward recomputes it), the gradients asked for in `need`, and the step's lr.
using StepBackward = StepGrads (*)(const at::Tensor& grad_out, const at::Tensor& x,
                                   const at::Tensor& w1, const OptTensor& b1,
                                   const at::Tensor& w2, const at::Tensor& hidden,
                                   std::array<bool, 5> need, double lr);

// The backward every device runs: the two-layer backward ops, which apply nothing.
StepGrads ops_backward(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w1,
                       const OptTensor& b1, const at::Tensor& w2, const at::Tensor& hidden,
                       std::array<bool, 5> need, double lr);

// Checks the op's arguments; returns the reduction as sgd_step takes it.
int64_t check_sgd_step_args(const at::Tensor& x, const at::Tensor& y, const at::Tensor& w1,
                            const OptTensor& b1, const at::Tensor& w2, const OptTensor& b2,
                            c10::string_view reduction);

// The step: forward, MSE loss, `backward`, and SGD's update of every gradient the backward
// has not applied; returns the loss. With `compute` (autocast), the network runs in that
// dtype on copies of x and the parameters.
at::Tensor sgd_step(const at::Tensor& x, const at::Tensor& y, const at::Tensor& w1,
                    const OptTensor& b1, const at::Tensor& w2, const OptTensor& b2, double lr,
                    int64_t reduction, std::optional<at::ScalarType> compute,
                    StepBackward backward);

}  // namespace twolayer_ext::composite
