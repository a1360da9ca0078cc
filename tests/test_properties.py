"""Property-based tests (hypothesis): forward and gradients equal the reference on
generated shapes, strides, dtypes, bias on/off and requires_grad patterns.

A default run tries a few hundred cases; TWOLAYER_FUZZ_EXAMPLES=5000 tries thousands.
"""

from __future__ import annotations

import os

import pytest
import torch
from helpers import HAS_CUDA, assert_close, assert_requested_grads

import twolayer_ext
from twolayer_ext import reference

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

EXAMPLES = int(os.environ.get("TWOLAYER_FUZZ_EXAMPLES", "150"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
DEVICES = ["cpu", "cuda"] if HAS_CUDA else ["cpu"]
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]


def _layout(draw, shape, dtype, device, kind):
    """A tensor of `shape` with the drawn memory layout (values random)."""
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))

    def rnd(*s):
        return torch.randn(tuple(s), generator=gen, dtype=torch.float64).to(
            dtype=dtype, device=device
        )

    if kind == "contiguous" or len(shape) == 0:
        return rnd(*shape)
    if kind == "sliced":
        wide = rnd(*shape[:-1], 2 * shape[-1] + 1)
        return wide[..., 1::2]
    if kind == "transposed" and len(shape) >= 2:
        return rnd(*shape[:-2], shape[-1], shape[-2]).transpose(-1, -2)
    if kind == "expanded" and len(shape) >= 2:  # broadcast view: stride 0 along dim 0
        return rnd(1, *shape[1:]).expand(shape)
    return rnd(*shape)


@st.composite
def linear_case(draw):
    device = draw(st.sampled_from(DEVICES))
    dtype = draw(st.sampled_from(DTYPES))
    lead = tuple(draw(st.lists(st.integers(0, 40), min_size=1, max_size=3)))
    in_f = draw(st.integers(1, 300))
    out_f = draw(st.integers(1, 300))
    kinds = st.sampled_from(["contiguous", "sliced", "transposed", "expanded"])
    x = _layout(draw, (*lead, in_f), dtype, device, draw(kinds))
    w = _layout(draw, (out_f, in_f), dtype, device, draw(kinds)) / in_f**0.5
    b = _layout(draw, (out_f,), dtype, device, "contiguous") if draw(st.booleans()) else None
    need = draw(st.tuples(st.booleans(), st.booleans(), st.booleans()))
    return x, w, b, need


@SETTINGS
@given(linear_case())
def test_linear_relu_matches_reference(case):
    x, w, b, need = case
    dtype = x.dtype
    y, mask = torch.ops.twolayer_ext.linear_relu(x, w, b)
    ref = reference.linear_relu(x.double(), w.double(), None if b is None else b.double())
    assert_close(y, ref, dtype, "y")
    out_f = w.shape[0]
    assert torch.equal(mask.cpu(), reference.pack_mask(~(y <= 0).reshape(-1, out_f)).cpu())
    gen = torch.Generator().manual_seed(0)
    g = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(dtype=dtype, device=y.device)
    om = [need[0], need[1], need[2] and b is not None]
    got = torch.ops.twolayer_ext.linear_relu_backward(g, x, w, mask, om)
    want = reference.linear_relu_backward(g.double(), x.double(), w.double(), mask, om)
    assert_requested_grads(got, want, om, ["x", "weight", "bias"], dtype)


@SETTINGS
@given(
    st.sampled_from(DEVICES),
    st.sampled_from(DTYPES),
    st.lists(st.integers(0, 50), min_size=0, max_size=3),
    st.sampled_from(["contiguous", "sliced", "transposed", "expanded"]),
    st.data(),
)
def test_relu_matches_reference(device, dtype, shape, kind, data):
    x = _layout(data.draw, tuple(shape), dtype, device, kind)
    y = torch.ops.twolayer_ext.relu(x)
    assert_close(y, torch.relu(x.double()), dtype, "y")
    g = _layout(data.draw, tuple(shape), dtype, device, "contiguous")
    gx = torch.ops.twolayer_ext.relu_backward(g, y)
    assert_close(gx, reference.relu_backward(g.double(), y.double()), dtype, "grad_x")


@st.composite
def step_case(draw):
    """Sizes, layouts and a seed for one training step; build() makes fresh equal copies."""
    device = draw(st.sampled_from(DEVICES))
    dtype = draw(st.sampled_from(DTYPES))
    lead = tuple(draw(st.lists(st.integers(0, 40), min_size=0, max_size=2)))
    d_in, hidden, d_out = (draw(st.integers(1, n)) for n in (200, 120, 30))
    kinds = st.sampled_from(["contiguous", "sliced", "transposed"])
    x_kind, w1_kind, w2_kind = draw(kinds), draw(kinds), draw(kinds)
    bias = draw(st.booleans())
    reduction = draw(st.sampled_from(["sum", "mean"]))
    seed = draw(st.integers(0, 2**31 - 1))

    def build():
        # Re-seeded per call: the same values and the same strides every time.
        seeds = iter(range(seed, seed + 8))
        again = lambda _strategy: next(seeds)  # _layout draws its seed through this
        x = _layout(again, (*lead, d_in), dtype, device, x_kind)
        y = _layout(again, (*lead, d_out), dtype, device, "contiguous")
        w1 = _layout(again, (hidden, d_in), dtype, device, w1_kind) / d_in**0.5
        w2 = _layout(again, (d_out, hidden), dtype, device, w2_kind) / hidden**0.5
        b1 = _layout(again, (hidden,), dtype, device, "contiguous") if bias else None
        b2 = _layout(again, (d_out,), dtype, device, "contiguous") if bias else None
        return x, y, w1, b1, w2, b2

    build.__name__ = build.__qualname__ = (  # what hypothesis prints for a failing case
        f"build(device={device}, dtype={dtype}, lead={lead}, sizes={(d_in, hidden, d_out)}, "
        f"layouts={(x_kind, w1_kind, w2_kind)}, bias={bias}, seed={seed})"
    )
    return build, reduction


@SETTINGS
@given(step_case())
def test_sgd_step_matches_the_autograd_step(case):
    """two_layer_sgd_step == forward, mse_loss, loss.backward(), p -= lr * p.grad."""
    build, reduction = case
    x, y, *params = build()
    lr = 0.01 / max(1, y.numel()) if reduction == "sum" else 0.01
    loss = torch.ops.twolayer_ext.two_layer_sgd_step(x, y, *params, lr, reduction)

    x, y, *twin = build()
    leaves = [None if p is None else p.requires_grad_() for p in twin]
    out = twolayer_ext.two_layer_mlp(x, *leaves)  # the op TwoLayerNet calls
    want = torch.nn.functional.mse_loss(out, y, reduction=reduction)
    want.backward()
    with torch.no_grad():
        for p in leaves:
            if p is not None:
                p.add_(p.grad, alpha=-lr)
    exact = x.device.type == "cpu"  # the same kernels; CUDA: within the dtype's tolerance
    for name, a, b in zip(["w1", "b1", "w2", "b2"], params, leaves):
        if a is None:
            continue
        if exact:
            torch.testing.assert_close(a, b.detach(), rtol=0, atol=0, equal_nan=True, msg=name)
        else:
            assert_close(a, b, a.dtype, name)
    torch.testing.assert_close(
        loss, want.detach(), rtol=0 if exact else 1e-2, atol=0, equal_nan=True
    )
