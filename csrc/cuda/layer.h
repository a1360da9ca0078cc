// One Linear(+ReLU) layer's forward and backward on CUDA: the products on cuBLAS through
// ATen (at::addmm / at::mm: handle, workspace, current stream, strided views and the TF32
// setting are ATen's), with the ReLU, bit mask, masked gradient and bias gradient in one
// pass each around them (passes.h): the GPU design rule, the vendor's GEMM for the
// products and our kernels for what it cannot fuse. (The extension's own CUDA GEMM lost to
// cuBLAS at every size measured: docs/gpu-verification.md; git history keeps it.)
//
// The op files (linear_relu.cpp, two_layer.cpp) only check arguments and shape
// tensors; every product goes through here.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <tuple>

#include "passes.h"
#include "twolayer_ext/tensor_util.h"

namespace twolayer_ext::cuda {

// out = x @ w.T + bias, and with `relu` ReLU applied in place and, if `mask` is
// defined ([rows, ceil(n / 8)] uint8), its packed bits written.
// x: [rows, k], w: [n, k] (any strides, e.g. the tutorial's W1.t()), bias: [n] or
// absent; out: contiguous [rows, n], written.
void linear_forward(at::Tensor& out, const at::Tensor& x, const at::Tensor& w,
                    const OptTensor& bias, bool relu, const at::Tensor& mask);

// The gradients of that layer with respect to (x, w, bias), each only if `need`s it,
// from g = d loss / d out ([rows, n], any strides), masked by `keep` first when the
// layer has a ReLU. g_owned: the caller is done with g, so a contiguous g may be
// masked in place instead of into a new buffer.
std::tuple<OptTensor, OptTensor, OptTensor> linear_backward(const at::Tensor& g,
                                                            const ReluKeep& keep, bool g_owned,
                                                            const at::Tensor& x,
                                                            const at::Tensor& w,
                                                            std::array<bool, 3> need);

}  // namespace twolayer_ext::cuda
