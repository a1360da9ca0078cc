// backward_recomputes_hidden (paths.h): asked by the autograd kernel and the training step,
// on any device, before the device's kernels run; each device's rule answers.
#include <c10/core/TensorImpl.h>

#include "twolayer_ext/paths.h"
#include "twolayer_ext/tensor_util.h"

namespace twolayer_ext {

bool backward_recomputes_hidden(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2) {
  // The rules read sizes; under tracing with symbolic shapes (torch.export, dynamic
  // torch.compile) that would specialise them, so traced graphs keep hidden.
  const auto symbolic = [](const at::Tensor& t) {
    return t.unsafeGetTensorImpl()->has_symbolic_sizes_strides();
  };
  if (symbolic(x) || symbolic(w1) || symbolic(w2)) return false;
  if (x.dim() < 1 || w1.dim() != 2 || w2.dim() != 2) return false;  // the op's checks say why
  const int64_t rows = leading_rows(x), in = w1.size(1), hidden = w1.size(0), out = w2.size(0);
  const at::ScalarType dtype = x.scalar_type();
  if (x.device().is_cpu()) return cpu::recompute_hidden_rule(rows, in, hidden, out, dtype);
#if TWOLAYER_EXT_WITH_CUDA
  if (x.is_cuda()) return cuda::recompute_hidden_rule(rows, in, hidden, out, dtype);
#endif
  return false;
}

}  // namespace twolayer_ext
