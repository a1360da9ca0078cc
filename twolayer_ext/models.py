"""The tutorial's two-layer network, built on the extension's fused layer."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from .functional import two_layer_mlp, two_layer_sgd_step
from .nn import LinearReLU

# TwoLayerNet key -> key in the tutorial's nn.Sequential(Linear, ReLU, Linear).
_TO_SEQUENTIAL = {
    "fc1.weight": "0.weight",
    "fc1.bias": "0.bias",
    "fc2.weight": "2.weight",
    "fc2.bias": "2.bias",
}


class TwoLayerNet(nn.Module):
    """``relu(x W1ᵀ + b1) W2ᵀ + b2``: a fused :class:`LinearReLU` followed by a linear layer.

    Equivalent to the tutorial's ``nn.Sequential(nn.Linear(D_in, H), nn.ReLU(),
    nn.Linear(H, D_out))``, with the same parameter shapes and default init.
    Use :func:`sequential_state_dict_to_twolayer` / :func:`twolayer_state_dict_to_sequential`
    (or :meth:`from_sequential`) to move weights between the two.
    """

    def __init__(
        self,
        D_in: int,
        H: int,
        D_out: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.fc1 = LinearReLU(D_in, H, bias=bias, device=device, dtype=dtype)
        self.fc2 = nn.Linear(H, D_out, bias=bias, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Both layers in one op each way (two_layer_forward / two_layer_backward).
        return two_layer_mlp(x, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)

    def sgd_step(
        self, x: torch.Tensor, y: torch.Tensor, lr: float, reduction: str = "sum"
    ) -> torch.Tensor:
        """One whole training step in one op call; returns the loss before the update.

        The same update as::

            loss = F.mse_loss(self(x), y, reduction=reduction)
            loss.backward()
            torch.optim.SGD(self.parameters(), lr=lr).step()

        (bitwise on the CPU, every dtype), but without an autograd graph:
        ``.grad`` is neither read nor written. Every parameter is updated, so all of them
        must require grad (a frozen layer would be updated here but not by SGD). Nothing
        can run between backward and the update (gradient clipping) and no backward hook
        fires (DDP's gradient all-reduce): under DDP or FSDP use ``loss.backward()`` and an
        optimizer. It is not differentiable: ``x`` and ``y`` must not require grad, and
        forward-mode AD and torch.func transforms raise a ``RuntimeError``.
        See :func:`twolayer_ext.functional.two_layer_sgd_step`.
        """
        params = (self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias)
        if not all(p.requires_grad for p in params if p is not None):  # per-step cost: ~1 us
            frozen = [name for name, p in self.named_parameters() if not p.requires_grad]
            raise ValueError(
                f"TwoLayerNet.sgd_step updates every parameter, but {frozen} do not require "
                "grad (frozen); use loss.backward() and an optimizer instead"
            )
        return two_layer_sgd_step(x, y, *params, lr, reduction)

    @classmethod
    def from_sequential(cls, seq: nn.Sequential) -> TwoLayerNet:
        """A TwoLayerNet holding a copy of ``nn.Sequential(Linear, ReLU, Linear)``'s weights."""
        lin1, lin2 = seq[0], seq[2]
        if not (isinstance(lin1, nn.Linear) and isinstance(lin2, nn.Linear)):
            raise TypeError(
                "TwoLayerNet.from_sequential expects nn.Sequential(Linear, ReLU, Linear), got "
                f"{type(lin1).__name__} and {type(lin2).__name__} at positions 0 and 2"
            )
        net = cls(
            lin1.in_features,
            lin1.out_features,
            lin2.out_features,
            bias=lin1.bias is not None,
            device=lin1.weight.device,
            dtype=lin1.weight.dtype,
        )
        net.load_state_dict(sequential_state_dict_to_twolayer(seq.state_dict()))
        return net


def twolayer_state_dict_to_sequential(
    state: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Rename TwoLayerNet keys (``fc1.*``, ``fc2.*``) to the tutorial's ``nn.Sequential`` keys."""
    return {_TO_SEQUENTIAL.get(k, k): v for k, v in state.items()}


def sequential_state_dict_to_twolayer(
    state: Mapping[str, torch.Tensor],
) -> dict[str, torch.Tensor]:
    """Rename ``nn.Sequential(Linear, ReLU, Linear)`` keys (``0.*``, ``2.*``) to TwoLayerNet's."""
    back = {v: k for k, v in _TO_SEQUENTIAL.items()}
    return {back.get(k, k): v for k, v in state.items()}
