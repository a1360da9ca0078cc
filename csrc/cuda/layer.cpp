// layer.h: one layer's products on cuBLAS (through ATen) and the passes around them.
#include <ATen/ops/addmm.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/mm.h>

#include "layer.h"

namespace twolayer_ext::cuda {

void linear_forward(at::Tensor& out, const at::Tensor& x, const at::Tensor& w,
                    const OptTensor& bias, bool relu, const at::Tensor& mask) {
  // The bias rides in cuBLAS(Lt)'s epilogue where ATen can use it; ReLU and the
  // mask then take one pass over the output. cuBLASLt's own ReLU epilogue is not
  // used: it maps NaN to 0, where torch.relu keeps NaN.
  if (present(bias)) {
    at::addmm_out(out, *bias, x, w.t());
  } else {
    at::mm_out(out, x, w.t());
  }
  if (relu) relu_mask_(out, mask);
}

std::tuple<OptTensor, OptTensor, OptTensor> linear_backward(const at::Tensor& g,
                                                            const ReluKeep& keep, bool g_owned,
                                                            const at::Tensor& x,
                                                            const at::Tensor& w,
                                                            std::array<bool, 3> need) {
  const auto [need_x, need_w, need_b] = need;
  const int64_t rows = g.size(0), n = g.size(1);
  const at::Tensor grad_bias = need_b ? at::empty({n}, g.options()) : at::Tensor();
  OptTensor grad_x, grad_w;
  at::Tensor gm = g;  // the gradient both products read
  if (keep.relu()) {
    const bool products = need_x || need_w;
    gm = !products                      ? at::Tensor()
         : g_owned && g.is_contiguous() ? g
                                        : at::empty({rows, n}, g.options());
    mask_grad_and_reduce_bias(g, keep, gm, grad_bias);
  } else if (need_b) {
    mask_grad_and_reduce_bias(g, keep, at::Tensor(), grad_bias);
  }
  if (need_x) grad_x = at::mm(gm, w);      // [rows, n] @ [n, k]
  // [n, rows] @ [rows, k], in w's layout (column_major, tensor_util.h)
  if (need_w) grad_w = column_major(w) ? at::mm(x.t(), gm).t() : at::mm(gm.t(), x);
  return {grad_x, grad_w, need_b ? OptTensor(grad_bias) : std::nullopt};
}

}  // namespace twolayer_ext::cuda
