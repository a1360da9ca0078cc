"""relu / ReLUFunction (the tutorial's MyReLU) against torch.relu."""

from __future__ import annotations

import pytest
import torch
from conftest import DEVICE_DTYPES, DEVICES, assert_close
from helpers import make_x

import twolayer_ext
from twolayer_ext import reference


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (64, 100), (3, 5, 7)], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "sliced", "transposed"])
def test_relu_forward_backward(device, dtype, shape, layout):
    x = make_x(shape, dtype, device, layout)
    # NaN must propagate and relu'(0) = 0 (also for -0.0); write them through the view.
    for i, v in enumerate([float("nan"), 0.0, -0.0][: x.numel()]):
        x[tuple(int(j) for j in torch.unravel_index(torch.tensor(i), x.shape))] = v
    x_before = x.clone()
    y = torch.ops.twolayer_ext.relu(x)
    assert_close(y, reference.relu(x.double()), dtype, "y")
    g = make_x(shape, dtype, device, layout)
    gx = torch.ops.twolayer_ext.relu_backward(g, y)
    assert_close(gx, reference.relu_backward(g.double(), y.double()), dtype, "grad_x")
    assert torch.equal(x.nan_to_num(1.5), x_before.nan_to_num(1.5))


@pytest.mark.parametrize("device", DEVICES)
def test_relu_function_autograd_matches_torch(device):
    x = torch.randn(10, 20, dtype=torch.float64, device=device, requires_grad=True)
    y = twolayer_ext.relu(x)
    g = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, g)
    (gr,) = torch.autograd.grad(torch.relu(x), x, g)
    assert torch.equal(y, torch.relu(x))
    assert torch.equal(gx, gr)


def test_relu_module():
    m = twolayer_ext.ReLU()
    x = torch.randn(4, 5)
    assert torch.equal(m(x), torch.relu(x))
