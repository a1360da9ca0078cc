"""``torch.autograd.Function`` classes for the custom ops, as the tutorial writes ``MyReLU``.

The ops are differentiable without these classes: their autograd kernels are C++
(``csrc/autograd/``), which is what the modules and :mod:`twolayer_ext.functional` use,
with no Python per call. These Functions compute the same gradients for code that wants an
``autograd.Function``: ``apply`` takes the op's inputs and returns its output tensor, and
``gradcheck`` works on it directly. The tests check both paths against each other and
against torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch


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


def _call_backward_op(op: Any, *args: Any) -> Any:
    """Run a backward op; skip its (Python) autograd layer unless a graph is being built.

    The backward ops are differentiable (double backward), but in a plain backward pass
    grad mode is off and their autograd wrapper only costs time (~50 us per call).
    """
    if torch.is_grad_enabled():
        return op(*args)
    with torch._C._AutoDispatchBelowAutograd():
        return op(*args)


class LinearReLUFunction(torch.autograd.Function):
    """``y = relu(x @ weight.T + bias)`` with a fused forward and backward.

    ``apply(x, weight, bias=None)`` returns ``y``. Saved for backward: x (if weight needs
    a gradient), weight (if x does) and the packed ReLU mask (one bit per output element)
    instead of the ReLU output that torch saves.
    """

    @staticmethod
    def forward(
        ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        y, mask = torch.ops.twolayer_ext.linear_relu.default(x, weight, bias)
        need_x, need_w = ctx.needs_input_grad[:2]
        _keep_if(ctx, [need_w, need_x, True], [x, weight, mask])
        ctx.has_bias = bias is not None
        return cast(torch.Tensor, y)

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> Any:
        x, weight, mask = _saved(ctx)
        if grad_y.dtype != x.dtype:
            # Under autocast the op ran on inputs cast to grad_y's dtype; backward
            # uses the same casts (autograd casts the grads back to x's dtype).
            x, weight = x.to(grad_y.dtype), weight.to(grad_y.dtype)
        need_x, need_w, need_b = ctx.needs_input_grad
        return _call_backward_op(
            torch.ops.twolayer_ext.linear_relu_backward.default,
            grad_y,
            x,
            weight,
            mask,
            [need_x, need_w, need_b and ctx.has_bias],
        )


class ReLUFunction(torch.autograd.Function):
    """The tutorial's ``MyReLU`` on the extension's C++/CUDA kernels.

    Saves its output (as torch.relu does); backward is torch's
    ``threshold_backward``: relu'(0) = 0 and a NaN output passes its gradient.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        y = cast(torch.Tensor, torch.ops.twolayer_ext.relu.default(x))
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return cast(
            torch.Tensor,
            _call_backward_op(torch.ops.twolayer_ext.relu_backward.default, grad_y, y),
        )


class TwoLayerMLPFunction(torch.autograd.Function):
    """The tutorial's whole network, ``relu(x @ w1.T + b1) @ w2.T + b2``, as one Function.

    ``apply(x, w1, b1, w2, b2)`` returns the network output. Saved for backward: what torch
    keeps for ``nn.Sequential(Linear, ReLU, Linear)`` (the hidden activation, w2, and x /
    w1 only where the other needs a gradient); the ReLU mask is re-derived from the hidden
    activation. Backward is one op computing only the requested gradients. Double backward
    is :func:`twolayer_ext.two_layer_mlp`'s (this class raises a clear error for it).
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        w1: torch.Tensor,
        b1: torch.Tensor | None,
        w2: torch.Tensor,
        b2: torch.Tensor | None,
    ) -> torch.Tensor:
        out, hidden = torch.ops.twolayer_ext.two_layer_forward.default(x, w1, b1, w2, b2)
        nx, nw1, nb1 = ctx.needs_input_grad[:3]
        _keep_if(ctx, [nw1, nx, nx or nw1 or nb1, True], [x, w1, w2, hidden])
        ctx.has_bias = (b1 is not None, b2 is not None)
        return cast(torch.Tensor, out)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> Any:
        if torch.is_grad_enabled():
            # The second derivative has a term through the hidden activation, which this
            # Function computes inside forward, out of the graph: refuse rather than drop it.
            raise RuntimeError(
                "TwoLayerMLPFunction does not support double backward (create_graph=True); "
                "twolayer_ext.two_layer_mlp and TwoLayerNet do"
            )
        x, w1, w2, hidden = _saved(ctx)
        if grad_out.dtype != x.dtype:  # autocast: see LinearReLUFunction.backward
            x, w1, w2 = x.to(grad_out.dtype), w1.to(grad_out.dtype), w2.to(grad_out.dtype)
        need = list(ctx.needs_input_grad)
        need[2] = need[2] and ctx.has_bias[0]
        need[4] = need[4] and ctx.has_bias[1]
        with torch._C._AutoDispatchBelowAutograd():
            return torch.ops.twolayer_ext.two_layer_backward.default(
                grad_out, x, w1, w2, hidden, need
            )
