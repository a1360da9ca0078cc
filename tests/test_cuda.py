"""CUDA-only behaviour: the two GEMM paths, graphs, streams, TF32, devices, the GPU bench.
Skips cleanly without a GPU.

Per-dtype correctness on CUDA is covered by the device-parametrized tests in
the per-op files (test_linear_relu.py, test_relu.py, test_two_layer.py, test_sgd_step.py).
"""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import HAS_CUDA, assert_close, cuda_kernel_names

import twolayer_ext
from twolayer_ext import reference

pytestmark = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")


def test_cuda_graph_capture_and_replay():
    layer = twolayer_ext.LinearReLU(96, 80, device="cuda")
    static_x = torch.randn(48, 96, device="cuda", requires_grad=True)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture, as torch recommends
        for _ in range(2):
            torch.autograd.grad(layer(static_x).sum(), [static_x, layer.weight])
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = layer(static_x)
        static_gx, static_gw = torch.autograd.grad(
            static_y.square().sum(), [static_x, layer.weight]
        )
    for _ in range(3):
        with torch.no_grad():
            static_x.copy_(torch.randn_like(static_x))
        graph.replay()
        torch.cuda.synchronize()
        x = static_x.detach().clone().requires_grad_()
        y = reference.linear_relu(x, layer.weight, layer.bias)
        gx, gw = torch.autograd.grad(y.square().sum(), [x, layer.weight])
        assert_close(static_y, y, torch.float32, "graph y")
        assert_close(static_gx, gx, torch.float32, "graph grad_x")
        assert_close(static_gw, gw, torch.float32, "graph grad_w")


def test_runs_on_the_current_stream():
    """Work queued on a side stream must be ordered with our kernels on that stream."""
    s = torch.cuda.Stream()
    w = torch.randn(256, 512, device="cuda")
    with torch.cuda.stream(s):
        x = torch.randn(4096, 512, device="cuda")
        x.mul_(2.0).add_(1.0)  # pending on `s` when linear_relu is enqueued
        y = twolayer_ext.linear_relu(x, w)
        gx = twolayer_ext.ops.relu_backward(torch.ones_like(y), y)
    s.synchronize()
    assert_close(y, reference.linear_relu(x.double(), w.double()), torch.float32, "y")
    assert torch.equal(gx, (y > 0).float())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_larger_shapes(dtype):
    x = torch.randn(1000, 700, device="cuda", dtype=dtype)
    w = torch.randn(300, 700, device="cuda", dtype=dtype) / 30
    b = torch.randn(300, device="cuda", dtype=dtype)
    y, mask = torch.ops.twolayer_ext.linear_relu(x, w, b)
    assert_close(y, reference.linear_relu(x.double(), w.double(), b.double()), dtype, "y")
    g = torch.randn_like(y)
    got = torch.ops.twolayer_ext.linear_relu_backward(g, x, w, mask, [True, True, True])
    ref = reference.linear_relu_backward(g.double(), x.double(), w.double(), mask, [True] * 3)
    for a, e, n in zip(got, ref, ["x", "w", "b"]):
        assert_close(a, e, dtype, f"grad_{n}")


def test_tf32_follows_torch_flag():
    x = torch.randn(128, 512, device="cuda")
    w = torch.randn(64, 512, device="cuda")
    ref = reference.linear_relu(x.double(), w.double())
    old = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = False
        exact = twolayer_ext.linear_relu(x, w)
        torch.backends.cuda.matmul.allow_tf32 = True
        fast = twolayer_ext.linear_relu(x, w)
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    scale = ref.abs().max().item()
    err_exact = (exact.double() - ref).abs().max().item() / scale
    err_fast = (fast.double() - ref).abs().max().item() / scale
    assert err_exact < 1e-5
    assert err_fast < 5e-3
    assert err_fast > err_exact  # TF32 really was used when allowed


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_non_default_device():
    x = torch.randn(16, 32, device="cuda:1")
    w = torch.randn(8, 32, device="cuda:1")
    y = twolayer_ext.linear_relu(x, w)
    assert y.device == x.device
    assert_close(y, reference.linear_relu(x.double(), w.double()), torch.float32, "y")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_products_run_on_cublas_with_one_pass_each_way(dtype):
    """Products on cuBLAS; around them exactly one pass forward (bias is cuBLAS's,
    ReLU + mask ours) and one backward (masked grad + bias grad)."""
    x = torch.randn(300, 200, device="cuda", dtype=dtype)
    w = torch.randn(150, 200, device="cuda", dtype=dtype) / 15
    b = torch.randn(150, device="cuda", dtype=dtype)
    g = torch.randn(300, 150, device="cuda", dtype=dtype)
    results = {}

    def forward():
        results["y"], results["mask"] = torch.ops.twolayer_ext.linear_relu(x, w, b)

    def backward():
        results["grads"] = torch.ops.twolayer_ext.linear_relu_backward(
            g, x, w, results["mask"], [True, True, True]
        )

    fwd, bwd = cuda_kernel_names(forward), cuda_kernel_names(backward)
    assert sum("relu_mask_kernel" in n for n in fwd) == 1, fwd
    assert sum("masked_grad_kernel" in n for n in bwd) == 1, bwd
    xd, wd, bd = x.double(), w.double(), b.double()
    assert_close(results["y"], reference.linear_relu(xd, wd, bd), dtype, "y")
    want = reference.linear_relu_backward(g.double(), xd, wd, results["mask"], [True] * 3)
    for got, ref, name in zip(results["grads"], want, ["x", "w", "b"]):
        assert_close(got, ref, dtype, f"grad_{name}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_sgd_step_replayed_from_a_cuda_graph_equals_eager_steps(dtype):
    """k steps captured once and replayed on new batches leave the same weights as k eager
    sgd_step calls on the same batches."""
    steps, lr = 4, 1e-3
    net_eager = twolayer_ext.TwoLayerNet(64, 48, 8, device="cuda", dtype=dtype)
    net_graph = copy.deepcopy(net_eager)
    xs = [torch.randn(32, 64, device="cuda", dtype=dtype) for _ in range(steps)]
    ys = [torch.randn(32, 8, device="cuda", dtype=dtype) for _ in range(steps)]
    static_x, static_y = xs[0].clone(), ys[0].clone()

    warm = copy.deepcopy(net_graph)  # warm-up outside the capture, on weights we discard
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(2):
            warm.sgd_step(static_x, static_y, lr)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = net_graph.sgd_step(static_x, static_y, lr)

    for x, y in zip(xs, ys):
        static_x.copy_(x)
        static_y.copy_(y)
        graph.replay()
        loss = net_eager.sgd_step(x, y, lr)
        torch.cuda.synchronize()
        assert_close(static_loss, loss, dtype, "loss")
    for (name, a), b in zip(net_graph.named_parameters(), net_eager.parameters()):
        assert_close(a, b, dtype, name)


def test_cli_gpu_bench_runs(tmp_path):
    """`bench --device cuda` on tiny sizes, so the harness cannot rot (no timing is asserted)."""
    import json

    from twolayer_ext.cli import main as cli_main

    out = tmp_path / "gpu-bench.json"
    args = ["bench", "--device", "cuda", "--quick", "--rounds", "1", "--no-compile"]
    assert cli_main([*args, "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert {"commit", "device", "torch", "cases"} <= report.keys()
    for case in report["cases"]:
        assert case["ratio"] == case["torch_ms"] / case["ext_ms"]
    assert any("sgd_step" in case["case"] for case in report["cases"])
