// The two-layer network's bfloat16 forward, out = relu(x W1ᵀ + b1) W2ᵀ + b2, on Intel's AMX
// tiles (AMX-BF16), for the fully fused path's inference (two_layer_fused.cpp): 16 rows of x at
// a time through both layers, their hidden rows kept in a 16-row buffer in L1.
//
// Why: there oneDNN's linear primitive ran the blocks' products at about 30 us of fixed cost
// per call (descriptors and scratchpad made anew each call), about a third of each 8192-row
// block's time; our own tile loop has none (docs/BENCHMARKS.md, "bfloat16 inference on AMX").
//
// Semantics are torch's bfloat16 linear: float32 accumulation (the tile unit's, which treats
// denormal inputs as zero, as oneDNN's AMX kernels behind F.linear do), the bias added in
// float32, each output rounded once to nearest even (c10::BFloat16's rounding, NaN kept); the
// ReLU keeps NaN as torch.relu does. Each row's result depends on that row alone, so the
// bits do not depend on how rows are split across threads.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>

#include <cstdint>
#include <vector>

#include "twolayer_ext/tensor_util.h"

namespace twolayer_ext::cpu {

// Whether this process runs the AMX kernel: the CPU has AMX-BF16, Linux grants the process
// the tile registers (at::cpu::init_amx), and our kernels run AVX-512 (isa/isa.h: the
// epilogue is AVX-512 code, and ATEN_CPU_CAPABILITY=avx2 narrows us off it). Decided once.
bool amx_bf16_usable();

// The weights of one forward call in the tile unit's layout, and the forward of a range of
// rows on one thread.
class AmxTwoLayer {
 public:
  // w1 [hidden, in], w2 [out, hidden], b1 [hidden] and b2 [out] (optional): bfloat16.
  AmxTwoLayer(const at::Tensor& w1, const OptTensor& b1, const at::Tensor& w2,
              const OptTensor& b2);
  // out[r, :] for r < rows: x row r at x + r * ldx (in elements, contiguous), out row r at
  // out + r * ldo. Runs on the calling thread.
  void forward(const c10::BFloat16* x, int64_t ldx, c10::BFloat16* out, int64_t ldo,
               int64_t rows) const;

 private:
  int64_t in_, hidden_, out_;
  // Tiles along each dimension: k (32 products of pairs per tile) and n (16 columns).
  int64_t k1_tiles_, h_tiles_, k2_tiles_, o_tiles_;
  std::vector<uint16_t> w1_, w2_;  // B tiles, [n tile][k tile][16 pairs][16 columns][2]
  std::vector<float> b1_, b2_;     // biases, zero-padded to whole n tiles
};

}  // namespace twolayer_ext::cpu
