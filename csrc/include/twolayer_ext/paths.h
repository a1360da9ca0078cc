// Path decisions that more than one device, or the device-independent code, asks about:
// whether the two-layer network's backward recomputes its hidden activation instead of
// keeping it. The autograd kernel and the training step ask before any device kernel runs;
// each device answers with its own rule. The switches these rules read are in switches.h.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace twolayer_ext {

// A pass of the two-layer network, for the rules that differ between them: the forward that
// keeps no hidden activation (no gradient is recorded), the one that keeps it for backward,
// and the backward.
enum class MlpPass { kInference, kForward, kBackward };

// Whether the network's gradients are computed without keeping its hidden activation
// (two_layer_backward_recompute): where both passes run fully fused and recomputing the
// hidden block costs less than writing and reading it. Any device may ask; false under
// symbolic shapes (the rules read sizes, which would specialise a traced graph). Defined in
// csrc/paths/recompute_hidden.cpp.
bool backward_recomputes_hidden(const at::Tensor& x, const at::Tensor& w1, const at::Tensor& w2);

namespace cpu {
// The CPU's rule on concrete sizes (csrc/cpu/two_layer_fused.cpp, with its numbers).
bool recompute_hidden_rule(int64_t rows, int64_t in_features, int64_t hidden_features,
                           int64_t out_features, at::ScalarType dtype);
}  // namespace cpu

namespace cuda {
// The CUDA rule on concrete sizes (csrc/cuda/fused_mlp.cu): wherever both passes run the
// same fully fused kernels, so that backward's recomputed hidden has the forward's bits.
// Only in builds with the CUDA kernels.
bool recompute_hidden_rule(int64_t rows, int64_t in_features, int64_t hidden_features,
                           int64_t out_features, at::ScalarType dtype);
}  // namespace cuda

}  // namespace twolayer_ext
