// The general fused GEMM (see fused_gemm.h for what it computes): any strides,
// any dtype. The packed ReLU mask is applied while A tiles are loaded (no
// masked copy of grad_y); the epilogue is gemm_epilogue.cuh.
//
// A and B are read element by element through arbitrary (int64) strides, so
// transposed or sliced views need no .contiguous() copy. 16-bit types and TF32
// use tensor cores through WMMA (fp32 accumulation); float without TF32 and
// double use FMA. 64x64x32 tiles, 256 threads, no software pipelining: this is
// the fallback and the float32/float64 path; 16-bit operands whose layout
// allows 16-byte loads take pipelined_gemm.cuh instead.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/util/Exception.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdint>
#include <string>
#include <type_traits>

#include "dtypes.cuh"
#include "fused_gemm.h"
#include "gemm_epilogue.cuh"

namespace twolayer_ext::cuda::tiled {

constexpr int kTileM = 64, kTileN = 64, kTileK = 32, kThreads = 256;
static_assert(kTileM == kTileN, "load_tile serves both operands");

template <typename T, bool kWmma>
struct TileCfg {
  using acc_t = typename Numeric<T>::acc;
  // Row pitch of the A/B tiles: WMMA wants a multiple of 16 bytes; the FMA
  // path pads by one element to keep column reads free of bank conflicts.
  static constexpr int kLds = kWmma ? kTileK + 16 / int(sizeof(T)) : kTileK + 1;
  static constexpr int kLdc = kWmma ? kTileN + 4 : kTileN + 1;
  static constexpr int kTileBytes = 2 * kTileM * kLds * int(sizeof(T));
  static constexpr int kCBytes = kTileM * kLdc * int(sizeof(acc_t));
  static constexpr int kSmemBytes = kTileBytes > kCBytes ? kTileBytes : kCBytes;
};

// Loads a kTileM x kTileK tile of X(row, k) = x[row * s_row + k * s_k] into s[row][k].
// Consecutive threads walk whichever index has unit stride, so both row-major
// and transposed operands are read coalesced.
template <typename T>
__device__ __forceinline__ void load_tile(T* __restrict__ s, int lds, const T* __restrict__ x,
                                          int64_t s_row, int64_t s_k, int64_t rows, int64_t K,
                                          int64_t row0, int64_t k0, const uint8_t* mask,
                                          int64_t mask_ld, bool mask_t) {
  const bool row_fast = s_row == 1 && s_k != 1;
  for (int i = threadIdx.x; i < kTileM * kTileK; i += kThreads) {
    const int r = row_fast ? i % kTileM : i / kTileK;
    const int c = row_fast ? i / kTileM : i % kTileK;
    const int64_t gr = row0 + r, gk = k0 + c;
    T v = Numeric<T>::zero();
    if (gr < rows && gk < K) {
      const bool keep = mask == nullptr || (mask_t ? mask_bit(mask, mask_ld, gk, gr)
                                                   : mask_bit(mask, mask_ld, gr, gk));
      if (keep) v = x[gr * s_row + gk * s_k];
    }
    s[r * lds + c] = v;
  }
}

template <typename T, bool kWmma, bool kTf32>
__global__ void __launch_bounds__(kThreads) tiled_gemm_kernel(const GemmParams p) {
  using Cfg = TileCfg<T, kWmma>;
  using acc_t = typename Cfg::acc_t;
  constexpr int kLds = Cfg::kLds, kLdc = Cfg::kLdc;
  __shared__ __align__(128) unsigned char smem[Cfg::kSmemBytes];
  T* As = reinterpret_cast<T*>(smem);
  T* Bs = As + kTileM * kLds;
  acc_t* Cs = reinterpret_cast<acc_t*>(smem);  // reused once the K loop is done

  const int64_t m0 = int64_t(blockIdx.x) * kTileM, n0 = int64_t(blockIdx.y) * kTileN;
  const T* A = static_cast<const T*>(p.a);
  const T* B = static_cast<const T*>(p.b);

  if constexpr (kWmma) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
    namespace wmma = nvcuda::wmma;
    constexpr int kWk = kTf32 ? 8 : 16;
    using frag_t = std::conditional_t<kTf32, wmma::precision::tf32, T>;
    const int warp = threadIdx.x / 32, wm = warp / 2, wn = warp % 2;  // 4 x 2 warps, 16 x 32 each
    wmma::fragment<wmma::accumulator, 16, 16, kWk, float> acc[2];
    wmma::fill_fragment(acc[0], 0.f);
    wmma::fill_fragment(acc[1], 0.f);
    for (int64_t k0 = 0; k0 < p.K; k0 += kTileK) {
      load_tile(As, kLds, A, p.a_sm, p.a_sk, p.M, p.K, m0, k0, p.mask_a, p.mask_a_ld, p.mask_a_t);
      load_tile(Bs, kLds, B, p.b_sn, p.b_sk, p.N, p.K, n0, k0, nullptr, 0, false);
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kTileK; kk += kWk) {
        wmma::fragment<wmma::matrix_a, 16, 16, kWk, frag_t, wmma::row_major> af;
        wmma::load_matrix_sync(af, As + wm * 16 * kLds + kk, kLds);
        if constexpr (kTf32) {
          for (int t = 0; t < af.num_elements; ++t) af.x[t] = wmma::__float_to_tf32(af.x[t]);
        }
#pragma unroll
        for (int f = 0; f < 2; ++f) {
          // B tile is stored [n][k], i.e. column-major K x N.
          wmma::fragment<wmma::matrix_b, 16, 16, kWk, frag_t, wmma::col_major> bf;
          wmma::load_matrix_sync(bf, Bs + (wn * 32 + f * 16) * kLds + kk, kLds);
          if constexpr (kTf32) {
            for (int t = 0; t < bf.num_elements; ++t) bf.x[t] = wmma::__float_to_tf32(bf.x[t]);
          }
          wmma::mma_sync(acc[f], af, bf, acc[f]);
        }
      }
      __syncthreads();
    }
    for (int f = 0; f < 2; ++f)
      wmma::store_matrix_sync(Cs + wm * 16 * kLdc + wn * 32 + f * 16, acc[f], kLdc,
                              wmma::mem_row_major);
#else
    __trap();  // tensor-core paths need sm_80+; the host refuses to launch them there
#endif
  } else {
    const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;  // 4x4 outputs per thread
    acc_t acc[4][4] = {};
    for (int64_t k0 = 0; k0 < p.K; k0 += kTileK) {
      load_tile(As, kLds, A, p.a_sm, p.a_sk, p.M, p.K, m0, k0, p.mask_a, p.mask_a_ld, p.mask_a_t);
      load_tile(Bs, kLds, B, p.b_sn, p.b_sk, p.N, p.K, n0, k0, nullptr, 0, false);
      __syncthreads();
#pragma unroll 8
      for (int k = 0; k < kTileK; ++k) {
        acc_t a[4], b[4];
#pragma unroll
        for (int i = 0; i < 4; ++i) a[i] = Numeric<T>::to_acc(As[(ty + 16 * i) * kLds + k]);
#pragma unroll
        for (int j = 0; j < 4; ++j) b[j] = Numeric<T>::to_acc(Bs[(tx + 16 * j) * kLds + k]);
#pragma unroll
        for (int i = 0; i < 4; ++i)
#pragma unroll
          for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
      }
      __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 4; ++j) Cs[(ty + 16 * i) * kLdc + tx + 16 * j] = acc[i][j];
  }
  __syncthreads();

  gemm_epilogue<T, kTileM, kTileN, kLdc>(Cs, p, m0, n0);
}

// Launches the right instantiation for T on `stream`; a no-op for empty outputs.
// `tf32` selects tensor cores for float (torch.backends.cuda.matmul.allow_tf32).
template <typename T>
void launch_tiled_gemm(const GemmParams& p, bool tf32, cudaStream_t stream) {
  if (p.M == 0 || p.N == 0) return;
  const int64_t m_tiles = (p.M + kTileM - 1) / kTileM, n_tiles = (p.N + kTileN - 1) / kTileN;
  TORCH_CHECK(m_tiles <= int64_t(INT32_MAX) && n_tiles <= 65535, "twolayer_ext: GEMM of size ", p.M,
              " x ", p.N, " exceeds the CUDA grid limits");
  const dim3 grid{unsigned(m_tiles), unsigned(n_tiles)};
  if constexpr (std::is_same_v<T, float>) {
    if (tf32) {
      tiled_gemm_kernel<float, true, true><<<grid, kThreads, 0, stream>>>(p);
    } else {
      tiled_gemm_kernel<float, false, false><<<grid, kThreads, 0, stream>>>(p);
    }
  } else if constexpr (std::is_same_v<T, double>) {
    tiled_gemm_kernel<double, false, false><<<grid, kThreads, 0, stream>>>(p);
  } else {
    tiled_gemm_kernel<T, true, false><<<grid, kThreads, 0, stream>>>(p);
  }
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace twolayer_ext::cuda::tiled
