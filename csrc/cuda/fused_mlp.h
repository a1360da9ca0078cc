// The two-layer network, relu(x W1ᵀ + b1) W2ᵀ + b2, fully fused on CUDA: each thread block
// keeps both weight matrices in shared memory and runs blocks of 32 rows through both
// layers there, so the hidden activation never goes to global memory unless it is asked
// for (defined in fused_mlp.cu; when each variant runs: cuda_fused_mlp below).
//
// Every function runs the kernels of `variant` (SIMT or tensor cores, as cuda_fused_mlp
// below chose them for these shapes, dtype and pass; not kNone), takes any strides,
// dispatches on the dtype, enqueues on the current stream and checks its launches. The
// caller has checked the arguments and set the device guard.
#pragma once

#include <ATen/core/Tensor.h>

#include <array>
#include <tuple>

#include "fused_mlp_layout.h"
#include "twolayer_ext/tensor_util.h"

namespace twolayer_ext::cuda {

// The CUDA rule: only where TWOLAYER_EXT_CUDA_FUSED_MLP=1 asks for it (no GPU measurement has
// yet shown the kernels faster than the layered cuBLAS path, which stays the default: the
// project's GPU design rule; docs/gpu-verification.md), on non-empty operands, with the
// tensor-core kernels for float16/bfloat16 (and float32 where torch's matmuls use TF32,
// cuda_matmul_tf32) and the SIMT ones otherwise, where that pass's shared memory fits
// kMaxSharedBytes (e.g. every dtype but float64 at 262144x64->64->16 and 1048576x32->128->3,
// both ways; the tutorial's 1000->100->10 does not fit). A float32 pass whose TF32 layout
// does not fit runs SIMT.
cuda_mlp::Variant cuda_fused_mlp(int64_t rows, int64_t in, int64_t hidden, int64_t out,
                                 at::ScalarType dtype, MlpPass pass);

// out [rows, out] (contiguous) = relu(x w1ᵀ + b1) w2ᵀ + b2 for x [rows, in]; the hidden
// activation relu(x w1ᵀ + b1) is also written to *hidden ([rows, hidden], contiguous) when
// hidden is not null.
void fused_mlp_forward(cuda_mlp::Variant variant, at::Tensor& out, const at::Tensor& x,
                       const at::Tensor& w1, const OptTensor& b1, const at::Tensor& w2,
                       const OptTensor& b2, at::Tensor* hidden);

// two_layer_backward for grad_out [rows, out], x [rows, in] and the hidden activation
// [rows, hidden]; with hidden null, each block's hidden activation is recomputed from x,
// w1 and b1 by the forward's own code (the same bits, if the forward ran the same variant). The
// weight and bias gradients are summed per chunk of consecutive row blocks and the chunks added in
// order, the chunks depending on `rows` alone: deterministic, whatever the GPU.
std::tuple<OptTensor, OptTensor, OptTensor, OptTensor, OptTensor> fused_mlp_backward(
    cuda_mlp::Variant variant, const at::Tensor& grad_out, const at::Tensor& x,
    const at::Tensor& w1, const OptTensor& b1, const at::Tensor& w2, const at::Tensor* hidden,
    std::array<bool, 5> output_mask);

}  // namespace twolayer_ext::cuda
