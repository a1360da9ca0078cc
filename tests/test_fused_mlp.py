"""The CPU's fully fused two-layer path (csrc/cpu/two_layer_fused.cpp) at the sizes where
the rule picks it by itself: several row blocks, a last block shorter than the others,
every CPU dtype, inference without the hidden activation, thread-count independence,
NaN, odd strides; and twolayer_ext::two_layer, the output-only op that runs it."""

from __future__ import annotations

import pytest
import torch
from helpers import (
    CPU_DTYPES,
    ERR,
    TOLERANCE,
    assert_close,
    check_nan_like_torch,
    check_two_layer_ops,
    cpu_op_names,
    make_weight,
    make_x,
    saves_only_inputs,
)

import twolayer_ext
from twolayer_ext import reference

# Several 64- to 2048-row blocks each, with a short last block: (rows, in, hidden, out).
# Block rows are 256 KiB / (hidden * element size), clamped to [64, 2048]. The last network's
# hidden width (13) ends the AVX2 broadcast kernel's first layer in a partial vector.
MULTI_BLOCK = [(4099, 32, 64, 16), (700, 20, 1024, 3), (2500, 100, 130, 7), (2100, 7, 13, 5)]


def _params(d_in, hidden, d_out, dtype, bias=True):
    w1 = make_weight(hidden, d_in, dtype, "cpu") / d_in**0.5
    w2 = make_weight(d_out, hidden, dtype, "cpu") / hidden**0.5
    b1 = torch.randn(hidden, dtype=dtype) if bias else None
    b2 = torch.randn(d_out, dtype=dtype) if bias else None
    return w1, b1, w2, b2


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("shape", MULTI_BLOCK, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "sliced"])
def test_ops_match_reference_on_many_blocks(dtype, shape, layout, monkeypatch):
    monkeypatch.delenv("TWOLAYER_EXT_CPU_FUSED_MLP", raising=False)  # the rule's own choice
    rows, d_in, hidden, d_out = shape
    x = make_x((rows, d_in), dtype, "cpu", layout)
    check_two_layer_ops(x, *_params(d_in, hidden, d_out, dtype), [True] * 5, dtype)


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_inference_equals_training_forward(dtype, bias):
    """two_layer under no_grad (no hidden written) equals two_layer_forward's output (within
    rounding, not bitwise: MKL's products can round differently on operands at other
    alignments, and the kept hidden's blocks start wherever the rows put them)."""
    rows, d_in, hidden, d_out = MULTI_BLOCK[0]
    x = torch.randn(3, rows, d_in, dtype=dtype)
    params = _params(d_in, hidden, d_out, dtype, bias)
    with torch.no_grad():
        out = torch.ops.twolayer_ext.two_layer(x, *params)
    expected, _ = torch.ops.twolayer_ext.two_layer_forward(x, *params)
    assert out.shape == (3, rows, d_out)
    assert_close(out, expected, dtype, "out vs two_layer_forward")
    ref = reference.two_layer(x.double(), *(p if p is None else p.double() for p in params))
    assert_close(out, ref, dtype, "out")


# The second: float32 blocks of 2048 rows, whose weight gradients reduce over more rows than the
# kernels' bound for ATen's BLAS (1024), and 3 threads on its 2 blocks.
@pytest.mark.parametrize("shape", [MULTI_BLOCK[2], MULTI_BLOCK[3]], ids=str)
@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=lambda d: str(d)[6:])
def test_results_do_not_depend_on_thread_count(dtype, shape, monkeypatch):
    """The fused path's promise, both passes forced onto it (the rule runs the 16-bit
    backward layer by layer, whose products come from ATen's BLAS: README, Reliability)."""
    monkeypatch.setenv("TWOLAYER_EXT_CPU_FUSED_MLP", "1")
    if twolayer_ext._C.cpu_paths()["float32_gemm_kernels"] == "none":
        # The promise needs our kernels for the float32 products (ReproducibleProducts); ATen's
        # BLAS in their place gave 1 and 2 threads other bits (Intel Xeon, MKL).
        pytest.skip("no kernels of ours for this instruction set: ATen's BLAS runs")
    if dtype == torch.float64 and shape == MULTI_BLOCK[3]:
        # float64's products are ATen's (no kernels of ours): MKL's dgemm gave grad_w1 of these
        # 2048-row blocks other bits for 1 and 2 threads on an Intel Xeon (README, Reliability).
        pytest.skip("float64 blocks run ATen's BLAS, which makes no thread-count promise")
    rows, d_in, hidden, d_out = shape
    x = torch.randn(rows, d_in, dtype=dtype, requires_grad=True)
    params = [p.requires_grad_() for p in _params(d_in, hidden, d_out, dtype)]
    grad = torch.randn(rows, d_out, dtype=dtype)
    threads = torch.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            out = twolayer_ext.two_layer_mlp(x, *params)
            grads = torch.autograd.grad(out, [x, *params], grad)
            with torch.no_grad():
                inference = twolayer_ext.two_layer_mlp(x, *params)
            results.append([out, inference, *grads])
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


def test_fused_and_layered_paths_agree(monkeypatch):
    rows, d_in, hidden, d_out = MULTI_BLOCK[0]
    x = torch.randn(rows, d_in, dtype=torch.float64, requires_grad=True)
    params = [p.requires_grad_() for p in _params(d_in, hidden, d_out, torch.float64)]
    grad = torch.randn(rows, d_out, dtype=torch.float64)
    got = {}
    for path in ("0", "1"):
        monkeypatch.setenv("TWOLAYER_EXT_CPU_FUSED_MLP", path)
        out = twolayer_ext.two_layer_mlp(x, *params)
        got[path] = [out, *torch.autograd.grad(out, [x, *params], grad)]
    for a, b in zip(got["0"], got["1"]):
        assert_close(a, b, torch.float64)


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=lambda d: str(d)[6:])
def test_nan_propagates_and_is_masked_like_torch(dtype):
    rows, d_in, hidden, d_out = MULTI_BLOCK[0]
    check_nan_like_torch(torch.randn(rows, d_in, dtype=dtype), *_params(d_in, hidden, d_out, dtype))


def test_gradcheck_across_blocks(monkeypatch):
    """float64 gradcheck with three row blocks (64 rows each at hidden = 1024)."""
    monkeypatch.setenv("TWOLAYER_EXT_CPU_FUSED_MLP", "1")
    kw = {"dtype": torch.float64}
    x, w1, w2 = torch.randn(130, 2, **kw), torch.randn(1024, 2, **kw), torch.randn(2, 1024, **kw)
    b1, b2 = torch.randn(1024, **kw), torch.randn(2, **kw)
    with torch.no_grad():
        h = x @ w1.t() + b1
        b1[h.abs().min(0).values < 1e-3] += 0.01
    inputs = [t.requires_grad_() for t in (x, w1, b1, w2, b2)]
    assert torch.autograd.gradcheck(twolayer_ext.two_layer_mlp, inputs, fast_mode=True)


def test_two_layer_op_opcheck_and_autograd():
    for rg in (False, True):
        x = torch.randn(4, 6, requires_grad=rg)
        w1, b1 = torch.randn(5, 6, requires_grad=rg), torch.randn(5, requires_grad=rg)
        w2 = torch.randn(3, 5, requires_grad=rg)
        torch.library.opcheck(torch.ops.twolayer_ext.two_layer.default, (x, w1, b1, w2, None))
    out = torch.ops.twolayer_ext.two_layer(x, w1, b1, w2, None)
    assert out.grad_fn.name().startswith("twolayer_ext::")


def test_two_layer_op_rejects_bad_input():
    with pytest.raises(ERR, match="twolayer_ext::two_layer: w2 must have shape"):
        torch.ops.twolayer_ext.two_layer(
            torch.randn(3, 4), torch.randn(5, 4), None, torch.randn(2, 6), None
        )


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=lambda d: str(d)[6:])
def test_training_recomputes_hidden(dtype):
    """Under the rule, TwoLayerNet's training keeps no hidden activation (backward recomputes
    it block by block, bitwise as its forward computed it); its gradients match those of the
    node that keeps hidden (within rounding: see test_inference_equals_training_forward)."""
    rows, d_in, hidden, d_out = MULTI_BLOCK[0]
    x = torch.randn(rows, d_in, dtype=dtype, requires_grad=True)
    params = [p.requires_grad_() for p in _params(d_in, hidden, d_out, dtype)]
    grad = torch.randn(rows, d_out, dtype=dtype)
    out = saves_only_inputs(lambda: twolayer_ext.two_layer_mlp(x, *params), [x, *params])
    recomputed = torch.autograd.grad(out, [x, *params], grad)
    out_kept, _ = torch.ops.twolayer_ext.two_layer_forward(x, *params)  # saves hidden
    assert_close(out, out_kept, dtype, "out")
    kept = torch.autograd.grad(out_kept, [x, *params], grad)
    for a, b, name in zip(recomputed, kept, ["x", "w1", "b1", "w2", "b2"]):
        assert_close(a, b, dtype, f"grad_{name}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("path", ["1", None], ids=["fused", "rule"])
def test_16_bit_training_keeps_hidden(dtype, path, monkeypatch):
    """The 16-bit types keep the hidden activation for backward even where both passes run
    fused: recomputing layer 1 converts its operands to float32 again and lost (Zen 3,
    docs/BENCHMARKS.md, "The fully fused path on AVX2"). bfloat16 on AMX recomputes it: both
    passes run in the tile kernel, where writing hidden cost more ("bfloat16 training on
    AMX")."""
    if path is not None:
        monkeypatch.setenv("TWOLAYER_EXT_CPU_FUSED_MLP", path)
    rows, d_in, hidden, d_out = MULTI_BLOCK[0]
    x = torch.randn(rows, d_in, dtype=dtype, requires_grad=True)
    params = [p.requires_grad_() for p in _params(d_in, hidden, d_out, dtype)]
    saved: list[torch.Tensor] = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        out = twolayer_ext.two_layer_mlp(x, *params)
    kept = [t for t in saved if t.shape == (rows, hidden)]
    assert out.grad_fn is not None
    if dtype == torch.bfloat16 and AMX:
        assert kept == [], [t.shape for t in saved]
        return
    assert len(kept) == 1, [t.shape for t in saved]
    assert_close(kept[0], reference.linear_relu(x, params[0], params[1]), dtype, "hidden")


@pytest.mark.parametrize("shape", MULTI_BLOCK, ids=str)
@pytest.mark.parametrize("path", ["0", "1", None], ids=["layered", "fused", "rule"])
def test_backward_recompute_op_uses_the_forwards_hidden(shape, path, monkeypatch):
    """two_layer_backward_recompute's gradients are two_layer_backward's on the hidden
    activation that two_layer_forward computes, bitwise, on every path: where the backward
    does not recompute block by block, the op runs the forward again (on an Intel CPU the
    layered first layer alone runs MKL where the fused forward runs our kernels, and a hidden
    unit rounded to the other side of 0 changed the mask now and then)."""
    if path is None:
        monkeypatch.delenv("TWOLAYER_EXT_CPU_FUSED_MLP", raising=False)
    else:
        monkeypatch.setenv("TWOLAYER_EXT_CPU_FUSED_MLP", path)
    rows, d_in, hidden, d_out = shape
    x, grad_out = torch.randn(rows, d_in), torch.randn(rows, d_out)
    w1, b1, w2, _ = _params(d_in, hidden, d_out, torch.float32)
    got = torch.ops.twolayer_ext.two_layer_backward_recompute(grad_out, x, w1, b1, w2, [True] * 5)
    hidden_act = torch.ops.twolayer_ext.two_layer_forward(x, w1, b1, w2, None)[1]
    want = torch.ops.twolayer_ext.two_layer_backward(grad_out, x, w1, w2, hidden_act, [True] * 5)
    for g, w, name in zip(got, want, ["x", "w1", "b1", "w2", "b2"]):
        assert torch.equal(g, w), f"grad_{name}"


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("path", ["0", "1", None], ids=["layered", "fused", "rule"])
def test_backward_recompute_op_matches_reference(dtype, path, monkeypatch):
    if path is None:
        monkeypatch.delenv("TWOLAYER_EXT_CPU_FUSED_MLP", raising=False)
    else:
        monkeypatch.setenv("TWOLAYER_EXT_CPU_FUSED_MLP", path)
    rows, d_in, hidden, d_out = MULTI_BLOCK[2]
    x = make_x((rows, d_in), dtype, "cpu", "sliced")
    w1, b1, w2, _ = _params(d_in, hidden, d_out, dtype)
    grad_out = torch.randn(rows, d_out, dtype=dtype)
    mask = [True, True, True, True, True]
    got = torch.ops.twolayer_ext.two_layer_backward_recompute(grad_out, x, w1, b1, w2, mask)
    # The reference on the op's own rounding of hidden, as check_two_layer_ops does.
    hidden_act = torch.ops.twolayer_ext.two_layer_forward(x, w1, b1, w2, None)[1]
    args = (grad_out, x, w1, w2, hidden_act)
    want = reference.two_layer_backward(*(t.double() for t in args), mask)
    for g, r, name in zip(got, want, ["x", "w1", "b1", "w2", "b2"]):
        assert_close(g, r, dtype, f"grad_{name}")
    got_some = torch.ops.twolayer_ext.two_layer_backward_recompute(
        grad_out, x, w1, None, w2, [False, True, False, False, True]
    )
    assert [g is not None for g in got_some] == [False, True, False, False, True]


def test_backward_recompute_opcheck():
    x, w1, b1, w2 = torch.randn(6, 5), torch.randn(4, 5), torch.randn(4), torch.randn(3, 4)
    g = torch.randn(6, 3)
    op = torch.ops.twolayer_ext.two_layer_backward_recompute.default
    torch.library.opcheck(op, (g, x, w1, b1, w2, [True] * 5))
    with pytest.raises(ERR, match="two_layer_backward_recompute: grad_out must have shape"):
        op(torch.randn(6, 2), x, w1, b1, w2, [True] * 5)


@pytest.mark.parametrize("dtype", CPU_DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize(
    "shape", [(5, 0, 3, 2), (300, 0, 3, 2), (5, 3, 0, 2), (300, 3, 4, 0), (0, 3, 4, 2)], ids=str
)
@pytest.mark.parametrize("path", ["0", "1", None], ids=["layered", "fused", "rule"])
def test_zero_sized_networks(dtype, shape, path, monkeypatch):
    """No rows, no inputs, no hidden units or no outputs: the output and every gradient have
    their shapes and the float64 reference's values (zeros and biases), on every path; the
    gradients within the tolerance of their sums of absolute terms (_sum_sizes: 300 rows of
    float16 grad_hidden, rounded before they are summed as torch rounds them, put grad_b1
    0.0101 from the reference where 0.0086 was allowed by its own size)."""
    if path is None:
        monkeypatch.delenv("TWOLAYER_EXT_CPU_FUSED_MLP", raising=False)
    else:
        monkeypatch.setenv("TWOLAYER_EXT_CPU_FUSED_MLP", path)
    rows, d_in, hidden, d_out = shape
    x = torch.randn(rows, d_in, dtype=dtype, requires_grad=True)
    params = [p.requires_grad_() for p in _params(d_in, hidden, d_out, dtype)]
    out = twolayer_ext.two_layer_mlp(x, *params)
    grad_out = torch.randn_like(out)
    grads = torch.autograd.grad(out, [x, *params], grad_out)
    x64, *p64 = (t.detach().double().requires_grad_() for t in (x, *params))
    ref = reference.two_layer(x64, *p64)
    ref_grads = torch.autograd.grad(ref, [x64, *p64], grad_out.double(), allow_unused=True)
    assert_close(out, ref, dtype, "out")
    sizes = _sum_sizes(x, params[0], params[1], params[2], grad_out)
    for name, g, r, t, size in zip(
        ["x", "w1", "b1", "w2", "b2"], grads, ref_grads, [x64, *p64], sizes
    ):
        want = torch.zeros_like(t) if r is None else r
        assert g.shape == want.shape, f"grad_{name}: shape {g.shape} != {want.shape}"
        if g.numel() == 0:
            continue
        err = (g.double() - want).abs().max().item()
        scale = max(1.0, size.max().item()) if size.numel() else 1.0
        assert err <= TOLERANCE[dtype] * scale, f"grad_{name}: {err:.3g}"


# The AMX kernel (csrc/cpu/two_layer_amx.cpp) at its tiles' edges: in below, at and past a
# 32-column A tile; hidden and out across 16-column C tiles and four-tile groups (hidden 1024:
# 16 groups); rows ending in a partial 16-row tile; one unit everywhere.
AMX_SHAPES = [
    (1000, 64, 64, 16),
    (1001, 1, 1, 1),
    (517, 33, 100, 17),
    (250, 31, 65, 70),
    (300, 96, 1024, 3),
]
AMX = twolayer_ext._C.cpu_paths()["bfloat16_fused_mlp"] == "amx"
requires_amx = pytest.mark.skipif(
    not AMX, reason="the AMX kernel runs only where the CPU has AMX-BF16 (cpu_paths)"
)


def test_amx_kernel_runs_wherever_the_cpu_has_amx():
    """A CPU with AMX-BF16 (and AVX-512 for our passes) runs the kernel: the tests below skip
    only where the kernel cannot run, never because it was switched off by mistake."""
    caps = twolayer_ext._C.cpu_capabilities()
    has_amx = caps.get("amx_bf16", False) and caps.get("amx_tile", False)
    avx512 = twolayer_ext._C.cpu_paths()["elementwise_passes"] == "avx512"
    assert AMX == bool(has_amx and avx512)


@requires_amx
@pytest.mark.parametrize("shape", AMX_SHAPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "row_stride", "sliced"])
def test_amx_bf16_inference_matches_torch(shape, layout, monkeypatch):
    """bfloat16 inference on the AMX kernel: torch's own layers' result within bfloat16
    rounding, and the float64 reference's within the tolerance; rows of x read at their own
    stride (the first columns of a wider tensor), or copied first (every other column)."""
    monkeypatch.setenv("TWOLAYER_EXT_CPU_FUSED_MLP", "1")
    rows, d_in, hidden, d_out = shape
    dtype = torch.bfloat16
    if layout == "sliced":
        x = make_x((rows, d_in), dtype, "cpu", "sliced")
    else:
        x = torch.randn(rows, d_in + (7 if layout == "row_stride" else 0), dtype=dtype)[:, :d_in]
    params = _params(d_in, hidden, d_out, dtype)
    w1, b1, w2, b2 = params
    with torch.no_grad():
        out = torch.ops.twolayer_ext.two_layer(x, *params)
        hidden_act = torch.relu(torch.nn.functional.linear(x, w1, b1))
        torch_out = torch.nn.functional.linear(hidden_act, w2, b2)
    assert_close(out, torch_out, dtype, "out vs torch's layers")
    ref = reference.two_layer(x.double(), *(p.double() for p in params))
    assert_close(out, ref, dtype, "out")


@requires_amx
def test_amx_bf16_inference_without_biases(monkeypatch):
    monkeypatch.setenv("TWOLAYER_EXT_CPU_FUSED_MLP", "1")
    rows, d_in, hidden, d_out = AMX_SHAPES[2]
    x = torch.randn(rows, d_in, dtype=torch.bfloat16)
    w1, _, w2, _ = _params(d_in, hidden, d_out, torch.bfloat16)
    with torch.no_grad():
        out = torch.ops.twolayer_ext.two_layer(x, w1, None, w2, None)
    ref = reference.two_layer(x.double(), w1.double(), None, w2.double(), None)
    assert_close(out, ref, torch.bfloat16, "out")


@requires_amx
def test_amx_bf16_nan_and_inf_reach_the_references_outputs(monkeypatch):
    """NaN in x, an Inf row and a NaN weight reach exactly the outputs they reach in the
    float64 reference (the kernel's ReLU and rounding keep NaN), and no other row: x's rows are
    copied into zero-padded tiles where in is not a multiple of 32. (oneDNN's AMX matmul,
    behind torch's bfloat16 products here, reads such a row's tail from the next row's bytes
    and lets a NaN there into a clean row: oneDNN issue #5717.)"""
    monkeypatch.setenv("TWOLAYER_EXT_CPU_FUSED_MLP", "1")
    rows, d_in, hidden, d_out = 3100, 33, 100, 17
    x = torch.randn(rows, d_in, dtype=torch.bfloat16)
    w1, b1, w2, b2 = _params(d_in, hidden, d_out, torch.bfloat16)
    x[5, 3] = float("nan")
    x[8, 32] = float("nan")  # in the last A tile's one real column
    x[3000, :] = float("inf")
    w2[4, 7] = float("nan")
    with torch.no_grad():
        out = torch.ops.twolayer_ext.two_layer(x, w1, b1, w2, b2)
    expected = reference.two_layer(x.double(), w1.double(), b1.double(), w2.double(), b2.double())
    assert torch.equal(out.isnan(), expected.isnan())
    assert out[5].isnan().all() and out[8].isnan().all()
    assert out[7].isnan().nonzero().flatten().tolist() == [4]  # w2's NaN column only


def _aten_products(fn) -> set[str]:
    """The ATen product ops that fn() calls."""
    return cpu_op_names(fn) & {
        "aten::addmm",
        "aten::mm",
        "mkldnn::_linear_pointwise",
        "aten::linear",
    }


@requires_amx
@pytest.mark.parametrize("rows", [16, 1000, 9000])
@pytest.mark.parametrize("layout", ["contiguous", "sliced"])
def test_rule_runs_bfloat16_on_amx(rows, layout, monkeypatch):
    """Under the rule, bfloat16 with in <= 64 runs the AMX kernel at any number of rows and
    any layout of x (no ATen product is called): inference, and training where hidden <= 512;
    wider, training runs layer by layer (ATen's products) and inference stays on the kernel."""
    monkeypatch.delenv("TWOLAYER_EXT_CPU_FUSED_MLP", raising=False)
    x = make_x((rows, 64), torch.bfloat16, "cpu", layout)
    for hidden, trains_on_amx in [(64, True), (512, True), (1024, False)]:
        net = twolayer_ext.TwoLayerNet(64, hidden, 16, dtype=torch.bfloat16)
        with torch.no_grad():
            assert _aten_products(lambda: net(x)) == set(), hidden  # noqa: B023
        training = _aten_products(lambda: net(x).sum().backward())  # noqa: B023
        assert (training == set()) == trains_on_amx, (hidden, training)


@requires_amx
@pytest.mark.parametrize("rows", [16, 3000])
def test_rule_runs_bfloat16_on_amx_at_whole_tiles(rows, monkeypatch):
    """Under the rule, bfloat16 with 64 < in <= 128 runs the AMX kernel (no ATen product),
    inference and training, where in is a multiple of 32 and hidden and out are at most 64,
    with torch's values; in = 112 (a padded tile), hidden 128 or out 256 run layer by
    layer."""
    monkeypatch.delenv("TWOLAYER_EXT_CPU_FUSED_MLP", raising=False)
    cases = [(96, 64, 16, True), (128, 32, 64, True), (112, 64, 16, False)]
    cases += [(128, 128, 16, False), (128, 64, 256, False)]
    for in_features, hidden, out, on_amx in cases:
        x = torch.randn(rows, in_features, dtype=torch.bfloat16)
        net = twolayer_ext.TwoLayerNet(in_features, hidden, out, dtype=torch.bfloat16)
        case = (in_features, hidden, out)
        with torch.no_grad():
            assert (_aten_products(lambda: net(x)) == set()) == on_amx, case  # noqa: B023
            linear = torch.nn.functional.linear
            hid = torch.relu(linear(x, net.fc1.weight, net.fc1.bias))
            ref = linear(hid, net.fc2.weight, net.fc2.bias)  # torch's own bfloat16 layers
            assert_close(net(x), ref, torch.bfloat16, str(case))
        training = _aten_products(lambda: net(x).sum().backward())  # noqa: B023
        assert (training == set()) == on_amx, (case, training)


INTEL_AVX512 = twolayer_ext._C.cpu_paths()["float32_gemm_bounds"] == "intel" and (
    twolayer_ext._C.cpu_paths()["float32_gemm_kernels"] == "avx512"
)


@pytest.mark.skipif(
    not INTEL_AVX512, reason="the rule for float32 on an Intel CPU's AVX-512 kernels"
)
@pytest.mark.parametrize("in_features", [192, 1000])
def test_rule_runs_hidden_64_inference_fused_on_intel(in_features, monkeypatch):
    """On an Intel CPU with the AVX-512 kernels, float32 inference beyond in = 128 runs fully
    fused (no ATen product) where hidden is 64, with the reference's values; hidden 96 and
    training at hidden 64 run layer by layer (ATen's products)."""
    monkeypatch.delenv("TWOLAYER_EXT_CPU_FUSED_MLP", raising=False)
    x = torch.randn(2100, in_features)
    for hidden, fused in [(64, True), (96, False)]:
        net = twolayer_ext.TwoLayerNet(in_features, hidden, 16)
        with torch.no_grad():
            assert (_aten_products(lambda: net(x)) == set()) == fused, hidden  # noqa: B023
            ref = torch.relu(x @ net.fc1.weight.t() + net.fc1.bias) @ net.fc2.weight.t()
            assert_close(net(x), ref + net.fc2.bias, torch.float32, f"hidden {hidden}")
        if fused:
            assert _aten_products(lambda: net(x).sum().backward()), "training: layered"  # noqa: B023


def _amx_grads(x, params, grad_out):
    out = twolayer_ext.two_layer_mlp(x, *params)
    inputs = [t for t in (x, *params) if t is not None and t.requires_grad]
    return out, torch.autograd.grad(out, inputs, grad_out)


# Rows across the backward's 256-row steps and several chunks of blocks (11000 rows: six
# 2048-row blocks at hidden 64, the last one short); in = 128, whole A tiles (the rule's).
AMX_TRAINING_SHAPES = [*AMX_SHAPES, (11000, 64, 64, 16), (2100, 128, 64, 16)]


@requires_amx
@pytest.mark.parametrize("shape", AMX_TRAINING_SHAPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "sliced"])
def test_amx_bf16_gradients_match_torch(shape, layout, monkeypatch):
    """bfloat16 training on the AMX kernel (forward, then the backward recomputing the hidden
    activation): every gradient within bfloat16 rounding of torch's own layers' (nn.Linear,
    ReLU, autograd) and of the float64 reference's."""
    monkeypatch.setenv("TWOLAYER_EXT_CPU_FUSED_MLP", "1")
    rows, d_in, hidden, d_out = shape
    dtype = torch.bfloat16
    x = make_x((rows, d_in), dtype, "cpu", layout).requires_grad_()
    params = [p.requires_grad_() for p in _params(d_in, hidden, d_out, dtype)]
    grad_out = torch.randn(rows, d_out, dtype=dtype)
    _, got = _amx_grads(x, params, grad_out)
    w1, b1, w2, b2 = params
    torch_out = torch.nn.functional.linear(
        torch.relu(torch.nn.functional.linear(x, w1, b1)), w2, b2
    )
    torch_grads = torch.autograd.grad(torch_out, [x, *params], grad_out)
    x64, *p64 = (t.detach().double().requires_grad_() for t in (x, *params))
    ref_grads = torch.autograd.grad(reference.two_layer(x64, *p64), [x64, *p64], grad_out.double())
    sizes = _sum_sizes(x, w1, b1, w2, grad_out)
    for name, g, t, r, size in zip(
        ["x", "w1", "b1", "w2", "b2"], got, torch_grads, ref_grads, sizes
    ):
        assert_close(g, t, dtype, f"grad_{name} vs torch's layers")
        err = (g.double() - r).abs().max().item()
        assert err <= TOLERANCE[dtype] * max(1.0, size.max().item()), f"grad_{name}: {err:.3g}"


def _sum_sizes(x, w1, b1, w2, grad_out):
    """Each gradient's sum of absolute terms, in float64: torch's backward (and ours) rounds
    grad_hidden to the 16-bit type before summing over rows, which moves a gradient by up to
    half an ulp (bfloat16: 2^-9) of this however much its terms cancel (1001x1->1->1: 1.95 against the float64 reference's 1.83,
    torch's layers the same 1.95). The float64 comparison is scaled by it, not by the result."""
    x, w1, w2, g = (t.detach().double() for t in (x, w1, w2, grad_out))
    pre = torch.nn.functional.linear(x, w1, None if b1 is None else b1.detach().double())
    grad_hidden = (g.abs() @ w2.abs()) * (pre > 0)
    return [
        grad_hidden @ w1.abs(),
        grad_hidden.T @ x.abs(),
        grad_hidden.sum(0),
        g.abs().T @ pre.relu(),
        g.abs().sum(0),
    ]


@requires_amx
def test_amx_bf16_gradients_without_biases_or_grad_x(monkeypatch):
    monkeypatch.setenv("TWOLAYER_EXT_CPU_FUSED_MLP", "1")
    rows, d_in, hidden, d_out = AMX_SHAPES[2]
    x = torch.randn(rows, d_in, dtype=torch.bfloat16)
    w1, _, w2, _ = (p.requires_grad_() for p in _params(d_in, hidden, d_out, torch.bfloat16))
    grad_out = torch.randn(rows, d_out, dtype=torch.bfloat16)
    _, (gw1, gw2) = _amx_grads(x, [w1, None, w2, None], grad_out)
    w1_64, w2_64 = (w.detach().double().requires_grad_() for w in (w1, w2))
    ref = reference.two_layer(x.double(), w1_64, None, w2_64, None)
    ref_w1, ref_w2 = torch.autograd.grad(ref, [w1_64, w2_64], grad_out.double())
    assert_close(gw1, ref_w1, torch.bfloat16, "grad_w1")
    assert_close(gw2, ref_w2, torch.bfloat16, "grad_w2")


@requires_amx
def test_amx_bf16_saved_and_recomputed_hidden_give_the_same_bits(monkeypatch):
    """two_layer_backward on the hidden activation that two_layer_forward keeps (the kernel's
    forward writing it) equals two_layer_backward_recompute (the kernel recomputing it) bit for
    bit: the same hidden rows, the same sums in the same order."""
    monkeypatch.setenv("TWOLAYER_EXT_CPU_FUSED_MLP", "1")
    rows, d_in, hidden, d_out = AMX_TRAINING_SHAPES[-1]
    x = torch.randn(rows, d_in, dtype=torch.bfloat16)
    w1, b1, w2, b2 = _params(d_in, hidden, d_out, torch.bfloat16)
    out, kept = torch.ops.twolayer_ext.two_layer_forward(x, w1, b1, w2, b2)
    with torch.no_grad():
        assert torch.equal(out, torch.ops.twolayer_ext.two_layer(x, w1, b1, w2, b2))
    assert torch.equal(kept, torch.relu(torch.nn.functional.linear(x, w1, b1)))
    grad_out = torch.randn(rows, d_out, dtype=torch.bfloat16)
    saved = torch.ops.twolayer_ext.two_layer_backward(grad_out, x, w1, w2, kept, [True] * 5)
    again = torch.ops.twolayer_ext.two_layer_backward_recompute(grad_out, x, w1, b1, w2, [True] * 5)
    for a, b in zip(saved, again):
        assert torch.equal(a, b)


@requires_amx
def test_amx_bf16_gradients_nan_like_the_reference(monkeypatch):
    """A NaN in x, in grad_out and in a weight reaches exactly the gradients' entries that it
    reaches in the float64 reference, through padded rows and columns (in = 33, rows ending in
    a partial step) and nowhere else."""
    monkeypatch.setenv("TWOLAYER_EXT_CPU_FUSED_MLP", "1")
    rows, d_in, hidden, d_out = 3100, 33, 100, 17
    x = torch.randn(rows, d_in, dtype=torch.bfloat16)
    w1, b1, w2, b2 = _params(d_in, hidden, d_out, torch.bfloat16)
    x[5, 3] = float("nan")
    x[8, 32] = float("nan")
    w2[4, 7] = float("inf")
    grad_out = torch.randn(rows, d_out, dtype=torch.bfloat16)
    grad_out[3099, 2] = float("nan")
    params = [p.requires_grad_() for p in (w1, b1, w2, b2)]
    x.requires_grad_()
    _, got = _amx_grads(x, params, grad_out)
    x64, *p64 = (t.detach().double().requires_grad_() for t in (x, *params))
    ref = torch.autograd.grad(reference.two_layer(x64, *p64), [x64, *p64], grad_out.double())
    for name, g, r in zip(["x", "w1", "b1", "w2", "b2"], got, ref):
        assert torch.equal(g.isnan(), r.isnan()), name
        assert g.isnan().any(), name  # the test reaches every gradient


@requires_amx
def test_amx_rounds_denormals_and_nan_as_c10(monkeypatch):
    """The kernel's rounding to bfloat16 is c10's bit for bit where the one-instruction
    conversion is not (denormal float32 values, NaN of either sign): hidden = relu(b1) for x = 0
    keeps b1's denormals, maps negative ones to +0, and every NaN to 0x7FC0."""
    monkeypatch.setenv("TWOLAYER_EXT_CPU_FUSED_MLP", "1")
    d_in, hidden, d_out = 32, 64, 16
    x = torch.zeros(40, d_in, dtype=torch.bfloat16)
    w1, b1, w2, b2 = _params(d_in, hidden, d_out, torch.bfloat16)
    tiny = torch.finfo(torch.bfloat16).tiny  # the smallest normal: below it, denormals
    b1 = torch.linspace(-tiny, tiny, hidden).to(torch.bfloat16)
    b1[0] = float("nan")
    b1[1] = -float("nan")
    assert (b1.float().abs() < tiny).sum() > 50 and (b1.float() != 0).sum() > 50
    _, kept = torch.ops.twolayer_ext.two_layer_forward(x, w1, b1, w2, b2)
    expected = torch.relu(b1).expand(40, hidden)
    bits = kept.view(torch.int16)
    assert torch.equal(bits[:, 2:], expected[:, 2:].contiguous().view(torch.int16))
    assert (bits[:, :2] == 0x7FC0).all()
