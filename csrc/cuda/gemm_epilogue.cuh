// The Linear+ReLU epilogue shared by the GEMM kernels: reads a finished
// kTileM x kTileN accumulator tile from shared memory, adds the bias, applies ReLU
// and writes the output and its packed mask bits.
#pragma once

#include <cstdint>

#include "dtypes.cuh"
#include "fused_gemm.h"

namespace twolayer_ext::cuda {

// Each thread owns 8 consecutive columns of one row at a time, so it writes
// their mask bits as one byte and, for 16-bit types, the outputs as one
// 16-byte store when the row allows.
template <typename T, int kTileM, int kTileN, int kLdc, typename acc_t>
__device__ __forceinline__ void gemm_epilogue(const acc_t* Cs, const GemmParams& p, int64_t m0,
                                              int64_t n0) {
  static_assert(kTileN % 8 == 0, "mask bytes cover 8 columns");
  T* C = static_cast<T*>(p.c);
  const T* bias = static_cast<const T*>(p.bias);
  for (int g = threadIdx.x; g < kTileM * (kTileN / 8); g += blockDim.x) {
    const int r = g / (kTileN / 8), cg = g % (kTileN / 8);
    const int64_t gm = m0 + r, gn0 = n0 + cg * 8;
    if (gm >= p.M || gn0 >= p.N) continue;
    const int cnt = p.N - gn0 < 8 ? int(p.N - gn0) : 8;
    alignas(16) T out[8];
    uint8_t bits = 0;
#pragma unroll
    for (int j = 0; j < 8; ++j) {
      out[j] = Numeric<T>::zero();
      if (j < cnt) {
        acc_t v = Cs[r * kLdc + cg * 8 + j];
        if (bias != nullptr) v += Numeric<T>::to_acc(bias[gn0 + j]);
        T o = Numeric<T>::from_acc(v);
        if (p.relu) {
          // Decide on the rounded value, as torch.relu sees it; !(o <= 0) keeps NaN.
          const bool keep = !(Numeric<T>::to_acc(o) <= acc_t(0));
          bits |= uint8_t(keep) << j;
          if (!keep) o = Numeric<T>::zero();
        }
        out[j] = o;
      }
    }
    T* dst = C + gm * p.ldc + gn0;
    bool stored = false;
    if constexpr (sizeof(T) == 2) {
      if (cnt == 8 && (reinterpret_cast<uintptr_t>(dst) & 15) == 0) {
        *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(out);
        stored = true;
      }
    }
    if (!stored) {
      for (int j = 0; j < cnt; ++j) dst[j] = out[j];
    }
    if (p.relu && p.mask_out != nullptr) p.mask_out[gm * p.mask_out_ld + (gn0 >> 3)] = bits;
  }
}

}  // namespace twolayer_ext::cuda
