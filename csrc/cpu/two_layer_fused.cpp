// The two-layer network, relu(x W1ᵀ + b1) W2ᵀ + b2, fully fused on the CPU: rows go in
// blocks small enough that a block's hidden activation (and in backward its gradient)
// stays in L2 from the product that writes it to the one that reads it.
//
// Why: when the layers are narrow each product is a few FLOPs per byte, and layer by layer
// the time goes to memory: the hidden activation is written, read and written by the
// ReLU, read by layer 2, and in backward grad_hidden is written, masked, then read twice
// more. Fresh output pages cost as much again (the first touch of each 4 KiB page
// faults). Block by block, only x, out and (in training) hidden itself cross memory.
// Measured on Zen 4 (AVX-512) and Zen 3 (AVX2): docs/BENCHMARKS.md.
//
// Parallelism is over blocks, each thread running whole blocks with single-threaded
// products (a BLAS call inside a parallel region runs on its thread); blocks, and the
// chunks of blocks whose gradient partial sums are added in a fixed order, depend on
// the shapes only, so results do not depend on the number of threads where our kernels run
// the float32 products (ReproducibleProducts; ATen's BLAS in their place, as in float64, does
// not promise it), and in bfloat16 on a CPU with AMX, where both passes of a block run in our
// tile kernel (two_layer_amx.h).
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/LegacyTypeDispatch.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/sum.h>
#include <ATen/ops/threshold_backward.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <cstring>
#include <optional>

#include "isa/isa.h"
#include "two_layer_amx.h"
#include "twolayer_ext/cpu_gemm.h"
#include "twolayer_ext/cpu_ops.h"
#include "twolayer_ext/switches.h"

namespace twolayer_ext::cpu {
namespace {

// A block's hidden activation: 256 KiB, so that it, the block of grad_hidden and the
// operands' rows fit a 1-2 MiB L2 together (Zen 4). On Zen 3's 512 KiB L2, 64 and 128 KiB
// were slower and 512 KiB no faster (docs/BENCHMARKS.md, "The fully fused path on AVX2"); on
// an Intel Xeon's 2 MiB L2, float32 tied or lost at 64-1024 KiB ("Intel Xeon").
constexpr int64_t kHiddenBlockBytes = 256 << 10;
// Where ATen's 16-bit products run the blocks on an Intel CPU (native 16-bit products: oneDNN),
// 1 MiB: each call's fixed cost is then spread over more rows; bfloat16 inference took
// 0.64-0.72x the time of 256 KiB blocks on the Xeon ("Intel Xeon"; at hidden = 64 and 128,
// "1 MiB blocks for narrow hidden layers"). Not measured elsewhere.
constexpr int64_t kIntelNative16BitHiddenBlockBytes = 1 << 20;
// Rows per block stay in [kMinBlockRows, kMaxBlockRows] (for 256 KiB blocks; blocks_for scales
// the cap with the block's bytes): fewer rows make the products
// inefficient, more bring nothing once the block fits.
constexpr int64_t kMinBlockRows = 64, kMaxBlockRows = 2048;
// Backward's partial weight gradients: one set per chunk of consecutive blocks, at most
// this many chunks (a few MiB at most for the widths the rule admits).
constexpr int64_t kMaxChunks = 64;
// The rule's bounds (use_fused_mlp): the widest layers measured, and at least two blocks.
constexpr int64_t kMaxFusedWidth = 1024;
constexpr int64_t kMinFusedBlocks = 2;
constexpr int64_t kMaxNarrowWeight = 16384;  // in x hidden, for the float64 backward
// With the AVX2 kernels (use_fused_mlp): the first layer's width up to which the fused
// path won there (at 80 and 96; tied or lost at 128).
constexpr int64_t kAvx2MaxIn = 96;
// float64 there (ATen's products in both paths): the hidden width up to which fused won.
constexpr int64_t kAvx2DoubleMaxHidden = 256;
// On an Intel CPU (use_fused_mlp): the first layer's width up to which the fused path won,
// in float32 on the AVX-512 kernels (at 32-128; tied at 192, lost at 256 and wider), and
// otherwise: the other dtypes, whose products are ATen's, and float32 on the AVX2 kernels
// (at 32 and 64; lost at 96 and wider).
constexpr int64_t kIntelAvx512MaxInFloat = 128;
constexpr int64_t kIntelMaxIn = 64;
// ... and float32 inference on the AVX-512 kernels also at wider first layers, up to
// kIntelOnePanelMaxIn, where the hidden layer is kIntelOnePanelHidden wide: one panel of the
// broadcast kernel's tile (4 vectors of 16 floats), where the layered path's MKL product runs
// slower per column than at 48 or 96: 1.14-1.59x the layered time at in = 129-1024, 2048 to
// 262144 rows, 1 to 512 outputs, with glibc's allocator and without page faults. Other hidden
// widths lost somewhere at about 10^4 rows (32-48: 0.75-0.94; 96-512: 0.51-0.95), and training
// at hidden 64 tied (0.98-1.04) (docs/BENCHMARKS.md, "Fused inference at hidden 64 on Intel").
constexpr int64_t kIntelOnePanelHidden = 64;
constexpr int64_t kIntelOnePanelMaxIn = 1024;
constexpr int64_t kMaxRecomputeIn = 64;      // in_features, for recompute_hidden_rule
// bfloat16 training on AMX (use_fused_mlp): the hidden width up to which the fused passes won
// (1.1-1.4x at 512; 0.5-0.75x at 1024, where the weight gradients' float32 sums outgrow the
// kernel's steps of rows).
constexpr int64_t kAmxMaxTrainingHidden = 512;
// bfloat16 on AMX (use_fused_mlp) also where 64 < in ≤ kAmxWholeTilesMaxIn, where in is a
// whole number of the kernel's A tiles (kAmxTileK bfloat16 columns: x's rows load straight
// into them, with no padded copy; two_layer_amx.h) and each layer's outputs fit one group of
// four C tiles (≤ kAmxGroupColumns): inference 1.06-3.46x the layered time (oneDNN's AMX
// products) at in = 96 and 128, 16 to 262144 rows, training 1.20-1.71x; inference at in = 80
// and 112 (padded copies) 0.64-1.11, at hidden 128 or out 256 0.68-1.34, at in = 192 0.85-1.36
// (docs/BENCHMARKS.md, "bfloat16 on AMX at in = 96 and 128").
constexpr int64_t kAmxWholeTilesMaxIn = 128;
// On an Intel CPU (fused_two_layer_forward): the fewest outputs for which layer 2 runs on the
// broadcast kernel from W2ᵀ (0.69-0.95x the nt kernel's time at 16-128 outputs; 1.03-1.35x at
// 1-10, with the AVX-512 kernels; 0.87-0.88x at 16 and 24 with the AVX2 ones).
constexpr int64_t kIntelBcastMinOut = 16;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct Blocks {
  int64_t rows, size, count;
  int64_t begin(int64_t i) const { return i * size; }
  int64_t length(int64_t i) const { return std::min(size, rows - i * size); }
};

// Whether bfloat16 inference runs in the AMX tile kernel (two_layer_amx.h).
bool amx_runs(at::ScalarType dtype) {
  return dtype == at::kBFloat16 && !cpu_gemm_aten_forced() && amx_bf16_usable();
}

Blocks blocks_for(int64_t rows, int64_t hidden_features, at::ScalarType dtype) {
  const bool native_16bit = at::isReducedFloatingType(dtype) && native_16bit_products(dtype) &&
                            intel_cpu() && !amx_runs(dtype);
  const int64_t bytes = native_16bit ? kIntelNative16BitHiddenBlockBytes : kHiddenBlockBytes;
  const int64_t row_bytes = hidden_features * static_cast<int64_t>(c10::elementSize(dtype));
  const int64_t fit = bytes / std::max<int64_t>(1, row_bytes);
  // The row cap grows with the block, so a 1 MiB block stays 1 MiB where hidden is narrow
  // (2048 rows of 64 bfloat16 are only 256 KiB).
  const int64_t max_rows = kMaxBlockRows * (bytes / kHiddenBlockBytes);
  const int64_t size = std::clamp(fit, kMinBlockRows, max_rows);
  return {rows, size, ceil_div(rows, size)};
}

// acc += aᵀ @ b, in acc's dtype (float for the 16-bit types: torch accumulates their
// weight gradients in float and rounds once).
void add_mm_tn(at::Tensor& acc, const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() == acc.scalar_type()) {
    acc.add_(mm_tn(a, b));
  } else {
    acc.add_(mm_tn(a.to(acc.scalar_type()), b.to(acc.scalar_type())));
  }
}

// Where a block's layer runs on the broadcast kernel from Wᵀ (else from W, on the nt kernel
// or ATen's products). Layer 1, wherever our kernels run its products (float32, and 16-bit in
// float32): the fused path runs where the first layer is narrow, a reduction too short for
// the nt kernel, whose horizontal sum per output cost about as much as its multiply-adds when
// this was measured (before reduce4 halved its shuffles). The fused forward took 0.6x the
// time on Zen 3 (AVX2) and 0.3-0.5x on an Intel Xeon (AVX-512) at in = 32-64
// (docs/BENCHMARKS.md, "The fully fused path's first layer on the broadcast kernel", "Intel
// Xeon"); Zen 4 not measured. Layer 2 (3 and 16 outputs measured) lost there on Zen 3 and
// stays on nt on AMD CPUs; on an Intel CPU it runs on the broadcast kernel where it has
// kIntelBcastMinOut outputs or more (float32; docs/BENCHMARKS.md, "Layer 2 of the fully fused
// path on the broadcast kernel").
// Whether the float32 GEMM kernels of this call are `isa`'s ("avx512", "avx2"; "none": ATen's
// BLAS runs every product).
bool kernels_are(const char* isa) { return std::strcmp(gemm_kernels_isa(), isa) == 0; }

bool first_layer_on_bcast(const at::Tensor& w) {
  const at::ScalarType dtype = w.scalar_type();
  const bool float_products = dtype == at::kFloat || !native_16bit_products(dtype);
  return float_products && !kernels_are("none");
}
bool second_layer_on_bcast(const at::Tensor& w) {
  return w.scalar_type() == at::kFloat && intel_cpu() && w.size(0) >= kIntelBcastMinOut &&
         !kernels_are("none");
}

// A layer of a block, x Wᵀ + b (through relu for layer 1), the same way in the forward and in
// the backward's recomputation: from Wᵀ, made contiguous once per call, where on_bcast.
class BlockLayer {
 public:
  BlockLayer(const at::Tensor& w, const OptTensor& b, bool relu, bool on_bcast)
      : w_(w), b_(b), relu_(relu) {
    if (on_bcast) wt_ = w.t().contiguous();
  }
  // The layer for a block of rows, into `block` (rows of the kept hidden activation or of the
  // output, or of a scratch buffer when `scratch`); returns the block written. A scratch block
  // is replaced by the layer's own output where that is a new tensor anyway (oneDNN's linear,
  // in 16-bit on a CPU with native 16-bit products), which saves copying it.
  at::Tensor operator()(at::Tensor block, const at::Tensor& x, bool scratch) const {
    if (wt_.defined()) {
      mm_nn_out(block, x, wt_, b_, relu_);
    } else if (scratch) {
      block = linear(x, w_, b_, relu_);
    } else {
      linear_out(block, x, w_, b_, relu_);
    }
    return block;
  }
  // Whether a scratch block is written into (else the layer returns its own).
  bool uses_scratch() const { return wt_.defined(); }

 private:
  const at::Tensor& w_;
  const OptTensor& b_;
  bool relu_;
  at::Tensor wt_;  // Wᵀ, contiguous, where the broadcast kernel runs the layer
};

// parts [chunks, ...] summed over chunks in chunk order, in the gradient's dtype.
at::Tensor sum_in_order(const at::Tensor& parts, at::ScalarType dtype) {
  if (parts.size(0) == 0) return at::zeros(parts.sizes().slice(1), parts.options().dtype(dtype));
  at::Tensor total = parts[0].clone();
  for (int64_t c = 1; c < parts.size(0); ++c) total.add_(parts[c]);
  return total.to(dtype);
}

// t, or a copy of it where its rows are not contiguous: the AMX kernel reads rows.
at::Tensor with_contiguous_rows(const at::Tensor& t) {
  return rows_contiguous(t) ? t : t.contiguous();
}

// The backward's outputs: grad_x [rows, in], and the parameter gradients' partial sums per
// chunk of blocks, [chunks, ...] in float32 for the 16-bit types; undefined where not needed.
struct GradParts {
  at::Tensor x, w1, b1, w2, b2;
};

// The gradients block by block on ATen's products and ours (fused_two_layer_backward).
void blocks_backward(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w1,
                     const OptTensor& b1, const at::Tensor& w2, const at::Tensor* hidden,
                     const Blocks& blocks, int64_t per_chunk, const GradParts& parts) {
  const bool layer1 = parts.x.defined() || parts.w1.defined() || parts.b1.defined();
  const at::ScalarType acc = at::toOpMathType(x.scalar_type());
  std::optional<BlockLayer> recompute;  // layer 1 again, when hidden is not given
  if (hidden == nullptr) recompute.emplace(w1, b1, /*relu=*/true, first_layer_on_bcast(w1));
  at::parallel_for(0, ceil_div(blocks.count, per_chunk), 1, [&](int64_t first, int64_t last) {
    at::AutoDispatchBelowADInplaceOrView below_autograd;  // as in the forward
    ReproducibleProducts reproducible;
    at::Tensor buffer;  // this thread's recomputed hidden block, when hidden is not given
    if (recompute && recompute->uses_scratch()) {
      buffer = at::empty({blocks.size, w1.size(0)}, x.options());
    }
    for (int64_t c = first; c < last; ++c) {
      at::Tensor w1_part = parts.w1.defined() ? parts.w1[c] : at::Tensor();
      at::Tensor w2_part = parts.w2.defined() ? parts.w2[c] : at::Tensor();
      for (int64_t i = c * per_chunk; i < std::min(blocks.count, (c + 1) * per_chunk); ++i) {
        const int64_t r0 = blocks.begin(i), nr = blocks.length(i);
        const at::Tensor gb = grad_out.narrow(0, r0, nr);
        at::Tensor hb = hidden ? hidden->narrow(0, r0, nr)
                        : buffer.defined() ? buffer.narrow(0, 0, nr) : at::Tensor();
        if (recompute) hb = (*recompute)(hb, x.narrow(0, r0, nr), true);  // the forward's bits
        if (w2_part.defined()) add_mm_tn(w2_part, gb, hb);
        if (parts.b2.defined()) parts.b2[c].add_(at::sum(gb, {0}, false, acc));
        if (!layer1) continue;
        at::Tensor gh = mm_nn(gb, w2);              // grad_hidden [nr, hidden], in cache
        at::threshold_backward_out(gh, gh, hb, 0);  // ReLU: kept where hidden > 0 or NaN
        if (parts.b1.defined()) parts.b1[c].add_(at::sum(gh, {0}, false, acc));
        if (w1_part.defined()) add_mm_tn(w1_part, gh, x.narrow(0, r0, nr));
        if (parts.x.defined()) {
          at::Tensor gxb = parts.x.narrow(0, r0, nr);
          mm_nn_out(gxb, gh, w1);
        }
      }
    }
  });
}

// The gradients in bfloat16 on AMX tiles (two_layer_amx.h), each chunk's sums in the kernel's
// padded layout, then copied into its row of the partial sums.
void amx_backward(const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w1,
                  const OptTensor& b1, const at::Tensor& w2, const at::Tensor* hidden,
                  const Blocks& blocks, int64_t per_chunk, const GradParts& parts) {
  const AmxTwoLayer amx(w1, b1, w2, std::nullopt, /*backward=*/true);
  const at::Tensor xr = with_contiguous_rows(x), gr = with_contiguous_rows(grad_out);
  const at::Tensor hr = hidden ? with_contiguous_rows(*hidden) : at::Tensor();
  const int64_t in = w1.size(1), hid = w1.size(0), out = w2.size(0);
  // part[c] (rows x cols, contiguous) = the kernel's sums (rows ld apart).
  const auto put = [](const at::Tensor& part, int64_t c, const std::vector<float>& sums,
                      int64_t rows, int64_t cols, int64_t ld) {
    if (!part.defined() || part.numel() == 0) return;  // an empty part's data may be null
    float* dst = part.data_ptr<float>() + c * rows * cols;
    for (int64_t r = 0; r < rows; ++r) {
      std::memcpy(dst + r * cols, sums.data() + r * ld, static_cast<size_t>(cols) * 4);
    }
  };
  at::parallel_for(0, ceil_div(blocks.count, per_chunk), 1, [&](int64_t first, int64_t last) {
    for (int64_t c = first; c < last; ++c) {
      // The chunk's blocks are consecutive rows: one call runs them all.
      const int64_t r0 = blocks.begin(c * per_chunk);
      const int64_t end = std::min(blocks.rows, blocks.begin((c + 1) * per_chunk));
      AmxGradSums sums = amx.zero_sums();
      amx.backward(xr.const_data_ptr<c10::BFloat16>() + r0 * xr.stride(0), xr.stride(0),
                   gr.const_data_ptr<c10::BFloat16>() + r0 * gr.stride(0), gr.stride(0),
                   hr.defined() ? hr.const_data_ptr<c10::BFloat16>() + r0 * hr.stride(0)
                                : nullptr,
                   hr.defined() ? hr.stride(0) : 0, end - r0,
                   parts.x.defined() ? parts.x.data_ptr<c10::BFloat16>() + r0 * in : nullptr,
                   in, sums);
      put(parts.w1, c, sums.w1, hid, in, AmxTwoLayer::padded(in));
      put(parts.b1, c, sums.b1, 1, hid, 0);
      put(parts.w2, c, sums.w2, out, hid, AmxTwoLayer::padded(hid));
      put(parts.b2, c, sums.b2, 1, out, 0);
    }
  });
}

}  // namespace

// The rule: TWOLAYER_EXT_CPU_FUSED_MLP=1 or 0 forces the path. Otherwise the forward runs
// fused wherever there are two blocks or more and the layers are at most 1024 wide: it won
// or tied at every such size measured, in every dtype (docs/BENCHMARKS.md, "Narrow networks
// with many rows", Zen 4: the layered/ext column). One block would run on one thread. The
// backward runs fused in float32, and in float64 where in x hidden ≤ 16384 (wider, the
// per-block updates of the partial weight gradients cost more than they save). Not for the
// 16-bit types, whose fused backward computes its weight gradients in float and lost.
//
// With the AVX2 kernels (a CPU without AVX-512) the fused path runs its float32 and 16-bit
// products on those kernels, one core per block (ReproducibleProducts), where they lose to
// MKL's single-threaded GEMM: it pays only where the first layer is narrow enough (in ≤ 96)
// that memory traffic dominates (docs/BENCHMARKS.md, "The fully fused path on AVX2" and "The
// fully fused path's first layer on the broadcast kernel", Zen 3).
// float64 has no kernels of ours and keeps the rule above where hidden ≤ 256: on Zen 3 it won
// or tied up to 256 wide and lost at 512 (docs/BENCHMARKS.md, "The fully fused path on AVX2").
//
// On an Intel CPU, where MKL and oneDNN run Intel's own kernels in the layered path, the fused
// path won only where in ≤ 128 in float32 on the AVX-512 kernels (inference: also up to 1024
// where hidden = 64, kIntelOnePanelHidden) and in ≤ 64 otherwise; and in
// 16-bit only without autograd: the forward that keeps hidden for a layered backward lost to
// the layered forward (docs/BENCHMARKS.md, "Intel Xeon": an AVX-512 Xeon with native 16-bit
// products; the AVX2 bound with the kernels, MKL and oneDNN narrowed to AVX2 there). Intel
// CPUs without native 16-bit products get the same rule, not measured.
// bfloat16 on AMX (two_layer_amx.h) runs fused at any number of rows, one block included,
// where in ≤ 64 (also at in = 96 and 128 with both layers ≤ 64 wide, kAmxWholeTilesMaxIn):
// inference won at 16 to 262144 rows (1.6-3.0x; 1.04x at 1024x64->1024->64),
// and lost from in = 256 (0.7x; 1.09x at 128) (docs/BENCHMARKS.md, "bfloat16 inference on
// AMX", Intel Xeon); training, both passes in the kernel, where hidden ≤ 512: 1.1-2.8x at 1 to
// 262144 rows, 1.1-1.4x at hidden 512, 0.5-0.75x at 1024 ("bfloat16 training on AMX").
// Thread count is not an input: the path, and so the result, must not depend on it.
bool use_fused_mlp(int64_t rows, int64_t in_features, int64_t hidden_features, int64_t out_features,
                   at::ScalarType dtype, MlpPass pass) {
  if (const auto forced = cpu_fused_mlp_forced()) return *forced;
  const bool amx = amx_runs(dtype);
  const bool fits = hidden_features <= kMaxFusedWidth && out_features <= kMaxFusedWidth &&
                    (amx || blocks_for(rows, hidden_features, dtype).count >= kMinFusedBlocks);
  if (!fits) return false;
  if (intel_cpu()) {
    const bool avx512_float = dtype == at::kFloat && kernels_are("avx512");
    const bool one_panel_inference = avx512_float && pass == MlpPass::kInference &&
                                     hidden_features == kIntelOnePanelHidden &&
                                     in_features <= kIntelOnePanelMaxIn;
    const bool amx_whole_tiles = amx && in_features <= kAmxWholeTilesMaxIn &&
                                 in_features % kAmxTileK == 0 &&
                                 hidden_features <= kAmxGroupColumns &&
                                 out_features <= kAmxGroupColumns;
    if (in_features > (avx512_float ? kIntelAvx512MaxInFloat : kIntelMaxIn) &&
        !one_panel_inference && !amx_whole_tiles) {
      return false;
    }
    if (at::isReducedFloatingType(dtype)) {
      return pass == MlpPass::kInference || (amx && hidden_features <= kAmxMaxTrainingHidden);
    }
  } else if (kernels_are("avx2")) {
    if (dtype != at::kDouble) return in_features <= kAvx2MaxIn;
    if (hidden_features > kAvx2DoubleMaxHidden) return false;
  }
  if (pass != MlpPass::kBackward) return true;
  return dtype == at::kFloat ||
         (dtype == at::kDouble && in_features * hidden_features <= kMaxNarrowWeight);
}

// Training keeps no hidden activation where both passes run fused, layer 1 is cheap to run
// again (in_features ≤ 64) and the products run in the tensors' own type (float32, float64):
// there, writing hidden costs more than recomputing it block by block in backward, and the
// step needs a fraction of the memory (docs/BENCHMARKS.md, "Narrow networks with many rows",
// Zen 4; "The fully fused path on AVX2", Zen 3; "Intel Xeon", where 96 won once and 128 lost).
// With in = 1000 layer 1 is most of the arithmetic and recomputing it lost. The 16-bit
// types keep hidden: on AVX2, where their backward runs fused, recomputing converts layer 1's
// operands to float32 once more and lost (Zen 3); on AVX-512 their backward is layered. Except
// bfloat16 on AMX, whose tile kernel recomputes hidden 16 rows at a time: writing it (32 MiB
// at 262144x64->64->16, page-faulted anew on each step with glibc's defaults) cost more
// (docs/BENCHMARKS.md, "bfloat16 training on AMX").
bool recompute_hidden_rule(int64_t rows, int64_t in_features, int64_t hidden_features,
                           int64_t out_features, at::ScalarType dtype) {
  const auto fused = [&](MlpPass pass) {
    return use_fused_mlp(rows, in_features, hidden_features, out_features, dtype, pass);
  };
  return (dtype == at::kFloat || dtype == at::kDouble || amx_runs(dtype)) &&
         in_features <= kMaxRecomputeIn &&
         fused(MlpPass::kForward) && fused(MlpPass::kBackward);
}

void fused_two_layer_forward(at::Tensor& out, const at::Tensor& x, const at::Tensor& w1,
                             const OptTensor& b1, const at::Tensor& w2, const OptTensor& b2,
                             at::Tensor* hidden) {
  const int64_t hidden_features = w1.size(0);
  const Blocks blocks = blocks_for(x.size(0), hidden_features, x.scalar_type());
  const BlockLayer layer1(w1, b1, /*relu=*/true, first_layer_on_bcast(w1));
  const BlockLayer layer2(w2, b2, /*relu=*/false, second_layer_on_bcast(w2));
  // bfloat16 on AMX: both layers in our tile kernel (two_layer_amx.h), not oneDNN's linear
  // per block: 0.5x the time at 262144x64->64->16 on an Intel Xeon (docs/BENCHMARKS.md,
  // "bfloat16 inference on AMX"); it writes the hidden rows too where training keeps them.
  std::optional<AmxTwoLayer> amx;
  at::Tensor x_rows = x;  // x with its rows contiguous, as the kernel reads them
  if (amx_runs(x.scalar_type())) {
    TORCH_INTERNAL_ASSERT(out.is_contiguous() && (hidden == nullptr || hidden->is_contiguous()));
    x_rows = with_contiguous_rows(x);
    amx.emplace(w1, b1, w2, b2);
  }
  at::parallel_for(0, blocks.count, 1, [&](int64_t first, int64_t last) {
    if (amx) {
      for (int64_t i = first; i < last; ++i) {
        const int64_t r0 = blocks.begin(i);
        amx->forward(x_rows.const_data_ptr<c10::BFloat16>() + r0 * x_rows.stride(0),
                     x_rows.stride(0), out.data_ptr<c10::BFloat16>() + r0 * out.stride(0),
                     out.stride(0), blocks.length(i),
                     hidden ? hidden->data_ptr<c10::BFloat16>() + r0 * hidden_features : nullptr,
                     hidden_features);
      }
      return;
    }
    // Worker threads do not inherit the caller's dispatch state: stay below autograd.
    at::AutoDispatchBelowADInplaceOrView below_autograd;
    ReproducibleProducts reproducible;  // the same bits whatever the thread count
    at::Tensor buffer;  // this thread's hidden block, when hidden is not kept
    if (hidden == nullptr && layer1.uses_scratch()) {
      buffer = at::empty({blocks.size, hidden_features}, x.options());
    }
    for (int64_t i = first; i < last; ++i) {
      const int64_t r0 = blocks.begin(i), nr = blocks.length(i);
      at::Tensor hb = hidden ? hidden->narrow(0, r0, nr)
                      : buffer.defined() ? buffer.narrow(0, 0, nr) : at::Tensor();
      hb = layer1(hb, x.narrow(0, r0, nr), /*scratch=*/hidden == nullptr);
      layer2(out.narrow(0, r0, nr), hb, /*scratch=*/false);
    }
  });
}

std::tuple<OptTensor, OptTensor, OptTensor, OptTensor, OptTensor> fused_two_layer_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w1, const OptTensor& b1,
    const at::Tensor& w2, const at::Tensor* hidden, std::array<bool, 5> output_mask) {
  const auto [need_gx, need_gw1, need_gb1, need_gw2, need_gb2] = output_mask;
  const int64_t rows = x.size(0), in_features = w1.size(1), hidden_features = w1.size(0),
                out_features = w2.size(0);
  const at::ScalarType dtype = x.scalar_type(), acc = at::toOpMathType(dtype);
  const Blocks blocks = blocks_for(rows, hidden_features, dtype);
  const int64_t max_chunks = std::clamp<int64_t>(blocks.count, 1, kMaxChunks);
  const int64_t per_chunk = std::max<int64_t>(1, ceil_div(blocks.count, max_chunks));
  const int64_t chunks = ceil_div(blocks.count, per_chunk);

  const auto partials = [&](bool needed, at::IntArrayRef shape) {
    std::vector<int64_t> sizes{chunks};
    sizes.insert(sizes.end(), shape.begin(), shape.end());
    return needed ? at::zeros(sizes, x.options().dtype(acc)) : at::Tensor();
  };
  at::Tensor pw1 = partials(need_gw1, {hidden_features, in_features});
  at::Tensor pb1 = partials(need_gb1, {hidden_features});
  at::Tensor pw2 = partials(need_gw2, {out_features, hidden_features});
  at::Tensor pb2 = partials(need_gb2, {out_features});
  at::Tensor gx = need_gx ? at::empty({rows, in_features}, x.options()) : at::Tensor();
  // bfloat16 on AMX: every gradient in our tile kernel (two_layer_amx.h), in place of ATen's
  // products per block and their float32 copies (docs/BENCHMARKS.md, "bfloat16 training on
  // AMX").
  if (amx_runs(dtype)) {
    amx_backward(grad_out, x, w1, b1, w2, hidden, blocks, per_chunk, {gx, pw1, pb1, pw2, pb2});
  } else {
    blocks_backward(grad_out, x, w1, b1, w2, hidden, blocks, per_chunk,
                    {gx, pw1, pb1, pw2, pb2});
  }
  const auto total = [&](bool needed, const at::Tensor& parts) {
    return needed ? OptTensor(sum_in_order(parts, dtype)) : std::nullopt;
  };
  const auto weight_total = [&](bool needed, const at::Tensor& parts, const at::Tensor& w) {
    return needed ? OptTensor(in_layout_of(sum_in_order(parts, dtype), w)) : std::nullopt;
  };
  return {need_gx ? OptTensor(gx) : std::nullopt, weight_total(need_gw1, pw1, w1),
          total(need_gb1, pb1), weight_total(need_gw2, pw2, w2), total(need_gb2, pb2)};
}

}  // namespace twolayer_ext::cpu
