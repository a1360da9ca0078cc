// Runs the CUDA passes' kernels (csrc/cuda/passes_kernels.cuh: the ReLU with its
// packed mask, the masked gradient with its bias-gradient sums, the chunk sums) in the host
// emulation of emu.h, every dtype, against plain host code: mask bits past a row's last
// column, -0/NaN/negatives, a strided and an in-place gradient, each way of keeping (packed
// mask, layer output, all), one chunk and several. The launch geometry mirrors
// csrc/cuda/passes.cu's. Built and run by scripts/emulate_cuda_kernels.sh.
#define __shared__ static  // the kernels' static __shared__ arrays: one per kernel (emu.h)
#include "emu.h"
// The kernels, after emu.h's definitions.
#include "passes_kernels.cuh"
//
#include "check.h"
//
#include <random>
#include <string>

namespace {

using namespace emu;
using namespace twolayer_ext::cuda;
using namespace twolayer_ext::cuda::passes;

constexpr unsigned kThreads = 256;

// Random values with some exact zeros of both signs and a NaN.
template <typename T>
std::vector<T> values(std::mt19937& gen, int64_t count) {
  std::normal_distribution<double> normal;
  std::vector<T> v(count);
  for (auto& e : v) e = from_double<T>(normal(gen));
  for (int64_t i = 0; i < count; i += 11) v[i] = from_double<T>(i % 2 ? -0.0 : 0.0);
  if (count > 5) v[5] = from_double<T>(NAN);
  return v;
}

bool kept(double v) { return !(v <= 0); }  // torch's ReLU: kept where > 0 or NaN

template <typename T>
void relu_mask_case(int64_t rows, int64_t n, unsigned grid, const std::string& name) {
  std::mt19937 gen(rows * 100 + n);
  const std::string label = name + " relu_mask " + std::to_string(rows) + "x" + std::to_string(n);
  const int64_t nbytes = (n + 7) / 8;
  const std::vector<T> y0 = values<T>(gen, rows * n);
  std::vector<T> y = y0;
  std::vector<uint8_t> mask(rows * nbytes, 0xaa);
  emu::launch(grid, kThreads, 0, nullptr,
              [&] { relu_mask_kernel<T>(y.data(), rows, n, nbytes, mask.data()); });
  bool values_ok = true, mask_ok = true;
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t b = 0; b < nbytes; ++b) {
      uint8_t bits = 0;
      for (int j = 0; j < 8 && b * 8 + j < n; ++j) {
        const int64_t e = i * n + b * 8 + j;
        const bool keep = kept(to_double(y0[e]));
        bits |= uint8_t(keep) << j;
        values_ok &= same_bits(y[e], keep ? y0[e] : from_double<T>(0.0));
      }
      mask_ok &= mask[i * nbytes + b] == bits;
    }
  }
  check(values_ok, label + ": relu values (+0 for dropped, NaN kept)");
  check(mask_ok, label + ": packed bits (unused high bits 0)");
}

// masked_grad_kernel (+ sum_chunks_kernel) as passes.cu launches it.
template <typename T, typename Keep>
void masked_grad(const T* g, int64_t gs0, int64_t gs1, Keep keep, int64_t rows, int64_t n, T* gm,
                 T* grad_bias) {
  using Acc = typename Numeric<T>::acc;
  const int64_t chunk = std::max<int64_t>(256, (rows + 65534) / 65535);
  const int64_t chunks = (rows + chunk - 1) / chunk;
  std::vector<Acc> partial(grad_bias != nullptr && chunks > 1 ? chunks * n : 0);
  Acc* const partial_ptr = partial.empty() ? nullptr : partial.data();
  const uint3 grid{unsigned((n + kStrip - 1) / kStrip), unsigned(chunks), 1};
  emu::launch(grid, uint3{kStrip, kLanes, 1}, 0, nullptr, [&] {
    masked_grad_kernel<T, Keep>(g, gs0, gs1, keep, rows, n, chunk, gm, partial_ptr,
                                partial_ptr == nullptr ? grad_bias : nullptr);
  });
  if (partial_ptr != nullptr) {
    emu::launch(2, kThreads, 0, nullptr,
                [&] { sum_chunks_kernel<T>(partial_ptr, chunks, n, grad_bias); });
  }
}

template <typename T>
void masked_grad_case(int64_t rows, int64_t n, double tol, const std::string& name) {
  std::mt19937 gen(rows * 1000 + n);
  const std::string label = name + " masked_grad " + std::to_string(rows) + "x" + std::to_string(n);
  const int64_t nbytes = (n + 7) / 8;
  const std::vector<T> y = values<T>(gen, rows * n);  // the layer's output (before ReLU)
  std::vector<uint8_t> mask(rows * nbytes, 0);
  for (int64_t i = 0; i < rows; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      if (kept(to_double(y[i * n + j]))) mask[i * nbytes + j / 8] |= uint8_t(1) << (j % 8);
    }
  }
  // g transposed in memory ([n][rows]) with a NaN and an Inf, read as [rows][n].
  std::vector<T> g_t = values<T>(gen, rows * n);
  if (rows * n > 9) g_t[9] = from_double<T>(INFINITY);
  const auto g_at = [&](int64_t i, int64_t j) { return g_t[j * rows + i]; };

  const auto expect = [&](const std::vector<T>& gm, const std::vector<T>& bias, const auto& keep_fn,
                          const std::string& how) {
    bool gm_ok = true;
    std::vector<double> want(n, 0.0);
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        const T v = keep_fn(i, j) ? g_at(i, j) : from_double<T>(0.0);
        if (!gm.empty()) gm_ok &= same_bits(gm[i * n + j], v);
        want[j] += to_double(v);
      }
    }
    check(gm_ok, label + " " + how + ": masked gradient is a select");
    double err = 0, scale = 1;
    bool nan_ok = true;
    for (int64_t j = 0; j < n; ++j) {
      const double got = to_double(bias[j]);
      nan_ok &= std::isnan(got) == std::isnan(want[j]);
      if (std::isfinite(want[j])) {
        scale = std::max(scale, std::abs(want[j]));
        err = std::max(err, std::abs(got - want[j]));
      }
    }
    check(nan_ok && err / scale <= tol,
          label + " " + how + ": bias gradient (error " + std::to_string(err / scale) + ")");
  };

  {  // packed mask, strided g, separate gm
    std::vector<T> gm(rows * n), bias(n);
    masked_grad(g_t.data(), 1, rows, KeepPacked{mask.data(), nbytes}, rows, n, gm.data(),
                bias.data());
    expect(
        gm, bias, [&](int64_t i, int64_t j) { return kept(to_double(y[i * n + j])); },
        "packed mask");
  }
  {  // the output itself (after ReLU: +0 where dropped), in place on a contiguous g
    std::vector<T> relu_y(rows * n), g(rows * n), bias(n);
    for (int64_t i = 0; i < rows; ++i) {
      for (int64_t j = 0; j < n; ++j) {
        const T v = y[i * n + j];
        relu_y[i * n + j] = kept(to_double(v)) ? v : from_double<T>(0.0);
        g[i * n + j] = g_at(i, j);
      }
    }
    masked_grad(g.data(), n, 1, KeepOutput<T>{relu_y.data(), n}, rows, n, g.data(), bias.data());
    expect(
        g, bias, [&](int64_t i, int64_t j) { return kept(to_double(y[i * n + j])); },
        "layer output, in place");
  }
  {  // no ReLU: bias only
    std::vector<T> bias(n);
    masked_grad(g_t.data(), 1, rows, KeepAll{}, rows, n, static_cast<T*>(nullptr), bias.data());
    expect({}, bias, [](int64_t, int64_t) { return true; }, "keep all, bias only");
  }
}

template <typename T>
void run_all(double tol, const std::string& name) {
  for (const auto& [rows, n] :
       std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {3, 7}, {70, 67}, {5, 8}, {9, 17}}) {
    relu_mask_case<T>(rows, n, 2, name);
  }
  for (const auto& [rows, n] : std::vector<std::pair<int64_t, int64_t>>{
           {1, 1}, {70, 67}, {600, 40}}) {  // 600 rows: three chunks of 256
    masked_grad_case<T>(rows, n, tol, name);
  }
  std::printf("%s: done\n", name.c_str());
}

}  // namespace

int main() {
  run_all<float>(1e-5, "float32");
  run_all<double>(1e-12, "float64");
  run_all<__half>(4e-3, "float16");
  run_all<__nv_bfloat16>(3e-2, "bfloat16");
  return report("passes");
}
