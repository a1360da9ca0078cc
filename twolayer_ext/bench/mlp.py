"""Narrow networks with many rows (``bench --suite mlp``): where the two-layer ops run fully
fused (csrc/cpu/two_layer_fused.cpp, csrc/cuda/fused_mlp.cu), against torch eager,
torch.compile and the ops' layer-by-layer path, side by side in one run, plus the peak
memory of a training step.

Modes: inference (no_grad), training forward+backward (every parameter's gradient), and
one SGD step (``TwoLayerNet.sgd_step`` against the step torch users write). ``ext`` is what
the ops' rule picks; ``ext layered`` forces the layer-by-layer path
(``TWOLAYER_EXT_CPU_FUSED_MLP=0``, ``TWOLAYER_EXT_CUDA_FUSED_MLP=0``); on CUDA, where the
rule does not pick the fused kernels until they are measured, ``ext fused`` forces them
(``=1``; where their shared memory does
not fit, that is the layered path again). Ratios are torch-eager time / extension time.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..models import TwoLayerNet, twolayer_state_dict_to_sequential
from .timing import (
    describe_machine,
    inductor_freezing,
    machine,
    time_cuda_interleaved,
    time_interleaved,
)

# (rows, in, hidden, out): an implicit-representation-like net, a NeRF/PINN-like one, and
# the tutorial's network at 65536 rows.
NETWORKS = [(262144, 64, 64, 16), (1048576, 32, 128, 3), (65536, 1000, 100, 10)]
QUICK_NETWORKS = [(4096, 16, 32, 4)]
DTYPES = {
    "cpu": [torch.float32, torch.bfloat16, torch.float16, torch.float64],
    "cuda": [torch.bfloat16, torch.float16, torch.float32, torch.float64],
}
QUICK_DTYPES = {"cpu": [torch.float32], "cuda": [torch.float32]}
LR = 1e-6


def _switch(device: str) -> str:
    """The environment switch of the device's fused path (README, "Path switches")."""
    return f"TWOLAYER_EXT_{device.upper()}_FUSED_MLP"


def _path(device: str, fused: str | None, fn: Callable[[], object]) -> Callable[[], object]:
    """fn with the device's fused-path switch set to `fused` (None: unset, the rule decides);
    the ops read it on every call."""

    def run() -> object:
        if fused is None:
            os.environ.pop(_switch(device), None)
        else:
            os.environ[_switch(device)] = fused
        return fn()

    return run


def _rss_bytes(key: str) -> int:
    with open("/proc/self/status") as f:
        match = re.search(rf"^{key}:\s+(\d+) kB", f.read(), re.MULTILINE)
    return int(match.group(1)) * 1024 if match else 0


def peak_bytes(fn: Callable[[], object], device: str) -> int | None:
    """Memory fn() needs at its peak above what is live before it: the CUDA caching
    allocator's peak, or on Linux the peak resident set (reset through /proc/self/clear_refs)
    minus the resident set before; None where neither is available."""
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - base
    with contextlib.suppress(OSError, AttributeError):  # glibc: give freed heap back to the OS,
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # so the step's memory is counted when touched
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak (VmHWM) to the current resident set
    except OSError:
        return None
    base = _rss_bytes("VmRSS")
    fn()
    return _rss_bytes("VmHWM") - base


def _compiled(model: nn.Module, use_compile: bool) -> Callable[..., Any] | None:
    if not use_compile:
        return None
    torch._dynamo.reset()  # fresh per case: the same code objects for new shapes and dtypes
    return torch.compile(model)  # default mode, as a new user would call it


def bench_network(
    net_size: tuple[int, int, int, int],
    dtype: torch.dtype,
    device: str,
    rounds: int,
    use_compile: bool,
) -> list[dict[str, Any]]:
    """The three modes of one network and dtype; each row's timings in ms and peak bytes."""
    rows, d_in, hidden, d_out = net_size
    torch.manual_seed(0)
    net = TwoLayerNet(d_in, hidden, d_out, device=device, dtype=dtype)
    seq = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))
    seq = seq.to(device, dtype)
    seq.load_state_dict(twolayer_state_dict_to_sequential(net.state_dict()))
    x = torch.randn(rows, d_in, device=device, dtype=dtype)
    y = torch.randn(rows, d_out, device=device, dtype=dtype)
    net_params, seq_params = list(net.parameters()), list(seq.parameters())
    compiled = _compiled(seq, use_compile)
    opt = torch.optim.SGD(seq.parameters(), lr=LR)

    def infer(model: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], object]:
        def run() -> object:
            with torch.no_grad():
                return model(x)

        return run

    def train(
        model: Callable[[torch.Tensor], torch.Tensor], params: Sequence[torch.Tensor]
    ) -> Callable[[], object]:
        return lambda: torch.autograd.grad(model(x).sum(), params)

    def step(model: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[], object]:
        def run() -> object:
            loss = F.mse_loss(model(x), y, reduction="sum")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return loss

        return run

    modes = {
        "inference": (infer(net), infer(seq), infer(compiled) if compiled else None),
        "fwd+bwd": (
            train(net, net_params),
            train(seq, seq_params),
            train(compiled, seq_params) if compiled else None,
        ),
        "sgd_step": (
            lambda: net.sgd_step(x, y, LR),
            step(seq),
            step(compiled) if compiled else None,
        ),
    }
    timer = time_cuda_interleaved if device == "cuda" else time_interleaved
    shape = f"{rows}x{d_in}->{hidden}->{d_out} {str(dtype).removeprefix('torch.')}"
    results = []
    for mode, (ext, eager, comp) in modes.items():
        fns = {
            "ext": _path(device, None, ext),
            "ext layered": _path(device, "0", ext),
            "torch": eager,
        }
        if device == "cuda":
            fns["ext fused"] = _path(device, "1", ext)
        # CPU inference against torch.compile with freezing (what a user compiles it with).
        frozen = mode == "inference" and device == "cpu" and comp is not None
        with inductor_freezing() if frozen else contextlib.nullcontext():
            if frozen:
                frozen_seq = _compiled(seq, use_compile)
                assert frozen_seq is not None
                fns["compile freezing"] = infer(frozen_seq)
            elif comp is not None:
                fns["torch.compile"] = comp
            timings = timer(fns, rounds)
        row: dict[str, Any] = {"case": f"{mode} {shape}", "timings_ms": timings, "peak_bytes": {}}
        if mode == "fwd+bwd":
            row["peak_bytes"] = {name: peak_bytes(fns[name], device) for name in fns}
        results.append(row)
    return results


def run(
    rounds: int = 15, use_compile: bool = True, quick: bool = False, device: str = "cpu"
) -> dict[str, Any]:
    """Every network, dtype and mode; a JSON-able dict."""
    results = []
    forced = os.environ.get(_switch(device))
    try:
        for dtype in (QUICK_DTYPES if quick else DTYPES)[device]:
            for net_size in QUICK_NETWORKS if quick else NETWORKS:
                results += bench_network(net_size, dtype, device, rounds, use_compile)
    finally:  # the variants set and unset it; leave it as it was
        if forced is None:
            os.environ.pop(_switch(device), None)
        else:
            os.environ[_switch(device)] = forced
    for r in results:
        t = r["timings_ms"]
        r["ratios"] = {k: t["torch"] / v for k, v in t.items() if k != "torch"}
        r["ratios"]["layered/ext"] = t["ext layered"] / t["ext"]
        if "ext fused" in t:
            r["ratios"]["layered/fused"] = t["ext layered"] / t["ext fused"]
            if "torch.compile" in t:
                r["ratios"]["compile/fused"] = t["torch.compile"] / t["ext fused"]
    return {
        "suite": "mlp",
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "machine": machine(),
        "results": results,
    }


def format_table(report: dict[str, Any]) -> str:
    fused = any("ext fused" in r["timings_ms"] for r in report["results"])
    cols = ["ext", "ext layered", *(["ext fused"] if fused else []), "torch", "torch.compile"]
    if any("compile freezing" in r["timings_ms"] for r in report["results"]):
        cols.append("compile freezing")
    lines = [
        describe_machine(report["machine"])
        if report["device"] == "cpu"
        else f"torch {report['torch']}, {report['device']}, {report['threads']} threads",
        f"{'case':<42}"
        + "".join(f"{c + ' ms':>17}" for c in cols)
        + f"{'torch/ext':>10}{'compile/ext':>12}{'layered/ext':>12}"
        + (f"{'torch/fused':>12}{'compile/fused':>14}" if fused else "")
        + "   peak MiB "
        + " / ".join(c.removeprefix("ext ").replace("torch.", "") for c in cols),
    ]
    for r in report["results"]:
        t, q, p = r["timings_ms"], r["ratios"], r["peak_bytes"]
        row = f"{r['case']:<42}" + "".join(
            f"{t[c]:>17.3f}" if c in t else f"{'-':>17}" for c in cols
        )
        compiled = t.get("compile freezing", t.get("torch.compile"))
        compile_ratio = compiled / t["ext"] if compiled else float("nan")
        row += f"{q['ext']:>10.2f}{compile_ratio:>12.2f}{q['layered/ext']:>12.2f}"
        if fused:
            nan = float("nan")
            row += f"{q.get('ext fused', nan):>12.2f}{q.get('compile/fused', nan):>14.2f}"
        if p:
            mib = [p.get(c) for c in cols]
            row += "   " + " / ".join("-" if b is None else f"{b / 2**20:.0f}" for b in mib)
        lines.append(row)
    return "\n".join(lines)
