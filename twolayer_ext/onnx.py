"""The inference ops in standard ONNX, for ``torch.onnx.export(..., dynamo=True)``.

Pass :func:`translation_table` as the exporter's ``custom_translation_table``::

    torch.onnx.export(model, (x,), dynamo=True,
                      custom_translation_table=twolayer_ext.onnx.translation_table())

Each op becomes what torch's own exporter writes for the plain ``nn.Linear`` + ``nn.ReLU``
model (torchlib's ``aten::linear`` and ``aten::relu``: Gemm for 2-D inputs, MatMul + Add
otherwise, Relu), so the ONNX graph is the plain model's.

Why an argument rather than a decomposition in ``torch._decomp``'s global table, the one
table the exporter reads by itself: inductor reads that table too, and where the ``CI``
environment variable is set (GitHub Actions, GitLab and most CI services set it) it refuses
to fall back to an op that has an entry there, so torch.compile and AOTInductor of any model
using the ops would fail in users' CI. torch.export and AOTInductor keep the ops (our kernels
run there); the training ops have no ONNX form, and their fake kernels refuse an ONNX export
by name (``ops.py``).

onnxscript (the exporter's own ONNX builder) is imported only when the table is asked for: it
is an optional dependency (``pip install "twolayer_ext[onnx]"``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

__all__ = ["translation_table"]


def translation_table() -> dict[Callable[..., Any], Callable[..., Any]]:
    """Each inference op of ``torch.ops.twolayer_ext`` mapped to its ONNX translation.

    The value of ``torch.onnx.export``'s ``custom_translation_table``. Covers
    ``linear_relu`` (with its packed mask), ``linear_relu_output``, ``relu``, ``two_layer``
    and ``two_layer_forward``, and so every public function and module built on them.

    Raises:
        ImportError: onnxscript is not installed.
    """
    from onnx import TensorProto
    from onnxscript import opset18

    # Untyped here: in the exporter's tracing, Python lists and ints stand for constants,
    # which onnxscript's stubs (written for its compiled functions) do not admit.
    op: Any = opset18

    def linear(x: Any, weight: Any, bias: Any, rank: int) -> Any:
        # torchlib's aten::linear: Gemm where both operands are matrices, else MatMul + Add.
        # rank is the op input's: traced intermediate values carry no shape.
        if rank == 2:
            return op.Gemm(x, weight, bias, transB=1)
        y = op.MatMul(x, op.Transpose(weight, perm=[1, 0]))
        return y if bias is None else op.Add(y, bias)

    def linear_relu_output(x: Any, weight: Any, bias: Any = None) -> Any:
        return op.Relu(linear(x, weight, bias, len(x.shape)))

    def linear_relu(x: Any, weight: Any, bias: Any = None) -> tuple[Any, Any]:
        # The packed mask of twolayer_ext/masks.py: bit j % 8 of byte j // 8 of each row is
        # set where output column j passed the ReLU (y > 0 or NaN, i.e. not y <= 0). Summed
        # in int64: ONNX Runtime has no uint8 ReduceSum.
        y = linear_relu_output(x, weight, bias)
        out_features = weight.shape[0]
        nbytes = (out_features + 7) // 8
        keep = op.Not(op.LessOrEqual(y, op.CastLike(0, y)))
        bits = op.Cast(op.Reshape(keep, [-1, out_features]), to=TensorProto.INT64)
        bits = op.Pad(bits, [0, 0, 0, nbytes * 8 - out_features])
        weights = op.Constant(value_ints=[1 << i for i in range(8)])
        packed = op.ReduceSum(op.Mul(op.Reshape(bits, [-1, nbytes, 8]), weights), [2], keepdims=0)
        return y, op.Cast(packed, to=TensorProto.UINT8)

    def relu(x: Any) -> Any:
        return op.Relu(x)

    def two_layer_forward(x: Any, w1: Any, b1: Any, w2: Any, b2: Any) -> tuple[Any, Any]:
        hidden = linear_relu_output(x, w1, b1)
        return linear(hidden, w2, b2, len(x.shape)), hidden

    def two_layer(x: Any, w1: Any, b1: Any, w2: Any, b2: Any) -> Any:
        return two_layer_forward(x, w1, b1, w2, b2)[0]

    ops = torch.ops.twolayer_ext
    return {
        ops.linear_relu.default: linear_relu,
        ops.linear_relu_output.default: linear_relu_output,
        ops.relu.default: relu,
        ops.two_layer.default: two_layer,
        ops.two_layer_forward.default: two_layer_forward,
    }
