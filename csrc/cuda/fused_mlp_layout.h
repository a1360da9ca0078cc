// The shared-memory layouts of the fully fused CUDA kernels (fused_mlp_simt.cuh,
// fused_mlp_tc.cuh): where each operand of a thread block lives. Host and device code: the
// rule (cuda_fused_mlp, fused_mlp.h) and the launch size the allocation from them, the
// kernels index it, so they cannot disagree; the host emulation (tests/cuda_emulation/)
// reads them too.
#pragma once

#include <c10/macros/Macros.h>

#include <cstdint>

#include "twolayer_ext/paths.h"

namespace twolayer_ext {

// The CUDA kernels (csrc/cuda/fused_mlp*.cu*) keep both weight matrices, one block of rows
// of every operand and, in backward, the block's partial weight gradients in shared memory.
// The layouts below say where each lives; the rule and the launch both size the allocation
// from them, so they cannot disagree.
namespace cuda_mlp {

// Rows per block: a multiple of the 16-row tile edge that keeps the row blocks of x,
// hidden, grad_out and grad_hidden small next to the weights (at 64 -> 64 -> 16 in float
// they are 27 KB of the SIMT backward's 69 KB).
constexpr int64_t kBlockRows = 32;
// Dynamic shared memory per block at most: 96 KiB fits every GPU the extension builds
// for (sm_80 and newer; sm_86/sm_89 allow 99 KiB per block, sm_80 163 KiB, sm_90 227 KiB).
constexpr int64_t kMaxSharedBytes = 96 << 10;

// Which kernels run a pass: none (the layered path), the SIMT ones (CUDA cores, float or
// double arithmetic), or the tensor-core ones (WMMA: float16, bfloat16, and float32 as TF32).
enum class Variant { kNone, kSimt, kTensorCores };

// The SIMT kernels' layout, in elements of the accumulation type (float, or double for
// float64), every operand converted to it on load. Rows are padded by one element against
// bank conflicts (the products read them down a column).
// One chunk's partial weight-gradient sums, packed in this order wherever they are kept
// (the SIMT kernels' shared memory, global memory, the reduction): grad_w1 [hidden][in],
// grad_b1 [hidden], grad_w2 [out][hidden], grad_b2 [out]. begin[i]: gradient i's offset;
// begin[4]: their total length.
struct Partials {
  int64_t begin[5];
};

C10_HOST_DEVICE inline Partials partials(int64_t in, int64_t hidden, int64_t out) {
  const int64_t gw1 = hidden * in, gw2 = out * hidden;
  return {{0, gw1, gw1 + hidden, gw1 + hidden + gw2, gw1 + hidden + gw2 + out}};
}

struct Layout {
  // Weights and biases.
  int64_t w1, w2, b1, b2;
  // One block of rows: x, hidden, and in backward grad_out and masked grad_hidden.
  int64_t x, h, g, gh;
  // Backward's running sums over this chunk's rows, packed as `partials` orders them from
  // gw1 on (one copy to global memory at the end).
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
  const Partials sums = partials(in, hidden, out);
  l.partials = backward ? sums.begin[4] : 0;
  l.gw1 = at, l.gb1 = at + sums.begin[1], l.gw2 = at + sums.begin[2], l.gb2 = at + sums.begin[3];
  at += l.partials;
  l.total = at;
  return l;
}

C10_HOST_DEVICE inline int64_t pad16(int64_t n) { return (n + 15) / 16 * 16; }
C10_HOST_DEVICE inline int64_t max3(int64_t a, int64_t b, int64_t c) {
  return a > b ? (a > c ? a : c) : (b > c ? b : c);
}
// The next array's byte offset (at), and at moved past `bytes` to a 128-byte boundary.
C10_HOST_DEVICE inline int64_t take(int64_t& at, int64_t bytes) {
  const int64_t start = at;
  at = (at + bytes + 127) / 128 * 128;
  return start;
}

// The tensor-core kernels' layout, in bytes. Operands stay in their dtype (elem_bytes each),
// as the WMMA fragments load them: widths padded with zeros to the 16-element tile edge,
// leading dimensions 8 elements more (a multiple of 16 bytes, as WMMA requires, that puts
// consecutive rows on other banks). Products land in a float scratch block; backward's
// running weight-gradient sums are float tiles of the padded shapes. Every array starts on
// a 128-byte boundary (WMMA needs 32).
struct TcLayout {
  int64_t ld_in, ld_hidden, ld_out;  // leading dims of the operand arrays, in elements
  int64_t ld_scratch;                // scratch [kBlockRows][ld_scratch] float
  int64_t ld_gw1, ld_gw2;            // gw1 [pad16(hidden)][ld_gw1], gw2 [pad16(out)][ld_gw2] float
  // Byte offsets: w1 [pad16(hidden)][ld_in], w2 [pad16(out)][ld_hidden], x [32][ld_in],
  // h [32][ld_hidden], g [32][ld_out], gh [32][ld_hidden]; b1, b2, gb1, gb2 float vectors.
  int64_t w1, w2, x, h, g, gh, scratch, b1, b2, gw1, gb1, gw2, gb2;
  int64_t total;
};

C10_HOST_DEVICE inline TcLayout tc_layout(int64_t in, int64_t hidden, int64_t out, MlpPass pass,
                                          int64_t elem_bytes) {
  const bool backward = pass == MlpPass::kBackward;
  const int64_t in_p = pad16(in), hidden_p = pad16(hidden), out_p = pad16(out);
  TcLayout l{};
  l.ld_in = in_p + 8, l.ld_hidden = hidden_p + 8, l.ld_out = out_p + 8;
  l.ld_scratch = max3(in_p, hidden_p, out_p) + 4;
  l.ld_gw1 = in_p + 4, l.ld_gw2 = hidden_p + 4;
  int64_t at = 0;
  l.w1 = take(at, hidden_p * l.ld_in * elem_bytes);
  l.w2 = take(at, out_p * l.ld_hidden * elem_bytes);
  l.x = take(at, kBlockRows * l.ld_in * elem_bytes);
  l.h = take(at, kBlockRows * l.ld_hidden * elem_bytes);
  l.g = take(at, backward ? kBlockRows * l.ld_out * elem_bytes : 0);
  l.gh = take(at, backward ? kBlockRows * l.ld_hidden * elem_bytes : 0);
  l.scratch = take(at, kBlockRows * l.ld_scratch * 4);
  l.b1 = take(at, hidden * 4);
  l.b2 = take(at, backward ? 0 : out * 4);
  l.gw1 = take(at, backward ? hidden_p * l.ld_gw1 * 4 : 0);
  l.gb1 = take(at, backward ? hidden * 4 : 0);
  l.gw2 = take(at, backward ? out_p * l.ld_gw2 * 4 : 0);
  l.gb2 = take(at, backward ? out * 4 : 0);
  l.total = at;
  return l;
}

}  // namespace cuda_mlp

}  // namespace twolayer_ext
