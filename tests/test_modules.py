"""LinearReLU / ReLU modules: nn.Linear conventions and state_dict compatibility."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import twolayer_ext


def test_parameters_shapes_and_init_match_nn_linear():
    torch.manual_seed(123)
    ref = nn.Linear(30, 20)
    torch.manual_seed(123)
    layer = twolayer_ext.LinearReLU(30, 20)
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"]
    assert torch.equal(layer.weight, ref.weight) and torch.equal(layer.bias, ref.bias)
    assert twolayer_ext.LinearReLU(3, 2, bias=False).bias is None
    assert "in_features=30, out_features=20, bias=True" in repr(layer)


@pytest.mark.parametrize("bias", [True, False])
def test_state_dict_round_trips_with_nn_linear(bias):
    lin = nn.Linear(12, 7, bias=bias)
    layer = twolayer_ext.LinearReLU(12, 7, bias=bias)
    layer.load_state_dict(lin.state_dict())
    x = torch.randn(5, 12)
    assert torch.allclose(layer(x), torch.relu(lin(x)), atol=1e-6)
    lin2 = nn.Linear(12, 7, bias=bias)
    lin2.load_state_dict(twolayer_ext.LinearReLU(12, 7, bias=bias).state_dict())
    assert set(lin2.state_dict()) == set(layer.state_dict())


def test_factory_kwargs_and_training_in_a_model():
    model = nn.Sequential(twolayer_ext.LinearReLU(10, 16, dtype=torch.float64), nn.Linear(16, 1))
    model = model.double()
    assert model[0].weight.dtype == torch.float64
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    x, y = torch.randn(32, 10, dtype=torch.float64), torch.randn(32, 1, dtype=torch.float64)
    losses = []
    for _ in range(20):
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert model[0].weight.grad is not None and model[0].bias.grad is not None


def test_from_linear_shares_parameters():
    lin = nn.Linear(4, 3)
    layer = twolayer_ext.LinearReLU.from_linear(lin)
    assert layer.weight is lin.weight and layer.bias is lin.bias


def test_meta_device_shape_inference():
    layer = twolayer_ext.LinearReLU(8, 5, device="meta")
    y = layer(torch.empty(2, 3, 8, device="meta"))
    assert y.shape == (2, 3, 5) and y.device.type == "meta"


def _script_and_trace_cases():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    ref = nn.Sequential(nn.Linear(6, 5), nn.ReLU())
    layer = twolayer_ext.LinearReLU(6, 5)
    layer.load_state_dict(ref[0].state_dict())
    return {
        "LinearReLU": (layer, ref),
        "ReLU": (twolayer_ext.ReLU(), nn.ReLU()),
        "TwoLayerNet": (twolayer_ext.TwoLayerNet.from_sequential(seq), seq),
        "Sequential": (nn.Sequential(layer, nn.Linear(5, 2)), nn.Sequential(ref, nn.Linear(5, 2))),
    }


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
@pytest.mark.parametrize("name", ["LinearReLU", "ReLU", "TwoLayerNet", "Sequential"])
def test_jit_script_is_refused_by_name(name):
    """torch.jit.script (deprecated in torch 2.x) cannot compile the modules' Python forward;
    it raises an error that names the module and the routes that work, not TorchScript's
    "Unknown type annotation"."""
    module, _ = _script_and_trace_cases()[name]
    inner = "LinearReLU" if name == "Sequential" else name
    match = rf"cannot compile twolayer_ext's {inner}.*torch\.export.*jit\.trace"
    with pytest.raises(RuntimeError, match=match):
        torch.jit.script(module)


@pytest.mark.filterwarnings("ignore:`torch.jit.* is deprecated")
@pytest.mark.parametrize("name", ["LinearReLU", "ReLU", "TwoLayerNet", "Sequential"])
def test_jit_trace_runs_saves_and_differentiates(name, tmp_path):
    """A traced module records the extension's ops: after torch.jit.save/load it gives the
    plain modules' outputs and gradients on inputs other than the traced one."""
    module, ref = _script_and_trace_cases()[name]
    if name == "Sequential":
        ref[1].load_state_dict(module[1].state_dict())
    in_features = 5 if name == "ReLU" else 6
    traced = torch.jit.trace(module, torch.randn(4, in_features))
    path = tmp_path / "traced.pt"
    torch.jit.save(traced, str(path))
    loaded = torch.jit.load(str(path))
    x = torch.randn(9, in_features, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out, out_ref = loaded(x), ref(x_ref)
    torch.testing.assert_close(out, out_ref)
    g = torch.randn_like(out)
    params, params_ref = list(loaded.parameters()), list(ref.parameters())
    grads = torch.autograd.grad(out, [x, *params], g)
    grads_ref = torch.autograd.grad(out_ref, [x_ref, *params_ref], g)
    for a, b in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(a, b)
