// The element-wise passes that the CUDA ops run around their cuBLAS products: what cuBLAS
// cannot do for a Linear+ReLU layer (ReLU with a packed bit mask, the masked
// gradient, the bias gradient). Defined in passes.cu, the only TU that
// instantiates their kernels; every function dispatches on the dtype itself,
// enqueues on the current stream and checks its launches.
#pragma once

#include <ATen/core/Tensor.h>

namespace twolayer_ext::cuda {

// Which elements of a layer's output passed its ReLU, and so pass the gradient:
//   mask:   the packed bits linear_relu returns ([rows, ceil(n / 8)] uint8), or
//   output: the layer's output itself (contiguous [rows, n]; kept where > 0 or NaN),
// or neither defined: a layer without ReLU (every element passes).
struct ReluKeep {
  at::Tensor mask;
  at::Tensor output;
  bool relu() const { return mask.defined() || output.defined(); }
};

// In place on a contiguous [rows, n] output: y = relu(y) (NaN stays NaN) and, when
// `mask` is defined ([rows, ceil(n / 8)] uint8), its packed bits (set where y > 0 or NaN).
void relu_mask_(at::Tensor& y, const at::Tensor& mask);

// One pass over g ([rows, n], any strides):
//   gm (if defined: contiguous [rows, n], may be g itself) = g where `keep`, else 0
//     (a select, so a masked-out NaN or Inf gradient becomes 0, as in torch);
//   grad_bias (if defined: [n]) = column sums of the masked g, accumulated in float
//     for the 16-bit types, over row chunks whose size depends on `rows` alone and
//     added in a fixed order: deterministic, whatever the GPU.
void mask_grad_and_reduce_bias(const at::Tensor& g, const ReluKeep& keep, const at::Tensor& gm,
                               const at::Tensor& grad_bias);

}  // namespace twolayer_ext::cuda
