// two_layer_amx.h: the bfloat16 two-layer network's forward and backward on AMX tiles.
//
// The tile unit holds eight tiles of 16 rows x 64 bytes. Every tile here has that one shape,
// so one configuration serves every product:
//   A (16 rows x 32 bfloat16):  16 rows of the left operand, 32 of its columns (k);
//   B (16 rows x 16 pairs):     32 rows of the right operand (k) x 16 columns (n), pairs of
//                               consecutive k interleaved ("VNNI" layout);
//   C (16 rows x 16 float):     the float32 sums of 16 rows x 16 columns.
// A product runs in groups of four C tiles (tmm0-3, 64 columns), with A in tmm4 and B in
// tmm5-7 in turn. Operands are zero-padded to whole tiles (weights when packed, x rows when
// they do not fill one), so the padding adds zeros: padded hidden columns are relu(0 + 0) = 0.
//
// The weight gradients sum over rows, so there the rows are k: grad_W1 = grad_hiddenᵀ x takes
// grad_hidden transposed as A and x's rows interleaved in pairs as B (grad_W2 likewise, with
// grad_out and the hidden rows), both built per step of rows in L2-sized buffers.
#include "two_layer_amx.h"

#include <ATen/cpu/Utils.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstring>

#include "isa/isa.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define TWOLAYER_EXT_HAVE_AMX 1
#include <immintrin.h>
#else
#define TWOLAYER_EXT_HAVE_AMX 0
#endif

namespace twolayer_ext::cpu {
namespace {

constexpr int64_t kRows = 16;           // rows of every tile
constexpr int64_t kTileK = kAmxTileK;  // bfloat16 columns of an A tile: 64 bytes
constexpr int64_t kTileN = 16;         // float32 columns of a C tile: 64 bytes
constexpr int64_t kGroup = 4;          // C tiles per group (tmm0-3)
static_assert(kGroup * kTileN == kAmxGroupColumns);
constexpr int64_t kTileElems = kRows * kTileK;  // bfloat16 elements of an A or B tile
// How many 16-row tiles ahead x is fetched; 4, 8 and 16 were no faster (docs/BENCHMARKS.md,
// "bfloat16 inference on AMX").
constexpr int64_t kPrefetchTiles = 2;
// Rows per step of the backward: its buffers (about 200 KiB at 64->64->16) stay in L2, and the
// weight gradients' C tiles are loaded and stored once per step.
constexpr int64_t kStepRows = 256;

int64_t tiles(int64_t n, int64_t per_tile) { return (n + per_tile - 1) / per_tile; }

// w [n, k] (row-major bfloat16) as B tiles: tile (nt, kt) at (nt * k_tiles + kt) * kTileElems,
// element [p][c][e] = w[nt * 16 + c][kt * 32 + 2p + e], zero outside w.
std::vector<uint16_t> pack_b(const at::Tensor& w, int64_t n_tiles, int64_t k_tiles) {
  const at::Tensor wc = w.contiguous();
  const int64_t n = wc.size(0), k = wc.size(1);
  const auto* src = reinterpret_cast<const uint16_t*>(wc.const_data_ptr<c10::BFloat16>());
  std::vector<uint16_t> packed(static_cast<size_t>(n_tiles * k_tiles * kTileElems), 0);
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t c = 0; c < k; ++c) {
      const int64_t nt = r / kTileN, kt = c / kTileK, p = (c % kTileK) / 2, e = c % 2;
      packed[static_cast<size_t>((nt * k_tiles + kt) * kTileElems + p * 2 * kTileN +
                                 (r % kTileN) * 2 + e)] = src[r * k + c];
    }
  }
  return packed;
}

std::vector<float> pad_bias(const OptTensor& b, int64_t n, int64_t n_tiles) {
  std::vector<float> padded(static_cast<size_t>(n_tiles * kTileN), 0.0f);
  if (present(b)) {
    const at::Tensor bc = b->contiguous();
    const c10::BFloat16* p = bc.const_data_ptr<c10::BFloat16>();
    for (int64_t i = 0; i < n; ++i) padded[static_cast<size_t>(i)] = static_cast<float>(p[i]);
  }
  return padded;
}

}  // namespace

AmxTwoLayer::AmxTwoLayer(const at::Tensor& w1, const OptTensor& b1, const at::Tensor& w2,
                         const OptTensor& b2, bool backward)
    : in_(w1.size(1)),
      hidden_(w1.size(0)),
      out_(w2.size(0)),
      backward_(backward),
      k1_tiles_(tiles(in_, kTileK)),
      h_tiles_(tiles(hidden_, kTileN)),
      k2_tiles_(tiles(hidden_, kTileK)),
      o_tiles_(tiles(out_, kTileN)),
      i_tiles_(tiles(in_, kTileN)),
      ko_tiles_(tiles(out_, kTileK)),
      w1_(pack_b(w1, h_tiles_, k1_tiles_)),
      w2_(pack_b(w2, o_tiles_, k2_tiles_)),
      b1_(pad_bias(b1, hidden_, h_tiles_)),
      b2_(pad_bias(b2, out_, o_tiles_)) {
  TORCH_INTERNAL_ASSERT(w1.scalar_type() == at::kBFloat16 && w2.scalar_type() == at::kBFloat16);
  if (backward) {
    w2_back_ = pack_b(w2.t(), h_tiles_, ko_tiles_);
    w1_back_ = pack_b(w1.t(), i_tiles_, k2_tiles_);
  }
}

int64_t AmxTwoLayer::padded(int64_t n) { return tiles(n, kTileN) * kTileN; }

AmxGradSums AmxTwoLayer::zero_sums() const {
  const auto zeros = [](int64_t n) { return std::vector<float>(static_cast<size_t>(n), 0.0f); };
  const int64_t i = padded(in_), h = padded(hidden_), o = padded(out_);
  return {zeros(h * i), zeros(h), zeros(o * h), zeros(o)};
}

#if TWOLAYER_EXT_HAVE_AMX

// Outside the target pragma below: every CPU calls it, and code compiled for AVX-512 could
// not run on one without.
bool amx_bf16_usable() {
  static const bool usable = [] {
    return isa() == Isa::kAvx512 && cpu_has("amx_tile") && cpu_has("amx_bf16") &&
           cpu_has("avx512_bf16") &&
           at::cpu::init_amx();
  }();
  return usable;
}

#pragma GCC push_options
#pragma GCC target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")
#pragma GCC diagnostic push
// GCC's AVX-512 intrinsics start some results from _mm512_undefined_*(), which -Wall reports.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

// The kernel's helpers, compiled for AVX-512 and AMX: scripts/check_isa_symbols.sh checks that
// such code is only here and in AmxTwoLayer::forward and ::backward.
namespace {
namespace kernel {

// ldtilecfg's 64-byte operand: palette 1, tiles 0-7 each 16 rows x 64 bytes.
struct alignas(64) TileConfig {
  uint8_t palette = 1, start_row = 0, reserved[14] = {};
  uint16_t colsb[16] = {};
  uint8_t rows[16] = {};
  TileConfig() {
    for (int t = 0; t < 8; ++t) {
      colsb[t] = 64;
      rows[t] = kRows;
    }
  }
};

// float32 -> bfloat16, rounded to nearest even, NaN -> 0x7FC0: c10::BFloat16's conversion
// (round_to_nearest_even), bit for bit.
__m256i round_to_bf16_exact(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
  r = _mm512_srli_epi32(r, 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  r = _mm512_mask_mov_epi32(r, nan, _mm512_set1_epi32(0x7FC0));
  return _mm512_cvtepi32_epi16(r);
}

// The same conversion: VCVTNEPS2BF16 (one instruction in place of eight) rounds
// as c10 does except for denormal inputs, which it takes as zero, and NaN, whose sign and
// payload it keeps; vectors holding either take the exact path.
__m256i round_to_bf16(__m512 v) {
  constexpr int kNanOrDenormal = 0x01 | 0x20 | 0x80;  // quiet NaN, denormal, signalling NaN
  if (_mm512_fpclass_ps_mask(v, kNanOrDenormal) != 0) return round_to_bf16_exact(v);
  return (__m256i)_mm512_cvtneps_pbh(v);  // same bits, another vector type
}

// A right operand's B tiles: tile (n, k) at base + n * n_step + k * k_step bytes, its 16 rows
// `stride` bytes apart.
struct TilesB {
  const void* base;
  int64_t stride, n_step, k_step;
  const char* tile(int64_t n, int64_t k) const {
    return static_cast<const char*>(base) + n * n_step + k * k_step;
  }
};

// B tiles packed by pack_b.
TilesB packed(const std::vector<uint16_t>& w, int64_t k_tiles) {
  return {w.data(), 64, k_tiles * kTileElems * 2, kTileElems * 2};
}

// C tiles [g, g + n) (n <= 4) of A (16 rows `a_stride` bytes apart, k_tiles A tiles along the
// row) times B, stored as float32 to c (16 rows c_stride bytes apart); with `accumulate`, added
// to what c holds.
void tile_product(const void* a, int64_t a_stride, int64_t k_tiles, const TilesB& b, int64_t g,
                  int64_t n, float* c, int64_t c_stride, bool accumulate) {
  if (accumulate) {  // tile numbers are immediates: one line per tile
    _tile_loadd(0, c, c_stride);
    if (n > 1) _tile_loadd(1, c + kTileN, c_stride);
    if (n > 2) _tile_loadd(2, c + 2 * kTileN, c_stride);
    if (n > 3) _tile_loadd(3, c + 3 * kTileN, c_stride);
  } else {
    _tile_zero(0);
    if (n > 1) _tile_zero(1);
    if (n > 2) _tile_zero(2);
    if (n > 3) _tile_zero(3);
  }
  const char* ap = static_cast<const char*>(a);
  for (int64_t kt = 0; kt < k_tiles; ++kt) {
    _tile_loadd(4, ap + kt * kTileK * 2, a_stride);
    _tile_loadd(5, b.tile(g, kt), b.stride);
    _tile_dpbf16ps(0, 4, 5);
    if (n > 1) {
      _tile_loadd(6, b.tile(g + 1, kt), b.stride);
      _tile_dpbf16ps(1, 4, 6);
    }
    if (n > 2) {
      _tile_loadd(7, b.tile(g + 2, kt), b.stride);
      _tile_dpbf16ps(2, 4, 7);
    }
    if (n > 3) {
      _tile_loadd(5, b.tile(g + 3, kt), b.stride);
      _tile_dpbf16ps(3, 4, 5);
    }
  }
  _tile_stored(0, c, c_stride);
  if (n > 1) _tile_stored(1, c + kTileN, c_stride);
  if (n > 2) _tile_stored(2, c + 2 * kTileN, c_stride);
  if (n > 3) _tile_stored(3, c + 3 * kTileN, c_stride);
}

// One group of C tiles (16 rows x 64 floats), as tile_product leaves it without `accumulate`.
struct GroupC {
  alignas(64) float v[kRows * kGroup * kTileN];
  static constexpr int64_t kStride = kGroup * kTileN * 4;  // bytes per row
  __m512 load(int64_t r, int64_t t) const {
    return _mm512_load_ps(v + r * kGroup * kTileN + t * kTileN);
  }
};

// 16 bfloat16 as float32.
__m512 bf16_to_float(__m256i v) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(v), 16));
}

// The hidden rows relu(a W1ᵀ + b1), rounded to bfloat16, for the 16 rows of A at a (rows
// a_stride bytes apart): hidden row r at h + r * ldh, h_tiles * 16 columns written.
void hidden_rows(const void* a, int64_t a_stride, int64_t k_tiles, const std::vector<uint16_t>& w,
                 const std::vector<float>& b, int64_t h_tiles, uint16_t* h, int64_t ldh) {
  GroupC c;
  for (int64_t g = 0; g < h_tiles; g += kGroup) {
    const int64_t n = std::min(kGroup, h_tiles - g);
    tile_product(a, a_stride, k_tiles, packed(w, k_tiles), g, n, c.v, GroupC::kStride, false);
    for (int64_t r = 0; r < kRows; ++r) {
      for (int64_t t = 0; t < n; ++t) {
        __m512 v = _mm512_add_ps(c.load(r, t), _mm512_loadu_ps(b.data() + (g + t) * kTileN));
        // Kept where v > 0 or NaN (torch.relu keeps NaN); -0 becomes +0.
        v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NLE_UQ), v);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(h + r * ldh + (g + t) * kTileN),
                            round_to_bf16(v));
      }
    }
  }
}

// The cache lines of a row of n bfloat16 at p, into L1.
void prefetch_row(const uint16_t* p, int64_t n) {
  for (int64_t byte = 0; byte < n * 2; byte += 64) {
    _mm_prefetch(reinterpret_cast<const char*>(p) + byte, _MM_HINT_T0);
  }
}

// Rows [0, rows) of src (cols columns, rows ld elements apart) into dst (dst_ld apart, a
// multiple of 32), every other column and row of dst's first dst_rows zero.
void copy_padded(const uint16_t* src, int64_t ld, int64_t rows, int64_t cols, uint16_t* dst,
                 int64_t dst_ld, int64_t dst_rows) {
  for (int64_t r = 0; r < dst_rows; ++r) {
    for (int64_t c = 0; c < dst_ld; c += 32) {
      const int64_t n = std::clamp<int64_t>(cols - c, 0, 32);
      const auto mask = static_cast<__mmask32>(n == 32 ? ~0u : (1u << n) - 1);
      const __m512i v =
          r < rows ? _mm512_maskz_loadu_epi16(mask, src + r * ld + c) : _mm512_setzero_si512();
      _mm512_storeu_si512(dst + r * dst_ld + c, v);
    }
  }
}

// Columns [c, c + 16) of rows `even` and even + ld, as 16 pairs: dword j holds even[c + j] in
// its low half and even[ld + c + j] in its high half (the VNNI layout's k pair).
__m512i row_pairs(const uint16_t* even, int64_t ld, int64_t c) {
  alignas(64) static const uint16_t kPairs[32] = {0,  16, 1,  17, 2,  18, 3,  19, 4,  20, 5,
                                                  21, 6,  22, 7,  23, 8,  24, 9,  25, 10, 26,
                                                  11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
  const __m512i both = _mm512_inserti64x4(
      _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(even + c))),
      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(even + ld + c)), 1);
  return _mm512_permutexvar_epi16(_mm512_load_si512(kPairs), both);
}

// src's rows in pairs as a B operand: dst[p * ld + c] = src[2p][c] | src[2p + 1][c] << 16 for
// c < cols (a multiple of 16), p < rows / 2 (src rows src_ld elements apart).
void interleave_rows(const uint16_t* src, int64_t src_ld, int64_t rows, int64_t cols,
                     uint32_t* dst, int64_t ld) {
  for (int64_t p = 0; p < rows / 2; ++p) {
    for (int64_t c = 0; c < cols; c += kTileN) {
      _mm512_storeu_si512(dst + p * ld + c, row_pairs(src + 2 * p * src_ld, src_ld, c));
    }
  }
}

// The 16 x 16 dwords in r, transposed in place.
void transpose_16x16(__m512i r[16]) {
  __m512i t[16];
  for (int i = 0; i < 16; i += 2) {
    t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
    t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
  }
  for (int i = 0; i < 16; i += 4) {
    r[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
    r[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
    r[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
    r[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
  }
  for (int i = 0; i < 4; ++i) {
    t[i] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0x88);
    t[i + 4] = _mm512_shuffle_i32x4(r[i], r[i + 4], 0xdd);
    t[i + 8] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0x88);
    t[i + 12] = _mm512_shuffle_i32x4(r[i + 8], r[i + 12], 0xdd);
  }
  for (int i = 0; i < 4; ++i) {
    r[i] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0x88);
    r[i + 8] = _mm512_shuffle_i32x4(t[i], t[i + 8], 0xdd);
    r[i + 4] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0x88);
    r[i + 12] = _mm512_shuffle_i32x4(t[i + 4], t[i + 12], 0xdd);
  }
}

// src's rows in pairs, transposed, as an A operand with the rows as k:
// dst[c * ld + p] = src[2p][c] | src[2p + 1][c] << 16 for c < cols, p < rows / 2 (both
// multiples of 16).
void transpose_rows(const uint16_t* src, int64_t src_ld, int64_t rows, int64_t cols,
                    uint32_t* dst, int64_t ld) {
  __m512i r[16];
  for (int64_t p0 = 0; p0 < rows / 2; p0 += 16) {
    for (int64_t c0 = 0; c0 < cols; c0 += 16) {
      for (int64_t j = 0; j < 16; ++j) r[j] = row_pairs(src + 2 * (p0 + j) * src_ld, src_ld, c0);
      transpose_16x16(r);
      for (int64_t j = 0; j < 16; ++j) _mm512_storeu_si512(dst + (c0 + j) * ld + p0, r[j]);
    }
  }
}

}  // namespace kernel
}  // namespace

void AmxTwoLayer::forward(const c10::BFloat16* x, int64_t ldx, c10::BFloat16* out, int64_t ldo,
                          int64_t rows, c10::BFloat16* hidden, int64_t ldh) const {
  using namespace kernel;  // NOLINT(build/namespaces): this file's own helpers
  TORCH_INTERNAL_ASSERT(amx_bf16_usable());
  const int64_t k1 = k1_tiles_ * kTileK, k2 = k2_tiles_ * kTileK;
  // This thread's operands in L1: x rows padded to whole tiles where needed, the hidden rows
  // (bfloat16, layer 2's A; columns past h_tiles_ * 16 stay zero), one group of C tiles.
  GroupC c;
  std::vector<uint16_t> x_pad(static_cast<size_t>(kRows * k1), 0);
  std::vector<uint16_t> h(static_cast<size_t>(kRows * k2), 0);
  // Where in is a multiple of 32, A tiles load straight from x; elsewhere a row's last tile
  // would read past its end into the next row (or past x), and NaN * 0 is NaN: those rows are
  // copied into zero-padded tiles (oneDNN's AMX matmul reads there: its issue #5717).
  const bool x_whole = in_ % kTileK == 0;
  const auto* xs = reinterpret_cast<const uint16_t*>(x);
  auto* os = reinterpret_cast<uint16_t*>(out);
  auto* hs = reinterpret_cast<uint16_t*>(hidden);

  static const TileConfig config;
  _tile_loadconfig(&config);
  for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
    const int64_t nr = std::min(kRows, rows - r0);
    // Without this the tile loads of x stalled on memory (most of the kernel's time in the
    // profile): fetch the x rows of the tile kPrefetchTiles ahead into L1 now.
    const int64_t ahead = r0 + kPrefetchTiles * kRows;
    for (int64_t r = ahead; r < std::min(rows, ahead + kRows); ++r) prefetch_row(xs + r * ldx, in_);
    const void* a = xs + r0 * ldx;
    int64_t a_stride = ldx * 2;
    if (!x_whole || nr < kRows) {
      copy_padded(xs + r0 * ldx, ldx, nr, in_, x_pad.data(), k1, kRows);
      a = x_pad.data();
      a_stride = k1 * 2;
    }
    // Layer 1: h = relu(x W1ᵀ + b1), rounded to bfloat16.
    hidden_rows(a, a_stride, k1_tiles_, w1_, b1_, h_tiles_, h.data(), k2);
    for (int64_t r = 0; hs != nullptr && hidden_ > 0 && r < nr; ++r) {  // else hs may be null
      std::memcpy(hs + (r0 + r) * ldh, h.data() + r * k2, static_cast<size_t>(hidden_) * 2);
    }
    // Layer 2: out = h W2ᵀ + b2, rounded to bfloat16; only out's own rows and columns stored.
    for (int64_t g = 0; g < o_tiles_; g += kGroup) {
      const int64_t n = std::min(kGroup, o_tiles_ - g);
      tile_product(h.data(), k2 * 2, k2_tiles_, packed(w2_, k2_tiles_), g, n, c.v,
                   GroupC::kStride, false);
      for (int64_t r = 0; r < nr; ++r) {
        for (int64_t t = 0; t < n; ++t) {
          const int64_t col = (g + t) * kTileN, cols = std::min(kTileN, out_ - col);
          const __m512 v = _mm512_add_ps(c.load(r, t), _mm512_loadu_ps(b2_.data() + col));
          const auto mask = static_cast<__mmask16>((1u << cols) - 1);
          _mm256_mask_storeu_epi16(os + (r0 + r) * ldo + col, mask, round_to_bf16(v));
        }
      }
    }
  }
  _tile_release();
}

void AmxTwoLayer::backward(const c10::BFloat16* x, int64_t ldx, const c10::BFloat16* g,
                           int64_t ldg, const c10::BFloat16* hidden, int64_t ldh, int64_t rows,
                           c10::BFloat16* grad_x, int64_t ldgx, AmxGradSums& sums) const {
  using namespace kernel;  // NOLINT(build/namespaces): this file's own helpers
  TORCH_INTERNAL_ASSERT(amx_bf16_usable() && backward_);
  const int64_t k1 = k1_tiles_ * kTileK, k2 = k2_tiles_ * kTileK, ko = ko_tiles_ * kTileK;
  const int64_t i_n = i_tiles_ * kTileN, h_n = h_tiles_ * kTileN, o_n = o_tiles_ * kTileN;
  const int64_t step = std::min(kStepRows, tiles(rows, kTileK) * kTileK);  // rows per step
  const int64_t pairs = step / 2;
  // One step's rows, zero-padded to whole tiles (L2): x, grad_out, hidden and the masked
  // grad_hidden as rows (A operands); x and hidden in pairs of rows (B operands of the weight
  // gradients); grad_hidden and grad_out transposed (their A operands).
  const auto buffer16 = [](int64_t n) { return std::vector<uint16_t>(static_cast<size_t>(n)); };
  const auto buffer32 = [](int64_t n) { return std::vector<uint32_t>(static_cast<size_t>(n)); };
  std::vector<uint16_t> xr = buffer16(step * k1), gr = buffer16(step * ko),
                        hr = buffer16(step * k2), ghr = buffer16(step * k2);
  std::vector<uint32_t> xv = buffer32(pairs * i_n), hv = buffer32(pairs * h_n),
                        ght = buffer32(h_n * pairs), gt = buffer32(o_n * pairs);
  GroupC c;
  const auto* xs = reinterpret_cast<const uint16_t*>(x);
  const auto* gs = reinterpret_cast<const uint16_t*>(g);
  const auto* hs = reinterpret_cast<const uint16_t*>(hidden);
  auto* gxs = reinterpret_cast<uint16_t*>(grad_x);

  static const TileConfig config;
  _tile_loadconfig(&config);
  for (int64_t s0 = 0; s0 < rows; s0 += step) {
    const int64_t ns = std::min(step, rows - s0);
    const int64_t step_rows = tiles(ns, kTileK) * kTileK;  // whole k tiles of rows
    copy_padded(xs + s0 * ldx, ldx, ns, in_, xr.data(), k1, step_rows);
    copy_padded(gs + s0 * ldg, ldg, ns, out_, gr.data(), ko, step_rows);
    if (hs != nullptr) copy_padded(hs + s0 * ldh, ldh, ns, hidden_, hr.data(), k2, step_rows);
    for (int64_t r0 = 0; r0 < step_rows; r0 += kRows) {
      // The next step's rows, a tile of them per tile of this step's: its copies stalled on
      // memory without this (most of the backward's time in the profile).
      for (int64_t r = s0 + step + r0; r < std::min(rows, s0 + step + r0 + kRows); ++r) {
        prefetch_row(xs + r * ldx, in_);
        prefetch_row(gs + r * ldg, out_);
        if (hs != nullptr) prefetch_row(hs + r * ldh, hidden_);
      }
      uint16_t* h = hr.data() + r0 * k2;
      if (hs == nullptr) {
        hidden_rows(xr.data() + r0 * k1, k1 * 2, k1_tiles_, w1_, b1_, h_tiles_, h, k2);
        // Padding rows: zero, not relu(b1), so that they add nothing to grad_W2.
        if (r0 + kRows > ns) std::fill(h + std::max<int64_t>(0, ns - r0) * k2, h + kRows * k2, 0);
      }
      // grad_hidden = grad_out W2, rounded to bfloat16, zero where hidden <= 0 (kept where it
      // is NaN, as threshold_backward does); its column sums are grad_b1's.
      uint16_t* gh = ghr.data() + r0 * k2;
      for (int64_t grp = 0; grp < h_tiles_; grp += kGroup) {
        const int64_t n = std::min(kGroup, h_tiles_ - grp);
        tile_product(gr.data() + r0 * ko, ko * 2, ko_tiles_, packed(w2_back_, ko_tiles_), grp, n,
                     c.v, GroupC::kStride, false);
        __m512 b1_terms[kGroup] = {};  // this tile's rows' part of grad_b1
        for (int64_t r = 0; r < kRows; ++r) {
          for (int64_t t = 0; t < n; ++t) {
            const int64_t col = (grp + t) * kTileN;
            const __m512 hv16 = bf16_to_float(
                _mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + r * k2 + col)));
            const __mmask16 keep = _mm512_cmp_ps_mask(hv16, _mm512_setzero_ps(), _CMP_NLE_UQ);
            const __m256i v = _mm256_maskz_mov_epi16(keep, round_to_bf16(c.load(r, t)));
            _mm256_storeu_si256(reinterpret_cast<__m256i*>(gh + r * k2 + col), v);
            b1_terms[t] = _mm512_add_ps(b1_terms[t], bf16_to_float(v));  // padding rows: 0
          }
        }
        for (int64_t t = 0; t < n; ++t) {
          float* b1 = sums.b1.data() + (grp + t) * kTileN;
          _mm512_storeu_ps(b1, _mm512_add_ps(_mm512_loadu_ps(b1), b1_terms[t]));
        }
      }
      for (int64_t col = 0; col < o_n; col += kTileN) {  // grad_b2: padding rows are 0
        __m512 b2_terms = _mm512_setzero_ps();
        for (int64_t r = 0; r < kRows; ++r) {
          b2_terms = _mm512_add_ps(b2_terms, bf16_to_float(_mm256_loadu_si256(
                                                 reinterpret_cast<const __m256i*>(
                                                     gr.data() + (r0 + r) * ko + col))));
        }
        float* b2 = sums.b2.data() + col;
        _mm512_storeu_ps(b2, _mm512_add_ps(_mm512_loadu_ps(b2), b2_terms));
      }
      // grad_x = grad_hidden W1, rounded to bfloat16.
      for (int64_t grp = 0; gxs != nullptr && grp < i_tiles_; grp += kGroup) {
        const int64_t n = std::min(kGroup, i_tiles_ - grp);
        tile_product(gh, k2 * 2, k2_tiles_, packed(w1_back_, k2_tiles_), grp, n, c.v,
                     GroupC::kStride, false);
        for (int64_t r = 0; r < std::min(kRows, ns - r0); ++r) {
          for (int64_t t = 0; t < n; ++t) {
            const int64_t col = (grp + t) * kTileN, cols = std::min(kTileN, in_ - col);
            const auto mask = static_cast<__mmask16>((1u << cols) - 1);
            _mm256_mask_storeu_epi16(gxs + (s0 + r0 + r) * ldgx + col, mask,
                                     round_to_bf16(c.load(r, t)));
          }
        }
      }
    }
    // The weight gradients: sums over the step's rows, which are k here.
    const int64_t k_steps = step_rows / kTileK;
    interleave_rows(xr.data(), k1, step_rows, i_n, xv.data(), i_n);
    interleave_rows(hr.data(), k2, step_rows, h_n, hv.data(), h_n);
    transpose_rows(ghr.data(), k2, step_rows, h_n, ght.data(), pairs);
    transpose_rows(gr.data(), ko, step_rows, o_n, gt.data(), pairs);
    const TilesB x_pairs{xv.data(), i_n * 4, kTileN * 4, kRows * i_n * 4};
    const TilesB h_pairs{hv.data(), h_n * 4, kTileN * 4, kRows * h_n * 4};
    for (int64_t m = 0; m < h_tiles_; ++m) {  // grad_W1 += grad_hiddenᵀ x
      for (int64_t grp = 0; grp < i_tiles_; grp += kGroup) {
        float* acc = sums.w1.data() + m * kRows * i_n + grp * kTileN;
        tile_product(ght.data() + m * kRows * pairs, pairs * 4, k_steps, x_pairs, grp,
                     std::min(kGroup, i_tiles_ - grp), acc, i_n * 4, true);
      }
    }
    for (int64_t m = 0; m < o_tiles_; ++m) {  // grad_W2 += grad_outᵀ hidden
      for (int64_t grp = 0; grp < h_tiles_; grp += kGroup) {
        float* acc = sums.w2.data() + m * kRows * h_n + grp * kTileN;
        tile_product(gt.data() + m * kRows * pairs, pairs * 4, k_steps, h_pairs, grp,
                     std::min(kGroup, h_tiles_ - grp), acc, h_n * 4, true);
      }
    }
  }
  _tile_release();
}

#pragma GCC diagnostic pop
#pragma GCC pop_options

#else  // no AMX code in this build

bool amx_bf16_usable() { return false; }

void AmxTwoLayer::forward(const c10::BFloat16*, int64_t, c10::BFloat16*, int64_t, int64_t,
                          c10::BFloat16*, int64_t) const {
  TORCH_INTERNAL_ASSERT(false, "AmxTwoLayer::forward without AMX support in this build");
}

void AmxTwoLayer::backward(const c10::BFloat16*, int64_t, const c10::BFloat16*, int64_t,
                           const c10::BFloat16*, int64_t, int64_t, c10::BFloat16*, int64_t,
                           AmxGradSums&) const {
  TORCH_INTERNAL_ASSERT(false, "AmxTwoLayer::backward without AMX support in this build");
}

#endif

}  // namespace twolayer_ext::cpu
