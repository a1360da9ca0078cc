// What decides whether the two-layer ops run fully fused (the hidden activation kept on
// chip, block of rows by block of rows), read by the device kernels (csrc/cpu/, csrc/cuda/)
// and by the autograd and training-step code that chooses what to save. Host-only logic
// with no CUDA dependency, so that a CPU-only build compiles it too.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>
#include <c10/util/Exception.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <optional>

namespace twolayer_ext {

enum class MlpPass { kForward, kBackward };

// TWOLAYER_EXT_FUSED_MLP=1 or 0 forces the fused path on or off; unset (or empty), each
// device's rule decides. Read on every call, so tests and benchmarks can switch it.
inline std::optional<bool> fused_mlp_forced() {
  const char* choice = std::getenv("TWOLAYER_EXT_FUSED_MLP");
  if (choice == nullptr || *choice == '\0') return std::nullopt;
  TORCH_CHECK_VALUE(std::strcmp(choice, "0") == 0 || std::strcmp(choice, "1") == 0,
                    "TWOLAYER_EXT_FUSED_MLP must be '0' or '1' (or unset), but got '", choice, "'");
  return *choice == '1';
}

// The CUDA kernels (csrc/cuda/fused_mlp.cu) keep both weight matrices, one block of rows
// of every operand and, in backward, the block's partial weight gradients in shared
// memory, all in the accumulation type (float, or double for float64). This is where
// each lives, in elements from the start of the block's dynamic shared memory; the rule
// and the launch both size the allocation from it, so they cannot disagree.
namespace cuda_mlp {

// Rows per block: a multiple of the 16-thread tile edge that keeps the row blocks of x,
// hidden, grad_out and grad_hidden small next to the weights (at 64 -> 64 -> 16 in float
// they are 27 KB of the backward's 69 KB).
constexpr int64_t kBlockRows = 32;
// Dynamic shared memory per block at most: 96 KiB fits every GPU the extension builds
// for (sm_80 and newer; sm_86/sm_89 allow 99 KiB per block, sm_80 163 KiB, sm_90 227 KiB).
constexpr int64_t kMaxSharedBytes = 96 << 10;

struct Layout {
  // Weights and biases (rows padded by one element against bank conflicts).
  int64_t w1, w2, b1, b2;
  // One block of rows: x, hidden, and in backward grad_out and masked grad_hidden.
  int64_t x, h, g, gh;
  // Backward's running sums over this block's rows: grad_w1, grad_b1, grad_w2, grad_b2,
  // contiguous from gw1 on in this order (the order of the partial sums in global memory).
  int64_t gw1, gb1, gw2, gb2;
  int64_t partials;  // gw1 .. gb2's length
  int64_t total;
};

C10_HOST_DEVICE inline Layout layout(int64_t in, int64_t hidden, int64_t out, MlpPass pass) {
  const bool backward = pass == MlpPass::kBackward;
  Layout l{};
  int64_t at = 0;
  l.w1 = at, at += hidden * (in + 1);
  l.w2 = at, at += out * (hidden + 1);
  l.b1 = at, at += hidden;
  l.b2 = at, at += backward ? 0 : out;
  l.x = at, at += kBlockRows * (in + 1);
  l.h = at, at += kBlockRows * (hidden + 1);
  l.g = at, at += backward ? kBlockRows * (out + 1) : 0;
  l.gh = at, at += backward ? kBlockRows * (hidden + 1) : 0;
  l.gw1 = at, at += backward ? hidden * in : 0;
  l.gb1 = at, at += backward ? hidden : 0;
  l.gw2 = at, at += backward ? out * hidden : 0;
  l.gb2 = at, at += backward ? out : 0;
  l.partials = at - l.gw1;
  l.total = at;
  return l;
}

}  // namespace cuda_mlp

// The CUDA rule: only where TWOLAYER_EXT_FUSED_MLP=1 asks for it (no GPU measurement has
// yet shown the kernels faster than the layered cuBLAS path, which stays the default: the
// project's GPU design rule; docs/gpu-verification.md), on non-empty operands, and where
// the pass's shared memory fits kMaxSharedBytes (e.g. float 262144x64->64->16 and
// 1048576x32->128->3 both ways; the tutorial's 1000->100->10 does not fit).
inline bool cuda_fused_mlp(int64_t rows, int64_t in, int64_t hidden, int64_t out,
                           at::ScalarType dtype, MlpPass pass) {
  if (!fused_mlp_forced().value_or(false)) return false;
  if (rows == 0 || in == 0 || hidden == 0 || out == 0) return false;  // nothing to fuse
  const int64_t acc_bytes = dtype == at::kDouble ? 8 : 4;
  return cuda_mlp::layout(in, hidden, out, pass).total * acc_bytes <= cuda_mlp::kMaxSharedBytes;
}

// Whether the network's gradients are computed without keeping its hidden activation
// (two_layer_backward_recompute): where both passes run fused and recomputing the hidden
// block costs less than writing and reading it (the CPU's rule, csrc/cpu/two_layer_fused.cpp;
// on CUDA wherever both fused kernels run). Any device may ask; false under symbolic shapes.
// Defined in csrc/fused_mlp.cpp.
bool recompute_hidden(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2);

}  // namespace twolayer_ext
