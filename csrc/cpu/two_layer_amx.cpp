// two_layer_amx.h: the bfloat16 two-layer forward on AMX tiles.
//
// The tile unit holds eight tiles of 16 rows x 64 bytes. Every tile here has that one shape,
// so one configuration serves every product:
//   A (16 rows x 32 bfloat16):  16 rows of the left operand, 32 of its columns;
//   B (16 rows x 16 pairs):     32 rows of the right operand (k) x 16 columns (n), pairs of
//                               consecutive k interleaved ("VNNI" layout), packed once per call;
//   C (16 rows x 16 float):     the float32 sums of 16 rows x 16 columns.
// A product runs in groups of four C tiles (tmm0-3, 64 columns), with A in tmm4 and B in
// tmm5-7 in turn. Operands are zero-padded to whole tiles (weights when packed, x rows when
// they do not fill one), so the padding adds zeros: padded hidden columns are relu(0 + 0) = 0.
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

constexpr int64_t kRows = 16;      // rows of every tile
constexpr int64_t kTileK = 32;     // bfloat16 columns of an A tile: 64 bytes
constexpr int64_t kTileN = 16;     // float32 columns of a C tile: 64 bytes
constexpr int64_t kGroup = 4;      // C tiles per group (tmm0-3)
constexpr int64_t kTileElems = kRows * kTileK;  // bfloat16 elements of an A or B tile
// How many 16-row tiles ahead x is fetched; 4, 8 and 16 were no faster (docs/BENCHMARKS.md,
// "bfloat16 inference on AMX").
constexpr int64_t kPrefetchTiles = 2;

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
                         const OptTensor& b2)
    : in_(w1.size(1)),
      hidden_(w1.size(0)),
      out_(w2.size(0)),
      k1_tiles_(tiles(in_, kTileK)),
      h_tiles_(tiles(hidden_, kTileN)),
      k2_tiles_(tiles(hidden_, kTileK)),
      o_tiles_(tiles(out_, kTileN)),
      w1_(pack_b(w1, h_tiles_, k1_tiles_)),
      w2_(pack_b(w2, o_tiles_, k2_tiles_)),
      b1_(pad_bias(b1, hidden_, h_tiles_)),
      b2_(pad_bias(b2, out_, o_tiles_)) {
  TORCH_INTERNAL_ASSERT(w1.scalar_type() == at::kBFloat16 && w2.scalar_type() == at::kBFloat16);
}

#if TWOLAYER_EXT_HAVE_AMX

// Outside the target pragma below: every CPU calls it, and code compiled for AVX-512 could
// not run on one without.
bool amx_bf16_usable() {
  static const bool usable = [] {
    return isa() == Isa::kAvx512 && cpu_has("amx_tile") && cpu_has("amx_bf16") &&
           at::cpu::init_amx();
  }();
  return usable;
}

#pragma GCC push_options
#pragma GCC target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl")
#pragma GCC diagnostic push
// GCC's AVX-512 intrinsics start some results from _mm512_undefined_*(), which -Wall reports.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace {

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
// (round_to_nearest_even), bit for bit. Not VCVTNEPS2BF16, which flushes denormals to zero.
__m256i round_to_bf16(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
  r = _mm512_srli_epi32(r, 16);
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  r = _mm512_mask_mov_epi32(r, nan, _mm512_set1_epi32(0x7FC0));
  return _mm512_cvtepi32_epi16(r);
}

// C tiles [g, g + n) (n <= 4) of A (16 rows, k_tiles A tiles along the row, row stride
// a_stride bytes) times the packed B, stored as float32 to c (16 rows x 64 floats).
void product_group(const void* a, int64_t a_stride, int64_t k_tiles, const uint16_t* b,
                   int64_t g, int64_t n, float* c) {
  const auto tile_b = [&](int64_t nt, int64_t kt) { return b + (nt * k_tiles + kt) * kTileElems; };
  _tile_zero(0);
  if (n > 1) _tile_zero(1);
  if (n > 2) _tile_zero(2);
  if (n > 3) _tile_zero(3);
  const char* ap = static_cast<const char*>(a);
  for (int64_t kt = 0; kt < k_tiles; ++kt) {
    _tile_loadd(4, ap + kt * kTileK * 2, a_stride);
    _tile_loadd(5, tile_b(g, kt), 64);
    _tile_dpbf16ps(0, 4, 5);
    if (n > 1) {
      _tile_loadd(6, tile_b(g + 1, kt), 64);
      _tile_dpbf16ps(1, 4, 6);
    }
    if (n > 2) {
      _tile_loadd(7, tile_b(g + 2, kt), 64);
      _tile_dpbf16ps(2, 4, 7);
    }
    if (n > 3) {
      _tile_loadd(5, tile_b(g + 3, kt), 64);
      _tile_dpbf16ps(3, 4, 5);
    }
  }
  constexpr int64_t kStride = kGroup * kTileN * 4;  // bytes per row of c
  _tile_stored(0, c, kStride);
  if (n > 1) _tile_stored(1, c + kTileN, kStride);
  if (n > 2) _tile_stored(2, c + 2 * kTileN, kStride);
  if (n > 3) _tile_stored(3, c + 3 * kTileN, kStride);
}

}  // namespace

void AmxTwoLayer::forward(const c10::BFloat16* x, int64_t ldx, c10::BFloat16* out, int64_t ldo,
                          int64_t rows) const {
  TORCH_INTERNAL_ASSERT(amx_bf16_usable());
  const int64_t k1 = k1_tiles_ * kTileK, k2 = k2_tiles_ * kTileK;
  // This thread's operands in L1: x rows padded to whole tiles where needed, the hidden rows
  // (bfloat16, layer 2's A; columns past h_tiles_ * 16 stay zero), one group of C tiles.
  alignas(64) float c[kRows * kGroup * kTileN];
  std::vector<uint16_t> x_pad(static_cast<size_t>(kRows * k1), 0);
  std::vector<uint16_t> h(static_cast<size_t>(kRows * k2), 0);
  // Where in is a multiple of 32, A tiles load straight from x; elsewhere a row's last tile
  // would read past its end into the next row (or past x), and NaN * 0 is NaN: those rows are
  // copied into zero-padded tiles (oneDNN's AMX matmul reads there: its issue #5717).
  const bool x_whole = in_ % kTileK == 0;
  const auto* xs = reinterpret_cast<const uint16_t*>(x);
  auto* os = reinterpret_cast<uint16_t*>(out);

  static const TileConfig config;
  _tile_loadconfig(&config);
  for (int64_t r0 = 0; r0 < rows; r0 += kRows) {
    const int64_t nr = std::min(kRows, rows - r0);
    // Without this the tile loads of x stalled on memory (most of the kernel's time in the
    // profile): fetch the x rows of the tile kPrefetchTiles ahead into L1 now.
    const int64_t ahead = r0 + kPrefetchTiles * kRows;
    for (int64_t r = ahead; r < std::min(rows, ahead + kRows); ++r) {
      for (int64_t byte = 0; byte < in_ * 2; byte += 64) {
        _mm_prefetch(reinterpret_cast<const char*>(xs + r * ldx) + byte, _MM_HINT_T0);
      }
    }
    const void* a = xs + r0 * ldx;
    int64_t a_stride = ldx * 2;
    if (!x_whole || nr < kRows) {
      for (int64_t r = 0; r < kRows; ++r) {
        uint16_t* dst = x_pad.data() + r * k1;
        if (r < nr) std::memcpy(dst, xs + (r0 + r) * ldx, static_cast<size_t>(in_) * 2);
        std::fill(dst + (r < nr ? in_ : 0), dst + k1, uint16_t{0});
      }
      a = x_pad.data();
      a_stride = k1 * 2;
    }
    // Layer 1: h = relu(x W1ᵀ + b1), rounded to bfloat16.
    for (int64_t g = 0; g < h_tiles_; g += kGroup) {
      const int64_t n = std::min(kGroup, h_tiles_ - g);
      product_group(a, a_stride, k1_tiles_, w1_.data(), g, n, c);
      for (int64_t r = 0; r < kRows; ++r) {
        for (int64_t t = 0; t < n; ++t) {
          __m512 v = _mm512_add_ps(_mm512_load_ps(c + r * kGroup * kTileN + t * kTileN),
                                   _mm512_loadu_ps(b1_.data() + (g + t) * kTileN));
          // Kept where v > 0 or NaN (torch.relu keeps NaN); -0 becomes +0.
          v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_NLE_UQ), v);
          _mm256_storeu_si256(reinterpret_cast<__m256i*>(h.data() + r * k2 + (g + t) * kTileN),
                              round_to_bf16(v));
        }
      }
    }
    // Layer 2: out = h W2ᵀ + b2, rounded to bfloat16; only out's own rows and columns stored.
    for (int64_t g = 0; g < o_tiles_; g += kGroup) {
      const int64_t n = std::min(kGroup, o_tiles_ - g);
      product_group(h.data(), k2 * 2, k2_tiles_, w2_.data(), g, n, c);
      for (int64_t r = 0; r < nr; ++r) {
        for (int64_t t = 0; t < n; ++t) {
          const int64_t col = (g + t) * kTileN, cols = std::min(kTileN, out_ - col);
          const __m512 v = _mm512_add_ps(_mm512_load_ps(c + r * kGroup * kTileN + t * kTileN),
                                         _mm512_loadu_ps(b2_.data() + col));
          const auto mask = static_cast<__mmask16>((1u << cols) - 1);
          _mm256_mask_storeu_epi16(os + (r0 + r) * ldo + col, mask, round_to_bf16(v));
        }
      }
    }
  }
  _tile_release();
}

#pragma GCC diagnostic pop
#pragma GCC pop_options

#else  // no AMX code in this build

bool amx_bf16_usable() { return false; }

void AmxTwoLayer::forward(const c10::BFloat16*, int64_t, c10::BFloat16*, int64_t,
                          int64_t) const {
  TORCH_INTERNAL_ASSERT(false, "AmxTwoLayer::forward without AMX support in this build");
}

#endif

}  // namespace twolayer_ext::cpu
