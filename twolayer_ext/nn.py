"""nn modules built on the extension's ops."""

from __future__ import annotations

import math
from typing import ClassVar, NoReturn, cast

import torch
from torch import nn

from . import functional as F


class _NotScriptable:
    """Refuses ``torch.jit.script`` with an error that names what works instead.

    The modules' forward calls the extension's ops from Python (TwoLayerNet also reads its
    submodules' hooks), which TorchScript cannot compile: it failed on the first annotation
    with "Unknown type annotation: 'nn.Parameter'". torch 2.x deprecates TorchScript;
    ``torch.jit.trace`` records the ops and works (tests/test_modules.py).
    """

    def __prepare_scriptable__(self) -> NoReturn:
        raise RuntimeError(
            f"torch.jit.script cannot compile twolayer_ext's {type(self).__name__}: its "
            "forward calls the extension's ops from Python. torch.compile and torch.export "
            "are the routes torch 2.x supports in place of the deprecated TorchScript; "
            "torch.jit.trace (deprecated too) records the ops (import twolayer_ext before "
            "torch.jit.load)."
        )


class LinearReLU(_NotScriptable, nn.Module):
    """``nn.Sequential(nn.Linear(in, out, bias), nn.ReLU())`` as one fused layer.

    Parameters are named and shaped as in :class:`torch.nn.Linear` (``weight``
    ``[out_features, in_features]``, ``bias`` ``[out_features]``) and use its
    default initialisation, so state_dicts load both ways between the two.
    """

    __constants__: ClassVar[list[str]] = ["in_features", "out_features"]
    in_features: int
    out_features: int
    weight: nn.Parameter
    bias: nn.Parameter | None

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(
            torch.empty((out_features, in_features), device=device, dtype=dtype)
        )
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Linear's initialisation: kaiming-uniform weight, uniform bias."""
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_features
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            nn.init.uniform_(self.bias, -bound, bound)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> LinearReLU:
        """A LinearReLU that shares ``linear``'s parameter tensors."""
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.in_features = linear.in_features
        layer.out_features = linear.out_features
        # nn.Linear annotates its parameters as Tensor; they are Parameters.
        layer.weight = cast(nn.Parameter, linear.weight)
        layer.bias = cast("nn.Parameter | None", linear.bias)
        return layer

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.linear_relu(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


class ReLU(_NotScriptable, nn.Module):
    """``nn.ReLU()`` on the extension's kernels (out of place)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.relu(input)
