// CPU kernels for twolayer_ext::relu and relu_backward (the tutorial's MyReLU).
//
// The 16-bit types: a select on the raw bits over contiguous data (isa/passes.h: at::vec,
// compiled per instruction set), split with at::parallel_for. float and double: ATen's
// kernels (aten_is_faster below).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/relu.h>
#include <ATen/ops/threshold_backward.h>
#include <torch/library.h>

#include "isa/passes.h"
#include "twolayer_ext/checks.h"

namespace twolayer_ext {
namespace {

constexpr const char* kFwd = "twolayer_ext::relu";
constexpr const char* kBwd = "twolayer_ext::relu_backward";
constexpr int64_t kGrain = 32768;

// out[i] = v[i] where y[i] passed the ReLU, else 0 (isa/passes.h), over n contiguous
// elements: relu(x) = select(x, x) lets NaN through as torch.relu does, and relu_backward =
// select(y, grad) is threshold_backward.
template <typename scalar_t>
void select_where_kept(const scalar_t* y, const scalar_t* v, scalar_t* out, int64_t n) {
  at::parallel_for(0, n, kGrain,
                   [=](int64_t b, int64_t e) { cpu::passes::select_kept(y, v, out, b, e); });
}

// float and double go to ATen's own relu / threshold_backward: with the select compiled
// for AVX-512 (isa/passes.h) the two tie or ATen wins there, the passes being bound by
// writing fresh pages. For the 16-bit types the bit select wins clearly, so they stay here
// (docs/BENCHMARKS.md, "Numbers behind the smaller CPU rules").
bool aten_is_faster(const at::Tensor& t) {
  return t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble;
}

at::Tensor relu_cpu(const at::Tensor& x) {
  check_floating(kFwd, "x", x, kCpuDtypes);
  TORCH_INTERNAL_ASSERT(x.device().is_cpu());  // the dispatcher's CPU key
  const at::Tensor xc = x.contiguous();
  if (aten_is_faster(xc)) return at::relu(xc);
  at::Tensor y = at::empty(x.sizes(), x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "relu_cpu", [&] {
    const scalar_t* in = xc.data_ptr<scalar_t>();
    select_where_kept(in, in, y.data_ptr<scalar_t>(), xc.numel());
  });
  return y;
}

at::Tensor relu_backward_cpu(const at::Tensor& grad_y, const at::Tensor& y) {
  check_relu_backward_args(kBwd, grad_y, y, kCpuDtypes);
  TORCH_INTERNAL_ASSERT(y.device().is_cpu());  // the dispatcher's CPU key, and checked same device
  const at::Tensor gc = grad_y.contiguous(), yc = y.contiguous();
  if (aten_is_faster(yc)) return at::threshold_backward(gc, yc, 0);
  at::Tensor gx = at::empty(y.sizes(), y.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kBFloat16, at::kHalf, y.scalar_type(), "relu_backward_cpu", [&] {
        select_where_kept(yc.data_ptr<scalar_t>(), gc.data_ptr<scalar_t>(), gx.data_ptr<scalar_t>(),
                          yc.numel());
      });
  return gx;
}

}  // namespace

TORCH_LIBRARY_IMPL(twolayer_ext, CPU, m) {
  m.impl("relu", &relu_cpu);
  m.impl("relu_backward", &relu_backward_cpu);
}

}  // namespace twolayer_ext
