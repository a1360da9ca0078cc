"""Functional API, mirroring ``torch.nn.functional``.

These call the ``torch.ops.twolayer_ext`` ops directly. The ops' autograd kernels are
C++ (``csrc/autograd/``), so neither forward nor backward runs Python; the same
gradients are available as ``autograd.Function`` classes
(:class:`~twolayer_ext.LinearReLUFunction`, :class:`~twolayer_ext.ReLUFunction`,
:class:`~twolayer_ext.TwoLayerMLPFunction`).
"""

from __future__ import annotations

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
    # costs a few microseconds where a Python autograd.Function costs tens.
    return torch.ops.twolayer_ext.linear_relu.default(x, weight, bias)[0]


def relu(x: torch.Tensor) -> torch.Tensor:
    """``torch.relu(x)`` on the extension's kernels (the tutorial's MyReLU)."""
    return torch.ops.twolayer_ext.relu.default(x)


def two_layer_mlp(
    x: torch.Tensor,
    w1: torch.Tensor,
    b1: torch.Tensor | None,
    w2: torch.Tensor,
    b2: torch.Tensor | None = None,
) -> torch.Tensor:
    """``relu(x @ w1.T + b1) @ w2.T + b2`` (the tutorial's network) as one fused op each way.

    Weights in nn.Linear's layout: w1 ``[hidden, in]``, w2 ``[out, hidden]``.
    """
    return torch.ops.twolayer_ext.two_layer_forward.default(x, w1, b1, w2, b2)[0]
