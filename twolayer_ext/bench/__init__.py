"""Benchmarks, run as ``python -m twolayer_ext bench [--device cpu|cuda]`` (docs/BENCHMARKS.md).

* :mod:`.cpu`: the CPU ops, the tutorial's training step and the numpy scheme;
* :mod:`.cuda`: the CUDA ops on both GEMM paths and the tutorial step on the GPU;
* :mod:`.mlp` (``--suite mlp``): narrow networks with many rows, where the two-layer ops
  run fully fused, on either device, with the peak memory of a training step;
* :mod:`.gemm_paths`: the CPU GEMM kernels per instruction set (a developer's tool);
* :mod:`.timing`: interleaved timing (wall clock, CUDA events) and saved-tensor bytes.

Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import json
from typing import Any


def main(
    json_path: str | None = None,
    rounds: int = 15,
    use_compile: bool = True,
    quick: bool = False,
    device: str = "cpu",
    suite: str = "ops",
) -> dict[str, Any]:
    """Run a suite ("ops" or "mlp") for ``device``, print its table, optionally write the
    JSON record."""
    from . import cpu, cuda, mlp

    report: dict[str, Any]
    if suite == "mlp":
        report = mlp.run(rounds=rounds, use_compile=use_compile, quick=quick, device=device)
        print(mlp.format_table(report))
    else:
        ops = cuda if device == "cuda" else cpu
        report = ops.run(rounds=rounds, use_compile=use_compile, quick=quick)
        print(ops.format_table(report))
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=2)
    return report
