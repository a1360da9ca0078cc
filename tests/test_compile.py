"""torch.compile: models built from the extension compile without graph breaks."""

from __future__ import annotations

import pytest
import torch
from helpers import HAS_CUDA
from torch import nn

import twolayer_ext


def _models(device):
    return {
        "LinearReLU": lambda: nn.Sequential(
            twolayer_ext.LinearReLU(32, 24), twolayer_ext.ReLU(), nn.Linear(24, 5)
        ).to(device),
        "TwoLayerNet": lambda: twolayer_ext.TwoLayerNet(32, 24, 5).to(device),
    }


def _check(device, name, mode=None):
    torch._dynamo.reset()
    torch.manual_seed(0)
    eager = _models(device)[name]()
    model = _models(device)[name]()
    model.load_state_dict(eager.state_dict())
    compiled = torch.compile(model, fullgraph=True, backend="inductor", mode=mode)
    for _ in range(2):  # second iteration runs the cached graph
        x = torch.randn(16, 32, device=device)
        with torch.no_grad():  # inference
            torch.testing.assert_close(compiled(x), eager(x))
        # training: forward, loss, backward
        loss_c = compiled(x).square().sum()
        loss_e = eager(x).square().sum()
        loss_c.backward()
        loss_e.backward()
        torch.testing.assert_close(loss_c, loss_e)
        for (n, a), (_, b) in zip(model.named_parameters(), eager.named_parameters()):
            torch.testing.assert_close(a.grad, b.grad, msg=n)
            a.grad = b.grad = None


@pytest.mark.parametrize("name", ["LinearReLU", "TwoLayerNet"])
def test_compile_fullgraph_cpu(name):
    _check("cpu", name)


@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("name", ["LinearReLU", "TwoLayerNet"])
def test_compile_reduce_overhead_cuda(name):
    _check("cuda", name, mode="reduce-overhead")


@pytest.mark.parametrize("name", ["LinearReLU", "TwoLayerNet"])
@pytest.mark.parametrize("x_grad", [False, True], ids=["params", "params-and-x"])
@pytest.mark.parametrize("path", ["layered", "fused"])
def test_compiled_autograd_cpu(name, x_grad, path, monkeypatch):
    """Compiled autograd traces the backward graph through the ops' autograd nodes (their
    apply_with_saved) and runs it; the gradients equal eager backward's. On the fused path
    TwoLayerNet's node is the one that recomputes the hidden activation."""
    monkeypatch.setenv("TWOLAYER_EXT_CPU_FUSED_MLP", {"layered": "0", "fused": "1"}[path])
    from torch._dynamo import compiled_autograd
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    eager = _models("cpu")[name]()
    model = _models("cpu")[name]()
    model.load_state_dict(eager.state_dict())
    for _ in range(2):  # second iteration runs the cached graph
        x = torch.randn(16, 32, requires_grad=x_grad)
        xc = x.detach().clone().requires_grad_(x_grad)
        with compiled_autograd._enable(torch.compile(backend="aot_eager", fullgraph=True)):
            model(xc).square().sum().backward()
        eager(x).square().sum().backward()
        for (n, a), (_, b) in zip(model.named_parameters(), eager.named_parameters()):
            torch.testing.assert_close(a.grad, b.grad, msg=n)
            a.grad = b.grad = None
        if x_grad:
            torch.testing.assert_close(xc.grad, x.grad)
    assert counters["compiled_autograd"]["captures"] >= 1


@pytest.mark.parametrize("x_grad", [False, True], ids=["weight-grads", "all-grads"])
def test_compile_dynamic_transposed_weights(x_grad):
    """The tutorial's layout, linear_relu(x, w1.t()), compiled with symbolic shapes: the fake
    kernels' gradient layout (column-major for w1.t()) agrees with the kernels' for every
    shape, the weights' stand-in (x_grad=False) and the saved weights (x_grad=True)."""

    def net(x, w1, w2):
        return (twolayer_ext.linear_relu(x, w1.t()) @ w2).square().sum()

    torch._dynamo.reset()
    compiled = torch.compile(net, dynamic=True, fullgraph=True, backend="inductor")
    for rows, d_in, hidden in ((8, 5, 3), (9, 6, 4), (12, 7, 5)):
        x, w1, w2 = torch.randn(rows, d_in), torch.randn(d_in, hidden), torch.randn(hidden, 2)
        args = [x.requires_grad_(x_grad), w1.requires_grad_(), w2.requires_grad_()]
        got = torch.autograd.grad(compiled(*args), args[1:])
        ref = [t.detach().requires_grad_() for t in (x, w1, w2)]
        want = torch.autograd.grad((torch.relu(ref[0] @ ref[1]) @ ref[2]).square().sum(), ref[1:])
        torch.testing.assert_close(got, want)
