// The two-layer network's bfloat16 forward, out = relu(x W1ᵀ + b1) W2ᵀ + b2, and its
// gradients, on Intel's AMX tiles (AMX-BF16), for the fully fused path (two_layer_fused.cpp).
// Forward: 16 rows of x at a time through both layers, their hidden rows kept in a 16-row
// buffer in L1 (and copied out where training keeps the hidden activation). Backward: rows in
// steps of 256, the hidden rows recomputed (or read), grad_hidden = grad_out W2 masked by the
// ReLU, and the weight gradients' float32 sums over the rows kept in tiles' layout.
//
// Why: there oneDNN's linear primitive ran the blocks' products at about 30 us of fixed cost
// per call (descriptors and scratchpad made anew each call), about a third of each 8192-row
// block's time; our own tile loop has none (docs/BENCHMARKS.md, "bfloat16 inference on AMX").
// The layered backward writes grad_hidden and reads it twice; here it stays in L2
// ("bfloat16 training on AMX").
//
// Semantics are torch's bfloat16 linear and its gradients: float32 accumulation (the tile
// unit's, which treats denormal inputs as zero, as oneDNN's AMX kernels behind F.linear do),
// the bias added in float32, each product's output rounded once to nearest even (c10::BFloat16's
// rounding, NaN kept): the hidden activation, grad_hidden (then masked where hidden <= 0, as
// threshold_backward does), grad_x and the output; the weight and bias gradients are float32
// sums, rounded once by the caller. The ReLU keeps NaN as torch.relu does. Forward and grad_x
// rows depend on their row alone; the gradient sums on the order of the calls that add to them.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>

#include <cstdint>
#include <vector>

#include "twolayer_ext/tensor_util.h"

namespace twolayer_ext::cpu {

// The kernel's tile shapes that the path rule reads (use_fused_mlp): an A tile holds 16 rows
// of kAmxTileK bfloat16 columns (x's rows load straight into A tiles where in is a multiple of
// it; otherwise each 16-row tile of x is first copied into zero-padded tiles), and a product
// runs in groups of four C tiles, kAmxGroupColumns float32 columns.
constexpr int64_t kAmxTileK = 32;
constexpr int64_t kAmxGroupColumns = 64;

// Whether this process runs the AMX kernel: the CPU has AMX-BF16, Linux grants the process
// the tile registers (at::cpu::init_amx), and our kernels run AVX-512 (isa/isa.h: the
// epilogue is AVX-512 code, and ATEN_CPU_CAPABILITY=avx2 narrows us off it). Decided once.
bool amx_bf16_usable();

// Float32 sums of the parameter gradients over the rows that backward calls have run,
// zero-padded to whole tiles of 16: w1 [hidden][in], b1 [hidden], w2 [out][hidden], b2 [out]
// (row strides: AmxTwoLayer::padded).
struct AmxGradSums {
  std::vector<float> w1, b1, w2, b2;
};

// The weights of one forward or backward call in the tile unit's layout, and the passes over
// a range of rows on one thread.
class AmxTwoLayer {
 public:
  // w1 [hidden, in], w2 [out, hidden], b1 [hidden] and b2 [out] (optional): bfloat16. With
  // `backward`, also the transposed weights that backward multiplies by.
  AmxTwoLayer(const at::Tensor& w1, const OptTensor& b1, const at::Tensor& w2,
              const OptTensor& b2, bool backward = false);
  // out[r, :] for r < rows: x row r at x + r * ldx (in elements, contiguous), out row r at
  // out + r * ldo; where hidden is given, the hidden activation relu(x W1ᵀ + b1) too, row r at
  // hidden + r * ldh. Runs on the calling thread.
  void forward(const c10::BFloat16* x, int64_t ldx, c10::BFloat16* out, int64_t ldo,
               int64_t rows, c10::BFloat16* hidden = nullptr, int64_t ldh = 0) const;
  // For rows r < rows (x row r at x + r * ldx, grad_out row r at g + r * ldg): adds the
  // parameter gradients' terms to `sums`, and where grad_x is given writes its row r at
  // grad_x + r * ldgx. The hidden activation is recomputed, or read where `hidden` is given
  // (row r at hidden + r * ldh). Needs the `backward` constructor. Runs on the calling thread.
  void backward(const c10::BFloat16* x, int64_t ldx, const c10::BFloat16* g, int64_t ldg,
                const c10::BFloat16* hidden, int64_t ldh, int64_t rows, c10::BFloat16* grad_x,
                int64_t ldgx, AmxGradSums& sums) const;
  AmxGradSums zero_sums() const;
  // n rounded up to whole tiles of 16: the sums' row strides.
  static int64_t padded(int64_t n);

 private:
  int64_t in_, hidden_, out_;
  bool backward_;  // whether the transposed weights are packed
  // Tiles along each dimension: k (32 products of pairs per tile) and n (16 columns).
  int64_t k1_tiles_, h_tiles_, k2_tiles_, o_tiles_, i_tiles_, ko_tiles_;
  // B tiles, [n tile][k tile][16 pairs][16 columns][2]: W1ᵀ and W2ᵀ as the forward's right
  // operands; with `backward`, W2 (grad_hidden = grad_out W2) and W1 (grad_x = grad_hidden W1).
  std::vector<uint16_t> w1_, w2_, w2_back_, w1_back_;
  std::vector<float> b1_, b2_;  // biases, zero-padded to whole n tiles
};

}  // namespace twolayer_ext::cpu
