// The float32 GEMM micro-kernels of cpu_gemm.h, written once over a SIMD
// traits type V and compiled once per instruction set: gemm_f32_avx512.cpp and
// gemm_f32_avx2.cpp include this header inside their own `#pragma GCC target`
// region and namespace, with V wrapping that ISA's intrinsics. V provides
//   Vec, kWidth (floats per vector), zero(), load(p) / load(p, n) (first n lanes,
//   the rest 0, nothing read beyond), set1(s), fmadd(a, b, c) = a * b + c,
//   store(p, v) / store(p, v, n), relu(v) (torch.relu: NaN kept, the rest of v <= 0 to +0),
//   reduce4(a, b, c, d) = the sums of the lanes of a, b, c
//   and d as one 4-float vector (a transposing tree: about half the shuffles of four
//   one-vector sums, docs/BENCHMARKS.md);
// and the tile shapes kNtRows x kNtCols (nt) and kBcRows x kBcVecs (bcast),
// sized so the accumulators fit the ISA's vector registers.
//
// Two register-blocked micro-kernels, no packing (at the tutorial's sizes,
// copying 256-400 KB of operands would cost as much as the arithmetic):
//   * nt:    kNtRows x kNtCols tile of dot products along k (x rows by W rows,
//            both k-contiguous), one accumulator vector per output, reduced once
//            at the end;
//   * bcast: kBcRows x (kBcVecs * kWidth) tile, one broadcast scalar of A times
//            kBcVecs vectors of a B row per step, accumulators (starting from the
//            bias, if any) stored directly (through relu for a layer's forward), or
//            multiplied and added to C in one rounding (an SGD update on the gradient
//            just computed).
// Each output element is computed in a fixed order, so results do not depend on
// the thread count (tests/test_cpu_gemm.py).
//
// Defines the ISA namespace's entry points of gemm_f32_isa.h (nt_range,
// bcast_range, kShape). No include guard and no #includes: included once per
// ISA, into that ISA's namespace, after <algorithm>, <cstdint> and the traits V.

template <int MR, int NR>
__attribute__((noinline)) void nt_tile(const float* X, int64_t ldx, const float* W, int64_t ldw,
                                       const float* bias, float* Y, int64_t ldy, int64_t K,
                                       bool relu) {
  typename V::Vec acc[MR][NR];
#pragma GCC unroll 8
  for (int a = 0; a < MR; ++a)
#pragma GCC unroll 8
    for (int b = 0; b < NR; ++b) acc[a][b] = V::zero();
  int64_t k = 0;
  for (; k + V::kWidth <= K; k += V::kWidth) {
    typename V::Vec w[NR];
#pragma GCC unroll 8
    for (int b = 0; b < NR; ++b) w[b] = V::load(W + b * ldw + k);
#pragma GCC unroll 8
    for (int a = 0; a < MR; ++a) {
      const typename V::Vec x = V::load(X + a * ldx + k);
#pragma GCC unroll 8
      for (int b = 0; b < NR; ++b) acc[a][b] = V::fmadd(x, w[b], acc[a][b]);
    }
  }
  if (k < K) {  // the last K % kWidth floats (masked loads read nothing beyond)
    const int n = static_cast<int>(K - k);
    typename V::Vec w[NR];
#pragma GCC unroll 8
    for (int b = 0; b < NR; ++b) w[b] = V::load(W + b * ldw + k, n);
#pragma GCC unroll 8
    for (int a = 0; a < MR; ++a) {
      const typename V::Vec x = V::load(X + a * ldx + k, n);
#pragma GCC unroll 8
      for (int b = 0; b < NR; ++b) acc[a][b] = V::fmadd(x, w[b], acc[a][b]);
    }
  }
  // The MR x NR sums, four at a time (V::reduce4), plus the bias (or 0, as addmm's beta term
  // adds) and, with relu, through the element-wise passes' relu (isa/passes_impl.h: kept where
  // > 0 or NaN, else +0; branch-free, as the sums' signs are random), then stored one float at
  // a time: storing the 4-float vectors into Y directly lost 5% on two threads
  // (docs/BENCHMARKS.md, "nt kernel's sums").
  constexpr int kGroups = (NR + 3) / 4;
  alignas(16) float bias4[kGroups * 4] = {};
#pragma GCC unroll 8
  for (int b = 0; b < NR; ++b) bias4[b] = bias ? bias[b] : 0.f;
  alignas(16) float sums[MR][kGroups * 4];
  const __m128 zero = _mm_setzero_ps();
#pragma GCC unroll 8
  for (int a = 0; a < MR; ++a) {
#pragma GCC unroll 8
    for (int b = 0; b < NR; b += 4) {
      const auto col = [&](int c) { return c < NR ? acc[a][c] : V::zero(); };
      __m128 v = _mm_add_ps(V::reduce4(col(b), col(b + 1), col(b + 2), col(b + 3)),
                            _mm_load_ps(&bias4[b]));
      if (relu) v = _mm_andnot_ps(_mm_cmple_ps(v, zero), v);  // NaN compares false: kept
      _mm_store_ps(&sums[a][b], v);
    }
  }
#pragma GCC unroll 8
  for (int a = 0; a < MR; ++a)
#pragma GCC unroll 8
    for (int b = 0; b < NR; ++b) Y[a * ldy + b] = sums[a][b];
}

// Column counts 1..kNtCols as template arguments (the edge tiles of a product).
template <int MR, int NR = V::kNtCols>
void nt_tile_cols(int nr, const float* X, int64_t ldx, const float* W, int64_t ldw,
                  const float* bias, float* Y, int64_t ldy, int64_t K, bool relu) {
  if constexpr (NR > 1) {
    if (nr < NR) return nt_tile_cols<MR, NR - 1>(nr, X, ldx, W, ldw, bias, Y, ldy, K, relu);
  }
  nt_tile<MR, NR>(X, ldx, W, ldw, bias, Y, ldy, K, relu);
}

template <int MR = V::kNtRows>
void nt_tile_rows(int mr, int nr, const float* X, int64_t ldx, const float* W, int64_t ldw,
                  const float* bias, float* Y, int64_t ldy, int64_t K, bool relu) {
  if constexpr (MR > 1) {
    if (mr < MR) return nt_tile_rows<MR - 1>(mr, nr, X, ldx, W, ldw, bias, Y, ldy, K, relu);
  }
  nt_tile_cols<MR>(nr, X, ldx, W, ldw, bias, Y, ldy, K, relu);
}

// Tiles [t0, t1) of the nt product (gemm_f32_isa.h), numbered W-block-major so
// one thread's run of tiles re-reads the same kNtCols W rows from cache.
void nt_range(const GemmNt& g, int64_t t0, int64_t t1) {
  const int64_t row_blocks = (g.M + V::kNtRows - 1) / V::kNtRows;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t j0 = (t / row_blocks) * V::kNtCols, i0 = (t % row_blocks) * V::kNtRows;
    const int nr = static_cast<int>(std::min<int64_t>(V::kNtCols, g.N - j0));
    const int mr = static_cast<int>(std::min<int64_t>(V::kNtRows, g.M - i0));
    nt_tile_rows(mr, nr, g.X + i0 * g.ldx, g.ldx, g.W + j0 * g.ldw, g.ldw,
                 g.bias ? g.bias + j0 : nullptr, g.Y + i0 * g.ldy + j0, g.ldy, g.K, g.relu);
  }
}

// `tail` = floats used of the last of the NV vectors (1..kWidth); bias: the tile's first
// column of it, or null; add_alpha: null (C = the sums, through V::relu where relu), or
// C += *add_alpha * the sums.
template <int MR, int NV>
__attribute__((noinline)) void bcast_tile(const float* A, int64_t sat, int64_t saa, const float* B,
                                          int64_t ldb, const float* bias, float* C, int64_t ldc,
                                          int64_t T, int tail, const float* add_alpha,
                                          bool relu) {
  typename V::Vec init[NV];
#pragma GCC unroll 8
  for (int v = 0; v < NV; ++v) {
    const int n = v < NV - 1 ? V::kWidth : tail;
    init[v] = bias ? V::load(bias + v * V::kWidth, n) : V::zero();
  }
  typename V::Vec acc[MR][NV];
#pragma GCC unroll 8
  for (int a = 0; a < MR; ++a)
#pragma GCC unroll 8
    for (int v = 0; v < NV; ++v) acc[a][v] = init[v];
  for (int64_t t = 0; t < T; ++t) {
    typename V::Vec b[NV];
#pragma GCC unroll 8
    for (int v = 0; v < NV - 1; ++v) b[v] = V::load(B + t * ldb + v * V::kWidth);
    b[NV - 1] = V::load(B + t * ldb + (NV - 1) * V::kWidth, tail);
#pragma GCC unroll 8
    for (int a = 0; a < MR; ++a) {
      const typename V::Vec s = V::set1(A[t * sat + a * saa]);
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[a][v] = V::fmadd(s, b[v], acc[a][v]);
    }
  }
  if (add_alpha) {  // torch's C.add_(sums, alpha): sums * alpha + C, rounded once
    const typename V::Vec alpha = V::set1(*add_alpha);
#pragma GCC unroll 8
    for (int a = 0; a < MR; ++a) {
      const float* c = C + a * ldc;
#pragma GCC unroll 8
      for (int v = 0; v < NV - 1; ++v) {
        acc[a][v] = V::fmadd(acc[a][v], alpha, V::load(c + v * V::kWidth));
      }
      acc[a][NV - 1] = V::fmadd(acc[a][NV - 1], alpha, V::load(c + (NV - 1) * V::kWidth, tail));
    }
  } else if (relu) {
#pragma GCC unroll 8
    for (int a = 0; a < MR; ++a)
#pragma GCC unroll 8
      for (int v = 0; v < NV; ++v) acc[a][v] = V::relu(acc[a][v]);
  }
#pragma GCC unroll 8
  for (int a = 0; a < MR; ++a) {
#pragma GCC unroll 8
    for (int v = 0; v < NV - 1; ++v) V::store(C + a * ldc + v * V::kWidth, acc[a][v]);
    V::store(C + a * ldc + (NV - 1) * V::kWidth, acc[a][NV - 1], tail);
  }
}

template <int MR, int NV = V::kBcVecs>
void bcast_tile_vecs(int nv, const float* A, int64_t sat, int64_t saa, const float* B, int64_t ldb,
                     const float* bias, float* C, int64_t ldc, int64_t T, int tail,
                     const float* add_alpha, bool relu) {
  if constexpr (NV > 1) {
    if (nv < NV) {
      return bcast_tile_vecs<MR, NV - 1>(nv, A, sat, saa, B, ldb, bias, C, ldc, T, tail,
                                         add_alpha, relu);
    }
  }
  bcast_tile<MR, NV>(A, sat, saa, B, ldb, bias, C, ldc, T, tail, add_alpha, relu);
}

template <int MR = V::kBcRows>
void bcast_tile_rows(int mr, int nv, const float* A, int64_t sat, int64_t saa, const float* B,
                     int64_t ldb, const float* bias, float* C, int64_t ldc, int64_t T, int tail,
                     const float* add_alpha, bool relu) {
  if constexpr (MR > 1) {
    if (mr < MR) {
      return bcast_tile_rows<MR - 1>(mr, nv, A, sat, saa, B, ldb, bias, C, ldc, T, tail,
                                     add_alpha, relu);
    }
  }
  bcast_tile_vecs<MR>(nv, A, sat, saa, B, ldb, bias, C, ldc, T, tail, add_alpha, relu);
}

// Rows [r0, r1) by column panels [p0, p1) of the bcast product's output (gemm_f32_isa.h),
// panel by panel, so the rows' tiles re-read the same panel of B from cache.
void bcast_range(const GemmBcast& g, int64_t r0, int64_t r1, int64_t p0, int64_t p1) {
  constexpr int64_t kPanel = V::kBcVecs * V::kWidth;
  for (int64_t k0 = p0 * kPanel; k0 < std::min(g.N, p1 * kPanel); k0 += kPanel) {
    const int64_t width = std::min<int64_t>(kPanel, g.N - k0);
    const int nv = static_cast<int>((width + V::kWidth - 1) / V::kWidth);
    const int tail = static_cast<int>(width - (nv - 1) * V::kWidth);
    for (int64_t a0 = r0; a0 < r1; a0 += V::kBcRows) {
      const int mr = static_cast<int>(std::min<int64_t>(V::kBcRows, r1 - a0));
      bcast_tile_rows(mr, nv, g.A + a0 * g.saa, g.sat, g.saa, g.B + k0, g.ldb,
                      g.bias ? g.bias + k0 : nullptr, g.C + a0 * g.ldc + k0, g.ldc, g.T, tail,
                      g.add_alpha, g.relu);
    }
  }
}

const TileShape kShape{V::kNtRows, V::kNtCols, V::kBcRows, V::kBcVecs * V::kWidth};
