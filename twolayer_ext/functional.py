"""Functional API, mirroring ``torch.nn.functional``.

These call the ``torch.ops.twolayer_ext`` ops directly. The ops' autograd kernels are
C++ (``csrc/autograd/``), so neither forward nor backward runs Python; the same
gradients are available as ``autograd.Function`` classes
(:class:`~twolayer_ext.LinearReLUFunction`, :class:`~twolayer_ext.ReLUFunction`,
:class:`~twolayer_ext.TwoLayerMLPFunction`).
"""

from __future__ import annotations

from typing import cast

import torch


def linear_relu(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """``relu(x @ weight.T + bias)``, fused, with nn.Linear's conventions.

    Args:
        x: input of shape ``[..., in_features]`` (any strides, any leading dims).
        weight: ``[out_features, in_features]``, as ``nn.Linear.weight``.
        bias: optional ``[out_features]``.

    Returns:
        Tensor of shape ``[..., out_features]`` with the dtype of ``x``; equal to
        ``torch.relu(torch.nn.functional.linear(x, weight, bias))``.
    """
    # The op is differentiable through its C++ autograd kernel (csrc/autograd/), which
    # costs a few microseconds where a Python autograd.Function costs tens; without a graph
    # it builds no ReLU mask.
    return cast(torch.Tensor, torch.ops.twolayer_ext.linear_relu_output.default(x, weight, bias))


def relu(x: torch.Tensor) -> torch.Tensor:
    """``torch.relu(x)`` on the extension's kernels (the tutorial's MyReLU)."""
    return cast(torch.Tensor, torch.ops.twolayer_ext.relu.default(x))


def two_layer_mlp(
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor | None,
    w2: torch.Tensor,
    b2: torch.Tensor | None = None,
) -> torch.Tensor:
    """``relu(x @ w1.T + b1) @ w2.T + b2`` (the tutorial's network) as one fused op each way.

    Weights in nn.Linear's layout: w1 ``[hidden, in]``, w2 ``[out, hidden]``. Where the
    layers are narrow (hidden and out ≤ 1024) and there are many rows, the CPU runs it
    block by block with the hidden activation in cache, and without writing it at all
    when no gradient is recorded (docs/ARCHITECTURE.md).
    """
    return cast(torch.Tensor, torch.ops.twolayer_ext.two_layer.default(x, w1, b1, w2, b2))


def two_layer_sgd_step(
    x: torch.Tensor,
    y: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor | None,
    w2: torch.Tensor,
    b2: torch.Tensor | None,
    lr: float,
    reduction: str = "sum",
) -> torch.Tensor:
    """One SGD training step of the two-layer network, fused into a single op call.

    Computes ``out = two_layer_mlp(x, w1, b1, w2, b2)`` and
    ``loss = F.mse_loss(out, y, reduction=reduction)``, then updates every given
    parameter in place, ``p -= lr * d loss / d p``. This is the step
    ``loss.backward(); torch.optim.SGD(params, lr).step()`` takes (no momentum, no weight
    decay), with the same products and roundings, but with no autograd graph and no
    ``.grad`` written.

    Args:
        x: input ``[..., in_features]``.
        y: target, the network's output shape ``[..., out_features]``.
        w1, b1, w2, b2: parameters in nn.Linear's layout (biases optional); updated in place.
        lr: learning rate.
        reduction: ``"sum"`` (the tutorial's loss) or ``"mean"``.

    Returns:
        The loss before the update (a 0-d tensor that does not require grad).

    Raises:
        RuntimeError: where a derivative through the step is asked for (``x`` or ``y``
            requires grad, forward-mode tangents, torch.func transforms): it has none; and
            in an ONNX export, which has no form for a training step.
    """
    # Under no_grad, as torch.optim steps run: nothing here is recorded, and
    # torch.compile traces the step as an inference graph.
    with torch.no_grad():
        loss = torch.ops.twolayer_ext.two_layer_sgd_step.default(
            x, y, w1, b1, w2, b2, lr, reduction
        )
    return cast(torch.Tensor, loss)
