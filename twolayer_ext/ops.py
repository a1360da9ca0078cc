"""Python-side registrations for the ``torch.ops.twolayer_ext`` operators.

The schemas and the CPU/CUDA kernels live in C++ (``csrc/``). Here each op gets

* a fake (meta) kernel, so the ops work with FakeTensor, torch.compile and the
  meta device (shape inference without data); the training ops' (backward ops and the
  training step) refuse an ONNX export, which has no form for them, and
* for the forward ops, an autocast kernel.

The inference ops' ONNX form is their translation in ``onnx.py``.

Their autograd kernels (every op's, backward ops' included: double backward, forward-mode AD)
and vmap kernels are C++ (``csrc/autograd/``, ``csrc/vmap/``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar, cast

import torch

from ._outputs import first_output
from .masks import mask_bytes

_F = TypeVar("_F", bound=Callable[..., Any])
# torch.library.register_fake, typed: it returns the function it registers.
_register_fake = cast(Callable[[str], Callable[[_F], _F]], torch.library.register_fake)


def _register_training_fake(name: str) -> Callable[[_F], _F]:
    """register_fake for a training op. Every export runs the fake kernels while it captures
    the graph, so this is where an ONNX export learns that the op has no ONNX form (Dynamo
    reads torch.onnx.is_in_onnx_export() as False in the code it traces, not in here)."""

    def register(fake: _F) -> _F:
        @functools.wraps(fake)
        def refusing_onnx(*args: Any, **kwargs: Any) -> Any:
            if torch.onnx.is_in_onnx_export():
                raise RuntimeError(
                    f"{name} is a training op and has no ONNX form: export the model for "
                    "inference (its forward, without a backward op or sgd_step); "
                    "torch.export and AOTInductor keep the op"
                )
            return fake(*args, **kwargs)

        _register_fake(name)(refusing_onnx)
        return fake

    return register


linear_relu = torch.ops.twolayer_ext.linear_relu.default
linear_relu_output = torch.ops.twolayer_ext.linear_relu_output.default
linear_relu_backward = torch.ops.twolayer_ext.linear_relu_backward.default
two_layer_forward = torch.ops.twolayer_ext.two_layer_forward.default
two_layer = torch.ops.twolayer_ext.two_layer.default
two_layer_backward = torch.ops.twolayer_ext.two_layer_backward.default
two_layer_backward_recompute = torch.ops.twolayer_ext.two_layer_backward_recompute.default
two_layer_sgd_step = torch.ops.twolayer_ext.two_layer_sgd_step.default
relu = torch.ops.twolayer_ext.relu.default
relu_backward = torch.ops.twolayer_ext.relu_backward.default


def _check_linear_args(op: str, x: torch.Tensor, weight: torch.Tensor) -> None:
    # Mirrors csrc/include/twolayer_ext/checks.h for tensors without data.
    torch._check(x.dim() >= 1, lambda: f"{op}: x must be at least 1-D, but got a 0-d tensor")
    torch._check(
        weight.dim() == 2,
        lambda: f"{op}: weight must be 2-D [out_features, in_features], got {list(weight.shape)}",
    )
    torch._check(
        x.dtype == weight.dtype,
        lambda: (
            f"{op}: expected weight to have the same dtype as x ({x.dtype}), got {weight.dtype}"
        ),
    )
    torch._check(
        x.shape[-1] == weight.shape[1],
        lambda: (
            f"{op}: in_features mismatch: x has shape {list(x.shape)} but weight has shape "
            f"{list(weight.shape)}"
        ),
    )


def _known_int(v: int | torch.SymInt) -> int | None:
    """v's value where it is known (a plain or constant SymInt), else None (a symbol)."""
    return v if isinstance(v, int) else v.node.maybe_as_int()


def _weight_grad_fake(weight: torch.Tensor) -> torch.Tensor:
    """A weight's gradient as the kernels return it: in the weight's layout, column-major for
    a column-major weight (``column_major`` in csrc/include/twolayer_ext/tensor_util.h: stride
    1 along dim 0 and not along dim 1, a symbolic stride counting as not 1), else row-major."""
    s0, s1 = (_known_int(s) for s in weight.stride())
    if s0 == 1 and s1 != 1:
        return weight.new_empty((weight.shape[1], weight.shape[0])).t()
    return weight.new_empty(weight.shape)


@_register_fake("twolayer_ext::linear_relu")
def _linear_relu_fake(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    _check_linear_args("twolayer_ext::linear_relu", x, weight)
    out_features = weight.shape[0]
    if bias is not None:
        torch._check(
            bias.dim() == 1 and bias.shape[0] == out_features,
            lambda: (
                f"twolayer_ext::linear_relu: bias must have shape [{out_features}], "
                f"got {list(bias.shape)}"
            ),
        )
    rows = math.prod(x.shape[:-1])
    y = x.new_empty((*x.shape[:-1], out_features))
    mask = x.new_empty((rows, mask_bytes(out_features)), dtype=torch.uint8)
    return y, mask


@_register_training_fake("twolayer_ext::linear_relu_backward")
def _linear_relu_backward_fake(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor,
    output_mask: Sequence[bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    _check_linear_args("twolayer_ext::linear_relu_backward", x, weight)
    torch._check(
        grad_y.shape == (*x.shape[:-1], weight.shape[0]),
        lambda: f"twolayer_ext::linear_relu_backward: grad_y has shape {list(grad_y.shape)}",
    )
    return (
        torch.empty_like(x, memory_format=torch.contiguous_format) if output_mask[0] else None,
        _weight_grad_fake(weight) if output_mask[1] else None,
        weight.new_empty((weight.shape[0],)) if output_mask[2] else None,
    )


@_register_fake("twolayer_ext::two_layer_forward")
def _two_layer_forward_fake(
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor | None,
    w2: torch.Tensor,
    b2: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    hidden, _ = _linear_relu_fake(x, w1, b1)
    _check_linear_args("twolayer_ext::two_layer_forward", hidden, w2)
    return hidden.new_empty((*x.shape[:-1], w2.shape[0])), hidden


_register_fake("twolayer_ext::linear_relu_output")(first_output(_linear_relu_fake))
_register_fake("twolayer_ext::two_layer")(first_output(_two_layer_forward_fake))


@_register_training_fake("twolayer_ext::two_layer_backward")
def _two_layer_backward_fake(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    hidden: torch.Tensor,
    output_mask: Sequence[bool],
) -> tuple[torch.Tensor | None, ...]:
    _check_linear_args("twolayer_ext::two_layer_backward", x, w1)
    _check_linear_args("twolayer_ext::two_layer_backward", hidden, w2)
    grads = (
        torch.empty_like(x, memory_format=torch.contiguous_format),
        _weight_grad_fake(w1),
        w1.new_empty((w1.shape[0],)),
        _weight_grad_fake(w2),
        w1.new_empty((w2.shape[0],)),
    )
    return tuple(g if wanted else None for wanted, g in zip(output_mask, grads))


@_register_training_fake("twolayer_ext::two_layer_backward_recompute")
def _two_layer_backward_recompute_fake(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor | None,
    w2: torch.Tensor,
    output_mask: Sequence[bool],
) -> tuple[torch.Tensor | None, ...]:
    hidden, _ = _linear_relu_fake(x, w1, b1)
    return _two_layer_backward_fake(grad_out, x, w1, w2, hidden, output_mask)


def _check_sgd_step_args(
    x: torch.Tensor, y: torch.Tensor, w2: torch.Tensor, reduction: str
) -> None:
    """two_layer_sgd_step's own checks (the network's are the forward op's), worded as the C++
    composite words them (fake kernels raise RuntimeError, docs/errors.md)."""
    op = "twolayer_ext::two_layer_sgd_step"
    torch._check(
        y.dtype == x.dtype,
        lambda: f"{op}: expected y to have the same dtype as x ({x.dtype}), but got {y.dtype}",
    )
    out_shape = [*x.shape[:-1], w2.shape[0]]
    torch._check(
        list(y.shape) == out_shape,
        lambda: (
            f"{op}: y must have the network's output shape {out_shape}, but got {list(y.shape)}"
        ),
    )
    torch._check(
        reduction in ("sum", "mean"),
        lambda: f"{op}: reduction must be 'sum' or 'mean', but got {reduction!r}",
    )


@_register_training_fake("twolayer_ext::two_layer_sgd_step")
def _two_layer_sgd_step_fake(
    x: torch.Tensor,
    y: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor | None,
    w2: torch.Tensor,
    b2: torch.Tensor | None,
    lr: float,
    reduction: str = "sum",
) -> torch.Tensor:
    _two_layer_forward_fake(x, w1, b1, w2, b2)
    _check_sgd_step_args(x, y, w2, reduction)
    return x.new_empty(())  # the loss; the parameters are updated in place


@_register_fake("twolayer_ext::relu")
def _relu_fake(x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@_register_training_fake("twolayer_ext::relu_backward")
def _relu_backward_fake(grad_y: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    torch._check(
        grad_y.shape == y.shape,
        lambda: (
            f"twolayer_ext::relu_backward: grad_y must have the shape of y {list(y.shape)}, "
            f"got {list(grad_y.shape)}"
        ),
    )
    return torch.empty_like(y, memory_format=torch.contiguous_format)


# Autocast: like nn.Linear, the forward ops (linear_relu[_output], two_layer[_forward]) run in
# the autocast dtype (their floating inputs are cast to it); relu and the backward ops follow their inputs' dtype. (The training
# step's autocast kernel is C++, beside the step itself: csrc/composite/two_layer_sgd_step.cpp.)
# The Autocast keys sit above Autograd in the dispatcher, so the casts are
# recorded and the gradients come back in the parameters' own dtype.
_autocast_lib = torch.library.Library("twolayer_ext", "IMPL")


def _autocast_kernel(
    op: Callable[..., Any], device_type: str, key: torch._C.DispatchKey
) -> Callable[..., Any]:
    """Casts every floating tensor argument to the autocast dtype, then runs ``op``."""

    def kernel(*args: torch.Tensor | None) -> Any:
        dtype = torch.get_autocast_dtype(device_type)
        cast = [a.to(dtype) if a is not None and a.is_floating_point() else a for a in args]
        with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(key)):
            return op(*cast)

    return kernel


for _name, _op in [
    ("linear_relu", linear_relu),
    ("linear_relu_output", linear_relu_output),
    ("two_layer_forward", two_layer_forward),
    ("two_layer", two_layer),
]:
    for _device, _key in [("cpu", "AutocastCPU"), ("cuda", "AutocastCUDA")]:
        _autocast_lib.impl(
            _name, _autocast_kernel(_op, _device, getattr(torch._C.DispatchKey, _key)), _key
        )
