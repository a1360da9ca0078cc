"""Functional API, mirroring ``torch.nn.functional``."""

from __future__ import annotations

import torch

from .autograd import LinearReLUFunction, ReLUFunction, TwoLayerMLPFunction


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
    return LinearReLUFunction.apply(x, weight, bias)[0]


def relu(x: torch.Tensor) -> torch.Tensor:
    """``torch.relu(x)`` on the extension's kernels (the tutorial's MyReLU)."""
    return ReLUFunction.apply(x)


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
    return TwoLayerMLPFunction.apply(x, w1, b1, w2, b2)[0]
