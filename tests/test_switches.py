"""The path switches (csrc/paths/switches.cpp, README "Path switches"): each is read and
validated the same way, the retired one is refused, and torch's TF32 setting is read through
the API that does not raise."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import twolayer_ext
from twolayer_ext import _C

SWITCHES = {
    "TWOLAYER_EXT_CPU_GEMM": "'aten'",
    "TWOLAYER_EXT_CPU_FUSED_MLP": "'0', '1'",
    "TWOLAYER_EXT_CUDA_FUSED_MLP": "'0', '1'",
}


def test_every_switch_is_listed_with_its_value(monkeypatch):
    for name in SWITCHES:
        monkeypatch.delenv(name, raising=False)
    assert _C.switches() == {name: "" for name in SWITCHES}
    monkeypatch.setenv("TWOLAYER_EXT_CPU_FUSED_MLP", "0")
    assert twolayer_ext.build_info()["switches"]["TWOLAYER_EXT_CPU_FUSED_MLP"] == "0"


@pytest.mark.parametrize("name", SWITCHES)
@pytest.mark.parametrize("value", ["2", "yes", "AVX2"])
def test_unknown_value_names_the_switch_and_its_values(name, value, monkeypatch):
    monkeypatch.setenv(name, value)
    message = f"{name} must be one of {SWITCHES[name]} \\(or unset\\), but got '{value}'"
    with pytest.raises(ValueError, match=message):
        _C.switches()


@pytest.mark.parametrize(
    ("name", "call"),
    [
        (
            "TWOLAYER_EXT_CPU_GEMM",
            lambda: twolayer_ext.linear_relu(torch.randn(3, 4), torch.randn(2, 4)),
        ),
        (
            "TWOLAYER_EXT_CPU_FUSED_MLP",
            lambda: twolayer_ext.two_layer_mlp(
                torch.randn(3, 4), torch.randn(5, 4), None, torch.randn(2, 5)
            ),
        ),
    ],
)
def test_the_ops_raise_the_same_error(name, call, monkeypatch):
    monkeypatch.setenv(name, "fused")
    with pytest.raises(ValueError, match=f"{name} must be one of"):
        call()


def test_the_retired_switch_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("TWOLAYER_EXT_FUSED_MLP", "1")
    match = "TWOLAYER_EXT_FUSED_MLP is no longer read: set TWOLAYER_EXT_CPU_FUSED_MLP"
    with pytest.raises(ValueError, match=match):
        twolayer_ext.two_layer_mlp(torch.randn(3, 4), torch.randn(5, 4), None, torch.randn(2, 5))


# Each in a fresh interpreter: once the new API is used, torch's legacy getter raises for the
# rest of the process.
TF32_CASES = {
    "default": ("", "ieee"),
    "new API": ('torch.backends.cuda.matmul.fp32_precision = "tf32"', "tf32"),
    "legacy": ("torch.backends.cuda.matmul.allow_tf32 = True", "tf32"),
    "legacy then new": (
        'torch.backends.cuda.matmul.allow_tf32 = True; torch.backends.cuda.matmul.fp32_precision = "ieee"',
        "ieee",
    ),
    "new then legacy": (
        'torch.backends.cuda.matmul.fp32_precision = "ieee"; torch.backends.cuda.matmul.allow_tf32 = True',
        "tf32",
    ),
}


@pytest.mark.parametrize("case", TF32_CASES)
def test_tf32_setting_is_read_without_raising(case):
    setting, expected = TF32_CASES[case]
    code = (
        f"import torch, twolayer_ext; {setting}\n"
        "print(twolayer_ext.build_info()['cuda_float32_products'])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd="/", capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == expected
