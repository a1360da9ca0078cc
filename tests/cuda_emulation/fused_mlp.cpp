// Runs the fused-MLP kernels (csrc/cuda/fused_mlp_simt.cuh, fused_mlp_tc.cuh) in the host
// emulation of emu.h and checks them: every variant and dtype, short last blocks, widths off
// the tile edge, chunks of several row blocks, no bias, a transposed weight, NaN, against a
// float64 reference; and bitwise, the recomputing backward against the one that reads the
// forward's hidden activation, the weight gradients without grad_x against those with it, and
// a forward whose blocks each loop over several row blocks against one block per row block.
// The host side mirrors csrc/cuda/fused_mlp.cu's.
// Built and run by scripts/emulate_cuda_kernels.sh. Exit status 0: every case passed.
#include "emu.h"
// The kernels, after emu.h's definitions.
#include <random>
#include <string>

#include "fused_mlp_common.cuh"
#include "fused_mlp_simt.cuh"
#include "fused_mlp_tc.cuh"
//
#include "check.h"

namespace twolayer_ext::cuda::fused_mlp {
namespace simt {
alignas(128) unsigned char smem[emu::kSharedBytes];
}
namespace tc {
alignas(128) unsigned char smem[emu::kSharedBytes];
}
}  // namespace twolayer_ext::cuda::fused_mlp

namespace {

using namespace emu;
using namespace twolayer_ext;
using namespace twolayer_ext::cuda;
using namespace twolayer_ext::cuda::fused_mlp;

struct Shape {
  int64_t rows;
  int in, hidden, out;
};

// A host matrix of T with strides (s0, s1) over a buffer.
template <typename T>
struct Matrix {
  int64_t rows, cols, s0, s1;
  std::vector<T> data;
  T& at(int64_t i, int64_t j) { return data[i * s0 + j * s1]; }
  double get(int64_t i, int64_t j) const { return to_double(data[i * s0 + j * s1]); }
  Strided<T> strided() const { return {data.data(), s0, s1}; }
};

template <typename T>
Matrix<T> random_matrix(std::mt19937& gen, int64_t rows, int64_t cols, double scale,
                        bool transposed) {
  Matrix<T> m{rows, cols, transposed ? 1 : cols, transposed ? rows : 1,
              std::vector<T>(static_cast<size_t>(std::max<int64_t>(rows * cols, 1)))};
  std::normal_distribution<double> normal(0.0, scale);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < cols; ++j) m.at(i, j) = from_double<T>(normal(gen));
  }
  return m;
}

// max |got - want| / max(1, max |want|) <= tol, NaN where the reference has NaN.
template <typename T>
void compare(const std::vector<T>& got, const std::vector<double>& want, double tol,
             const std::string& what) {
  double scale = 1.0, err = 0.0;
  bool nan_ok = true;
  for (double w : want) scale = std::isnan(w) ? scale : std::max(scale, std::abs(w));
  for (size_t i = 0; i < want.size(); ++i) {
    const double g = to_double(got[i]);
    if (std::isnan(want[i]) != std::isnan(g)) nan_ok = false;
    if (!std::isnan(want[i])) err = std::max(err, std::abs(g - want[i]));
  }
  check(nan_ok && err / scale <= tol,
        what + " (error " + std::to_string(err / scale) + (nan_ok ? "" : ", NaN mismatch") + ")");
}

template <typename T>
bool same_vector_bits(const std::vector<T>& a, const std::vector<T>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(T)) == 0;
}

// per_chunk > 0: row blocks per backward chunk, instead of chunking()'s (which gives several
// only past 1024 row blocks, too slow to emulate).
template <typename T, bool kTensorCores>
void run_case(const Shape& s, bool bias, bool transposed, bool nan, double tol,
              const std::string& name, int64_t per_chunk = 0) {
  using Acc = typename Numeric<T>::acc;
  std::mt19937 gen(1234 + s.rows + 7 * s.in + 31 * s.hidden + 131 * s.out);
  const std::string label = name + " " + std::to_string(s.rows) + "x" + std::to_string(s.in) +
                            "->" + std::to_string(s.hidden) + "->" + std::to_string(s.out) +
                            (bias ? "" : " nobias") + (transposed ? " w1T" : "") +
                            (nan ? " nan" : "") +
                            (per_chunk ? " chunks of " + std::to_string(per_chunk) : "");
  Matrix<T> x = random_matrix<T>(gen, s.rows, s.in, 1.0, false);
  Matrix<T> w1 = random_matrix<T>(gen, s.hidden, s.in, 1.0 / std::sqrt(s.in), transposed);
  Matrix<T> w2 = random_matrix<T>(gen, s.out, s.hidden, 1.0 / std::sqrt(s.hidden), false);
  Matrix<T> b1 = random_matrix<T>(gen, 1, s.hidden, 1.0, false);
  Matrix<T> b2 = random_matrix<T>(gen, 1, s.out, 1.0, false);
  Matrix<T> g = random_matrix<T>(gen, s.rows, s.out, 1.0, false);
  if (nan) x.at(s.rows / 2, 0) = from_double<T>(NAN);

  MlpParams<T> p{};
  p.x = x.strided(), p.w1 = w1.strided(), p.w2 = w2.strided();
  p.b1 = bias ? b1.data.data() : nullptr, p.b1_stride = 1;
  p.b2 = bias ? b2.data.data() : nullptr, p.b2_stride = 1;
  p.rows = s.rows, p.in = s.in, p.hidden = s.hidden, p.out = s.out;
  const auto smem_bytes = [&](MlpPass pass) -> size_t {
    if constexpr (kTensorCores) {
      return cuda_mlp::tc_layout(s.in, s.hidden, s.out, pass, sizeof(T)).total;
    } else {
      return cuda_mlp::layout(s.in, s.hidden, s.out, pass).total * sizeof(Acc);
    }
  };
  unsigned char* const smem = kTensorCores ? tc::smem : simt::smem;
  const int64_t row_blocks = ceil_div(s.rows, cuda_mlp::kBlockRows);
  const auto forward = [&](MlpParams<T> q, int64_t grid) {
    emu::launch(static_cast<unsigned>(grid), kThreads, smem_bytes(MlpPass::kForward), smem, [&] {
      if constexpr (kTensorCores) {
        tc::fused_mlp_forward_kernel<T>(q);
      } else {
        simt::fused_mlp_forward_kernel<T>(q);
      }
    });
  };

  // Forward, with and without the hidden activation written.
  std::vector<T> y(s.rows * s.out), y2(s.rows * s.out), h(s.rows * s.hidden);
  p.y = y.data(), p.hidden_store = h.data();
  forward(p, std::min(row_blocks, kMaxBlocks));
  p.y = y2.data(), p.hidden_store = nullptr;
  forward(p, std::min(row_blocks, kMaxBlocks));
  check(same_vector_bits(y, y2), label + ": output without hidden written = with it");
  if (per_chunk > 0) {  // each block loops over several row blocks (past kMaxBlocks on a GPU)
    std::vector<T> y3(s.rows * s.out);
    p.y = y3.data();
    forward(p, ceil_div(row_blocks, per_chunk));
    check(same_vector_bits(y, y3), label + ": output with several row blocks per block");
  }

  std::vector<double> h_ref(s.rows * s.hidden), y_ref(s.rows * s.out);
  for (int64_t r = 0; r < s.rows; ++r) {
    for (int j = 0; j < s.hidden; ++j) {
      double v = bias ? b1.get(0, j) : 0.0;
      for (int k = 0; k < s.in; ++k) v += x.get(r, k) * w1.get(j, k);
      h_ref[r * s.hidden + j] = std::isnan(v) ? v : std::max(v, 0.0);
    }
    for (int o = 0; o < s.out; ++o) {  // layer 2 on the kernel's own (rounded) hidden
      double v = bias ? b2.get(0, o) : 0.0;
      for (int j = 0; j < s.hidden; ++j) v += to_double(h[r * s.hidden + j]) * w2.get(o, j);
      y_ref[r * s.out + o] = v;
    }
  }
  compare(h, h_ref, tol, label + ": hidden");
  compare(y, y_ref, tol, label + ": out");

  // Backward, reading the forward's hidden, then recomputing it.
  if (per_chunk == 0) per_chunk = chunking(s.rows).second;
  const int64_t chunks = ceil_div(ceil_div(s.rows, cuda_mlp::kBlockRows), per_chunk);
  const cuda_mlp::Partials sums = cuda_mlp::partials(s.in, s.hidden, s.out);
  const int64_t n = sums.begin[4];
  const auto backward = [&](bool recompute, bool want_gx) {
    std::vector<T> gx(s.rows * s.in), grads(n);
    std::vector<Acc> partials(chunks * n);
    MlpParams<T> q = p;
    q.b2 = nullptr;
    if (!recompute) q.b1 = nullptr;
    q.grad_out = g.strided();
    q.hidden_saved = recompute ? Strided<T>{nullptr, 0, 0} : Strided<T>{h.data(), s.hidden, 1};
    q.grad_x = want_gx ? gx.data() : nullptr;
    q.partials = partials.data();
    q.blocks_per_chunk = per_chunk;
    q.need_gw1 = q.need_gb1 = q.need_gw2 = q.need_gb2 = true;
    emu::launch(static_cast<unsigned>(chunks), kThreads, smem_bytes(MlpPass::kBackward), smem, [&] {
      if constexpr (kTensorCores) {
        tc::fused_mlp_backward_kernel<T>(q);
      } else {
        simt::fused_mlp_backward_kernel<T>(q);
      }
    });
    Segments<T> seg{sums, {}};
    for (int i = 0; i < 4; ++i) seg.dst[i] = grads.data() + sums.begin[i];
    const unsigned grid = static_cast<unsigned>(std::min(ceil_div(n, kThreads), kMaxBlocks));
    emu::launch(grid, kThreads, 0, nullptr,
                [&] { reduce_partials_kernel<T>(partials.data(), chunks, seg); });
    gx.insert(gx.end(), grads.begin(), grads.end());
    return gx;  // grad_x, then grad_w1, grad_b1, grad_w2, grad_b2
  };
  const std::vector<T> saved = backward(false, true), again = backward(true, true);
  check(same_vector_bits(saved, again), label + ": recomputing backward = saved-hidden backward");
  // x without a gradient (the first layer of a network): the weights' gradients alone.
  const std::vector<T> weights_only = backward(false, false);
  check(std::equal(saved.begin() + s.rows * s.in, saved.end(),
                   weights_only.begin() + s.rows * s.in,
                   [](const T& a, const T& b) { return same_bits(a, b); }),
        label + ": weight gradients without grad_x = with it");

  std::vector<double> gh(s.rows * s.hidden), want;
  for (int64_t r = 0; r < s.rows; ++r) {
    for (int j = 0; j < s.hidden; ++j) {
      double v = 0;
      for (int o = 0; o < s.out; ++o) v += g.get(r, o) * w2.get(o, j);
      gh[r * s.hidden + j] = to_double(h[r * s.hidden + j]) <= 0 ? 0.0 : v;
    }
  }
  for (int64_t r = 0; r < s.rows; ++r) {  // grad_x
    for (int k = 0; k < s.in; ++k) {
      double v = 0;
      for (int j = 0; j < s.hidden; ++j) v += gh[r * s.hidden + j] * w1.get(j, k);
      want.push_back(v);
    }
  }
  for (int j = 0; j < s.hidden; ++j) {  // grad_w1
    for (int k = 0; k < s.in; ++k) {
      double v = 0;
      for (int64_t r = 0; r < s.rows; ++r) v += gh[r * s.hidden + j] * x.get(r, k);
      want.push_back(v);
    }
  }
  for (int j = 0; j < s.hidden; ++j) {  // grad_b1
    double v = 0;
    for (int64_t r = 0; r < s.rows; ++r) v += gh[r * s.hidden + j];
    want.push_back(v);
  }
  for (int o = 0; o < s.out; ++o) {  // grad_w2
    for (int j = 0; j < s.hidden; ++j) {
      double v = 0;
      for (int64_t r = 0; r < s.rows; ++r) v += g.get(r, o) * to_double(h[r * s.hidden + j]);
      want.push_back(v);
    }
  }
  for (int o = 0; o < s.out; ++o) {  // grad_b2
    double v = 0;
    for (int64_t r = 0; r < s.rows; ++r) v += g.get(r, o);
    want.push_back(v);
  }
  // Each gradient on its own scale.
  const int64_t sizes[] = {s.rows * s.in, sums.begin[1], s.hidden, sums.begin[3] - sums.begin[2],
                           s.out};
  const char* names[] = {"grad_x", "grad_w1", "grad_b1", "grad_w2", "grad_b2"};
  int64_t at = 0;
  for (int i = 0; i < 5; ++i) {
    const std::vector<T> got_i(saved.begin() + at, saved.begin() + at + sizes[i]);
    const std::vector<double> want_i(want.begin() + at, want.begin() + at + sizes[i]);
    compare(got_i, want_i, tol, label + ": " + names[i]);
    at += sizes[i];
  }
  std::printf("%s: done\n", label.c_str());
}

template <typename T, bool kTensorCores>
void run_all(double tol, const std::string& name) {
  // One row; short last blocks and widths off the 16 edge (and wider than a 64-column step);
  // no bias with a transposed w1; NaN; chunks of several row blocks, the last one shorter.
  run_case<T, kTensorCores>({1, 3, 5, 2}, true, false, false, tol, name);
  run_case<T, kTensorCores>({70, 17, 40, 3}, true, false, false, tol, name);
  run_case<T, kTensorCores>({40, 20, 72, 18}, true, false, false, tol, name);
  run_case<T, kTensorCores>({70, 17, 40, 3}, false, true, false, tol, name);
  run_case<T, kTensorCores>({70, 17, 40, 3}, true, false, true, tol, name);
  run_case<T, kTensorCores>({300, 4, 20, 3}, true, false, false, tol, name, 3);
}

}  // namespace

int main() {
  run_all<float, false>(1e-5, "simt float32");
  run_all<double, false>(1e-12, "simt float64");
  run_all<float, true>(5e-3, "tc tf32");
  run_all<__half, true>(4e-3, "tc float16");
  run_all<__nv_bfloat16, true>(3e-2, "tc bfloat16");
  return report("fused MLP");
}
