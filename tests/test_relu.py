"""relu / relu_backward / ReLUFunction (the tutorial's MyReLU): everything about the op.

Values against torch.relu, gradcheck and double backward, opcheck, autocast, bad input.
"""

from __future__ import annotations

import pytest
import torch
from helpers import DEVICE_DTYPES, DEVICES, ERR, assert_close, f32, make_x

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


def _float64_input_off_the_kink(device, *shape):
    """Finite differences are meaningless at 0, where relu bends: no element near it."""
    x = torch.randn(*shape, dtype=torch.float64, device=device)
    x[x.abs() < 1e-3] = 0.5
    return x.requires_grad_()


@pytest.mark.parametrize("device", DEVICES)
def test_relu_gradcheck(device):
    x = _float64_input_off_the_kink(device, 6, 7)
    assert torch.autograd.gradcheck(twolayer_ext.relu, (x,))
    assert torch.autograd.gradcheck(torch.ops.twolayer_ext.relu, (x,))


@pytest.mark.parametrize("device", DEVICES)
def test_relu_gradgradcheck(device):
    x = _float64_input_off_the_kink(device, 6, 7)
    assert torch.autograd.gradgradcheck(twolayer_ext.relu, (x,))


@pytest.mark.parametrize("device", DEVICES)
def test_relu_function_gradcheck(device):
    """ReLUFunction.apply, the tutorial's MyReLU on the extension, under gradcheck."""
    x = _float64_input_off_the_kink(device, 4, 5)
    assert torch.autograd.gradcheck(twolayer_ext.ReLUFunction.apply, (x,))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_relu(device):
    for rg in (False, True):
        x = torch.randn(5, 7, device=device, requires_grad=rg)
        torch.library.opcheck(torch.ops.twolayer_ext.relu.default, (x,))
        y = torch.relu(x.detach())
        torch.library.opcheck(
            torch.ops.twolayer_ext.relu_backward.default, (torch.randn_like(y), y)
        )


def test_relu_rejects_integers():
    with pytest.raises(ERR, match="x has unsupported dtype Long"):
        twolayer_ext.relu(torch.ones(3, dtype=torch.int64))


def test_relu_backward_rejects_shape_mismatch():
    with pytest.raises(ERR, match=r"grad_y must have the shape of y \[3, 4\], but got \[4, 3\]"):
        torch.ops.twolayer_ext.relu_backward(f32(4, 3), f32(3, 4))


def test_relu_keeps_input_dtype_under_autocast():
    x = torch.randn(5, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert twolayer_ext.relu(x).dtype == torch.float32 == torch.relu(x).dtype
