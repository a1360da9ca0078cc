"""The ops in plain ATen ops, registered in ``torch._decomp``'s decomposition table.

``torch.onnx.export(..., dynamo=True)`` lowers every op that has no ONNX function through that
table (``torch.onnx``'s ONNX-friendly decomposition table), so a model built from the
extension's layers exports, with no extra argument, to the standard ONNX that the plain
``nn.Linear`` + ``nn.ReLU`` model exports to (MatMul/Gemm, Add, Relu). The entries are the
pure-torch references (:mod:`twolayer_ext.reference`).

torch.export and AOTInductor keep the ops, and so our kernels run there: their default
decompositions are core ATen's, which do not read this table; torch.compile's inductor
chooses its own decompositions too.

The training ops (the backward ops and the training step) have no ONNX form and no entry
here: their fake kernels refuse an ONNX export, naming the op (``ops.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch._decomp import register_decomposition

from . import reference

_OPS = torch.ops.twolayer_ext

# What each inference op is in plain ATen ops.
_INFERENCE: dict[str, Callable[..., Any]] = {
    "linear_relu": reference.linear_relu_op,
    "linear_relu_output": reference.linear_relu_output,
    "relu": reference.relu,
    "two_layer": reference.two_layer,
    "two_layer_forward": reference.two_layer_forward,
}

for _name, _fn in _INFERENCE.items():
    register_decomposition(getattr(_OPS, _name).default)(_fn)
