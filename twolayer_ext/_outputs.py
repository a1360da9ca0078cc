"""The "output alone" variant of an op that also returns what backward keeps.

``linear_relu_output`` is ``linear_relu``'s first output and ``two_layer`` is
``two_layer_forward``'s: the same arguments and checks. Their fake kernels and references are
made with :func:`first_output` rather than by writing each signature again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec

import torch

P = ParamSpec("P")


def first_output(
    fn: Callable[P, tuple[torch.Tensor, ...]], doc: str | None = None
) -> Callable[P, torch.Tensor]:
    """``fn``'s first output alone, with ``fn``'s parameters (and docstring ``doc``)."""

    def output(*args: P.args, **kwargs: P.kwargs) -> torch.Tensor:
        return fn(*args, **kwargs)[0]

    output.__doc__ = doc
    return output
