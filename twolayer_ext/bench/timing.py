"""Timing and memory helpers shared by the benchmarks (CPU wall clock, CUDA events)."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch

from ..info import cpu_info


def allocator() -> str:
    """The malloc that serves torch's CPU tensors in this process: jemalloc, tcmalloc or
    mimalloc where one is loaded, else glibc's, with any MALLOC_* settings of the environment.

    With glibc's defaults a buffer of 32 MiB or more is mapped afresh and page-faulted on every
    call, with the others (or a raised MALLOC_MMAP_THRESHOLD_) it is not: torch's eager times of
    large layers move by up to 3x between the two (docs/BENCHMARKS.md, "1 MiB blocks for
    narrow hidden layers"), so a table names the one it ran with.
    """
    try:
        with open("/proc/self/maps") as maps:
            loaded = maps.read()
    except OSError:  # not Linux: what the environment preloads, if anything
        loaded = os.environ.get("LD_PRELOAD", "")
    for name in ("jemalloc", "tcmalloc", "mimalloc"):
        if f"lib{name}" in loaded:
            return name
    tuned = [f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_")]
    return "glibc malloc" + (f" ({', '.join(tuned)})" if tuned else "")


def machine() -> dict[str, Any]:
    """What a CPU benchmark ran on: the CPU (model, cores, L2, vector ISA, native 16-bit
    arithmetic), the paths the CPU ops took on it, torch, its thread count and allocator."""
    return {
        "cpu": cpu_info(),
        "cpu_isa": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "allocator": allocator(),
    }


def describe_machine(m: dict[str, Any]) -> str:
    """machine() in two lines, the head of every CPU table."""
    cpu = m["cpu"]
    paths = cpu["paths"]
    yes_no = {True: "yes", False: "no"}
    return (
        f"CPU: {cpu['name']} ({cpu['family_model'] or 'family ?'}), "
        f"{cpu['physical_cores']} physical cores, L2 {cpu['l2_cache_bytes'] // 1024} KiB per "
        f"core; vector ISA {' '.join(cpu['vector_isa']) or 'none'} (ATen: {m['cpu_isa']}); "
        f"native bfloat16 {yes_no[cpu['native_bfloat16']]}, float16 "
        f"{yes_no[cpu['native_float16']]}; torch {m['torch']}, {m['threads']} threads, "
        f"{m.get('allocator', 'allocator not recorded')}\n"
        f"paths: float32 GEMM kernels {paths['float32_gemm_kernels']} (bounds measured on "
        f"{paths['float32_gemm_bounds']}), bfloat16 products "
        f"{paths['bfloat16_products']}, float16 products {paths['float16_products']}, "
        f"fused bfloat16 network {paths.get('bfloat16_fused_mlp', 'not recorded')}, "
        f"element-wise passes {paths['elementwise_passes']}"
    )


@contextlib.contextmanager
def inductor_freezing() -> Iterator[None]:
    """torch.compile as a user compiles for CPU inference: with
    torch._inductor.config.freezing, which folds the weights into the graph, packs them for
    oneDNN and fuses the ReLU into the product. Compile and time inside (no_grad)."""
    import torch._inductor.config as inductor_config

    previous = inductor_config.freezing
    inductor_config.freezing = True
    try:
        yield
    finally:
        inductor_config.freezing = previous


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
