// CUDA implementations of the ops, callable from other CUDA op implementations
// (the two-layer ops compose them). Defined in csrc/cuda/*.cu.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <optional>
#include <tuple>

namespace twolayer_ext::cuda {

std::tuple<at::Tensor, at::Tensor> linear_relu(const at::Tensor& x, const at::Tensor& weight,
                                               const std::optional<at::Tensor>& bias);

std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>>
linear_relu_backward(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
                     const at::Tensor& mask, std::array<bool, 3> output_mask);

}  // namespace twolayer_ext::cuda
