// fused_mlp.h: the fully fused two-layer kernels.
//
// A thread block is 256 threads, seen as a 16 x 16 grid. Every product is block_product,
// which shares the output among the threads as tiles or as whole dot products and sums in
// k order in the accumulation type (float for the 16-bit types, as cuBLAS does; double for
// float64). Shared memory (twolayer_ext/fused_mlp.h, cuda_mlp::layout) holds
//   w1s [hidden][in + 1], w2s [out][hidden + 1], b1s, b2s   the weights, loaded once
//   xs [32][in + 1], hs [32][hidden + 1]                      one block of rows
//   gs [32][out + 1], ghs [32][hidden + 1]                    backward: grad_out, grad_hidden
//   gw1 [hidden][in], gb1, gw2 [out][hidden], gb2             backward: running sums
// (rows padded by one element: the products read them down a column, and a stride of
// width + 1 puts the 16 threads of a half-warp on 16 different banks).
//
// Every value that torch stores in the tensor's dtype (hidden, out, grad_hidden, the
// gradients) is rounded to that dtype here before it is used again, so the results are
// torch's layer-by-layer results up to the order of the sums.
//
// SIMT arithmetic, no tensor cores: float32 runs in full float32 whatever torch's TF32 flag
// says. Unmeasured on a GPU so far, hence opt-in (cuda_fused_mlp; docs/gpu-verification.md).
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>

#include "dtypes.cuh"
#include "fused_mlp.h"
#include "twolayer_ext/fused_mlp.h"

namespace twolayer_ext::cuda {
namespace {

using cuda_mlp::kBlockRows;

constexpr int kEdge = 16;                // the thread grid's side
constexpr int kThreads = kEdge * kEdge;  // threads per block
// Outputs per thread in a tiled step of block_product: 32 x 64 per block, so that a block
// of 32 rows is one step high.
constexpr int kTileRows = 2, kTileCols = 4;
// Thread blocks at most. The forward's blocks loop over the row blocks; the backward's
// each take a chunk of consecutive row blocks and write one set of partial weight
// gradients (at 32 -> 128 -> 3 in float: 1024 x 18 KB).
constexpr int64_t kMaxBlocks = 1024;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

__device__ __forceinline__ float fma_acc(float a, float b, float c) { return __fmaf_rn(a, b, c); }
__device__ __forceinline__ double fma_acc(double a, double b, double c) {
  return __fma_rn(a, b, c);
}

// A 2-D operand in global memory, any strides.
template <typename T>
struct Strided {
  const T* p;
  int64_t s0, s1;
  __device__ __forceinline__ T at(int64_t i, int64_t j) const { return p[i * s0 + j * s1]; }
};

template <typename T>
Strided<T> strided(const at::Tensor& t) {
  return {static_cast<const T*>(t.data_ptr()), t.stride(0), t.stride(1)};
}

template <typename T>
struct MlpParams {
  Strided<T> x, w1, w2;
  const T* b1;  // null: no bias (forward, and backward when it recomputes hidden)
  const T* b2;  // null: no bias (forward)
  int64_t b1_stride, b2_stride;
  int64_t rows;
  int in, hidden, out;
  // Forward.
  T* y;             // [rows, out], contiguous
  T* hidden_store;  // [rows, hidden], contiguous, or null
  // Backward.
  Strided<T> grad_out;
  Strided<T> hidden_saved;             // p null: recompute each block's hidden activation
  T* grad_x;                           // [rows, in], contiguous, or null
  typename Numeric<T>::acc* partials;  // [chunks, layout.partials]
  int64_t blocks_per_chunk;
  bool need_gw1, need_gb1, need_gw2, need_gb2;
};

// For every (m, n) in [0, M) x [0, N): epi(m, n, sum over k of A[m a_m + k a_k] B[n b_n + k b_k]),
// with A and B in shared memory, summed in k order by fused multiply-adds from 0 (so the
// bits do not depend on which thread computes what). No barrier inside; whenever M and N
// are the same, the same thread computes the same (m, n).
//
// Two ways to share the outputs among the threads, whichever issues fewer shared-memory
// loads and FMAs per thread: tiles of 32 x 64, each thread 2 x 4 outputs (6 loads for 8
// FMAs per k), or a flat list of whole dot products (2 loads per FMA), which wins for small
// or narrow outputs (a tile 3 columns wide would leave 13 of every 16 threads idle).
template <typename Acc, typename Epi>
__device__ __forceinline__ void block_product(int M, int N, int K, const Acc* A, int a_m, int a_k,
                                              const Acc* B, int b_n, int b_k, Epi&& epi) {
  constexpr int kRows = kEdge * kTileRows, kCols = kEdge * kTileCols;
  const int steps = ((M + kRows - 1) / kRows) * ((N + kCols - 1) / kCols);
  const int dots = (M * N + kThreads - 1) / kThreads;
  if (dots * 3 < steps * (kTileRows + kTileCols + kTileRows * kTileCols)) {
    for (int e = threadIdx.x; e < M * N; e += kThreads) {
      const int m = e / N, n = e % N;
      Acc acc = Acc(0);
      for (int k = 0; k < K; ++k) acc = fma_acc(A[m * a_m + k * a_k], B[n * b_n + k * b_k], acc);
      epi(m, n, acc);
    }
    return;
  }
  const int tx = threadIdx.x % kEdge, ty = threadIdx.x / kEdge;
  for (int m0 = 0; m0 < M; m0 += kRows) {
    for (int n0 = 0; n0 < N; n0 += kCols) {
      Acc acc[kTileRows][kTileCols];
#pragma unroll
      for (int i = 0; i < kTileRows; ++i) {
#pragma unroll
        for (int c = 0; c < kTileCols; ++c) acc[i][c] = Acc(0);
      }
      for (int k = 0; k < K; ++k) {
        Acc a[kTileRows], b[kTileCols];
#pragma unroll
        for (int i = 0; i < kTileRows; ++i) {
          const int m = m0 + ty + kEdge * i;
          a[i] = m < M ? A[m * a_m + k * a_k] : Acc(0);
        }
#pragma unroll
        for (int c = 0; c < kTileCols; ++c) {
          const int n = n0 + tx + kEdge * c;
          b[c] = n < N ? B[n * b_n + k * b_k] : Acc(0);
        }
#pragma unroll
        for (int i = 0; i < kTileRows; ++i) {
#pragma unroll
          for (int c = 0; c < kTileCols; ++c) acc[i][c] = fma_acc(a[i], b[c], acc[i][c]);
        }
      }
#pragma unroll
      for (int i = 0; i < kTileRows; ++i) {
#pragma unroll
        for (int c = 0; c < kTileCols; ++c) {
          const int m = m0 + ty + kEdge * i, n = n0 + tx + kEdge * c;
          if (m < M && n < N) epi(m, n, acc[i][c]);
        }
      }
    }
  }
}

// dst [rows][cols + 1] (shared, Acc) = src's rows [r0, r0 + rows), read in row order.
template <typename T, typename Acc>
__device__ void load_rows(Acc* dst, const Strided<T>& src, int64_t r0, int rows, int cols) {
  for (int e = threadIdx.x; e < rows * cols; e += kThreads) {
    const int r = e / cols, c = e % cols;
    dst[r * (cols + 1) + c] = Numeric<T>::to_acc(src.at(r0 + r, c));
  }
}

template <typename T, typename Acc>
__device__ void load_bias(Acc* dst, const T* bias, int64_t stride, int n) {
  if (bias == nullptr) return;
  for (int j = threadIdx.x; j < n; j += kThreads) dst[j] = Numeric<T>::to_acc(bias[j * stride]);
}

// dst[c] += the sum of src [rows][cols + 1]'s column c, rows in order.
template <typename Acc>
__device__ void add_column_sums(Acc* dst, const Acc* src, int rows, int cols) {
  for (int c = threadIdx.x; c < cols; c += kThreads) {
    Acc sum = Acc(0);
    for (int r = 0; r < rows; ++r) sum += src[r * (cols + 1) + c];
    dst[c] += sum;
  }
}

// hs = relu(xs w1ᵀ + b1) for one block of rows, rounded to T as torch stores it before its
// ReLU (which maps -0 and negatives to +0 and keeps NaN). The forward and backward's
// recomputation both run this, so a recomputed block has the forward's bits.
template <typename T, typename Acc>
__device__ void hidden_block(const MlpParams<T>& p, const Acc* w1s, const Acc* b1s, const Acc* xs,
                             Acc* hs, int rows) {
  block_product(rows, p.hidden, p.in, xs, p.in + 1, 1, w1s, p.in + 1, 1, [&](int m, int n, Acc v) {
    if (p.b1 != nullptr) v += b1s[n];
    const Acc h = Numeric<T>::to_acc(Numeric<T>::from_acc(v));
    hs[m * (p.hidden + 1) + n] = h <= Acc(0) ? Acc(0) : h;
  });
}

template <typename T>
__global__ void __launch_bounds__(kThreads) fused_mlp_forward_kernel(const MlpParams<T> p) {
  using Acc = typename Numeric<T>::acc;
  extern __shared__ __align__(16) unsigned char smem[];
  Acc* const s = reinterpret_cast<Acc*>(smem);
  const cuda_mlp::Layout l = cuda_mlp::layout(p.in, p.hidden, p.out, MlpPass::kForward);
  Acc *const w1s = s + l.w1, *const w2s = s + l.w2, *const b1s = s + l.b1, *const b2s = s + l.b2;
  Acc *const xs = s + l.x, *const hs = s + l.h;
  load_rows(w1s, p.w1, 0, p.hidden, p.in);
  load_rows(w2s, p.w2, 0, p.out, p.hidden);
  load_bias(b1s, p.b1, p.b1_stride, p.hidden);
  load_bias(b2s, p.b2, p.b2_stride, p.out);
  const int64_t blocks = (p.rows + kBlockRows - 1) / kBlockRows;
  for (int64_t block = blockIdx.x; block < blocks; block += gridDim.x) {
    const int64_t r0 = block * kBlockRows;
    const int rows = static_cast<int>(min(kBlockRows, p.rows - r0));
    __syncthreads();  // the weights are in; nobody reads the previous block's rows any more
    load_rows(xs, p.x, r0, rows, p.in);
    __syncthreads();
    hidden_block(p, w1s, b1s, xs, hs, rows);
    __syncthreads();
    if (p.hidden_store != nullptr) {
      T* const dst = p.hidden_store + r0 * p.hidden;
      for (int e = threadIdx.x; e < rows * p.hidden; e += kThreads) {
        dst[e] = Numeric<T>::from_acc(hs[(e / p.hidden) * (p.hidden + 1) + e % p.hidden]);
      }
    }
    block_product(rows, p.out, p.hidden, hs, p.hidden + 1, 1, w2s, p.hidden + 1, 1,
                  [&](int m, int n, Acc v) {
                    if (p.b2 != nullptr) v += b2s[n];
                    p.y[(r0 + m) * p.out + n] = Numeric<T>::from_acc(v);
                  });
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) fused_mlp_backward_kernel(const MlpParams<T> p) {
  using Acc = typename Numeric<T>::acc;
  extern __shared__ __align__(16) unsigned char smem[];
  Acc* const s = reinterpret_cast<Acc*>(smem);
  const cuda_mlp::Layout l = cuda_mlp::layout(p.in, p.hidden, p.out, MlpPass::kBackward);
  Acc *const w1s = s + l.w1, *const w2s = s + l.w2, *const b1s = s + l.b1;
  Acc *const xs = s + l.x, *const hs = s + l.h, *const gs = s + l.g, *const ghs = s + l.gh;
  Acc *const gw1 = s + l.gw1, *const gb1 = s + l.gb1, *const gw2 = s + l.gw2,
             *const gb2 = s + l.gb2;
  const bool recompute = p.hidden_saved.p == nullptr;
  const bool layer1 = p.grad_x != nullptr || p.need_gw1 || p.need_gb1;
  load_rows(w1s, p.w1, 0, p.hidden, p.in);
  load_rows(w2s, p.w2, 0, p.out, p.hidden);
  if (recompute) load_bias(b1s, p.b1, p.b1_stride, p.hidden);
  for (int e = threadIdx.x; e < l.partials; e += kThreads) gw1[e] = Acc(0);

  const int64_t blocks = (p.rows + kBlockRows - 1) / kBlockRows;
  const int64_t first = blockIdx.x * p.blocks_per_chunk;
  const int64_t last = min(blocks, first + p.blocks_per_chunk);
  for (int64_t block = first; block < last; ++block) {
    const int64_t r0 = block * kBlockRows;
    const int rows = static_cast<int>(min(kBlockRows, p.rows - r0));
    __syncthreads();  // as in the forward
    load_rows(gs, p.grad_out, r0, rows, p.out);
    if (recompute || p.need_gw1) load_rows(xs, p.x, r0, rows, p.in);
    if (!recompute) load_rows(hs, p.hidden_saved, r0, rows, p.hidden);
    __syncthreads();
    if (recompute) {
      hidden_block(p, w1s, b1s, xs, hs, rows);
      __syncthreads();
    }
    // Layer 2: grad_b2, grad_w2 = grad_outᵀ hidden.
    if (p.need_gb2) add_column_sums(gb2, gs, rows, p.out);
    if (p.need_gw2) {
      block_product(p.out, p.hidden, rows, gs, 1, p.out + 1, hs, 1, p.hidden + 1,
                    [&](int m, int n, Acc v) { gw2[m * p.hidden + n] += v; });
    }
    if (!layer1) continue;
    // grad_hidden = grad_out w2, rounded as torch's product is, then the ReLU's select
    // (threshold_backward: kept where hidden > 0 or NaN, else 0 even if it is NaN).
    block_product(rows, p.hidden, p.out, gs, p.out + 1, 1, w2s, 1, p.hidden + 1,
                  [&](int m, int n, Acc v) {
                    const int i = m * (p.hidden + 1) + n;
                    ghs[i] = hs[i] <= Acc(0) ? Acc(0) : Numeric<T>::to_acc(Numeric<T>::from_acc(v));
                  });
    __syncthreads();
    // Layer 1: grad_b1, grad_w1 = grad_hiddenᵀ x, grad_x = grad_hidden w1.
    if (p.need_gb1) add_column_sums(gb1, ghs, rows, p.hidden);
    if (p.need_gw1) {  // as grad_w1ᵀ = xᵀ grad_hidden: in (32, 64) fills a tile's rows better
      block_product(p.in, p.hidden, rows, xs, 1, p.in + 1, ghs, 1, p.hidden + 1,
                    [&](int m, int n, Acc v) { gw1[n * p.in + m] += v; });
    }
    if (p.grad_x != nullptr) {
      block_product(
          rows, p.in, p.hidden, ghs, p.hidden + 1, 1, w1s, 1, p.in + 1,
          [&](int m, int n, Acc v) { p.grad_x[(r0 + m) * p.in + n] = Numeric<T>::from_acc(v); });
    }
  }
  __syncthreads();
  Acc* const dst = p.partials + blockIdx.x * l.partials;
  for (int e = threadIdx.x; e < l.partials; e += kThreads) dst[e] = gw1[e];
}

// The weight gradients' places in a row of partial sums (cuda_mlp::Layout's order: gw1,
// gb1, gw2, gb2), and where each goes (null: not asked for).
template <typename T>
struct Segments {
  int64_t begin[5];  // begin[4]: the row's length
  T* dst[4];
};

// dst = the partial sums added over chunks in chunk order, rounded to T once.
template <typename T>
__global__ void reduce_partials_kernel(const typename Numeric<T>::acc* partials, int64_t chunks,
                                       const Segments<T> seg) {
  using Acc = typename Numeric<T>::acc;
  const int64_t n = seg.begin[4];
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < n;
       e += int64_t(gridDim.x) * blockDim.x) {
    int s = 0;
    while (e >= seg.begin[s + 1]) ++s;
    if (seg.dst[s] == nullptr) continue;
    Acc sum = partials[e];
    for (int64_t c = 1; c < chunks; ++c) sum += partials[c * n + e];
    seg.dst[s][e - seg.begin[s]] = Numeric<T>::from_acc(sum);
  }
}

template <typename T>
T* mutable_ptr(const at::Tensor& t) {
  return t.defined() ? static_cast<T*>(t.data_ptr()) : nullptr;
}

template <typename T>
MlpParams<T> network_params(const at::Tensor& x, const at::Tensor& w1, const OptTensor& b1,
                            const at::Tensor& w2, const OptTensor& b2) {
  MlpParams<T> p{};
  p.x = strided<T>(x);
  p.w1 = strided<T>(w1);
  p.w2 = strided<T>(w2);
  p.b1 = present(b1) ? static_cast<const T*>(b1->data_ptr()) : nullptr;
  p.b1_stride = present(b1) ? b1->stride(0) : 0;
  p.b2 = present(b2) ? static_cast<const T*>(b2->data_ptr()) : nullptr;
  p.b2_stride = present(b2) ? b2->stride(0) : 0;
  p.rows = x.size(0);
  p.in = static_cast<int>(w1.size(1));
  p.hidden = static_cast<int>(w1.size(0));
  p.out = static_cast<int>(w2.size(0));
  return p;
}

template <typename T>
void launch(void (*kernel)(MlpParams<T>), int64_t grid, int64_t smem_bytes, const MlpParams<T>& p) {
  // Above 48 KiB a kernel must opt in to its dynamic shared memory.
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(smem_bytes)));
  kernel<<<static_cast<unsigned>(grid), kThreads, static_cast<size_t>(smem_bytes),
           c10::cuda::getCurrentCUDAStream()>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

at::ScalarType acc_type(at::ScalarType dtype) {
  return dtype == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace

void fused_mlp_forward(at::Tensor& out, const at::Tensor& x, const at::Tensor& w1,
                       const OptTensor& b1, const at::Tensor& w2, const OptTensor& b2,
                       at::Tensor* hidden) {
  const cuda_mlp::Layout l =
      cuda_mlp::layout(w1.size(1), w1.size(0), w2.size(0), MlpPass::kForward);
  const int64_t grid = std::min(ceil_div(x.size(0), kBlockRows), kMaxBlocks);
  const int64_t acc_bytes = c10::elementSize(acc_type(x.scalar_type()));
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "fused_mlp_forward", [&] {
        using T = typename DeviceType<scalar_t>::type;
        MlpParams<T> p = network_params<T>(x, w1, b1, w2, b2);
        p.y = mutable_ptr<T>(out);
        p.hidden_store = hidden != nullptr ? mutable_ptr<T>(*hidden) : nullptr;
        launch(fused_mlp_forward_kernel<T>, grid, l.total * acc_bytes, p);
      });
}

std::tuple<OptTensor, OptTensor, OptTensor, OptTensor, OptTensor> fused_mlp_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w1, const OptTensor& b1,
    const at::Tensor& w2, const at::Tensor* hidden, std::array<bool, 5> output_mask) {
  const auto [need_gx, need_gw1, need_gb1, need_gw2, need_gb2] = output_mask;
  const int64_t rows = x.size(0), in = w1.size(1), hidden_f = w1.size(0), out_f = w2.size(0);
  const cuda_mlp::Layout l = cuda_mlp::layout(in, hidden_f, out_f, MlpPass::kBackward);
  const int64_t blocks = ceil_div(rows, kBlockRows);
  const int64_t per_chunk = ceil_div(blocks, std::min(blocks, kMaxBlocks));
  const int64_t chunks = ceil_div(blocks, per_chunk);
  const at::ScalarType acc = acc_type(x.scalar_type());
  const auto maybe = [&](bool needed, at::IntArrayRef shape) {
    return needed ? at::empty(shape, x.options()) : at::Tensor();
  };
  const at::Tensor gx = maybe(need_gx, {rows, in}), gw1 = maybe(need_gw1, {hidden_f, in}),
                   gb1 = maybe(need_gb1, {hidden_f}), gw2 = maybe(need_gw2, {out_f, hidden_f}),
                   gb2 = maybe(need_gb2, {out_f});
  const bool weights = need_gw1 || need_gb1 || need_gw2 || need_gb2;
  const at::Tensor partials = at::empty({chunks, l.partials}, x.options().dtype(acc));
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "fused_mlp_backward", [&] {
        using T = typename DeviceType<scalar_t>::type;
        using Acc = typename Numeric<T>::acc;
        MlpParams<T> p =
            network_params<T>(x, w1, hidden == nullptr ? b1 : std::nullopt, w2, std::nullopt);
        p.grad_out = strided<T>(grad_out);
        p.hidden_saved = hidden != nullptr ? strided<T>(*hidden) : Strided<T>{nullptr, 0, 0};
        p.grad_x = mutable_ptr<T>(gx);
        p.partials = static_cast<Acc*>(partials.data_ptr());
        p.blocks_per_chunk = per_chunk;
        p.need_gw1 = need_gw1, p.need_gb1 = need_gb1, p.need_gw2 = need_gw2, p.need_gb2 = need_gb2;
        launch(fused_mlp_backward_kernel<T>, chunks, l.total * static_cast<int64_t>(sizeof(Acc)),
               p);
        if (!weights) return;
        const int64_t gw1_n = hidden_f * in, gw2_n = out_f * hidden_f;
        const Segments<T> seg{
            {0, gw1_n, gw1_n + hidden_f, gw1_n + hidden_f + gw2_n, l.partials},
            {mutable_ptr<T>(gw1), mutable_ptr<T>(gb1), mutable_ptr<T>(gw2), mutable_ptr<T>(gb2)}};
        const int64_t reduce_grid = std::min(ceil_div(l.partials, kThreads), kMaxBlocks);
        reduce_partials_kernel<T><<<static_cast<unsigned>(reduce_grid), kThreads, 0,
                                    c10::cuda::getCurrentCUDAStream()>>>(p.partials, chunks, seg);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  const auto opt = [](const at::Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; };
  return {opt(gx), opt(gw1), opt(gb1), opt(gw2), opt(gb2)};
}

}  // namespace twolayer_ext::cuda
