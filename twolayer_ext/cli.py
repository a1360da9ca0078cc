"""Command-line interface: ``python -m twolayer_ext`` / ``twolayer-ext``.

train   train the tutorial's two-layer network, any scheme or all, on the extension or torch
bench   time the extension against torch side by side (--device cpu|cuda)
info    print build_info() as JSON
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar, cast

import torch

DTYPES = {"float32": torch.float32, "float64": torch.float64, "bfloat16": torch.bfloat16}


T = TypeVar("T")


def _progress(it: Iterator[T], total: int, desc: str) -> Iterable[T]:
    """A progress bar (stderr, TTY only) for runs that take more than a moment."""
    try:
        from tqdm import tqdm  # type: ignore[import-untyped]
    except ImportError:
        return it
    bar = tqdm(it, total=total, desc=desc, delay=1.0, leave=False, disable=None, file=sys.stderr)
    return cast(Iterable[T], bar)


def _report_steps(steps: int, every: int) -> set[int]:
    return set(range(0, steps, every)) | {steps - 1}


def _timed(steps: Iterator[float], durations: list[float]) -> Iterator[float]:
    """steps, recording the seconds each took into durations (the time spent producing it
    alone, so that two runs can take turns step by step)."""
    while True:
        start = time.perf_counter()
        try:
            loss = next(steps)
        except StopIteration:
            return
        durations.append(time.perf_counter() - start)
        yield loss


def _steady_ms(durations: list[float]) -> float:
    """Milliseconds per step once warm: the median after the first fifth of the run (first
    calls pay for allocations, caches and, for the first optimizer step in a process,
    importing torch._dynamo)."""
    return statistics.median(durations[len(durations) // 5 :]) * 1e3


def _cmd_train(args: argparse.Namespace) -> int:
    from .training import IMPLS, SCHEMES, TrainConfig, run_scheme

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    cfg = TrainConfig(
        steps=args.steps,
        seed=args.seed,
        lr=args.lr,
        optim=args.optim,
        dtype=DTYPES[args.dtype],
        device=device,
    )
    names = list(SCHEMES) if args.scheme == "all" else [args.scheme]
    if cfg.optim not in (None, "sgd") and "fused_step" in names:
        # The fused step is SGD itself; another optimizer has no fused counterpart.
        if args.scheme == "fused_step":
            print(
                f"error: scheme fused_step runs SGD only, not --optim {cfg.optim}", file=sys.stderr
            )
            return 2
        names.remove("fused_step")
        print(f"# fused_step skipped: it runs SGD only, not --optim {cfg.optim}")
    impls = list(IMPLS) if args.compare else [args.impl]
    shown = _report_steps(cfg.steps, args.every)
    curves: dict[tuple[str, str], list[float]] = {}
    step_ms: dict[tuple[str, str], float] = {}
    print(f"# device={device} dtype={args.dtype} steps={cfg.steps} seed={cfg.seed}")
    for name in names:
        # The numpy scheme is numpy whatever the impl: run it once. With --compare, ext and
        # torch take turns step by step (each run owns its model, data and seeded RNG), so a
        # machine whose speed drifts during the run slows both alike.
        run_impls = impls[:1] if name == "numpy" else impls
        durations: dict[str, list[float]] = {impl: [] for impl in run_impls}
        runs = [_timed(run_scheme(name, impl, cfg), durations[impl]) for impl in run_impls]
        for impl in run_impls:
            curves[(name, impl)] = []
        for step_losses in _progress(zip(*runs), cfg.steps, f"{name}/{'+'.join(run_impls)}"):
            for impl, loss in zip(run_impls, step_losses):
                curves[(name, impl)].append(loss)
        for impl in run_impls:
            step_ms[(name, impl)] = _steady_ms(durations[impl])
        print(f"\n## {name}: {SCHEMES[name].description}")
        if args.compare and name != "numpy":
            print(f"{'step':>5} {'ext':>22} {'torch':>22} {'rel diff':>10}")
            for i in sorted(shown):
                a, b = curves[(name, "ext")][i], curves[(name, "torch")][i]
                print(f"{i:>5} {a:>22.10g} {b:>22.10g} {abs(a - b) / max(abs(b), 1e-30):>10.2e}")
        else:
            for i in sorted(shown):  # the tutorial's format: step, loss
                print(i, curves[(name, impls[0])][i])

    print("\n## final losses, and the time per step (median after the first fifth of the run)")
    print(
        f"{'scheme':<16} {'impl':<6} {'first loss':>14} {'final loss':>14} {'ms/step':>9}"
        + (f"{'torch/ext':>11}" if args.compare else "")
    )
    for (name, impl), losses in curves.items():
        shown_impl = "numpy" if name == "numpy" else impl
        row = (
            f"{name:<16} {shown_impl:<6} {losses[0]:>14.6g} {losses[-1]:>14.6g} "
            f"{step_ms[(name, impl)]:>9.3f}"
        )
        if args.compare and impl == "ext" and name != "numpy":
            row += f"{step_ms[(name, 'torch')] / step_ms[(name, 'ext')]:>11.2f}"
        print(row)
    if args.compare:
        print(
            "(ext and torch take turns step by step; python -m twolayer_ext bench times the "
            "tutorial's step and layers in more rounds)"
        )
    if args.plot:
        _plot(curves, args.plot)
        print(f"\nwrote {args.plot}")
    return 0


def _plot(curves: dict[tuple[str, str], list[float]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    for (name, impl), losses in curves.items():
        label = f"{name} ({'numpy' if name == 'numpy' else impl})"
        ax.plot(range(len(losses)), losses, label=label, linestyle="-" if impl == "ext" else "--")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title("two-layer network: loss per scheme and implementation")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="twolayer-ext",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="print build_info() as JSON")
    from .training import SCHEMES

    b = sub.add_parser(
        "bench", help="benchmark: extension vs torch eager vs torch.compile, side by side"
    )
    b.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        default="cpu",
        help="cpu: the CPU ops (default); cuda: the CUDA ops on both GEMM paths",
    )
    b.add_argument(
        "--suite",
        choices=["ops", "mlp"],
        default="ops",
        help="ops: every op and the tutorial's step (default); mlp: narrow networks with many "
        "rows (the fully fused path), with peak memory",
    )
    b.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    b.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds")
    b.add_argument("--no-compile", action="store_true", help="skip the torch.compile column")
    b.add_argument("--quick", action="store_true", help="tiny sizes (a smoke run)")

    t = sub.add_parser("train", help="train the tutorial's two-layer network")
    t.add_argument(
        "--scheme",
        default="all",
        choices=["all", *SCHEMES],
        help="which of the tutorial's schemes to run (default: all)",
    )
    t.add_argument(
        "--impl",
        default="ext",
        choices=["ext", "torch"],
        help="the extension's fused ops or pure torch (numpy stays numpy)",
    )
    t.add_argument("--device", choices=["cpu", "cuda"], help="default: cuda when available")
    t.add_argument("--steps", type=int, default=500)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--lr", type=float, help="learning rate (default: the scheme's own)")
    t.add_argument(
        "--optim", choices=["manual", "sgd", "adam"], help="update rule (default: the scheme's own)"
    )
    t.add_argument("--dtype", default="float32", choices=list(DTYPES))
    t.add_argument("--every", type=int, default=50, help="print the loss every N steps")
    t.add_argument(
        "--compare",
        action="store_true",
        help="run ext and torch from the same weights and data, side by side",
    )
    t.add_argument("--plot", metavar="FILE.png", help="write the loss curves (log scale)")
    return parser


def _writable_file(option: str, path: str | None) -> str | None:
    """Why `path` cannot be written (for an output option), or None if it can."""
    if path is None:
        return None
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        return f"{option} {path!r} is a directory; give a file name"
    if not os.path.isdir(folder):
        return f"{option} {path!r}: the folder {folder!r} does not exist"
    if not os.access(folder, os.W_OK):
        return f"{option} {path!r}: the folder {folder!r} is not writable"
    return None


def _device_problem(device: str) -> str | None:
    if device == "cuda" and not torch.cuda.is_available():
        return (
            "--device cuda: torch sees no CUDA GPU (torch.cuda.is_available() is False); "
            "use --device cpu"
        )
    return None


def _bad_argument(args: argparse.Namespace) -> str | None:
    """The first argument that cannot work, as one line naming it and what would, or None.

    Checked before any work starts, so a bad --plot path does not fail after training."""
    if args.command == "bench":
        if args.rounds < 1:
            return f"--rounds must be at least 1, got {args.rounds}"
        return _device_problem(args.device) or _writable_file("--json", args.json)
    if args.command != "train":
        return None
    if args.steps < 1:
        return f"--steps must be at least 1, got {args.steps}"
    if args.every < 1:
        return f"--every must be at least 1 (print the loss every N steps), got {args.every}"
    if args.lr is not None and not (math.isfinite(args.lr) and args.lr > 0):
        return f"--lr must be a finite number > 0, got {args.lr}"
    if args.device is not None and (problem := _device_problem(args.device)):
        return problem
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and args.dtype == "bfloat16" and not torch.cuda.is_bf16_supported():
        return "--dtype bfloat16 needs a GPU with bfloat16 support; use float32 or float64"
    if args.plot is not None:
        if importlib.util.find_spec("matplotlib") is None:
            return "--plot needs matplotlib (pip install matplotlib)"
        return _writable_file("--plot", args.plot)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``twolayer-ext`` console script."""
    args = build_parser().parse_args(argv)
    if problem := _bad_argument(args):
        print(f"twolayer-ext {args.command}: error: {problem}", file=sys.stderr)
        return 2
    import twolayer_ext

    if args.command == "info":
        print(json.dumps(twolayer_ext.build_info(), indent=2))
        return 0
    if args.command == "bench":
        from . import bench

        bench.main(
            args.json,
            rounds=args.rounds,
            use_compile=not args.no_compile,
            quick=args.quick,
            device=args.device,
            suite=args.suite,
        )
        return 0
    return _cmd_train(args)


if __name__ == "__main__":
    sys.exit(main())
