// CPU kernels for twolayer_ext::two_layer_forward / two_layer_backward: the
// tutorial's whole network, relu(x W1ᵀ + b1) W2ᵀ + b2, one op each way, so a
// training step crosses the dispatcher and autograd twice instead of ~10 times.
//
// Narrow networks with many rows run fully fused, block by block
// (two_layer_fused.cpp, whose use_fused_mlp says when). Otherwise layer 1 is the
// fused linear_relu kernel and layer 2 a plain linear (matmul.cpp). Backward reads
// the ReLU mask from the saved hidden activation (which grad_w2 needs anyway)
// rather than keeping a mask, while it masks grad_hidden in place and reduces
// grad_b1 in the same pass.
//
// twolayer_ext::two_layer (the output alone) runs here when no gradient is
// recorded: then the fused path writes no hidden activation at all.
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>
#include <torch/library.h>

#include "twolayer_ext/checks.h"
#include "twolayer_ext/cpu_ops.h"

namespace twolayer_ext::cpu {
namespace {

constexpr const char* kFwd = "twolayer_ext::two_layer_forward";
constexpr const char* kBwd = "twolayer_ext::two_layer_backward";
constexpr const char* kOut = "twolayer_ext::two_layer";
constexpr const char* kRecompute = "twolayer_ext::two_layer_backward_recompute";

std::tuple<at::Tensor, at::Tensor> two_layer_forward(const at::Tensor& x, const at::Tensor& w1,
                                                     const OptTensor& b1, const at::Tensor& w2,
                                                     const OptTensor& b2) {
  check_two_layer_args(kFwd, x, w1, b1, w2, b2, kCpuDtypes);
  TORCH_INTERNAL_ASSERT(x.device().is_cpu());  // the dispatcher's CPU key, and checked same device
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const int64_t rows = leading_rows(x), hidden_features = w1.size(0), out_features = w2.size(0);
  if (use_fused_mlp(rows, w1.size(1), hidden_features, out_features, x.scalar_type(),
                    MlpPass::kForward)) {
    at::Tensor out = at::empty({rows, out_features}, x.options());
    at::Tensor hidden = at::empty({rows, hidden_features}, x.options());
    fused_two_layer_forward(out, as_rows(x), w1, b1, w2, b2, &hidden);
    return {in_shape_of(out, x), in_shape_of(hidden, x)};
  }
  at::Tensor hidden = linear_relu_output(x, w1, b1);  // no mask: backward reads hidden (above)
  const at::Tensor out = linear(as_rows(hidden), w2, b2);
  return {in_shape_of(out, x), hidden};
}

at::Tensor two_layer(const at::Tensor& x, const at::Tensor& w1, const OptTensor& b1,
                     const at::Tensor& w2, const OptTensor& b2) {
  check_two_layer_args(kOut, x, w1, b1, w2, b2, kCpuDtypes);
  TORCH_INTERNAL_ASSERT(x.device().is_cpu());  // the dispatcher's CPU key, and checked same device
  const int64_t rows = leading_rows(x), out_features = w2.size(0);
  if (!use_fused_mlp(rows, w1.size(1), w1.size(0), out_features, x.scalar_type(),
                     MlpPass::kInference)) {
    return std::get<0>(two_layer_forward(x, w1, b1, w2, b2));
  }
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  at::Tensor out = at::empty({rows, out_features}, x.options());
  fused_two_layer_forward(out, as_rows(x), w1, b1, w2, b2, nullptr);
  return in_shape_of(out, x);
}

// two_layer_backward, and with sgd_lr two_layer_backward_sgd (cpu_ops.h).
std::tuple<OptTensor, OptTensor, OptTensor, OptTensor, OptTensor> backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2,
    const at::Tensor& hidden, std::array<bool, 5> output_mask, std::optional<double> sgd_lr) {
  check_two_layer_backward_args(kBwd, grad_out, x, w1, w2, hidden, kCpuDtypes);
  TORCH_INTERNAL_ASSERT(x.device().is_cpu());  // the dispatcher's CPU key, and checked same device
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const int64_t rows = leading_rows(x), hidden_features = w1.size(0), out_features = w2.size(0);
  const at::Tensor g2 = as_rows(grad_out);
  if (use_fused_mlp(rows, w1.size(1), hidden_features, out_features, x.scalar_type(),
                    MlpPass::kBackward)) {
    const at::Tensor hidden2 = as_rows(hidden);
    auto grads = fused_two_layer_backward(g2, as_rows(x), w1, std::nullopt, w2, &hidden2,
                                          output_mask);
    if (auto& gx = std::get<0>(grads)) gx = in_shape_of(*gx, x);
    return grads;
  }
  OptTensor gx, gw1, gb1, gw2, gb2;
  const at::Tensor hidden2 = as_rows(hidden);
  const bool need_grad_hidden = output_mask[0] || output_mask[1] || output_mask[2];
  at::Tensor grad_hidden;  // ours: masked in place below
  // Layer 2's gradients in one pass where it is small (matmul.cpp), else one op each.
  auto layer2 = need_grad_hidden && output_mask[3] && output_mask[4]
                    ? small_linear_grads(g2, hidden2, w2)
                    : std::nullopt;
  if (layer2) {
    std::tie(grad_hidden, gw2, gb2) = *std::move(layer2);
  } else {
    if (output_mask[3]) gw2 = weight_grad(g2, hidden2, w2);
    if (output_mask[4]) gb2 = at::sum(g2, {0});
    if (need_grad_hidden) grad_hidden = mm_nn(g2, w2);
  }
  if (need_grad_hidden) {
    grad_hidden = in_shape_of(grad_hidden, hidden);
    std::tie(gx, gw1, gb1) = linear_relu_backward_from_output_(
        grad_hidden, x, w1, hidden, {output_mask[0], output_mask[1], output_mask[2]}, sgd_lr);
  }
  return {gx, gw1, gb1, gw2, gb2};
}

std::tuple<OptTensor, OptTensor, OptTensor, OptTensor, OptTensor> two_layer_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2,
    const at::Tensor& hidden, std::array<bool, 5> output_mask) {
  return backward(grad_out, x, w1, w2, hidden, output_mask, std::nullopt);
}

// two_layer_backward without a saved hidden activation: recomputed block by block on the
// fused path (the forward wrote none), or else the forward run again for it.
std::tuple<OptTensor, OptTensor, OptTensor, OptTensor, OptTensor> two_layer_backward_recompute(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w1, const OptTensor& b1,
    const at::Tensor& w2, std::array<bool, 5> output_mask) {
  check_two_layer_args(kRecompute, x, w1, b1, w2, std::nullopt, kCpuDtypes);
  check_two_layer_grad_out(kRecompute, grad_out, x, w2);
  TORCH_INTERNAL_ASSERT(x.device().is_cpu());  // the dispatcher's CPU key, and checked same device
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  if (!backward_recomputes_hidden(x, w1, w2)) {
    // hidden as two_layer_forward computes it (its output unused): the fused and the layered
    // first layer can run different GEMMs (on an Intel CPU, our kernels and MKL), and a hidden
    // unit that rounds to the other side of 0 would change the mask.
    const at::Tensor hidden = std::get<1>(two_layer_forward(x, w1, b1, w2, std::nullopt));
    return two_layer_backward(grad_out, x, w1, w2, hidden, output_mask);
  }
  auto grads =
      fused_two_layer_backward(as_rows(grad_out), as_rows(x), w1, b1, w2, nullptr, output_mask);
  if (auto& gx = std::get<0>(grads)) gx = in_shape_of(*gx, x);
  return grads;
}

}  // namespace

std::tuple<OptTensor, OptTensor, OptTensor, OptTensor, OptTensor> two_layer_backward_sgd(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2,
    const at::Tensor& hidden, std::array<bool, 5> output_mask, double lr) {
  return backward(grad_out, x, w1, w2, hidden, output_mask, lr);
}

TORCH_LIBRARY_IMPL(twolayer_ext, CPU, m) {
  m.impl("two_layer_forward", &two_layer_forward);
  m.impl("two_layer_backward", &two_layer_backward);
  m.impl("two_layer", &two_layer);
  m.impl("two_layer_backward_recompute", &two_layer_backward_recompute);
}

}  // namespace twolayer_ext::cpu
