// CUDA kernels for twolayer_ext::two_layer_forward / two_layer_backward: the
// tutorial's whole network, relu(x W1ᵀ + b1) W2ᵀ + b2, one op each way, as two
// layers of layer.h.
//
// Forward: layer 1 with ReLU (no mask: backward reads the ReLU from the saved
// hidden activation, which grad_w2 needs anyway), then layer 2 with its bias.
// Backward: layer 2's products give grad_w2, grad_b2 and grad_hidden; layer 1
// masks grad_hidden in place from hidden and reduces grad_b1 in the same pass.
//
// Where cuda_fused_mlp (fused_mlp.h) says so, each op instead runs the fully
// fused kernels of fused_mlp.h, and two_layer (the output alone) and
// two_layer_backward_recompute write no hidden activation at all.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "fused_mlp.h"
#include "launch_utils.cuh"
#include "layer.h"
#include "twolayer_ext/checks.h"

namespace twolayer_ext::cuda {
namespace {

using cuda_mlp::Variant;

constexpr const char* kFwd = "twolayer_ext::two_layer_forward";
constexpr const char* kBwd = "twolayer_ext::two_layer_backward";
constexpr const char* kOut = "twolayer_ext::two_layer";
constexpr const char* kRecompute = "twolayer_ext::two_layer_backward_recompute";

using Grads = std::tuple<OptTensor, OptTensor, OptTensor, OptTensor, OptTensor>;

// The fused kernels' weight gradients in their weights' layouts, as the layered path
// computes them (in_layout_of, tensor_util.h).
Grads weights_in_layout(Grads grads, const at::Tensor& w1, const at::Tensor& w2) {
  if (auto& gw1 = std::get<1>(grads)) gw1 = in_layout_of(*gw1, w1);
  if (auto& gw2 = std::get<3>(grads)) gw2 = in_layout_of(*gw2, w2);
  return grads;
}

// The fused kernels for this pass, or kNone (cuda_fused_mlp, fused_mlp.h).
cuda_mlp::Variant fused(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2,
                        MlpPass pass) {
  return cuda_fused_mlp(leading_rows(x), w1.size(1), w1.size(0), w2.size(0), x.scalar_type(),
                        pass);
}

// The forward of checked arguments: out, and hidden where keep_hidden (undefined otherwise;
// the layered path computes it either way).
std::tuple<at::Tensor, at::Tensor> forward(const at::Tensor& x, const at::Tensor& w1,
                                           const OptTensor& b1, const at::Tensor& w2,
                                           const OptTensor& b2, bool keep_hidden) {
  TORCH_INTERNAL_ASSERT(x.is_cuda());  // the dispatcher's CUDA key, and checked same device
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t rows = leading_rows(x), hidden_features = w1.size(0), out_features = w2.size(0);
  const at::Tensor x2 = x.reshape({rows, w1.size(1)});
  const Variant variant = fused(x, w1, w2, MlpPass::kForward);
  at::Tensor out = at::empty({rows, out_features}, x.options());
  at::Tensor hidden;
  if (keep_hidden || variant == Variant::kNone) {
    hidden = at::empty({rows, hidden_features}, x.options());
  }
  if (variant != Variant::kNone) {
    fused_mlp_forward(variant, out, x2, w1, b1, w2, b2, keep_hidden ? &hidden : nullptr);
  } else {
    linear_forward(hidden, x2, w1, b1, /*relu=*/true, /*mask=*/{});
    linear_forward(out, hidden, w2, b2, /*relu=*/false, /*mask=*/{});
  }
  if (!keep_hidden) return {out.view(with_last_dim(x, out_features)), at::Tensor()};
  return {out.view(with_last_dim(x, out_features)), hidden.view(with_last_dim(x, hidden_features))};
}

// The backward of checked arguments.
std::tuple<OptTensor, OptTensor, OptTensor, OptTensor, OptTensor> backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2,
    const at::Tensor& hidden, std::array<bool, 5> output_mask) {
  TORCH_INTERNAL_ASSERT(x.is_cuda());
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t rows = leading_rows(x);
  if (const auto variant = fused(x, w1, w2, MlpPass::kBackward); variant != Variant::kNone) {
    const at::Tensor hidden2 = hidden.reshape({rows, w1.size(0)});
    auto grads = fused_mlp_backward(variant, grad_out.reshape({rows, w2.size(0)}),
                                    x.reshape({rows, w1.size(1)}), w1, std::nullopt, w2, &hidden2,
                                    output_mask);
    if (auto& gx = std::get<0>(grads)) gx = gx->view(x.sizes());
    return weights_in_layout(std::move(grads), w1, w2);
  }
  const at::Tensor hidden2 = hidden.reshape({rows, w1.size(0)}).contiguous();
  const bool need_layer1 = output_mask[0] || output_mask[1] || output_mask[2];
  // Layer 2 has no ReLU; its input gradient is layer 1's output gradient.
  auto [grad_hidden, gw2, gb2] =
      linear_backward(grad_out.reshape({rows, w2.size(0)}), ReluKeep{}, /*g_owned=*/false, hidden2,
                      w2, {need_layer1, output_mask[3], output_mask[4]});
  OptTensor gx, gw1, gb1;
  if (need_layer1) {
    std::tie(gx, gw1, gb1) = linear_backward(*grad_hidden, ReluKeep{{}, hidden2}, /*g_owned=*/true,
                                             x.reshape({rows, w1.size(1)}), w1,
                                             {output_mask[0], output_mask[1], output_mask[2]});
    if (gx) gx = gx->view(x.sizes());
  }
  return {gx, gw1, gb1, gw2, gb2};
}

std::tuple<at::Tensor, at::Tensor> two_layer_forward(const at::Tensor& x, const at::Tensor& w1,
                                                     const OptTensor& b1, const at::Tensor& w2,
                                                     const OptTensor& b2) {
  check_two_layer_args(kFwd, x, w1, b1, w2, b2, kCudaDtypes);
  return forward(x, w1, b1, w2, b2, /*keep_hidden=*/true);
}

std::tuple<OptTensor, OptTensor, OptTensor, OptTensor, OptTensor> two_layer_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2,
    const at::Tensor& hidden, std::array<bool, 5> output_mask) {
  check_two_layer_backward_args(kBwd, grad_out, x, w1, w2, hidden, kCudaDtypes);
  return backward(grad_out, x, w1, w2, hidden, output_mask);
}

// The output alone: without writing the hidden activation where the fused kernel runs.
at::Tensor two_layer(const at::Tensor& x, const at::Tensor& w1, const OptTensor& b1,
                     const at::Tensor& w2, const OptTensor& b2) {
  check_two_layer_args(kOut, x, w1, b1, w2, b2, kCudaDtypes);
  return std::get<0>(forward(x, w1, b1, w2, b2, /*keep_hidden=*/false));
}

// two_layer_backward without a saved hidden activation: recomputed block by block where
// both fused kernels run, else computed by the forward first.
std::tuple<OptTensor, OptTensor, OptTensor, OptTensor, OptTensor> two_layer_backward_recompute(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w1, const OptTensor& b1,
    const at::Tensor& w2, std::array<bool, 5> output_mask) {
  check_two_layer_args(kRecompute, x, w1, b1, w2, std::nullopt, kCudaDtypes);
  check_two_layer_grad_out(kRecompute, grad_out, x, w2);
  TORCH_INTERNAL_ASSERT(x.is_cuda());
  // Recomputing gives the forward's bits only where both passes run the same kernels.
  const auto variant = fused(x, w1, w2, MlpPass::kBackward);
  if (variant == Variant::kNone || variant != fused(x, w1, w2, MlpPass::kForward)) {
    const at::Tensor hidden =
        std::get<1>(forward(x, w1, b1, w2, std::nullopt, /*keep_hidden=*/true));
    return backward(grad_out, x, w1, w2, hidden, output_mask);
  }
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t rows = leading_rows(x);
  auto grads = fused_mlp_backward(variant, grad_out.reshape({rows, w2.size(0)}),
                                  x.reshape({rows, w1.size(1)}), w1, b1, w2, nullptr, output_mask);
  if (auto& gx = std::get<0>(grads)) gx = gx->view(x.sizes());
  return weights_in_layout(std::move(grads), w1, w2);
}

}  // namespace

TORCH_LIBRARY_IMPL(twolayer_ext, CUDA, m) {
  m.impl("two_layer_forward", &two_layer_forward);
  m.impl("two_layer_backward", &two_layer_backward);
  m.impl("two_layer", &two_layer);
  m.impl("two_layer_backward_recompute", &two_layer_backward_recompute);
}

}  // namespace twolayer_ext::cuda
