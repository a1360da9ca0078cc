"""linear_relu forward and backward against the pure-torch reference."""

from __future__ import annotations

import pytest
import torch
from conftest import DEVICE_DTYPES, DEVICES, assert_close
from helpers import assert_requested_grads, make_weight, make_x

import twolayer_ext
from twolayer_ext import reference

# (leading shape of x, in_features, out_features)
SHAPES = [
    ((0,), 5, 3),
    ((1,), 7, 4),
    ((5,), 1, 3),
    ((6,), 9, 1),
    ((33,), 65, 17),
    ((64,), 1000, 100),  # the seed's first layer
    ((64,), 100, 10),  # the seed's second layer
    ((2, 3), 11, 6),  # 3-D input
    ((), 12, 5),  # 1-D input, as nn.Linear accepts
    ((3, 0), 4, 9),  # zero-size batch inside a 3-D input
    ((70,), 130, 72),  # crosses a 64-wide CUDA tile in every dimension
]
LAYOUTS = ["contiguous", "sliced", "transposed"]


def _ids(s):
    return f"{'x'.join(map(str, s[0])) or 'vec'}-{s[1]}-{s[2]}"


def _inputs(lead, in_f, out_f, dtype, device, layout, w_t, bias):
    x = make_x((*lead, in_f), dtype, device, layout)
    w = make_weight(out_f, in_f, dtype, device, transposed=w_t)
    b = torch.randn(out_f, dtype=dtype, device=device) if bias else None
    return x, w, b


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("w_t", [False, True], ids=["w", "wT"])
def test_forward_and_backward_ops_match_reference(device, dtype, shape, bias, layout, w_t):
    lead, in_f, out_f = shape
    x, w, b = _inputs(lead, in_f, out_f, dtype, device, layout, w_t, bias)
    originals = [t.clone() for t in (x, w, b) if t is not None]

    y, mask = torch.ops.twolayer_ext.linear_relu(x, w, b)
    ref64 = reference.linear_relu(x.double(), w.double(), None if b is None else b.double())
    assert y.dtype == dtype and y.device == x.device
    assert_close(y, ref64, dtype, "y")
    # The saved mask is exactly the ReLU decision of the returned output.
    assert torch.equal(mask.cpu(), reference.pack_mask(~(y <= 0).reshape(-1, out_f)).cpu())

    grad_y = make_x(y.shape, dtype, device, layout)
    gx, gw, gb = torch.ops.twolayer_ext.linear_relu_backward(grad_y, x, w, mask, [True, True, bias])
    rx, rw, rb = reference.linear_relu_backward(
        grad_y.double(), x.double(), w.double(), mask, [True, True, bias]
    )
    assert gx.dtype == dtype and gw.dtype == dtype
    assert_close(gx, rx, dtype, "grad_x")
    assert_close(gw, rw, dtype, "grad_weight")
    if bias:
        assert_close(gb, rb, dtype, "grad_bias")
    else:
        assert gb is None
    # Inputs are never modified.
    for before, after in zip(originals, [t for t in (x, w, b) if t is not None]):
        assert torch.equal(before, after)


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize(
    "output_mask",
    [(True, False, False), (False, True, False), (False, False, True), (False, False, False)],
)
def test_backward_computes_only_requested(device, dtype, output_mask):
    x, w, b = _inputs((9,), 13, 10, dtype, device, "contiguous", False, True)
    y, mask = torch.ops.twolayer_ext.linear_relu(x, w, b)
    grad_y = torch.randn_like(y)
    got = torch.ops.twolayer_ext.linear_relu_backward(grad_y, x, w, mask, list(output_mask))
    ref = reference.linear_relu_backward(grad_y.double(), x.double(), w.double(), mask, output_mask)
    assert_requested_grads(got, ref, output_mask, ["x", "weight", "bias"], dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_autograd_matches_torch_float64(device, bias):
    """End to end through autograd, against torch's own relu(linear) and its gradients."""
    x, w, b = _inputs((4, 16), 40, 24, torch.float64, device, "sliced", True, bias)
    params = [t.requires_grad_() for t in (x, w, b) if t is not None]
    y = twolayer_ext.linear_relu(x, w, b)
    y_ref = reference.linear_relu(x, w, b)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, params, g)
    want = torch.autograd.grad(y_ref, params, g)
    assert_close(y, y_ref, torch.float64, "y")
    for a, e in zip(got, want):
        assert_close(a, e, torch.float64, "grad")


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_expanded_grad_from_sum(device, dtype):
    """loss.sum().backward() hands backward a stride-0 grad_y; it must be read correctly."""
    x, w, b = _inputs((8,), 12, 7, dtype, device, "contiguous", False, True)
    x.requires_grad_()
    y = twolayer_ext.linear_relu(x, w, b)
    (gx,) = torch.autograd.grad(y.sum(), x)
    keep = ~(y.detach() <= 0)
    assert_close(gx, keep.double() @ w.double(), dtype, "grad_x")


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_nan_and_inf_propagate_like_torch(device, dtype):
    x, w, b = _inputs((6,), 8, 5, dtype, device, "contiguous", False, True)
    x[0, 0] = float("nan")
    x[1, 2] = float("inf")
    x[2, 3] = -float("inf")
    y, mask = torch.ops.twolayer_ext.linear_relu(x, w, b)
    ref = reference.linear_relu(x.double(), w.double(), b.double())
    assert_close(y, ref, dtype, "y")  # NaN positions must match exactly
    grad_y = torch.randn_like(y)
    gx, gw, gb = torch.ops.twolayer_ext.linear_relu_backward(grad_y, x, w, mask, [True, True, True])
    rx, rw, rb = reference.linear_relu_backward(
        grad_y.double(), x.double(), w.double(), mask, [True, True, True]
    )
    assert_close(gx, rx, dtype, "grad_x")
    assert_close(gb, rb, dtype, "grad_bias")
    assert torch.equal(gw.isnan().cpu(), rw.isnan().cpu())


@pytest.mark.parametrize("device", DEVICES)
def test_relu_at_exact_zero_has_zero_gradient(device):
    """relu'(0) = 0: an output of exactly 0 blocks the gradient, as in torch."""
    x = torch.zeros(3, 4, device=device, requires_grad=True)
    w = torch.randn(5, 4, device=device, requires_grad=True)
    y = twolayer_ext.linear_relu(x, w)
    (gx, gw) = torch.autograd.grad(y, (x, w), torch.randn_like(y))
    assert torch.equal(y, torch.zeros_like(y))
    assert torch.equal(gx, torch.zeros_like(gx)) and torch.equal(gw, torch.zeros_like(gw))


def test_modifying_saved_input_in_place_raises():
    x = torch.randn(4, 6, requires_grad=True)
    w = torch.randn(3, 6, requires_grad=True)
    h = x * 1.0
    y = twolayer_ext.linear_relu(h, w)
    h.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_masked_out_nan_and_inf_gradients_become_zero(device, dtype):
    """Where the ReLU dropped an output, even a NaN/Inf incoming gradient contributes 0
    (torch's threshold_backward selects, it does not multiply). 19 outputs: two full
    groups of eight (the CPU's vectorised float path) and a tail."""
    x, w, b = _inputs((6,), 11, 19, dtype, device, "contiguous", False, True)
    y, mask = torch.ops.twolayer_ext.linear_relu(x, w, b)
    grad_y = torch.randn_like(y)
    dropped = (y == 0).nonzero()
    kept = (y != 0).nonzero()
    assert len(dropped) >= 3 and len(kept) >= 3, "random inputs gave a degenerate ReLU pattern"
    for (i, j), v in zip(dropped[:3].tolist(), [float("nan"), float("inf"), -float("inf")]):
        grad_y[i, j] = v
    i, j = kept[0].tolist()
    grad_y[i, j] = float("nan")  # a kept NaN gradient propagates
    got = torch.ops.twolayer_ext.linear_relu_backward(grad_y, x, w, mask, [True, True, True])
    want = reference.linear_relu_backward(
        grad_y.double(), x.double(), w.double(), mask, [True, True, True]
    )
    for g, r, name in zip(got, want, ["grad_x", "grad_weight", "grad_bias"]):
        assert torch.equal(g.isnan().cpu(), r.isnan().cpu()), name
        assert_close(g, r, dtype, name)
