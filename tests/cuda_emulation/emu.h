// A host emulation of the CUDA that the fused-MLP kernels use, so that their own source
// (csrc/cuda/fused_mlp_*.cuh) runs on a machine without a GPU: one thread block at a time,
// its 256 threads as std::threads, __syncthreads a std::barrier, shared memory one static
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
#define __device__
#define __host__
#define __global__
#define __shared__
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

constexpr int kBlockThreads = 256;
constexpr int kWarpSize = 32;
constexpr size_t kSharedBytes = 256 << 10;  // more than any GPU gives a block

inline thread_local uint3 thread_idx{0, 0, 0};
inline uint3 block_idx{0, 0, 0}, grid_dim{1, 1, 1}, block_dim{kBlockThreads, 1, 1};
inline std::barrier<>* block_barrier = nullptr;
inline std::barrier<>* warp_barriers[kBlockThreads / kWarpSize] = {};

inline void syncthreads() { block_barrier->arrive_and_wait(); }
inline void syncwarp() { warp_barriers[thread_idx.x / kWarpSize]->arrive_and_wait(); }
inline int lane() { return static_cast<int>(thread_idx.x % kWarpSize); }

[[noreturn]] inline void trap() {
  std::fprintf(stderr, "__trap() reached\n");
  std::abort();
}

// Runs body() (a kernel call) on `grid` blocks of 256 threads, one block after the other,
// with `smem_bytes` of dynamic shared memory at `smem` (which is kSharedBytes long).
template <typename Body>
void launch(unsigned grid, size_t smem_bytes, unsigned char* smem, const Body& body) {
  if (smem_bytes > kSharedBytes) {
    std::fprintf(stderr, "launch: %zu bytes of shared memory\n", smem_bytes);
    std::abort();
  }
  std::barrier<> block(kBlockThreads);
  std::vector<std::unique_ptr<std::barrier<>>> warps;
  for (int w = 0; w < kBlockThreads / kWarpSize; ++w) {
    warps.push_back(std::make_unique<std::barrier<>>(kWarpSize));
    warp_barriers[w] = warps.back().get();
  }
  block_barrier = &block;
  grid_dim = {grid, 1, 1};
  const auto prepare = [&](unsigned b) {  // between blocks: every thread is at a barrier
    ASAN_UNPOISON_MEMORY_REGION(smem, kSharedBytes);
    std::memset(smem, 0xff, kSharedBytes);  // NaN in every floating type
    ASAN_POISON_MEMORY_REGION(smem + smem_bytes, kSharedBytes - smem_bytes);
    block_idx = {b, 0, 0};
  };
  prepare(0);
  std::barrier<> next(kBlockThreads);
  std::vector<std::thread> threads;
  for (unsigned t = 0; t < kBlockThreads; ++t) {
    threads.emplace_back([&, t] {
      thread_idx = {t, 0, 0};
      for (unsigned b = 0; b < grid; ++b) {
        body();
        next.arrive_and_wait();
        if (t == 0 && b + 1 < grid) prepare(b + 1);
        next.arrive_and_wait();
      }
    });
  }
  for (auto& th : threads) th.join();
  ASAN_UNPOISON_MEMORY_REGION(smem, kSharedBytes);
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
