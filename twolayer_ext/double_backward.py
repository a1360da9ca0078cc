"""Derivatives of the backward ops (double backward), registered in :mod:`.ops`.

The forward ops' gradients are C++ autograd kernels (``csrc/autograd/``); the backward
ops they call are differentiable again through the formulas here, so gradient penalties
(WGAN-GP), Hessian-vector products and ``create_graph=True`` work. The formulas use plain
torch ops, so they can be differentiated once more. The ReLU mask is piecewise constant:
no gradient flows into it. (torch calls ``setup_context`` with ``output`` by keyword, so that
parameter keeps its name where it is unused.)
"""

from __future__ import annotations

from typing import Any

import torch

from .masks import unpack_mask


def linear_relu_backward_setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
    grad_y, x, weight, mask, _output_mask = inputs
    ctx.save_for_backward(grad_y, x, weight, mask)


def linear_relu_backward_backward(ctx: Any, ggx: Any, ggw: Any, ggb: Any):
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


def relu_backward_backward(ctx: Any, gg: torch.Tensor):
    """grad_x = grad_y where y > 0: linear in grad_y, locally constant in y."""
    (y,) = ctx.saved_tensors
    return torch.ops.twolayer_ext.relu_backward.default(gg, y), None


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
