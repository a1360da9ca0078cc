"""The tutorial's float32 products on the extension's GEMM kernels and on ATen's BLAS, side by
side in one process.

Paths (TWOLAYER_EXT_CPU_GEMM, read on every call): the kernels of the instruction set our CPU
kernels run (unset; ATen's choice, so ``ATEN_CPU_CAPABILITY=avx2`` measures the AVX2 kernels
on an AVX-512 CPU) and ATen's BLAS ("aten").
Usage: [ATEN_CPU_CAPABILITY=avx2] python -m twolayer_ext.bench.gemm_paths [--rounds N]
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable

import torch

import twolayer_ext
from twolayer_ext.bench.timing import time_interleaved

PATHS = {"kernels": None, "aten": "aten"}


def on_path(value: str | None, fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        if value is None:
            os.environ.pop("TWOLAYER_EXT_CPU_GEMM", None)
        else:
            os.environ["TWOLAYER_EXT_CPU_GEMM"] = value
        return fn()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args()
    torch.manual_seed(0)
    x, w, b = torch.randn(64, 1000), torch.randn(100, 1000) / 30, torch.randn(100)
    g = torch.randn(64, 100)
    _, mask = torch.ops.twolayer_ext.linear_relu(x, w, b)
    fwd = torch.ops.twolayer_ext.linear_relu.default
    bwd = torch.ops.twolayer_ext.linear_relu_backward.default
    net, y = twolayer_ext.TwoLayerNet(1000, 100, 10), torch.randn(64, 10)
    cases = {
        "linear_relu 64x1000->100": lambda: fwd(x, w, b),
        "grad_weight + grad_bias": lambda: bwd(g, x, w, mask, [False, True, True]),
        "grad_x": lambda: bwd(g, x, w, mask, [True, False, False]),
        "sgd_step (tutorial network)": lambda: net.sgd_step(x, y, 1e-9),
    }
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"ISA {torch.backends.cpu.get_cpu_capability()}, kernels "
        f"{twolayer_ext.build_info()['cpu']['paths']['float32_gemm_kernels']}; "
        "microseconds per call (median)"
    )
    print(f"{'case':<26}" + "".join(f"{p:>10}" for p in PATHS) + f"{'aten/kernels':>14}")
    for name, fn in cases.items():
        t = time_interleaved({p: on_path(v, fn) for p, v in PATHS.items()}, args.rounds)
        row = "".join(f"{t[p] * 1e3:>10.1f}" for p in PATHS)
        print(f"{name:<26}{row}{t['aten'] / t['kernels']:>14.2f}")


if __name__ == "__main__":
    main()
