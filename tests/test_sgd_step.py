"""two_layer_sgd_step: a whole training step (forward, MSE loss, backward, SGD) in one op.

It must leave the parameters exactly where the usual step leaves them, on the same
fresh random data: TwoLayerNet + loss.backward() + torch.optim.SGD (the same
kernels; bitwise on the CPU, every dtype), and the pure-torch reference
(nn.Sequential semantics, within the dtype's tolerance).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import AUTOCAST_CASES, DEVICE_DTYPES, DEVICES, assert_close
from torch import nn

import twolayer_ext
from twolayer_ext import reference

# Every test here runs on both CPU paths of the two-layer ops (conftest.mlp_path).
pytestmark = pytest.mark.usefixtures("mlp_path")

STEP = torch.ops.twolayer_ext.two_layer_sgd_step.default


def _net(d_in, hidden, d_out, bias, dtype, device):
    return twolayer_ext.TwoLayerNet(d_in, hidden, d_out, bias=bias).to(device, dtype)


def _autograd_step(net, x, y, lr, reduction):
    """The step as users write it, on the extension's autograd ops."""
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    loss = F.mse_loss(net(x), y, reduction=reduction)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss.detach()


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("lead", [(64,), (3, 5), (1,), (), (0,)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_matches_autograd_step(device, dtype, lead, bias, reduction):
    net = _net(37, 19, 6, bias, dtype, device)
    twin = copy.deepcopy(net)
    x = torch.randn(*lead, 37, device=device, dtype=dtype)
    y = torch.randn(*lead, 6, device=device, dtype=dtype)
    # Sum-reduced gradients grow with the batch: scale lr so float16 stays finite.
    lr = 0.05 if reduction == "mean" else 0.05 / max(1, y.numel())
    for _ in range(3):  # later steps start from weights the step itself produced
        loss = net.sgd_step(x, y, lr, reduction)
        want = _autograd_step(twin, x, y, lr, reduction)
        for (name, a), (_, b) in zip(net.named_parameters(), twin.named_parameters()):
            assert a.isfinite().all(), name
            if device == "cpu":  # the same kernels and roundings as the autograd path
                assert torch.equal(a, b), name
            else:
                assert_close(a, b, dtype, name)
        assert_close(loss, want, dtype, "loss")


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
@pytest.mark.parametrize("device", DEVICES)
def test_matches_reference_float64(device, bias, reduction):
    """Against pure torch (nn.Sequential's graph and autograd), with an update as large as w."""
    net = _net(23, 11, 4, bias, torch.float64, device)
    seq = nn.Sequential(nn.Linear(23, 11, bias=bias), nn.ReLU(), nn.Linear(11, 4, bias=bias))
    seq.to(device, torch.float64).load_state_dict(
        twolayer_ext.twolayer_state_dict_to_sequential(net.state_dict())
    )
    x = torch.randn(9, 23, dtype=torch.float64, device=device)
    y = torch.randn(9, 4, dtype=torch.float64, device=device)
    lr = 1.0  # the gradient is not lost in the rounding of w - lr * grad
    loss = net.sgd_step(x, y, lr, reduction)
    want = reference.two_layer_sgd_step(seq, x, y, lr, reduction)
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=0)
    for (name, a), b in zip(net.named_parameters(), seq.parameters(), strict=True):
        assert a.grad is None and b.grad is None, name
        torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-12, atol=1e-12, msg=name)


def test_trains_like_the_seeds_sequential_sgd():
    """The tutorial's loop, 30 steps: fused steps vs nn.Sequential + MSELoss(sum) + optim.SGD."""
    seq = nn.Sequential(nn.Linear(100, 30), nn.ReLU(), nn.Linear(30, 10)).double()
    net = twolayer_ext.TwoLayerNet.from_sequential(seq)
    x, y = torch.randn(64, 100, dtype=torch.float64), torch.randn(64, 10, dtype=torch.float64)
    opt = torch.optim.SGD(seq.parameters(), lr=1e-3)
    losses = []
    for step in range(30):
        loss_t = nn.MSELoss(reduction="sum")(seq(x), y)
        opt.zero_grad()
        loss_t.backward()
        opt.step()
        loss_e = net.sgd_step(x, y, 1e-3)
        torch.testing.assert_close(loss_e, loss_t.detach(), rtol=1e-10, atol=0, msg=str(step))
        losses.append(loss_e.item())
    assert losses[-1] < 0.5 * losses[0]  # it trained
    state = twolayer_ext.twolayer_state_dict_to_sequential(net.state_dict())
    for k, v in seq.state_dict().items():
        torch.testing.assert_close(state[k], v, rtol=1e-10, atol=1e-12, msg=k)


def test_input_sharing_w1_memory():
    """x read from w1's own memory: the CPU kernel, which updates w1 inside its gradient's
    product, must not let the update reach the x that product still reads."""
    net = _net(37, 19, 6, True, torch.float32, "cpu")
    twin = copy.deepcopy(net)
    y = torch.randn(19, 6)
    for _ in range(2):
        loss = net.sgd_step(net.fc1.weight.detach(), y, 1e-3)
        want = _autograd_step(twin, twin.fc1.weight.detach(), y, 1e-3, "sum")
        assert torch.equal(loss, want)
        for (name, a), (_, b) in zip(net.named_parameters(), twin.named_parameters()):
            assert torch.equal(a, b), name


def test_autograd_contract():
    """Updates leaves in place in any grad mode, bumps versions, writes no .grad, no graph."""
    net = _net(8, 5, 3, True, torch.float32, "cpu")
    x, y = torch.randn(4, 8), torch.randn(4, 3)
    before = {n: (p.detach().clone(), p._version) for n, p in net.named_parameters()}
    net.fc2.bias.grad = marker = torch.randn(3)
    loss = net.sgd_step(x, y, 0.1)  # grad mode on, parameters require grad
    assert not loss.requires_grad and loss.grad_fn is None and loss.dim() == 0
    for n, p in net.named_parameters():
        old, version = before[n]
        assert p._version > version, n
        assert not torch.equal(p.detach(), old), n
        assert p.grad is (marker if n == "fc2.bias" else None), n  # .grad not written

    # A graph that saved the old weights must refuse to backprop through the new ones.
    out = net(x)
    net.sgd_step(x, y, 0.1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_errors():
    net = _net(8, 5, 3, True, torch.float32, "cpu")
    x, y = torch.randn(4, 8), torch.randn(4, 3)
    w1, b1, w2, b2 = net.fc1.weight, net.fc1.bias, net.fc2.weight, net.fc2.bias
    versions = [p._version for p in net.parameters()]
    with pytest.raises(
        ValueError, match=r"y must have the network's output shape \[4, 3\], but got \[4, 2\]"
    ):
        net.sgd_step(x, y[:, :2], 0.1)
    with pytest.raises(ValueError, match="reduction must be 'sum' or 'mean', but got 'max'"):
        net.sgd_step(x, y, 0.1, "max")
    with pytest.raises(RuntimeError, match="expected y to have the same dtype as x"):
        net.sgd_step(x, y.double(), 0.1)
    with pytest.raises(ValueError, match="in_features mismatch"):
        net.sgd_step(x[:, :7], y, 0.1)
    with pytest.raises(RuntimeError, match="two_layer_sgd_step: x has unsupported dtype Long"):
        STEP(x.long(), y.long(), w1.long(), None, w2.long(), None, 0.1)
    with pytest.raises(RuntimeError, match="w1 is updated in place, so it must be a leaf"):
        STEP(x, y, w1 * 1, b1, w2, b2, 0.1)
    net.fc1.weight.requires_grad_(False)
    with pytest.raises(ValueError, match=r"\['fc1.weight'\] do not require grad"):
        net.sgd_step(x, y, 0.1)
    # Nothing was updated by the calls that failed.
    assert [p._version for p in net.parameters()] == versions


def test_fake_and_compile():
    """Shape inference without data, and a compiled training loop without graph breaks."""
    torch.library.opcheck(
        STEP,
        (
            torch.randn(6, 8),
            torch.randn(6, 3),
            torch.randn(5, 8),
            torch.randn(5),
            torch.randn(3, 5),
            None,
            0.1,
            "mean",
        ),
    )
    net = _net(8, 5, 3, True, torch.float32, "cpu")
    twin = copy.deepcopy(net)
    x, y = torch.randn(4, 8), torch.randn(4, 3)

    def loop(x, y):
        return [net.sgd_step(x, y, 0.05) for _ in range(2)]

    torch._dynamo.reset()
    losses = torch.compile(loop, fullgraph=True)(x, y)
    want = [twin.sgd_step(x, y, 0.05) for _ in range(2)]
    torch.testing.assert_close(losses, want)
    for a, b in zip(net.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("device,dtype", AUTOCAST_CASES)
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
