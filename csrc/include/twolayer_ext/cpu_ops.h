// CPU implementations of the ops, callable from other CPU kernels (the
// two-layer ops compose them). Defined in csrc/cpu/*.cpp.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <optional>
#include <tuple>

namespace twolayer_ext::cpu {

std::tuple<at::Tensor, at::Tensor> linear_relu(const at::Tensor& x, const at::Tensor& weight,
                                               const std::optional<at::Tensor>& bias);

std::tuple<std::optional<at::Tensor>, std::optional<at::Tensor>, std::optional<at::Tensor>>
linear_relu_backward(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight,
                     const at::Tensor& mask, std::array<bool, 3> output_mask);

// The packed ReLU mask of a ReLU output y [..., n]: [prod(y.shape[:-1]), ceil(n/8)] uint8.
at::Tensor pack_relu_mask(const at::Tensor& y);

}  // namespace twolayer_ext::cpu
