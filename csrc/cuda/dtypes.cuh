// Device-side numeric types: c10 scalar types map to CUDA's own types
// (bit-identical), accumulation happens in float for the 16-bit types.
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

namespace twolayer_ext::cuda {

template <typename scalar_t>
struct DeviceType {
  using type = scalar_t;
};
template <>
struct DeviceType<c10::Half> {
  using type = __half;
};
template <>
struct DeviceType<c10::BFloat16> {
  using type = __nv_bfloat16;
};

// Numeric<T>: arithmetic of device type T. acc is the accumulation type (float for the
// 16-bit types); to_acc/from_acc convert to and from it, rounding to nearest. float and
// double accumulate in themselves (this template); the 16-bit types are specialised below.
template <typename T>
struct Numeric {
  static_assert(std::is_same_v<T, float> || std::is_same_v<T, double>,
                "Numeric: float, double, __half or __nv_bfloat16");
  using acc = T;
  static __device__ __forceinline__ T to_acc(T v) { return v; }
  static __device__ __forceinline__ T from_acc(T v) { return v; }
  static __device__ __forceinline__ T zero() { return T(0); }
};
template <>
struct Numeric<__half> {
  using acc = float;
  static __device__ __forceinline__ float to_acc(__half v) { return __half2float(v); }
  static __device__ __forceinline__ __half from_acc(float v) { return __float2half_rn(v); }
  static __device__ __forceinline__ __half zero() { return __ushort_as_half(0); }
};
template <>
struct Numeric<__nv_bfloat16> {
  using acc = float;
  static __device__ __forceinline__ float to_acc(__nv_bfloat16 v) { return __bfloat162float(v); }
  static __device__ __forceinline__ __nv_bfloat16 from_acc(float v) {
    return __float2bfloat16_rn(v);
  }
  static __device__ __forceinline__ __nv_bfloat16 zero() { return __ushort_as_bfloat16(0); }
};

// Bit (col % 8) of byte mask[row * ld + col / 8]: the packed ReLU mask layout.
__device__ __forceinline__ bool mask_bit(const uint8_t* mask, int64_t ld, int64_t row,
                                         int64_t col) {
  return (mask[row * ld + (col >> 3)] >> (col & 7)) & 1;
}

}  // namespace twolayer_ext::cuda
