// The one place where the twolayer_ext operator schemas are declared.
//
// Kernels are registered per dispatch key next to their implementation:
// csrc/cpu/*.cpp (CPU), csrc/cuda/*.cu (CUDA), csrc/autograd/*.cpp (Autograd: the
// forward ops' gradients), csrc/composite/ (the training step, any device). From
// Python (twolayer_ext/ops.py): the fake kernels, the autocast kernels and the
// backward ops' own derivatives (double backward).
#include <Python.h>
#include <torch/library.h>

#include "cpu/isa/passes.h"

// Importing twolayer_ext._C loads this shared library, which runs the static
// TORCH_LIBRARY initialisers below. The module's one Python function reports which
// instruction set the CPU element-wise passes run (twolayer_ext.build_info()); plain
// CPython, which keeps the build free of pybind11/torch/extension.h (slow to compile).
namespace {
PyObject* cpu_passes_isa(PyObject*, PyObject*) {
  return PyUnicode_FromString(twolayer_ext::cpu::passes::instruction_set());
}
PyMethodDef methods[] = {
    {"cpu_passes_isa", cpu_passes_isa, METH_NOARGS,
     "The instruction set of the CPU element-wise passes: avx512, avx2 or default."},
    {nullptr, nullptr, 0, nullptr}};
}  // namespace

extern "C" {
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, methods};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(twolayer_ext, m) {
  // y = relu(x @ weight.T + bias), plus the ReLU mask that backward needs,
  // packed eight output columns to a byte: [prod(x.shape[:-1]), ceil(out/8)] uint8.
  m.def("linear_relu(Tensor x, Tensor weight, Tensor? bias) -> (Tensor, Tensor)");
  // linear_relu's output alone, what a module call needs. Differentiable (through
  // linear_relu/linear_relu_backward); when no gradient is recorded, no mask is built.
  m.def("linear_relu_output(Tensor x, Tensor weight, Tensor? bias) -> Tensor");
  // Gradients of linear_relu w.r.t. (x, weight, bias); only those with
  // output_mask[i] set are computed, the others are returned as None.
  m.def(
      "linear_relu_backward(Tensor grad_y, Tensor x, Tensor weight, Tensor mask, "
      "bool[3] output_mask) -> (Tensor?, Tensor?, Tensor?)");
  // The tutorial's whole network, out = relu(x @ w1.T + b1) @ w2.T + b2, as one op;
  // also returns the hidden activation relu(x @ w1.T + b1), which backward needs.
  m.def(
      "two_layer_forward(Tensor x, Tensor w1, Tensor? b1, Tensor w2, Tensor? b2) "
      "-> (Tensor, Tensor)");
  // The network's output alone, relu(x @ w1.T + b1) @ w2.T + b2: what a module call
  // needs. Differentiable (through two_layer_forward/two_layer_backward); when no
  // gradient is recorded, a kernel need not produce the hidden activation at all.
  m.def("two_layer(Tensor x, Tensor w1, Tensor? b1, Tensor w2, Tensor? b2) -> Tensor");
  // All gradients of both layers (x, w1, b1, w2, b2), only those with output_mask set.
  // The ReLU mask is re-derived from `hidden`, so backward keeps no more than torch does.
  m.def(
      "two_layer_backward(Tensor grad_out, Tensor x, Tensor w1, Tensor w2, Tensor hidden, "
      "bool[5] output_mask) -> (Tensor?, Tensor?, Tensor?, Tensor?, Tensor?)");
  // two_layer_backward with no hidden activation saved: the kernel recomputes it from x, w1
  // and b1 (on the CPU's fused path block by block, where keeping it costs more).
  m.def(
      "two_layer_backward_recompute(Tensor grad_out, Tensor x, Tensor w1, Tensor? b1, Tensor w2, "
      "bool[5] output_mask) -> (Tensor?, Tensor?, Tensor?, Tensor?, Tensor?)");
  // One SGD training step of the network above, in place: out = two_layer_forward(x, ...),
  // loss = mse_loss(out, y, reduction), then every parameter p -= lr * d loss / d p.
  // Returns the loss (computed before the update). Not differentiable; no .grad is written.
  m.def(
      "two_layer_sgd_step(Tensor x, Tensor y, Tensor(a!) w1, Tensor(b!)? b1, Tensor(c!) w2, "
      "Tensor(d!)? b2, float lr, str reduction=\"sum\") -> Tensor");
  // y = relu(x): the tutorial's MyReLU as a C++ op.
  m.def("relu(Tensor x) -> Tensor");
  // grad_x = grad_y where y > 0 (or y is NaN), else 0: torch's threshold_backward.
  m.def("relu_backward(Tensor grad_y, Tensor y) -> Tensor");
}
