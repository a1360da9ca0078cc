"""``torch.autograd.Function`` wrappers around the custom ops, and the backward ops'
double-backward formulas.

The ops themselves are differentiable without these classes: their autograd kernels
are C++ (``csrc/autograd/``), which is what the modules and ``twolayer_ext.functional``
use. These Functions are the same gradients for code that wants an
``autograd.Function`` (subclassing, ``torch.func``-style ``setup_context``, teaching);
the tests check both paths against each other and against torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def _keep_if(ctx: Any, needed: Sequence[bool], tensors: Sequence[torch.Tensor]) -> None:
    """Save each tensor only if backward will read its values (torch's own rule: x only
    when the weight needs a gradient, the weight only when x does); for the others,
    remember shape/dtype/device so backward can pass a 1-element stand-in (the backward
    ops validate shapes, not values)."""
    ctx.save_for_backward(*(t if n else None for n, t in zip(needed, tensors)))
    ctx.metas = [(t.shape, t.dtype, t.device) for t in tensors]


def _call_backward_op(op: Any, *args: Any) -> Any:
    """Run a backward op; skip its (Python) autograd layer unless a graph is being built.

    The backward ops are differentiable (double backward), but in a plain backward pass
    grad mode is off and their autograd wrapper only costs time (~50 us per call).
    """
    if torch.is_grad_enabled():
        return op(*args)
    with torch._C._AutoDispatchBelowAutograd():
        return op(*args)


def _saved(ctx: Any) -> list[torch.Tensor]:
    return [
        t if t is not None else torch.zeros((), dtype=dtype, device=device).expand(shape)
        for t, (shape, dtype, device) in zip(ctx.saved_tensors, ctx.metas)
    ]


class LinearReLUFunction(torch.autograd.Function):
    """y = relu(x @ weight.T + bias) with a fused forward and backward.

    ``apply(x, weight, bias)`` returns ``(y, mask)``: ``mask`` is the packed
    ReLU mask (uint8, eight outputs per byte) that backward uses; it is not
    differentiable. Saved for backward: x (if weight needs a gradient), weight (if x
    does) and the bit mask (1/8 byte per output element) instead of the relu output
    that torch saves.
    """

    @staticmethod
    def forward(
        x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.ops.twolayer_ext.linear_relu.default(x, weight, bias)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        x, weight, bias = inputs
        _, mask = output
        need_x, need_w = ctx.needs_input_grad[:2]
        _keep_if(ctx, [need_w, need_x, True], [x, weight, mask])
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor, _grad_mask: Any = None):
        x, weight, mask = _saved(ctx)
        if grad_y.dtype != x.dtype:
            # Under autocast the op ran on inputs cast to grad_y's dtype; backward
            # uses the same casts (autograd casts the grads back to x's dtype).
            x, weight = x.to(grad_y.dtype), weight.to(grad_y.dtype)
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
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
    def forward(x: torch.Tensor) -> torch.Tensor:
        return torch.ops.twolayer_ext.relu.default(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor) -> torch.Tensor:
        (y,) = ctx.saved_tensors
        return _call_backward_op(torch.ops.twolayer_ext.relu_backward.default, grad_y, y)


# Double backward. The backward ops are themselves differentiable (gradient
# penalties such as WGAN-GP's differentiate through them); their derivatives
# are written with plain torch ops, so they can be differentiated again.
# The ReLU mask is piecewise constant: no gradient flows into it.


def linear_relu_backward_setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    grad_y, x, weight, mask, _output_mask = inputs
    ctx.save_for_backward(grad_y, x, weight, mask)


def linear_relu_backward_backward(ctx: Any, ggx: Any, ggw: Any, ggb: Any):
    """Gradients of (grad_x, grad_w, grad_b) = linear_relu_backward(grad_y, x, w, mask).

    With gm = mask * grad_y: grad_x = gm @ w, grad_w = gm.T @ x, grad_b = gm.sum(rows).
    """
    from .reference import unpack_mask

    grad_y, x, weight, mask = ctx.saved_tensors
    out_f, in_f = weight.shape
    keep = unpack_mask(mask, out_f).reshape(grad_y.shape)
    need_gy, need_x, need_w = ctx.needs_input_grad[:3]
    d_grad_y = d_x = d_w = None
    if need_gy:
        acc = torch.zeros_like(grad_y)
        if ggx is not None:
            acc = acc + ggx @ weight.t()
        if ggw is not None:
            acc = acc + x @ ggw.t()
        if ggb is not None:
            acc = acc + ggb
        d_grad_y = torch.where(keep, acc, torch.zeros_like(acc))
    gm = torch.where(keep, grad_y, torch.zeros_like(grad_y))
    if need_x and ggw is not None:
        d_x = gm @ ggw
    if need_w and ggx is not None:
        gm2 = gm.reshape(-1, out_f)
        d_w = gm2.t() @ ggx.reshape(gm2.shape[0], in_f)
    return d_grad_y, d_x, d_w, None, None


def relu_backward_setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    _grad_y, y = inputs
    ctx.save_for_backward(y)


def relu_backward_backward(ctx: Any, gg: torch.Tensor):
    """grad_x = grad_y where y > 0: linear in grad_y, locally constant in y."""
    (y,) = ctx.saved_tensors
    return torch.ops.twolayer_ext.relu_backward.default(gg, y), None


class TwoLayerMLPFunction(torch.autograd.Function):
    """The tutorial's whole network, ``relu(x @ w1.T + b1) @ w2.T + b2``, as one Function.

    ``apply(x, w1, b1, w2, b2)`` returns ``(out, hidden)``; ``hidden`` is the ReLU
    output of layer 1 (not differentiable through this Function's second output).
    Saved for backward: what torch keeps for ``nn.Sequential(Linear, ReLU, Linear)``
    (hidden, w2, and x / w1 only where the other needs a gradient); the ReLU mask is
    re-derived from hidden.
    Backward is one op computing only the requested gradients.
    """

    @staticmethod
    def forward(
        x: torch.Tensor,
        w1: torch.Tensor,
        b1: torch.Tensor | None,
        w2: torch.Tensor,
        b2: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.ops.twolayer_ext.two_layer_forward.default(x, w1, b1, w2, b2)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        x, w1, b1, w2, b2 = inputs
        _, hidden = output
        nx, nw1, nb1 = ctx.needs_input_grad[:3]
        _keep_if(ctx, [nw1, nx, nx or nw1 or nb1, True], [x, w1, w2, hidden])
        ctx.has_bias = (b1 is not None, b2 is not None)
        ctx.mark_non_differentiable(hidden)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor, _grad_hidden: Any = None):
        x, w1, w2, hidden = _saved(ctx)
        if grad_out.dtype != x.dtype:  # autocast: see LinearReLUFunction.backward
            x, w1, w2 = x.to(grad_out.dtype), w1.to(grad_out.dtype), w2.to(grad_out.dtype)
        need = list(ctx.needs_input_grad[:5])
        need[2] = need[2] and ctx.has_bias[0]
        need[4] = need[4] and ctx.has_bias[1]
        return torch.ops.twolayer_ext.two_layer_backward.default(grad_out, x, w1, w2, hidden, need)


def two_layer_backward_setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    pass


def two_layer_backward_backward(ctx: Any, *grads: Any):
    """Double backward through the whole-network op is not implemented: fail loudly
    rather than let autograd treat the first-order gradients as constants."""
    raise RuntimeError(
        "twolayer_ext::two_layer_backward (TwoLayerNet / two_layer_mlp) does not support double "
        "backward (create_graph=True, e.g. gradient penalties). Build the network from "
        "twolayer_ext.LinearReLU and nn.Linear instead: linear_relu supports it."
    )
