"""Timing and memory helpers shared by the benchmarks (CPU wall clock, CUDA events)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

import torch


def time_interleaved(
    fns: Mapping[str, Callable[[], object]], rounds: int, min_round_s: float = 0.02
) -> dict[str, float]:
    """Median over rounds of ms per call; calls per round sized so a round takes min_round_s."""
    for fn in fns.values():  # warm-up (allocations, compilation, caches)
        for _ in range(3):
            fn()
    calls = {}
    for name, fn in fns.items():
        start = time.perf_counter()
        fn()
        calls[name] = max(1, int(min_round_s / max(time.perf_counter() - start, 1e-7)))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            n = calls[name]
            start = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - start) / n * 1e3)
    return {name: statistics.median(v) for name, v in samples.items()}


def saved_bytes(fn: Callable[[], object], *alive: torch.Tensor) -> int:
    """Bytes of the distinct storages autograd saves for backward while running fn(),
    not counting the storages of ``alive`` (tensors kept anyway: the input, the parameters)."""
    skip = {t.untyped_storage().data_ptr() for t in alive}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in skip:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(seen.values())


def time_cuda_interleaved(
    fns: Mapping[str, Callable[[], object]], rounds: int, min_round_ms: float = 20.0
) -> dict[str, float]:
    """CUDA-event version of :func:`time_interleaved`: median over rounds of GPU ms per call.

    Each round runs every variant back to back on the current stream, ``calls[name]`` times,
    between two events; the host does not wait between variants, so launch-bound cases are
    measured as a training loop runs them (the CPU queues ahead of the GPU).
    """
    for fn in fns.values():  # warm-up: allocations, cuBLAS heuristics, compilation
        for _ in range(3):
            fn()
    torch.cuda.synchronize()
    calls = {}
    for name, fn in fns.items():
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        calls[name] = max(1, int(min_round_ms / max(start.elapsed_time(end), 1e-3)))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(calls[name]):
                fn()
            end.record()
            end.synchronize()
            samples[name].append(start.elapsed_time(end) / calls[name])
    return {name: statistics.median(v) for name, v in samples.items()}
