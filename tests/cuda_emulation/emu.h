// A host emulation of the CUDA that the fused-MLP kernels use, so that their own source
// (csrc/cuda/fused_mlp_*.cuh) runs on a machine without a GPU: one thread block at a time,
// its threads as std::threads, __syncthreads a std::barrier, shared memory one static
// array (poisoned for AddressSanitizer past what the launch asked for, and filled with NaN
// bytes before every block so that a read of something never written shows up as NaN),
// and WMMA (mma.h beside this file) as whole 16 x 16 tiles held by every lane of a warp.
//
// What it checks: indexing, shared-memory layout and bounds, the zero padding, the barriers'
// placement (run under ThreadSanitizer: a missing barrier between a write and another
// thread's read is a race there too), WMMA's alignment and leading-dimension rules, and the
// results against a float64 reference. What it cannot: timing, real warp scheduling,
// bank conflicts, register pressure, the exact rounding of tensor-core sums. Not a
// substitute for scripts/gpu_check.sh.
#pragma once

// Device qualifiers mean nothing on the host; defined before the CUDA headers see them.
// A kernel's static __shared__ array becomes a function-static one (one copy for all of a
// block's threads) where the including file defines __shared__ as static first; the fused
// MLP's `extern __shared__` needs it empty.
#define __device__
#define __host__
#define __global__
#ifndef __shared__
#define __shared__
#endif
#define __launch_bounds__(...)

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <sanitizer/asan_interface.h>
#include <vector_types.h>

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

namespace emu {

constexpr int kMaxBlockThreads = 1024;
constexpr int kWarpSize = 32;
constexpr size_t kSharedBytes = 256 << 10;  // more than any GPU gives a block

inline thread_local uint3 thread_idx{0, 0, 0};
inline uint3 block_idx{0, 0, 0}, grid_dim{1, 1, 1}, block_dim{1, 1, 1};
inline std::barrier<>* block_barrier = nullptr;
inline std::barrier<>* warp_barriers[kMaxBlockThreads / kWarpSize] = {};

// The thread's index in its block, x fastest (as warps are formed).
inline unsigned linear_thread() { return thread_idx.x + block_dim.x * thread_idx.y; }
inline void syncthreads() { block_barrier->arrive_and_wait(); }
inline void syncwarp() { warp_barriers[linear_thread() / kWarpSize]->arrive_and_wait(); }
inline int lane() { return static_cast<int>(linear_thread() % kWarpSize); }

[[noreturn]] inline void trap() {
  std::fprintf(stderr, "__trap() reached\n");
  std::abort();
}

// Runs body() (a kernel call) on grid_x x grid_y blocks of block_x x block_y threads (a
// multiple of 32), one block after the other, with `smem_bytes` of dynamic shared memory at
// `smem` (kSharedBytes long; may be null when smem_bytes is 0).
template <typename Body>
void launch(uint3 grid, uint3 block, size_t smem_bytes, unsigned char* smem, const Body& body) {
  const unsigned threads = block.x * block.y;
  if (smem_bytes > kSharedBytes || threads % kWarpSize != 0 || threads > kMaxBlockThreads) {
    std::fprintf(stderr, "launch: %zu bytes of shared memory, %u threads\n", smem_bytes, threads);
    std::abort();
  }
  std::barrier<> barrier(threads);
  std::vector<std::unique_ptr<std::barrier<>>> warps;
  for (unsigned w = 0; w < threads / kWarpSize; ++w) {
    warps.push_back(std::make_unique<std::barrier<>>(kWarpSize));
    warp_barriers[w] = warps.back().get();
  }
  block_barrier = &barrier;
  grid_dim = {grid.x, grid.y, 1};
  block_dim = {block.x, block.y, 1};
  const unsigned blocks = grid.x * grid.y;
  const auto prepare = [&](unsigned b) {  // between blocks: every thread is at a barrier
    if (smem != nullptr) {
      ASAN_UNPOISON_MEMORY_REGION(smem, kSharedBytes);
      std::memset(smem, 0xff, kSharedBytes);  // NaN in every floating type
      ASAN_POISON_MEMORY_REGION(smem + smem_bytes, kSharedBytes - smem_bytes);
    }
    block_idx = {b % grid.x, b / grid.x, 0};
  };
  prepare(0);
  std::barrier<> next(threads);
  std::vector<std::thread> pool;
  for (unsigned t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      thread_idx = {t % block.x, t / block.x, 0};
      for (unsigned b = 0; b < blocks; ++b) {
        body();
        next.arrive_and_wait();
        if (t == 0 && b + 1 < blocks) prepare(b + 1);
        next.arrive_and_wait();
      }
    });
  }
  for (auto& th : pool) th.join();
  if (smem != nullptr) ASAN_UNPOISON_MEMORY_REGION(smem, kSharedBytes);
}

// One-dimensional grid and block.
template <typename Body>
void launch(unsigned grid, unsigned block, size_t smem_bytes, unsigned char* smem,
            const Body& body) {
  launch(uint3{grid, 1, 1}, uint3{block, 1, 1}, smem_bytes, smem, body);
}

}  // namespace emu

#define threadIdx (::emu::thread_idx)
#define blockIdx (::emu::block_idx)
#define gridDim (::emu::grid_dim)
#define blockDim (::emu::block_dim)
#define __syncthreads() ::emu::syncthreads()
#define __trap() ::emu::trap()

inline float __fmaf_rn(float a, float b, float c) { return std::fmaf(a, b, c); }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
using std::min;
