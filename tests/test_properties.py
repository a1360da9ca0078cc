"""Property-based tests (hypothesis): forward and gradients equal the reference on
generated shapes, strides, dtypes, bias on/off and requires_grad patterns.

A default run tries a few hundred cases; TWOLAYER_FUZZ_EXAMPLES=5000 tries thousands.
"""

from __future__ import annotations

import os

import pytest
import torch
from conftest import HAS_CUDA, assert_close
from helpers import assert_requested_grads

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
