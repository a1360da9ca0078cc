"""``torch.autograd.Function`` wrappers around the custom ops.

Both Functions use the "separate setup_context" style, so the very same
``setup_context``/``backward`` also serve as the ops' registered autograd
formulas (see ops.py): one formula, two entry points.
"""

from __future__ import annotations

from typing import Any

import torch


class LinearReLUFunction(torch.autograd.Function):
    """y = relu(x @ weight.T + bias) with a fused forward and backward.

    ``apply(x, weight, bias)`` returns ``(y, mask)``: ``mask`` is the packed
    ReLU mask (uint8, eight outputs per byte) that backward uses; it is not
    differentiable. Saved for backward: x, weight and the bit mask (1/8 byte per
    output element) instead of the relu output that torch saves.
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
        ctx.save_for_backward(x, weight, mask)
        ctx.has_bias = bias is not None

    @staticmethod
    def backward(ctx: Any, grad_y: torch.Tensor, _grad_mask: Any = None):
        x, weight, mask = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        return torch.ops.twolayer_ext.linear_relu_backward.default(
            grad_y, x, weight, mask, [need_x, need_w, need_b and ctx.has_bias]
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
        return torch.ops.twolayer_ext.relu_backward.default(grad_y, y)
