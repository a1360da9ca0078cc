// The ops in differentiable ATen ops (decompositions.h says where and why they run).
#include "decompositions.h"

#include <ATen/ops/arange.h>
#include <ATen/ops/bitwise_and.h>
#include <ATen/ops/bitwise_left_shift.h>
#include <ATen/ops/bitwise_right_shift.h>
#include <ATen/ops/constant_pad_nd.h>
#include <ATen/ops/le.h>
#include <ATen/ops/linear.h>
#include <ATen/ops/matmul.h>
#include <ATen/ops/relu.h>
#include <ATen/ops/threshold_backward.h>
#include <ATen/ops/where.h>

namespace twolayer_ext::decomposition {
namespace {

// Rows of t viewed as a matrix [prod(t.shape[:-1]), t.shape[-1]] (symbolic under tracing).
c10::SymInt rows_of(const at::Tensor& t) {
  c10::SymInt rows = 1;
  for (int64_t d = 0; d + 1 < t.dim(); ++d) rows *= t.sym_size(d);
  return rows;
}

at::Tensor as_matrix(const at::Tensor& t) {
  return t.reshape_symint({rows_of(t), t.sym_size(-1)});
}

// The packed mask of an output y [..., n]: bit j % 8 of byte j / 8 set where column j passed
// the ReLU (y > 0 or NaN), as the kernels and twolayer_ext/masks.py pack it.
at::Tensor pack_mask(const at::Tensor& y) {
  const int64_t n = y.size(-1), bytes = mask_bytes(n);
  const at::Tensor keep = at::le(as_matrix(y), 0).logical_not().to(at::kByte);
  const at::Tensor padded = at::constant_pad_nd(keep, {0, bytes * 8 - n});
  const at::Tensor place = at::bitwise_left_shift(1, at::arange(8, keep.options()));
  return padded.view_symint({padded.sym_size(0), bytes, 8}).mul(place).sum({-1}, false, at::kByte);
}

// The inverse: the mask of an output of shape `like` with `n` columns, as booleans.
at::Tensor unpack_mask(const at::Tensor& mask, int64_t n, const at::Tensor& like) {
  const at::Tensor bits = at::arange(8, mask.options());
  const at::Tensor unpacked = at::bitwise_and(at::bitwise_right_shift(mask.unsqueeze(-1), bits), 1);
  return unpacked.reshape_symint({mask.sym_size(0), mask.sym_size(1) * 8})
      .narrow(1, 0, n)
      .ne(0)
      .reshape_symint(like.sym_sizes());
}

// The gradients of (x, w, b) for y = x wᵀ + b, given grad_y. w's gradient comes in w's
// layout (column-major for a column-major w, as the kernels and torch's linear return it).
Grads3 linear_backward(const at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& w,
                       std::array<bool, 3> output_mask) {
  const at::Tensor g2 = as_matrix(grad_y);
  Grads3 grads;
  if (output_mask[0]) std::get<0>(grads) = at::matmul(grad_y, w);
  if (output_mask[1]) {
    std::get<1>(grads) = column_major(w) ? as_matrix(x).t().mm(g2).t() : g2.t().mm(as_matrix(x));
  }
  if (output_mask[2]) std::get<2>(grads) = g2.sum(0);
  return grads;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> linear_relu(const at::Tensor& x, const at::Tensor& weight,
                                               const OptTensor& bias) {
  at::Tensor y = linear_relu_output(x, weight, bias);
  return {y, pack_mask(y)};
}

at::Tensor linear_relu_output(const at::Tensor& x, const at::Tensor& weight,
                              const OptTensor& bias) {
  return at::relu(at::linear(x, weight, bias));
}

Grads3 linear_relu_backward(const at::Tensor& grad_y, const at::Tensor& x,
                            const at::Tensor& weight, const at::Tensor& mask,
                            std::array<bool, 3> output_mask) {
  const at::Tensor keep = unpack_mask(mask, weight.size(0), grad_y);
  // A select, not a product: a NaN or Inf gradient where the ReLU dropped the output gives 0.
  return linear_backward(at::where(keep, grad_y, 0), x, weight, output_mask);
}

std::tuple<at::Tensor, at::Tensor> two_layer_forward(const at::Tensor& x, const at::Tensor& w1,
                                                     const OptTensor& b1, const at::Tensor& w2,
                                                     const OptTensor& b2) {
  at::Tensor hidden = linear_relu_output(x, w1, b1);
  return {at::linear(hidden, w2, b2), hidden};
}

Grads3 relu_layer_backward(const at::Tensor& grad_h, const at::Tensor& h, const at::Tensor& x,
                           const at::Tensor& w, std::array<bool, 3> output_mask) {
  return linear_backward(relu_backward(grad_h, h), x, w, output_mask);
}

Grads5 two_layer_backward(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w1,
                          const at::Tensor& w2, const at::Tensor& hidden,
                          std::array<bool, 5> output_mask) {
  const Grads3 layer2 =
      linear_backward(grad_out, hidden, w2, {false, output_mask[3], output_mask[4]});
  Grads3 layer1;
  if (output_mask[0] || output_mask[1] || output_mask[2]) {
    layer1 = relu_layer_backward(at::matmul(grad_out, w2), hidden, x, w1,
                                 {output_mask[0], output_mask[1], output_mask[2]});
  }
  return {std::get<0>(layer1), std::get<1>(layer1), std::get<2>(layer1), std::get<1>(layer2),
          std::get<2>(layer2)};
}

Grads5 two_layer_backward_recompute(const at::Tensor& grad_out, const at::Tensor& x,
                                    const at::Tensor& w1, const OptTensor& b1,
                                    const at::Tensor& w2, std::array<bool, 5> output_mask) {
  return two_layer_backward(grad_out, x, w1, w2, linear_relu_output(x, w1, b1), output_mask);
}

at::Tensor relu(const at::Tensor& x) { return at::relu(x); }

at::Tensor relu_backward(const at::Tensor& grad_y, const at::Tensor& y) {
  return at::threshold_backward(grad_y, y, 0);
}

}  // namespace twolayer_ext::decomposition
