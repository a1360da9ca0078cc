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

}  // namespace twolayer_ext
