"""Deployment: torch.export (export -> save -> load -> run) and AOTInductor (compile and
package -> load -> run) of a model with LinearReLU and TwoLayerNet, on CPU and on CUDA when
there is a GPU. The extension's ops stay in the exported graph as twolayer_ext ops."""

from __future__ import annotations

import pytest
import torch
from helpers import DEVICES, assert_close
from torch import nn

import twolayer_ext


class Deployed(nn.Module):
    """A LinearReLU block feeding the tutorial's network."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(twolayer_ext.LinearReLU(8, 16), nn.Linear(16, 12))
        self.net = twolayer_ext.TwoLayerNet(12, 10, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.block(x))


def _exported(device):
    model = Deployed().to(device).eval()
    x = torch.randn(6, 8, device=device)
    batch = torch.export.Dim("batch", min=1)
    ep = torch.export.export(model, (x,), dynamic_shapes={"x": {0: batch}})
    return model, ep


def _custom_ops(ep) -> set[str]:
    return {
        str(node.target)
        for node in ep.graph.nodes
        if node.op == "call_function" and str(node.target).startswith("twolayer_ext.")
    }


@pytest.mark.parametrize("device", DEVICES)
def test_export_save_load_run_matches_eager(device, tmp_path):
    model, ep = _exported(device)
    assert _custom_ops(ep) == {
        "twolayer_ext.linear_relu_output.default",  # the output alone: no mask kept
        "twolayer_ext.two_layer.default",  # the output alone: no hidden activation kept
    }
    path = tmp_path / "deployed.pt2"
    torch.export.save(ep, path)
    loaded = torch.export.load(path).module()
    for rows in (6, 3):  # the batch dimension is dynamic
        x = torch.randn(rows, 8, device=device)
        with torch.no_grad():
            assert_close(loaded(x), model(x), torch.float32, f"exported, {rows} rows")


@pytest.mark.parametrize("device", DEVICES)
def test_aoti_compile_package_load_run_matches_eager(device, tmp_path, monkeypatch):
    # As on CI services: where CI is set, inductor refuses to fall back to an op that has an
    # entry in torch._decomp's table (the reason twolayer_ext.onnx is a translation table).
    monkeypatch.setenv("CI", "true")
    model, ep = _exported(device)
    package = torch._inductor.aoti_compile_and_package(
        ep, package_path=str(tmp_path / "deployed_aoti.pt2")
    )
    runner = torch._inductor.aoti_load_package(package)
    for rows in (6, 2):
        x = torch.randn(rows, 8, device=device)
        with torch.no_grad():
            assert_close(runner(x), model(x), torch.float32, f"AOTInductor, {rows} rows")
