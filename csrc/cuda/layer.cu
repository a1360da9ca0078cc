// layer.h: the two GEMM paths of a layer, and the rule that picks one.
#include <ATen/Dispatch.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdlib>
#include <cstring>

#include "dtypes.cuh"
#include "fused_gemm.h"
#include "launch_utils.cuh"
#include "layer.h"

namespace twolayer_ext::cuda {

// The rule. On the H100 (docs/gpu-verification.md, commit 8c0a18d; torch's side is
// cuBLAS addmm + relu), the custom GEMM's forward was slower than torch's at every
// benchmarked size and dtype, including the launch-bound tutorial size:
//
//   forward, ms         custom   torch        forward, ms           custom   torch
//   64x1000->100 fp32    0.139   0.037        2048^3 fp32            1.143   0.382
//   64x1000->100 bf16    0.055   0.050        8192x4096->4096 bf16   1.826   0.438
//                                              8192x4096->4096 fp16   1.459   0.504
//
// (its fwd+bwd wins at the tutorial size, 1.4-2.2x in some runs, came from the C++
// autograd layer, which both paths share). So the vendor path serves every call,
// and the custom GEMM runs only when forced. `python -m twolayer_ext bench --device
// cuda` times both paths side by side, so that a size where the custom GEMM wins
// can be given to it here, with its numbers.
GemmPath gemm_path() {
  const char* choice = std::getenv("TWOLAYER_EXT_CUDA_GEMM");
  if (choice == nullptr || *choice == '\0' || std::strcmp(choice, "vendor") == 0) {
    return GemmPath::kVendor;
  }
  TORCH_CHECK_VALUE(std::strcmp(choice, "custom") == 0,
                    "TWOLAYER_EXT_CUDA_GEMM must be 'custom' or 'vendor' (or unset), but got '",
                    choice, "'");
  return GemmPath::kCustom;
}

namespace {

// The custom GEMM's C = A @ B.T for views a [M, K] and b [N, K], any strides
// (so B = weight.t() or x.t() is just a view), into a contiguous c [M, N].
GemmParams gemm_params(const at::Tensor& a, const at::Tensor& b, const at::Tensor& c) {
  GemmParams p;
  p.a = a.data_ptr();
  p.a_sm = a.stride(0);
  p.a_sk = a.stride(1);
  p.b = b.data_ptr();
  p.b_sn = b.stride(0);
  p.b_sk = b.stride(1);
  p.c = c.data_ptr();
  p.ldc = c.size(1);
  p.M = a.size(0);
  p.N = b.size(0);
  p.K = a.size(1);
  return p;
}

// Runs p on the custom GEMM for like's dtype; returns whether it also wrote p.bias_grad.
bool launch_custom(const GemmParams& p, const at::Tensor& like) {
  bool bias_grad_written = false;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, like.scalar_type(), "custom_gemm", [&] {
    bias_grad_written = launch_fused_gemm<typename DeviceType<scalar_t>::type>(
        p, use_tf32(like), c10::cuda::getCurrentCUDAStream());
  });
  return bias_grad_written;
}

}  // namespace

void linear_forward(at::Tensor& out, const at::Tensor& x, const at::Tensor& w,
                    const OptTensor& bias, bool relu, const at::Tensor& mask) {
  if (gemm_path() == GemmPath::kVendor) {
    // The bias rides in cuBLAS(Lt)'s epilogue where ATen can use it; ReLU and the
    // mask then take one pass over the output. cuBLASLt's own ReLU epilogue is not
    // used: it maps NaN to 0, where torch.relu keeps NaN.
    if (present(bias)) {
      at::addmm_out(out, *bias, x, w.t());
    } else {
      at::mm_out(out, x, w.t());
    }
    if (relu) relu_mask_(out, mask);
    return;
  }
  GemmParams p = gemm_params(x, w, out);
  const at::Tensor b = present(bias) ? bias->contiguous() : at::Tensor();
  p.bias = b.defined() ? b.data_ptr() : nullptr;
  p.relu = relu;
  if (mask.defined()) {
    p.mask_out = mask.data_ptr<uint8_t>();
    p.mask_out_ld = mask.size(1);
  }
  launch_custom(p, x);
}

std::tuple<OptTensor, OptTensor, OptTensor> linear_backward(const at::Tensor& g,
                                                            const ReluKeep& keep, bool g_owned,
                                                            const at::Tensor& x,
                                                            const at::Tensor& w,
                                                            std::array<bool, 3> need) {
  const auto [need_x, need_w, need_b] = need;
  const int64_t rows = g.size(0), n = g.size(1);
  const at::Tensor grad_bias = need_b ? at::empty({n}, g.options()) : at::Tensor();
  OptTensor grad_x, grad_w;

  if (gemm_path() == GemmPath::kVendor) {
    at::Tensor gm = g;  // the gradient both products read
    if (keep.relu()) {
      const bool products = need_x || need_w;
      gm = !products                      ? at::Tensor()
           : g_owned && g.is_contiguous() ? g
                                          : at::empty({rows, n}, g.options());
      mask_grad_and_reduce_bias(g, keep, gm, grad_bias);
    } else if (need_b) {
      mask_grad_and_reduce_bias(g, keep, at::Tensor(), grad_bias);
    }
    if (need_x) grad_x = at::mm(gm, w);      // [rows, n] @ [n, k]
    if (need_w) grad_w = at::mm(gm.t(), x);  // [n, rows] @ [rows, k]
  } else {
    // The custom GEMM applies packed bits while it loads g's tiles.
    const at::Tensor mask = keep.mask.defined()     ? keep.mask
                            : keep.output.defined() ? pack_relu_mask(keep.output)
                                                    : at::Tensor();
    const uint8_t* bits = mask.defined() ? mask.data_ptr<uint8_t>() : nullptr;
    bool bias_done = !need_b;
    if (need_x) {  // grad_x[m, i] = sum_o g'(m, o) w(o, i): A = g, B = w.t()
      at::Tensor out = at::empty({rows, w.size(1)}, g.options());
      GemmParams p = gemm_params(g, w.t(), out);
      p.mask_a = bits;
      p.mask_a_ld = mask_bytes(n);
      launch_custom(p, g);
      grad_x = out;
    }
    if (need_w) {  // grad_w[o, i] = sum_m g'(m, o) x(m, i): A = g.t(), B = x.t()
      at::Tensor out = at::empty({n, w.size(1)}, g.options());
      GemmParams p = gemm_params(g.t(), x.t(), out);
      p.mask_a = bits;
      p.mask_a_ld = mask_bytes(n);
      p.mask_a_t = true;
      p.bias_grad = need_b ? grad_bias.data_ptr() : nullptr;  // grad_b[o] = sum_m g'(m, o)
      bias_done = launch_custom(p, g) || !need_b;
      grad_w = out;
    }
    if (!bias_done) mask_grad_and_reduce_bias(g, ReluKeep{mask, {}}, at::Tensor(), grad_bias);
  }
  return {grad_x, grad_w, need_b ? OptTensor(grad_bias) : std::nullopt};
}

}  // namespace twolayer_ext::cuda
