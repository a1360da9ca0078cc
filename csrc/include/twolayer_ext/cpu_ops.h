// CPU implementations of the ops, callable from other CPU kernels (the
// two-layer ops compose them). Defined in csrc/cpu/*.cpp.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <optional>
#include <tuple>

#include "twolayer_ext/paths.h"
#include "twolayer_ext/tensor_util.h"

namespace twolayer_ext::cpu {

// Whether this CPU multiplies `dtype` natively: bfloat16 with AVX512_BF16 or AMX-BF16,
// float16 with AVX512_FP16 or AMX-FP16 (as ATen detects them); float32 and float64: true.
bool native_16bit_products(at::ScalarType dtype);

// Matrix products (csrc/cpu/matmul.cpp): the extension's float32 kernels (AVX-512
// or AVX2) where they apply (cpu_gemm.h), ATen's BLAS otherwise. 16-bit operands on a CPU
// without native 16-bit products are multiplied in float32 and each output rounded once.
// All operands 2-D, any strides.
// out[m, n] = x[m, k] @ w[n, k].T + bias[n] (bias optional); out contiguous. With relu, out
// = relu(that), as torch.relu: in the float32 kernel's stores where it runs (no pass over out),
// else by relu_rows_.
void linear_out(at::Tensor& out, const at::Tensor& x, const at::Tensor& w, const OptTensor& bias,
                bool relu = false);
// The same into a new contiguous tensor.
at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const OptTensor& bias,
                  bool relu = false);
// a[t, m].T @ b[t, n] -> [m, n]  (grad_weight = grad.T @ x)
at::Tensor mm_tn(const at::Tensor& a, const at::Tensor& b);
// A weight's gradient mm_tn(grad[t, n], x[t, m]) -> [n, m], in the weight's own layout
// (column_major in tensor_util.h: then computed as mm_tn(x, grad).t()).
at::Tensor weight_grad(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight);
// SGD's update with that gradient, weight.add_(weight_grad(grad, x, weight), alpha), bitwise,
// without the gradient ever stored: where the float32 kernels run the product
// (gemm_bcast_add_f32) and the weight is a contiguous tensor of its own; returns false, and
// changes nothing, elsewhere.
bool add_weight_grad_(const at::Tensor& weight, const at::Tensor& grad, const at::Tensor& x,
                      double alpha);
// A layer's three gradients (grad_x, grad_weight, grad_bias) = (grad @ weight, its
// weight_grad(grad, x, weight), grad's column sums in row order) from one call of
// linear_grads_f32 (cpu_gemm.h), for a float32 layer with a row-major weight small enough for
// it (use_linear_grads); nullopt elsewhere.
std::optional<std::tuple<at::Tensor, at::Tensor, at::Tensor>> small_linear_grads(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight);
// a[m, t] @ b[t, n] -> [m, n]  (grad_x = grad @ weight)
at::Tensor mm_nn(const at::Tensor& a, const at::Tensor& b);
// mm_nn into out [m, n] (any strides), plus bias[n] when given; with relu, through relu as
// linear_out (out then contiguous).
void mm_nn_out(at::Tensor& out, const at::Tensor& a, const at::Tensor& b,
               const OptTensor& bias = std::nullopt, bool relu = false);

// y = relu(y) in place, on a contiguous 2-D tensor (linear_relu's epilogue without the mask).
void relu_rows_(at::Tensor& y);

std::tuple<at::Tensor, at::Tensor> linear_relu(const at::Tensor& x, const at::Tensor& weight,
                                               const OptTensor& bias);

// linear_relu's output alone, without building the packed mask (for callers that
// keep the output itself for backward, such as two_layer_forward).
at::Tensor linear_relu_output(const at::Tensor& x, const at::Tensor& weight, const OptTensor& bias);

std::tuple<OptTensor, OptTensor, OptTensor> linear_relu_backward(const at::Tensor& grad_y,
                                                                 const at::Tensor& x,
                                                                 const at::Tensor& weight,
                                                                 const at::Tensor& mask,
                                                                 std::array<bool, 3> output_mask);

// linear_relu_backward with the ReLU mask read from the layer's output y (kept
// where y > 0 or NaN) instead of a packed mask. Arguments are not checked (the
// caller has), and grad_y is overwritten with the masked gradient: for callers
// that own grad_y (two_layer_backward), this saves a pass and a buffer. With `sgd_lr`,
// the weight's gradient is applied where add_weight_grad_ can (weight -= lr * grad), and
// then comes back empty.
std::tuple<OptTensor, OptTensor, OptTensor> linear_relu_backward_from_output_(
    at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& y,
    std::array<bool, 3> output_mask, std::optional<double> sgd_lr = std::nullopt);

// two_layer_backward's CPU kernel with SGD's update of w1 (w1 -= lr * grad_w1) applied within
// the gradient's product where add_weight_grad_ can; then grad_w1 comes back empty. For
// two_layer_sgd_step's CPU kernel (csrc/cpu/two_layer_sgd_step.cpp).
std::tuple<OptTensor, OptTensor, OptTensor, OptTensor, OptTensor> two_layer_backward_sgd(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2,
    const at::Tensor& hidden, std::array<bool, 5> output_mask, double lr);

// The whole network block by block, each block's hidden activation kept in cache between
// the products (csrc/cpu/two_layer_fused.cpp, which says when it pays).
bool use_fused_mlp(int64_t rows, int64_t in_features, int64_t hidden_features, int64_t out_features,
                   at::ScalarType dtype, MlpPass pass);
// out [rows, out] (contiguous) = relu(x w1ᵀ + b1) w2ᵀ + b2 for a 2-D x [rows, in]; the hidden
// activation is also written to *hidden [rows, hidden] (contiguous) if hidden is not null.
void fused_two_layer_forward(at::Tensor& out, const at::Tensor& x, const at::Tensor& w1,
                             const OptTensor& b1, const at::Tensor& w2, const OptTensor& b2,
                             at::Tensor* hidden);
// two_layer_backward for 2-D grad_out [rows, out], x [rows, in], hidden [rows, hidden]; with
// hidden null, each block's hidden activation is recomputed from x, w1 and b1 exactly as
// fused_two_layer_forward computed it (the same blocks and kernels: the same bits).
std::tuple<OptTensor, OptTensor, OptTensor, OptTensor, OptTensor> fused_two_layer_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w1, const OptTensor& b1,
    const at::Tensor& w2, const at::Tensor* hidden, std::array<bool, 5> output_mask);

}  // namespace twolayer_ext::cpu
