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
#include <type_traits>
#include <vector>

#include "relu_bits.h"
#include "twolayer_ext/checks.h"
#include "twolayer_ext/cpu_ops.h"

namespace twolayer_ext {
namespace {

constexpr const char* kBwd = "twolayer_ext::linear_relu_backward";

}  // namespace

namespace {

// Which gradients pass the ReLU: keep flags (0/1) for elements c0..c0+count-1 of row
// i of the layer output, written to `flags`.

// From the packed mask of linear_relu (bit j % 8 of byte j / 8; c0 is a multiple of 8).
struct PackedMaskKeep {
  const uint8_t* mask;
  int64_t nbytes;
  void row(int64_t i, int64_t c0, int64_t count, uint8_t* flags) const {  // flags: nonzero
    const uint8_t* bytes = mask + i * nbytes + c0 / 8;
    for (int64_t b = 0; b < (count + 7) / 8; ++b) cpu::unpack8(bytes[b], flags + 8 * b);
  }
};

// From the layer's output y [rows, n]: kept where y > 0 or y is NaN (relu_bits.h).
template <typename scalar_t>
struct OutputKeep {
  const scalar_t* y;
  int64_t n;
  void row(int64_t i, int64_t c0, int64_t count, uint8_t* flags) const {
    const auto* r = cpu::raw(y + i * n + c0);
    for (int64_t j = 0; j < count; ++j) flags[j] = cpu::ReluBits<scalar_t>::keep(r[j]);
  }
};

// The accumulation type's value of raw bits (relu_bits.h): bfloat16 is the top half of a
// float, so its conversion is a shift the compiler vectorises.
template <typename scalar_t>
inline at::opmath_type<scalar_t> acc_value(typename cpu::ReluBits<scalar_t>::Raw r) {
  if constexpr (std::is_same_v<scalar_t, c10::BFloat16>) {
    return c10::detail::f32_from_bits(r);
  } else if constexpr (std::is_same_v<scalar_t, c10::Half>) {
    return static_cast<float>(c10::Half(r, c10::Half::from_bits()));
  } else {
    return r;
  }
}

// One pass over grad_y: gm = grad_y where kept, else 0 (if gm != nullptr), and
// grad_bias = sum over rows of gm (if gb != nullptr), accumulated in float for the 16-bit
// types, as torch does. gm may alias g: each element is read before it is written. The
// bias sum is reduced over fixed row chunks whose size depends only on `rows`, then the
// chunk sums are added in order, so the result does not depend on the number of threads.
// Rows go in column chunks: keep flags first, then a select on the raw bits (a select,
// not a multiply: a masked-out NaN/Inf gradient becomes 0, as in torch) and the partial
// sums, in loops the compiler vectorises for every dtype.
template <typename scalar_t, typename Keep>
[[gnu::always_inline]] inline void mask_grad_rows(const scalar_t* g, int64_t gs0, int64_t gs1,
                                                  const Keep& keep, int64_t begin, int64_t end,
                                                  int64_t n, scalar_t* gm,
                                                  at::opmath_type<scalar_t>* part) {
  using acc_t = at::opmath_type<scalar_t>;
  using Raw = typename cpu::ReluBits<scalar_t>::Raw;
  constexpr int64_t kCols = 256;  // a multiple of 8: column chunks start on mask bytes
  uint8_t flags[kCols];
  Raw masked[kCols];
  for (int64_t i = begin; i < end; ++i) {
    for (int64_t c0 = 0; c0 < n; c0 += kCols) {
      const int64_t count = std::min(kCols, n - c0);
      keep.row(i, c0, count, flags);
      const scalar_t* gr = g + i * gs0 + c0 * gs1;
      // Unconditional loads and a select: branch-free, so GCC vectorises it.
      const Raw* graw = cpu::raw(gr);
      if (gs1 == 1) {
        for (int64_t j = 0; j < count; ++j) {
          const Raw v = graw[j];
          masked[j] = flags[j] ? v : Raw(0);
        }
      } else {
        for (int64_t j = 0; j < count; ++j) {
          const Raw v = graw[j * gs1];
          masked[j] = flags[j] ? v : Raw(0);
        }
      }
      if (gm) std::copy(masked, masked + count, cpu::raw(gm + i * n + c0));
      if (part) {
        acc_t* __restrict__ p = part + c0;
        for (int64_t j = 0; j < count; ++j) p[j] += acc_value<scalar_t>(masked[j]);
      }
    }
  }
}

// mask_grad_rows compiled for AVX-512, AVX2 and the baseline, as relu_mask_rows_isa.
#define TWOLAYER_EXT_MASK_GRAD_CLONES(T, KEEP)                                                  \
  TWOLAYER_EXT_ISA_CLONES void mask_grad_rows_isa(const T* g, int64_t gs0, int64_t gs1,         \
                                                  const KEEP& keep, int64_t begin, int64_t end, \
                                                  int64_t n, T* gm, at::opmath_type<T>* part) { \
    mask_grad_rows<T, KEEP>(g, gs0, gs1, keep, begin, end, n, gm, part);                        \
  }
#define TWOLAYER_EXT_MASK_GRAD_CLONES_FOR(T)       \
  TWOLAYER_EXT_MASK_GRAD_CLONES(T, PackedMaskKeep) \
  TWOLAYER_EXT_MASK_GRAD_CLONES(T, OutputKeep<T>)
TWOLAYER_EXT_MASK_GRAD_CLONES_FOR(float)
TWOLAYER_EXT_MASK_GRAD_CLONES_FOR(double)
TWOLAYER_EXT_MASK_GRAD_CLONES_FOR(c10::BFloat16)
TWOLAYER_EXT_MASK_GRAD_CLONES_FOR(c10::Half)
#undef TWOLAYER_EXT_MASK_GRAD_CLONES_FOR
#undef TWOLAYER_EXT_MASK_GRAD_CLONES

template <typename scalar_t, typename Keep>
void mask_grad_and_reduce_bias(const scalar_t* g, int64_t gs0, int64_t gs1, Keep keep, int64_t rows,
                               int64_t n, scalar_t* gm, scalar_t* gb) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t chunk = std::max<int64_t>(64, (rows + 255) / 256);
  const int64_t nchunks = (rows + chunk - 1) / chunk;
  std::vector<acc_t> partial(gb ? nchunks * n : 0, acc_t(0));
  const int64_t grain = std::max<int64_t>(1, 65536 / std::max<int64_t>(1, chunk * n));
  at::parallel_for(0, nchunks, grain, [&](int64_t cb, int64_t ce) {
    for (int64_t c = cb; c < ce; ++c) {
      mask_grad_rows_isa(g, gs0, gs1, keep, c * chunk, std::min(rows, (c + 1) * chunk), n, gm,
                         gb ? partial.data() + c * n : nullptr);
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

// The GEMMs of the backward pass, given the masked gradient gm [rows, out].
std::tuple<OptTensor, OptTensor> input_and_weight_grads(const at::Tensor& gm, const at::Tensor& x,
                                                        const at::Tensor& weight, bool need_gx,
                                                        bool need_gw) {
  OptTensor grad_x, grad_w;
  if (need_gx) grad_x = cpu::mm_nn(gm, weight).view(x.sizes());  // [rows, out] @ [out, in]
  if (need_gw) grad_w = cpu::mm_tn(gm, x.reshape({gm.size(0), weight.size(1)}));
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
  const at::Tensor g2 = grad_y.reshape({rows, out_features});

  at::Tensor gm, gb;
  if (need_gx || need_gw) gm = at::empty({rows, out_features}, x.options());
  if (need_gb) gb = at::empty({out_features}, x.options());
  if (need_gx || need_gw || need_gb) {
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kBFloat16, at::kHalf, x.scalar_type(), "linear_relu_backward_cpu", [&] {
          const PackedMaskKeep keep{mask.data_ptr<uint8_t>(), mask_bytes(out_features)};
          mask_grad_and_reduce_bias<scalar_t>(g2.data_ptr<scalar_t>(), g2.stride(0), g2.stride(1),
                                              keep, rows, out_features,
                                              gm.defined() ? gm.data_ptr<scalar_t>() : nullptr,
                                              gb.defined() ? gb.data_ptr<scalar_t>() : nullptr);
        });
  }
  auto [grad_x, grad_w] = input_and_weight_grads(gm, x, weight, need_gx, need_gw);
  return {grad_x, grad_w, need_gb ? OptTensor(gb) : std::nullopt};
}

std::tuple<OptTensor, OptTensor, OptTensor> linear_relu_backward_from_output_(
    at::Tensor& grad_y, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& y,
    std::array<bool, 3> output_mask) {
  const int64_t out_features = weight.size(0);
  const int64_t rows = leading_rows(x);
  const bool need_gx = output_mask[0], need_gw = output_mask[1], need_gb = output_mask[2];
  at::Tensor gm = grad_y.reshape({rows, out_features});
  if (!gm.is_contiguous()) gm = gm.contiguous();  // the pass below writes gm in place
  const at::Tensor y2 = y.reshape({rows, out_features}).contiguous();
  at::Tensor gb;
  if (need_gb) gb = at::empty({out_features}, x.options());
  if (need_gx || need_gw || need_gb) {
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kBFloat16, at::kHalf, x.scalar_type(), "linear_relu_backward_from_output", [&] {
          const OutputKeep<scalar_t> keep{y2.data_ptr<scalar_t>(), out_features};
          scalar_t* g = gm.data_ptr<scalar_t>();
          mask_grad_and_reduce_bias<scalar_t>(g, out_features, 1, keep, rows, out_features,
                                              (need_gx || need_gw) ? g : nullptr,
                                              gb.defined() ? gb.data_ptr<scalar_t>() : nullptr);
        });
  }
  auto [grad_x, grad_w] = input_and_weight_grads(gm, x, weight, need_gx, need_gw);
  return {grad_x, grad_w, need_gb ? OptTensor(gb) : std::nullopt};
}

}  // namespace cpu

TORCH_LIBRARY_IMPL(twolayer_ext, CPU, m) {
  m.impl("linear_relu_backward", &cpu::linear_relu_backward);
}

}  // namespace twolayer_ext
