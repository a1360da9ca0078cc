// CPU kernel for twolayer_ext::linear_relu (its backward: linear_relu_backward.cpp).
//
// The GEMM (matmul.cpp: the float32 kernels or ATen's BLAS, bias folded in) runs one
// block of rows at a time (see rows_per_block), and the ReLU + mask-packing epilogue
// (isa/passes.h) then runs on that block. linear_relu_output packs no mask: there the
// product applies the ReLU itself (in the float32 kernel's stores where that runs).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <algorithm>

#include "isa/passes.h"
#include "twolayer_ext/checks.h"
#include "twolayer_ext/cpu_ops.h"

namespace twolayer_ext {
namespace {

constexpr const char* kFwd = "twolayer_ext::linear_relu";

// Output rows per GEMM block: up to 16 MiB of output. Smaller blocks would keep
// the output in L2 for the epilogue, but the BLAS loses more on the smaller calls
// than the separate epilogue pass costs, in every dtype (docs/BENCHMARKS.md, "Numbers
// behind the smaller CPU rules"). Below 16 MiB the output is one block.
int64_t rows_per_block(int64_t out_features, int64_t elem_size) {
  constexpr int64_t kBlockBytes = 1 << 24;
  return std::max<int64_t>(64, kBlockBytes / std::max<int64_t>(1, out_features * elem_size));
}

// The epilogue over a whole [rows, n] block, in place: y = relu(y) and, if mask is not null,
// its packed bits (csrc/cpu/isa/passes.h), rows split across threads.
template <typename scalar_t>
void relu_mask_epilogue(scalar_t* y, uint8_t* mask, int64_t rows, int64_t n) {
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(n, 1));
  at::parallel_for(0, rows, grain, [&](int64_t begin, int64_t end) {
    cpu::passes::relu_mask_rows(y, mask, begin, end, n);
  });
}

}  // namespace

namespace cpu {

namespace {

// y = relu(x @ W.T + b), and its packed ReLU mask when keep_mask (else undefined).
std::tuple<at::Tensor, at::Tensor> linear_relu_impl(const at::Tensor& x, const at::Tensor& weight,
                                                    const OptTensor& bias, bool keep_mask) {
  check_linear_relu_args(kFwd, x, weight, bias, kCpuDtypes);
  TORCH_INTERNAL_ASSERT(x.device().is_cpu());  // the dispatcher's CPU key, and checked same device
  // The GEMM calls below are implementation details, not graph nodes.
  at::AutoDispatchBelowADInplaceOrView below_autograd;

  const int64_t out_features = weight.size(0);
  const int64_t rows = leading_rows(x);
  const at::Tensor x2 = as_rows(x);  // a view whenever strides allow

  at::Tensor mask;
  if (keep_mask) mask = at::empty({rows, mask_bytes(out_features)}, x.options().dtype(at::kByte));
  const auto epilogue = [&](at::Tensor& yb, int64_t r0) {
    uint8_t* mb = keep_mask ? mask.data_ptr<uint8_t>() + r0 * mask.stride(0) : nullptr;
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kBFloat16, at::kHalf, x.scalar_type(), "linear_relu_cpu", [&] {
          relu_mask_epilogue<scalar_t>(yb.data_ptr<scalar_t>(), mb, yb.size(0), out_features);
        });
  };

  const int64_t block = rows_per_block(out_features, x.element_size());
  at::Tensor y;
  // Without a mask to pack, the product applies the ReLU itself (in the float32 kernel's
  // stores where that runs).
  if (rows <= block) {  // the usual case: one product, no views to build (~1-2 us per call)
    y = linear(x2, weight, bias, /*relu=*/!keep_mask);
    if (keep_mask) epilogue(y, 0);
  } else {
    y = at::empty({rows, out_features}, x.options());
    for (int64_t r0 = 0; r0 < rows; r0 += block) {
      at::Tensor yb = y.narrow(0, r0, std::min(block, rows - r0));
      linear_out(yb, x2.narrow(0, r0, yb.size(0)), weight, bias, /*relu=*/!keep_mask);
      if (keep_mask) epilogue(yb, r0);
    }
  }
  return {in_shape_of(y, x), mask};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> linear_relu(const at::Tensor& x, const at::Tensor& weight,
                                               const OptTensor& bias) {
  return linear_relu_impl(x, weight, bias, /*keep_mask=*/true);
}

at::Tensor linear_relu_output(const at::Tensor& x, const at::Tensor& weight,
                              const OptTensor& bias) {
  return std::get<0>(linear_relu_impl(x, weight, bias, /*keep_mask=*/false));
}

void relu_rows_(at::Tensor& y) {
  TORCH_INTERNAL_ASSERT(y.dim() == 2 && y.is_contiguous());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, y.scalar_type(), "relu_rows_", [&] {
    relu_mask_epilogue<scalar_t>(y.data_ptr<scalar_t>(), nullptr, y.size(0), y.size(1));
  });
}

}  // namespace cpu

TORCH_LIBRARY_IMPL(twolayer_ext, CPU, m) {
  m.impl("linear_relu", &cpu::linear_relu);
  m.impl("linear_relu_output", &cpu::linear_relu_output);
}

}  // namespace twolayer_ext
