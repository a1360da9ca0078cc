// The float32 GEMM entry points of csrc/include/twolayer_ext/cpu_gemm.h: pick
// the instruction set at run time and split the output tiles across threads.
//
// The micro-kernels are written once (gemm_f32_tiles.h) and compiled per ISA
// (gemm_f32_avx512.cpp, gemm_f32_avx2.cpp); only those TUs use AVX2/AVX-512,
// the rest of the library stays baseline x86-64. Without either ISA (or on
// other compilers and architectures) every product goes to ATen's BLAS: the
// portable fallback.
#include <ATen/Parallel.h>
#include <c10/util/Exception.h>

#include <algorithm>

#include "gemm_f32_isa.h"
#include "isa/isa.h"
#include "twolayer_ext/cpu_gemm.h"
#include "twolayer_ext/switches.h"

namespace twolayer_ext::cpu {

namespace {
thread_local bool reproducible_products = false;
}  // namespace

ReproducibleProducts::ReproducibleProducts() : previous_(reproducible_products) {
  reproducible_products = true;
}
ReproducibleProducts::~ReproducibleProducts() { reproducible_products = previous_; }

#if TWOLAYER_EXT_HAVE_GEMM_KERNELS

namespace {

// The kernels to run this call: those of the instruction set every CPU kernel of ours runs
// (isa/isa.h: ATen's, so ATEN_CPU_CAPABILITY narrows them), unless TWOLAYER_EXT_CPU_GEMM=aten.
Isa kernel_isa() { return cpu_gemm_aten_forced() ? Isa::kDefault : isa(); }

// Multiply-adds per parallel chunk: about 2^18 (~3 us), so small products such as the
// tutorial's layer 2 stay on one thread instead of paying an OpenMP fork/join.
constexpr int64_t kGrainMacs = int64_t{1} << 18;
int64_t grain(int64_t macs_per_tile) {
  return std::max<int64_t>(1, kGrainMacs / std::max<int64_t>(1, macs_per_tile));
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// Whether this call runs the AVX-512 kernels (else AVX2); callers have checked
// use_fast_gemm, so one of them exists.
bool use_avx512(const char* fn) {
  const Isa chosen = kernel_isa();
  TORCH_INTERNAL_ASSERT(chosen != Isa::kDefault, fn, ": no kernel for this CPU");
  return chosen == Isa::kAvx512;
}

}  // namespace

const char* gemm_kernels_isa() {
  const Isa chosen = kernel_isa();
  return chosen == Isa::kDefault ? "none" : isa_name(chosen);
}

const char* gemm_bounds() {
  const Isa chosen = kernel_isa();
  if (chosen == Isa::kDefault) return "none";
  return intel_cpu() ? "intel" : isa_name(chosen);
}

bool use_fast_gemm(int64_t m, int64_t n, int64_t k, GemmKernel kernel) {
  const Isa chosen = kernel_isa();
  if (chosen == Isa::kDefault) return false;
  if (reproducible_products) return true;  // every product: ATen's BLAS would break the promise
  const int64_t macs = m * n * k;
  // On Intel's CPUs MKL runs Intel's own kernels: measured on an AVX-512 Xeon
  // (docs/BENCHMARKS.md, "Intel Xeon"), ours win or tie only on outputs of at most 128 rows up
  // to 2^23 multiply-adds (the tutorial's layers), and lose by up to 2x beyond. An Intel CPU
  // with AVX2 only gets the same bounds, measured there with everything narrowed to AVX2.
  if (intel_cpu()) return m <= 128 && k <= 1024 && macs <= (int64_t{1} << 23);
  // The bounds measured on Zen 4 (docs/BENCHMARKS.md, "Tutorial step and float32 layers"):
  // the AVX-512 kernels win up to 2^29 multiply-adds with a reduction of at most 1024;
  // MKL's packed, cache-blocked GEMM beyond.
  if (chosen == Isa::kAvx512) return k <= 1024 && macs <= (int64_t{1} << 29);
  // AVX2, measured on Zen 3 (docs/BENCHMARKS.md, "The float32 GEMM rule on AVX2"): with
  // half the vector width the kernels win only on outputs of at most 128 rows (the
  // tutorial's layers), with a reduction of at most 1024 (forward) or 512 (gradients),
  // up to 2^25 multiply-adds.
  return m <= 128 && k <= (kernel == GemmKernel::kNt ? 1024 : 512) && macs <= (int64_t{1} << 25);
}

namespace {

// Runs an nt product as tiles of the chosen ISA's TileShape, numbered as nt_range numbers
// them, split across threads.
void run_nt(const GemmNt& g) {
  const bool wide = use_avx512("gemm_nt_f32");
  const TileShape& s = wide ? avx512::kShape : avx2::kShape;
  const auto compute = wide ? avx512::nt_range : avx2::nt_range;
  const int64_t tiles = ceil_div(g.M, s.nt_rows) * ceil_div(g.N, s.nt_cols);
  at::parallel_for(0, tiles, grain(int64_t{s.nt_rows} * s.nt_cols * g.K),
                   [&](int64_t t0, int64_t t1) { compute(g, t0, t1); });
}

// Runs a bcast product split across threads by rows of C where each thread gets at least a
// full tile of rows: then the threads' rows are the contiguous halves (at two threads) that
// ATen's element-wise passes give each thread, so the pass that reads C next (SGD's add_ of a
// weight gradient) finds each half in the cache of the core that wrote it
// (docs/BENCHMARKS.md, "Rows per thread"). With fewer rows, by column panels.
void run_bcast(const char* fn, const GemmBcast& g) {
  const bool wide = use_avx512(fn);
  const TileShape& s = wide ? avx512::kShape : avx2::kShape;
  const auto compute = wide ? avx512::bcast_range : avx2::bcast_range;
  const int64_t panels = ceil_div(g.N, s.bcast_cols), macs_per_row = g.N * g.T;
  if (g.M >= int64_t{s.bcast_rows} * at::get_num_threads()) {
    at::parallel_for(0, g.M, grain(macs_per_row),
                     [&](int64_t r0, int64_t r1) { compute(g, r0, r1, 0, panels); });
  } else {
    at::parallel_for(0, panels, grain(g.M * s.bcast_cols * g.T),
                     [&](int64_t p0, int64_t p1) { compute(g, 0, g.M, p0, p1); });
  }
}

}  // namespace

void gemm_nt_f32(const float* X, int64_t ldx, const float* W, int64_t ldw, const float* bias,
                 float* Y, int64_t ldy, int64_t M, int64_t N, int64_t K, bool relu) {
  run_nt(GemmNt{X, ldx, W, ldw, bias, Y, ldy, M, N, K, relu});
}

void gemm_bcast_f32(const float* A, int64_t sat, int64_t saa, const float* B, int64_t ldb,
                    const float* bias, float* C, int64_t ldc, int64_t M, int64_t N, int64_t T,
                    bool relu) {
  run_bcast("gemm_bcast_f32",
            GemmBcast{A, sat, saa, B, ldb, bias, C, ldc, M, N, T, nullptr, relu});
}

void gemm_bcast_add_f32(const float* A, int64_t sat, int64_t saa, const float* B, int64_t ldb,
                        float* C, int64_t ldc, int64_t M, int64_t N, int64_t T, float alpha) {
  run_bcast("gemm_bcast_add_f32",
            GemmBcast{A, sat, saa, B, ldb, nullptr, C, ldc, M, N, T, &alpha, false});
}

bool use_linear_grads(int64_t M, int64_t N, int64_t K) {
  // Both products within one parallel grain (each would run on one thread), and each one
  // that the bcast kernel would run: gx = g W and gw = gᵀ x.
  return M * N * K <= kGrainMacs && use_fast_gemm(M, K, N, GemmKernel::kBcast) &&
         use_fast_gemm(N, K, M, GemmKernel::kBcast);
}

void linear_grads_f32(const float* G, int64_t ldg, const float* X, int64_t ldx, const float* W,
                      int64_t ldw, float* GX, int64_t ldgx, float* GW, int64_t ldgw, float* GB,
                      int64_t M, int64_t N, int64_t K) {
  gemm_bcast_f32(G, 1, ldg, W, ldw, nullptr, GX, ldgx, M, K, N);  // gx = g W
  gemm_bcast_f32(G, ldg, 1, X, ldx, nullptr, GW, ldgw, N, K, M);  // gw = gᵀ x
  std::fill(GB, GB + N, 0.0f);
  for (int64_t r = 0; r < M; ++r) {
    for (int64_t o = 0; o < N; ++o) GB[o] += G[r * ldg + o];
  }
}

#else  // no kernels in this build: ATen's BLAS everywhere

const char* gemm_kernels_isa() { return "none"; }
const char* gemm_bounds() { return "none"; }
bool use_fast_gemm(int64_t, int64_t, int64_t, GemmKernel) { return false; }
void gemm_nt_f32(const float*, int64_t, const float*, int64_t, const float*, float*, int64_t,
                 int64_t, int64_t, int64_t, bool) {
  TORCH_INTERNAL_ASSERT(false, "gemm_nt_f32: built without the GEMM kernels");
}
void gemm_bcast_f32(const float*, int64_t, int64_t, const float*, int64_t, const float*, float*,
                    int64_t, int64_t, int64_t, int64_t, bool) {
  TORCH_INTERNAL_ASSERT(false, "gemm_bcast_f32: built without the GEMM kernels");
}
void gemm_bcast_add_f32(const float*, int64_t, int64_t, const float*, int64_t, float*, int64_t,
                        int64_t, int64_t, int64_t, float) {
  TORCH_INTERNAL_ASSERT(false, "gemm_bcast_add_f32: built without the GEMM kernels");
}
bool use_linear_grads(int64_t, int64_t, int64_t) { return false; }
void linear_grads_f32(const float*, int64_t, const float*, int64_t, const float*, int64_t, float*,
                      int64_t, float*, int64_t, float*, int64_t, int64_t, int64_t) {
  TORCH_INTERNAL_ASSERT(false, "linear_grads_f32: built without the GEMM kernels");
}

#endif

}  // namespace twolayer_ext::cpu
