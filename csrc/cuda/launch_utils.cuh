// Host-side helpers shared by the CUDA op implementations.
#pragma once

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <cuda_runtime.h>

namespace twolayer_ext::cuda {

// The tensor-core (WMMA) kernels need compute capability 8.0 or newer; on an older
// current device this raises instead of a device-side trap.
inline void check_tensor_core_arch(const char* what) {
  // (Attributes, not ATen's cached device properties: <ATen/cuda/CUDAContext.h> needs
  // the cuSPARSE headers, which a bare toolkit lacks.)
  const c10::DeviceIndex device = c10::cuda::current_device();
  int major = 0, minor = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
  TORCH_CHECK(major >= 8, "twolayer_ext: the ", what,
              " tensor-core kernels need a GPU of compute capability 8.0 or newer, but cuda:",
              static_cast<int>(device), " has ", major, ".", minor,
              "; unset TWOLAYER_EXT_CUDA_FUSED_MLP to run the layered path on cuBLAS");
}

}  // namespace twolayer_ext::cuda
