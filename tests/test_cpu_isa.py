"""The CPU element-wise passes give the same bits in every instruction set.

csrc/cpu/isa/ compiles the passes (ReLU + mask epilogue, relu / relu_backward, the
backward's masked gradient and bias-gradient sums) once per instruction set with at::vec and
picks the one ATen runs; ATEN_CPU_CAPABILITY selects a narrower one. Each other instruction
set this CPU has runs in a subprocess (this file as a script) on the same inputs, and its
results must equal this process's bit for bit. The inputs are built so that no matrix
product rounds (one-term products: in_features = 1 and weights of ones, or out_features = 1),
since ATen's products may change with the instruction set too; the passes are what differ.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
# Row widths around the vector widths and the passes' 256-column steps; 16: whole mask bytes,
# which the mask passes take several rows per step.
WIDTHS = (1, 7, 16, 33, 300)
ROWS = 37


def _specials(t: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """t with about one element in seven replaced by +-0, +-inf or NaN of either sign."""
    pick = torch.randint(0, 40, t.shape, generator=gen)
    values = [0.0, -0.0, float("inf"), float("-inf"), float("nan"), -float("nan")]
    for k, v in enumerate(values):
        t = torch.where(pick == k, torch.tensor(v, dtype=t.dtype), t)
    return t


def make_inputs() -> dict[str, torch.Tensor]:
    """Random inputs per dtype and width (made here and handed to the subprocess: torch's own
    random kernels may also change with the instruction set)."""
    gen = torch.Generator().manual_seed(1234)
    inputs: dict[str, torch.Tensor] = {}
    for dtype in DTYPES:
        for n in WIDTHS:
            key = f"{str(dtype).removeprefix('torch.')}/{n}"

            def randn(*shape: int, dtype: torch.dtype = dtype) -> torch.Tensor:
                return _specials(torch.randn(*shape, generator=gen).to(dtype), gen)

            inputs[f"{key}/x"] = randn(ROWS, n)
            inputs[f"{key}/g"] = randn(ROWS, n)
            inputs[f"{key}/x1"] = torch.randn(ROWS, 1, generator=gen).to(dtype)
            inputs[f"{key}/b"] = randn(n)
            inputs[f"{key}/g_t"] = randn(n, ROWS)
            inputs[f"{key}/hidden"] = randn(ROWS, n).clamp(min=0)
            inputs[f"{key}/grad_out"] = randn(ROWS, 1)
            inputs[f"{key}/x3"] = torch.randn(ROWS, 3, generator=gen).to(dtype)
            inputs[f"{key}/w3"] = torch.randn(n, 3, generator=gen).to(dtype)
    return inputs


def compute(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Every pass, per dtype and width."""
    import twolayer_ext  # noqa: F401 (registers the ops)

    ops = torch.ops.twolayer_ext
    out: dict[str, torch.Tensor] = {}
    for dtype in DTYPES:
        for n in WIDTHS:
            key = f"{str(dtype).removeprefix('torch.')}/{n}"
            x, g = inputs[f"{key}/x"], inputs[f"{key}/g"]
            out[f"{key}/relu"] = ops.relu(x)
            out[f"{key}/relu_backward"] = ops.relu_backward(g, x)
            # linear_relu with in_features = 1 and a weight of ones: y = x + b, exactly.
            x1 = inputs[f"{key}/x1"]
            w1 = torch.ones(n, 1, dtype=dtype)
            y, mask = ops.linear_relu(x1, w1, inputs[f"{key}/b"])
            out[f"{key}/linear_relu"], out[f"{key}/linear_relu_mask"] = y, mask
            # The bias gradient is the masked gradient summed: the backward pass alone, on a
            # contiguous and on a strided gradient.
            only_bias = [False, False, True]
            out[f"{key}/grad_bias"] = ops.linear_relu_backward(g, x1, w1, mask, only_bias)[2]
            gt = inputs[f"{key}/g_t"].t()
            out[f"{key}/grad_bias_strided"] = ops.linear_relu_backward(gt, x1, w1, mask, only_bias)[
                2
            ]
            # two_layer_backward reads the mask from the hidden activation; out_features = 1,
            # so grad_hidden = grad_out * w2 has one term per element.
            grads = ops.two_layer_backward(
                inputs[f"{key}/grad_out"],
                inputs[f"{key}/x3"],
                inputs[f"{key}/w3"],
                torch.ones(1, n, dtype=dtype),
                inputs[f"{key}/hidden"],
                [False, False, True, False, False],
            )
            out[f"{key}/two_layer_grad_b1"] = grads[2]
    return out


def _other_isas() -> list[str]:
    mine = torch.backends.cpu.get_cpu_capability().lower()
    order = ["avx512", "avx2", "default"]
    return order[order.index(mine) + 1 :] if mine in order else ["default"]


@pytest.mark.parametrize("isa", ["avx2", "default"])
def test_passes_are_bitwise_equal_across_instruction_sets(isa, tmp_path, monkeypatch):
    if isa not in _other_isas():
        pytest.skip(f"this CPU runs {torch.backends.cpu.get_cpu_capability()}; no {isa} below it")
    import twolayer_ext

    monkeypatch.setenv("TWOLAYER_EXT_CPU_FUSED_MLP", "0")
    inputs = make_inputs()
    mine = compute(inputs)
    torch.save(inputs, tmp_path / "inputs.pt")
    assert twolayer_ext.build_info()["cpu_passes_isa"] != isa
    env = {**os.environ, "ATEN_CPU_CAPABILITY": isa, "TWOLAYER_EXT_CPU_FUSED_MLP": "0"}
    path = tmp_path / "theirs.pt"
    subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), str(tmp_path / "inputs.pt"), str(path)],
        env=env,
        check=True,
        cwd="/",
        capture_output=True,
    )
    theirs = torch.load(path)
    assert theirs.pop("_isa") == isa  # the subprocess ran the passes compiled for it
    assert theirs.keys() == mine.keys()
    for name, t in mine.items():
        torch.testing.assert_close(theirs[name], t, rtol=0, atol=0, equal_nan=True, msg=name)
        if t.is_floating_point():  # NaN where NaN, and the sign of every number (zeros too)
            nan = t.isnan()
            assert torch.equal(theirs[name].isnan(), nan), name
            # A NaN's sign depends on the order of a sum's operands, which the compiler
            # may swap; neither torch nor IEEE 754 gives it a meaning.
            assert torch.equal(theirs[name].signbit()[~nan], t.signbit()[~nan]), name


if __name__ == "__main__":  # the test's subprocess: compute(inputs from argv[1]) to argv[2]
    import twolayer_ext

    results = compute(torch.load(sys.argv[1]))
    results["_isa"] = twolayer_ext.build_info()["cpu_passes_isa"]  # type: ignore[assignment]
    torch.save(results, sys.argv[2])
