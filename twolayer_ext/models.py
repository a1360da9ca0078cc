"""The tutorial's two-layer network, built on the extension's fused layer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import cast

import torch
from torch import nn
from torch.nn.modules import module as _module

from .functional import two_layer_mlp, two_layer_sgd_step
from .nn import LinearReLU, _NotScriptable

# TwoLayerNet key -> key in the tutorial's nn.Sequential(Linear, ReLU, Linear).
_TO_SEQUENTIAL = {
    "fc1.weight": "0.weight",
    "fc1.bias": "0.bias",
    "fc2.weight": "2.weight",
    "fc2.bias": "2.bias",
}


def _has_hooks(m: nn.Module) -> bool:
    """Whether calling m would run a hook: its own forward, forward-pre or backward hooks
    (pruning's weight recomputation is a forward-pre hook), or a global module hook."""
    return bool(
        m._forward_hooks
        or m._forward_pre_hooks
        or m._backward_hooks
        or m._backward_pre_hooks
        or _module._global_forward_hooks
        or _module._global_forward_pre_hooks
        or _module._global_backward_hooks
        or _module._global_backward_pre_hooks
    )


def _weight_and_bias(m: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``m.weight`` and ``m.bias``, read from ``m._parameters`` where both are registered
    there: each lookup through Module.__getattr__ costs about 0.5 us, a few percent of the
    tutorial's fused step (docs/BENCHMARKS.md, "TwoLayerNet's Python overhead"). Anything
    else (a parametrized weight, a tensor assigned in a parameter's place) through the
    attributes, as nn.Linear reads them."""
    params = m._parameters
    if "weight" in params and "bias" in params:
        return cast(torch.Tensor, params["weight"]), params["bias"]
    return cast(torch.Tensor, m.weight), cast("torch.Tensor | None", m.bias)


class TwoLayerNet(_NotScriptable, nn.Module):
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
        """Both layers in one op each way (the whole-network op), unless a hook on ``fc1`` or
        ``fc2`` (or a global module hook) would see the difference: then ``fc1`` and ``fc2``
        run in turn, as in ``nn.Sequential``, so every hook fires as it does there. The check
        reads a few dicts (docs/BENCHMARKS.md, "TwoLayerNet's hook check")."""
        fc1, fc2 = cast(nn.Module, self._modules["fc1"]), cast(nn.Module, self._modules["fc2"])
        if _has_hooks(fc1) or _has_hooks(fc2):
            return cast(torch.Tensor, fc2(fc1(x)))
        return two_layer_mlp(x, *_weight_and_bias(fc1), *_weight_and_bias(fc2))

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
        can run between backward and the update (gradient clipping) and no hook fires (DDP's
        gradient all-reduce): under DDP or FSDP use ``loss.backward()`` and an optimizer, and
        with hooks on ``fc1``/``fc2`` (pruning included) it raises a ``ValueError``. It is not
        differentiable: ``x`` and ``y`` must not require grad, and forward-mode AD and
        torch.func transforms raise a ``RuntimeError``.
        See :func:`twolayer_ext.functional.two_layer_sgd_step`.
        """
        fc1, fc2 = cast(nn.Module, self._modules["fc1"]), cast(nn.Module, self._modules["fc2"])
        if _has_hooks(fc1) or _has_hooks(fc2):
            hooked = [name for name, m in (("fc1", fc1), ("fc2", fc2)) if _has_hooks(m)]
            raise ValueError(
                f"TwoLayerNet.sgd_step runs no module hooks, but {hooked} have hooks (pruning "
                "and hooks that capture or change activations among them); use "
                "loss.backward() and an optimizer instead"
            )
        if "parametrizations" in fc1._modules or "parametrizations" in fc2._modules:
            # Their weight is computed from the parameters registered in its place: the step
            # would update the computed tensor and leave those as they were.
            raise ValueError(
                "TwoLayerNet.sgd_step updates the layers' own weight and bias tensors, but "
                "fc1 or fc2 is parametrized (torch.nn.utils.parametrize); use "
                "loss.backward() and an optimizer instead"
            )
        (w1, b1), (w2, b2) = _weight_and_bias(fc1), _weight_and_bias(fc2)
        if not (
            w1.requires_grad
            and w2.requires_grad
            and (b1 is None or b1.requires_grad)
            and (b2 is None or b2.requires_grad)
        ):
            frozen = [name for name, p in self.named_parameters() if not p.requires_grad]
            raise ValueError(
                f"TwoLayerNet.sgd_step updates every parameter, but {frozen} do not require "
                "grad (frozen); use loss.backward() and an optimizer instead"
            )
        return two_layer_sgd_step(x, y, w1, b1, w2, b2, lr, reduction)

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
