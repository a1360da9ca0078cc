"""Shared by the tests: devices, dtypes, tolerances, input builders and checks."""

from __future__ import annotations

import os
import random

import pytest
import torch

from twolayer_ext import reference
from twolayer_ext.info import SUPPORTED_DTYPES

# Every test draws fresh random inputs from this seed (random per session unless
# TWOLAYER_TEST_SEED is set; conftest prints it so a failure can be replayed).
SESSION_SEED = int(os.environ.get("TWOLAYER_TEST_SEED", random.SystemRandom().randrange(2**31)))

HAS_CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")

CPU_DTYPES = list(SUPPORTED_DTYPES["cpu"])
CUDA_DTYPES = list(SUPPORTED_DTYPES["cuda"])

DEVICE_DTYPES = [pytest.param("cpu", dt, id=f"cpu-{str(dt)[6:]}") for dt in CPU_DTYPES] + [
    pytest.param("cuda", dt, id=f"cuda-{str(dt)[6:]}", marks=requires_cuda) for dt in CUDA_DTYPES
]
DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]

# Max error relative to the largest reference magnitude, against a float64
# reference computed from the same (rounded) inputs.
TOLERANCE = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,
    torch.float16: 4e-3,
    torch.bfloat16: 3e-2,
}

# Errors that bad input may raise (TORCH_CHECK: RuntimeError; TORCH_CHECK_VALUE: ValueError).
ERR = (RuntimeError, ValueError)

# (device, autocast dtype) pairs autocast supports.
AUTOCAST_CASES = [pytest.param("cpu", torch.bfloat16, id="cpu-bf16")] + [
    pytest.param("cuda", dt, id=f"cuda-{str(dt)[6:]}", marks=requires_cuda)
    for dt in (torch.float16, torch.bfloat16)
]


def assert_close(
    actual: torch.Tensor,
    expected: torch.Tensor,
    dtype: torch.dtype,
    what: str = "",
    slack: float = 1.0,
):
    """Max |actual - expected| <= slack * tol(dtype) * max(1, max |expected|); shapes and NaNs
    must match. slack > 1 only where a measurement says why (at the call)."""
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert torch.equal(a.isnan(), e.isnan()), f"{what}: NaN positions differ"
    a, e = a.nan_to_num(0.0), e.nan_to_num(0.0)
    if e.numel() == 0:
        return
    scale = max(1.0, e.abs().max().item())
    err = (a - e).abs().max().item()
    tol = slack * TOLERANCE[dtype] * scale
    assert err <= tol, f"{what}: max error {err:.3g} > {tol:.3g} (dtype {dtype})"


def f32(*shape, device="cpu"):
    return torch.randn(*shape, device=device)


def away_from_kink(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> None:
    """Finite differences are meaningless where an output sits on the ReLU kink: nudge b."""
    if b is None:
        return
    with torch.no_grad():
        h = torch.nn.functional.linear(x, w, b)
        close = h.reshape(-1, h.shape[-1]).abs().min(0).values < 1e-3
        b[close] += 0.01


def make_x(shape, dtype, device, layout: str = "contiguous") -> torch.Tensor:
    """A random input of `shape` with the given memory layout.

    layouts: contiguous; sliced (every other column of a wider tensor);
    transposed (a .t()/.mT view of a contiguous tensor).
    """
    shape = tuple(shape)
    if layout == "contiguous":
        return torch.randn(shape, dtype=dtype, device=device)
    if layout == "sliced":
        wide = torch.randn(*shape[:-1], 2 * shape[-1] + 1, dtype=dtype, device=device)
        return wide[..., 1::2]
    if layout == "transposed":
        if len(shape) < 2:
            return torch.randn(shape, dtype=dtype, device=device)
        return torch.randn(*shape[:-2], shape[-1], shape[-2], dtype=dtype, device=device).mT
    raise ValueError(layout)


def make_weight(out_f, in_f, dtype, device, transposed: bool = False) -> torch.Tensor:
    """[out_f, in_f]; `transposed` gives W1.t() of a contiguous [in_f, out_f] (the seed's style)."""
    if transposed:
        return torch.randn(in_f, out_f, dtype=dtype, device=device).t()
    return torch.randn(out_f, in_f, dtype=dtype, device=device)


def assert_requested_grads(got, want, output_mask, names, dtype) -> None:
    """A backward op's results: each requested grad close to the reference, the others None."""
    for wanted, g, r, name in zip(output_mask, got, want, names):
        if wanted:
            assert_close(g, r, dtype, f"grad_{name}")
        else:
            assert g is None, name


def _double(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.double()


def check_two_layer_ops(x, w1, b1, w2, b2, output_mask: list[bool], dtype) -> None:
    """two_layer_forward / two_layer_backward against the float64 reference.

    Layer 2 and the backward are checked on the op's own (rounded) hidden activation, so a
    16-bit hidden does not count against layer 2's tolerance. grad_out is fresh random data.
    """
    out, hidden = torch.ops.twolayer_ext.two_layer_forward(x, w1, b1, w2, b2)
    ref_hidden = reference.linear_relu(_double(x), _double(w1), _double(b1))
    assert_close(hidden, ref_hidden, dtype, "hidden")
    ref_out = torch.nn.functional.linear(hidden.double(), _double(w2), _double(b2))
    assert_close(out, ref_out, dtype, "out")

    grad_out = torch.randn_like(out)
    got = torch.ops.twolayer_ext.two_layer_backward(grad_out, x, w1, w2, hidden, output_mask)
    want = reference.two_layer_backward(
        grad_out.double(), x.double(), w1.double(), w2.double(), hidden.double(), output_mask
    )
    assert_requested_grads(got, want, output_mask, ["x", "w1", "b1", "w2", "b2"], dtype)


def cpu_op_names(fn) -> set[str]:
    """The names of the ops (and profiler scopes) that fn() runs on the CPU (by the profiler)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    return {e.key for e in prof.key_averages()}


def cuda_kernel_names(fn) -> list[str]:
    """The names of the CUDA kernels that fn() launches (by the profiler)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [e.name for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]


def check_nan_like_torch(x, w1, b1, w2, b2) -> None:
    """NaN and Inf through the two-layer ops as through torch's layers, on x's device/dtype.

    Forward: a NaN in x (row 5) and an Inf row (3000) make NaN exactly where the float64
    reference has it, and row 5 all NaN. Backward: a NaN in grad_out and a NaN hidden unit
    (whose gradient threshold_backward passes) reach exactly the reference's NaN positions.
    x needs 3001 rows or more; it is changed.
    """
    rows, hidden = x.shape[0], w1.shape[0]
    x[5, 3] = float("nan")
    x[3000, :] = float("inf")
    with torch.no_grad():
        out = torch.ops.twolayer_ext.two_layer(x, w1, b1, w2, b2)
    params = (w1, b1, w2, b2)
    expected = reference.two_layer_forward(x.double(), *(_double(p) for p in params))[0]
    assert torch.equal(out.isnan(), expected.isnan())
    assert out[5].isnan().all()
    clean = x.nan_to_num(0.0, 0.0, 0.0)
    hidden_act = torch.relu(torch.randn(rows, hidden, dtype=x.dtype, device=x.device))
    hidden_act[9, 1] = float("nan")
    grad_out = torch.randn(rows, w2.shape[0], dtype=x.dtype, device=x.device)
    grad_out[7, 0] = float("nan")
    args = (grad_out, clean, w1, w2, hidden_act)
    got = torch.ops.twolayer_ext.two_layer_backward(*args, [True] * 5)
    want = reference.two_layer_backward(*(t.double() for t in args), [True] * 5)
    for g, r in zip(got, want):
        assert torch.equal(g.isnan(), r.isnan())


def saves_only_inputs(fn, inputs) -> torch.Tensor:
    """fn() under a hook that records what autograd saves; asserts it saved nothing but
    (views of) `inputs`, e.g. no hidden activation. Returns fn()'s result."""
    saved = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        saved.add(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        result = fn()
    assert saved <= {t.untyped_storage().data_ptr() for t in inputs}
    return result
