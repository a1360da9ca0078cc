// vmap kernels of twolayer_ext::relu and relu_backward (common.h). relu is element-wise, so
// a batched x is just a larger x for the kernel, whatever dimension is vmapped.
#include <torch/library.h>

#include "../composite/decompositions.h"
#include "common.h"

namespace twolayer_ext::vmap {
namespace {

at::Tensor relu_batched(const at::Tensor& x) {
  const auto* impl = at::functorch::maybeGetBatchedImpl(x);
  TORCH_INTERNAL_ASSERT(impl != nullptr);
  const at::Tensor y = below_vmap([&] { return op::relu().call(impl->value()); });
  return at::functorch::makeBatched(y, impl->bdim(), impl->level());
}

}  // namespace

TORCH_LIBRARY_IMPL(twolayer_ext, FuncTorchBatched, m) {
  m.impl("relu", &relu_batched);
  m.impl("relu_backward", &decomposition::relu_backward);
}

TORCH_LIBRARY_IMPL(twolayer_ext, Batched, m) {
  m.impl("relu", &decomposition::relu);
  m.impl("relu_backward", &decomposition::relu_backward);
}

}  // namespace twolayer_ext::vmap
