// float32 GEMM kernels for the shapes of the tutorial's layers, where they beat
// the BLAS that ATen calls (measurements: docs/BENCHMARKS.md). AVX-512 or AVX2,
// chosen at run time; everything else (other dtypes, CPUs without AVX2, large
// shapes, odd strides) goes through ATen's BLAS. Defined in
// csrc/cpu/gemm_f32.cpp (dispatch) and gemm_f32_tiles.h (the kernels).
#pragma once

#include <cstdint>

namespace twolayer_ext::cpu {

// The two kernels: gemm_nt_f32 (a layer's forward) and gemm_bcast_f32 (its gradients; also
// the fully fused path's first layer on AVX2, two_layer_fused.cpp, and, as
// gemm_bcast_add_f32, SGD's update of a weight).
enum class GemmKernel { kNt, kBcast };

// Whether `kernel` should run a product with m x n outputs and reduction length k: our CPU
// kernels run AVX-512 or AVX2 (csrc/cpu/isa/isa.h: ATen's choice, so ATEN_CPU_CAPABILITY=avx2
// runs the AVX2 kernels on an AVX-512 CPU), TWOLAYER_EXT_CPU_GEMM=aten is not set, and the
// shape is one where that instruction set's kernels were measured to beat ATen's BLAS on
// this kind of CPU (gemm_bounds(); the bounds and their numbers are in gemm_f32.cpp).
bool use_fast_gemm(int64_t m, int64_t n, int64_t k, GemmKernel kernel);

// Within its scope, this thread's float32 products all run on the kernels, whatever their
// shape: for the fully fused two-layer path, whose results must not depend on the thread
// count. ATen's BLAS gives other bits depending on whether OpenMP runs the region it is called
// from (float16 grad_w2 of 2500x100->130->7 on Zen 3; on an Intel Xeon, grad_w1 of blocks of
// 2048 rows, beyond the kernels' reduction bound of 1024), the kernels do not.
class ReproducibleProducts {
 public:
  ReproducibleProducts();
  ~ReproducibleProducts();
  ReproducibleProducts(const ReproducibleProducts&) = delete;
  ReproducibleProducts& operator=(const ReproducibleProducts&) = delete;

 private:
  bool previous_;
};

// The instruction set of the kernels that run now: "avx512", "avx2", or "none" (every
// product on ATen's BLAS: no kernels for this CPU, or TWOLAYER_EXT_CPU_GEMM=aten).
const char* gemm_kernels_isa();

// Whose measurements bound use_fast_gemm on this CPU now: "intel" (any Intel CPU: MKL runs
// Intel's own kernels there), "avx512" (Zen 4), "avx2" (Zen 3), or "none" (no kernels run).
const char* gemm_bounds();

// Y[i, j] = bias[j] + sum_k X[i*ldx + k] * W[j*ldw + k] for i < M, j < N
// (x @ W.T + b, nn.Linear's forward; bias may be null). Both operands are
// read along k with unit stride, as they lie in memory: no packing. With relu, each Y[i, j]
// is stored through torch.relu instead (NaN kept, anything else not > 0 stored as +0): a
// layer's forward without the pass over its output that relu would take.
void gemm_nt_f32(const float* X, int64_t ldx, const float* W, int64_t ldw, const float* bias,
                 float* Y, int64_t ldy, int64_t M, int64_t N, int64_t K, bool relu = false);

// C[a, k] = bias[k] + sum_t A[t*sat + a*saa] * B[t*ldb + k] for a < M, k < N, t < T
// (bias may be null). B is read row by row with unit stride; A is read one scalar at a
// time, so any strides work: A = grad^T (sat = out, saa = 1) gives grad_weight = grad^T @ x,
// A = grad (sat = 1, saa = out) gives grad_x = grad @ W, and A = x (sat = 1, saa = in) with
// B = Wᵀ gives a layer's forward x @ Wᵀ + b (the fully fused path's first layer).
// With relu, each C[a, k] is stored through torch.relu (as gemm_nt_f32's relu).
void gemm_bcast_f32(const float* A, int64_t sat, int64_t saa, const float* B, int64_t ldb,
                    const float* bias, float* C, int64_t ldc, int64_t M, int64_t N, int64_t T,
                    bool relu = false);

// gemm_bcast_f32's sums P[a, k] (bias null), added to C as torch's C.add_(P, alpha=alpha)
// adds them, without P ever stored: C[a, k] = P[a, k] * alpha + C[a, k] in one rounding, as
// ATen's AVX2 and AVX-512 add_ kernels compute it (these kernels run only where ATen's run
// too, isa/isa.h). SGD's update of a weight with its gradient.
void gemm_bcast_add_f32(const float* A, int64_t sat, int64_t saa, const float* B, int64_t ldb,
                        float* C, int64_t ldc, int64_t M, int64_t N, int64_t T, float alpha);

// Whether linear_grads_f32 runs a layer with M rows, N outputs and K inputs: where
// gemm_bcast_f32 would run both of its products, each on one thread (a small layer, such as
// the tutorial's layer 2).
bool use_linear_grads(int64_t M, int64_t N, int64_t K);

// The three gradients of a layer y = x Wᵀ + b, given G = dL/dy [M x N], X = x [M x K] and
// W [N x K] (row-major, row strides ld*): GX = G W [M x K], GW = Gᵀ X [N x K] and GB [N] the
// column sums of G in row order: gemm_bcast_f32 twice and the sums, in one call with no tensor
// set-up between them. Only where use_linear_grads says so.
void linear_grads_f32(const float* G, int64_t ldg, const float* X, int64_t ldx, const float* W,
                      int64_t ldw, float* GX, int64_t ldgx, float* GW, int64_t ldgw, float* GB,
                      int64_t M, int64_t N, int64_t K);

}  // namespace twolayer_ext::cpu
