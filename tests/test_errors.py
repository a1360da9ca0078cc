"""Bad input gets a clear error naming the problem, never a crash or a wrong result."""

from __future__ import annotations

import pytest
import torch
from conftest import requires_cuda

import twolayer_ext

ERR = (RuntimeError, ValueError)


def f32(*shape, device="cpu"):
    return torch.randn(*shape, device=device)


@pytest.mark.parametrize(
    "x,w,b,pattern",
    [
        (lambda: f32(4, 5), lambda: f32(5), None, r"weight must be 2-D.*\[5\]"),
        (lambda: f32(4, 5), lambda: f32(2, 3, 5), None, r"weight must be 2-D.*\[2, 3, 5\]"),
        (lambda: torch.tensor(1.0), lambda: f32(3, 5), None, r"x must .*0-d"),
        (lambda: f32(4, 6), lambda: f32(3, 5), None, r"in_features mismatch.*\[4, 6\].*\[3, 5\]"),
        (
            lambda: f32(4, 5),
            lambda: f32(3, 5),
            lambda: f32(4),
            r"bias must have shape \[out_features\] = \[3\], but got shape \[4\]",
        ),
        (
            lambda: f32(4, 5),
            lambda: f32(3, 5),
            lambda: f32(1, 3),
            r"bias must have shape .* = \[3\], but got shape \[1, 3\]",
        ),
        (
            lambda: f32(4, 5),
            lambda: f32(3, 5).double(),
            None,
            r"weight to have the same dtype as x \(Float\).*Double",
        ),
        (
            lambda: f32(4, 5),
            lambda: f32(3, 5),
            lambda: f32(3).double(),
            r"bias to have the same dtype as x",
        ),
        (
            lambda: torch.ones(4, 5, dtype=torch.int64),
            lambda: torch.ones(3, 5, dtype=torch.int64),
            None,
            r"x has unsupported dtype Long",
        ),
        (
            lambda: torch.ones(4, 5, dtype=torch.bool),
            lambda: torch.ones(3, 5, dtype=torch.bool),
            None,
            r"x has unsupported dtype Bool",
        ),
        (
            lambda: torch.randn(4, 5, dtype=torch.complex64),
            lambda: torch.randn(3, 5, dtype=torch.complex64),
            None,
            r"unsupported dtype ComplexFloat",
        ),
    ],
    ids=[
        "w-1d",
        "w-3d",
        "x-0d",
        "in-mismatch",
        "bias-len",
        "bias-2d",
        "mixed-w",
        "mixed-b",
        "int64",
        "bool",
        "complex",
    ],
)
def test_linear_relu_rejects(x, w, b, pattern):
    args = (x(), w(), b() if b else None)
    with pytest.raises(ERR, match=pattern):
        twolayer_ext.linear_relu(*args)
    with pytest.raises(ERR, match=pattern):
        torch.ops.twolayer_ext.linear_relu(*args)


def test_sparse_input_rejected():
    x = f32(4, 5).to_sparse()
    with pytest.raises((RuntimeError, NotImplementedError), match="linear_relu"):
        torch.ops.twolayer_ext.linear_relu(x, f32(3, 5), None)


def test_relu_rejects_integers():
    with pytest.raises(ERR, match="x has unsupported dtype Long"):
        twolayer_ext.relu(torch.ones(3, dtype=torch.int64))


def test_backward_rejects_bad_mask():
    x, w = f32(4, 5), f32(3, 5)
    with pytest.raises(ERR, match=r"mask must be a contiguous uint8 tensor of shape \[4, 1\]"):
        torch.ops.twolayer_ext.linear_relu_backward(
            f32(4, 3), x, w, torch.zeros(4, 3, dtype=torch.uint8), [True, True, True]
        )
    with pytest.raises(ERR, match=r"grad_y must have shape \[4, 3\]"):
        torch.ops.twolayer_ext.linear_relu_backward(
            f32(4, 2), x, w, torch.zeros(4, 1, dtype=torch.uint8), [True, True, True]
        )


@requires_cuda
def test_mixed_devices_rejected():
    with pytest.raises(ERR, match="same device"):
        twolayer_ext.linear_relu(f32(4, 5, device="cuda"), f32(3, 5))
    with pytest.raises(ERR, match="same device"):
        twolayer_ext.linear_relu(f32(4, 5), f32(3, 5, device="cuda"))
    with pytest.raises(ERR, match="same device"):
        twolayer_ext.linear_relu(f32(4, 5, device="cuda"), f32(3, 5, device="cuda"), f32(3))


def test_quantized_input_rejected():
    xq = torch.quantize_per_tensor(f32(4, 5), 0.1, 0, torch.qint8)
    with pytest.raises((RuntimeError, NotImplementedError), match="linear_relu"):
        torch.ops.twolayer_ext.linear_relu(xq, f32(3, 5), None)


def test_two_layer_rejects_mismatched_second_layer():
    x, w1 = f32(4, 5), f32(3, 5)
    with pytest.raises(
        ERR,
        match=r"w2 must have shape \[out_features, hidden\] with hidden = "
        r"w1.size\(0\) = 3, but got shape \[2, 4\]",
    ):
        torch.ops.twolayer_ext.two_layer_forward(x, w1, None, f32(2, 4), None)
    with pytest.raises(ERR, match=r"b2 must have shape \[2\], but got shape \[3\]"):
        torch.ops.twolayer_ext.two_layer_forward(x, w1, None, f32(2, 3), f32(3))
    with pytest.raises(ERR, match=r"w2 to have the same dtype as x"):
        torch.ops.twolayer_ext.two_layer_forward(x, w1, None, f32(2, 3).double(), None)


def test_relu_backward_rejects_shape_mismatch():
    with pytest.raises(ERR, match=r"grad_y must have the shape of y \[3, 4\], but got \[4, 3\]"):
        torch.ops.twolayer_ext.relu_backward(f32(4, 3), f32(3, 4))


def test_torch_func_transforms_raise_clearly():
    """The ops' autograd is C++ (csrc/autograd/); functorch refuses it with a clear error
    instead of computing something wrong (documented in README)."""
    x, w = torch.randn(3, 4), torch.randn(5, 4)
    with pytest.raises(RuntimeError, match="functorch transforms"):
        torch.func.grad(lambda w: twolayer_ext.linear_relu(x, w).sum())(w)
