"""Autocast: the fused layer follows nn.Linear's autocast behaviour."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import HAS_CUDA, assert_close
from torch import nn

import twolayer_ext

CASES = [pytest.param("cpu", torch.bfloat16, id="cpu-bf16")] + [
    pytest.param(
        "cuda",
        dt,
        id=f"cuda-{str(dt)[6:]}",
        marks=pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU"),
    )
    for dt in (torch.float16, torch.bfloat16)
]


@pytest.mark.parametrize("device,dtype", CASES)
@pytest.mark.parametrize("entry", ["module", "function", "op"])
def test_autocast_runs_in_autocast_dtype(device, dtype, entry):
    lin = nn.Linear(40, 24, device=device)
    layer = twolayer_ext.LinearReLU.from_linear(lin)
    x = torch.randn(16, 40, device=device, requires_grad=True)
    with torch.autocast(device, dtype=dtype):
        if entry == "module":
            y = layer(x)
        elif entry == "function":
            y = twolayer_ext.LinearReLUFunction.apply(x, layer.weight, layer.bias)
        else:
            y = torch.ops.twolayer_ext.linear_relu(x, layer.weight, layer.bias)[0]
        y_ref = torch.relu(lin(x))
    assert y.dtype == dtype == y_ref.dtype
    assert_close(y, y_ref, dtype, "y")

    g = torch.randn_like(y)
    got = torch.autograd.grad(y, (x, lin.weight, lin.bias), g)
    want = torch.autograd.grad(y_ref, (x, lin.weight, lin.bias), g)
    for a, e, name in zip(got, want, ["x", "weight", "bias"]):
        assert a.dtype == torch.float32, f"grad_{name} must come back in the parameter dtype"
        assert_close(a, e, dtype, f"grad_{name}")


def test_relu_keeps_input_dtype_under_autocast():
    x = torch.randn(5, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert twolayer_ext.relu(x).dtype == torch.float32 == torch.relu(x).dtype


@pytest.mark.parametrize("device,dtype", CASES)
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("bias", [True, False])
def test_sgd_step_under_autocast_is_the_autocast_autograd_step(device, dtype, reduction, bias):
    """Mixed precision: float32 parameters updated in float32 from the autocast-dtype
    network, as TwoLayerNet + loss.backward() + SGD under autocast (bitwise on the CPU)."""
    net = twolayer_ext.TwoLayerNet(37, 19, 6, bias=bias).to(device)
    with torch.no_grad():  # a transposed weight too (the seed's W2.t() style)
        net.fc2.weight = nn.Parameter(net.fc2.weight.t().contiguous().t())
    twin = copy.deepcopy(net)
    x, y = torch.randn(64, 37, device=device), torch.randn(64, 6, device=device)
    lr = 1e-3
    with torch.autocast(device, dtype=dtype):
        loss = net.sgd_step(x, y, lr, reduction)
        want = F.mse_loss(twin(x), y, reduction=reduction)
    want.backward()
    torch.optim.SGD(twin.parameters(), lr=lr).step()
    assert loss.dtype == want.dtype == torch.float32
    for (name, a), (_, b) in zip(net.named_parameters(), twin.named_parameters()):
        assert a.dtype == torch.float32 and a.stride() == b.stride(), name
        if device == "cpu":
            assert torch.equal(a, b), name
        else:
            assert_close(a, b, dtype, name)
    assert_close(loss, want, dtype, "loss")


def test_sgd_step_under_autocast_rejects_what_the_op_rejects():
    """The autocast kernel checks y and reduction as the op does (mse_loss would broadcast)."""
    net = twolayer_ext.TwoLayerNet(8, 5, 3)
    x, y = torch.randn(4, 8), torch.randn(4, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with pytest.raises(ValueError, match=r"y must have the network's output shape \[4, 3\]"):
            net.sgd_step(x, y[:1], 0.1)
        with pytest.raises(ValueError, match="reduction must be 'sum' or 'mean', but got 'max'"):
            net.sgd_step(x, y, 0.1, "max")
