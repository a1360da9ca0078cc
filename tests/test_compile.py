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
