// The fused two-layer kernels on CUDA cores (SIMT): float32 in full precision and float64,
// every operand converted to the accumulation type as it enters shared memory
// (cuda_mlp::layout):
//   w1s [hidden][in + 1], w2s [out][hidden + 1], b1s, b2s   the weights, loaded once
//   xs [32][in + 1], hs [32][hidden + 1]                      one block of rows
//   gs [32][out + 1], ghs [32][hidden + 1]                    backward: grad_out, grad_hidden
//   gw1 [hidden][in], gb1, gw2 [out][hidden], gb2             backward: running sums
// (rows padded by one element: the products read them down a column, and a stride of
// width + 1 puts the 16 threads of a half-warp on 16 different banks). Every product is
// block_product, 256 threads seen as a 16 x 16 grid. Included by fused_mlp.cu only.
#pragma once

#include "fused_mlp_common.cuh"

namespace twolayer_ext::cuda::fused_mlp::simt {

constexpr int kEdge = 16;  // the thread grid's side: kEdge * kEdge == kThreads
static_assert(kEdge * kEdge == kThreads);
// Outputs per thread in a tiled step of block_product: 32 x 64 per block, so that a block
// of 32 rows is one step high.
constexpr int kTileRows = 2, kTileCols = 4;

__device__ __forceinline__ float fma_acc(float a, float b, float c) { return __fmaf_rn(a, b, c); }
__device__ __forceinline__ double fma_acc(double a, double b, double c) {
  return __fma_rn(a, b, c);
}

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
  extern __shared__ __align__(128) unsigned char smem[];
  Acc* const s = reinterpret_cast<Acc*>(smem);
  const cuda_mlp::Layout l = cuda_mlp::layout(p.in, p.hidden, p.out, MlpPass::kForward);
  Acc *const w1s = s + l.w1, *const w2s = s + l.w2, *const b1s = s + l.b1, *const b2s = s + l.b2;
  Acc *const xs = s + l.x, *const hs = s + l.h;
  load_rows(w1s, p.w1, 0, p.hidden, p.in);
  load_rows(w2s, p.w2, 0, p.out, p.hidden);
  load_bias(b1s, p.b1, p.b1_stride, p.hidden);
  load_bias(b2s, p.b2, p.b2_stride, p.out);
  const RowBlocks mine = forward_row_blocks(p);
  for (int64_t block = mine.begin; block < mine.end; block += mine.step) {
    const int64_t r0 = block * kBlockRows;
    const int rows = rows_of(p, block);
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
  extern __shared__ __align__(128) unsigned char smem[];
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

  const RowBlocks mine = backward_row_blocks(p);
  for (int64_t block = mine.begin; block < mine.end; block += mine.step) {
    const int64_t r0 = block * kBlockRows;
    const int rows = rows_of(p, block);
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

}  // namespace twolayer_ext::cuda::fused_mlp::simt
