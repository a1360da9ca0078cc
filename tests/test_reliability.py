"""Threads, leaks, determinism and meta tensors."""

from __future__ import annotations

import threading

import pytest
import torch

import twolayer_ext
from twolayer_ext import reference


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def test_eight_threads_forward_backward_concurrently():
    inputs = [
        (
            torch.randn(32, 50, dtype=torch.float64),
            torch.randn(20, 50, dtype=torch.float64),
            torch.randn(20, dtype=torch.float64),
        )
        for _ in range(8)
    ]
    results: list[object] = [None] * 8
    barrier = threading.Barrier(8)

    def work(i: int) -> None:
        x, w, b = (t.clone().requires_grad_() for t in inputs[i])
        barrier.wait()
        try:
            for _ in range(20):
                y = twolayer_ext.linear_relu(x, w, b)
                grads = torch.autograd.grad(y.square().sum(), (x, w, b))
            results[i] = (y.detach(), grads)
        except Exception as e:  # noqa: BLE001  (reported below, not swallowed)
            results[i] = e

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (x, w, b), res in zip(inputs, results):
        assert not isinstance(res, Exception), res
        y, grads = res
        xr, wr, br = (t.clone().requires_grad_() for t in (x, w, b))
        yr = reference.linear_relu(xr, wr, br)
        want = torch.autograd.grad(yr.square().sum(), (xr, wr, br))
        torch.testing.assert_close(y, yr.detach())
        for g, r in zip(grads, want):
            torch.testing.assert_close(g, r)


# 10,000 forward+backward calls may grow the process by at most this much (allocator
# caches and Python's own arenas settle well below it; a leak of even one small
# tensor per call would be ~10k * 1.6 KiB = 16 MiB for the shapes below).
LEAK_BOUND_BYTES = 8 * 1024 * 1024


@pytest.mark.parametrize("api", ["linear_relu", "two_layer"])
def test_no_memory_growth_over_10k_calls(api):
    x = torch.randn(8, 40, requires_grad=True)
    w = torch.randn(50, 40, requires_grad=True)
    b = torch.randn(50, requires_grad=True)
    w2 = torch.randn(4, 50, requires_grad=True)

    def call():
        if api == "linear_relu":
            y = twolayer_ext.linear_relu(x, w, b)
            torch.autograd.grad(y.sum(), (x, w, b))
        else:
            y = twolayer_ext.two_layer_mlp(x, w, b, w2, None)
            torch.autograd.grad(y.sum(), (x, w, b, w2))

    for _ in range(1000):  # warm-up: allocator and interpreter caches
        call()
    before = _rss_bytes()
    for _ in range(10_000):
        call()
    growth = _rss_bytes() - before
    assert growth <= LEAK_BOUND_BYTES, f"RSS grew by {growth / 2**20:.1f} MiB"


def _run(x, w, b, g):
    x, w, b = (t.clone().requires_grad_() for t in (x, w, b))
    y = twolayer_ext.linear_relu(x, w, b)
    return (y.detach(), *torch.autograd.grad(y, (x, w, b), g))


def test_bitwise_deterministic_across_calls():
    x, w, b = torch.randn(300, 200), torch.randn(150, 200), torch.randn(150)
    g = torch.randn(300, 150)
    first = _run(x, w, b, g)
    for _ in range(5):
        for a, c in zip(first, _run(x, w, b, g)):
            assert torch.equal(a, c)


def test_bias_gradient_and_mask_identical_across_thread_counts():
    """Our own reductions are thread-count independent. The GEMMs come from ATen's BLAS,
    which may reorder its sums with the thread count (documented exception)."""
    x, w, b = torch.randn(700, 64), torch.randn(96, 64), torch.randn(96)
    g = torch.randn(700, 96)
    _, mask = torch.ops.twolayer_ext.linear_relu(x, w, b)
    old = torch.get_num_threads()
    out = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            _, _, gb = torch.ops.twolayer_ext.linear_relu_backward(
                g, x, w, mask, [False, False, True]
            )
            out.append(gb)
    finally:
        torch.set_num_threads(old)
    assert torch.equal(out[0], out[1])


def test_meta_tensors_are_valid_input():
    x = torch.empty(3, 5, 7, device="meta")
    w, b = torch.empty(4, 7, device="meta"), torch.empty(4, device="meta")
    y, mask = torch.ops.twolayer_ext.linear_relu(x, w, b)
    assert y.shape == (3, 5, 4) and y.device.type == "meta"
    assert mask.shape == (15, 1) and mask.dtype == torch.uint8
    out, hidden = torch.ops.twolayer_ext.two_layer_forward(
        x, w, b, torch.empty(2, 4, device="meta"), None
    )
    assert out.shape == (3, 5, 2) and hidden.shape == (3, 5, 4)
    assert twolayer_ext.relu(x).shape == x.shape
    with pytest.raises(RuntimeError, match="in_features mismatch"):
        torch.ops.twolayer_ext.linear_relu(x, torch.empty(4, 6, device="meta"), None)
