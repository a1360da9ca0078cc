"""Where the time of a CPU case goes: the share spent in the BLAS products, per variant.

Run as ``python -m twolayer_ext.bench.blas_share`` (a developer's tool, like gemm_paths).
For the cases where the extension and torch are within a few percent of each other
(docs/BENCHMARKS.md), this shows whether both spend nearly all their time in the same
product (aten::addmm / aten::mm, which the extension's kernels call too): then the ratio is
a tie, and what is left to either side is the pass around the product and the call itself.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

from ..nn import LinearReLU

BLAS_OPS = ("aten::addmm", "aten::mm")
# (rows, in, out, dtype): the LinearReLU forward rows of the CPU table that are ties.
CASES = [
    (64, 1000, 100, torch.bfloat16),
    (512, 256, 512, torch.bfloat16),
    (64, 1000, 100, torch.float64),
    (512, 256, 512, torch.float64),
]


def blas_share(fn: Callable[[], object], calls: int) -> tuple[float, float]:
    """(total µs per call, BLAS µs per call) of fn, from the profiler's self CPU times."""
    for _ in range(5):
        fn()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(calls):
            fn()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    blas = sum(e.self_cpu_time_total for e in events if e.key in BLAS_OPS)
    return total / calls, blas / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    print(f"{'case':<36}{'variant':>8}{'µs/call':>10}{'BLAS µs':>10}{'BLAS share':>12}")
    for rows, d_in, d_out, dtype in CASES:
        torch.manual_seed(0)
        layer = LinearReLU(d_in, d_out, dtype=dtype)
        lin = nn.Linear(d_in, d_out, dtype=dtype)
        lin.load_state_dict(layer.state_dict())
        x = torch.randn(rows, d_in, dtype=dtype)
        case = f"LinearReLU fwd {rows}x{d_in}->{d_out} {str(dtype).removeprefix('torch.')}"
        with torch.no_grad():
            for name, fn in (("ext", lambda: layer(x)), ("torch", lambda: torch.relu(lin(x)))):
                total, blas = blas_share(fn, args.calls)
                print(f"{case:<36}{name:>8}{total:>10.1f}{blas:>10.1f}{blas / total:>12.0%}")


if __name__ == "__main__":
    main()
