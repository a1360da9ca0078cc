"""GPU benchmark: the extension's CUDA ops vs torch (cuBLAS), side by side in one run.

Every variant of a case is timed in one process with CUDA events, interleaved round by
round, medians over rounds (timing.time_cuda_interleaved). Ratio = torch time / extension
time (> 1: the extension is faster). Columns:

* ``ext``: the extension as users get it (cuBLAS with its passes, csrc/cuda/layer.cpp);
* ``torch``: the same computation from plain torch ops, eager;
* ``torch.compile``: the tutorial step only, ``mode="reduce-overhead"`` (CUDA graphs).
"""

from __future__ import annotations

import copy
import os
import subprocess
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..functional import linear_relu, two_layer_mlp
from ..models import TwoLayerNet, twolayer_state_dict_to_sequential
from .timing import time_cuda_interleaved

# (rows, in, out) of a layer; the two-layer network of the same row is rows x in -> out -> out.
LAYER_SIZES = [
    (64, 1000, 100),  # the tutorial's layer 1
    (4096, 1024, 4096),
    (8192, 4096, 4096),
    (262144, 64, 64),  # narrow: bound by memory traffic, not arithmetic
]
DTYPES = [torch.bfloat16, torch.float16, torch.float32]
BIG = (4096, 4096, 4096)  # float32 with TF32 off and on
FP64_SIZE = (4096, 1024, 4096)
TUTORIAL_NET = (64, 1000, 100, 10)  # N, D_in, H, D_out
QUICK_SIZES = [(64, 96, 80)]


@dataclass
class Case:
    case: str
    dtype: str
    timings_ms: dict[str, float]
    ratios: dict[str, float] = field(default_factory=dict)


@contextmanager
def _tf32(enabled: bool) -> Iterator[None]:
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def _ext_variants(fn: Callable[[], object]) -> dict[str, Callable[[], object]]:
    return {"ext": fn}


def bench_layer(rows: int, d_in: int, d_out: int, dtype: torch.dtype, rounds: int) -> list[Case]:
    """LinearReLU forward and forward+backward (grads of x, weight, bias)."""
    x = torch.randn(rows, d_in, device="cuda", dtype=dtype, requires_grad=True)
    w = (torch.randn(d_out, d_in, device="cuda", dtype=dtype) / d_in**0.5).requires_grad_()
    b = torch.randn(d_out, device="cuda", dtype=dtype, requires_grad=True)
    g = torch.randn(rows, d_out, device="cuda", dtype=dtype)

    def ext_fwd() -> object:
        with torch.no_grad():
            return linear_relu(x, w, b)

    def torch_fwd() -> object:
        with torch.no_grad():
            return torch.relu(F.linear(x, w, b))

    def ext_fb() -> object:
        return torch.autograd.grad(linear_relu(x, w, b), (x, w, b), g)

    def torch_fb() -> object:
        return torch.autograd.grad(torch.relu(F.linear(x, w, b)), (x, w, b), g)

    name = f"LinearReLU {{}} {rows}x{d_in}->{d_out}"
    return [
        _case(name.format("fwd"), dtype, {**_ext_variants(ext_fwd), "torch": torch_fwd}, rounds),
        _case(name.format("fwd+bwd"), dtype, {**_ext_variants(ext_fb), "torch": torch_fb}, rounds),
    ]


def bench_two_layer(
    rows: int, d_in: int, hidden: int, d_out: int, dtype: torch.dtype, rounds: int
) -> list[Case]:
    """The whole-network ops (two_layer_mlp) against nn.Sequential(Linear, ReLU, Linear)."""
    net = TwoLayerNet(d_in, hidden, d_out, device="cuda", dtype=dtype)
    seq = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, d_out))
    seq.to(device="cuda", dtype=dtype)
    seq.load_state_dict(twolayer_state_dict_to_sequential(net.state_dict()))
    x = torch.randn(rows, d_in, device="cuda", dtype=dtype)
    g = torch.randn(rows, d_out, device="cuda", dtype=dtype)
    params, seq_params = list(net.parameters()), list(seq.parameters())

    def ext_fwd() -> object:
        with torch.no_grad():
            return two_layer_mlp(x, *params)

    def torch_fwd() -> object:
        with torch.no_grad():
            return seq(x)

    def ext_fb() -> object:
        return torch.autograd.grad(net(x), params, g)

    def torch_fb() -> object:
        return torch.autograd.grad(seq(x), seq_params, g)

    name = f"two-layer {{}} {rows}x{d_in}->{hidden}->{d_out}"
    return [
        _case(name.format("fwd"), dtype, {**_ext_variants(ext_fwd), "torch": torch_fwd}, rounds),
        _case(name.format("fwd+bwd"), dtype, {**_ext_variants(ext_fb), "torch": torch_fb}, rounds),
    ]


def bench_tutorial_step(
    rounds: int, use_compile: bool, sizes: tuple[int, int, int, int] = TUTORIAL_NET
) -> list[Case]:
    """The tutorial's training step (forward, sum-MSE loss, backward, SGD) on the GPU.

    Rows, one interleaved run: TwoLayerNet in the usual loop (loss.backward() + SGD), the
    whole step as one op call (sgd_step), and sgd_step replayed from a CUDA graph, each
    against the tutorial's nn.Sequential in the usual loop (torch eager) and compiled with
    ``mode="reduce-overhead"``.
    """
    N, D_in, H, D_out = sizes
    lr = 1e-6
    x = torch.randn(N, D_in, device="cuda")
    y = torch.randn(N, D_out, device="cuda")
    net = TwoLayerNet(D_in, H, D_out, device="cuda")
    net_fused, net_graph = copy.deepcopy(net), copy.deepcopy(net)
    seq = nn.Sequential(nn.Linear(D_in, H), nn.ReLU(), nn.Linear(H, D_out)).cuda()
    seq.load_state_dict(twolayer_state_dict_to_sequential(net.state_dict()))
    seq_c = copy.deepcopy(seq)

    def usual_step(
        model: Callable[[torch.Tensor], torch.Tensor], opt: torch.optim.Optimizer
    ) -> None:
        loss = F.mse_loss(model(x), y, reduction="sum")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    opt_net, opt_seq = (torch.optim.SGD(m.parameters(), lr=lr) for m in (net, seq))
    graph = torch.cuda.CUDAGraph()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture, as torch recommends
        for _ in range(2):
            copy.deepcopy(net_graph).sgd_step(x, y, lr)
    torch.cuda.current_stream().wait_stream(side)
    with torch.cuda.graph(graph):
        net_graph.sgd_step(x, y, lr)

    fns: dict[str, Callable[[], object]] = {
        "ext": lambda: usual_step(net, opt_net),
        "ext sgd_step": lambda: net_fused.sgd_step(x, y, lr),
        "ext sgd_step graph": graph.replay,
        "torch": lambda: usual_step(seq, opt_seq),
    }
    if use_compile:
        compiled = torch.compile(seq_c, mode="reduce-overhead")
        opt_c = torch.optim.SGD(seq_c.parameters(), lr=lr)
        fns["torch.compile"] = lambda: usual_step(compiled, opt_c)
    timings = time_cuda_interleaved(fns, rounds)
    shape = f"{N}x{D_in}->{H}->{D_out}"
    out = []
    for col, label in [
        ("ext", "TwoLayerNet + loss.backward() + SGD"),
        ("ext sgd_step", "TwoLayerNet.sgd_step"),
        ("ext sgd_step graph", "sgd_step replayed from a CUDA graph"),
    ]:
        row = {"ext": timings[col], "torch": timings["torch"]}
        if "torch.compile" in timings:
            row["torch.compile"] = timings["torch.compile"]
        out.append(Case(f"tutorial step {shape}: {label}", "float32", row))
    return out


def _case(name: str, dtype: torch.dtype, fns: dict[str, Callable[[], object]], rounds: int) -> Case:
    return Case(name, str(dtype).removeprefix("torch."), time_cuda_interleaved(fns, rounds))


def _commit() -> str:
    try:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        return subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run(rounds: int = 15, use_compile: bool = True, quick: bool = False) -> dict[str, Any]:
    """Every case; returns the gpu-bench.json record (docs/BENCHMARKS.md describes it)."""
    if not torch.cuda.is_available():
        raise RuntimeError("bench --device cuda needs a CUDA GPU, and torch sees none")
    cases: list[Case] = []
    with _tf32(False):
        for rows, d_in, d_out in QUICK_SIZES if quick else LAYER_SIZES:
            for dtype in DTYPES:
                cases += bench_layer(rows, d_in, d_out, dtype, rounds)
                cases += bench_two_layer(rows, d_in, d_out, d_out, dtype, rounds)
        if not quick:
            cases += bench_layer(*BIG, torch.float32, rounds)
            cases += bench_layer(*FP64_SIZE, torch.float64, rounds)
            cases += bench_two_layer(*FP64_SIZE, FP64_SIZE[2], torch.float64, rounds)
            cases += bench_tutorial_step(rounds, use_compile)
        else:
            cases += bench_tutorial_step(rounds, use_compile=False, sizes=(8, 16, 8, 4))
    if not quick:
        with _tf32(True):
            for c in bench_layer(*BIG, torch.float32, rounds):
                c.dtype = "float32 (TF32)"
                cases.append(c)
    for c in cases:
        base = c.timings_ms["torch"]
        c.ratios = {k: base / v for k, v in c.timings_ms.items() if k != "torch"}
    return {
        "commit": _commit(),
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "cases": [
            {
                "case": c.case,
                "dtype": c.dtype,
                "ext_ms": c.timings_ms["ext"],
                "torch_ms": c.timings_ms["torch"],
                "ratio": c.ratios["ext"],
                "timings_ms": c.timings_ms,
            }
            for c in cases
        ],
    }


def format_table(report: dict[str, Any]) -> str:
    cols = ["ext", "torch", "torch.compile"]
    lines = [
        (
            f"{report['device']}, torch {report['torch']}, commit {report['commit']}; "
            "ms per call (CUDA events, median), ratio = torch / ext"
        ),
        f"{'case':<62}{'dtype':>16}" + "".join(f"{c:>15}" for c in cols) + f"{'torch/ext':>11}",
    ]
    for c in report["cases"]:
        t = c["timings_ms"]
        lines.append(
            f"{c['case']:<62}{c['dtype']:>16}"
            + "".join(f"{t[k]:>15.4f}" if k in t else f"{'-':>15}" for k in cols)
            + f"{c['ratio']:>11.2f}"
        )
    return "\n".join(lines)
