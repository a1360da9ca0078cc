"""CPU benchmark: the extension vs torch eager vs torch.compile, side by side.

All variants of one case are timed in the same process, interleaved round by round
(timing.time_interleaved). Ratios are torch-eager time / extension time (> 1: faster).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from ..functional import relu
from ..models import TwoLayerNet, twolayer_state_dict_to_sequential
from ..nn import LinearReLU
from ..training import numpy_steps
from .timing import (
    describe_machine,
    inductor_freezing,
    machine,
    saved_bytes,
    time_interleaved,
)

TUTORIAL_SIZE = (64, 1000, 100)
# Every dtype the CPU ops take: the tutorial's layer and two larger ones; float32 also at
# 2048^3, where both sides spend nearly all their time in the same BLAS call.
DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
LAYER_SIZES = [TUTORIAL_SIZE, (512, 256, 512), (512, 1024, 1024)]
FLOAT32_ONLY_SIZES = [(2048, 2048, 2048)]
RELU_SIZE = (2048, 2048)
# TwoLayerNet against nn.Sequential(Linear, ReLU, Linear): the tutorial's network and a wide one.
NETS = [(64, 1000, 100, 10), (4096, 512, 512, 512)]


@dataclass
class Result:
    case: str
    timings_ms: dict[str, float]
    key: str = ""  # "layer", or the step rows': "tiny_step[_fused]", "tutorial_step[_fused]"
    ratios: dict[str, float] = field(default_factory=dict)
    saved_bytes: dict[str, int] = field(default_factory=dict)


def _compiled(fn: Callable[..., Any], use_compile: bool) -> Callable[..., Any] | None:
    if not use_compile:
        return None
    # Each case compiles the same code objects for new modules and dtypes; start afresh so
    # they do not run into dynamo's recompile limit.
    torch._dynamo.reset()
    try:
        return torch.compile(fn, fullgraph=True)
    except Exception:  # noqa: BLE001  (compile unavailable: leave the column empty)
        return None


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def bench_relu(rows: int, cols: int, dtype: torch.dtype, rounds: int) -> list[Result]:
    """relu and relu_backward against torch.relu and threshold_backward."""
    x = torch.randn(rows, cols, dtype=dtype)
    g, y = torch.randn_like(x), torch.relu(x)
    shape, name = f"{rows}x{cols}", _dtype_name(dtype)
    fwd = {"ext": lambda: relu(x), "torch": lambda: torch.relu(x)}
    bwd = {
        "ext": lambda: torch.ops.twolayer_ext.relu_backward(g, y),
        "torch": lambda: torch.ops.aten.threshold_backward(g, y, 0),
    }
    return [
        Result(f"relu {shape} {name}", time_interleaved(fwd, rounds), key="layer"),
        Result(f"relu_backward {shape} {name}", time_interleaved(bwd, rounds), key="layer"),
    ]


def bench_layer(
    n: int,
    d_in: int,
    d_out: int,
    rounds: int,
    use_compile: bool,
    dtype: torch.dtype = torch.float32,
) -> list[Result]:
    """LinearReLU forward, and forward+backward, vs F.relu(F.linear) eager and compiled."""
    torch.manual_seed(0)
    layer = LinearReLU(d_in, d_out, dtype=dtype)
    lin = nn.Linear(d_in, d_out, dtype=dtype)
    lin.load_state_dict(layer.state_dict())
    x = torch.randn(n, d_in, dtype=dtype)
    g = torch.randn(n, d_out, dtype=dtype)
    params = [lin.weight, lin.bias]  # (nn.Linear(bias=True): both are tensors)
    ext_params = [layer.weight, cast(torch.Tensor, layer.bias)]

    def torch_fwd(x: torch.Tensor = x) -> torch.Tensor:
        return torch.relu(lin(x))

    torch_compiled = _compiled(torch_fwd, use_compile)
    out = []
    with torch.no_grad():
        fns = {"ext": lambda: layer(x), "torch": torch_fwd}
        if torch_compiled is not None:
            fns["torch.compile"] = lambda: torch_compiled(x)
        out.append(
            Result(
                f"LinearReLU fwd {n}x{d_in}->{d_out} {_dtype_name(dtype)}",
                time_interleaved(fns, rounds),
                key="layer",
            )
        )

    fns = {
        "ext": lambda: torch.autograd.grad(layer(x), ext_params, g),
        "torch": lambda: torch.autograd.grad(torch_fwd(), params, g),
    }
    if torch_compiled is not None:
        fns["torch.compile"] = lambda: torch.autograd.grad(torch_compiled(x), params, g)
    res = Result(
        f"LinearReLU fwd+bwd {n}x{d_in}->{d_out} {_dtype_name(dtype)}",
        time_interleaved(fns, rounds),
        key="layer",
    )
    res.saved_bytes = {"ext": saved_bytes(lambda: layer(x)), "torch": saved_bytes(torch_fwd)}
    out.append(res)
    return out


def bench_two_layer(
    net_size: tuple[int, int, int, int], dtype: torch.dtype, rounds: int, use_compile: bool
) -> list[Result]:
    """TwoLayerNet inference, and training forward+backward (all parameter grads), against
    the same nn.Sequential(Linear, ReLU, Linear), eager and compiled."""
    N, D_in, H, D_out = net_size
    torch.manual_seed(0)
    net = TwoLayerNet(D_in, H, D_out, dtype=dtype)
    seq = nn.Sequential(nn.Linear(D_in, H), nn.ReLU(), nn.Linear(H, D_out)).to(dtype)
    seq.load_state_dict(twolayer_state_dict_to_sequential(net.state_dict()))
    x, g = torch.randn(N, D_in, dtype=dtype), torch.randn(N, D_out, dtype=dtype)
    net_params, seq_params = list(net.parameters()), list(seq.parameters())
    shape = f"{N}x{D_in}->{H}->{D_out} {_dtype_name(dtype)}"
    # Inference against torch.compile with freezing (what a user compiles CPU inference
    # with), training against the default mode.
    with torch.no_grad(), inductor_freezing():
        frozen, frozen_ext = _compiled(seq, use_compile), _compiled(net, use_compile)
        fns: dict[str, Callable[[], object]] = {"ext": lambda: net(x), "torch": lambda: seq(x)}
        if frozen is not None and frozen_ext is not None:
            fns["compile freezing"] = lambda: frozen(x)
            fns["compile(ext)"] = lambda: frozen_ext(x)
        inference = Result(f"TwoLayerNet inference {shape}", time_interleaved(fns, rounds))
    compiled, compiled_ext = _compiled(seq, use_compile), _compiled(net, use_compile)
    fns = {
        "ext": lambda: torch.autograd.grad(net(x), net_params, g),
        "torch": lambda: torch.autograd.grad(seq(x), seq_params, g),
    }
    if compiled is not None and compiled_ext is not None:
        fns["torch.compile"] = lambda: torch.autograd.grad(compiled(x), seq_params, g)
        fns["compile(ext)"] = lambda: torch.autograd.grad(compiled_ext(x), net_params, g)
    training = Result(f"TwoLayerNet fwd+bwd {shape}", time_interleaved(fns, rounds))
    inference.key = training.key = "layer"
    return [inference, training]


TUTORIAL_NET = (64, 1000, 100, 10)  # N, D_in, H, D_out
# The same step on a 1-unit network: what the step costs without arithmetic
# (module call, loss, autograd engine, zero_grad, SGD), for ext and torch alike.
TINY_NET = (1, 1, 1, 1)


def bench_tutorial_step(
    rounds: int, use_compile: bool, lr: float = 1e-6, sizes: tuple[int, ...] = TUTORIAL_NET
) -> list[Result]:
    """One training step of the tutorial's network: forward, sum-MSE loss, backward, SGD update.

    Two rows from one interleaved run: the extension as a drop-in (TwoLayerNet in the
    step torch users write, with torch.optim.SGD), and the same step fused into one op
    call (TwoLayerNet.sgd_step). Both are compared with the tutorial's nn.Sequential + SGD.
    """
    N, D_in, H, D_out = sizes
    torch.manual_seed(0)
    x, y = torch.randn(N, D_in), torch.randn(N, D_out)
    net = TwoLayerNet(D_in, H, D_out)
    net_fused = copy.deepcopy(net)
    seq = nn.Sequential(nn.Linear(D_in, H), nn.ReLU(), nn.Linear(H, D_out))
    seq.load_state_dict(twolayer_state_dict_to_sequential(net.state_dict()))
    opt_ext = torch.optim.SGD(net.parameters(), lr=lr)
    opt_torch = torch.optim.SGD(seq.parameters(), lr=lr)

    def step(model: Callable[[torch.Tensor], torch.Tensor], opt: torch.optim.Optimizer) -> None:
        loss = F.mse_loss(model(x), y, reduction="sum")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    # The tutorial's numpy scheme itself (training.numpy_steps), one step per call.
    numpy_run = numpy_steps(
        x.double(),
        y.double(),
        torch.randn(D_in, H, dtype=torch.float64),
        torch.randn(H, D_out, dtype=torch.float64),
        lr,
        steps=10**9,
    )

    def numpy_step() -> None:
        next(numpy_run)

    fns: dict[str, Callable[[], object]] = {
        "ext": lambda: step(net, opt_ext),
        "ext fused": lambda: net_fused.sgd_step(x, y, lr),
        "torch": lambda: step(seq, opt_torch),
    }
    seq_c = _compiled(seq, use_compile)
    if seq_c is not None:
        opt_c = torch.optim.SGD(seq.parameters(), lr=lr)
        fns["torch.compile"] = lambda: step(seq_c, opt_c)
    tutorial = sizes == TUTORIAL_NET
    label = "tutorial training step" if tutorial else "same step, 1-unit net"
    key = "tutorial_step" if tutorial else "tiny_step"
    timings = time_interleaved(fns, rounds)
    # numpy is timed on its own, after the torch variants: its BLAS (OpenBLAS) has a
    # thread pool of its own, and interleaving it with torch's OpenMP pool on the
    # same cores made both spin against each other (measured here: a 0.5 ms torch
    # step took 1-10 ms when numpy rounds ran in between).
    timings.update(time_interleaved({"numpy": numpy_step}, rounds))
    time.sleep(0.2)  # let OpenBLAS's threads stop spinning before anything else is timed
    fused_ms = timings.pop("ext fused")
    shape = f"({N}x{D_in}->{H}->{D_out}, SGD)"
    res = Result(f"{label} {shape}", timings, key=key)
    res.saved_bytes = {"ext": saved_bytes(lambda: net(x)), "torch": saved_bytes(lambda: seq(x))}
    fused = Result(
        "  fused: TwoLayerNet.sgd_step", {**timings, "ext": fused_ms}, key=key + "_fused"
    )
    return [res, fused]


def gemm_peak_gflops(size: int = 1024) -> float:
    """This machine's float32 GEMM rate through torch (the FLOP-floor reference)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    ms = time_interleaved({"mm": lambda: torch.mm(a, b)}, rounds=5)["mm"]
    return 2 * size**3 / (ms * 1e-3) / 1e9


QUICK_SIZES = [(8, 16, 8)]
QUICK_NET = (8, 16, 8, 4)


def run(
    rounds: int = 15,
    use_compile: bool = True,
    quick: bool = False,
    sizes: list[tuple[int, int, int]] | None = None,
) -> dict[str, Any]:
    """Run every case; returns a JSON-able dict (results, machine info, FLOP floor)."""
    sizes = sizes or (QUICK_SIZES if quick else LAYER_SIZES)
    results: list[Result] = []
    for dtype in DTYPES:
        results += bench_relu(*((8, 16) if quick else RELU_SIZE), dtype, rounds)
        for n, d_in, d_out in sizes:
            results += bench_layer(n, d_in, d_out, rounds, use_compile, dtype)
        for net_size in [QUICK_NET] if quick else NETS:
            results += bench_two_layer(net_size, dtype, rounds, use_compile)
    if not quick:
        for n, d_in, d_out in FLOAT32_ONLY_SIZES:
            results += bench_layer(n, d_in, d_out, rounds, use_compile)
    results += bench_tutorial_step(rounds, use_compile, sizes=TINY_NET)
    results += bench_tutorial_step(rounds, use_compile)
    for r in results:
        base = r.timings_ms.get("torch")
        r.ratios = {k: base / v for k, v in r.timings_ms.items() if k != "torch" and base}
    peak = gemm_peak_gflops()
    step_flop = 2 * 64 * 1000 * 100 * 2 + 2 * 64 * 100 * 10 * 3  # fwd + grad_w1; layer 2 x3
    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_isa": torch.backends.cpu.get_cpu_capability(),
        "machine": machine(),
        "gemm_gflops_1024": peak,
        "tutorial_step_flop": step_flop,
        "tutorial_step_floor_ms": step_flop / (peak * 1e9) * 1e3,
        "results": [asdict(r) for r in results],
    }


def format_table(report: dict[str, Any]) -> str:
    cols = ["ext", "torch", "torch.compile", "compile freezing", "compile(ext)", "numpy"]
    lines = [
        describe_machine(report["machine"]),
        f"fp32 GEMM (1024^3) {report['gemm_gflops_1024']:.0f} GFLOP/s",
        f"{'case':<56}"
        + "".join(f"{c + ' ms':>20}" for c in cols)
        + f"{'torch/ext':>11}{'compile/ext':>12}"
        + f"{'saved ext/torch KiB':>22}",
    ]
    for r in report["results"]:
        t = r["timings_ms"]
        row = f"{r['case']:<56}" + "".join(
            f"{t[c]:>20.4f}" if c in t else f"{'-':>20}" for c in cols
        )
        row += f"{r['ratios'].get('ext', float('nan')):>11.2f}"
        compiled = t.get("compile freezing", t.get("torch.compile"))
        row += f"{compiled / t['ext']:>12.2f}" if compiled else f"{'-':>12}"
        sb = r["saved_bytes"]
        row += f"{sb['ext'] / 1024:>12.0f} / {sb['torch'] / 1024:<8.0f}" if sb else ""
        lines.append(row)
    rows = {r["key"]: r["timings_ms"] for r in report["results"]}
    tut, tiny = rows["tutorial_step"], rows["tiny_step"]
    fused, tiny_fused = rows["tutorial_step_fused"]["ext"], rows["tiny_step_fused"]["ext"]
    floor = report["tutorial_step_floor_ms"]
    lines.append(
        f"tutorial step FLOP floor {floor:.3f} ms "
        f"({report['tutorial_step_flop'] / 1e6:.1f} MFLOP at the 1024^3 GEMM rate); ext reaches "
        f"{100 * floor / tut['ext']:.0f}% of it, ext fused {100 * floor / fused:.0f}%, "
        f"torch eager {100 * floor / tut['torch']:.0f}%"
    )
    lines.append(
        f"fused step vs the numpy scheme: {tut['numpy'] / fused:.2f}x; "
        f"fused step without arithmetic (1-unit net): {tiny_fused:.3f} ms"
    )
    lines.append(
        f"tutorial step without arithmetic (1-unit net): ext {tiny['ext']:.3f} ms, torch "
        f"{tiny['torch']:.3f} ms; arithmetic part of the tutorial step: ext "
        f"{tut['ext'] - tiny['ext']:.3f} ms, torch {tut['torch'] - tiny['torch']:.3f} ms; "
        f"best torch/ext ratio with the ext GEMMs at the FLOP floor: "
        f"{tut['torch'] / (tiny['ext'] + floor):.2f}"
    )
    return "\n".join(lines)
