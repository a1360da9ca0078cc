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


# (bias?, which of x, weight, bias require grad); without a bias at least x or weight must.
REQUIRES = [
    (bias, req)
    for bias in (True, False)
    for req in [
        (True, True, True),
        (True, False, False),
        (False, True, False),
        (False, False, True),
        (False, True, True),
    ]
    if bias or req[0] or req[1]
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bias,requires", REQUIRES, ids=str)
def test_linear_relu_gradcheck(device, bias, requires):
    x = torch.randn(2, 3, 5, dtype=torch.float64, device=device)
    w = torch.randn(4, 5, dtype=torch.float64, device=device)
    b = torch.randn(4, dtype=torch.float64, device=device) if bias else None
    _away_from_kink(x, w, b)
    inputs = [x, w, b]
    for t, r in zip(inputs, requires):
        if t is not None:
            t.requires_grad_(r)
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


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_linear_relu_gradgradcheck(device, bias):
    """Double backward (gradient penalties): second derivatives match finite differences."""
    x = torch.randn(3, 5, dtype=torch.float64, device=device)
    w = torch.randn(4, 5, dtype=torch.float64, device=device)
    b = torch.randn(4, dtype=torch.float64, device=device) if bias else None
    _away_from_kink(x, w, b)
    inputs = [t.requires_grad_() for t in (x, w, b) if t is not None]
    fn = twolayer_ext.linear_relu if bias else (lambda x, w: twolayer_ext.linear_relu(x, w))
    assert torch.autograd.gradgradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(
        lambda *a: torch.ops.twolayer_ext.linear_relu(*a, *([] if bias else [None]))[0], inputs
    )


@pytest.mark.parametrize("device", DEVICES)
def test_relu_gradgradcheck(device):
    x = torch.randn(6, 7, dtype=torch.float64, device=device)
    x[x.abs() < 1e-3] = 0.5
    x.requires_grad_()
    assert torch.autograd.gradgradcheck(twolayer_ext.relu, (x,))


def test_gradient_penalty_matches_torch():
    """A WGAN-GP style penalty, ||d out / d x||^2, differentiated w.r.t. the weights."""
    x = torch.randn(8, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True)
    v = torch.randn(5, dtype=torch.float64)

    def penalty(f):
        out = (f(x, w, b) * v).sum()
        (gx,) = torch.autograd.grad(out, x, create_graph=True)
        return torch.autograd.grad(gx.square().sum(), (w, b), allow_unused=True)

    got = penalty(twolayer_ext.linear_relu)
    want = penalty(lambda x, w, b: torch.relu(torch.nn.functional.linear(x, w, b)))
    for g, r in zip(got, want):
        r = torch.zeros_like(g) if r is None else r
        g = torch.zeros_like(r) if g is None else g
        assert torch.allclose(g, r, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_autograd_function_classes_gradcheck(device):
    """The public autograd.Function classes (the functional API calls the ops directly)."""
    kw = {"dtype": torch.float64, "device": device}
    x, w1, w2 = torch.randn(4, 5, **kw), torch.randn(3, 5, **kw), torch.randn(2, 3, **kw)
    b1, b2 = torch.randn(3, **kw), torch.randn(2, **kw)
    _away_from_kink(x, w1, b1)
    for t in (x, w1, w2, b1, b2):
        t.requires_grad_()
    fns = [
        (twolayer_ext.LinearReLUFunction.apply, (x, w1, b1)),
        (twolayer_ext.ReLUFunction.apply, (x,)),
        (twolayer_ext.TwoLayerMLPFunction.apply, (x, w1, b1, w2, b2)),
    ]
    for fn, args in fns:
        assert torch.autograd.gradcheck(fn, args)


def test_two_layer_double_backward_raises_clearly():
    """Not supported for the whole-network op: a clear error, never silently wrong grads."""
    net = twolayer_ext.TwoLayerNet(5, 4, 3).double()
    x = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    (gx,) = torch.autograd.grad(net(x).sum(), x, create_graph=True)
    with pytest.raises(
        RuntimeError, match="two_layer_backward .* does not support double backward"
    ):
        gx.square().sum().backward()
