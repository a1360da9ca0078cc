// fused_mlp.h: the launches of the fully fused two-layer kernels (fused_mlp_simt.cuh on CUDA
// cores, fused_mlp_tc.cuh on tensor cores) and the reduction of the backward's partial
// weight gradients, and the rule that picks a variant. Unmeasured on a GPU so far, hence
// opt-in (cuda_fused_mlp; docs/gpu-verification.md).
#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <mutex>
#include <set>
#include <type_traits>
#include <utility>

#include "dtypes.cuh"
#include "fused_mlp.h"
#include "fused_mlp_common.cuh"
#include "fused_mlp_simt.cuh"
#include "fused_mlp_tc.cuh"
#include "launch_utils.cuh"
#include "twolayer_ext/switches.h"

namespace twolayer_ext::cuda {
namespace {

using cuda_mlp::Variant;
using fused_mlp::kThreads;
using fused_mlp::MlpParams;
using fused_mlp::Strided;

using fused_mlp::ceil_div;
using fused_mlp::kMaxBlocks;
using fused_mlp::Segments;

template <typename T>
T* mutable_ptr(const at::Tensor& t) {
  return t.defined() ? static_cast<T*>(t.data_ptr()) : nullptr;
}

template <typename T>
Strided<T> strided(const at::Tensor& t) {
  return {static_cast<const T*>(t.data_ptr()), t.stride(0), t.stride(1)};
}

template <typename T>
MlpParams<T> network_params(const at::Tensor& x, const at::Tensor& w1, const OptTensor& b1,
                            const at::Tensor& w2, const OptTensor& b2) {
  MlpParams<T> p{};
  p.x = strided<T>(x);
  p.w1 = strided<T>(w1);
  p.w2 = strided<T>(w2);
  p.b1 = present(b1) ? static_cast<const T*>(b1->data_ptr()) : nullptr;
  p.b1_stride = present(b1) ? b1->stride(0) : 0;
  p.b2 = present(b2) ? static_cast<const T*>(b2->data_ptr()) : nullptr;
  p.b2_stride = present(b2) ? b2->stride(0) : 0;
  p.rows = x.size(0);
  p.in = static_cast<int>(w1.size(1));
  p.hidden = static_cast<int>(w1.size(0));
  p.out = static_cast<int>(w2.size(0));
  return p;
}

// Above 48 KiB a kernel must opt in to its dynamic shared memory. Set once per kernel and
// device, to the most any launch may ask (the rule admits layouts up to kMaxSharedBytes):
// setting each launch's own size would let another host thread lower the limit between
// this thread's set and its launch.
void allow_max_shared_memory(const void* kernel) {
  static std::mutex mutex;
  static std::set<std::pair<const void*, int>> done;
  int device = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  const std::lock_guard<std::mutex> lock(mutex);
  if (done.count({kernel, device}) != 0) return;
  C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                      static_cast<int>(cuda_mlp::kMaxSharedBytes)));
  done.insert({kernel, device});
}

template <typename T>
void launch(void (*kernel)(MlpParams<T>), int64_t grid, int64_t smem_bytes, const MlpParams<T>& p) {
  TORCH_INTERNAL_ASSERT(smem_bytes <= cuda_mlp::kMaxSharedBytes);
  allow_max_shared_memory(reinterpret_cast<const void*>(kernel));
  kernel<<<static_cast<unsigned>(grid), kThreads, static_cast<size_t>(smem_bytes),
           c10::cuda::getCurrentCUDAStream()>>>(p);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename T>
struct Type {
  using type = T;
};

// Runs fn(Type<T>{}, std::bool_constant<tensor cores>{}) for the dtype (T its device type)
// and the variant, instantiating only what cuda_fused_mlp can pick: tensor cores for
// float16/bfloat16, SIMT for float64, either for float32 (TF32 or full precision).
template <typename Fn>
void dispatch(at::ScalarType dtype, Variant variant, Fn&& fn) {
  TORCH_INTERNAL_ASSERT(variant != Variant::kNone);
  const auto tensor_cores = [&](auto type) {
    check_tensor_core_arch("fused MLP");
    fn(type, std::true_type{});
  };
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "fused_mlp", [&] {
    using T = typename DeviceType<scalar_t>::type;
    if constexpr (std::is_same_v<T, double>) {
      TORCH_INTERNAL_ASSERT(variant == Variant::kSimt);
      fn(Type<T>{}, std::false_type{});
    } else if constexpr (std::is_same_v<T, float>) {
      if (variant == Variant::kSimt) {
        fn(Type<T>{}, std::false_type{});
      } else {
        tensor_cores(Type<T>{});
      }
    } else {
      TORCH_INTERNAL_ASSERT(variant == Variant::kTensorCores);
      tensor_cores(Type<T>{});
    }
  });
}

at::ScalarType acc_type(at::ScalarType dtype) {
  return dtype == at::kDouble ? at::kDouble : at::kFloat;
}

// The dynamic shared memory of a pass, as the kernels lay it out.
template <typename T, bool kTensorCores>
int64_t smem_bytes(const MlpParams<T>& p, MlpPass pass) {
  if constexpr (kTensorCores) {
    return cuda_mlp::tc_layout(p.in, p.hidden, p.out, pass, sizeof(T)).total;
  } else {
    return cuda_mlp::layout(p.in, p.hidden, p.out, pass).total *
           static_cast<int64_t>(sizeof(typename Numeric<T>::acc));
  }
}

}  // namespace

void fused_mlp_forward(Variant variant, at::Tensor& out, const at::Tensor& x, const at::Tensor& w1,
                       const OptTensor& b1, const at::Tensor& w2, const OptTensor& b2,
                       at::Tensor* hidden) {
  const int64_t grid = std::min(ceil_div(x.size(0), fused_mlp::kBlockRows), kMaxBlocks);
  dispatch(x.scalar_type(), variant, [&](auto type, auto tensor_cores) {
    using T = typename decltype(type)::type;
    constexpr bool kTensorCores = decltype(tensor_cores)::value;
    MlpParams<T> p = network_params<T>(x, w1, b1, w2, b2);
    p.y = mutable_ptr<T>(out);
    p.hidden_store = hidden != nullptr ? mutable_ptr<T>(*hidden) : nullptr;
    const int64_t bytes = smem_bytes<T, kTensorCores>(p, MlpPass::kForward);
    if constexpr (kTensorCores) {
      launch(fused_mlp::tc::fused_mlp_forward_kernel<T>, grid, bytes, p);
    } else {
      launch(fused_mlp::simt::fused_mlp_forward_kernel<T>, grid, bytes, p);
    }
  });
}

std::tuple<OptTensor, OptTensor, OptTensor, OptTensor, OptTensor> fused_mlp_backward(
    Variant variant, const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& w1,
    const OptTensor& b1, const at::Tensor& w2, const at::Tensor* hidden,
    std::array<bool, 5> output_mask) {
  const auto [need_gx, need_gw1, need_gb1, need_gw2, need_gb2] = output_mask;
  const int64_t rows = x.size(0), in = w1.size(1), hidden_f = w1.size(0), out_f = w2.size(0);
  const cuda_mlp::Partials sums = cuda_mlp::partials(in, hidden_f, out_f);
  const int64_t partials_n = sums.begin[4];
  const std::pair<int64_t, int64_t> chunking = fused_mlp::chunking(rows);
  const int64_t chunks = chunking.first, per_chunk = chunking.second;
  const auto maybe = [&](bool needed, at::IntArrayRef shape) {
    return needed ? at::empty(shape, x.options()) : at::Tensor();
  };
  const at::Tensor gx = maybe(need_gx, {rows, in}), gw1 = maybe(need_gw1, {hidden_f, in}),
                   gb1 = maybe(need_gb1, {hidden_f}), gw2 = maybe(need_gw2, {out_f, hidden_f}),
                   gb2 = maybe(need_gb2, {out_f});
  const bool weights = need_gw1 || need_gb1 || need_gw2 || need_gb2;
  const at::Tensor partials =
      at::empty({chunks, partials_n}, x.options().dtype(acc_type(x.scalar_type())));
  dispatch(x.scalar_type(), variant, [&](auto type, auto tensor_cores) {
    using T = typename decltype(type)::type;
    constexpr bool kTensorCores = decltype(tensor_cores)::value;
    using Acc = typename Numeric<T>::acc;
    MlpParams<T> p =
        network_params<T>(x, w1, hidden == nullptr ? b1 : std::nullopt, w2, std::nullopt);
    p.grad_out = strided<T>(grad_out);
    p.hidden_saved = hidden != nullptr ? strided<T>(*hidden) : Strided<T>{nullptr, 0, 0};
    p.grad_x = mutable_ptr<T>(gx);
    p.partials = static_cast<Acc*>(partials.data_ptr());
    p.blocks_per_chunk = per_chunk;
    p.need_gw1 = need_gw1, p.need_gb1 = need_gb1, p.need_gw2 = need_gw2, p.need_gb2 = need_gb2;
    const int64_t bytes = smem_bytes<T, kTensorCores>(p, MlpPass::kBackward);
    if constexpr (kTensorCores) {
      launch(fused_mlp::tc::fused_mlp_backward_kernel<T>, chunks, bytes, p);
    } else {
      launch(fused_mlp::simt::fused_mlp_backward_kernel<T>, chunks, bytes, p);
    }
    if (!weights) return;
    const Segments<T> seg{
        sums, {mutable_ptr<T>(gw1), mutable_ptr<T>(gb1), mutable_ptr<T>(gw2), mutable_ptr<T>(gb2)}};
    const int64_t reduce_grid = std::min(ceil_div(partials_n, kThreads), kMaxBlocks);
    reduce_partials_kernel<T>
        <<<static_cast<unsigned>(reduce_grid), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
            p.partials, chunks, seg);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  const auto opt = [](const at::Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; };
  return {opt(gx), opt(gw1), opt(gb1), opt(gw2), opt(gb2)};
}

cuda_mlp::Variant cuda_fused_mlp(int64_t rows, int64_t in, int64_t hidden, int64_t out,
                                 at::ScalarType dtype, MlpPass pass) {
  using cuda_mlp::Variant;
  if (!cuda_fused_mlp_on()) return Variant::kNone;
  if (rows == 0 || in == 0 || hidden == 0 || out == 0) return Variant::kNone;  // nothing to fuse
  const bool half = dtype == at::kHalf || dtype == at::kBFloat16;
  const int64_t max = cuda_mlp::kMaxSharedBytes;
  if (half || (dtype == at::kFloat && cuda_matmul_tf32())) {
    if (cuda_mlp::tc_layout(in, hidden, out, pass, c10::elementSize(dtype)).total <= max) {
      return Variant::kTensorCores;
    }
    if (half) return Variant::kNone;
  }
  const int64_t acc_bytes = dtype == at::kDouble ? 8 : 4;
  const bool fits = cuda_mlp::layout(in, hidden, out, pass).total * acc_bytes <= max;
  return fits ? Variant::kSimt : Variant::kNone;
}


bool recompute_hidden_rule(int64_t rows, int64_t in_features, int64_t hidden_features,
                           int64_t out_features, at::ScalarType dtype) {
  const auto variant = [&](MlpPass pass) {
    return cuda_fused_mlp(rows, in_features, hidden_features, out_features, dtype, pass);
  };
  const Variant forward = variant(MlpPass::kForward);
  return forward != Variant::kNone && forward == variant(MlpPass::kBackward);
}

}  // namespace twolayer_ext::cuda
