// launch_fused_gemm (fused_gemm.h): picks the custom GEMM kernel for the operands
// and instantiates both kernels once for the whole extension.
#include <type_traits>

#include "dtypes.cuh"
#include "fused_gemm.h"
#include "launch_utils.cuh"
#include "pipelined_gemm.cuh"
#include "tiled_gemm.cuh"

namespace twolayer_ext::cuda {

template <typename T>
bool launch_fused_gemm(const GemmParams& p, bool tf32, cudaStream_t stream) {
  if (p.M == 0) return true;
  if (sizeof(T) == 2 || (std::is_same_v<T, float> && tf32)) {
    check_tensor_core_arch(sizeof(T) == 2 ? "float16/bfloat16" : "TF32");
  }
  if (p.N > 0 && pipelined::try_launch<T>(p, stream)) return true;  // bias_grad included
  tiled::launch_tiled_gemm<T>(p, tf32, stream);
  return p.bias_grad == nullptr;
}

template bool launch_fused_gemm<float>(const GemmParams&, bool, cudaStream_t);
template bool launch_fused_gemm<double>(const GemmParams&, bool, cudaStream_t);
template bool launch_fused_gemm<__half>(const GemmParams&, bool, cudaStream_t);
template bool launch_fused_gemm<__nv_bfloat16>(const GemmParams&, bool, cudaStream_t);

}  // namespace twolayer_ext::cuda
