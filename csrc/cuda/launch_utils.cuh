// Host-side helpers shared by the CUDA op implementations.
#pragma once

#include <ATen/Context.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <cuda_runtime.h>

namespace twolayer_ext::cuda {

// float32 GEMMs use TF32 tensor cores only when torch would
// (torch.backends.cuda.matmul.allow_tf32).
inline bool use_tf32(const at::Tensor& t) {
  return t.scalar_type() == at::kFloat && at::globalContext().allowTF32CuBLAS();
}

// The WMMA (tensor-core) paths need compute capability 8.0 or newer.
inline void check_tensor_core_arch(const char* op, const at::Tensor& t, bool tensor_cores) {
  if (!tensor_cores) return;
  int major = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor,
                                        t.device().index()));
  TORCH_CHECK(major >= 8, op, ": ", t.scalar_type(),
              " (or TF32) kernels need a GPU of compute capability 8.0 or newer, but ", t.device(),
              " has ", std::to_string(major), ".x");
}

}  // namespace twolayer_ext::cuda
