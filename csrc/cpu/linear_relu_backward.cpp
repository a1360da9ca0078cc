// CPU kernel for twolayer_ext::linear_relu_backward, and the same backward with the ReLU
// mask read from the layer's output (for two_layer_backward).
//
// One pass over grad_y applies the ReLU mask and reduces the bias gradient; then the two
// GEMMs, each only when its gradient is requested.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "isa/passes.h"
#include "twolayer_ext/checks.h"
#include "twolayer_ext/cpu_ops.h"

namespace twolayer_ext {
namespace {

constexpr const char* kBwd = "twolayer_ext::linear_relu_backward";

// One pass over grad_y (isa/passes.h): gm = grad_y where kept, else 0 (if gm != nullptr),
// and grad_bias = sum over rows of gm (if gb != nullptr), accumulated in float for the 16-bit
// types, as torch does. gm may alias g. The bias sum is reduced over fixed row chunks whose
// size depends only on `rows`, then the chunk sums are added in order, so the result does not
// depend on the number of threads (nor on the instruction set: every one adds in row order).
template <typename scalar_t>
void mask_grad_and_reduce_bias(const scalar_t* g, int64_t gs0, int64_t gs1,
                               cpu::passes::KeepSource<scalar_t> keep, int64_t rows, int64_t n,
                               scalar_t* gm, scalar_t* gb) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t chunk = std::max<int64_t>(64, (rows + 255) / 256);
  const int64_t nchunks = (rows + chunk - 1) / chunk;
  std::vector<acc_t> partial(gb ? nchunks * n : 0, acc_t(0));
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, chunk * n));
  at::parallel_for(0, nchunks, grain, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      cpu::passes::mask_grad_rows(g, gs0, gs1, keep, c * chunk, std::min(rows, (c + 1) * chunk), n,
                                  gm, gb ? partial.data() + c * n : nullptr);
    }
  });
  if (gb) {
    at::parallel_for(0, n, 1024, [&](int64_t jb, int64_t je) {
      for (int64_t j = jb; j < je; ++j) {
        acc_t s = 0;
        for (int64_t c = 0; c < nchunks; ++c) s += partial[c * n + j];
        gb[j] = static_cast<scalar_t>(s);
      }
    });
  }
}

// The GEMMs of the backward pass, given the masked gradient gm [rows, out]; with sgd_lr, the
// weight's gradient applied where add_weight_grad_ can (and then not returned).
std::tuple<OptTensor, OptTensor> input_and_weight_grads(const at::Tensor& gm, const at::Tensor& x,
                                                        const at::Tensor& weight, bool need_gx,
                                                        bool need_gw,
                                                        std::optional<double> sgd_lr) {
  OptTensor grad_x, grad_w;
  if (need_gx) grad_x = in_shape_of(cpu::mm_nn(gm, weight), x);  // [rows, out] @ [out, in]
  if (need_gw) {
    const at::Tensor x2 = as_rows(x);
    if (!(sgd_lr && cpu::add_weight_grad_(weight, gm, x2, -*sgd_lr))) {
      grad_w = cpu::weight_grad(gm, x2, weight);
    }
  }
  return {grad_x, grad_w};
}

}  // namespace

namespace cpu {

std::tuple<OptTensor, OptTensor, OptTensor> linear_relu_backward(const at::Tensor& grad_y,
                                                                 const at::Tensor& x,
                                                                 const at::Tensor& weight,
                                                                 const at::Tensor& mask,
                                                                 std::array<bool, 3> output_mask) {
  check_linear_relu_backward_args(kBwd, grad_y, x, weight, mask, kCpuDtypes);
  TORCH_INTERNAL_ASSERT(x.device().is_cpu());  // the dispatcher's CPU key, and checked same device
  at::AutoDispatchBelowADInplaceOrView below_autograd;

  const int64_t out_features = weight.size(0);
  const int64_t rows = leading_rows(x);
  const bool need_gx = output_mask[0], need_gw = output_mask[1], need_gb = output_mask[2];
  const at::Tensor g2 = as_rows(grad_y);

  at::Tensor gm, gb;
  if (need_gx || need_gw) gm = at::empty({rows, out_features}, x.options());
  if (need_gb) gb = at::empty({out_features}, x.options());
  if (need_gx || need_gw || need_gb) {
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kBFloat16, at::kHalf, x.scalar_type(), "linear_relu_backward_cpu", [&] {
          const cpu::passes::KeepSource<scalar_t> keep{mask.data_ptr<uint8_t>(), nullptr};
          mask_grad_and_reduce_bias<scalar_t>(g2.data_ptr<scalar_t>(), g2.stride(0), g2.stride(1),
                                              keep, rows, out_features,
                                              gm.defined() ? gm.data_ptr<scalar_t>() : nullptr,
                                              gb.defined() ? gb.data_ptr<scalar_t>() : nullptr);
        });
  }
  auto [grad_x, grad_w] = input_and_weight_grads(gm, x, weight, need_gx, need_gw, std::nullopt);
  return {grad_x, grad_w, need_gb ? OptTensor(gb) : std::nullopt};
}

std::tuple<OptTensor, OptTensor, OptTensor> linear_relu_backward_from_output_(
    at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& y,
    std::array<bool, 3> output_mask, std::optional<double> sgd_lr) {
  const int64_t out_features = weight.size(0);
  const int64_t rows = leading_rows(x);
  const bool need_gx = output_mask[0], need_gw = output_mask[1], need_gb = output_mask[2];
  at::Tensor gm = as_rows(grad_y);
  if (!gm.is_contiguous()) gm = gm.contiguous();  // the pass below writes gm in place
  const at::Tensor y2 = as_rows(y).contiguous();
  at::Tensor gb;
  if (need_gb) gb = at::empty({out_features}, x.options());
  if (need_gx || need_gw || need_gb) {
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kBFloat16, at::kHalf, x.scalar_type(), "linear_relu_backward_from_output", [&] {
          const cpu::passes::KeepSource<scalar_t> keep{nullptr, y2.data_ptr<scalar_t>()};
          scalar_t* g = gm.data_ptr<scalar_t>();
          mask_grad_and_reduce_bias<scalar_t>(g, out_features, 1, keep, rows, out_features,
                                              (need_gx || need_gw) ? g : nullptr,
                                              gb.defined() ? gb.data_ptr<scalar_t>() : nullptr);
        });
  }
  auto [grad_x, grad_w] = input_and_weight_grads(gm, x, weight, need_gx, need_gw, sgd_lr);
  return {grad_x, grad_w, need_gb ? OptTensor(gb) : std::nullopt};
}

}  // namespace cpu

TORCH_LIBRARY_IMPL(twolayer_ext, CPU, m) {
  m.impl("linear_relu_backward", &cpu::linear_relu_backward);
}

}  // namespace twolayer_ext
