// launch_fused_gemm (fused_gemm.h): picks the GEMM kernel for the operands and
// instantiates both kernels once for the whole extension.
#include <c10/util/Exception.h>

#include "bias_grad.cuh"
#include "dtypes.cuh"
#include "fused_gemm.h"
#include "pipelined_gemm.cuh"
#include "tiled_gemm.cuh"

namespace twolayer_ext::cuda {

template <typename T>
void launch_fused_gemm(const GemmParams& p, bool tf32, cudaStream_t stream) {
  if (p.M == 0) return;
  if (p.N > 0 && pipelined::try_launch<T>(p, stream)) return;  // bias_grad included
  tiled::launch_tiled_gemm<T>(p, tf32, stream);
  if (p.bias_grad != nullptr) {
    // bias_grad[m] = sum_k A'(m, k): column sums of G(k, m) = A(m, k), whose
    // mask bit (k, m) is the bias_grad kernel's (row, col) layout.
    TORCH_CHECK(p.mask_a == nullptr || p.mask_a_t,
                "twolayer_ext: internal error: bias_grad needs a transposed mask");
    launch_bias_grad<T>(static_cast<const T*>(p.a), p.a_sk, p.a_sm, p.mask_a, p.mask_a_ld, p.K,
                        p.M, static_cast<T*>(p.bias_grad), stream);
  }
}

template void launch_fused_gemm<float>(const GemmParams&, bool, cudaStream_t);
template void launch_fused_gemm<double>(const GemmParams&, bool, cudaStream_t);
template void launch_fused_gemm<__half>(const GemmParams&, bool, cudaStream_t);
template void launch_fused_gemm<__nv_bfloat16>(const GemmParams&, bool, cudaStream_t);

}  // namespace twolayer_ext::cuda
