// Shared by the ops' vmap kernels (csrc/vmap/*.cpp).
//
// Each differentiable op and backward op has two batching kernels:
// - FuncTorchBatched (torch.func.vmap, and so per-sample gradients, jacrev, jacfwd, hessian,
//   ensembling): where only the input is batched and the weights are shared, the vmapped
//   dimension is one more leading dimension of x, so the op runs once, on the extension's
//   kernel, over every sample's rows. Otherwise (batched weights, per-sample weight
//   gradients) the op's decomposition (csrc/composite/decompositions.h) runs on the batched
//   tensors as given, and ATen's batching rules batch it.
// - Batched (the legacy vmap of torch.autograd.gradcheck's batched checks and of
//   torch.autograd.functional's vectorize=True): the decomposition.
// The plumbing follows ATen's generated batching kernels (ATen/functorch/PlumbingHelper.h,
// which an extension cannot include: it needs a JSON library that torch's wheel does not
// ship): tensors unwrapped at the vmap level being processed, the op called with
// FuncTorchBatched excluded, its results wrapped again. That level is the highest level of
// the arguments' batched tensors: a vmap level above it batches none of them, so it can
// leave them to the level below (ATen's kernels send such calls down unchanged).
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/functorch/BatchedTensorImpl.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <algorithm>
#include <array>

#include "twolayer_ext/op_handle.h"

namespace twolayer_ext::vmap {

// The vmap level of a tensor's outermost batching (0: not batched by torch.func.vmap).
inline int64_t level_of(const at::Tensor& t) {
  const auto* impl = t.defined() ? at::functorch::maybeGetBatchedImpl(t) : nullptr;
  return impl == nullptr ? 0 : impl->level();
}
inline int64_t level_of(const OptTensor& t) { return t.has_value() ? level_of(*t) : 0; }
template <size_t N>
int64_t level_of(const std::array<bool, N>& /*output_mask*/) {
  return 0;
}

// The level this call's kernel batches: the highest among its arguments.
template <typename... Args>
int64_t vmap_level(const Args&... args) {
  return std::max({level_of(args)...});
}

template <typename T>
bool batched(const T& t, int64_t level) {
  return level_of(t) == level;
}

// t's tensor below `level`, with the vmapped dimension first (t must be batched at level).
inline at::Tensor batch_first(const at::Tensor& t, int64_t level) {
  const auto* impl = at::functorch::maybeGetBatchedImpl(t);
  TORCH_INTERNAL_ASSERT(impl != nullptr && impl->level() == level);
  return impl->value().movedim(impl->bdim(), 0);
}

// A result of the op run below `level` on batch-first tensors, batched again.
inline at::Tensor rebatch(const at::Tensor& t, int64_t level) {
  return at::functorch::makeBatched(t, 0, level);
}

// Runs the op below this vmap level, on unwrapped tensors.
template <typename F>
auto below_vmap(F&& call) {
  c10::impl::ExcludeDispatchKeyGuard guard(c10::DispatchKey::FuncTorchBatched);
  return call();
}

// The packed mask of a batch-first x [batch, ..., in]: the kernel returns it for all
// batch * rows rows at once; each sample's mask is its own [rows, bytes].
inline at::Tensor mask_per_sample(const at::Tensor& mask, const at::Tensor& x_batch_first) {
  c10::SymInt rows = 1;
  for (int64_t d = 1; d + 1 < x_batch_first.dim(); ++d) rows *= x_batch_first.sym_size(d);
  return mask.view_symint({x_batch_first.sym_size(0), rows, mask.sym_size(1)});
}

}  // namespace twolayer_ext::vmap
