// Kernels of fused_passes.h. All are memory bound: one read (and at most one
// write) of each element, 64-bit indices, launches checked.
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "dtypes.cuh"
#include "fused_passes.h"
#include "twolayer_ext/tensor_util.h"

namespace twolayer_ext::cuda {
namespace {

constexpr int kThreads = 256;

unsigned grid_for(int64_t work) {
  return unsigned(std::min<int64_t>((work + kThreads - 1) / kThreads, 8192));
}

// One thread per mask byte: 8 consecutive columns of one row. With kApply the
// dropped elements are set to +0 (relu(-0.0) = 0, as torch); without it the
// output is only read (packing the bits of an existing ReLU output).
template <typename T, bool kApply>
__global__ void relu_mask_kernel(T* y, int64_t rows, int64_t n, int64_t nbytes,
                                 uint8_t* __restrict__ mask) {
  for (int64_t b = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; b < rows * nbytes;
       b += int64_t(gridDim.x) * blockDim.x) {
    const int64_t i = b / nbytes, j0 = (b % nbytes) * 8;
    T* row = y + i * n;
    uint8_t bits = 0;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      if (j0 + j < n) {
        // !(v <= 0) keeps NaN, as torch.relu and threshold_backward do.
        const bool keep = !(Numeric<T>::to_acc(row[j0 + j]) <= 0);
        bits |= uint8_t(keep) << j;
        if (kApply && !keep) row[j0 + j] = Numeric<T>::zero();
      }
    }
    if (mask != nullptr) mask[b] = bits;
  }
}

// Where the gradient passes, per element (i, j) of the layer output.
struct KeepAll {
  __device__ bool operator()(int64_t, int64_t) const { return true; }
};
struct KeepPacked {
  const uint8_t* mask;
  int64_t ld;
  __device__ bool operator()(int64_t i, int64_t j) const { return mask_bit(mask, ld, i, j); }
};
template <typename T>
struct KeepOutput {
  const T* y;
  int64_t ld;
  __device__ bool operator()(int64_t i, int64_t j) const {
    return !(Numeric<T>::to_acc(y[i * ld + j]) <= 0);
  }
};

// Block: 32 columns x 8 row lanes; grid: column strips x row chunks. Each block
// masks its chunk's rows of its strip and sums them per column: lane partials
// added in lane order, then (more than one chunk) the chunk partials in chunk
// order by sum_chunks_kernel. Every sum has a fixed order: deterministic.
constexpr int kStrip = 32, kLanes = 8;

template <typename T, typename Keep>
__global__ void masked_grad_kernel(const T* g, int64_t gs0, int64_t gs1, Keep keep, int64_t rows,
                                   int64_t n, int64_t chunk_rows, T* gm,
                                   typename Numeric<T>::acc* partial, T* grad_bias) {
  using acc_t = typename Numeric<T>::acc;
  __shared__ acc_t lane_sum[kLanes][kStrip + 1];
  const int64_t col = int64_t(blockIdx.x) * kStrip + threadIdx.x;
  const int64_t r0 = int64_t(blockIdx.y) * chunk_rows;
  const int64_t r1 = r0 + chunk_rows < rows ? r0 + chunk_rows : rows;
  acc_t s = 0;
  if (col < n) {
    // g and gm may be the same memory: each element is read before it is written,
    // by the same thread.
    for (int64_t i = r0 + threadIdx.y; i < r1; i += kLanes) {
      const T v = keep(i, col) ? g[i * gs0 + col * gs1] : Numeric<T>::zero();
      if (gm != nullptr) gm[i * n + col] = v;
      s += Numeric<T>::to_acc(v);
    }
  }
  if (partial == nullptr && grad_bias == nullptr) return;  // uniform over the block
  lane_sum[threadIdx.y][threadIdx.x] = s;
  __syncthreads();
  if (threadIdx.y == 0 && col < n) {
    acc_t t = 0;
#pragma unroll
    for (int l = 0; l < kLanes; ++l) t += lane_sum[l][threadIdx.x];
    if (partial != nullptr) {
      partial[int64_t(blockIdx.y) * n + col] = t;
    } else {
      grad_bias[col] = Numeric<T>::from_acc(t);
    }
  }
}

template <typename T>
__global__ void sum_chunks_kernel(const typename Numeric<T>::acc* __restrict__ partial,
                                  int64_t chunks, int64_t n, T* __restrict__ grad_bias) {
  for (int64_t col = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; col < n;
       col += int64_t(gridDim.x) * blockDim.x) {
    typename Numeric<T>::acc t = 0;
    for (int64_t c = 0; c < chunks; ++c) t += partial[c * n + col];
    grad_bias[col] = Numeric<T>::from_acc(t);
  }
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
    relu_mask_kernel<T, true>
        <<<grid_for(rows * mask_bytes(n)), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            static_cast<T*>(y.data_ptr()), rows, n, mask_bytes(n),
            mask.defined() ? mask.data_ptr<uint8_t>() : nullptr);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

at::Tensor pack_relu_mask(const at::Tensor& output) {
  TORCH_INTERNAL_ASSERT(output.dim() == 2 && output.is_contiguous());
  const int64_t rows = output.size(0), n = output.size(1);
  at::Tensor mask = at::empty({rows, mask_bytes(n)}, output.options().dtype(at::kByte));
  if (rows * n == 0) return mask;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, output.scalar_type(), "pack_relu_mask", [&] {
        using T = typename DeviceType<scalar_t>::type;
        // kApply = false: the kernel only reads the output.
        relu_mask_kernel<T, false>
            <<<grid_for(rows * mask_bytes(n)), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
                static_cast<T*>(output.data_ptr()), rows, n, mask_bytes(n),
                mask.data_ptr<uint8_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return mask;
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
