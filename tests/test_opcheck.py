"""torch.library.opcheck: schemas, fake kernels and autograd registrations agree with the kernels."""

from __future__ import annotations

import pytest
import torch
from conftest import DEVICES


def _samples(device):
    for lead, in_f, out_f, bias in [((4,), 6, 3, True), ((2, 3), 5, 9, False), ((0,), 3, 2, True)]:
        for rg in (False, True):
            x = torch.randn(*lead, in_f, device=device, requires_grad=rg)
            w = torch.randn(out_f, in_f, device=device, requires_grad=rg)
            b = torch.randn(out_f, device=device, requires_grad=rg) if bias else None
            yield x, w, b


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_linear_relu(device):
    for x, w, b in _samples(device):
        torch.library.opcheck(torch.ops.twolayer_ext.linear_relu.default, (x, w, b))
        with torch.no_grad():
            y, mask = torch.ops.twolayer_ext.linear_relu(x, w, b)
        for om in ([True, True, True], [False, True, False], [True, False, b is not None]):
            torch.library.opcheck(
                torch.ops.twolayer_ext.linear_relu_backward.default,
                (torch.randn_like(y), x.detach(), w.detach(), mask, om),
            )


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_relu(device):
    for rg in (False, True):
        x = torch.randn(5, 7, device=device, requires_grad=rg)
        torch.library.opcheck(torch.ops.twolayer_ext.relu.default, (x,))
        y = torch.relu(x.detach())
        torch.library.opcheck(
            torch.ops.twolayer_ext.relu_backward.default, (torch.randn_like(y), y)
        )
