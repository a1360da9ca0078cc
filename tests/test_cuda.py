"""CUDA-only behaviour: graphs, streams, TF32, devices. Skips cleanly without a GPU.

Per-dtype correctness on CUDA is covered by the device-parametrized tests in
test_linear_relu.py / test_relu.py / test_gradcheck.py / test_opcheck.py.
"""

from __future__ import annotations

import pytest
import torch
from conftest import HAS_CUDA, assert_close

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
