"""Input builders for the op tests."""

from __future__ import annotations

import torch


def make_x(shape, dtype, device, layout: str = "contiguous") -> torch.Tensor:
    """A random input of `shape` with the given memory layout.

    layouts: contiguous; sliced (every other column of a wider tensor);
    transposed (a .t()/.mT view of a contiguous tensor).
    """
    shape = tuple(shape)
    if layout == "contiguous":
        return torch.randn(shape, dtype=dtype, device=device)
    if layout == "sliced":
        wide = torch.randn(*shape[:-1], 2 * shape[-1] + 1, dtype=dtype, device=device)
        return wide[..., 1::2]
    if layout == "transposed":
        if len(shape) < 2:
            return torch.randn(shape, dtype=dtype, device=device)
        return torch.randn(*shape[:-2], shape[-1], shape[-2], dtype=dtype, device=device).mT
    raise ValueError(layout)


def make_weight(out_f, in_f, dtype, device, transposed: bool = False) -> torch.Tensor:
    """[out_f, in_f]; `transposed` gives W1.t() of a contiguous [in_f, out_f] (the seed's style)."""
    if transposed:
        return torch.randn(in_f, out_f, dtype=dtype, device=device).t()
    return torch.randn(out_f, in_f, dtype=dtype, device=device)
