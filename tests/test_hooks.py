"""TwoLayerNet with hooks on its layers behaves like nn.Sequential(Linear, ReLU, Linear).

Hook-free, TwoLayerNet.forward runs the whole-network op; with a forward, forward-pre or
backward hook on fc1 or fc2 (pruning's pre-hook included) or a global module hook, it runs
fc1 and fc2 in turn, so each hook fires as it does in nn.Sequential. fc1 is Linear + ReLU, so
its hooks see what the Sequential's ReLU (seq[1]) sees on its output side and what seq[0]
sees on its input side. A parametrized weight (torch.nn.utils.parametrize) adds no hook: the
whole-network op runs on the weight it computes; TwoLayerNet.sgd_step refuses both.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import cpu_op_names
from torch import nn
from torch.nn.utils import parametrize, prune

import twolayer_ext
from twolayer_ext import TwoLayerNet, twolayer_state_dict_to_sequential

D_IN, H, D_OUT, ROWS = 12, 20, 5, 16
DTYPE = torch.float64


def pair(bias: bool = True) -> tuple[TwoLayerNet, nn.Sequential]:
    net = TwoLayerNet(D_IN, H, D_OUT, bias=bias, dtype=DTYPE)
    seq = nn.Sequential(
        nn.Linear(D_IN, H, bias=bias, dtype=DTYPE),
        nn.ReLU(),
        nn.Linear(H, D_OUT, bias=bias, dtype=DTYPE),
    )
    seq.load_state_dict(twolayer_state_dict_to_sequential(net.state_dict()))
    return net, seq


def run(net: nn.Module, compiled: bool) -> nn.Module:
    """net as called, or torch.compile'd (Dynamo decides per hook; the backend is irrelevant)."""
    return torch.compile(net, backend="eager") if compiled else net


COMPILED = pytest.mark.parametrize("compiled", [False, True], ids=["eager", "compiled"])


def close(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def capture(outputs: list[torch.Tensor]):
    def hook(module, args, output):
        outputs.append(output.detach().clone())

    return hook


@COMPILED
@pytest.mark.parametrize("bias", [True, False])
def test_pruned_fc1_trains_like_sequential(bias, compiled):
    net, seq = pair(bias)
    prune.l1_unstructured(net.fc1, "weight", amount=0.5)
    prune.l1_unstructured(seq[0], "weight", amount=0.5)
    opt_net = torch.optim.SGD(net.parameters(), lr=1e-3)
    opt_seq = torch.optim.SGD(seq.parameters(), lr=1e-3)
    called = run(net, compiled)
    for _ in range(5):
        x, y = torch.randn(ROWS, D_IN, dtype=DTYPE), torch.randn(ROWS, D_OUT, dtype=DTYPE)
        losses = []
        for model, opt in ((called, opt_net), (seq, opt_seq)):
            opt.zero_grad()
            loss = F.mse_loss(model(x), y, reduction="sum")
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        close(*losses)
    close(net.fc1.weight_orig, seq[0].weight_orig)
    close(net.fc1.weight, seq[0].weight)
    assert (net.fc1.weight == 0).sum() >= D_IN * H // 2  # the mask still applies


@COMPILED
def test_forward_hooks_capture_the_same_activations(compiled):
    net, seq = pair()
    got: list[torch.Tensor] = []
    want: list[torch.Tensor] = []
    net.fc1.register_forward_hook(capture(got))
    net.fc2.register_forward_hook(capture(got))
    seq[1].register_forward_hook(capture(want))
    seq[2].register_forward_hook(capture(want))
    x = torch.randn(ROWS, D_IN, dtype=DTYPE)
    close(run(net, compiled)(x), seq(x))
    assert len(got) == len(want) == 2
    for a, b in zip(got, want):
        close(a, b)


@COMPILED
def test_forward_pre_hook_changes_fc2_input(compiled):
    net, seq = pair()

    def double_input(module, args):
        return (args[0] * 2,)

    net.fc2.register_forward_pre_hook(double_input)
    seq[2].register_forward_pre_hook(double_input)
    x = torch.randn(ROWS, D_IN, dtype=DTYPE)
    out = run(net, compiled)(x)
    close(out, seq(x))
    # The hook made a difference: without it the output is another.
    plain, _ = pair()
    plain.load_state_dict(net.state_dict())
    assert not torch.allclose(out, plain(x))


@COMPILED
def test_full_backward_hook_on_fc1(compiled):
    net, seq = pair()
    got: dict[str, torch.Tensor] = {}
    want: dict[str, torch.Tensor] = {}

    def grads(store, input_key, output_key):
        def hook(module, grad_input, grad_output):
            if input_key:
                store[input_key] = grad_input[0].clone()
            if output_key:
                store[output_key] = grad_output[0].clone()

        return hook

    net.fc1.register_full_backward_hook(grads(got, "grad_x", "grad_hidden"))
    seq[0].register_full_backward_hook(grads(want, "grad_x", None))
    seq[1].register_full_backward_hook(grads(want, None, "grad_hidden"))
    x = torch.randn(ROWS, D_IN, dtype=DTYPE, requires_grad=True)
    g = torch.randn(ROWS, D_OUT, dtype=DTYPE)
    run(net, compiled)(x).backward(g)
    grad_net = x.grad.clone()
    x.grad = None
    seq(x).backward(g)
    close(grad_net, x.grad)
    assert got.keys() == want.keys() == {"grad_x", "grad_hidden"}
    for key, value in got.items():
        close(value, want[key])


def test_global_module_hooks_fire_on_both_layers():
    net, seq = pair()
    seen: list[type] = []
    handle = torch.nn.modules.module.register_module_forward_hook(
        lambda module, args, output: seen.append(type(module))
    )
    try:
        x = torch.randn(ROWS, D_IN, dtype=DTYPE)
        close(net(x), seq(x))
    finally:
        handle.remove()
    assert seen.count(twolayer_ext.LinearReLU) == 1
    assert seen.count(nn.Linear) == 3  # net.fc2, seq[0], seq[2]


def test_whole_network_op_runs_without_hooks_and_layers_with_them():
    net, _ = pair()
    x = torch.randn(ROWS, D_IN, dtype=DTYPE)
    names = cpu_op_names(lambda: net(x))
    assert "twolayer_ext::two_layer" in names and "twolayer_ext::linear_relu_output" not in names
    handle = net.fc1.register_forward_hook(lambda *a: None)
    names = cpu_op_names(lambda: net(x))
    assert "twolayer_ext::linear_relu_output" in names and "twolayer_ext::two_layer" not in names
    handle.remove()
    assert "twolayer_ext::two_layer" in cpu_op_names(lambda: net(x))


def test_hook_free_network_compiles_fullgraph_to_the_whole_network_op():
    net, seq = pair()
    compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
    x = torch.randn(ROWS, D_IN, dtype=DTYPE)
    close(compiled(x), seq(x))


def test_sgd_step_refuses_hooked_layers():
    net, _ = pair()
    prune.l1_unstructured(net.fc1, "weight", amount=0.5)
    x, y = torch.randn(ROWS, D_IN, dtype=DTYPE), torch.randn(ROWS, D_OUT, dtype=DTYPE)
    with pytest.raises(ValueError, match=r"sgd_step runs no module hooks, but \['fc1'\]"):
        net.sgd_step(x, y, 1e-3)


class _Scaled(nn.Module):
    """A parametrization: the weight used is twice the parameter registered in its place."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return 2 * w


@COMPILED
@pytest.mark.parametrize("layer", ["fc1", "fc2"])
def test_parametrized_layer_trains_like_sequential(layer, compiled):
    """A parametrized weight has no hook: the whole-network op runs on the weight the
    parametrization computes, and its gradient reaches the parameter behind it."""
    net, seq = pair()
    seq_layer = seq[0] if layer == "fc1" else seq[2]
    for m in (getattr(net, layer), seq_layer):
        parametrize.register_parametrization(m, "weight", _Scaled())
    x = torch.randn(ROWS, D_IN, dtype=DTYPE)
    out_e, out_s = run(net, compiled)(x), run(seq, compiled)(x)
    close(out_e, out_s)
    out_e.square().sum().backward()
    out_s.square().sum().backward()
    original = getattr(net, layer).parametrizations.weight.original
    close(original.grad, seq_layer.parametrizations.weight.original.grad)


def test_sgd_step_refuses_parametrized_layers():
    """It updates the layers' own tensors: on a parametrized layer it would update the
    computed weight and leave the parameter behind it as it was."""
    net, _ = pair()
    parametrize.register_parametrization(net.fc2, "weight", _Scaled())
    x, y = torch.randn(ROWS, D_IN, dtype=DTYPE), torch.randn(ROWS, D_OUT, dtype=DTYPE)
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(ValueError, match="fc1 or fc2 is parametrized"):
        net.sgd_step(x, y, 1e-3)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters()))
