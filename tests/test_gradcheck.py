"""torch.autograd.gradcheck in float64 for every differentiable op."""

from __future__ import annotations

import pytest
import torch
from conftest import DEVICES

import twolayer_ext


def _away_from_kink(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> None:
    """Finite differences are meaningless where an output sits on the ReLU kink: nudge b."""
    if b is None:
        return
    with torch.no_grad():
        h = torch.nn.functional.linear(x, w, b)
        close = h.reshape(-1, h.shape[-1]).abs().min(0).values < 1e-3
        b[close] += 0.01


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize(
    "requires",
    [
        (True, True, True),
        (True, False, False),
        (False, True, False),
        (False, False, True),
        (False, True, True),
    ],
    ids=str,
)
def test_linear_relu_gradcheck(device, bias, requires):
    x = torch.randn(2, 3, 5, dtype=torch.float64, device=device)
    w = torch.randn(4, 5, dtype=torch.float64, device=device)
    b = torch.randn(4, dtype=torch.float64, device=device) if bias else None
    _away_from_kink(x, w, b)
    inputs = [x, w, b]
    for t, r in zip(inputs, requires):
        if t is not None:
            t.requires_grad_(r)
    if not any(t is not None and t.requires_grad for t in inputs):
        pytest.skip("no input requires grad")
    assert torch.autograd.gradcheck(twolayer_ext.linear_relu, inputs)
    # The op called directly through torch.ops is differentiable as well.
    assert torch.autograd.gradcheck(lambda *a: torch.ops.twolayer_ext.linear_relu(*a)[0], inputs)


@pytest.mark.parametrize("device", DEVICES)
def test_relu_gradcheck(device):
    x = torch.randn(6, 7, dtype=torch.float64, device=device)
    x[x.abs() < 1e-3] = 0.5
    x.requires_grad_()
    assert torch.autograd.gradcheck(twolayer_ext.relu, (x,))
    assert torch.autograd.gradcheck(torch.ops.twolayer_ext.relu, (x,))
