"""Every autograd mode and torch.func transform, on every public entry point.

Each differentiable op, function, module and autograd.Function (ENTRIES) runs under forward-
mode AD (dual tensors), each torch.func transform and torch.autograd.functional's vectorized
Jacobian, against the same computation written with nn.Linear / nn.ReLU operations; and under
gradcheck / gradgradcheck in every mode PyTorch's OpInfo tests use. A derivative is either
the reference's or a clear error naming the mode (the training step, the only
non-differentiable entry point). The two-layer entries run on both CPU paths (layered, and
fully fused with the hidden activation recomputed in backward). Then the use cases:
per-sample gradients, model ensembling, vectorized Jacobians and a physics-informed step.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.autograd.forward_ad as fwAD
import torch.nn.functional as F
from helpers import CPU_DTYPES, assert_close, away_from_kink, requires_cuda
from torch import nn
from torch.func import (
    functional_call,
    grad,
    hessian,
    jacfwd,
    jacrev,
    jvp,
    stack_module_state,
    vjp,
    vmap,
)
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves, tree_map

import twolayer_ext
from twolayer_ext.reference import linear_relu as ref_layer
from twolayer_ext.reference import two_layer as ref_net
from twolayer_ext.reference import two_layer_forward as ref_net_and_hidden

ops = torch.ops.twolayer_ext
ROWS, IN, HIDDEN, OUT = 5, 4, 6, 3


_MODULES: dict[tuple[str, torch.dtype, str], nn.Module] = {}


def _module(kind: str, dtype: torch.dtype, device: str) -> nn.Module:
    """One module of each kind per dtype and device, made on first use, which may be inside
    a transform: built in place (no .to(), whose .data assignments functorch refuses)."""
    key = (kind, dtype, device)
    if key not in _MODULES:
        kw = {"dtype": dtype, "device": device}
        make = {
            "LinearReLU": lambda: twolayer_ext.LinearReLU(IN, HIDDEN, **kw),
            "ReLU": twolayer_ext.ReLU,
            "TwoLayerNet": lambda: twolayer_ext.TwoLayerNet(IN, HIDDEN, OUT, **kw),
            "Sequential": lambda: nn.Sequential(
                twolayer_ext.LinearReLU(IN, HIDDEN, **kw), nn.Linear(HIDDEN, OUT, **kw)
            ),
            "fuse_modules": lambda: twolayer_ext.fuse_modules(
                nn.Sequential(nn.Linear(IN, HIDDEN, **kw), nn.ReLU(), nn.Linear(HIDDEN, OUT, **kw))
            ),
        }[kind]
        _MODULES[key] = make()
    return _MODULES[key]


def _layer_module(x, w, b):
    return functional_call(
        _module("LinearReLU", x.dtype, x.device.type), {"weight": w, "bias": b}, (x,)
    )


def _relu_module(x):
    return _module("ReLU", x.dtype, x.device.type)(x)


def _net_module(kind: str, names: tuple[str, ...]) -> Callable[..., torch.Tensor]:
    def call(x, w1, b1, w2, b2):
        params = dict(zip(names, (w1, b1, w2, b2)))
        return functional_call(_module(kind, x.dtype, x.device.type), params, (x,))

    return call


@dataclass(frozen=True)
class Entry:
    name: str
    kind: str  # "relu": (x); "layer": (x, w, b); "net": (x, w1, b1, w2, b2)
    ext: Callable[..., Any]
    ref: Callable[..., Any]  # what ext must equal: twolayer_ext.reference or torch


ENTRIES = [
    Entry(
        "op.linear_relu",
        "layer",
        lambda x, w, b: ops.linear_relu(x, w, b)[0],
        ref_layer,
    ),
    Entry("op.linear_relu_output", "layer", ops.linear_relu_output, ref_layer),
    Entry("linear_relu", "layer", twolayer_ext.linear_relu, ref_layer),
    Entry("LinearReLU", "layer", _layer_module, ref_layer),
    Entry("LinearReLUFunction", "layer", twolayer_ext.LinearReLUFunction.apply, ref_layer),
    Entry("op.relu", "relu", ops.relu, torch.relu),
    Entry("relu", "relu", twolayer_ext.relu, torch.relu),
    Entry("ReLU", "relu", _relu_module, torch.relu),
    Entry("ReLUFunction", "relu", twolayer_ext.ReLUFunction.apply, torch.relu),
    Entry("op.two_layer", "net", ops.two_layer, ref_net),
    Entry("op.two_layer_forward", "net", ops.two_layer_forward, ref_net_and_hidden),
    Entry("two_layer_mlp", "net", twolayer_ext.two_layer_mlp, ref_net),
    Entry(
        "TwoLayerNet",
        "net",
        _net_module("TwoLayerNet", ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")),
        ref_net,
    ),
    Entry(
        "Sequential(LinearReLU,Linear)",
        "net",
        _net_module("Sequential", ("0.weight", "0.bias", "1.weight", "1.bias")),
        ref_net,
    ),
    Entry(
        "fuse_modules",
        "net",
        _net_module("fuse_modules", ("0.weight", "0.bias", "2.weight", "2.bias")),
        ref_net,
    ),
    Entry("TwoLayerMLPFunction", "net", twolayer_ext.TwoLayerMLPFunction.apply, ref_net),
]


def _shapes(kind: str, rows: int = ROWS) -> list[tuple[int, ...]]:
    return {
        "relu": [(rows, IN)],
        "layer": [(rows, IN), (HIDDEN, IN), (HIDDEN,)],
        "net": [(rows, IN), (HIDDEN, IN), (HIDDEN,), (OUT, HIDDEN), (OUT,)],
    }[kind]


def make_args(kind: str, dtype=torch.float64, device="cpu", exact=False, rows=ROWS):
    """Fresh random arguments. `exact`: multiples of 1/8 in [-1, 1], which every dtype holds
    exactly, so that the ReLU decisions of a 16-bit run and of its float64 reference agree
    (and small enough that float16's fourth-order terms stay finite)."""

    def draw(shape):
        if exact:
            return (torch.randint(-8, 9, shape, device=device) / 8).to(dtype)
        return torch.randn(shape, dtype=dtype, device=device)

    return tuple(draw(s) for s in _shapes(kind, rows))


def _loss(out) -> torch.Tensor:
    return sum(o.square().sum() for o in tree_leaves(out))


def _forward_ad(f, args, tangents):
    with fwAD.dual_level():
        out = f(*(fwAD.make_dual(a, t) for a, t in zip(args, tangents)))
        return tree_map(lambda o: fwAD.unpack_dual(o).tangent, out)


def _stacked(args, batch=3):
    """Each argument stacked with scaled copies: a batch of different weights (or inputs)."""
    return tuple(torch.stack([a * (1 + 0.5 * i) for i in range(batch)]) for a in args)


# name -> (function of (f, args, tangents), which kinds it applies to)
TRANSFORMS: dict[str, tuple[Callable[..., Any], tuple[str, ...]]] = {
    "forward_ad": (_forward_ad, ("relu", "layer", "net")),
    "jvp": (lambda f, a, t: jvp(f, a, t), ("relu", "layer", "net")),
    "jacfwd": (
        lambda f, a, t: jacfwd(f, argnums=tuple(range(len(a))))(*a),
        ("relu", "layer", "net"),
    ),
    "vjp": (
        lambda f, a, t: vjp(f, *a)[1](tree_map(torch.ones_like, f(*a))),
        ("relu", "layer", "net"),
    ),
    "grad": (
        lambda f, a, t: grad(lambda *b: _loss(f(*b)), argnums=tuple(range(len(a))))(*a),
        ("relu", "layer", "net"),
    ),
    "jacrev": (
        lambda f, a, t: jacrev(f, argnums=tuple(range(len(a))))(*a),
        ("relu", "layer", "net"),
    ),
    "hessian": (
        lambda f, a, t: hessian(lambda *b: _loss(f(*b)), argnums=tuple(range(len(a))))(*a),
        ("relu", "layer", "net"),
    ),
    "jacrev_jacrev": (
        lambda f, a, t: jacrev(jacrev(lambda *b: _loss(f(*b))))(*a),
        ("relu", "layer", "net"),
    ),
    "grad_of_grad": (
        lambda f, a, t: grad(
            lambda *b: grad(lambda *c: _loss(f(*c)))(*b).square().sum(),
            argnums=tuple(range(len(a))),
        )(*a),
        ("relu", "layer", "net"),
    ),
    "vmap_x": (
        lambda f, a, t: vmap(f, in_dims=(1,) + (None,) * (len(a) - 1))(
            torch.stack([a[0], -a[0]], 1), *a[1:]
        ),
        ("relu", "layer", "net"),
    ),
    "vmap_params": (
        lambda f, a, t: vmap(f, in_dims=(None,) + (0,) * (len(a) - 1))(a[0], *_stacked(a[1:])),
        ("layer", "net"),
    ),
    "vmap_all": (lambda f, a, t: vmap(f)(*_stacked(a)), ("relu", "layer", "net")),
    "vmap_jvp": (
        lambda f, a, t: vmap(lambda *tt: jvp(f, a, tt)[1])(*_stacked(t)),
        ("relu", "layer", "net"),
    ),
    "per_sample_grad": (
        lambda f, a, t: vmap(
            grad(lambda x, *p: _loss(f(x.unsqueeze(0), *p)), argnums=tuple(range(len(a)))),
            in_dims=(0,) + (None,) * (len(a) - 1),
        )(*a),
        ("relu", "layer", "net"),
    ),
    "functional_jacobian": (
        lambda f, a, t: torch.autograd.functional.jacobian(f, a, vectorize=True),
        ("relu", "layer", "net"),
    ),
    "functional_jacobian_forward": (
        lambda f, a, t: torch.autograd.functional.jacobian(
            f, a, vectorize=True, strategy="forward-mode"
        ),
        ("relu", "layer", "net"),
    ),
    "functional_hessian": (
        lambda f, a, t: torch.autograd.functional.hessian(
            lambda *b: _loss(f(*b)), a, vectorize=True
        ),
        ("relu", "layer", "net"),
    ),
}

# The two-layer entries run on both CPU paths of the two-layer ops (TWOLAYER_EXT_CPU_FUSED_MLP):
# layer by layer, and fully fused with the hidden activation recomputed in backward.
PATHS = {"layered": "0", "fused": "1"}


def _paths(entry: Entry) -> list[str | None]:
    return list(PATHS) if entry.kind == "net" else [None]


CASES = [
    pytest.param(e, name, path, id=f"{e.name}-{name}" + (f"-{path}" if path else ""))
    for e in ENTRIES
    for name, (_, kinds) in TRANSFORMS.items()
    if e.kind in kinds
    for path in _paths(e)
]
ENTRY_PATHS = [
    pytest.param(e, path, id=e.name + (f"-{path}" if path else ""))
    for e in ENTRIES
    for path in _paths(e)
]


def _set_path(monkeypatch, path: str | None) -> None:
    if path is not None:
        monkeypatch.setenv("TWOLAYER_EXT_CPU_FUSED_MLP", PATHS[path])


def _assert_all_close(got, want, rtol=1e-9, atol=1e-9) -> None:
    got, want = tree_leaves(got), tree_leaves(want)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.detach(), w.detach(), rtol=rtol, atol=atol, equal_nan=True)


@pytest.mark.parametrize("entry,transform,path", CASES)
def test_transform_matches_reference_float64(entry, transform, path, monkeypatch):
    _set_path(monkeypatch, path)
    fn, _ = TRANSFORMS[transform]
    args = make_args(entry.kind)
    tangents = make_args(entry.kind)
    _assert_all_close(fn(entry.ext, args, tangents), fn(entry.ref, args, tangents))


# Every transform in the CPU ops' other dtypes, on exactly representable data, within the
# dtype's tolerance of the float64 reference.
@pytest.mark.parametrize(
    "dtype", [d for d in CPU_DTYPES if d != torch.float64], ids=lambda d: str(d)[6:]
)
@pytest.mark.parametrize(
    "entry,transform",
    [
        pytest.param(e, t, id=f"{e.name}-{t}")
        for e in ENTRIES
        for t, (_, kinds) in TRANSFORMS.items()
        if e.kind in kinds
    ],
)
def test_transform_every_dtype(entry, transform, dtype):
    fn, _ = TRANSFORMS[transform]
    args = make_args(entry.kind, dtype, exact=True)
    tangents = make_args(entry.kind, dtype, exact=True)
    got = tree_leaves(fn(entry.ext, args, tangents))
    want = tree_leaves(
        fn(entry.ref, tuple(a.double() for a in args), tuple(t.double() for t in tangents))
    )
    assert len(got) == len(want)
    # grad_of_grad differentiates a loss of squared gradients: fourth-order terms, whose 16-bit
    # roundings compound. On these inputs torch's own bfloat16 computation of the reference
    # network errs by up to 1.24x the dtype's tolerance (2000 seeded draws; TwoLayerMLPFunction's
    # errors had the same median, 99th percentile and maximum), so that transform gets twice
    # the 16-bit tolerance.
    slack = 2.0 if transform == "grad_of_grad" and dtype.itemsize == 2 else 1.0
    for g, w in zip(got, want):
        assert g.dtype == dtype
        assert_close(g, w, dtype, f"{entry.name} {transform}", slack)


def test_tangent_semantics_like_torch():
    """relu'(0) = 0 (an exactly-zero pre-activation passes no tangent) and NaN propagates
    as in the forward pass, under forward AD as in torch's own relu(linear)."""
    x = torch.zeros(4, 3, dtype=torch.float64)
    x[1, 0] = float("nan")
    x[2] = 1.0
    w, b = torch.ones(5, 3, dtype=torch.float64), torch.zeros(5, dtype=torch.float64)
    b[0] = -3.0  # row 2: pre-activation exactly 0 in column 0
    tangents = tuple(torch.randn_like(t) for t in (x, w, b))
    got = _forward_ad(twolayer_ext.linear_relu, (x, w, b), tangents)
    want = _forward_ad(ref_layer, (x, w, b), tangents)
    assert got[2, 0] == 0 and got[0].eq(0).all()
    assert got[1].isnan().all()
    torch.testing.assert_close(got, want, equal_nan=True)


# gradcheck and gradgradcheck in every mode PyTorch's OpInfo tests use. The slow mode (every
# Jacobian entry) carries a marker: scripts/sanitize_cpu.sh leaves it out by that.
GRADCHECK_MODES = [
    pytest.param(False, id="slow", marks=pytest.mark.gradcheck_slow_mode),
    pytest.param(True, id="fast"),
]


def _kink_free_args(kind: str, device: str = "cpu", rows: int = ROWS):
    """float64 arguments that require grad, with no pre-activation within 1e-3 of the kink
    (finite differences are meaningless there)."""
    args = make_args(kind, device=device, rows=rows)
    if kind == "relu":
        x = args[0]
        x[x.abs() < 0.05] = 0.5
    else:
        away_from_kink(*args[:3])
    return tuple(a.requires_grad_() for a in args)


def _gradcheck_every_mode(fn, args, fast_mode: bool = False) -> None:
    """gradcheck (reverse, forward, batched) and gradgradcheck (reverse and forward over
    reverse, batched) of fn at args."""
    batched = {"check_batched_grad": True, "fast_mode": fast_mode}
    assert torch.autograd.gradcheck(
        fn, args, check_forward_ad=True, check_batched_forward_grad=True, **batched
    )
    assert torch.autograd.gradgradcheck(fn, args, check_fwd_over_rev=True, **batched)


@pytest.mark.parametrize("fast_mode", GRADCHECK_MODES)
@pytest.mark.parametrize("entry,path", ENTRY_PATHS)
def test_gradcheck_every_mode(entry, path, fast_mode, monkeypatch):
    _set_path(monkeypatch, path)
    _gradcheck_every_mode(entry.ext, _kink_free_args(entry.kind), fast_mode)


def _backward_op_cases(device: str = "cpu"):
    """The backward ops, as functions of their differentiable arguments (the packed mask and
    the output mask fixed), with float64 arguments that require grad."""
    kw = {"dtype": torch.float64, "device": device}
    x, w1, b1, w2, _ = _kink_free_args("net", device)
    x, w1, b1, w2 = (t.detach() for t in (x, w1, b1, w2))
    hidden = ref_layer(x, w1, b1)
    hidden[hidden == 0] = -0.5  # dropped units, away from the kink
    _, mask = ops.linear_relu(x, w1, b1)
    g_hidden, g_out = torch.randn(ROWS, HIDDEN, **kw), torch.randn(ROWS, OUT, **kw)
    y = torch.randn(ROWS, HIDDEN, **kw)
    y[y.abs() < 0.05] = 0.5
    all3, all5 = [True] * 3, [True] * 5
    return {
        "linear_relu_backward": (
            lambda g, x, w: ops.linear_relu_backward(g, x, w, mask, all3),
            (g_hidden, x, w1),
        ),
        "relu_backward": (ops.relu_backward, (g_hidden, y)),
        "two_layer_backward": (
            lambda g, x, w1, w2, h: ops.two_layer_backward(g, x, w1, w2, h, all5),
            (g_out, x, w1, w2, hidden),
        ),
        "two_layer_backward_recompute": (
            lambda g, x, w1, b1, w2: ops.two_layer_backward_recompute(g, x, w1, b1, w2, all5),
            (g_out, x, w1, b1, w2),
        ),
    }


@pytest.mark.parametrize("fast_mode", GRADCHECK_MODES)
@pytest.mark.parametrize(
    "op",
    ["linear_relu_backward", "relu_backward", "two_layer_backward", "two_layer_backward_recompute"],
)
@pytest.mark.parametrize("path", list(PATHS))
def test_backward_ops_gradcheck_every_mode(op, fast_mode, path, monkeypatch):
    _set_path(monkeypatch, path)
    fn, args = _backward_op_cases()[op]
    _gradcheck_every_mode(fn, tuple(a.clone().requires_grad_() for a in args), fast_mode)


@requires_cuda
@pytest.mark.parametrize("entry,path", ENTRY_PATHS)
def test_gradcheck_every_mode_cuda(entry, path, monkeypatch):
    _set_path(monkeypatch, path)
    _gradcheck_every_mode(entry.ext, _kink_free_args(entry.kind, device="cuda"))


@requires_cuda
@pytest.mark.parametrize("entry,transform,path", CASES)
def test_transform_matches_reference_cuda(entry, transform, path, monkeypatch):
    _set_path(monkeypatch, path)
    fn, _ = TRANSFORMS[transform]
    args = make_args(entry.kind, device="cuda")
    tangents = make_args(entry.kind, device="cuda")
    _assert_all_close(fn(entry.ext, args, tangents), fn(entry.ref, args, tangents))


class _OpLog(TorchDispatchMode):
    """Records the ops that reach the dispatcher below every torch.func layer, with the
    shapes of their tensor arguments there."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, list[tuple[int, ...]]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        shapes = [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]
        self.calls.append((str(func.overloadpacket), shapes))
        return func(*args, **(kwargs or {}))


# Folding: vmap over the input with shared weights runs the kernel once over every sample.
@pytest.mark.parametrize(
    "op,call",
    [
        ("twolayer_ext.linear_relu_output", lambda x, p: twolayer_ext.linear_relu(x, p[0], p[1])),
        ("twolayer_ext.two_layer", lambda x, p: twolayer_ext.two_layer_mlp(x, *p)),
        ("twolayer_ext.relu", lambda x, p: twolayer_ext.relu(x)),
    ],
    ids=["linear_relu", "two_layer", "relu"],
)
def test_vmap_over_input_runs_the_kernel_once(op, call):
    batch = 7
    xs = torch.randn(batch, ROWS, IN)
    params = make_args("net", torch.float32)[1:]
    with _OpLog() as log:
        out = vmap(call, in_dims=(0, None))(xs, params)
    # One call of the op, below vmap, on every sample's rows; nothing else (no decomposition).
    assert [shapes[0] for name, shapes in log.calls if name == op] == [(batch, ROWS, IN)], log.calls
    assert not any(name.startswith("aten.") and "mm" in name for name, _ in log.calls), log.calls
    torch.testing.assert_close(out, torch.stack([call(x, params) for x in xs]))


def test_vmap_linear_relu_mask_is_per_sample():
    x, w, b = make_args("layer")
    xs = torch.stack([x, -x, 2 * x])
    ys, masks = vmap(ops.linear_relu, in_dims=(0, None, None))(xs, w, b)
    for xi, yi, mi in zip(xs, ys, masks):
        y_ref, m_ref = ops.linear_relu(xi, w, b)
        assert torch.equal(mi, m_ref)
        torch.testing.assert_close(yi, y_ref)


# No silent wrong derivative: the training step is not differentiable and says so.
def _sgd_step_args():
    x, w1, b1, w2, b2 = make_args("net")
    return x, torch.randn(ROWS, OUT, dtype=torch.float64), w1, b1, w2, b2


@pytest.mark.parametrize(
    "mode,match",
    [
        ("forward_ad", "does not support forward-mode AD"),
        ("jvp", "does not support forward-mode AD"),
        ("grad", "cannot run on the tensors of torch.func's grad"),
        ("vjp", "cannot run on the tensors of torch.func's grad"),
        ("vmap", "does not support vmap"),
        ("functional_jacobian", "is not differentiable, but x requires grad"),
        ("x_requires_grad", "is not differentiable, but x requires grad"),
    ],
    ids=lambda v: v if " " not in v else "",
)
def test_sgd_step_refuses_every_transform_clearly(mode, match):
    x, y, w1, b1, w2, b2 = _sgd_step_args()

    def step(x):
        return twolayer_ext.two_layer_sgd_step(
            x, y, w1.clone(), b1.clone(), w2.clone(), b2.clone(), 0.1
        )

    run = {
        "forward_ad": lambda: _forward_ad(step, (x,), (torch.randn_like(x),)),
        "jvp": lambda: jvp(step, (x,), (torch.randn_like(x),)),
        "grad": lambda: grad(step)(x),
        "vjp": lambda: vjp(step, x),
        "vmap": lambda: vmap(step)(torch.stack([x, x])),
        "functional_jacobian": lambda: torch.autograd.functional.jacobian(step, x, vectorize=True),
        "x_requires_grad": lambda: step(x.requires_grad_()),
    }[mode]
    with pytest.raises(RuntimeError, match=match):
        run()


# torch.compile of a function that takes a jvp of the layers: the eager tangent, or a clear
# error (pytorch/pytorch#192985: Dynamo may drop an autograd.Function's custom jvp).
@pytest.mark.parametrize(
    "entry,fullgraph",
    [pytest.param(e, True, id=f"{e.name}-fullgraph") for e in ENTRIES]
    # Dynamo refuses the autograd.Functions with a custom jvp in one graph: with graph breaks
    # it runs them eagerly.
    + [
        pytest.param(e, False, id=f"{e.name}-graph-breaks")
        for e in ENTRIES
        if e.name.endswith("Function")
    ],
)
def test_compile_of_jvp_gives_the_eager_tangent(entry, fullgraph):
    args, tangents = make_args(entry.kind), make_args(entry.kind)

    def fn(*a):
        return jvp(entry.ext, a[: len(args)], a[len(args) :])

    torch._dynamo.reset()
    eager = fn(*args, *tangents)
    try:
        compiled = torch.compile(fn, fullgraph=fullgraph, backend="aot_eager")(*args, *tangents)
    except torch._dynamo.exc.Unsupported as e:
        # Dynamo refuses to trace an autograd.Function with a custom jvp: an error, not a
        # wrong tangent.
        assert fullgraph and "jvp" in str(e) and entry.name.endswith("Function")
        return
    _assert_all_close(compiled, eager)


# The use cases, each against nn.Sequential(Linear, ReLU, Linear).
def _net_and_sequential(d_in=IN, hidden=HIDDEN, d_out=OUT):
    net = twolayer_ext.TwoLayerNet(d_in, hidden, d_out).double()
    seq = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out)).double()
    seq.load_state_dict(twolayer_ext.twolayer_state_dict_to_sequential(net.state_dict()))
    return net, seq


def _params(model):
    return {k: v.detach() for k, v in model.named_parameters()}


def _as_sequential(tree):
    return twolayer_ext.twolayer_state_dict_to_sequential(tree)


@pytest.mark.parametrize("path", list(PATHS))
def test_per_sample_gradients(path, monkeypatch):
    _set_path(monkeypatch, path)
    net, seq = _net_and_sequential()
    xs, ys = torch.randn(16, IN, dtype=torch.float64), torch.randn(16, OUT, dtype=torch.float64)

    def per_sample(model):
        def loss(params, x, y):
            out = functional_call(model, params, (x.unsqueeze(0),))
            return F.mse_loss(out, y.unsqueeze(0), reduction="sum")

        return vmap(grad(loss), in_dims=(None, 0, 0))(_params(model), xs, ys)

    with _OpLog() as log:
        got = per_sample(net)
    want = per_sample(seq)
    _assert_all_close(_as_sequential(got), want)
    # The network's forward ran once, on all 16 samples' rows (vmap folded into rows).
    forward = [s[0] for n, s in log.calls if n.startswith("twolayer_ext.two_layer")]
    assert forward and all(shape == (16, 1, IN) for shape in forward), log.calls
    # Summed per-sample gradients are the batch gradient.
    F.mse_loss(net(xs), ys, reduction="sum").backward()
    for name, p in net.named_parameters():
        torch.testing.assert_close(got[name].sum(0), p.grad, rtol=1e-9, atol=1e-9)


def test_model_ensembling():
    nets = [_net_and_sequential() for _ in range(4)]
    x = torch.randn(8, IN, dtype=torch.float64)

    def ensemble(models):
        params, buffers = stack_module_state(models)
        base = copy.deepcopy(models[0]).to("meta")

        def run(p, b, x):
            return functional_call(base, (p, b), (x,))

        out = vmap(run, in_dims=(0, 0, None))(params, buffers, x)
        grads = vmap(grad(lambda p, b, x: run(p, b, x).square().sum()), in_dims=(0, 0, None))(
            params, buffers, x
        )
        return out, grads

    out, grads = ensemble([n for n, _ in nets])
    out_ref, grads_ref = ensemble([s for _, s in nets])
    _assert_all_close(out, out_ref)
    _assert_all_close(_as_sequential(grads), grads_ref)


@pytest.mark.parametrize("strategy", ["reverse-mode", "forward-mode"])
@pytest.mark.parametrize("path", list(PATHS))
def test_vectorized_jacobian(strategy, path, monkeypatch):
    _set_path(monkeypatch, path)
    net, seq = _net_and_sequential()
    x = torch.randn(6, IN, dtype=torch.float64)
    got = torch.autograd.functional.jacobian(net, x, vectorize=True, strategy=strategy)
    want = torch.autograd.functional.jacobian(seq, x, vectorize=True, strategy=strategy)
    _assert_all_close(got, want)


@pytest.mark.parametrize("path", list(PATHS))
def test_physics_informed_step(path, monkeypatch):
    """A PINN step: u(x) = TwoLayerNet(x) with x in R^3; the loss reads the Laplacian of u
    (torch.func.hessian: forward over reverse) and the squared norm of its gradient, at
    collocation points; its parameter gradient (reverse over that) equals nn.Sequential's.
    A ReLU network is piecewise linear, so its Laplacian is 0 almost everywhere; the
    gradient term carries the parameters' dependence."""
    _set_path(monkeypatch, path)
    net, seq = _net_and_sequential(3, 16, 1)
    points, source = torch.randn(32, 3, dtype=torch.float64), torch.randn(32, dtype=torch.float64)

    def loss(model, params):
        def u(x):
            return functional_call(model, params, (x,)).squeeze(-1)

        laplacian = vmap(lambda x: torch.trace(hessian(u)(x)))(points)
        grad_u = vmap(grad(u))(points)
        return ((laplacian - source) ** 2).mean() + (
            (grad_u.square().sum(-1) - 1) ** 2
        ).mean(), laplacian

    got = grad(lambda p: loss(net, p)[0])(_params(net))
    want = grad(lambda p: loss(seq, p)[0])(_params(seq))
    _assert_all_close(_as_sequential(got), want)
    assert any(g.abs().sum() > 0 for g in got.values())
    _assert_all_close(loss(net, _params(net)), loss(seq, _params(seq)))
