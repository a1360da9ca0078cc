"""The CPU float32 GEMM paths: the AVX-512 and AVX2 kernels (csrc/cpu/gemm_f32*.cpp) and
ATen's BLAS.

TWOLAYER_EXT_CPU_GEMM=aten forces ATen's BLAS (read on every call, so both paths run in one
process). The kernels' instruction set is ATen's (csrc/cpu/isa/isa.h), chosen once per
process: the narrower ones this CPU has run this file again in a subprocess under
ATEN_CPU_CAPABILITY. Shapes straddle the kernels'
tile edges (AVX-512: 4x6 output tiles forward, 6x64 backward, k in steps of 16; AVX2: 3x4,
6x16, steps of 8), strides cover the layouts the kernels accept and those they hand to ATen.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_close, make_weight, make_x

import twolayer_ext
from twolayer_ext import reference

PATHS = ["kernels", "aten"]

# (rows, in_features, out_features)
SHAPES = [
    (64, 1000, 100),  # the seed's first layer
    (1, 1, 1),
    (3, 17, 5),
    (4, 16, 6),
    (5, 15, 7),
    (67, 65, 13),
    (130, 33, 129),
    (7, 24, 17),  # AVX2: k a multiple of 8, a 17-wide output (two vectors and one lane)
    (7, 0, 3),  # no inputs: y = bias
    (0, 9, 4),  # empty batch: zero grad_weight
]


@pytest.fixture(params=PATHS)
def gemm_path(request, monkeypatch):
    if request.param == "aten":
        monkeypatch.setenv("TWOLAYER_EXT_CPU_GEMM", "aten")
    else:
        monkeypatch.delenv("TWOLAYER_EXT_CPU_GEMM", raising=False)
    return request.param


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "sliced", "transposed"])
@pytest.mark.parametrize("w_t", [False, True], ids=["w", "wT"])
def test_linear_relu_float32_both_gemm_paths(gemm_path, shape, layout, w_t):
    rows, d_in, d_out = shape
    x = make_x((rows, d_in), torch.float32, "cpu", layout)
    w = make_weight(d_out, d_in, torch.float32, "cpu", transposed=w_t) / max(1, d_in) ** 0.5
    b = torch.randn(d_out)
    y, mask = torch.ops.twolayer_ext.linear_relu(x, w, b)
    xd, wd, bd = x.double(), w.double(), b.double()
    assert_close(y, reference.linear_relu(xd, wd, bd), torch.float32, "y")
    assert torch.equal(mask, reference.pack_mask(y.reshape(-1, d_out) > 0))
    g = torch.randn(rows, d_out)
    got = torch.ops.twolayer_ext.linear_relu_backward(g, x, w, mask, [True, True, True])
    want = reference.linear_relu_backward(g.double(), xd, wd, mask, [True, True, True])
    for a, e, name in zip(got, want, ["grad_x", "grad_weight", "grad_bias"]):
        assert_close(a, e, torch.float32, name)


SIXTEEN_BIT = [torch.bfloat16, torch.float16]


def _native(dtype: torch.dtype) -> bool:
    cpu = twolayer_ext.build_info()["cpu"]
    return bool(cpu["native_bfloat16" if dtype == torch.bfloat16 else "native_float16"])


@pytest.mark.parametrize("dtype", SIXTEEN_BIT, ids=str)
@pytest.mark.parametrize("shape", [(64, 1000, 100), (3, 17, 5), (130, 33, 129)], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "sliced", "transposed"])
@pytest.mark.parametrize("w_t", [False, True], ids=["w", "wT"])
def test_16_bit_layer_is_the_float32_layer_rounded_once(monkeypatch, dtype, shape, layout, w_t):
    """Without 16-bit multiply-adds, a 16-bit layer converts its operands to float32, runs the
    float32 products and rounds each result once (csrc/cpu/matmul.cpp): bit for bit what the
    float32 layer gives on x.float(), w.float(), ... rounded by torch's .to, in every layout
    (our conversion for dense operands, torch's for the others), specials included."""
    if _native(dtype):
        pytest.skip(f"this CPU multiplies {dtype} natively: ATen's own 16-bit products run")
    monkeypatch.delenv("TWOLAYER_EXT_CPU_GEMM", raising=False)
    rows, d_in, d_out = shape
    ops = torch.ops.twolayer_ext
    x = make_x((rows, d_in), dtype, "cpu", layout)
    w = make_weight(d_out, d_in, dtype, "cpu", transposed=w_t) / d_in**0.5
    b = torch.randn(d_out, dtype=dtype)
    b[:3] = torch.tensor([float("inf"), -float("inf"), float("nan")])[: min(3, d_out)]
    exact = {"rtol": 0, "atol": 0, "equal_nan": True}

    y, mask = ops.linear_relu(x, w, b)
    y32, _ = ops.linear_relu(x.float(), w.float(), b.float())
    torch.testing.assert_close(y, y32.to(dtype), **exact)
    g = torch.randn(rows, d_out, dtype=dtype)
    got = ops.linear_relu_backward(g, x, w, mask, [True] * 3)
    want = ops.linear_relu_backward(g.float(), x.float(), w.float(), mask, [True] * 3)
    for a, e in zip(got, want):
        torch.testing.assert_close(a, e.to(dtype), **exact)
        assert a.stride() == e.stride()


@pytest.mark.parametrize("shape", [(64, 1000, 100), (67, 65, 13)], ids=str)
def test_kernels_do_not_depend_on_thread_count(monkeypatch, shape):
    """Each output is summed by one thread in a fixed order: bitwise equal for 1 and 2 threads."""
    monkeypatch.delenv("TWOLAYER_EXT_CPU_GEMM", raising=False)
    if twolayer_ext._C.cpu_paths()["float32_gemm_kernels"] == "none":
        # ATen's BLAS runs every product, and makes no such promise (README, Reliability):
        # Intel's MKL on an Intel Xeon gave 64x1000->100 other bits for 1 and 2 threads.
        pytest.skip("no kernels of ours for this instruction set: ATen's BLAS runs")
    rows, d_in, d_out = shape
    x, w, b = torch.randn(rows, d_in), torch.randn(d_out, d_in), torch.randn(d_out)
    g = torch.randn(rows, d_out)
    threads = torch.get_num_threads()
    outs = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            y, mask = torch.ops.twolayer_ext.linear_relu(x, w, b)
            grads = torch.ops.twolayer_ext.linear_relu_backward(g, x, w, mask, [True] * 3)
            outs.append((y, *grads))
    finally:
        torch.set_num_threads(threads)
    for a, b_ in zip(*outs):
        assert torch.equal(a, b_)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")  # nn.Linear(0, h)'s init
def test_sgd_step_w1_update_is_torch_sgds(gemm_path, monkeypatch, shape):
    """The CPU step updates w1 inside its gradient's product (gemm_bcast_add_f32) where the
    kernels run that product: the same bits as loss.backward() + torch.optim.SGD, whose add_
    rounds w1 - lr * grad once on ATen's AVX2 and AVX-512 kernels (and, where the instruction
    set is ATen's default, our kernels do not run: w1's gradient is added as SGD adds it)."""
    monkeypatch.setenv("TWOLAYER_EXT_CPU_FUSED_MLP", "0")  # the layered backward: w1's tiles
    rows, d_in, hidden = shape
    net = twolayer_ext.TwoLayerNet(d_in, hidden, 3)
    twin = copy.deepcopy(net)
    x, y = torch.randn(rows, d_in), torch.randn(rows, 3)
    opt = torch.optim.SGD(twin.parameters(), lr=0.01)
    for _ in range(2):
        loss = net.sgd_step(x, y, 0.01)
        opt.zero_grad()
        want = F.mse_loss(twin(x), y, reduction="sum")
        want.backward()
        opt.step()
        assert torch.equal(loss, want.detach())
        for (name, a), (_, b) in zip(net.named_parameters(), twin.named_parameters()):
            assert torch.equal(a, b), name


# (rows, in_features, hidden, out_features): layer 2 small enough for the one-pass gradients
SMALL_LAYER_2 = [(64, 1000, 100, 10), (67, 65, 13, 7), (5, 15, 17, 1), (3, 4, 70, 6)]


@pytest.mark.parametrize("shape", SMALL_LAYER_2, ids=str)
def test_small_layer_2_gradients_are_the_separate_products(monkeypatch, shape):
    """two_layer_backward's layer 2, where it is small, takes its three gradients in one pass
    (linear_grads_f32): grad_hidden and grad_w2 are the bcast kernel's products, bitwise, and
    grad_b2 the column sums of grad_out in row order. Compared with the separate products of
    linear_relu_backward on a mask that keeps everything (hidden > 0 throughout)."""
    monkeypatch.delenv("TWOLAYER_EXT_CPU_GEMM", raising=False)
    monkeypatch.setenv("TWOLAYER_EXT_CPU_FUSED_MLP", "0")  # the layered backward
    if twolayer_ext._C.cpu_paths()["float32_gemm_kernels"] == "none":
        pytest.skip("no kernels of ours for this instruction set: ATen's BLAS runs every product")
    rows, d_in, hidden_features, d_out = shape
    x, w1 = torch.randn(rows, d_in), torch.randn(hidden_features, d_in)
    w2, g = torch.randn(d_out, hidden_features), torch.randn(rows, d_out)
    hidden = torch.rand(rows, hidden_features) + 0.5
    grads = torch.ops.twolayer_ext.two_layer_backward(g, x, w1, w2, hidden, [True] * 5)
    backward = torch.ops.twolayer_ext.linear_relu_backward
    keep_all = reference.pack_mask(torch.ones(rows, d_out, dtype=torch.bool))
    grad_hidden, grad_w2, _ = backward(g, hidden, w2, keep_all, [True] * 3)
    keep_all = reference.pack_mask(hidden > 0)
    want = (*backward(grad_hidden, x, w1, keep_all, [True] * 3), grad_w2)
    for name, got, expected in zip(["x", "w1", "b1", "w2"], grads, want):
        assert torch.equal(got, expected), name
    in_row_order = g[0].clone()
    for r in range(1, rows):
        in_row_order += g[r]
    assert torch.equal(grads[4], in_row_order), "b2"


ONEDNN_CAPPED_SCRIPT = """
import sys, torch, twolayer_ext
x, w1, b1, w2, b2, g = torch.load(sys.argv[1])
ps = [t.requires_grad_() for t in (w1, b1, w2, b2)]
y = twolayer_ext.functional.linear_relu(x, w1, b1)
out = twolayer_ext.functional.two_layer_mlp(x, w1, b1, w2, b2)
torch.save([y, out, *torch.autograd.grad(out, ps, g)], sys.argv[2])
"""


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_16_bit_layers_where_onednn_is_capped_below_the_cpu(dtype, tmp_path):
    """ONEDNN_MAX_CPU_ISA=AVX2 on a CPU with native 16-bit products leaves oneDNN without a
    linear primitive for the 16-bit types ("could not create a primitive descriptor"): the
    layers then run ATen's addmm instead of raising (matmul.cpp, onednn_linear)."""
    import os
    import subprocess
    import sys

    x, g = torch.randn(64, 100, dtype=dtype), torch.randn(64, 10, dtype=dtype)
    w1, b1 = torch.randn(30, 100, dtype=dtype) / 10, torch.randn(30, dtype=dtype)
    w2, b2 = torch.randn(10, 30, dtype=dtype) / 5, torch.randn(10, dtype=dtype)
    torch.save([x, w1, b1, w2, b2, g], tmp_path / "in.pt")
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    env.pop("TWOLAYER_EXT_CPU_GEMM", None)
    subprocess.run(
        [sys.executable, "-c", ONEDNN_CAPPED_SCRIPT, tmp_path / "in.pt", tmp_path / "out.pt"],
        check=True,
        env=env,
        cwd="/",  # the installed package, not the unbuilt sources of a checkout
    )
    y, out, *grads = torch.load(tmp_path / "out.pt")
    xd, w1d, b1d, w2d, b2d = (t.double().requires_grad_() for t in (x, w1, b1, w2, b2))
    assert_close(y, reference.linear_relu(xd, w1d, b1d), dtype, "y")
    want = reference.two_layer(xd, w1d, b1d, w2d, b2d)
    assert_close(out, want, dtype, "out")
    want_grads = torch.autograd.grad(want, (w1d, b1d, w2d, b2d), g.double())
    for name, a, e in zip(["w1", "b1", "w2", "b2"], grads, want_grads):
        assert_close(a, e, dtype, name)


def test_seed_network_matches_between_paths(monkeypatch):
    """The whole seed network (two_layer ops) agrees between the kernel paths and ATen's BLAS."""
    x, w1, b1 = torch.randn(64, 1000), torch.randn(100, 1000) / 30, torch.randn(100)
    w2, b2 = torch.randn(10, 100) / 10, torch.randn(10)
    g = torch.randn(64, 10)
    results = []
    for path in PATHS:
        if path == "kernels":
            monkeypatch.delenv("TWOLAYER_EXT_CPU_GEMM", raising=False)
        else:
            monkeypatch.setenv("TWOLAYER_EXT_CPU_GEMM", path)
        out, hidden = torch.ops.twolayer_ext.two_layer_forward(x, w1, b1, w2, b2)
        grads = torch.ops.twolayer_ext.two_layer_backward(g, x, w1, w2, hidden, [True] * 5)
        results.append((out, hidden, *grads))
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert_close(a, b.double(), torch.float32)


def test_gemm_paths_benchmark_runs():
    """twolayer_ext.bench.gemm_paths on one round, so it cannot rot (no timing is asserted)."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "twolayer_ext.bench.gemm_paths", "--rounds", "1"],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",  # the installed package, not the unbuilt sources of a checkout
    ).stdout
    assert "grad_weight + grad_bias" in out and "sgd_step" in out


NARROWER = {"avx512": ["avx2", "default"], "avx2": ["default"]}
KERNELS = {"avx2": "avx2", "default": "none"}


@pytest.mark.parametrize("isa", ["avx2", "default"])
def test_under_a_narrower_instruction_set(isa):
    """This file's tests again in a subprocess under ATEN_CPU_CAPABILITY=isa, where our GEMM
    kernels and element-wise passes both follow ATen's narrower choice."""
    import os
    import subprocess
    import sys

    mine = torch.backends.cpu.get_cpu_capability().lower()
    if isa not in NARROWER.get(mine, []):
        pytest.skip(f"this CPU runs {mine}; no {isa} below it")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": isa}
    paths = subprocess.run(
        [sys.executable, "-c", "import twolayer_ext; print(twolayer_ext._C.cpu_paths())"],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"'float32_gemm_kernels': '{KERNELS[isa]}'" in paths, paths
    assert f"'elementwise_passes': '{isa}'" in paths, paths
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__]
        + ["-k", "not narrower and not benchmark_runs"],
        env=env,
        cwd="/",
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
