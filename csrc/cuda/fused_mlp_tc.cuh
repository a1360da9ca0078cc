// The fused two-layer kernels on tensor cores (WMMA, sm_80+): float16 and bfloat16, and
// float32 as TF32 where torch allows it. Operands stay in their dtype in shared memory, as
// the fragments load them (cuda_mlp::tc_layout):
//   w1s [pad16(hidden)][ld_in], w2s [pad16(out)][ld_hidden]     the weights, loaded once
//   xs [32][ld_in], hs [32][ld_hidden]                           one block of rows
//   gs [32][ld_out], ghs [32][ld_hidden]                         backward: grad_out, grad_hidden
//   scratch [32][ld_scratch] float                               a product's float result
//   b1s, b2s float; gw1 [pad16(hidden)][ld_gw1], gw2 [pad16(out)][ld_gw2], gb1, gb2 float
// Widths are padded with zeros to the 16-element tile edge, and so are rows past the
// last one of a short block: a padded element only ever multiplies or adds a zero (never a
// leftover NaN). Every product is tc_product: each of the 8 warps takes whole 16 x 16
// output tiles, always the same ones for the same shape, so the sums are deterministic.
// Included by fused_mlp.cu only.
#pragma once

#include <mma.h>

#include <type_traits>

#include "fused_mlp_common.cuh"

namespace twolayer_ext::cuda::fused_mlp::tc {

namespace wmma = nvcuda::wmma;
using cuda_mlp::pad16;

constexpr int kWarps = kThreads / 32;

// The fragment element type and k step for T: T itself, 16 deep, for float16/bfloat16;
// TF32, 8 deep, for float.
template <typename T>
struct Fragment {
  using type = T;
  static constexpr int kDepth = 16;
};
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800  // TF32 fragments exist from sm_80 on
template <>
struct Fragment<float> {
  using type = wmma::precision::tf32;
  static constexpr int kDepth = 8;
};
#endif

// Element (row, col) of a matrix stored row- or column-major with leading dimension ld.
template <typename Layout, typename T>
__device__ __forceinline__ const T* at(const T* p, int ld, int row, int col) {
  return std::is_same_v<Layout, wmma::row_major> ? p + row * ld + col : p + col * ld + row;
}

// C [M][N] (float, row-major, ldc) = A [M][K] B [K][N], plus C's own values if `accumulate`;
// M, N and K multiples of 16. Warp w computes the output tiles w, w + 8, ... in row-major
// tile order. No barrier inside.
template <typename LayoutA, typename LayoutB, typename T>
__device__ void tc_product(int M, int N, int K, const T* A, int lda, const T* B, int ldb, float* C,
                           int ldc, bool accumulate) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  using F = typename Fragment<T>::type;
  constexpr int kDepth = Fragment<T>::kDepth;
  const int tiles_n = N / 16, tiles = (M / 16) * tiles_n;
  for (int t = threadIdx.x / 32; t < tiles; t += kWarps) {
    const int m0 = (t / tiles_n) * 16, n0 = (t % tiles_n) * 16;
    wmma::fragment<wmma::accumulator, 16, 16, kDepth, float> acc;
    if (accumulate) {
      wmma::load_matrix_sync(acc, C + m0 * ldc + n0, ldc, wmma::mem_row_major);
    } else {
      wmma::fill_fragment(acc, 0.f);
    }
    for (int k0 = 0; k0 < K; k0 += kDepth) {
      wmma::fragment<wmma::matrix_a, 16, 16, kDepth, F, LayoutA> a;
      wmma::fragment<wmma::matrix_b, 16, 16, kDepth, F, LayoutB> b;
      wmma::load_matrix_sync(a, at<LayoutA>(A, lda, m0, k0), lda);
      wmma::load_matrix_sync(b, at<LayoutB>(B, ldb, k0, n0), ldb);
      if constexpr (std::is_same_v<T, float>) {
        for (int i = 0; i < a.num_elements; ++i) a.x[i] = wmma::__float_to_tf32(a.x[i]);
        for (int i = 0; i < b.num_elements; ++i) b.x[i] = wmma::__float_to_tf32(b.x[i]);
      }
      wmma::mma_sync(acc, a, b, acc);
    }
    wmma::store_matrix_sync(C + m0 * ldc + n0, acc, ldc, wmma::mem_row_major);
  }
#else
  __trap();  // the host launches these kernels on sm_80+ only (check_tensor_core_arch)
#endif
}

// dst [rows_p][ld] = src's rows [r0, r0 + rows) x columns [0, cols), zero up to rows_p x cols_p.
template <typename T>
__device__ void load_padded(T* dst, int ld, const Strided<T>& src, int64_t r0, int rows, int cols,
                            int rows_p, int cols_p) {
  for (int e = threadIdx.x; e < rows_p * cols_p; e += kThreads) {
    const int r = e / cols_p, c = e % cols_p;
    dst[r * ld + c] = r < rows && c < cols ? src.at(r0 + r, c) : Numeric<T>::zero();
  }
}

// dst[c] += the sum over rows [0, rows) of src [.][ld]'s column c, in row order.
template <typename T>
__device__ void add_column_sums(float* dst, const T* src, int ld, int rows, int cols) {
  for (int c = threadIdx.x; c < cols; c += kThreads) {
    float sum = 0.f;
    for (int r = 0; r < rows; ++r) sum += Numeric<T>::to_acc(src[r * ld + c]);
    dst[c] += sum;
  }
}

// Pointers into one block's dynamic shared memory.
template <typename T>
struct Smem {
  T *w1, *w2, *x, *h, *g, *gh;
  float *scratch, *b1, *b2, *gw1, *gb1, *gw2, *gb2;
  __device__ Smem(unsigned char* base, const cuda_mlp::TcLayout& l)
      : w1(reinterpret_cast<T*>(base + l.w1)),
        w2(reinterpret_cast<T*>(base + l.w2)),
        x(reinterpret_cast<T*>(base + l.x)),
        h(reinterpret_cast<T*>(base + l.h)),
        g(reinterpret_cast<T*>(base + l.g)),
        gh(reinterpret_cast<T*>(base + l.gh)),
        scratch(reinterpret_cast<float*>(base + l.scratch)),
        b1(reinterpret_cast<float*>(base + l.b1)),
        b2(reinterpret_cast<float*>(base + l.b2)),
        gw1(reinterpret_cast<float*>(base + l.gw1)),
        gb1(reinterpret_cast<float*>(base + l.gb1)),
        gw2(reinterpret_cast<float*>(base + l.gw2)),
        gb2(reinterpret_cast<float*>(base + l.gb2)) {}
};

// s.h = relu(s.x w1ᵀ + b1) for one block of rows, rounded to T as torch stores it before
// its ReLU (-0 and negatives become +0, NaN stays); zero past `rows` and `hidden`. The
// forward and the backward's recomputation both run this: the same bits. Ends with a
// barrier (s.h complete, s.scratch free).
template <typename T>
__device__ void hidden_block(const MlpParams<T>& p, const cuda_mlp::TcLayout& l, const Smem<T>& s,
                             int rows) {
  const int in_p = pad16(p.in), hidden_p = pad16(p.hidden);
  tc_product<wmma::row_major, wmma::col_major>(cuda_mlp::kBlockRows, hidden_p, in_p, s.x, l.ld_in,
                                               s.w1, l.ld_in, s.scratch, l.ld_scratch, false);
  __syncthreads();
  for (int e = threadIdx.x; e < kBlockRows * hidden_p; e += kThreads) {
    const int r = e / hidden_p, j = e % hidden_p;
    T h = Numeric<T>::zero();
    if (r < rows && j < p.hidden) {
      float v = s.scratch[r * l.ld_scratch + j];
      if (p.b1 != nullptr) v += s.b1[j];
      const T rounded = Numeric<T>::from_acc(v);
      if (!(Numeric<T>::to_acc(rounded) <= 0.f)) h = rounded;
    }
    s.h[r * l.ld_hidden + j] = h;
  }
  __syncthreads();
}

template <typename T>
__global__ void __launch_bounds__(kThreads) fused_mlp_forward_kernel(const MlpParams<T> p) {
  extern __shared__ __align__(128) unsigned char smem[];
  const cuda_mlp::TcLayout l =
      cuda_mlp::tc_layout(p.in, p.hidden, p.out, MlpPass::kForward, sizeof(T));
  const Smem<T> s(smem, l);
  const int in_p = pad16(p.in), hidden_p = pad16(p.hidden), out_p = pad16(p.out);
  load_padded(s.w1, l.ld_in, p.w1, 0, p.hidden, p.in, hidden_p, in_p);
  load_padded(s.w2, l.ld_hidden, p.w2, 0, p.out, p.hidden, out_p, hidden_p);
  load_bias(s.b1, p.b1, p.b1_stride, p.hidden);
  load_bias(s.b2, p.b2, p.b2_stride, p.out);
  const RowBlocks mine = forward_row_blocks(p);
  for (int64_t block = mine.begin; block < mine.end; block += mine.step) {
    const int64_t r0 = block * kBlockRows;
    const int rows = rows_of(p, block);
    __syncthreads();  // the weights are in; the previous block's scratch has been read
    load_padded(s.x, l.ld_in, p.x, r0, rows, p.in, kBlockRows, in_p);
    __syncthreads();
    hidden_block(p, l, s, rows);
    if (p.hidden_store != nullptr) {
      T* const dst = p.hidden_store + r0 * p.hidden;
      for (int e = threadIdx.x; e < rows * p.hidden; e += kThreads) {
        dst[e] = s.h[(e / p.hidden) * l.ld_hidden + e % p.hidden];
      }
    }
    tc_product<wmma::row_major, wmma::col_major>(kBlockRows, out_p, hidden_p, s.h, l.ld_hidden,
                                                 s.w2, l.ld_hidden, s.scratch, l.ld_scratch, false);
    __syncthreads();
    for (int e = threadIdx.x; e < rows * p.out; e += kThreads) {
      const int r = e / p.out, o = e % p.out;
      float v = s.scratch[r * l.ld_scratch + o];
      if (p.b2 != nullptr) v += s.b2[o];
      p.y[(r0 + r) * p.out + o] = Numeric<T>::from_acc(v);
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads) fused_mlp_backward_kernel(const MlpParams<T> p) {
  extern __shared__ __align__(128) unsigned char smem[];
  const cuda_mlp::TcLayout l =
      cuda_mlp::tc_layout(p.in, p.hidden, p.out, MlpPass::kBackward, sizeof(T));
  const Smem<T> s(smem, l);
  const int in_p = pad16(p.in), hidden_p = pad16(p.hidden), out_p = pad16(p.out);
  const bool recompute = p.hidden_saved.p == nullptr;
  const bool layer1 = p.grad_x != nullptr || p.need_gw1 || p.need_gb1;
  load_padded(s.w1, l.ld_in, p.w1, 0, p.hidden, p.in, hidden_p, in_p);
  load_padded(s.w2, l.ld_hidden, p.w2, 0, p.out, p.hidden, out_p, hidden_p);
  if (recompute) load_bias(s.b1, p.b1, p.b1_stride, p.hidden);
  for (int e = threadIdx.x; e < hidden_p * l.ld_gw1; e += kThreads) s.gw1[e] = 0.f;
  for (int e = threadIdx.x; e < out_p * l.ld_gw2; e += kThreads) s.gw2[e] = 0.f;
  for (int e = threadIdx.x; e < p.hidden; e += kThreads) s.gb1[e] = 0.f;
  for (int e = threadIdx.x; e < p.out; e += kThreads) s.gb2[e] = 0.f;

  const RowBlocks mine = backward_row_blocks(p);
  for (int64_t block = mine.begin; block < mine.end; block += mine.step) {
    const int64_t r0 = block * kBlockRows;
    const int rows = rows_of(p, block);
    __syncthreads();  // as in the forward
    load_padded(s.g, l.ld_out, p.grad_out, r0, rows, p.out, kBlockRows, out_p);
    if (recompute || p.need_gw1) load_padded(s.x, l.ld_in, p.x, r0, rows, p.in, kBlockRows, in_p);
    if (!recompute) {
      load_padded(s.h, l.ld_hidden, p.hidden_saved, r0, rows, p.hidden, kBlockRows, hidden_p);
    }
    __syncthreads();
    if (recompute) hidden_block(p, l, s, rows);
    // Layer 2: grad_b2, grad_w2 += grad_outᵀ hidden.
    if (p.need_gb2) add_column_sums(s.gb2, s.g, l.ld_out, rows, p.out);
    if (p.need_gw2) {
      tc_product<wmma::col_major, wmma::row_major>(out_p, hidden_p, kBlockRows, s.g, l.ld_out, s.h,
                                                   l.ld_hidden, s.gw2, l.ld_gw2, true);
    }
    if (!layer1) continue;
    // grad_hidden = grad_out w2, rounded as torch's product is, then the ReLU's select
    // (threshold_backward: kept where hidden > 0 or NaN, else 0 even if it is NaN).
    tc_product<wmma::row_major, wmma::row_major>(kBlockRows, hidden_p, out_p, s.g, l.ld_out, s.w2,
                                                 l.ld_hidden, s.scratch, l.ld_scratch, false);
    __syncthreads();
    for (int e = threadIdx.x; e < kBlockRows * hidden_p; e += kThreads) {
      const int r = e / hidden_p, j = e % hidden_p;
      const int i = r * l.ld_hidden + j;
      const bool keep = r < rows && j < p.hidden && !(Numeric<T>::to_acc(s.h[i]) <= 0.f);
      s.gh[i] = keep ? Numeric<T>::from_acc(s.scratch[r * l.ld_scratch + j]) : Numeric<T>::zero();
    }
    __syncthreads();
    // Layer 1: grad_b1, grad_w1 += grad_hiddenᵀ x, grad_x = grad_hidden w1.
    if (p.need_gb1) add_column_sums(s.gb1, s.gh, l.ld_hidden, rows, p.hidden);
    if (p.need_gw1) {
      tc_product<wmma::col_major, wmma::row_major>(hidden_p, in_p, kBlockRows, s.gh, l.ld_hidden,
                                                   s.x, l.ld_in, s.gw1, l.ld_gw1, true);
    }
    if (p.grad_x != nullptr) {
      tc_product<wmma::row_major, wmma::row_major>(kBlockRows, in_p, hidden_p, s.gh, l.ld_hidden,
                                                   s.w1, l.ld_in, s.scratch, l.ld_scratch, false);
      __syncthreads();
      for (int e = threadIdx.x; e < rows * p.in; e += kThreads) {
        const int r = e / p.in, k = e % p.in;
        p.grad_x[(r0 + r) * p.in + k] = Numeric<T>::from_acc(s.scratch[r * l.ld_scratch + k]);
      }
    }
  }
  __syncthreads();
  // This chunk's partial sums, packed as cuda_mlp::partials orders them.
  const cuda_mlp::Partials sums = cuda_mlp::partials(p.in, p.hidden, p.out);
  const int64_t* const begin = sums.begin;
  float* const dst = p.partials + blockIdx.x * begin[4];
  for (int64_t e = threadIdx.x; e < begin[4]; e += kThreads) {
    float v;
    if (e < begin[1]) {
      v = s.gw1[(e / p.in) * l.ld_gw1 + e % p.in];
    } else if (e < begin[2]) {
      v = s.gb1[e - begin[1]];
    } else if (e < begin[3]) {
      v = s.gw2[((e - begin[2]) / p.hidden) * l.ld_gw2 + (e - begin[2]) % p.hidden];
    } else {
      v = s.gb2[e - begin[3]];
    }
    dst[e] = v;
  }
}

}  // namespace twolayer_ext::cuda::fused_mlp::tc
