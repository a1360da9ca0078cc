// CPU kernels for twolayer_ext::relu and relu_backward (the tutorial's MyReLU).
//
// Plain loops over contiguous data, split with at::parallel_for; the compiler
// vectorizes them for the baseline x86-64 ISA (no -march=native, so the wheel
// runs on any x86-64 CPU).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include "twolayer_ext/checks.h"

namespace twolayer_ext {
namespace {

constexpr const char* kFwd = "twolayer_ext::relu";
constexpr const char* kBwd = "twolayer_ext::relu_backward";
constexpr int64_t kGrain = 32768;

at::Tensor relu_cpu(const at::Tensor& x) {
  check_floating(kFwd, "x", x, kCpuDtypes);
  TORCH_INTERNAL_ASSERT(x.device().is_cpu());  // the dispatcher's CPU key
  const at::Tensor xc = x.contiguous();
  at::Tensor y = at::empty(x.sizes(), x.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "relu_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* in = xc.data_ptr<scalar_t>();
    scalar_t* out = y.data_ptr<scalar_t>();
    at::parallel_for(0, xc.numel(), kGrain, [&](int64_t b, int64_t e) {
      // `v <= 0 ? 0 : v` lets NaN through, as torch.relu does.
      for (int64_t i = b; i < e; ++i)
        out[i] = static_cast<acc_t>(in[i]) <= acc_t(0) ? scalar_t(0) : in[i];
    });
  });
  return y;
}

at::Tensor relu_backward_cpu(const at::Tensor& grad_y, const at::Tensor& y) {
  check_relu_backward_args(kBwd, grad_y, y, kCpuDtypes);
  TORCH_INTERNAL_ASSERT(y.device().is_cpu());  // the dispatcher's CPU key, and checked same device
  const at::Tensor gc = grad_y.contiguous(), yc = y.contiguous();
  at::Tensor gx = at::empty(y.sizes(), y.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, y.scalar_type(), "relu_backward_cpu",
                                  [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t* g = gc.data_ptr<scalar_t>();
    const scalar_t* yy = yc.data_ptr<scalar_t>();
    scalar_t* out = gx.data_ptr<scalar_t>();
    at::parallel_for(0, yc.numel(), kGrain, [&](int64_t b, int64_t e) {
      // threshold_backward semantics: relu'(0) = 0, a NaN output passes grad through.
      for (int64_t i = b; i < e; ++i)
        out[i] = static_cast<acc_t>(yy[i]) <= acc_t(0) ? scalar_t(0) : g[i];
    });
  });
  return gx;
}

}  // namespace

TORCH_LIBRARY_IMPL(twolayer_ext, CPU, m) {
  m.impl("relu", &relu_cpu);
  m.impl("relu_backward", &relu_backward_cpu);
}

}  // namespace twolayer_ext
