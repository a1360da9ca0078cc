// twolayer_ext::recompute_hidden (fused_mlp.h): asked by the autograd kernel and the training
// step, on any device, before the device's kernels run.
#include "twolayer_ext/fused_mlp.h"

#include <ATen/Context.h>

#include "twolayer_ext/cpu_ops.h"
#include "twolayer_ext/tensor_util.h"

namespace twolayer_ext {

bool recompute_hidden(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2) {
  // The rules read sizes; under tracing with symbolic shapes (torch.export, dynamic
  // torch.compile) that would specialise them, so traced graphs keep hidden.
  const auto symbolic = [](const at::Tensor& t) {
    return t.unsafeGetTensorImpl()->has_symbolic_sizes_strides();
  };
  if (symbolic(x) || symbolic(w1) || symbolic(w2)) return false;
  if (x.dim() < 1 || w1.dim() != 2 || w2.dim() != 2) return false;  // the op's checks say why
  const int64_t rows = leading_rows(x), in = w1.size(1), hidden = w1.size(0), out = w2.size(0);
  if (x.device().is_cpu()) return cpu::recompute_hidden(rows, in, hidden, out, x.scalar_type());
  if (x.is_cuda()) {  // both passes on the same kernels: the recomputed bits are the forward's
    const bool tf32 = at::globalContext().allowTF32CuBLAS();
    const auto variant = [&](MlpPass pass) {
      return cuda_fused_mlp(rows, in, hidden, out, x.scalar_type(), pass, tf32);
    };
    const cuda_mlp::Variant forward = variant(MlpPass::kForward);
    return forward != cuda_mlp::Variant::kNone && forward == variant(MlpPass::kBackward);
  }
  return false;
}

}  // namespace twolayer_ext
