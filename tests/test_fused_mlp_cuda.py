"""The CUDA fully fused two-layer kernels (csrc/cuda/fused_mlp*.cu*), which run where
TWOLAYER_EXT_CUDA_FUSED_MLP=1 asks for them (opt-in until measured faster on a GPU): every CUDA
dtype on its variant (tensor cores for float16/bfloat16 and TF32, SIMT for float32 and
float64), several 32-row blocks with a short last one, more row blocks than thread blocks,
strided inputs, the output-mask subsets, NaN, determinism, the recomputing backward, and
the fallbacks. Each test that means the fused kernels checks with the profiler that the
expected ones ran, so a silent fallback to another path cannot pass for them. Skips
without a GPU."""

from __future__ import annotations

import json

import pytest
import torch
from helpers import (
    CUDA_DTYPES,
    HAS_CUDA,
    assert_close,
    assert_requested_grads,
    check_nan_like_torch,
    check_two_layer_ops,
    cuda_kernel_names,
    make_weight,
    make_x,
    saves_only_inputs,
)

import twolayer_ext
from twolayer_ext import reference
from twolayer_ext.cli import main as cli_main

pytestmark = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")

FORWARD, BACKWARD = "fused_mlp_forward_kernel", "fused_mlp_backward_kernel"


def _variant(dtype: torch.dtype) -> str:
    """The kernels' namespace for dtype, TF32 off (torch's default)."""
    return "tc::" if dtype in (torch.float16, torch.bfloat16) else "simt::"


# (rows, in, hidden, out) whose both passes fit the kernels' shared memory in every dtype:
# one row; a short last block; widths that are no multiple of the 16-thread tile edge; and
# 1032 row blocks, more than the backward's 1024 thread blocks (two row blocks per chunk).
SHAPES = [(1, 3, 5, 2), (4099, 32, 32, 8), (70, 17, 40, 3), (33000, 16, 24, 5)]
# The networks, which fit in the 4-byte accumulation types only.
WIDE_SHAPES = [(3000, 64, 64, 16), (2000, 32, 128, 3)]
FLOAT_ACC_DTYPES = [d for d in CUDA_DTYPES if d != torch.float64]


@pytest.fixture(autouse=True)
def _fused(monkeypatch):
    monkeypatch.setenv("TWOLAYER_EXT_CUDA_FUSED_MLP", "1")


def _params(d_in, hidden, d_out, dtype, bias=True, transposed=False):
    w1 = make_weight(hidden, d_in, dtype, "cuda", transposed) / d_in**0.5
    w2 = make_weight(d_out, hidden, dtype, "cuda", transposed) / hidden**0.5
    b1 = torch.randn(hidden, dtype=dtype, device="cuda") if bias else None
    b2 = torch.randn(d_out, dtype=dtype, device="cuda") if bias else None
    return w1, b1, w2, b2


def _cases():
    for shape in SHAPES:
        for dtype in CUDA_DTYPES:
            yield pytest.param(shape, dtype, id=f"{shape}-{str(dtype)[6:]}")
    for shape in WIDE_SHAPES:
        for dtype in FLOAT_ACC_DTYPES:
            yield pytest.param(shape, dtype, id=f"{shape}-{str(dtype)[6:]}")


@pytest.mark.parametrize(("shape", "dtype"), list(_cases()))
@pytest.mark.parametrize("layout", ["contiguous", "sliced"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_ops_match_reference(shape, dtype, layout, bias):
    rows, d_in, hidden, d_out = shape
    x = make_x((rows, d_in), dtype, "cuda", layout)
    params = _params(d_in, hidden, d_out, dtype, bias, transposed=layout == "sliced")
    names = " ".join(cuda_kernel_names(lambda: check_two_layer_ops(x, *params, [True] * 5, dtype)))
    assert _variant(dtype) + FORWARD in names and _variant(dtype) + BACKWARD in names


@pytest.mark.parametrize("shape", [SHAPES[1], WIDE_SHAPES[0]], ids=str)
def test_float32_runs_tf32_tensor_cores_where_torch_allows_tf32(shape):
    rows, d_in, hidden, d_out = shape
    x = torch.randn(rows, d_in, device="cuda")
    params = _params(d_in, hidden, d_out, torch.float32)
    ref = reference.two_layer_forward(x.double(), *(p.double() for p in params))[0]
    old = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        names = " ".join(
            cuda_kernel_names(lambda: check_two_layer_ops(x, *params, [True] * 5, torch.bfloat16))
        )
        with torch.no_grad():
            fast = twolayer_ext.two_layer_mlp(x, *params)
        torch.backends.cuda.matmul.allow_tf32 = False
        with torch.no_grad():
            exact = twolayer_ext.two_layer_mlp(x, *params)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    # TF32 keeps 10 mantissa bits: within bfloat16's tolerance, and less exact than float32.
    assert "tc::" + FORWARD in names and "tc::" + BACKWARD in names
    scale = ref.abs().max().item()
    err_fast = (fast.double() - ref).abs().max().item() / scale
    err_exact = (exact.double() - ref).abs().max().item() / scale
    assert err_exact < 1e-5 < err_fast < 5e-3


@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=lambda d: str(d)[6:])
@pytest.mark.parametrize(
    "mask",
    [
        [True, False, False, False, False],
        [False, True, False, True, False],
        [False] * 3 + [True] * 2,
    ],
    ids=["x", "weights", "layer2"],
)
def test_output_mask_subsets(dtype, mask):
    rows, d_in, hidden, d_out = SHAPES[2]
    x = torch.randn(rows, d_in, dtype=dtype, device="cuda")
    w1, b1, w2, b2 = _params(d_in, hidden, d_out, dtype)
    _, hidden_act = torch.ops.twolayer_ext.two_layer_forward(x, w1, b1, w2, b2)
    grad_out = torch.randn(rows, d_out, dtype=dtype, device="cuda")
    args = (grad_out, x, w1, w2, hidden_act)
    got = torch.ops.twolayer_ext.two_layer_backward(*args, mask)
    want = reference.two_layer_backward(*(t.double() for t in args), mask)
    assert_requested_grads(got, want, mask, ["x", "w1", "b1", "w2", "b2"], dtype)


@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=lambda d: str(d)[6:])
def test_output_only_and_recompute_are_bitwise_the_saved_hidden_results(dtype):
    """two_layer writes no hidden activation and two_layer_backward_recompute recomputes it
    with the forward's own code: the same bits as the ops that keep it."""
    rows, d_in, hidden, d_out = SHAPES[3]
    x = torch.randn(rows, d_in, dtype=dtype, device="cuda")
    w1, b1, w2, b2 = _params(d_in, hidden, d_out, dtype)
    out, hidden_act = torch.ops.twolayer_ext.two_layer_forward(x, w1, b1, w2, b2)
    assert torch.equal(torch.ops.twolayer_ext.two_layer(x, w1, b1, w2, b2), out)
    grad_out = torch.randn_like(out)
    kept = torch.ops.twolayer_ext.two_layer_backward(grad_out, x, w1, w2, hidden_act, [True] * 5)
    names = cuda_kernel_names(
        lambda: torch.ops.twolayer_ext.two_layer_backward_recompute(
            grad_out, x, w1, b1, w2, [True] * 5
        )
    )
    assert _variant(dtype) + BACKWARD in " ".join(names) and FORWARD not in " ".join(names)
    again = torch.ops.twolayer_ext.two_layer_backward_recompute(grad_out, x, w1, b1, w2, [True] * 5)
    for a, b in zip(kept, again):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=lambda d: str(d)[6:])
def test_training_keeps_no_hidden_and_is_deterministic(dtype):
    """TwoLayerNet's training step saves only its inputs on the fused path, and its gradients
    are the same bits run after run (chunked partial sums added in a fixed order)."""
    rows, d_in, hidden, d_out = SHAPES[3]
    x = torch.randn(rows, d_in, dtype=dtype, device="cuda", requires_grad=True)
    params = [p.requires_grad_() for p in _params(d_in, hidden, d_out, dtype)]
    grad = torch.randn(rows, d_out, dtype=dtype, device="cuda")
    out = saves_only_inputs(lambda: twolayer_ext.two_layer_mlp(x, *params), [x, *params])
    first = torch.autograd.grad(out, [x, *params], grad)
    second = torch.autograd.grad(twolayer_ext.two_layer_mlp(x, *params), [x, *params], grad)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", CUDA_DTYPES, ids=lambda d: str(d)[6:])
def test_nan_propagates_and_is_masked_like_torch(dtype):
    rows, d_in, hidden, d_out = SHAPES[1]
    x = torch.randn(rows, d_in, dtype=dtype, device="cuda")
    check_nan_like_torch(x, *_params(d_in, hidden, d_out, dtype))


def test_gradcheck():
    kw = {"dtype": torch.float64, "device": "cuda"}
    rows, d_in, hidden, d_out = 70, 5, 20, 3  # three row blocks
    x, w1, w2 = (
        torch.randn(rows, d_in, **kw),
        torch.randn(hidden, d_in, **kw),
        torch.randn(d_out, hidden, **kw),
    )
    b1, b2 = torch.randn(hidden, **kw), torch.randn(d_out, **kw)
    with torch.no_grad():
        h = x @ w1.t() + b1
        b1[h.abs().min(0).values < 1e-3] += 0.01
    inputs = [t.requires_grad_() for t in (x, w1, b1, w2, b2)]
    names = cuda_kernel_names(lambda: twolayer_ext.two_layer_mlp(*inputs).sum().backward())
    assert "simt::" + BACKWARD in " ".join(names)
    assert torch.autograd.gradcheck(twolayer_ext.two_layer_mlp, inputs, fast_mode=True)


@pytest.mark.parametrize(
    "shape",
    [(0, 8, 16, 4), (64, 1000, 100, 10)],
    ids=["no-rows", "tutorial-widths"],
)
def test_shapes_the_kernels_do_not_take_run_layered(shape):
    """No rows, or weights too large for shared memory: the layered path, same results."""
    rows, d_in, hidden, d_out = shape
    x = torch.randn(rows, d_in, device="cuda")
    w1, b1, w2, b2 = _params(d_in, hidden, d_out, torch.float32)
    names = cuda_kernel_names(
        lambda: check_two_layer_ops(x, w1, b1, w2, b2, [True] * 5, torch.float32)
    )
    assert "fused_mlp" not in " ".join(names)


def test_default_is_the_layered_path(monkeypatch):
    """Until a GPU measurement shows the fused kernels faster, they run only when asked for."""
    monkeypatch.delenv("TWOLAYER_EXT_CUDA_FUSED_MLP")
    rows, d_in, hidden, d_out = SHAPES[1]
    x = torch.randn(rows, d_in, device="cuda", requires_grad=True)
    params = [p.requires_grad_() for p in _params(d_in, hidden, d_out, torch.float32)]
    names = cuda_kernel_names(lambda: twolayer_ext.two_layer_mlp(x, *params).sum().backward())
    assert "fused_mlp" not in " ".join(names)
    monkeypatch.setenv("TWOLAYER_EXT_CUDA_FUSED_MLP", "1")
    fused = twolayer_ext.two_layer_mlp(x, *params)
    monkeypatch.setenv("TWOLAYER_EXT_CUDA_FUSED_MLP", "0")
    assert_close(fused, twolayer_ext.two_layer_mlp(x, *params), torch.float32, "out")


def test_mlp_bench_suite_on_cuda_times_the_fused_kernels(tmp_path, monkeypatch):
    """`bench --suite mlp --device cuda` has its `ext fused` column (no timing is asserted)."""
    monkeypatch.delenv("TWOLAYER_EXT_CUDA_FUSED_MLP")  # the suite sets it per column itself
    out = tmp_path / "mlp.json"
    args = ["bench", "--suite", "mlp", "--device", "cuda", "--quick", "--rounds", "1"]
    assert cli_main([*args, "--no-compile", "--json", str(out)]) == 0
    for r in json.loads(out.read_text())["results"]:
        assert set(r["timings_ms"]) == {"ext", "ext layered", "ext fused", "torch"}
        assert "layered/fused" in r["ratios"]
