// Every differentiable op and backward op written in differentiable ATen ops: the form that
// every autograd mode and every torch.func transform already understands, because ATen's own
// ops carry backward and forward-mode formulas and batching rules.
//
// Used where the extension's kernels cannot serve the call (csrc/autograd/, csrc/vmap/):
// - a backward op whose result is itself differentiated (double backward, hessian, jvp of a
//   gradient): the kernel's result would be a constant to autograd;
// - vmap where the kernel cannot take the batch as more rows (batched weights, or per-sample
//   weight gradients), and the legacy vmap of gradcheck and torch.autograd.functional.
// Each has its op's semantics (docs in csrc/ops.cpp): relu'(0) = 0, a NaN output passes its
// gradient (threshold_backward's rule), and the packed mask layout of twolayer_ext/masks.py.
// Shapes are read as logical shapes, so the functions work on vmap's batched tensors as given.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <tuple>

#include "twolayer_ext/tensor_util.h"

namespace twolayer_ext::decomposition {

using Grads3 = std::tuple<OptTensor, OptTensor, OptTensor>;
using Grads5 = std::tuple<OptTensor, OptTensor, OptTensor, OptTensor, OptTensor>;

// linear_relu: (relu(x weightᵀ + bias), packed ReLU mask [rows, ceil(out / 8)]).
std::tuple<at::Tensor, at::Tensor> linear_relu(const at::Tensor& x, const at::Tensor& weight,
                                               const OptTensor& bias);
// linear_relu_output: relu(x weightᵀ + bias).
at::Tensor linear_relu_output(const at::Tensor& x, const at::Tensor& weight,
                              const OptTensor& bias);
// linear_relu_backward: the requested gradients of (x, weight, bias).
Grads3 linear_relu_backward(const at::Tensor& grad_y, const at::Tensor& x,
                            const at::Tensor& weight, const at::Tensor& mask,
                            std::array<bool, 3> output_mask);
// two_layer_forward: (relu(x w1ᵀ + b1) w2ᵀ + b2, hidden).
std::tuple<at::Tensor, at::Tensor> two_layer_forward(const at::Tensor& x, const at::Tensor& w1,
                                                     const OptTensor& b1, const at::Tensor& w2,
                                                     const OptTensor& b2);
// two_layer_backward: the requested gradients of (x, w1, b1, w2, b2).
Grads5 two_layer_backward(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w1,
                          const at::Tensor& w2, const at::Tensor& hidden,
                          std::array<bool, 5> output_mask);
// two_layer_backward_recompute: two_layer_backward on hidden = relu(x w1ᵀ + b1).
Grads5 two_layer_backward_recompute(const at::Tensor& grad_out, const at::Tensor& x,
                                    const at::Tensor& w1, const OptTensor& b1,
                                    const at::Tensor& w2, std::array<bool, 5> output_mask);
// relu: torch.relu.
at::Tensor relu(const at::Tensor& x);
// relu_backward: grad_y where y > 0 or y is NaN, else 0.
at::Tensor relu_backward(const at::Tensor& grad_y, const at::Tensor& y);

// The gradients of (x, w, b) for a layer h = relu(x wᵀ + b), given grad_h and h: what
// two_layer_backward does for layer 1, and what the hidden activation's own gradient adds.
Grads3 relu_layer_backward(const at::Tensor& grad_h, const at::Tensor& h, const at::Tensor& x,
                           const at::Tensor& w, std::array<bool, 3> output_mask);

}  // namespace twolayer_ext::decomposition
