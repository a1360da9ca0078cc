// A host emulation of the CUDA that the fused-MLP kernels use, so that their own source
// (csrc/cuda/fused_mlp_*.cuh) runs on a machine without a GPU: one thread block at a time,
// its threads as fibers (ucontext) taking turns on one OS thread, __syncthreads and the
// warp barriers fiber barriers, shared memory one static array (poisoned for AddressSanitizer
// past what the launch asked for, and filled with NaN bytes before every block so that a
// read of something never written shows up as NaN), and WMMA (mma.h beside this file) as
// whole 16 x 16 tiles held by every lane of a warp.
//
// Fibers, not std::threads: a barrier is then a few context switches in user space instead
// of waking hundreds of OS threads. ThreadSanitizer still sees each fiber as a thread of its
// own (its fiber API), with switches that imply no ordering: only a barrier orders one
// fiber's accesses before another's, so a missing barrier between a write and another
// thread's read is reported as a race.
//
// What it checks: indexing, shared-memory layout and bounds, the zero padding, the barriers'
// placement (run under ThreadSanitizer), a barrier not reached by every thread of a block
// (reported and aborted), WMMA's alignment and leading-dimension rules, and the results
// against a float64 reference. What it cannot: timing, real warp scheduling, bank
// conflicts, register pressure, the exact rounding of tensor-core sums. Not a substitute for
// scripts/gpu_check.sh.
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
#include <sanitizer/common_interface_defs.h>
#include <sanitizer/tsan_interface.h>
#include <ucontext.h>
#include <vector_types.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>

namespace emu {

constexpr int kMaxBlockThreads = 1024;
constexpr int kWarpSize = 32;
constexpr size_t kSharedBytes = 256 << 10;  // more than any GPU gives a block
// Each fiber's stack: the kernels' locals (WMMA fragments are 1 KiB each here), grown by
// the sanitizers' redzones.
constexpr size_t kStackBytes = 256 << 10;

// The sanitizers' annotations, compiled to nothing where that sanitizer is not built in.
#if defined(__SANITIZE_ADDRESS__)
inline void asan_start_switch(void** fake, const void* bottom, size_t size) {
  __sanitizer_start_switch_fiber(fake, bottom, size);
}
inline void asan_finish_switch(void* fake, const void** bottom, size_t* size) {
  __sanitizer_finish_switch_fiber(fake, bottom, size);
}
#else
inline void asan_start_switch(void**, const void*, size_t) {}
inline void asan_finish_switch(void*, const void**, size_t*) {}
#endif
#if defined(__SANITIZE_THREAD__)
inline void* tsan_current() { return __tsan_get_current_fiber(); }
inline void* tsan_create() { return __tsan_create_fiber(0); }
inline void tsan_destroy(void* f) { __tsan_destroy_fiber(f); }
// Switches carry no happens-before: only the barriers below order the fibers' accesses.
inline void tsan_switch(void* f) { __tsan_switch_to_fiber(f, __tsan_switch_to_fiber_no_sync); }
inline void tsan_release(void* a) { __tsan_release(a); }
inline void tsan_acquire(void* a) { __tsan_acquire(a); }
#else
inline void* tsan_current() { return nullptr; }
inline void* tsan_create() { return nullptr; }
inline void tsan_destroy(void*) {}
inline void tsan_switch(void*) {}
inline void tsan_release(void*) {}
inline void tsan_acquire(void*) {}
#endif

// One emulated CUDA thread. Its fields are written by the scheduler between blocks (ordered
// before the fiber's reads by block_start below).
struct Fiber {
  ucontext_t context;
  std::unique_ptr<char[]> stack{new char[kStackBytes]};
  void* tsan = tsan_create();
  void* asan_fake_stack = nullptr;
  uint3 idx{0, 0, 0};
  std::atomic<bool> done{false};  // set by the fiber, read by the scheduler: no ordering
  long syncthreads_calls = 0;     // in this block
  Fiber() = default;
  Fiber(const Fiber&) = delete;
  Fiber& operator=(const Fiber&) = delete;
  ~Fiber() { tsan_destroy(tsan); }
};

// A barrier for `expected` fibers. Its counters are relaxed atomics: the fibers touch them
// in turn, and ThreadSanitizer must not count them as the kernel's races nor take them as
// ordering. The ordering a barrier gives is a release by every arriving fiber and an
// acquire by every leaving one, on an address of its own per generation: a fiber that
// leaves late must not acquire what a fast one released at the next barrier (that would
// hide a missing barrier in between). Two addresses, alternating, suffice: no fiber
// arrives at generation g + 2 before every fiber has left generation g.
struct Barrier {
  unsigned expected = 0;
  std::atomic<unsigned> arrived{0};
  std::atomic<uint64_t> generation{0};
  char sync[2];
};

// The scheduler's state: the OS thread's own context, the fibers, the running one, the
// block's body, and a count of arrivals and exits to tell a deadlock from progress.
inline ucontext_t main_context;
inline void* main_tsan = nullptr;
inline const void* main_stack_bottom = nullptr;
inline size_t main_stack_size = 0;
inline std::vector<std::unique_ptr<Fiber>> fibers;
inline std::atomic<Fiber*> running{nullptr};
inline const std::function<void()>* block_body = nullptr;
inline std::atomic<uint64_t> progress{0};
inline char block_start, block_end;  // addresses that order the scheduler and the fibers

inline uint3 block_idx{0, 0, 0}, grid_dim{1, 1, 1}, block_dim{1, 1, 1};
inline Barrier block_barrier;
inline Barrier warp_barriers[kMaxBlockThreads / kWarpSize];

inline const uint3& thread_idx() { return running.load(std::memory_order_relaxed)->idx; }
// The thread's index in its block, x fastest (as warps are formed).
inline unsigned linear_thread() { return thread_idx().x + block_dim.x * thread_idx().y; }
inline int lane() { return static_cast<int>(linear_thread() % kWarpSize); }

// Back to the scheduler; returns when the scheduler switches to this fiber again.
inline void yield() {
  Fiber& self = *running.load(std::memory_order_relaxed);
  asan_start_switch(&self.asan_fake_stack, main_stack_bottom, main_stack_size);
  tsan_switch(main_tsan);
  swapcontext(&self.context, &main_context);
  asan_finish_switch(self.asan_fake_stack, &main_stack_bottom, &main_stack_size);
}

inline void wait(Barrier& b) {
  const uint64_t generation = b.generation.load(std::memory_order_relaxed);
  char* const sync = &b.sync[generation % 2];
  tsan_release(sync);
  progress.fetch_add(1, std::memory_order_relaxed);
  if (b.arrived.fetch_add(1, std::memory_order_relaxed) + 1 == b.expected) {
    b.arrived.store(0, std::memory_order_relaxed);
    b.generation.fetch_add(1, std::memory_order_relaxed);
  } else {
    while (b.generation.load(std::memory_order_relaxed) == generation) yield();
  }
  tsan_acquire(sync);
}

// EMU_DROP_BARRIER=k (k >= 1): every thread skips its k-th __syncthreads of each block, as
// if that barrier were missing from the kernel. scripts/emulate_cuda_kernels.sh runs one
// case so, to show that ThreadSanitizer reports the race it opens.
inline const long drop_barrier = [] {
  const char* k = std::getenv("EMU_DROP_BARRIER");
  return k != nullptr ? std::atol(k) : 0L;
}();

inline void syncthreads() {
  if (++running.load(std::memory_order_relaxed)->syncthreads_calls == drop_barrier) return;
  wait(block_barrier);
}
inline void syncwarp() { wait(warp_barriers[linear_thread() / kWarpSize]); }

[[noreturn]] inline void trap() {
  std::fprintf(stderr, "__trap() reached\n");
  std::abort();
}

// A fiber's life for one block: the kernel's body, then back to the scheduler for good.
inline void fiber_main() {
  Fiber& self = *running.load(std::memory_order_relaxed);
  asan_finish_switch(nullptr, &main_stack_bottom, &main_stack_size);
  tsan_acquire(&block_start);
  (*block_body)();
  self.done.store(true, std::memory_order_relaxed);
  progress.fetch_add(1, std::memory_order_relaxed);
  tsan_release(&block_end);
  asan_start_switch(nullptr, main_stack_bottom, main_stack_size);  // this stack is done
  tsan_switch(main_tsan);
  setcontext(&main_context);
}

// Runs one block: every fiber from the start of body(), in turns, until all have returned.
inline void run_block(unsigned threads) {
  for (unsigned t = 0; t < threads; ++t) {
    Fiber& f = *fibers[t];
    getcontext(&f.context);
    f.context.uc_stack = {f.stack.get(), 0, kStackBytes};
    f.context.uc_link = nullptr;
    makecontext(&f.context, fiber_main, 0);
    f.done.store(false, std::memory_order_relaxed);
    f.syncthreads_calls = 0;
  }
  tsan_release(&block_start);
  for (unsigned alive = threads; alive > 0;) {
    const uint64_t before = progress.load(std::memory_order_relaxed);
    alive = 0;
    for (unsigned t = 0; t < threads; ++t) {
      Fiber& f = *fibers[t];
      if (f.done.load(std::memory_order_relaxed)) continue;
      running.store(&f, std::memory_order_relaxed);
      void* fake = nullptr;
      asan_start_switch(&fake, f.stack.get(), kStackBytes);
      tsan_switch(f.tsan);
      swapcontext(&main_context, &f.context);
      asan_finish_switch(fake, nullptr, nullptr);
      alive += !f.done.load(std::memory_order_relaxed);
    }
    if (alive > 0 && progress.load(std::memory_order_relaxed) == before) {
      std::fprintf(stderr, "deadlock: %u threads wait at a barrier the others never reach\n",
                   alive);
      std::abort();
    }
  }
  tsan_acquire(&block_end);
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
  if (main_tsan == nullptr) main_tsan = tsan_current();
  while (fibers.size() < threads) fibers.push_back(std::make_unique<Fiber>());
  block_barrier.expected = threads;
  for (auto& w : warp_barriers) w.expected = kWarpSize;
  grid_dim = {grid.x, grid.y, 1};
  block_dim = {block.x, block.y, 1};
  for (unsigned t = 0; t < threads; ++t) fibers[t]->idx = {t % block.x, t / block.x, 0};
  const std::function<void()> run = [&] { body(); };
  block_body = &run;
  for (unsigned b = 0; b < grid.x * grid.y; ++b) {
    if (smem != nullptr) {
      ASAN_UNPOISON_MEMORY_REGION(smem, kSharedBytes);
      std::memset(smem, 0xff, kSharedBytes);  // NaN in every floating type
      ASAN_POISON_MEMORY_REGION(smem + smem_bytes, kSharedBytes - smem_bytes);
    }
    block_idx = {b % grid.x, b / grid.x, 0};
    run_block(threads);
  }
  if (smem != nullptr) ASAN_UNPOISON_MEMORY_REGION(smem, kSharedBytes);
}

// One-dimensional grid and block.
template <typename Body>
void launch(unsigned grid, unsigned block, size_t smem_bytes, unsigned char* smem,
            const Body& body) {
  launch(uint3{grid, 1, 1}, uint3{block, 1, 1}, smem_bytes, smem, body);
}

}  // namespace emu

#define threadIdx (::emu::thread_idx())
#define blockIdx (::emu::block_idx)
#define gridDim (::emu::grid_dim)
#define blockDim (::emu::block_dim)
#define __syncthreads() ::emu::syncthreads()
#define __trap() ::emu::trap()

inline float __fmaf_rn(float a, float b, float c) { return std::fmaf(a, b, c); }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
using std::min;
