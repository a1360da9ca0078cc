// Argument validation shared by the CPU and CUDA kernels.
//
// Every user-facing check is a TORCH_CHECK whose message names the op, the
// argument, what was expected and what was given, so a bad call fails with a
// readable RuntimeError (ValueError/TypeError for the TORCH_CHECK_* variants)
// instead of crashing or returning garbage.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <initializer_list>
#include <optional>

#include "twolayer_ext/tensor_util.h"

namespace twolayer_ext {

// Dtypes the kernels are compiled for, per device (16-bit types accumulate in float32).
// twolayer_ext/info.py mirrors them as SUPPORTED_DTYPES for Python (the tests iterate over
// it; tests/test_build.py checks that the two agree).
inline const std::initializer_list<at::ScalarType> kCpuDtypes = {at::kFloat, at::kDouble,
                                                                 at::kBFloat16, at::kHalf};
inline const std::initializer_list<at::ScalarType> kCudaDtypes = {at::kFloat, at::kDouble,
                                                                  at::kHalf, at::kBFloat16};

inline std::string dtype_list(std::initializer_list<at::ScalarType> allowed) {
  std::string s;
  for (auto t : allowed) {
    if (!s.empty()) s += ", ";
    s += c10::toString(t);
  }
  return s;
}

inline void check_floating(const char* op, const char* name, const at::Tensor& t,
                           std::initializer_list<at::ScalarType> allowed) {
  TORCH_CHECK(t.layout() == at::kStrided, op, ": ", name,
              " must be a dense (strided) tensor, but got layout ", t.layout());
  TORCH_CHECK(!t.is_quantized(), op, ": ", name, " must not be quantized, got dtype ",
              t.scalar_type());
  bool ok = false;
  for (auto a : allowed) ok = ok || t.scalar_type() == a;
  TORCH_CHECK(ok, op, ": ", name, " has unsupported dtype ", t.scalar_type(), " on ",
              t.device().type(), "; supported dtypes are ", dtype_list(allowed));
}

inline void check_same(const char* op, const char* name, const at::Tensor& t, const char* ref_name,
                       const at::Tensor& ref) {
  TORCH_CHECK(t.device() == ref.device(), op, ": expected ", name, " on the same device as ",
              ref_name, " (", ref.device(), "), but got ", t.device());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": expected ", name,
              " to have the same dtype as ", ref_name, " (", ref.scalar_type(), "), but got ",
              t.scalar_type());
}

// x: [..., in_features], weight: [out_features, in_features], bias: [out_features].
inline void check_linear_relu_args(const char* op, const at::Tensor& x, const at::Tensor& weight,
                                   const OptTensor& bias,
                                   std::initializer_list<at::ScalarType> allowed) {
  check_floating(op, "x", x, allowed);
  check_same(op, "weight", weight, "x", x);
  check_floating(op, "weight", weight, allowed);
  TORCH_CHECK_VALUE(x.dim() >= 1, op, ": x must have shape [..., in_features] (at least 1-D), ",
                    "but got a 0-d tensor");
  TORCH_CHECK_VALUE(weight.dim() == 2, op,
                    ": weight must be 2-D [out_features, in_features], but got shape ",
                    weight.sizes());
  TORCH_CHECK_VALUE(x.size(-1) == weight.size(1), op, ": in_features mismatch: x has shape ",
                    x.sizes(), " (last dim ", x.size(-1), ") but weight has shape ", weight.sizes(),
                    " (in_features ", weight.size(1), ")");
  if (present(bias)) {
    check_same(op, "bias", *bias, "x", x);
    check_floating(op, "bias", *bias, allowed);
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == weight.size(0), op,
                      ": bias must have shape [out_features] = [", weight.size(0),
                      "], but got shape ", bias->sizes());
  }
}

// The whole two-layer network: layer 1 as linear_relu, then w2: [out, hidden], b2: [out].
inline void check_two_layer_args(const char* op, const at::Tensor& x, const at::Tensor& w1,
                                 const OptTensor& b1, const at::Tensor& w2, const OptTensor& b2,
                                 std::initializer_list<at::ScalarType> allowed) {
  check_linear_relu_args(op, x, w1, b1, allowed);
  check_same(op, "w2", w2, "x", x);
  TORCH_CHECK_VALUE(w2.dim() == 2 && w2.size(1) == w1.size(0), op,
                    ": w2 must have shape [out_features, hidden] with hidden = w1.size(0) = ",
                    w1.size(0), ", but got shape ", w2.sizes());
  if (present(b2)) {
    check_same(op, "b2", *b2, "x", x);
    TORCH_CHECK_VALUE(b2->dim() == 1 && b2->size(0) == w2.size(0), op, ": b2 must have shape [",
                      w2.size(0), "], but got shape ", b2->sizes());
  }
}

// grad_out of the network's output: x.shape[:-1] + [out], x's dtype and device.
inline void check_two_layer_grad_out(const char* op, const at::Tensor& grad_out,
                                     const at::Tensor& x, const at::Tensor& w2) {
  check_same(op, "grad_out", grad_out, "x", x);
  const auto out_shape = with_last_dim(x, w2.size(0));
  TORCH_CHECK_VALUE(grad_out.sizes() == at::IntArrayRef(out_shape), op,
                    ": grad_out must have shape ", at::IntArrayRef(out_shape), ", but got ",
                    grad_out.sizes());
}

// grad_out: x.shape[:-1] + [out]; hidden: x.shape[:-1] + [hidden], as two_layer_forward returns.
inline void check_two_layer_backward_args(const char* op, const at::Tensor& grad_out,
                                          const at::Tensor& x, const at::Tensor& w1,
                                          const at::Tensor& w2, const at::Tensor& hidden,
                                          std::initializer_list<at::ScalarType> allowed) {
  check_two_layer_args(op, x, w1, std::nullopt, w2, std::nullopt, allowed);
  check_two_layer_grad_out(op, grad_out, x, w2);
  check_same(op, "hidden", hidden, "x", x);
  const auto hid_shape = with_last_dim(x, w1.size(0));
  TORCH_CHECK_VALUE(hidden.sizes() == at::IntArrayRef(hid_shape), op, ": hidden must have shape ",
                    at::IntArrayRef(hid_shape), ", but got ", hidden.sizes());
}

// grad_y: x.shape[:-1] + [out_features]; mask: [prod(x.shape[:-1]), ceil(out_features / 8)] uint8.
inline void check_linear_relu_backward_args(const char* op, const at::Tensor& grad_y,
                                            const at::Tensor& x, const at::Tensor& weight,
                                            const at::Tensor& mask,
                                            std::initializer_list<at::ScalarType> allowed) {
  check_linear_relu_args(op, x, weight, std::nullopt, allowed);
  check_same(op, "grad_y", grad_y, "x", x);
  const auto expected = with_last_dim(x, weight.size(0));
  TORCH_CHECK_VALUE(grad_y.sizes() == at::IntArrayRef(expected), op, ": grad_y must have shape ",
                    at::IntArrayRef(expected), ", but got ", grad_y.sizes());
  TORCH_CHECK(mask.device() == x.device(), op, ": expected mask on ", x.device(), ", got ",
              mask.device());
  const int64_t rows = leading_rows(x);
  TORCH_CHECK_VALUE(mask.scalar_type() == at::kByte && mask.dim() == 2 && mask.size(0) == rows &&
                        mask.size(1) == mask_bytes(weight.size(0)) && mask.is_contiguous(),
                    op, ": mask must be a contiguous uint8 tensor of shape [", rows, ", ",
                    mask_bytes(weight.size(0)), "] as returned by linear_relu, but got ",
                    mask.scalar_type(), " of shape ", mask.sizes());
}

inline void check_relu_backward_args(const char* op, const at::Tensor& grad_y, const at::Tensor& y,
                                     std::initializer_list<at::ScalarType> allowed) {
  check_floating(op, "y", y, allowed);
  check_same(op, "grad_y", grad_y, "y", y);
  TORCH_CHECK_VALUE(grad_y.sizes() == y.sizes(), op, ": grad_y must have the shape of y ",
                    y.sizes(), ", but got ", grad_y.sizes());
}

}  // namespace twolayer_ext
