"""The packed ReLU mask that ``linear_relu`` returns and ``linear_relu_backward`` reads.

A uint8 tensor ``[rows, ceil(n / 8)]``: bit ``j % 8`` of byte ``j // 8`` is set where output
column ``j`` of that row passed the ReLU (``y > 0`` or ``y`` is NaN, torch's rule).
"""

from __future__ import annotations

import torch


def mask_bytes(out_features: int) -> int:
    """Bytes per row of the packed ReLU mask: eight output columns per byte."""
    return (out_features + 7) // 8


def relu_keep(y: torch.Tensor) -> torch.Tensor:
    """Where relu passes the gradient: ``y > 0`` or NaN (torch's threshold_backward)."""
    return ~(y <= 0)


def pack_mask(keep: torch.Tensor) -> torch.Tensor:
    """Pack a bool ``[rows, n]`` tensor to uint8 ``[rows, ceil(n/8)]``, bit j%8 of byte j//8."""
    rows, n = keep.shape
    nbytes = mask_bytes(n)
    # Out of place (pad, not a slice assignment), so that it runs under vmap.
    padded = torch.nn.functional.pad(keep.to(torch.uint8), (0, nbytes * 8 - n))
    weights = (2 ** torch.arange(8, device=keep.device)).to(torch.uint8)
    return (padded.view(rows, nbytes, 8) * weights).sum(-1, dtype=torch.uint8)


def unpack_mask(mask: torch.Tensor, n: int) -> torch.Tensor:
    """Inverse of :func:`pack_mask`: uint8 ``[rows, ceil(n/8)]`` to bool ``[rows, n]``."""
    bits = torch.arange(8, device=mask.device, dtype=torch.uint8)
    unpacked = (mask.unsqueeze(-1) >> bits) & 1
    return unpacked.reshape(mask.shape[0], mask.shape[1] * 8)[:, :n].bool()
