// The one place where the twolayer_ext operator schemas are declared.
//
// Kernels are registered per dispatch key next to their implementation:
// csrc/cpu/*.cpp (CPU), csrc/cuda/*.cu (CUDA), csrc/autograd/*.cpp (Autograd: the
// forward ops' gradients), csrc/composite/ (the training step, any device). From
// Python (twolayer_ext/ops.py): the fake kernels, the autocast kernels and the
// backward ops' own derivatives (double backward).
#include <Python.h>
#include <ATen/cpu/Utils.h>
#include <torch/library.h>

#include "cpu/isa/passes.h"
#include "cpu/two_layer_amx.h"
#include "twolayer_ext/cpu_gemm.h"
#include "twolayer_ext/cpu_ops.h"
#include "twolayer_ext/switches.h"

// Importing twolayer_ext._C loads this shared library, which runs the static
// TORCH_LIBRARY initialisers below. The module's Python functions report what the CPU
// has and which paths the CPU ops take on it (twolayer_ext.build_info(), the bench's
// header); plain CPython, which keeps the build free of pybind11/torch/extension.h (slow
// to compile).
namespace {

// Adds key: value to dict, taking the reference to value.
void set_item(PyObject* dict, const char* key, PyObject* value) {
  PyDict_SetItemString(dict, key, value);
  Py_DECREF(value);
}

// Runs body; a switch with a value it does not accept (c10::ValueError, as the ops raise it)
// becomes Python's ValueError instead of a C++ exception through the interpreter.
template <typename Body>
PyObject* reporting_errors(Body body) {
  try {
    return body();
  } catch (const c10::ValueError& e) {
    PyErr_SetString(PyExc_ValueError, e.what_without_backtrace());
    return nullptr;
  }
}

PyObject* cpu_paths(PyObject*, PyObject*) {
  return reporting_errors([] {
    using twolayer_ext::cpu::native_16bit_products;
    const bool aten = twolayer_ext::cpu_gemm_aten_forced();  // may raise: before any object
    const auto products = [aten](at::ScalarType dtype) {
      return PyUnicode_FromString(native_16bit_products(dtype) || aten ? "native" : "float32");
    };
    PyObject* paths = PyDict_New();
    set_item(paths, "float32_gemm_kernels",
             PyUnicode_FromString(twolayer_ext::cpu::gemm_kernels_isa()));
    set_item(paths, "float32_gemm_bounds",
             PyUnicode_FromString(twolayer_ext::cpu::gemm_bounds()));
    set_item(paths, "bfloat16_products", products(at::kBFloat16));
    set_item(paths, "float16_products", products(at::kHalf));
    set_item(paths, "bfloat16_fused_mlp",
             PyUnicode_FromString(!aten && twolayer_ext::cpu::amx_bf16_usable() ? "amx"
                                                                                : "products"));
    set_item(paths, "elementwise_passes",
             PyUnicode_FromString(twolayer_ext::cpu::passes::instruction_set()));
    return paths;
  });
}

// Each environment switch (switches.h) and its value ("" when unset); raises ValueError, as
// the ops would, when one has a value it does not accept.
PyObject* switches(PyObject*, PyObject*) {
  return reporting_errors([] {
    const auto values = twolayer_ext::switch_values();  // may raise: before any object
    PyObject* result = PyDict_New();
    for (const auto& [name, value] : values) {
      set_item(result, name.c_str(), PyUnicode_FromString(value.c_str()));
    }
    return result;
  });
}

// Whether CUDA float32 products of ours run on TF32 tensor cores now (as cuBLAS's would).
PyObject* cuda_matmul_tf32(PyObject*, PyObject*) {
  return PyBool_FromLong(twolayer_ext::cuda_matmul_tf32());
}

// ATen's view of the CPU (cpuinfo: name, instruction-set flags, cache sizes, cores).
PyObject* cpu_capabilities(PyObject*, PyObject*) {
  PyObject* result = PyDict_New();
  for (const auto& [key, value] : at::cpu::get_cpu_capabilities()) {
    if (value.isBool()) {
      set_item(result, key.c_str(), PyBool_FromLong(value.toBool()));
    } else if (value.isInt()) {
      set_item(result, key.c_str(), PyLong_FromLongLong(value.toInt()));
    } else if (value.isString()) {
      set_item(result, key.c_str(), PyUnicode_FromString(value.toStringRef().c_str()));
    }
  }
  return result;
}

PyMethodDef methods[] = {
    {"cpu_paths", cpu_paths, METH_NOARGS,
     "The paths the CPU ops take on this CPU now: float32_gemm_kernels (avx512, avx2 or none), "
     "float32_gemm_bounds (whose measurements bound them: intel, avx512, avx2 or none), "
     "bfloat16_products and float16_products (native or float32), bfloat16_fused_mlp (amx: "
     "the fully fused bfloat16 network, forward and backward, on our AMX tile kernel; "
     "products: on the products above), elementwise_passes "
     "(avx512, avx2 or default)."},
    {"switches", switches, METH_NOARGS,
     "Each environment switch of the paths (README, Path switches) and its value ('' when "
     "unset)."},
    {"cuda_matmul_tf32", cuda_matmul_tf32, METH_NOARGS,
     "Whether CUDA float32 products of the extension run on TF32 tensor cores now, as "
     "torch's matmuls would (torch.backends.cuda.matmul.fp32_precision)."},
    {"cpu_capabilities", cpu_capabilities, METH_NOARGS,
     "ATen's description of the CPU (at::cpu::get_cpu_capabilities)."},
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
