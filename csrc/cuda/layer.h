// One Linear(+ReLU) layer's forward and backward products on CUDA, on either GEMM path:
//
//   vendor: cuBLAS through ATen (at::addmm / at::mm: handle, workspace, current
//           stream, strided views and the TF32 flag are ATen's), with the ReLU,
//           bit mask, masked gradient and bias gradient in fused_passes.h;
//   custom: the extension's own GEMM (fused_gemm.h), with bias + ReLU + mask in its
//           epilogue, the mask applied while it loads grad tiles, and the bias
//           gradient reduced inside the grad_weight product where it can.
//
// The op files (linear_relu.cu, two_layer.cu) only check arguments and shape
// tensors; every product goes through here. gemm_path() says which path runs.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <tuple>

#include "fused_passes.h"
#include "twolayer_ext/tensor_util.h"

namespace twolayer_ext::cuda {

enum class GemmPath { kCustom, kVendor };

// The path for this call: TWOLAYER_EXT_CUDA_GEMM=custom|vendor forces one (read on
// every call, like TWOLAYER_EXT_CPU_GEMM); otherwise the measured rule in layer.cu.
GemmPath gemm_path();

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
