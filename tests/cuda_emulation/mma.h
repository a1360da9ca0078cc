// WMMA on the host (see emu.h), found before the toolkit's <mma.h> by the include path.
// Every lane of a warp holds the whole tile; the *_sync operations are warp barriers on both
// sides, as on the GPU, and only lane 0 stores. Loads and stores check WMMA's rules: a
// 32-byte aligned pointer and a leading dimension that is a multiple of 16 bytes.
#pragma once

#include <type_traits>

#include "emu.h"

namespace nvcuda::wmma {

struct row_major {};
struct col_major {};
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
enum layout_t { mem_row_major, mem_col_major };
namespace precision {
struct tf32 {};
}  // namespace precision

template <typename T>
struct element {
  using type = T;
};
template <>
struct element<precision::tf32> {
  using type = float;
};

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static constexpr int rows = std::is_same_v<Use, matrix_b> ? K : M;
  static constexpr int cols = std::is_same_v<Use, matrix_a> ? K : N;
  static constexpr int num_elements = rows * cols;
  typename element<T>::type x[num_elements];  // row-major, the whole tile in every lane
};

inline float to_float(float v) { return v; }
inline float to_float(__half v) { return __half2float(v); }
inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

// TF32: float with a 10-bit mantissa, rounded to nearest.
inline float __float_to_tf32(float v) {
  if (!std::isfinite(v)) return v;
  uint32_t bits;
  std::memcpy(&bits, &v, 4);
  bits = (bits + 0x1000u) & ~0x1fffu;
  std::memcpy(&v, &bits, 4);
  return v;
}

template <typename E>
void check_operand(const E* p, unsigned ldm, const char* what) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0 || (ldm * sizeof(E)) % 16 != 0) {
    std::fprintf(stderr, "%s: pointer %p or ldm %u breaks WMMA's rules\n", what,
                 static_cast<const void*>(p), ldm);
    std::abort();
  }
}

template <typename Use, int M, int N, int K, typename T, typename Layout, typename E>
void load_matrix_sync(fragment<Use, M, N, K, T, Layout>& f, const E* p, unsigned ldm) {
  using F = fragment<Use, M, N, K, T, Layout>;
  emu::syncwarp();
  check_operand(p, ldm, "load_matrix_sync");
  for (int r = 0; r < F::rows; ++r) {
    for (int c = 0; c < F::cols; ++c) {
      f.x[r * F::cols + c] = std::is_same_v<Layout, row_major> ? p[r * ldm + c] : p[c * ldm + r];
    }
  }
  emu::syncwarp();
}

template <int M, int N, int K>
void load_matrix_sync(fragment<accumulator, M, N, K, float>& f, const float* p, unsigned ldm,
                      layout_t layout) {
  emu::syncwarp();
  check_operand(p, ldm, "load_matrix_sync (accumulator)");
  for (int r = 0; r < M; ++r) {
    for (int c = 0; c < N; ++c) {
      f.x[r * N + c] = layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r];
    }
  }
  emu::syncwarp();
}

template <int M, int N, int K>
void store_matrix_sync(float* p, const fragment<accumulator, M, N, K, float>& f, unsigned ldm,
                       layout_t layout) {
  emu::syncwarp();
  check_operand(p, ldm, "store_matrix_sync");
  if (emu::lane() == 0) {
    for (int r = 0; r < M; ++r) {
      for (int c = 0; c < N; ++c) {
        (layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[r * N + c];
      }
    }
  }
  emu::syncwarp();
}

template <int M, int N, int K>
void fill_fragment(fragment<accumulator, M, N, K, float>& f, float v) {
  for (float& e : f.x) e = v;
}

template <int M, int N, int K, typename T, typename LA, typename LB>
void mma_sync(fragment<accumulator, M, N, K, float>& d, const fragment<matrix_a, M, N, K, T, LA>& a,
              const fragment<matrix_b, M, N, K, T, LB>& b,
              const fragment<accumulator, M, N, K, float>& c) {
  emu::syncwarp();
  fragment<accumulator, M, N, K, float> result;
  for (int m = 0; m < M; ++m) {
    for (int n = 0; n < N; ++n) {
      float acc = c.x[m * N + n];
      for (int k = 0; k < K; ++k) {
        acc = std::fmaf(to_float(a.x[m * K + k]), to_float(b.x[k * N + n]), acc);
      }
      result.x[m * N + n] = acc;
    }
  }
  d = result;
  emu::syncwarp();
}

}  // namespace nvcuda::wmma
