"""Where the time of a CPU case goes: the share spent in kernels both sides run, per variant.

Run as ``python -m twolayer_ext.bench.blas_share`` (a developer's tool, like gemm_paths).
For the cases where the extension and torch are within a few percent of each other
(docs/BENCHMARKS.md), this shows whether both spend nearly all their time in the same
kernels: the BLAS products (aten::addmm / aten::mm, which the extension's kernels call too),
or for float32/float64 relu ATen's own element-wise kernels (which the extension's relu
calls). Then the ratio is a tie, and what is left to either side is the pass around the
product and the call itself.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from ..functional import relu
from ..nn import LinearReLU

SHARED_OPS = ("aten::addmm", "aten::mm", "aten::clamp_min", "aten::threshold_backward")
LAYER_SIZES = [(64, 1000, 100), (512, 256, 512), (512, 1024, 1024)]
DTYPES = [torch.bfloat16, torch.float64]


def blas_share(fn: Callable[[], object], calls: int) -> tuple[float, float]:
    """(total µs per call, µs per call in SHARED_OPS) of fn, from the profiler's self CPU
    times."""
    for _ in range(5):
        fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            fn()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    blas = sum(e.self_cpu_time_total for e in events if e.key in SHARED_OPS)
    return total / calls, blas / calls


Variants = dict[str, Callable[[], object]]


def layer_cases(rows: int, d_in: int, d_out: int, dtype: torch.dtype) -> list[tuple[str, Variants]]:
    """LinearReLU forward and forward+backward against F.linear + relu, as the CPU bench."""
    torch.manual_seed(0)
    layer = LinearReLU(d_in, d_out, dtype=dtype)
    lin = nn.Linear(d_in, d_out, dtype=dtype)
    lin.load_state_dict(layer.state_dict())
    x, g = torch.randn(rows, d_in, dtype=dtype), torch.randn(rows, d_out, dtype=dtype)
    ext_p, torch_p = list(layer.parameters()), list(lin.parameters())

    def no_grad(fn: Callable[[], object]) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                return fn()

        return run

    size = f"{rows}x{d_in}->{d_out} {str(dtype).removeprefix('torch.')}"
    return [
        (
            f"LinearReLU fwd {size}",
            {"ext": no_grad(lambda: layer(x)), "torch": no_grad(lambda: torch.relu(lin(x)))},
        ),
        (
            f"LinearReLU fwd+bwd {size}",
            {
                "ext": lambda: torch.autograd.grad(layer(x), ext_p, g),
                "torch": lambda: torch.autograd.grad(torch.relu(lin(x)), torch_p, g),
            },
        ),
    ]


def relu_cases(dtype: torch.dtype) -> list[tuple[str, Variants]]:
    """relu and relu_backward 2048^2 against torch.relu and threshold_backward."""
    x = torch.randn(2048, 2048, dtype=dtype)
    g, y = torch.randn_like(x), torch.relu(x)
    dt = str(dtype).removeprefix("torch.")
    return [
        (f"relu 2048x2048 {dt}", {"ext": lambda: relu(x), "torch": lambda: torch.relu(x)}),
        (
            f"relu_backward 2048x2048 {dt}",
            {
                "ext": lambda: torch.ops.twolayer_ext.relu_backward(g, y),
                "torch": lambda: torch.ops.aten.threshold_backward(g, y, 0),
            },
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    cases = [c for dt in DTYPES for size in LAYER_SIZES for c in layer_cases(*size, dt)]
    cases += [c for dt in (torch.float32, torch.float64) for c in relu_cases(dt)]
    print(f"{'case':<42}{'variant':>8}{'µs/call':>10}{'shared µs':>11}{'share':>8}")
    for case, variants in cases:
        for name, fn in variants.items():
            total, shared = blas_share(fn, args.calls)
            print(f"{case:<42}{name:>8}{total:>10.1f}{shared:>11.1f}{shared / total:>8.0%}")


if __name__ == "__main__":
    main()
