"""Derivatives of the backward ops (double backward), registered in :mod:`.ops`.

The forward ops' gradients are C++ autograd kernels (``csrc/autograd/``); the backward
ops they call are differentiable again through the formulas here, so gradient penalties
(WGAN-GP), Hessian-vector products and ``create_graph=True`` work. The formulas use plain
torch ops, so they can be differentiated once more. The ReLU mask is piecewise constant:
no gradient flows into it. (torch calls ``setup_context`` with ``output`` by keyword, so that
parameter keeps its name where it is unused.)
"""

from __future__ import annotations

from typing import Any, cast

import torch

from .masks import relu_keep, unpack_mask


def linear_relu_backward_setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    grad_y, x, weight, mask, _output_mask = inputs
    ctx.save_for_backward(grad_y, x, weight, mask)


def linear_relu_backward_backward(
    ctx: Any, ggx: Any, ggw: Any, ggb: Any
) -> tuple[torch.Tensor | None, ...]:
    """Gradients of (grad_x, grad_w, grad_b) = linear_relu_backward(grad_y, x, w, mask).

    With gm = mask * grad_y: grad_x = gm @ w, grad_w = gm.T @ x, grad_b = gm.sum(rows).
    """
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


def relu_backward_backward(ctx: Any, gg: torch.Tensor) -> tuple[torch.Tensor, None]:
    """grad_x = grad_y where y > 0: linear in grad_y, locally constant in y."""
    (y,) = ctx.saved_tensors
    return cast(torch.Tensor, torch.ops.twolayer_ext.relu_backward.default(gg, y)), None


def two_layer_backward_setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    grad_out, x, w1, w2, hidden, _output_mask = inputs
    ctx.save_for_backward(grad_out, x, w1, w2, hidden)


def two_layer_backward_backward(
    ctx: Any, ggx: Any, ggw1: Any, ggb1: Any, ggw2: Any, ggb2: Any
) -> tuple[torch.Tensor | None, ...]:
    """Gradients of (grad_x, grad_w1, grad_b1, grad_w2, grad_b2) = two_layer_backward(g, x,
    w1, w2, h) with respect to g, x, w1, w2 and h.

    With k = relu_keep(h) (piecewise constant) and gm = k * (g @ w2): grad_w2 = gᵀ h,
    grad_b2 = sum(g), grad_x = gm @ w1, grad_w1 = gmᵀ x, grad_b1 = sum(gm). For incoming
    grads gg*, a = k * (ggx @ w1ᵀ + x @ ggw1ᵀ + ggb1) is d/d(g @ w2), and
    d/dg = a @ w2ᵀ + h @ ggw2ᵀ + ggb2, d/dw2 = gᵀ a, d/dx = gm @ ggw1, d/dw1 = gmᵀ ggx,
    d/dh = g @ ggw2. The term d/dh flows back through two_layer_forward's autograd node
    (hidden is its differentiable output) into x, w1 and b1.
    """
    g, x, w1, w2, h = ctx.saved_tensors
    out_f, hidden_f = w2.shape
    in_f = w1.shape[1]
    g2, h2, x2 = g.reshape(-1, out_f), h.reshape(-1, hidden_f), x.reshape(-1, in_f)
    keep = relu_keep(h2)
    need_g, need_x, need_w1, need_w2, need_h = ctx.needs_input_grad[:5]

    def masked(t: torch.Tensor) -> torch.Tensor:
        return torch.where(keep, t, torch.zeros_like(t))

    # d loss / d gm, where gm is the masked gradient of the hidden layer.
    d_gm = torch.zeros_like(h2)
    if ggx is not None:
        d_gm = d_gm + ggx.reshape(-1, in_f) @ w1.t()
    if ggw1 is not None:
        d_gm = d_gm + x2 @ ggw1.t()
    if ggb1 is not None:
        d_gm = d_gm + ggb1
    d_gh = masked(d_gm)  # d loss / d (g @ w2)
    gm = masked(g2 @ w2)

    d_g = d_x = d_w1 = d_w2 = d_h = None
    if need_g:
        d_g2 = d_gh @ w2.t()
        if ggw2 is not None:
            d_g2 = d_g2 + h2 @ ggw2.t()
        if ggb2 is not None:
            d_g2 = d_g2 + ggb2
        d_g = d_g2.reshape(g.shape)
    if need_x and ggw1 is not None:
        d_x = (gm @ ggw1).reshape(x.shape)
    if need_w1 and ggx is not None:
        d_w1 = gm.t() @ ggx.reshape(-1, in_f)
    if need_w2:
        d_w2 = g2.t() @ d_gh
    if need_h and ggw2 is not None:
        d_h = (g2 @ ggw2).reshape(h.shape)
    return d_g, d_x, d_w1, d_w2, d_h, None
