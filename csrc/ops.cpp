// The one place where the twolayer_ext operator schemas are declared.
//
// Kernels are registered per dispatch key next to their implementation
// (csrc/cpu/*.cpp for CPU, csrc/cuda/*.cu for CUDA); fake kernels and autograd
// formulas are registered from Python (twolayer_ext/ops.py).
#include <Python.h>
#include <torch/library.h>

// Importing twolayer_ext._C loads this shared library, which runs the static
// TORCH_LIBRARY initialisers below. The module itself has no Python API; this
// keeps the build free of pybind11/torch/extension.h (slow to compile).
extern "C" {
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
}

TORCH_LIBRARY(twolayer_ext, m) {
  // y = relu(x @ weight.T + bias), plus the ReLU mask that backward needs,
  // packed eight output columns to a byte: [prod(x.shape[:-1]), ceil(out/8)] uint8.
  m.def("linear_relu(Tensor x, Tensor weight, Tensor? bias) -> (Tensor, Tensor)");
  // Gradients of linear_relu w.r.t. (x, weight, bias); only those with
  // output_mask[i] set are computed, the others are returned as None.
  m.def(
      "linear_relu_backward(Tensor grad_y, Tensor x, Tensor weight, Tensor mask, "
      "bool[3] output_mask) -> (Tensor?, Tensor?, Tensor?)");
  // y = relu(x): the tutorial's MyReLU as a C++ op.
  m.def("relu(Tensor x) -> Tensor");
  // grad_x = grad_y where y > 0 (or y is NaN), else 0: torch's threshold_backward.
  m.def("relu_backward(Tensor grad_y, Tensor y) -> Tensor");
}
