"""two_layer_forward / two_layer_backward / TwoLayerMLPFunction / TwoLayerNet: the whole
network as one op each way, against the reference and torch; gradcheck, opcheck, saved
memory, and the errors bad input gets."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from helpers import (
    DEVICE_DTYPES,
    DEVICES,
    ERR,
    assert_close,
    away_from_kink,
    check_two_layer_ops,
    f32,
    make_weight,
    make_x,
)
from torch import nn

import twolayer_ext
from twolayer_ext import reference
from twolayer_ext.bench.timing import saved_bytes

# Every test here runs on both CPU paths of the two-layer ops (conftest.mlp_path).
pytestmark = pytest.mark.usefixtures("mlp_path")

# (leading shape, in, hidden, out)
SHAPES = [((64,), 1000, 100, 10), ((0,), 5, 4, 3), ((1,), 3, 1, 1), ((2, 3), 17, 70, 9)]


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_two_layer_ops_match_reference(device, dtype, shape, bias):
    lead, d_in, hidden_features, d_out = shape
    x = make_x((*lead, d_in), dtype, device, "sliced")
    w1 = make_weight(hidden_features, d_in, dtype, device, transposed=True)
    w2 = make_weight(d_out, hidden_features, dtype, device) / hidden_features**0.5
    b1 = torch.randn(hidden_features, dtype=dtype, device=device) if bias else None
    b2 = torch.randn(d_out, dtype=dtype, device=device) if bias else None
    check_two_layer_ops(x, w1, b1, w2, b2, [True, True, bias, True, bias], dtype)


@pytest.mark.parametrize("device", DEVICES)
def test_only_requested_grads(device):
    x, w1, w2 = (torch.randn(*s, device=device) for s in [(6, 5), (4, 5), (3, 4)])
    out, hidden = torch.ops.twolayer_ext.two_layer_forward(x, w1, None, w2, None)
    for i in range(5):
        om = [j == i for j in range(5)]
        got = torch.ops.twolayer_ext.two_layer_backward(torch.ones_like(out), x, w1, w2, hidden, om)
        assert [g is not None for g in got] == om


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_two_layer_gradcheck(device, bias):
    kw = {"dtype": torch.float64, "device": device}
    x, w1, w2 = torch.randn(5, 6, **kw), torch.randn(4, 6, **kw), torch.randn(3, 4, **kw)
    b1 = torch.randn(4, **kw) if bias else None
    b2 = torch.randn(3, **kw) if bias else None
    if b1 is not None:  # keep hidden units off the ReLU kink for finite differences
        with torch.no_grad():
            h = x @ w1.t() + b1
            b1[h.abs().min(0).values < 1e-3] += 0.01
    inputs = [t.requires_grad_() if t is not None else None for t in (x, w1, b1, w2, b2)]
    assert torch.autograd.gradcheck(twolayer_ext.two_layer_mlp, inputs)


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_backward_mask_from_hidden_zero_and_nan(device, dtype):
    """two_layer_backward reads the ReLU mask from hidden: exact zeros drop the gradient
    (relu'(0) = 0), NaN keeps it (torch's threshold_backward), as in the reference."""
    x, w1, w2 = (torch.randn(*s, dtype=dtype, device=device) for s in [(7, 6), (9, 6), (4, 9)])
    hidden = torch.randn(7, 9, dtype=dtype, device=device).relu()  # ~half exact zeros
    hidden[1, 2] = float("nan")
    hidden[3, 0] = float("nan")
    grad_out = torch.randn(7, 4, dtype=dtype, device=device)
    om = [True, True, True, True, True]
    got = torch.ops.twolayer_ext.two_layer_backward(grad_out, x, w1, w2, hidden, om)
    want = reference.two_layer_backward(
        grad_out.double(), x.double(), w1.double(), w2.double(), hidden.double(), om
    )
    for g, r, name in zip(got[:3], want[:3], ["x", "w1", "b1"]):
        assert_close(g, r, dtype, f"grad_{name}")
    assert torch.equal(got[3].isnan().cpu(), want[3].isnan().cpu())  # NaN hidden -> grad_w2


# Which of (x, w1, b1, w2, b2) are given and require grad; None = argument absent.
# Absent optionals in the middle shift autograd's edge numbering (csrc/autograd/common.h).
REQUIRE_SETS = [
    (True, True, True, True, True),
    (True, False, None, False, True),
    (False, True, None, True, False),
    (False, False, True, True, None),
    (False, True, False, False, True),
    (True, False, False, False, None),
    (False, False, None, False, True),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("requires", REQUIRE_SETS, ids=str)
def test_autograd_partial_requires_grad_matches_torch(device, requires):
    """Only some inputs need gradients, some biases absent: the C++ autograd node asks the
    backward op for exactly those and returns them in the right slots."""
    kw = {"dtype": torch.float64, "device": device}
    shapes = [(2, 3, 7), (5, 7), (5,), (4, 5), (4,)]
    args = [
        None if r is None else torch.randn(*s, **kw).requires_grad_(r)
        for r, s in zip(requires, shapes)
    ]
    out = twolayer_ext.two_layer_mlp(*args)
    want = reference.two_layer_forward(*args)[0]
    assert_close(out, want, torch.float64, "out")
    grad = torch.randn_like(out)
    wanted = [a for a in args if a is not None and a.requires_grad]
    if not wanted:
        assert not out.requires_grad
        return
    got = torch.autograd.grad(out, wanted, grad)
    ref = torch.autograd.grad(want, wanted, grad)
    for g, r in zip(got, ref):
        assert_close(g, r, torch.float64, "grad")
    # autograd.grad for one input only: the others are neither computed nor accumulated.
    out = twolayer_ext.two_layer_mlp(*args)
    (g_last,) = torch.autograd.grad(out, wanted[-1:], grad)
    assert_close(g_last, ref[-1], torch.float64, "grad of the last input alone")


def test_forward_ops_autograd_is_cpp():
    """The forward ops' autograd kernels are C++ nodes (no Python in backward)."""
    x = torch.randn(3, 4, requires_grad=True)
    w1, w2 = torch.randn(5, 4), torch.randn(2, 5)
    for out in (
        twolayer_ext.two_layer_mlp(x, w1, None, w2, None),
        twolayer_ext.linear_relu(x, w1),
        twolayer_ext.relu(x),
    ):
        assert out.grad_fn.name().startswith("twolayer_ext::"), out.grad_fn.name()
    with torch.no_grad():
        assert twolayer_ext.two_layer_mlp(x, w1, None, w2, None).grad_fn is None


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("path", ["0", "1"], ids=["layered", "fused"])
def test_weight_grads_in_the_weights_layout(device, path, monkeypatch):
    """two_layer_backward returns each weight's gradient in that weight's layout (column-major
    for the tutorial's w.t() weights), on the layered and the fully fused path, with the
    reference's values."""
    monkeypatch.setenv(f"TWOLAYER_EXT_{'CPU' if device == 'cpu' else 'CUDA'}_FUSED_MLP", path)
    x = torch.randn(600, 6, device=device)
    for w1_t, w2_t in ((True, True), (True, False), (False, True)):
        w1 = make_weight(5, 6, torch.float32, device, transposed=w1_t)
        w2 = make_weight(3, 5, torch.float32, device, transposed=w2_t)
        out, hidden = torch.ops.twolayer_ext.two_layer_forward(x, w1, None, w2, None)
        g = torch.randn_like(out)
        _, gw1, _, gw2, _ = torch.ops.twolayer_ext.two_layer_backward(
            g, x, w1, w2, hidden, [False, True, False, True, False]
        )
        assert (gw1.stride(), gw2.stride()) == (w1.stride(), w2.stride())
        r1, r2 = (w.detach().clone().requires_grad_() for w in (w1, w2))
        (torch.relu(x @ r1.t()) @ r2.t()).backward(g)
        assert_close(gw1, r1.grad, torch.float32, "grad_w1")
        assert_close(gw2, r2.grad, torch.float32, "grad_w2")


@pytest.mark.parametrize("device", DEVICES)
def test_create_graph_weight_grads_in_the_weights_layout(device):
    """With create_graph=True the gradients come from the differentiable decomposition; each
    weight's is still in that weight's layout, as torch's linear gives it, with the
    reference's values."""
    x = torch.randn(9, 6, device=device)
    for w1_t, w2_t in ((True, True), (True, False), (False, True)):
        w1 = make_weight(5, 6, torch.float32, device, transposed=w1_t).requires_grad_()
        w2 = make_weight(3, 5, torch.float32, device, transposed=w2_t).requires_grad_()
        b1 = torch.randn(5, device=device, requires_grad=True)
        out = twolayer_ext.two_layer_mlp(x, w1, b1, w2, None)
        g = torch.randn_like(out)
        gw1, gw2 = torch.autograd.grad(out, (w1, w2), g, create_graph=True)
        assert gw1.requires_grad and gw2.requires_grad  # the differentiable path ran
        assert (gw1.stride(), gw2.stride()) == (w1.stride(), w2.stride())
        r1, r2 = (w.detach().clone().requires_grad_() for w in (w1, w2))
        (torch.relu(x @ r1.t() + b1.detach()) @ r2.t()).backward(g)
        assert_close(gw1, r1.grad, torch.float32, "grad_w1")
        assert_close(gw2, r2.grad, torch.float32, "grad_w2")


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_two_layer(device):
    for rg, w_t in ((False, False), (True, False), (True, True)):
        x = torch.randn(4, 6, device=device, requires_grad=rg)
        w1 = make_weight(5, 6, torch.float32, device, transposed=w_t).requires_grad_(rg)
        b1 = torch.randn(5, device=device, requires_grad=rg)
        w2 = make_weight(3, 5, torch.float32, device, transposed=w_t).requires_grad_(rg)
        torch.library.opcheck(
            torch.ops.twolayer_ext.two_layer_forward.default, (x, w1, b1, w2, None)
        )
        with torch.no_grad():
            out, hidden = torch.ops.twolayer_ext.two_layer_forward(x, w1, b1, w2, None)
        torch.library.opcheck(
            torch.ops.twolayer_ext.two_layer_backward.default,
            (torch.randn_like(out), x.detach(), w1.detach(), w2.detach(), hidden, [True] * 5),
        )


@pytest.mark.parametrize("device", DEVICES)
def test_unread_first_layer_weight_is_neither_kept_nor_version_checked(device):
    """With x needing no gradient, torch's linear keeps no reference to its weight, and so do
    the extension's nodes where backward does not read w1's values: a w1 made by another op
    is freed after the forward, and a parameter w1 changed in place before backward raises
    nothing and gets torch's gradient. Where backward recomputes hidden (the fused path), it
    reads w1, keeps it and checks its version, as torch does for the tensors it saves."""
    x = torch.randn(64, 33, device=device)
    p1 = torch.randn(20, 33, device=device, requires_grad=True)
    w2 = torch.randn(7, 20, device=device, requires_grad=True)
    for x_grad in (False, True):
        w1 = p1 * 2.0
        alive = weakref.ref(w1)
        out = twolayer_ext.two_layer_mlp(x.clone().requires_grad_(x_grad), w1, None, w2, None)
        recomputes = out.grad_fn.name() == "twolayer_ext::TwoLayerRecomputeBackward"
        del w1
        gc.collect()
        # Kept where backward reads it: x's gradient, or the recomputed hidden activation.
        assert (alive() is not None) == (x_grad or recomputes)
        del out

    net = twolayer_ext.TwoLayerNet(33, 20, 7).to(device)
    seq = nn.Sequential(nn.Linear(33, 20), nn.ReLU(), nn.Linear(20, 7)).to(device)
    seq.load_state_dict(twolayer_ext.twolayer_state_dict_to_sequential(net.state_dict()))
    out, want = net(x), seq(x)
    g = torch.randn_like(out)
    with torch.no_grad():
        net.fc1.weight.add_(1.0)
        seq[0].weight.add_(1.0)
    want.backward(g)  # torch saved no w1: no error
    if out.grad_fn.name() == "twolayer_ext::TwoLayerRecomputeBackward":
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            out.backward(g)
        return
    out.backward(g)
    for (name, p), r in zip(net.named_parameters(), seq.parameters(), strict=True):
        assert_close(p.grad, r.grad, torch.float32, name)


def test_saved_for_backward_no_larger_than_torch(mlp_path):
    # A narrow first layer (in = 32): where the CPU runs the network fused, its training keeps
    # no hidden activation at all (backward recomputes it); torch and the layered path keep it.
    xn = torch.randn(64, 32)
    net = twolayer_ext.TwoLayerNet(32, 100, 10)
    seq = nn.Sequential(nn.Linear(32, 100), nn.ReLU(), nn.Linear(100, 10))
    seq.load_state_dict(twolayer_ext.twolayer_state_dict_to_sequential(net.state_dict()))
    hidden_bytes = 64 * 100 * 4
    assert saved_bytes(lambda: seq(xn), xn, *seq.parameters()) == hidden_bytes
    ours = saved_bytes(lambda: net(xn), xn, *net.parameters())
    assert ours == (0 if mlp_path == "fused" else hidden_bytes)
    x = torch.randn(64, 1000)
    layer = twolayer_ext.LinearReLU(1000, 100)
    lin = nn.Linear(1000, 100)
    ours = saved_bytes(lambda: layer(x))
    theirs = saved_bytes(lambda: torch.relu(lin(x)))
    assert ours < theirs  # the ReLU mask is 1 bit per output instead of the output itself
    assert ours == x.numel() * 4 + 64 * ((100 + 7) // 8)  # x (for grad_weight) + the bit mask
    x.requires_grad_()
    assert saved_bytes(lambda: layer(x)) < saved_bytes(lambda: torch.relu(lin(x)))
    xn.requires_grad_()
    ours = saved_bytes(lambda: net(xn), xn, *net.parameters())
    assert ours == (0 if mlp_path == "fused" else hidden_bytes)


def test_twolayernet_trains_like_sequential():
    torch.manual_seed(0)
    seq = nn.Sequential(nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 4)).double()
    net = twolayer_ext.TwoLayerNet.from_sequential(seq)
    x, y = torch.randn(16, 30, dtype=torch.float64), torch.randn(16, 4, dtype=torch.float64)
    for m in (seq, net):
        nn.functional.mse_loss(m(x), y, reduction="sum").backward()
    for (n, a), (_, b) in zip(net.named_parameters(), seq.named_parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=n)


@pytest.mark.parametrize("device", DEVICES)
def test_two_layer_function_gradcheck(device):
    """TwoLayerMLPFunction.apply under gradcheck."""
    kw = {"dtype": torch.float64, "device": device}
    x, w1, w2 = torch.randn(4, 5, **kw), torch.randn(3, 5, **kw), torch.randn(2, 3, **kw)
    b1, b2 = torch.randn(3, **kw), torch.randn(2, **kw)
    away_from_kink(x, w1, b1)
    for t in (x, w1, w2, b1, b2):
        t.requires_grad_()
    assert torch.autograd.gradcheck(twolayer_ext.TwoLayerMLPFunction.apply, (x, w1, b1, w2, b2))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_two_layer_gradgradcheck(device, bias):
    """Double backward through the whole-network op (create_graph=True): second derivatives
    of every input, including the term through the hidden activation, match finite
    differences."""
    kw = {"dtype": torch.float64, "device": device}
    x, w1, w2 = torch.randn(5, 4, **kw), torch.randn(6, 4, **kw), torch.randn(3, 6, **kw)
    b1 = torch.randn(6, **kw) if bias else None
    b2 = torch.randn(3, **kw) if bias else None
    away_from_kink(x, w1, b1)
    inputs = [t.requires_grad_() for t in (x, w1, b1, w2, b2) if t is not None]

    def net(*args):
        x, w1, *rest = args
        b1, w2, b2 = rest if bias else (None, rest[0], None)
        return twolayer_ext.two_layer_mlp(x, w1, b1, w2, b2)

    assert torch.autograd.gradgradcheck(net, inputs)


def test_gradient_penalty_matches_sequential():
    """A WGAN-GP style penalty on TwoLayerNet, ||d out / d x||^2 differentiated w.r.t. every
    parameter, equals nn.Sequential(Linear, ReLU, Linear)'s to 1e-9 in float64."""
    net = twolayer_ext.TwoLayerNet(7, 9, 4).double()
    seq = nn.Sequential(nn.Linear(7, 9), nn.ReLU(), nn.Linear(9, 4)).double()
    seq.load_state_dict(twolayer_ext.twolayer_state_dict_to_sequential(net.state_dict()))
    x = torch.randn(12, 7, dtype=torch.float64)
    v = torch.randn(4, dtype=torch.float64)

    def penalty_grads(model):
        xr = x.clone().requires_grad_()
        (gx,) = torch.autograd.grad((model(xr) * v).sum(), xr, create_graph=True)
        return torch.autograd.grad(gx.square().sum(), list(model.parameters()), allow_unused=True)

    # b2 does not reach d out / dx, and b1 only through the ReLU's (constant) mask: autograd
    # returns None or zeros for them, which compare equal here.
    for g, w, p in zip(penalty_grads(net), penalty_grads(seq), net.parameters()):
        g = torch.zeros_like(p) if g is None else g
        w = torch.zeros_like(p) if w is None else w
        torch.testing.assert_close(g, w, rtol=0, atol=1e-9)


def test_hessian_vector_product_matches_sequential():
    """d/dw (grad_w . v): a Hessian-vector product in the parameters, against torch."""
    net = twolayer_ext.TwoLayerNet(6, 8, 3).double()
    seq = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    seq.load_state_dict(twolayer_ext.twolayer_state_dict_to_sequential(net.state_dict()))
    x, y = torch.randn(10, 6, dtype=torch.float64), torch.randn(10, 3, dtype=torch.float64)
    vs = [torch.randn_like(p) for p in net.parameters()]

    def hvp(model):
        params = list(model.parameters())
        loss = torch.nn.functional.mse_loss(model(x), y, reduction="sum")
        grads = torch.autograd.grad(loss, params, create_graph=True)
        dot = sum((g * v).sum() for g, v in zip(grads, vs))
        return torch.autograd.grad(dot, params)

    for got, want in zip(hvp(net), hvp(seq)):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-9)


def test_two_layer_rejects_mismatched_second_layer():
    x, w1 = f32(4, 5), f32(3, 5)
    with pytest.raises(
        ERR,
        match=r"w2 must have shape \[out_features, hidden\] with hidden = "
        r"w1.size\(0\) = 3, but got shape \[2, 4\]",
    ):
        torch.ops.twolayer_ext.two_layer_forward(x, w1, None, f32(2, 4), None)
    with pytest.raises(ERR, match=r"b2 must have shape \[2\], but got shape \[3\]"):
        torch.ops.twolayer_ext.two_layer_forward(x, w1, None, f32(2, 3), f32(3))
    with pytest.raises(ERR, match=r"w2 to have the same dtype as x"):
        torch.ops.twolayer_ext.two_layer_forward(x, w1, None, f32(2, 3).double(), None)
