// The CPU ops' matrix products: each picks the float32 kernels (AVX-512 or
// AVX2) of csrc/cpu/gemm_f32.cpp where they apply and win (cpu_gemm.h), and ATen's
// BLAS (MKL/oneDNN) everywhere else: other dtypes, other CPUs, large shapes,
// operands whose rows are not contiguous. 16-bit layers on a CPU with native 16-bit
// products run on oneDNN's linear primitive, which adds the bias in the product
// (onednn_linear).
//
// 16-bit operands on a CPU without 16-bit multiply-adds (native_16bit_products) are
// converted to float32, multiplied there (the kernels or sgemm) and each output rounded
// once: what ATen's own 16-bit GEMM computes (float32 accumulation, one rounding), in
// another summation order, and several times faster on such CPUs (docs/BENCHMARKS.md,
// "16-bit products in float32"). TWOLAYER_EXT_CPU_GEMM=aten keeps ATen's own path. The
// conversions run our vector pass (isa/passes.h) wherever the two sides share a dense layout,
// ATen's copy elsewhere.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_strided.h>
#include <ATen/ops/mm.h>
#include <ATen/ops/zeros.h>

#include <algorithm>
#include <atomic>
#include <exception>

#include "isa/isa.h"
#include "isa/passes.h"
#include "twolayer_ext/cpu_gemm.h"
#include "twolayer_ext/cpu_ops.h"
#include "twolayer_ext/switches.h"

namespace twolayer_ext::cpu {

bool native_16bit_products(at::ScalarType dtype) {
  static const bool bf16 = cpu_has("avx512_bf16") || cpu_has("amx_bf16");
  static const bool fp16 = cpu_has("avx512_fp16") || cpu_has("amx_fp16");
  if (dtype == at::kBFloat16) return bf16;
  if (dtype == at::kHalf) return fp16;
  return true;
}

namespace {

bool is_float(const at::Tensor& t) { return t.scalar_type() == at::kFloat; }

// Whether a product with this result dtype runs in float32 (see the top of this file).
bool in_float32(const at::Tensor& t) {
  return !native_16bit_products(t.scalar_type()) && !cpu_gemm_aten_forced();
}

// Elements per thread of a conversion, ATen's own grain: the tutorial's x and w1 (64000 and
// 100000 elements) convert on two threads, its small operands on one (docs/BENCHMARKS.md,
// "16-bit operands converted by our own pass").
constexpr int64_t kConversionGrain = int64_t{1} << 15;

// Whether src and dst (same sizes) can be converted as flat arrays: the same strides, with
// no gaps or overlaps, so element i of one is element i of the other.
bool same_dense_layout(const at::Tensor& a, const at::Tensor& b) {
  return a.strides() == b.strides() && a.is_non_overlapping_and_dense();
}

// dst = src converted, element by element, for src and dst of the same sizes: one of them
// float32 and the other 16-bit, in the same dense layout, converted by our pass; anything else
// by copy_.
void convert_into(at::Tensor& dst, const at::Tensor& src) {
  const bool widen = is_float(dst) && at::isReducedFloatingType(src.scalar_type());
  const bool narrow = is_float(src) && at::isReducedFloatingType(dst.scalar_type());
  if (!(widen || narrow) || !same_dense_layout(dst, src)) {
    dst.copy_(src);
    return;
  }
  AT_DISPATCH_REDUCED_FLOATING_TYPES(widen ? src.scalar_type() : dst.scalar_type(), "convert", [&] {
    at::parallel_for(0, src.numel(), kConversionGrain, [&](int64_t begin, int64_t end) {
      if (widen) {
        passes::widen_to_float(src.const_data_ptr<scalar_t>(), dst.data_ptr<float>(), begin, end);
      } else {
        passes::round_from_float(src.const_data_ptr<float>(), dst.data_ptr<scalar_t>(), begin,
                                 end);
      }
    });
  });
}

// t in float32, in t's layout (what t.to(at::kFloat) returns).
at::Tensor as_float(const at::Tensor& t) {
  if (is_float(t)) return t;
  if (!t.is_non_overlapping_and_dense()) return t.to(at::kFloat);
  at::Tensor f = at::empty_strided(t.sizes(), t.strides(), t.options().dtype(at::kFloat));
  convert_into(f, t);
  return f;
}
OptTensor as_float(const OptTensor& t) { return present(t) ? OptTensor(as_float(*t)) : t; }

// Whether x @ w.T goes to the float32 kernels.
bool fast_nt(const at::Tensor& x, const at::Tensor& w) {
  return is_float(x) && rows_contiguous(x) && rows_contiguous(w) &&
         use_fast_gemm(x.size(0), w.size(0), w.size(1), GemmKernel::kNt);
}

// A = a, or aᵀ where transposed, as the bcast kernel reads it: through a's strides, so that a
// transposed operand needs no view (each view is a dispatcher call, docs/BENCHMARKS.md,
// "The drop-in step: fewer dispatcher calls").
struct BcastA {
  const at::Tensor& a;
  bool transposed;
  int64_t rows() const { return a.size(transposed ? 1 : 0); }
  int64_t cols() const { return a.size(transposed ? 0 : 1); }
  int64_t row_stride() const { return a.stride(transposed ? 1 : 0); }
  int64_t col_stride() const { return a.stride(transposed ? 0 : 1); }
};

// Whether out = A @ b (float32) goes to the bcast kernel, which reads A through any strides.
bool fast_bcast(const at::Tensor& out, const BcastA& A, const at::Tensor& b) {
  return is_float(A.a) && rows_contiguous(b) && rows_contiguous(out) &&
         use_fast_gemm(A.rows(), b.size(1), A.cols(), GemmKernel::kBcast);
}

// out = A @ b + bias (through relu where relu) on the bcast kernel if fast_bcast says so;
// false (out untouched) if not.
bool bcast_into(at::Tensor& out, const BcastA& A, const at::Tensor& b, const OptTensor& bias,
                bool relu) {
  if (!fast_bcast(out, A, b)) return false;
  const bool has_bias = present(bias);
  const at::Tensor bc = has_bias ? bias->contiguous() : at::Tensor();
  gemm_bcast_f32(A.a.data_ptr<float>(), A.col_stride(), A.row_stride(), b.data_ptr<float>(),
                 b.stride(0), has_bias ? bc.data_ptr<float>() : nullptr, out.data_ptr<float>(),
                 out.stride(0), A.rows(), b.size(1), A.cols(), relu);
  return true;
}

// Rows per block of a 16-bit product run in float32: the float copy of a block of an operand
// stays within kFloatBlockBytes, so the conversion costs no more memory than that however
// large the operands (a 65536 x 1000 bfloat16 input is 250 MiB as one float copy).
constexpr int64_t kFloatBlockBytes = 4 << 20;
int64_t float_block_rows(int64_t cols) {
  return std::max<int64_t>(1, kFloatBlockBytes / (4 * std::max<int64_t>(1, cols)));
}

// out (16-bit) = product(a) in float32, block of a's rows by block of rows (each row of out
// depends on its own row of a only), each block rounded once into out. product(block, a_rows)
// writes the float32 block of out for those rows of a, converted to float32; width: the
// widest operand row, which sets the block's height.
template <typename Product>
void in_float32_by_rows(at::Tensor& out, const at::Tensor& a, int64_t width, Product product) {
  const int64_t m = a.size(0), step = float_block_rows(width);
  at::Tensor block = at::empty({std::min(step, m), out.size(1)}, out.options().dtype(at::kFloat));
  for (int64_t r0 = 0; r0 < m; r0 += step) {
    const int64_t nr = std::min(step, m - r0);
    at::Tensor rows = block.narrow(0, 0, nr);
    product(rows, as_float(a.narrow(0, r0, nr)));
    at::Tensor out_rows = out.narrow(0, r0, nr);
    convert_into(out_rows, rows);
  }
}

// x @ w.T + bias on oneDNN's linear primitive (mkldnn::_linear_pointwise, what inductor's CPU
// freezing path runs), which adds the bias in the product where ATen's addmm adds it in a
// slower epilogue (docs/BENCHMARKS.md, "Intel Xeon"). For 16-bit operands on a CPU with native
// 16-bit products, contiguous and not empty, unless TWOLAYER_EXT_CPU_GEMM=aten; nullopt
// elsewhere, and in a torch built without oneDNN.
std::optional<at::Tensor> onednn_linear(const at::Tensor& x, const at::Tensor& w,
                                        const OptTensor& bias) {
  using Fn = at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&,
                        c10::string_view, c10::List<std::optional<at::Scalar>>,
                        std::optional<c10::string_view>);
  static const auto op = []() -> std::optional<c10::TypedOperatorHandle<Fn>> {
    const auto handle = c10::Dispatcher::singleton().findSchema({"mkldnn::_linear_pointwise", ""});
    if (!handle || !handle->hasKernelForDispatchKey(c10::DispatchKey::CPU)) return std::nullopt;
    try {
      return handle->typed<Fn>();
    } catch (const c10::Error&) {  // another torch with another signature: ATen's addmm
      return std::nullopt;
    }
  }();
  // Whether oneDNN failed to build its linear primitive for bfloat16 [0] or float16 [1] in this
  // process: it has none for them where ONEDNN_MAX_CPU_ISA keeps it from the CPU's 16-bit
  // instructions (=AVX2 on an AVX-512 bfloat16 CPU: "could not create a primitive
  // descriptor"), and that variable is read once per process. ATen's addmm from then on.
  static std::atomic<bool> failed[2] = {false, false};
  const bool applies = op && at::isReducedFloatingType(x.scalar_type()) && !in_float32(x) &&
                       x.is_contiguous() && w.is_contiguous() && x.numel() > 0 && w.numel() > 0;
  if (!applies) return std::nullopt;
  std::atomic<bool>& dtype_failed = failed[x.scalar_type() == at::kHalf ? 1 : 0];
  if (dtype_failed.load(std::memory_order_relaxed)) return std::nullopt;
  const OptTensor b = present(bias) ? OptTensor(bias->contiguous()) : std::nullopt;
  try {
    // No "relu" post-op: oneDNN's maps NaN to 0 where torch.relu keeps it.
    return op->call(x, w, b, "none", c10::List<std::optional<at::Scalar>>(), std::nullopt);
  } catch (const std::exception&) {  // oneDNN's error, as a c10::Error or as its own
    dtype_failed.store(true, std::memory_order_relaxed);
    return std::nullopt;
  }
}

}  // namespace

void linear_out(at::Tensor& out, const at::Tensor& x, const at::Tensor& w, const OptTensor& bias,
                bool relu) {
  if (in_float32(out)) {
    const at::Tensor wf = as_float(w);
    const OptTensor bf = as_float(bias);
    // relu on the float32 sums, before their rounding: the same bits as after it (rounding
    // keeps the sign and NaN, and nothing above 0 rounds below it).
    in_float32_by_rows(out, x, std::max(x.size(1), w.size(0)),
                       [&](at::Tensor& rows, const at::Tensor& xf) {
                         linear_out(rows, xf, wf, bf, relu);
                       });
    return;
  }
  const int64_t m = x.size(0), n = w.size(0), k = w.size(1);
  const bool has_bias = present(bias);
  if (fast_nt(x, w) && out.is_contiguous()) {
    const at::Tensor b = has_bias ? bias->contiguous() : at::Tensor();
    gemm_nt_f32(x.data_ptr<float>(), x.stride(0), w.data_ptr<float>(), w.stride(0),
                has_bias ? b.data_ptr<float>() : nullptr, out.data_ptr<float>(), n, m, n, k, relu);
    return;
  }
  if (has_bias) {
    at::addmm_out(out, *bias, x, w.t());  // bias folded into the GEMM (beta = 1)
  } else {
    at::mm_out(out, x, w.t());
  }
  if (relu) relu_rows_(out);
}

void mm_nn_out(at::Tensor& out, const at::Tensor& a, const at::Tensor& b, const OptTensor& bias,
               bool relu) {
  if (in_float32(out)) {
    const at::Tensor bf = as_float(b);
    const OptTensor biasf = as_float(bias);
    in_float32_by_rows(out, a, std::max(a.size(1), b.size(1)),
                       [&](at::Tensor& rows, const at::Tensor& af) {
                         mm_nn_out(rows, af, bf, biasf, relu);  // as in linear_out
                       });
    return;
  }
  if (bcast_into(out, BcastA{a, false}, b, bias, relu)) return;
  if (present(bias)) {
    at::addmm_out(out, *bias, a, b);
  } else {
    at::mm_out(out, a, b);
  }
  if (relu) relu_rows_(out);
}

// The BLAS path is ATen's functional addmm/mm, which allocates its own output: a
// microsecond less per call than addmm_out into ours (bfloat16 64x1000->100, profiled).
at::Tensor linear(const at::Tensor& x, const at::Tensor& w, const OptTensor& bias, bool relu) {
  at::Tensor y;
  if (auto onednn = onednn_linear(x, w, bias)) {
    y = *std::move(onednn);
  } else if (!in_float32(x) && !fast_nt(x, w)) {
    y = present(bias) ? at::addmm(*bias, x, w.t()) : at::mm(x, w.t());
  } else {
    y = at::empty({x.size(0), w.size(0)}, x.options());
    linear_out(y, x, w, bias, relu);
    return y;
  }
  if (relu) relu_rows_(y);
  return y;
}

at::Tensor mm_nn(const at::Tensor& a, const at::Tensor& b) {
  at::Tensor c = at::empty({a.size(0), b.size(1)}, b.options());
  mm_nn_out(c, a, b);
  return c;
}

at::Tensor mm_tn(const at::Tensor& a, const at::Tensor& b) {
  const int64_t t = a.size(0), step = float_block_rows(std::max(a.size(1), b.size(1)));
  if (!in_float32(a) || t <= step) {
    at::Tensor c = at::empty({a.size(1), b.size(1)}, b.options());
    if (!bcast_into(c, BcastA{a, true}, b, std::nullopt, false)) mm_nn_out(c, a.t(), b);
    return c;
  }
  // The reduction runs over a's rows: float32 sums over blocks of them, rounded once.
  at::Tensor sum = at::zeros({a.size(1), b.size(1)}, b.options().dtype(at::kFloat));
  for (int64_t r0 = 0; r0 < t; r0 += step) {
    const int64_t nr = std::min(step, t - r0);
    sum.addmm_(as_float(a.narrow(0, r0, nr)).t(), as_float(b.narrow(0, r0, nr)));
  }
  return sum.to(a.scalar_type());
}

at::Tensor weight_grad(const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight) {
  return column_major(weight) ? mm_tn(x, grad).t() : mm_tn(grad, x);
}

std::optional<std::tuple<at::Tensor, at::Tensor, at::Tensor>> small_linear_grads(
    const at::Tensor& grad, const at::Tensor& x, const at::Tensor& weight) {
  const bool layouts = is_float(grad) && is_float(x) && is_float(weight) &&
                       rows_contiguous(grad) && rows_contiguous(x) && rows_contiguous(weight) &&
                       !column_major(weight);
  const int64_t m = grad.size(0), n = weight.size(0), k = weight.size(1);
  if (!layouts || !use_linear_grads(m, n, k)) return std::nullopt;
  at::Tensor gx = at::empty({m, k}, x.options());
  at::Tensor gw = at::empty({n, k}, weight.options());
  at::Tensor gb = at::empty({n}, weight.options());
  linear_grads_f32(grad.data_ptr<float>(), grad.stride(0), x.data_ptr<float>(), x.stride(0),
                   weight.data_ptr<float>(), weight.stride(0), gx.data_ptr<float>(), k,
                   gw.data_ptr<float>(), k, gb.data_ptr<float>(), m, n, k);
  return std::make_tuple(gx, gw, gb);
}

bool add_weight_grad_(const at::Tensor& weight, const at::Tensor& grad, const at::Tensor& x,
                      double alpha) {
  // weight_grad's product for a row-major weight, mm_tn(grad, x) = gradᵀ @ x, where mm_tn
  // would run it on the bcast kernel; weight updated as its own tensor (contiguous, sharing no
  // memory with the operands it is computed from).
  const BcastA A{grad, true};
  const bool applies = is_float(weight) && is_float(x) && weight.is_contiguous() &&
                       !column_major(weight) && fast_bcast(weight, A, x) &&
                       at::get_overlap_status(weight, x) == at::MemOverlapStatus::No &&
                       at::get_overlap_status(weight, grad) == at::MemOverlapStatus::No;
  if (!applies) return false;
  gemm_bcast_add_f32(grad.data_ptr<float>(), A.col_stride(), A.row_stride(), x.data_ptr<float>(),
                     x.stride(0), weight.data_ptr<float>(), weight.stride(0), A.rows(), x.size(1),
                     A.cols(), static_cast<float>(alpha));
  return true;
}

}  // namespace twolayer_ext::cpu
