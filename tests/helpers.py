"""Input builders and shared checks for the op tests."""

from __future__ import annotations

import torch
from conftest import assert_close

from twolayer_ext import reference


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


def assert_requested_grads(got, want, output_mask, names, dtype) -> None:
    """A backward op's results: each requested grad close to the reference, the others None."""
    for wanted, g, r, name in zip(output_mask, got, want, names):
        if wanted:
            assert_close(g, r, dtype, f"grad_{name}")
        else:
            assert g is None, name


def _double(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.double()


def check_two_layer_ops(x, w1, b1, w2, b2, output_mask: list[bool], dtype) -> None:
    """two_layer_forward / two_layer_backward against the float64 reference.

    Layer 2 and the backward are checked on the op's own (rounded) hidden activation, so a
    16-bit hidden does not count against layer 2's tolerance. grad_out is fresh random data.
    """
    out, hidden = torch.ops.twolayer_ext.two_layer_forward(x, w1, b1, w2, b2)
    ref_hidden = reference.linear_relu(_double(x), _double(w1), _double(b1))
    assert_close(hidden, ref_hidden, dtype, "hidden")
    ref_out = torch.nn.functional.linear(hidden.double(), _double(w2), _double(b2))
    assert_close(out, ref_out, dtype, "out")

    grad_out = torch.randn_like(out)
    got = torch.ops.twolayer_ext.two_layer_backward(grad_out, x, w1, w2, hidden, output_mask)
    want = reference.two_layer_backward(
        grad_out.double(), x.double(), w1.double(), w2.double(), hidden.double(), output_mask
    )
    assert_requested_grads(got, want, output_mask, ["x", "w1", "b1", "w2", "b2"], dtype)
