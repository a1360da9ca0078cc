"""The tutorial's two-layer network trained every way it shows, on the extension or on torch.

Each scheme builds its initial weights from the random seed ``cfg.seed`` alone, so ``impl="ext"`` and
``impl="torch"`` start from identical weights and data and their loss curves can be
compared step by step. The numpy scheme is numpy whatever the impl.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import ops, reference
from .autograd import ReLUFunction
from .functional import linear_relu
from .models import TwoLayerNet

IMPLS = ("ext", "torch")


@dataclass
class TrainConfig:
    """Sizes and hyper-parameters; ``lr``/``optim`` None means the scheme's own default."""

    N: int = 64
    D_in: int = 1000
    H: int = 100
    D_out: int = 10
    steps: int = 500
    seed: int = 0
    lr: float | None = None
    optim: str | None = None  # "manual" | "sgd" | "adam"
    dtype: torch.dtype = torch.float32
    device: str = "cpu"


@dataclass(frozen=True)
class Scheme:
    name: str
    description: str
    loss: str  # "sum" | "mse_sum" | "mse_mean"
    optim: str
    lr: float


SCHEMES: dict[str, Scheme] = {
    s.name: s
    for s in [
        Scheme("numpy", "numpy, forward and backward by hand", "sum", "manual", 1e-6),
        Scheme("tensors", "torch tensors, backward by hand", "sum", "manual", 1e-6),
        Scheme("autograd", "autograd, manual update", "sum", "manual", 1e-6),
        Scheme("function", "custom autograd Function for ReLU (MyReLU)", "sum", "manual", 1e-6),
        Scheme("optim", "autograd + torch.optim.SGD", "sum", "sgd", 1e-6),
        Scheme("mseloss", "nn.MSELoss(reduction='sum') + SGD", "mse_sum", "sgd", 1e-6),
        Scheme("sequential", "nn.Sequential with biases, manual update", "mse_sum", "manual", 1e-6),
        Scheme("sequential_sgd", "nn.Sequential without bias + SGD", "mse_sum", "sgd", 1e-6),
        Scheme(
            "module_params",
            "nn.Module, explicit xavier params, Adam, mean MSE",
            "mse_mean",
            "adam",
            1e-4,
        ),
        Scheme("module_linear", "nn.Module of nn.Linear, Adam, sum MSE", "mse_sum", "adam", 1e-4),
        # Not one of the tutorial's schemes: its nn.Sequential + MSELoss(sum) + SGD step,
        # which the extension runs as one op call (TwoLayerNet.sgd_step).
        Scheme(
            "fused_step",
            "nn.Sequential + sum MSE + SGD; ext: the whole step in one op (sgd_step)",
            "mse_sum",
            "sgd",
            1e-6,
        ),
    ]
}


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def make_data(cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Random x [N, D_in] and y [N, D_out], drawn in float64 on the CPU from ``cfg.seed``."""
    with _seeded(cfg.seed):
        return torch.randn(cfg.N, cfg.D_in, dtype=torch.float64), torch.randn(
            cfg.N, cfg.D_out, dtype=torch.float64
        )


def _loss(kind: str, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    if kind == "sum":
        return (y_pred - y).pow(2).sum()
    return F.mse_loss(y_pred, y, reduction="sum" if kind == "mse_sum" else "mean")


def _updater(params: list[torch.Tensor], optim: str, lr: float) -> Callable[[], None]:
    if optim == "manual":

        def manual_step() -> None:
            with torch.no_grad():
                for p in params:
                    assert p.grad is not None
                    p -= lr * p.grad
                    p.grad = None

        return manual_step
    opt = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam}[optim](params, lr=lr)

    def optimizer_step() -> None:
        opt.step()
        opt.zero_grad()

    return optimizer_step


SEQUENTIAL_SCHEMES = ("sequential", "sequential_sgd", "module_linear", "fused_step")


def _init_sequential(scheme: str, cfg: TrainConfig) -> nn.Sequential:
    """The initial nn.Sequential as the tutorial makes it, from cfg.seed only (float64, CPU)."""
    with _seeded(cfg.seed + 1):
        bias = scheme in ("sequential", "fused_step")
        lin1, lin2 = nn.Linear(cfg.D_in, cfg.H, bias=bias), nn.Linear(cfg.H, cfg.D_out, bias=bias)
        seq = nn.Sequential(lin1, nn.ReLU(), lin2).double()  # converts lin1, lin2 in place
        if scheme != "module_linear":  # the tutorial re-draws the weights from N(0, 1)
            nn.init.normal_(lin1.weight)
            nn.init.normal_(lin2.weight)
        return seq


def _init_matrices(scheme: str, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """The initial W1 [D_in, H], W2 [H, D_out] as the tutorial makes them (float64, CPU)."""
    with _seeded(cfg.seed + 1):
        w1 = torch.empty(cfg.D_in, cfg.H, dtype=torch.float64)
        w2 = torch.empty(cfg.H, cfg.D_out, dtype=torch.float64)
        if scheme == "module_params":
            nn.init.xavier_normal_(w1)
            nn.init.xavier_normal_(w2)
        else:
            w1.normal_()
            w2.normal_()
        return w1, w2


class _ExplicitParams(nn.Module):
    """The tutorial's custom nn.Module with explicit W1 [D_in, H], W2 [H, D_out]."""

    def __init__(self, w1: torch.Tensor, w2: torch.Tensor, impl: str) -> None:
        super().__init__()
        self.W1, self.W2, self.impl = nn.Parameter(w1), nn.Parameter(w2), impl

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.impl == "ext":
            return linear_relu(x, self.W1.t()).mm(self.W2)
        return x.mm(self.W1).clamp(min=0).mm(self.W2)


def numpy_steps(
    x: torch.Tensor, y: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, lr: float, steps: int
) -> Iterator[float]:
    """The tutorial's numpy scheme: forward and backward by hand in numpy, on copies of the
    given tensors; yields the loss before each of ``steps`` updates (the benchmark times it)."""
    xa, ya, w1a, w2a = (t.numpy().copy() for t in (x, y, w1, w2))
    for _ in range(steps):
        h = xa.dot(w1a)
        h_relu = np.maximum(h, 0)
        y_pred = h_relu.dot(w2a)
        loss = float(np.square(y_pred - ya).sum())
        grad_y_pred = 2.0 * (y_pred - ya)
        grad_w2 = h_relu.T.dot(grad_y_pred)
        grad_h = grad_y_pred.dot(w2a.T)
        grad_h[h <= 0] = 0
        grad_w1 = xa.T.dot(grad_h)
        w1a -= lr * grad_w1
        w2a -= lr * grad_w2
        yield loss


def _tensors_run(
    x: torch.Tensor,
    y: torch.Tensor,
    w1: torch.Tensor,
    w2: torch.Tensor,
    lr: float,
    steps: int,
    impl: str,
) -> Iterator[float]:
    for _ in range(steps):
        if impl == "ext":
            # x @ w1 with the fused op: weight = w1.t() (a view), mask kept for backward.
            h_relu, mask = ops.linear_relu(x, w1.t(), None)
        else:
            h = x.mm(w1)
            h_relu = h.clamp(min=0)
        y_pred = h_relu.mm(w2)
        loss = (y_pred - y).pow(2).sum()
        grad_y_pred = 2.0 * (y_pred - y)
        grad_w2 = h_relu.t().mm(grad_y_pred)
        grad_h_relu = grad_y_pred.mm(w2.t())
        if impl == "ext":
            _, grad_w1t, _ = ops.linear_relu_backward(
                grad_h_relu, x, w1.t(), mask, [False, True, False]
            )
            grad_w1 = grad_w1t.t()
        else:
            grad_h = grad_h_relu.clone()
            grad_h[h <= 0] = 0
            grad_w1 = x.t().mm(grad_h)
        w1 -= lr * grad_w1
        w2 -= lr * grad_w2
        yield loss.item()


def run_scheme(name: str, impl: str, cfg: TrainConfig) -> Iterator[float]:
    """Train scheme ``name`` with ``impl`` ("ext" or "torch"); yields the loss before each step."""
    if name not in SCHEMES:
        raise ValueError(f"unknown scheme {name!r}; choose from {', '.join(SCHEMES)}")
    if impl not in IMPLS:
        raise ValueError(f"unknown impl {impl!r}; choose from {', '.join(IMPLS)}")
    scheme = SCHEMES[name]
    lr = cfg.lr if cfg.lr is not None else scheme.lr
    optim = cfg.optim or scheme.optim
    x64, y64 = make_data(cfg)

    def to(t: torch.Tensor) -> torch.Tensor:
        return t.to(dtype=cfg.dtype, device=cfg.device)

    if name == "numpy":
        yield from numpy_steps(x64, y64, *_init_matrices(name, cfg), lr, cfg.steps)
        return
    x, y = to(x64), to(y64)
    if name == "tensors":
        w1, w2 = _init_matrices(name, cfg)
        yield from _tensors_run(x, y, to(w1), to(w2), lr, cfg.steps, impl)
        return

    forward: Callable[[torch.Tensor], torch.Tensor]
    params: list[torch.Tensor]
    if name in SEQUENTIAL_SCHEMES:
        seq = _init_sequential(name, cfg).to(dtype=cfg.dtype, device=cfg.device)
        if name == "fused_step" and impl == "ext":
            if optim != "sgd":
                raise ValueError(f"scheme fused_step runs plain SGD only, not optim={optim!r}")
            net = TwoLayerNet.from_sequential(seq)
            for _ in range(cfg.steps):
                yield net.sgd_step(x, y, lr).item()
            return
        model: nn.Module = TwoLayerNet.from_sequential(seq) if impl == "ext" else seq
        params, forward = list(model.parameters()), model
    elif name == "module_params":
        w1, w2 = _init_matrices(name, cfg)
        explicit = _ExplicitParams(to(w1), to(w2), impl)
        params, forward = list(explicit.parameters()), explicit
    else:
        w1, w2 = (to(w).requires_grad_() for w in _init_matrices(name, cfg))
        params = [w1, w2]
        if name == "function":
            relu = ReLUFunction.apply if impl == "ext" else reference.MyReLU.apply

            def custom_relu_net(x: torch.Tensor) -> torch.Tensor:
                return cast(torch.Tensor, relu(x.mm(w1))).mm(w2)

            forward = custom_relu_net
        elif impl == "ext":

            def fused_net(x: torch.Tensor) -> torch.Tensor:
                return linear_relu(x, w1.t()).mm(w2)

            forward = fused_net
        else:

            def torch_net(x: torch.Tensor) -> torch.Tensor:
                return x.mm(w1).clamp(min=0).mm(w2)

            forward = torch_net

    step = _updater(params, optim, lr)
    for _ in range(cfg.steps):
        loss = _loss(scheme.loss, forward(x), y)
        loss.backward()
        step()
        yield loss.item()


def train(name: str, impl: str, cfg: TrainConfig) -> list[float]:
    """All losses of one run (one per step, taken before that step's update)."""
    return list(run_scheme(name, impl, cfg))
