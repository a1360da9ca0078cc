"""Pure-torch reference implementations of every op in ``torch.ops.twolayer_ext``.

Tests and benchmarks compare the extension against these. They follow the
ops' exact contracts (including the packed mask layout), in plain torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._outputs import first_output
from .masks import pack_mask, relu_keep, unpack_mask

__all__ = [
    "MyReLU",
    "linear_relu",
    "linear_relu_backward",
    "linear_relu_op",
    "linear_relu_output",
    "pack_mask",
    "relu",
    "relu_backward",
    "relu_keep",
    "two_layer",
    "two_layer_backward",
    "two_layer_backward_recompute",
    "two_layer_forward",
    "two_layer_sgd_step",
    "unpack_mask",
]


def _rows(t: torch.Tensor) -> int:
    """Rows of t as a matrix of its last dimension (``reshape(-1, n)`` is ambiguous for n = 0)."""
    return math.prod(t.shape[:-1])


def linear_relu(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``relu(x @ weight.T + bias)``: what ``twolayer_ext.linear_relu`` must equal."""
    return torch.relu(F.linear(x, weight, bias))


def linear_relu_op(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference for ``torch.ops.twolayer_ext.linear_relu``: ``(y, packed mask)``."""
    y = linear_relu(x, weight, bias)
    return y, pack_mask(relu_keep(y).reshape(_rows(y), weight.shape[0]))


linear_relu_output = linear_relu  # torch.ops.twolayer_ext.linear_relu_output: the output alone


def linear_relu_backward(
    grad_y: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    mask: torch.Tensor,
    output_mask: Sequence[bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Reference for ``torch.ops.twolayer_ext.linear_relu_backward``."""
    out_features, in_features = weight.shape
    keep = unpack_mask(mask, out_features).reshape(grad_y.shape)
    gm = torch.where(keep, grad_y, torch.zeros_like(grad_y))
    g2 = gm.reshape(_rows(gm), out_features)
    grad_x = (g2 @ weight).reshape(x.shape) if output_mask[0] else None
    grad_w = g2.t() @ x.reshape(g2.shape[0], in_features) if output_mask[1] else None
    grad_b = g2.sum(0) if output_mask[2] else None
    return grad_x, grad_w, grad_b


def two_layer_forward(
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor | None,
    w2: torch.Tensor,
    b2: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference for ``torch.ops.twolayer_ext.two_layer_forward``: ``(out, hidden)``."""
    hidden = linear_relu(x, w1, b1)
    return F.linear(hidden, w2, b2), hidden


two_layer = first_output(
    two_layer_forward, "Reference for ``torch.ops.twolayer_ext.two_layer``: the network's output."
)


def two_layer_backward(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    hidden: torch.Tensor,
    output_mask: Sequence[bool],
) -> tuple[torch.Tensor | None, ...]:
    """Reference for ``torch.ops.twolayer_ext.two_layer_backward``: grads of x, w1, b1, w2, b2."""
    out_f, hidden_features = w2.shape
    g2 = grad_out.reshape(_rows(grad_out), out_f)
    grad_w2 = g2.t() @ hidden.reshape(g2.shape[0], hidden_features) if output_mask[3] else None
    grad_b2 = g2.sum(0) if output_mask[4] else None
    mask = pack_mask(relu_keep(hidden).reshape(g2.shape[0], hidden_features))
    grad_h = (g2 @ w2).reshape(hidden.shape)
    grad_x, grad_w1, grad_b1 = linear_relu_backward(grad_h, x, w1, mask, output_mask[:3])
    return grad_x, grad_w1, grad_b1, grad_w2, grad_b2


def two_layer_backward_recompute(
    grad_out: torch.Tensor,
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor | None,
    w2: torch.Tensor,
    output_mask: Sequence[bool],
) -> tuple[torch.Tensor | None, ...]:
    """Reference for ``torch.ops.twolayer_ext.two_layer_backward_recompute``: two_layer_backward
    on the hidden activation computed again from x, w1 and b1."""
    return two_layer_backward(grad_out, x, w1, w2, linear_relu(x, w1, b1), output_mask)


def two_layer_sgd_step(
    seq: nn.Sequential, x: torch.Tensor, y: torch.Tensor, lr: float, reduction: str = "sum"
) -> torch.Tensor:
    """Reference for ``torch.ops.twolayer_ext.two_layer_sgd_step``: the tutorial's step.

    On the network as ``nn.Sequential(Linear, ReLU, Linear)``, whose parameters play the op's
    w1, b1, w2 and b2: forward, ``mse_loss``, the gradient of every parameter by autograd,
    then ``p -= lr * grad`` in place (no ``.grad`` written, as the op writes none). Returns the
    loss computed before the update.
    """
    params = list(seq.parameters())
    with torch.enable_grad():
        loss = F.mse_loss(seq(x), y, reduction=reduction)
        grads = torch.autograd.grad(loss, params)
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.add_(g, alpha=-lr)
    return loss.detach()


def relu(x: torch.Tensor) -> torch.Tensor:
    """Reference for ``torch.ops.twolayer_ext.relu``."""
    return torch.relu(x)


def relu_backward(grad_y: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Reference for ``torch.ops.twolayer_ext.relu_backward``."""
    return torch.where(relu_keep(y), grad_y, torch.zeros_like(grad_y))


class MyReLU(torch.autograd.Function):
    """The tutorial's hand-written ReLU Function, in pure torch (what ReLUFunction replaces)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> torch.Tensor:
        (x,) = ctx.saved_tensors
        grad_x = grad_output.clone()
        grad_x[x <= 0] = 0  # relu'(0) = 0, as torch.relu
        return grad_x
