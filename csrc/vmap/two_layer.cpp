// vmap kernels of the whole-network ops (common.h): two_layer_forward and two_layer, with x
// batched and the parameters shared, run once over every sample's rows; the backward ops
// run their decompositions. The training step refuses vmap: it updates its parameters in
// place, which a vmapped call cannot do per sample.
#include <torch/library.h>

#include "../composite/decompositions.h"
#include "common.h"

namespace twolayer_ext::vmap {
namespace {

// Whether only x is batched at this call's level: then the kernel takes the batch as rows.
bool only_x_batched(const at::Tensor& x, const at::Tensor& w1, const OptTensor& b1,
                    const at::Tensor& w2, const OptTensor& b2, int64_t level) {
  return batched(x, level) && !batched(w1, level) && !batched(b1, level) &&
         !batched(w2, level) && !batched(b2, level);
}

std::tuple<at::Tensor, at::Tensor> two_layer_forward_batched(const at::Tensor& x,
                                                             const at::Tensor& w1,
                                                             const OptTensor& b1,
                                                             const at::Tensor& w2,
                                                             const OptTensor& b2) {
  const int64_t level = vmap_level(x, w1, b1, w2, b2);
  if (!only_x_batched(x, w1, b1, w2, b2, level)) {
    return decomposition::two_layer_forward(x, w1, b1, w2, b2);
  }
  const at::Tensor xb = batch_first(x, level);
  auto [out, hidden] =
      below_vmap([&] { return op::two_layer_forward().call(xb, w1, b1, w2, b2); });
  return {rebatch(out, level), rebatch(hidden, level)};
}

at::Tensor two_layer_decomposed(const at::Tensor& x, const at::Tensor& w1, const OptTensor& b1,
                                const at::Tensor& w2, const OptTensor& b2) {
  return std::get<0>(decomposition::two_layer_forward(x, w1, b1, w2, b2));
}

at::Tensor two_layer_batched(const at::Tensor& x, const at::Tensor& w1, const OptTensor& b1,
                             const at::Tensor& w2, const OptTensor& b2) {
  const int64_t level = vmap_level(x, w1, b1, w2, b2);
  if (!only_x_batched(x, w1, b1, w2, b2, level)) return two_layer_decomposed(x, w1, b1, w2, b2);
  const at::Tensor xb = batch_first(x, level);
  return rebatch(below_vmap([&] { return op::two_layer().call(xb, w1, b1, w2, b2); }), level);
}

at::Tensor two_layer_sgd_step_batched(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                      const OptTensor&, const at::Tensor&, const OptTensor&,
                                      double, c10::string_view) {
  TORCH_CHECK(false,
              "twolayer_ext::two_layer_sgd_step does not support vmap (torch.vmap, "
              "torch.func transforms, vectorized Jacobians): it updates w1, b1, w2 and b2 in "
              "place, one step for the whole batch. To train an ensemble, vmap a function that "
              "computes the gradients (torch.func.grad of a loss on twolayer_ext.two_layer_mlp) "
              "and update the stacked parameters outside vmap");
}

}  // namespace

TORCH_LIBRARY_IMPL(twolayer_ext, FuncTorchBatched, m) {
  m.impl("two_layer_forward", &two_layer_forward_batched);
  m.impl("two_layer", &two_layer_batched);
  m.impl("two_layer_backward", &decomposition::two_layer_backward);
  m.impl("two_layer_backward_recompute", &decomposition::two_layer_backward_recompute);
  m.impl("two_layer_sgd_step", &two_layer_sgd_step_batched);
}

TORCH_LIBRARY_IMPL(twolayer_ext, Batched, m) {
  m.impl("two_layer_forward", &decomposition::two_layer_forward);
  m.impl("two_layer", &two_layer_decomposed);
  m.impl("two_layer_backward", &decomposition::two_layer_backward);
  m.impl("two_layer_backward_recompute", &decomposition::two_layer_backward_recompute);
  m.impl("two_layer_sgd_step", &two_layer_sgd_step_batched);
}

}  // namespace twolayer_ext::vmap
