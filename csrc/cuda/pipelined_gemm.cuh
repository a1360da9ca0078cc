// The fast path of the fused GEMM (fused_gemm.h) for float16/bfloat16 operands
// that can be read in 16-byte pieces: each of A and B has a unit-stride index
// (either one) and a stride that is a multiple of 8 elements, and is 16-byte
// aligned. Those are the layouts the ops produce for contiguous tensors:
// x @ Wᵀ, grad_y @ W and grad_yᵀ @ x each hit one of the four instantiations.
//
// 128x128x32 block tiles, 8 warps of 64x32 on WMMA (fp32 accumulation), and a
// 4-stage cp.async pipeline: the tiles for steps k+1..k+3 are in flight while
// step k is multiplied; two blocks per SM (128 registers per thread). On an
// H100, 128x128x64 tiles with 3 stages and 4 warps of 64x64 were both slower
// (docs/gpu-verification.md). Each tile keeps its global layout in shared
// memory, so a 16-byte global piece is a 16-byte shared piece and WMMA reads
// the tile as row- or column-major accordingly. Out-of-range pieces are zero-filled by
// cp.async itself (src-size < 16), which also serves ragged K, M and N.
//
// Backward prologue: once a grad_y tile has landed, each thread clears the
// elements of its 16-byte pieces whose packed ReLU mask bit is clear (the bits
// of a piece are one mask byte), so no masked copy of grad_y exists. With
// GemmParams::bias_grad the blocks of the first column of tiles also sum the
// masked A rows: the bias gradient comes out of the grad_weight GEMM itself.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>
#include <mma.h>

#include <cstdint>
#include <type_traits>

#include "dtypes.cuh"
#include "fused_gemm.h"
#include "gemm_epilogue.cuh"

namespace twolayer_ext::cuda::pipelined {

constexpr int kTileM = 128, kTileN = 128, kTileK = 32, kStages = 4, kThreads = 256;
constexpr int kPad = 8;           // elements; keeps rows 16-byte aligned, staggers banks
constexpr int kLdc = kTileN + 4;  // fp32 accumulator tile pitch
static_assert(kThreads == 2 * kTileM, "row sums: two threads per row of A");

// One kRows x kTileK operand tile in shared memory. kKContig: stored [row][k]
// (k contiguous, as in global memory); else [k][row].
template <bool kKContig, int kRows>
struct Tile {
  static constexpr int kLd = kKContig ? kTileK + kPad : kRows + kPad;
  static constexpr int kElems = kKContig ? kRows * kLd : kTileK * kLd;
  static constexpr int kPerLine = (kKContig ? kTileK : kRows) / 8;  // 16-byte pieces per line
  static constexpr int kPieces = kRows * kTileK / 8;
  static __device__ __forceinline__ int at(int row, int k) {
    return kKContig ? row * kLd + k : k * kLd + row;
  }
  // (row, k) of the first element of piece c; its 8 elements run along the line.
  static __device__ __forceinline__ void piece(int c, int& row, int& k) {
    if (kKContig) {
      row = c / kPerLine;
      k = (c % kPerLine) * 8;
    } else {
      k = c / kPerLine;
      row = (c % kPerLine) * 8;
    }
  }
};

template <bool kAKContig, bool kBKContig>
struct Smem {
  using TA = Tile<kAKContig, kTileM>;
  using TB = Tile<kBKContig, kTileN>;
  static constexpr int kStageElems = TA::kElems + TB::kElems;
  static constexpr int kPipeBytes = kStages * kStageElems * 2;
  static constexpr int kCBytes = kTileM * kLdc * 4;  // reuses the pipeline buffers
  static constexpr int kRowSumOffset = kPipeBytes > kCBytes ? kPipeBytes : kCBytes;
  static constexpr int kBytes = kRowSumOffset + 2 * kTileM * 4;
};

__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem, int src_bytes) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(src_bytes)
               : "memory");
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
template <int kPending>
__device__ __forceinline__ void cp_async_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending) : "memory");
#endif
}

// Starts the copy of tile X(row0.., k0..) of X(row, k) = x[row * s_row + k * s_k]
// (rows x K) into s; the unit-stride index is k if kKContig, else row.
template <typename T, bool kKContig, int kRows>
__device__ __forceinline__ void load_tile_async(T* s, const T* x, int64_t s_row, int64_t s_k,
                                                int64_t rows, int64_t K, int64_t row0, int64_t k0) {
  using TL = Tile<kKContig, kRows>;
  static_assert(TL::kPieces % kThreads == 0, "whole pieces per thread");
#pragma unroll
  for (int i = 0; i < TL::kPieces / kThreads; ++i) {
    int r, k;
    TL::piece(threadIdx.x + i * kThreads, r, k);
    const int64_t gr = row0 + r, gk = k0 + k;
    int64_t n = kKContig ? (gr < rows ? K - gk : 0) : (gk < K ? rows - gr : 0);
    n = n < 0 ? 0 : (n > 8 ? 8 : n);
    const T* src = n > 0 ? x + gr * s_row + gk * s_k : x;  // nothing is read when n == 0
    cp_async_16(s + TL::at(r, k), src, int(n) * int(sizeof(T)));
  }
}

// Clears the elements of a landed A tile whose ReLU mask bit is clear. The
// mask's packed index runs along the tile's lines (checked on the host), so
// each 16-byte piece takes one mask byte.
template <typename T, bool kAKContig>
__device__ __forceinline__ void mask_tile(T* s, const GemmParams& p, int64_t m0, int64_t k0) {
  using TL = Tile<kAKContig, kTileM>;
#pragma unroll
  for (int i = 0; i < TL::kPieces / kThreads; ++i) {
    int r, k;
    TL::piece(threadIdx.x + i * kThreads, r, k);
    const int64_t gm = m0 + r, gk = k0 + k;
    if (gm >= p.M || gk >= p.K) continue;  // zero-filled already
    const uint8_t bits =
        kAKContig ? p.mask_a[gm * p.mask_a_ld + (gk >> 3)] : p.mask_a[gk * p.mask_a_ld + (gm >> 3)];
    if (bits == 0xFF) continue;
    T* line = s + TL::at(r, k);
#pragma unroll
    for (int j = 0; j < 8; ++j)
      if (!((bits >> j) & 1)) line[j] = Numeric<T>::zero();
  }
}

template <typename T, bool kAKContig, bool kBKContig>
__global__ void __launch_bounds__(kThreads, 2) pipelined_gemm_kernel(const GemmParams p) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  namespace wmma = nvcuda::wmma;
  using L = Smem<kAKContig, kBKContig>;
  using TA = typename L::TA;
  using TB = typename L::TB;
  extern __shared__ __align__(128) unsigned char smem[];
  T* pipe = reinterpret_cast<T*>(smem);
  float* Cs = reinterpret_cast<float*>(smem);
  float* row_part = reinterpret_cast<float*>(smem + L::kRowSumOffset);

  const int64_t m0 = int64_t(blockIdx.x) * kTileM, n0 = int64_t(blockIdx.y) * kTileN;
  const T* A = static_cast<const T*>(p.a);
  const T* B = static_cast<const T*>(p.b);
  const int64_t k_tiles = (p.K + kTileK - 1) / kTileK;
  const auto load = [&](int64_t kt) {
    T* s = pipe + int(kt % kStages) * L::kStageElems;
    load_tile_async<T, kAKContig, kTileM>(s, A, p.a_sm, p.a_sk, p.M, p.K, m0, kt * kTileK);
    load_tile_async<T, kBKContig, kTileN>(s + TA::kElems, B, p.b_sn, p.b_sk, p.N, p.K, n0,
                                          kt * kTileK);
  };
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < k_tiles) load(s);
    cp_async_commit();  // empty groups keep the wait count below uniform
  }

  const bool row_sums = p.bias_grad != nullptr && blockIdx.y == 0;
  const int sum_row = threadIdx.x % kTileM, sum_k0 = (threadIdx.x / kTileM) * (kTileK / 2);
  float row_sum = 0.f;

  using LayoutA = std::conditional_t<kAKContig, wmma::row_major, wmma::col_major>;
  using LayoutB = std::conditional_t<kBKContig, wmma::col_major, wmma::row_major>;
  const int warp = threadIdx.x / 32, wm = warp / 4, wn = warp % 4;  // 2 x 4 warps, 64 x 32 each
  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[4][2];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.f);

  for (int64_t kt = 0; kt < k_tiles; ++kt) {
    cp_async_wait<kStages - 2>();  // this thread's pieces of tile kt have landed
    __syncthreads();               // everyone's have; and tile kt-1 is no longer read
    T* As = pipe + int(kt % kStages) * L::kStageElems;
    const T* Bs = As + TA::kElems;
    if (p.mask_a != nullptr) {
      mask_tile<T, kAKContig>(As, p, m0, kt * kTileK);
      __syncthreads();
    }
    if (kt + kStages - 1 < k_tiles) load(kt + kStages - 1);  // into tile kt-1's buffer
    cp_async_commit();
    if (row_sums) {
#pragma unroll
      for (int k = 0; k < kTileK / 2; ++k)
        row_sum += Numeric<T>::to_acc(As[TA::at(sum_row, sum_k0 + k)]);
    }
#pragma unroll
    for (int kk = 0; kk < kTileK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, T, LayoutA> af[4];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, T, LayoutB> bf[2];
#pragma unroll
      for (int i = 0; i < 4; ++i)
        wmma::load_matrix_sync(af[i], As + TA::at(wm * 64 + i * 16, kk), TA::kLd);
#pragma unroll
      for (int j = 0; j < 2; ++j)
        wmma::load_matrix_sync(bf[j], Bs + TB::at(wn * 32 + j * 16, kk), TB::kLd);
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], af[i], bf[j], acc[i][j]);
    }
  }
  cp_async_wait<0>();
  __syncthreads();  // the pipeline buffers become the accumulator tile

#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
      wmma::store_matrix_sync(Cs + (wm * 64 + i * 16) * kLdc + wn * 32 + j * 16, acc[i][j], kLdc,
                              wmma::mem_row_major);
  if (row_sums) row_part[threadIdx.x] = row_sum;
  __syncthreads();
  if (row_sums && threadIdx.x < kTileM && m0 + threadIdx.x < p.M) {
    // The two halves in a fixed order: deterministic.
    static_cast<T*>(p.bias_grad)[m0 + threadIdx.x] =
        Numeric<T>::from_acc(row_part[threadIdx.x] + row_part[threadIdx.x + kTileM]);
  }
  gemm_epilogue<T, kTileM, kTileN, kLdc>(Cs, p, m0, n0);
#else
  __trap();  // sm_80+ only; the host never launches it on older GPUs
#endif
}

// 1: the k index has unit stride, 0: the row index has, -1: neither (or the
// other stride breaks 16-byte alignment).
inline int operand_layout(const void* ptr, int64_t s_row, int64_t s_k) {
  if ((reinterpret_cast<uintptr_t>(ptr) & 15) != 0) return -1;
  if (s_k == 1 && s_row % 8 == 0) return 1;
  if (s_row == 1 && s_k % 8 == 0) return 0;
  return -1;
}

template <typename T, bool kAKContig, bool kBKContig>
void launch(const GemmParams& p, dim3 grid, cudaStream_t stream) {
  constexpr int bytes = Smem<kAKContig, kBKContig>::kBytes;
  const auto kernel = pipelined_gemm_kernel<T, kAKContig, kBKContig>;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes));
  kernel<<<grid, kThreads, bytes, stream>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Launches the pipelined kernel and returns true if T and the operands allow
// it (see the top of this file and the caller's check for sm_80+); returns
// false, having done nothing, otherwise.
template <typename T>
bool try_launch(const GemmParams& p, cudaStream_t stream) {
  if constexpr (sizeof(T) != 2) {
    return false;
  } else {
    const int a = operand_layout(p.a, p.a_sm, p.a_sk);
    const int b = operand_layout(p.b, p.b_sn, p.b_sk);
    if (a < 0 || b < 0 || p.M <= 0 || p.N <= 0) return false;
    // The mask's packed index must run along A's contiguous index.
    if (p.mask_a != nullptr && p.mask_a_t == (a == 1)) return false;
    const int64_t m_tiles = (p.M + kTileM - 1) / kTileM, n_tiles = (p.N + kTileN - 1) / kTileN;
    if (m_tiles > int64_t(INT32_MAX) || n_tiles > 65535) return false;
    const dim3 grid{unsigned(m_tiles), unsigned(n_tiles)};
    if (a == 1 && b == 1) launch<T, true, true>(p, grid, stream);
    if (a == 1 && b == 0) launch<T, true, false>(p, grid, stream);
    if (a == 0 && b == 1) launch<T, false, true>(p, grid, stream);
    if (a == 0 && b == 0) launch<T, false, false>(p, grid, stream);
    return true;
  }
}

}  // namespace twolayer_ext::cuda::pipelined
