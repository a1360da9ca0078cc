// Tensor idioms shared by every part of the extension (CPU and CUDA kernels,
// autograd kernels, the composite training step), written once here.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/irange.h>

#include <optional>
#include <vector>

namespace twolayer_ext {

// A `Tensor?` schema argument, as the dispatcher passes it.
using OptTensor = std::optional<at::Tensor>;

// Whether an optional tensor argument was given (bias=None arrives as nullopt, or as an
// undefined tensor from some callers).
inline bool present(const OptTensor& t) { return t.has_value() && t->defined(); }

// The ReLU mask saved by linear_relu is packed eight columns to a byte:
// bit (j % 8) of byte mask[row][j / 8] is 1 where the output was kept.
inline int64_t mask_bytes(int64_t out_features) { return (out_features + 7) / 8; }

// Number of rows of x viewed as a matrix [prod(x.shape[:-1]), in_features].
inline int64_t leading_rows(const at::Tensor& x) {
  int64_t rows = 1;
  for (const auto d : c10::irange(x.dim() - 1)) rows *= x.size(d);
  return rows;
}

// x's shape with the last dimension replaced by n: the shape of a layer's output
// (n = out_features) for the input x.
inline std::vector<int64_t> with_last_dim(const at::Tensor& x, int64_t n) {
  std::vector<int64_t> sizes = x.sizes().vec();
  sizes.back() = n;
  return sizes;
}

// x as the matrix [leading_rows(x), x.size(-1)], and a matrix m of those rows back in x's
// leading shape: x and m themselves where x is a matrix already. Even a reshape or view that
// changes nothing is a dispatcher call, which in a training step (caches just emptied by the
// products) costs microseconds (docs/BENCHMARKS.md, "The drop-in step: fewer dispatcher
// calls").
inline at::Tensor as_rows(const at::Tensor& x) {
  return x.dim() == 2 ? x : x.reshape({leading_rows(x), x.size(-1)});
}
inline at::Tensor in_shape_of(const at::Tensor& m, const at::Tensor& x) {
  return x.dim() == 2 ? m : m.view(with_last_dim(x, m.size(-1)));
}

// Whether each row of a 2-D tensor is contiguous (the row stride may be anything): how the
// CPU kernels stream their operands, row by row.
inline bool rows_contiguous(const at::Tensor& t) { return t.stride(1) == 1 || t.size(1) <= 1; }

// Whether a 2-D tensor has unit stride along dim 0 and not along dim 1: the transpose of a
// row-major matrix, as the tutorial's weight w1.t() of a [in, out] w1 is. While tracing with
// symbolic shapes a stride may be a symbol: such a stride is a size or a product of sizes,
// which torch.compile never lets be 1 (it specializes sizes 0 and 1), so a symbolic stride
// counts as "not 1", the same here as in the fake kernels (twolayer_ext/ops.py).
inline bool column_major(const at::Tensor& t) {
  if (t.dim() != 2) return false;
  const auto s0 = t.sym_stride(0).maybe_as_int(), s1 = t.sym_stride(1).maybe_as_int();
  return s0 == 1 && s1 != 1;
}

// A weight's gradient g in the weight w's layout: column-major for a column-major weight, so
// that autograd hands it to the parameter without the transposing copy that AccumulateGrad's
// layout contract makes otherwise (docs/BENCHMARKS.md, "Weight gradients in the weight's
// layout"). The layered products compute it that way directly (cpu::weight_grad, CUDA's
// linear_backward); this copies, for the fused paths' accumulated results.
inline at::Tensor in_layout_of(const at::Tensor& g, const at::Tensor& w) {
  return column_major(w) ? g.t().contiguous().t() : g;  // no copy if g is column-major
}

}  // namespace twolayer_ext
