"""linear_relu / linear_relu_backward / LinearReLUFunction: everything about the op.

Values against the pure-torch reference (every dtype, device, layout), autograd against
torch, gradcheck and double backward, opcheck, autocast, and the errors bad input gets.
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import (
    AUTOCAST_CASES,
    DEVICE_DTYPES,
    DEVICES,
    ERR,
    assert_close,
    assert_requested_grads,
    away_from_kink,
    f32,
    make_weight,
    make_x,
    requires_cuda,
)
from torch import nn

import twolayer_ext
from twolayer_ext import reference

# (leading shape of x, in_features, out_features)
SHAPES = [
    ((0,), 5, 3),
    ((1,), 7, 4),
    ((5,), 1, 3),
    ((6,), 9, 1),
    ((33,), 65, 17),
    ((64,), 1000, 100),  # the seed's first layer
    ((64,), 100, 10),  # the seed's second layer
    ((2, 3), 11, 6),  # 3-D input
    ((), 12, 5),  # 1-D input, as nn.Linear accepts
    ((3, 0), 4, 9),  # zero-size batch inside a 3-D input
    ((5,), 3, 0),  # no output features, as nn.Linear(3, 0) allows
    ((70,), 130, 72),  # crosses a 64-wide CUDA tile in every dimension
    ((4100,), 8, 16),  # narrow rows of whole mask bytes, split across CPU threads
]
LAYOUTS = ["contiguous", "sliced", "transposed"]


def _ids(s):
    return f"{'x'.join(map(str, s[0])) or 'vec'}-{s[1]}-{s[2]}"


def _inputs(lead, in_f, out_f, dtype, device, layout, w_t, bias):
    x = make_x((*lead, in_f), dtype, device, layout)
    w = make_weight(out_f, in_f, dtype, device, transposed=w_t)
    b = torch.randn(out_f, dtype=dtype, device=device) if bias else None
    return x, w, b


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("w_t", [False, True], ids=["w", "wT"])
def test_forward_and_backward_ops_match_reference(device, dtype, shape, bias, layout, w_t):
    lead, in_f, out_f = shape
    x, w, b = _inputs(lead, in_f, out_f, dtype, device, layout, w_t, bias)
    originals = [t.clone() for t in (x, w, b) if t is not None]

    y, mask = torch.ops.twolayer_ext.linear_relu(x, w, b)
    ref64 = reference.linear_relu(x.double(), w.double(), None if b is None else b.double())
    assert y.dtype == dtype and y.device == x.device
    assert_close(y, ref64, dtype, "y")
    # The saved mask is exactly the ReLU decision of the returned output.
    assert torch.equal(
        mask.cpu(), reference.pack_mask(~(y <= 0).reshape(math.prod(lead), out_f)).cpu()
    )

    grad_y = make_x(y.shape, dtype, device, layout)
    gx, gw, gb = torch.ops.twolayer_ext.linear_relu_backward(grad_y, x, w, mask, [True, True, bias])
    rx, rw, rb = reference.linear_relu_backward(
        grad_y.double(), x.double(), w.double(), mask, [True, True, bias]
    )
    assert gx.dtype == dtype and gw.dtype == dtype
    assert_close(gx, rx, dtype, "grad_x")
    assert_close(gw, rw, dtype, "grad_weight")
    if bias:
        assert_close(gb, rb, dtype, "grad_bias")
    else:
        assert gb is None
    # Inputs are never modified.
    for before, after in zip(originals, [t for t in (x, w, b) if t is not None]):
        assert torch.equal(before, after)


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize(
    "output_mask",
    [(True, False, False), (False, True, False), (False, False, True), (False, False, False)],
)
def test_backward_computes_only_requested(device, dtype, output_mask):
    x, w, b = _inputs((9,), 13, 10, dtype, device, "contiguous", False, True)
    y, mask = torch.ops.twolayer_ext.linear_relu(x, w, b)
    grad_y = torch.randn_like(y)
    got = torch.ops.twolayer_ext.linear_relu_backward(grad_y, x, w, mask, list(output_mask))
    ref = reference.linear_relu_backward(grad_y.double(), x.double(), w.double(), mask, output_mask)
    assert_requested_grads(got, ref, output_mask, ["x", "weight", "bias"], dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_autograd_matches_torch_float64(device, bias):
    """End to end through autograd, against torch's own relu(linear) and its gradients."""
    x, w, b = _inputs((4, 16), 40, 24, torch.float64, device, "sliced", True, bias)
    params = [t.requires_grad_() for t in (x, w, b) if t is not None]
    y = twolayer_ext.linear_relu(x, w, b)
    y_ref = reference.linear_relu(x, w, b)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, params, g)
    want = torch.autograd.grad(y_ref, params, g)
    assert_close(y, y_ref, torch.float64, "y")
    for a, e in zip(got, want):
        assert_close(a, e, torch.float64, "grad")


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_expanded_grad_from_sum(device, dtype):
    """loss.sum().backward() hands backward a stride-0 grad_y; it must be read correctly."""
    x, w, b = _inputs((8,), 12, 7, dtype, device, "contiguous", False, True)
    x.requires_grad_()
    y = twolayer_ext.linear_relu(x, w, b)
    (gx,) = torch.autograd.grad(y.sum(), x)
    keep = ~(y.detach() <= 0)
    assert_close(gx, keep.double() @ w.double(), dtype, "grad_x")


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_nan_and_inf_propagate_like_torch(device, dtype):
    x, w, b = _inputs((6,), 8, 5, dtype, device, "contiguous", False, True)
    x[0, 0] = float("nan")
    x[1, 2] = float("inf")
    x[2, 3] = -float("inf")
    y, mask = torch.ops.twolayer_ext.linear_relu(x, w, b)
    ref = reference.linear_relu(x.double(), w.double(), b.double())
    assert_close(y, ref, dtype, "y")  # NaN positions must match exactly
    grad_y = torch.randn_like(y)
    gx, gw, gb = torch.ops.twolayer_ext.linear_relu_backward(grad_y, x, w, mask, [True, True, True])
    rx, rw, rb = reference.linear_relu_backward(
        grad_y.double(), x.double(), w.double(), mask, [True, True, True]
    )
    assert_close(gx, rx, dtype, "grad_x")
    assert_close(gb, rb, dtype, "grad_bias")
    assert torch.equal(gw.isnan().cpu(), rw.isnan().cpu())


_SAME_WIDTH_INT = {
    torch.float64: torch.int64,
    torch.float32: torch.int32,
    torch.bfloat16: torch.int16,
    torch.float16: torch.int16,
}


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("shape", [((64,), 1000, 100), ((33,), 65, 17), ((2, 3), 11, 6)], ids=_ids)
@pytest.mark.parametrize("gemm", ["kernels", "aten"])
def test_output_alone_has_the_masked_ops_bits(device, dtype, shape, gemm, monkeypatch):
    """linear_relu_output, which packs no mask (the CPU's float32 kernel applies the ReLU in
    its stores), returns exactly linear_relu's output (the ReLU applied by the pass that packs
    the mask): NaN and inf kept, negatives and zeros stored as +0, on our kernels and on
    ATen's products (TWOLAYER_EXT_CPU_GEMM=aten)."""
    if gemm == "aten":
        monkeypatch.setenv("TWOLAYER_EXT_CPU_GEMM", "aten")
    lead, in_f, out_f = shape
    x, w, b = _inputs(lead, in_f, out_f, dtype, device, "contiguous", False, True)
    rows = x.view(-1, in_f)
    rows[0, 0] = float("nan")
    rows[1, 1] = float("inf")
    w[0, 1], w[1, 1] = 1.0, -1.0  # row 1's first output is +inf (kept), its second -inf (0)
    rows[2] = 0.0
    b[: out_f // 2] = 0.0  # row 2's first outputs are exact zeros
    alone = torch.ops.twolayer_ext.linear_relu_output(x, w, b)
    y, _ = torch.ops.twolayer_ext.linear_relu(x, w, b)
    bits = _SAME_WIDTH_INT[dtype]
    assert torch.equal(alone.view(bits), y.view(bits))
    assert alone.isnan().any() and alone.isinf().any() and (alone == 0).any()


@pytest.mark.parametrize("device", DEVICES)
def test_relu_at_exact_zero_has_zero_gradient(device):
    """relu'(0) = 0: an output of exactly 0 blocks the gradient, as in torch."""
    x = torch.zeros(3, 4, device=device, requires_grad=True)
    w = torch.randn(5, 4, device=device, requires_grad=True)
    y = twolayer_ext.linear_relu(x, w)
    (gx, gw) = torch.autograd.grad(y, (x, w), torch.randn_like(y))
    assert torch.equal(y, torch.zeros_like(y))
    assert torch.equal(gx, torch.zeros_like(gx)) and torch.equal(gw, torch.zeros_like(gw))


def test_modifying_saved_input_in_place_raises():
    x = torch.randn(4, 6, requires_grad=True)
    w = torch.randn(3, 6, requires_grad=True)
    h = x * 1.0
    y = twolayer_ext.linear_relu(h, w)
    h.add_(1.0)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.sum().backward()


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_masked_out_nan_and_inf_gradients_become_zero(device, dtype):
    """Where the ReLU dropped an output, even a NaN/Inf incoming gradient contributes 0
    (torch's threshold_backward selects, it does not multiply). 19 outputs: two full
    groups of eight (the CPU's vectorised float path) and a tail."""
    x, w, b = _inputs((6,), 11, 19, dtype, device, "contiguous", False, True)
    y, mask = torch.ops.twolayer_ext.linear_relu(x, w, b)
    grad_y = torch.randn_like(y)
    dropped = (y == 0).nonzero()
    kept = (y != 0).nonzero()
    assert len(dropped) >= 3 and len(kept) >= 3, "random inputs gave a degenerate ReLU pattern"
    for (i, j), v in zip(dropped[:3].tolist(), [float("nan"), float("inf"), -float("inf")]):
        grad_y[i, j] = v
    i, j = kept[0].tolist()
    grad_y[i, j] = float("nan")  # a kept NaN gradient propagates
    got = torch.ops.twolayer_ext.linear_relu_backward(grad_y, x, w, mask, [True, True, True])
    want = reference.linear_relu_backward(
        grad_y.double(), x.double(), w.double(), mask, [True, True, True]
    )
    for g, r, name in zip(got, want, ["grad_x", "grad_weight", "grad_bias"]):
        assert torch.equal(g.isnan().cpu(), r.isnan().cpu()), name
        assert_close(g, r, dtype, name)


# (bias?, which of x, weight, bias require grad); without a bias at least x or weight must.
REQUIRES = [
    (bias, req)
    for bias in (True, False)
    for req in [
        (True, True, True),
        (True, False, False),
        (False, True, False),
        (False, False, True),
        (False, True, True),
    ]
    if bias or req[0] or req[1]
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bias,requires", REQUIRES, ids=str)
def test_linear_relu_gradcheck(device, bias, requires):
    x = torch.randn(2, 3, 5, dtype=torch.float64, device=device)
    w = torch.randn(4, 5, dtype=torch.float64, device=device)
    b = torch.randn(4, dtype=torch.float64, device=device) if bias else None
    away_from_kink(x, w, b)
    inputs = [x, w, b]
    for t, r in zip(inputs, requires):
        if t is not None:
            t.requires_grad_(r)
    assert torch.autograd.gradcheck(twolayer_ext.linear_relu, inputs)
    # The op called directly through torch.ops is differentiable as well.
    assert torch.autograd.gradcheck(lambda *a: torch.ops.twolayer_ext.linear_relu(*a)[0], inputs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_linear_relu_gradgradcheck(device, bias):
    """Double backward (gradient penalties): second derivatives match finite differences."""
    x = torch.randn(3, 5, dtype=torch.float64, device=device)
    w = torch.randn(4, 5, dtype=torch.float64, device=device)
    b = torch.randn(4, dtype=torch.float64, device=device) if bias else None
    away_from_kink(x, w, b)
    inputs = [t.requires_grad_() for t in (x, w, b) if t is not None]
    fn = twolayer_ext.linear_relu if bias else (lambda x, w: twolayer_ext.linear_relu(x, w))
    assert torch.autograd.gradgradcheck(fn, inputs)
    assert torch.autograd.gradgradcheck(
        lambda *a: torch.ops.twolayer_ext.linear_relu(*a, *([] if bias else [None]))[0], inputs
    )


def test_gradient_penalty_matches_torch():
    """A WGAN-GP style penalty, ||d out / d x||^2, differentiated w.r.t. the weights."""
    x = torch.randn(8, 6, dtype=torch.float64, requires_grad=True)
    w = torch.randn(5, 6, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True)
    v = torch.randn(5, dtype=torch.float64)

    def penalty(f):
        out = (f(x, w, b) * v).sum()
        (gx,) = torch.autograd.grad(out, x, create_graph=True)
        return torch.autograd.grad(gx.square().sum(), (w, b), allow_unused=True)

    got = penalty(twolayer_ext.linear_relu)
    want = penalty(lambda x, w, b: torch.relu(torch.nn.functional.linear(x, w, b)))
    for g, r in zip(got, want):
        r = torch.zeros_like(g) if r is None else r
        g = torch.zeros_like(r) if g is None else g
        assert torch.allclose(g, r, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_linear_relu_function_gradcheck(device):
    """The public autograd.Function (the functional API calls the op directly): gradcheck
    on .apply itself."""
    kw = {"dtype": torch.float64, "device": device}
    x, w1, b1 = torch.randn(4, 5, **kw), torch.randn(3, 5, **kw), torch.randn(3, **kw)
    away_from_kink(x, w1, b1)
    for t in (x, w1, b1):
        t.requires_grad_()
    assert torch.autograd.gradcheck(twolayer_ext.LinearReLUFunction.apply, (x, w1, b1))


def test_linear_relu_function_binds_as_forward_is_declared():
    """apply binds its arguments by forward's signature (stored on forward once, autograd.py's
    _signature_once): bias defaults to None and can be passed by keyword; the gradients are
    the reference's either way."""
    x, w, b = torch.randn(4, 5), torch.randn(3, 5), torch.randn(3)
    for t in (x, w, b):
        t.requires_grad_()
    for args, kwargs, bias in (((x, w), {}, None), ((x, w), {"bias": b}, b)):
        got = twolayer_ext.LinearReLUFunction.apply(*args, **kwargs)
        want = reference.linear_relu(x, w, bias)
        torch.testing.assert_close(got, want)
        inputs = (x, w) if bias is None else (x, w, b)
        g = torch.randn_like(want)
        for gg, gw in zip(
            torch.autograd.grad(got, inputs, g), torch.autograd.grad(want, inputs, g)
        ):
            torch.testing.assert_close(gg, gw)


def _samples(device):
    for lead, in_f, out_f, bias in [((4,), 6, 3, True), ((2, 3), 5, 9, False), ((0,), 3, 2, True)]:
        for rg, w_t in ((False, False), (True, False), (True, True)):
            x = torch.randn(*lead, in_f, device=device, requires_grad=rg)
            w = make_weight(out_f, in_f, torch.float32, device, transposed=w_t).requires_grad_(rg)
            b = torch.randn(out_f, device=device, requires_grad=rg) if bias else None
            yield x, w, b


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck_linear_relu(device):
    for x, w, b in _samples(device):
        torch.library.opcheck(torch.ops.twolayer_ext.linear_relu.default, (x, w, b))
        with torch.no_grad():
            y, mask = torch.ops.twolayer_ext.linear_relu(x, w, b)
        for om in ([True, True, True], [False, True, False], [True, False, b is not None]):
            torch.library.opcheck(
                torch.ops.twolayer_ext.linear_relu_backward.default,
                (torch.randn_like(y), x.detach(), w.detach(), mask, om),
            )


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("x_grad", [False, True], ids=["weight-grad-only", "both"])
def test_weight_grad_in_the_weight_layout(device, x_grad):
    """A column-major weight (the tutorial's x.mm(w1), passed as w1.t()) gets a column-major
    gradient from the backward op and from the autograd node (which keeps only a stand-in of
    the weight when x needs no gradient), so AccumulateGrad hands it to w1 without a
    transposing copy; a row-major weight gets a row-major one. So does the differentiable
    backward of create_graph=True, as torch's linear does. Values as the reference's."""
    x = torch.randn(7, 5, device=device, requires_grad=x_grad)
    for w_t in (True, False):
        weight = make_weight(3, 5, torch.float32, device, transposed=w_t).requires_grad_()
        y = twolayer_ext.linear_relu(x, weight)
        g = torch.randn_like(y)
        with torch.no_grad():  # as the engine runs it without create_graph
            _, gw, _ = y.grad_fn(g)  # the node's own result, before the layout contract
        assert gw.stride() == weight.stride()
        with torch.no_grad():
            _, mask = torch.ops.twolayer_ext.linear_relu(x, weight, None)
            _, gw_op, _ = torch.ops.twolayer_ext.linear_relu_backward(
                g, x, weight, mask, [False, True, False]
            )
        assert gw_op.stride() == weight.stride()
        (gw_cg,) = torch.autograd.grad(y, weight, g, create_graph=True)
        assert gw_cg.stride() == weight.stride()
        ref = weight.detach().requires_grad_()
        torch.relu(x.detach() @ ref.t()).backward(g)
        assert_close(gw, ref.grad, torch.float32, "grad_weight")
        assert_close(gw_op, ref.grad, torch.float32, "grad_weight (op)")
        assert_close(gw_cg, ref.grad, torch.float32, "grad_weight (create_graph)")


def _t(shape, dtype=torch.float32):
    """A tensor for the bad-input table: random floating data, ones otherwise."""
    if dtype.is_floating_point or dtype.is_complex:
        return torch.randn(shape, dtype=dtype)
    return torch.ones(shape, dtype=dtype)


# id: (x, weight, bias) as (shape, dtype) pairs, and the error message pattern.
F32, F64, I64, BOOL, C64 = torch.float32, torch.float64, torch.int64, torch.bool, torch.complex64
BAD_ARGS = {
    "w-1d": (((4, 5), F32), ((5,), F32), None, r"weight must be 2-D.*\[5\]"),
    "w-3d": (((4, 5), F32), ((2, 3, 5), F32), None, r"weight must be 2-D.*\[2, 3, 5\]"),
    "x-0d": (((), F32), ((3, 5), F32), None, r"x must .*0-d"),
    "in-mismatch": (
        ((4, 6), F32),
        ((3, 5), F32),
        None,
        r"in_features mismatch.*\[4, 6\].*\[3, 5\]",
    ),
    "bias-len": (
        ((4, 5), F32),
        ((3, 5), F32),
        ((4,), F32),
        r"bias must have shape \[out_features\] = \[3\], but got shape \[4\]",
    ),
    "bias-2d": (
        ((4, 5), F32),
        ((3, 5), F32),
        ((1, 3), F32),
        r"bias must have shape .* = \[3\], but got shape \[1, 3\]",
    ),
    "mixed-w": (
        ((4, 5), F32),
        ((3, 5), F64),
        None,
        r"weight to have the same dtype as x \(Float\).*Double",
    ),
    "mixed-b": (((4, 5), F32), ((3, 5), F32), ((3,), F64), r"bias to have the same dtype as x"),
    "int64": (((4, 5), I64), ((3, 5), I64), None, r"x has unsupported dtype Long"),
    "bool": (((4, 5), BOOL), ((3, 5), BOOL), None, r"x has unsupported dtype Bool"),
    "complex": (((4, 5), C64), ((3, 5), C64), None, r"unsupported dtype ComplexFloat"),
}


@pytest.mark.parametrize("case", BAD_ARGS.values(), ids=BAD_ARGS.keys())
def test_linear_relu_rejects(case):
    *specs, pattern = case
    args = [None if spec is None else _t(*spec) for spec in specs]
    with pytest.raises(ERR, match=pattern):
        twolayer_ext.linear_relu(*args)
    with pytest.raises(ERR, match=pattern):
        torch.ops.twolayer_ext.linear_relu(*args)


def test_sparse_input_rejected():
    x = f32(4, 5).to_sparse()
    with pytest.raises((RuntimeError, NotImplementedError), match="linear_relu"):
        torch.ops.twolayer_ext.linear_relu(x, f32(3, 5), None)


def test_backward_rejects_bad_mask():
    x, w = f32(4, 5), f32(3, 5)
    with pytest.raises(ERR, match=r"mask must be a contiguous uint8 tensor of shape \[4, 1\]"):
        torch.ops.twolayer_ext.linear_relu_backward(
            f32(4, 3), x, w, torch.zeros(4, 3, dtype=torch.uint8), [True, True, True]
        )
    with pytest.raises(ERR, match=r"grad_y must have shape \[4, 3\]"):
        torch.ops.twolayer_ext.linear_relu_backward(
            f32(4, 2), x, w, torch.zeros(4, 1, dtype=torch.uint8), [True, True, True]
        )


@requires_cuda
def test_mixed_devices_rejected():
    with pytest.raises(ERR, match="same device"):
        twolayer_ext.linear_relu(f32(4, 5, device="cuda"), f32(3, 5))
    with pytest.raises(ERR, match="same device"):
        twolayer_ext.linear_relu(f32(4, 5), f32(3, 5, device="cuda"))
    with pytest.raises(ERR, match="same device"):
        twolayer_ext.linear_relu(f32(4, 5, device="cuda"), f32(3, 5, device="cuda"), f32(3))


def test_quantized_input_rejected():
    xq = torch.quantize_per_tensor(f32(4, 5), 0.1, 0, torch.qint8)
    with pytest.raises((RuntimeError, NotImplementedError), match="linear_relu"):
        torch.ops.twolayer_ext.linear_relu(xq, f32(3, 5), None)


@pytest.mark.parametrize("device,dtype", AUTOCAST_CASES)
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
