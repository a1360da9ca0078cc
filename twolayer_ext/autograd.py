"""``torch.autograd.Function`` classes for the custom ops, as the tutorial writes ``MyReLU``.

The ops are differentiable without these classes: their autograd kernels are C++
(``csrc/autograd/``), which is what the modules and :mod:`twolayer_ext.functional` use,
with no Python per call. These Functions compute the same derivatives for code that wants an
``autograd.Function``: ``apply`` takes the op's inputs and returns its output tensor, and
``gradcheck`` works on it directly. They are written in the form torch.func needs
(``forward`` without ``ctx``, ``setup_context``, a ``jvp`` for forward-mode AD,
``generate_vmap_rule``), so every autograd mode and torch.func transform works on them as on
the ops. The tests check both paths against each other and against torch.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, cast

import torch

from .masks import pack_mask, relu_keep


def _keep_if(ctx: Any, needed: Sequence[bool], tensors: Sequence[torch.Tensor]) -> None:
    """Save each tensor only if backward will read its values (torch's own rule: x only
    when the weight needs a gradient, the weight only when x does); for the others,
    remember shape/dtype/device so backward can pass a 0-byte stand-in (the backward
    ops validate shapes, not values)."""
    ctx.save_for_backward(*(t if n else None for n, t in zip(needed, tensors)))
    ctx.metas = [(t.shape, t.dtype, t.device) for t in tensors]


def _saved(ctx: Any) -> list[torch.Tensor]:
    return [
        t if t is not None else torch.zeros((), dtype=dtype, device=device).expand(shape)
        for t, (shape, dtype, device) in zip(ctx.saved_tensors, ctx.metas)
    ]


def _linear_tangent(
    x: torch.Tensor,
    x_dot: torch.Tensor | None,
    w: torch.Tensor,
    w_dot: torch.Tensor | None,
    b_dot: torch.Tensor | None,
) -> torch.Tensor | None:
    """The tangent of ``x @ w.T + b``: ``ẋ wᵀ + x ẇᵀ + ḃ`` (None where no input has one)."""
    terms = [
        t
        for t in (
            None if x_dot is None else torch.nn.functional.linear(x_dot, w),
            None if w_dot is None else torch.nn.functional.linear(x, w_dot),
            b_dot,
        )
        if t is not None
    ]
    if not terms:
        return None
    return sum(terms[1:], terms[0]).expand(*x.shape[:-1], w.shape[0])


def _relu_tangent(pre_dot: torch.Tensor | None, y: torch.Tensor) -> torch.Tensor:
    """relu's tangent: ``pre_dot`` where ``y`` passed the ReLU (y > 0 or NaN), else 0."""
    if pre_dot is None:
        return torch.zeros_like(y)
    return cast(torch.Tensor, torch.ops.twolayer_ext.relu_backward.default(pre_dot, y))


class LinearReLUFunction(torch.autograd.Function):
    """``y = relu(x @ weight.T + bias)`` with a fused forward and backward.

    ``apply(x, weight, bias=None)`` returns ``y``. Saved for backward: x (if weight needs
    a gradient), weight (if x does) and the packed ReLU mask (one bit per output element,
    packed from y) instead of the ReLU output that torch saves. The tangent is
    ``mask ⊙ (ẋ Wᵀ + x Ẇᵀ + ḃ)``.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        return cast(
            torch.Tensor, torch.ops.twolayer_ext.linear_relu_output.default(x, weight, bias)
        )

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        x, weight, bias = inputs
        need_x, need_w, need_b = ctx.needs_input_grad
        if need_x or need_w or need_b:
            mask = pack_mask(relu_keep(output).reshape(-1, weight.shape[0]))
            _keep_if(ctx, [need_w, need_x, True], [x, weight, mask])
        ctx.has_bias = bias is not None
        ctx.save_for_forward(x, weight, output)

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> Any:
        x, weight, mask = _saved(ctx)
        if grad_y.dtype != x.dtype:
            # Under autocast the op ran on inputs cast to grad_y's dtype; backward
            # uses the same casts (autograd casts the grads back to x's dtype).
            x, weight = x.to(grad_y.dtype), weight.to(grad_y.dtype)
        need_x, need_w, need_b = ctx.needs_input_grad
        return torch.ops.twolayer_ext.linear_relu_backward.default(
            grad_y, x, weight, mask, [need_x, need_w, need_b and ctx.has_bias]
        )

    @staticmethod
    def jvp(
        ctx: Any, x_dot: torch.Tensor | None, w_dot: torch.Tensor | None, b_dot: torch.Tensor | None
    ) -> torch.Tensor:
        x, weight, y = ctx.saved_tensors
        return _relu_tangent(_linear_tangent(x, x_dot, weight, w_dot, b_dot), y)


class ReLUFunction(torch.autograd.Function):
    """The tutorial's ``MyReLU`` on the extension's C++/CUDA kernels.

    Saves its output (as torch.relu does); backward and the tangent are torch's
    ``threshold_backward``: relu'(0) = 0 and a NaN output passes its gradient.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return cast(torch.Tensor, torch.ops.twolayer_ext.relu.default(x))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        ctx.save_for_backward(output)
        ctx.save_for_forward(output)

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return cast(torch.Tensor, torch.ops.twolayer_ext.relu_backward.default(grad_y, y))

    @staticmethod
    def jvp(ctx: Any, x_dot: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return _relu_tangent(x_dot, y)


class TwoLayerMLPFunction(torch.autograd.Function):
    """The tutorial's whole network, ``relu(x @ w1.T + b1) @ w2.T + b2``, as one Function.

    ``apply(x, w1, b1, w2, b2)`` returns the network output. Saved for backward: the inputs
    x, w1, b1 and w2, no activation: backward recomputes the hidden activation
    (``two_layer_backward_recompute``, one op computing only the requested gradients), and
    so does the tangent. Recomputing keeps double backward exact: the recomputed hidden
    activation is the function of x, w1 and b1 that it is.
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        x: torch.Tensor,
        w1: torch.Tensor,
        b1: torch.Tensor | None,
        w2: torch.Tensor,
        b2: torch.Tensor | None,
    ) -> torch.Tensor:
        return cast(torch.Tensor, torch.ops.twolayer_ext.two_layer.default(x, w1, b1, w2, b2))

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        x, w1, b1, w2, b2 = inputs
        ctx.save_for_backward(x, w1, b1, w2)
        ctx.save_for_forward(x, w1, b1, w2)
        ctx.has_bias = (b1 is not None, b2 is not None)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> Any:
        x, w1, b1, w2 = ctx.saved_tensors
        if grad_out.dtype != x.dtype:  # autocast: see LinearReLUFunction.backward
            x, w1, w2 = x.to(grad_out.dtype), w1.to(grad_out.dtype), w2.to(grad_out.dtype)
            b1 = None if b1 is None else b1.to(grad_out.dtype)
        need = list(ctx.needs_input_grad)
        need[2] = need[2] and ctx.has_bias[0]
        need[4] = need[4] and ctx.has_bias[1]
        return torch.ops.twolayer_ext.two_layer_backward_recompute.default(
            grad_out, x, w1, b1, w2, need
        )

    @staticmethod
    def jvp(
        ctx: Any,
        x_dot: torch.Tensor | None,
        w1_dot: torch.Tensor | None,
        b1_dot: torch.Tensor | None,
        w2_dot: torch.Tensor | None,
        b2_dot: torch.Tensor | None,
    ) -> torch.Tensor:
        x, w1, b1, w2 = ctx.saved_tensors
        hidden = cast(torch.Tensor, torch.ops.twolayer_ext.linear_relu_output.default(x, w1, b1))
        hidden_dot = _relu_tangent(_linear_tangent(x, x_dot, w1, w1_dot, b1_dot), hidden)
        return cast(torch.Tensor, _linear_tangent(hidden, hidden_dot, w2, w2_dot, b2_dot))


def _signature_once(*functions: type[torch.autograd.Function]) -> None:
    """Store each ``forward``'s signature on it. torch 2.14's ``Function.apply`` binds its
    arguments with ``inspect.signature(forward)`` on every call where ``setup_context`` is
    defined, and ``inspect.signature`` returns a function's ``__signature__`` when it has
    one: computed once, instead of on every call (docs/BENCHMARKS.md, "Python Functions")."""
    for function in functions:
        forward = function.forward
        forward.__signature__ = inspect.signature(forward)  # type: ignore[attr-defined]


_signature_once(LinearReLUFunction, ReLUFunction, TwoLayerMLPFunction)
