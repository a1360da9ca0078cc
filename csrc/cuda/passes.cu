// passes.h: the launches of the kernels in passes_kernels.cuh. All are memory
// bound: one read (and at most one write) of each element, 64-bit indices, launches checked.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "dtypes.cuh"
#include "passes.h"
#include "passes_kernels.cuh"
#include "twolayer_ext/tensor_util.h"

namespace twolayer_ext::cuda {
namespace {

using namespace passes;  // the kernels

constexpr int kThreads = 256;

unsigned grid_for(int64_t work) {
  return unsigned(std::min<int64_t>((work + kThreads - 1) / kThreads, 8192));
}

// Rows per chunk: 256 (enough chunks to fill the GPU at the large sizes, one
// chunk and one kernel at the tutorial's 64 rows), more only to stay within the
// grid's y limit. A function of `rows` only, so the summation order is too.
int64_t chunk_rows_for(int64_t rows) { return std::max<int64_t>(256, (rows + 65534) / 65535); }

template <typename T, typename Keep>
void launch_masked_grad(const at::Tensor& g, Keep keep, const at::Tensor& gm,
                        const at::Tensor& grad_bias) {
  using acc_t = typename Numeric<T>::acc;
  const int64_t rows = g.size(0), n = g.size(1);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const int64_t chunk = chunk_rows_for(rows), chunks = (rows + chunk - 1) / chunk;
  at::Tensor partial;
  if (grad_bias.defined() && chunks > 1) {
    partial = at::empty({chunks, n}, g.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
  }
  const dim3 block{kStrip, kLanes}, grid{unsigned((n + kStrip - 1) / kStrip), unsigned(chunks)};
  masked_grad_kernel<T, Keep><<<grid, block, 0, stream>>>(
      static_cast<const T*>(g.data_ptr()), g.stride(0), g.stride(1), keep, rows, n, chunk,
      gm.defined() ? static_cast<T*>(gm.data_ptr()) : nullptr,
      partial.defined() ? partial.data_ptr<acc_t>() : nullptr,
      grad_bias.defined() && !partial.defined() ? static_cast<T*>(grad_bias.data_ptr()) : nullptr);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  if (partial.defined()) {
    sum_chunks_kernel<T><<<grid_for(n), kThreads, 0, stream>>>(
        partial.data_ptr<acc_t>(), chunks, n, static_cast<T*>(grad_bias.data_ptr()));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

}  // namespace

void relu_mask_(at::Tensor& y, const at::Tensor& mask) {
  TORCH_INTERNAL_ASSERT(y.dim() == 2 && y.is_contiguous());
  const int64_t rows = y.size(0), n = y.size(1);
  if (rows * n == 0) return;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, y.scalar_type(), "relu_mask_", [&] {
    using T = typename DeviceType<scalar_t>::type;
    relu_mask_kernel<T>
        <<<grid_for(rows * mask_bytes(n)), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            static_cast<T*>(y.data_ptr()), rows, n, mask_bytes(n),
            mask.defined() ? mask.data_ptr<uint8_t>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

void mask_grad_and_reduce_bias(const at::Tensor& g, const ReluKeep& keep, const at::Tensor& gm,
                               const at::Tensor& grad_bias) {
  TORCH_INTERNAL_ASSERT(g.dim() == 2 && (!gm.defined() || gm.is_contiguous()));
  const int64_t rows = g.size(0), n = g.size(1);
  if (n == 0 || (!gm.defined() && !grad_bias.defined())) return;
  if (rows == 0) {
    if (grad_bias.defined()) grad_bias.zero_();  // a sum over no rows
    return;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, g.scalar_type(), "mask_grad_and_reduce_bias", [&] {
        using T = typename DeviceType<scalar_t>::type;
        if (keep.mask.defined()) {
          launch_masked_grad<T>(g, KeepPacked{keep.mask.data_ptr<uint8_t>(), mask_bytes(n)}, gm,
                                grad_bias);
        } else if (keep.output.defined()) {
          TORCH_INTERNAL_ASSERT(keep.output.is_contiguous());
          launch_masked_grad<T>(g, KeepOutput<T>{static_cast<const T*>(keep.output.data_ptr()), n},
                                gm, grad_bias);
        } else {
          launch_masked_grad<T>(g, KeepAll{}, gm, grad_bias);
        }
      });
}

}  // namespace twolayer_ext::cuda
