"""build_info() and the import-time torch version check."""

from __future__ import annotations

import pytest
import torch
from helpers import requires_cuda

import twolayer_ext
from twolayer_ext import _build_config, _loader
from twolayer_ext.info import SUPPORTED_DTYPES


def test_build_info_reports_the_build():
    info = twolayer_ext.build_info()
    assert info["torch_built_against"] == torch.__version__
    assert info["version"] == twolayer_ext.__version__
    assert isinstance(info["cuda_compiled"], bool)
    assert info["openmp_threads"] == torch.get_num_threads()
    assert info["cpu_isa"]
    if info["cuda_compiled"]:
        assert info["cuda_arch_list"]


def test_cuda_kernels_compiled_when_requested():
    """CI builds with a CUDA toolkit; TWOLAYER_EXT_EXPECT_CUDA=1 makes a CPU-only build a failure."""
    import os

    if os.environ.get("TWOLAYER_EXT_EXPECT_CUDA") != "1":
        pytest.skip("TWOLAYER_EXT_EXPECT_CUDA is not set")
    assert twolayer_ext.build_info()["cuda_compiled"]


def test_version_mismatch_raises_import_error(monkeypatch):
    monkeypatch.setattr(_build_config, "TORCH_VERSION", "0.0.1+fake")
    with pytest.raises(
        ImportError,
        match=r"built against torch 0\.0\.1\+fake.*"
        r"pip install --no-build-isolation \.",
    ):
        _loader.load_extension()


def test_ops_registered():
    for name in ["linear_relu", "linear_relu_backward", "relu", "relu_backward"]:
        assert hasattr(torch.ops.twolayer_ext, name)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=requires_cuda)])
def test_supported_dtypes_are_the_kernels(device):
    """twolayer_ext.info.SUPPORTED_DTYPES (what the tests iterate over) is what the C++
    checks accept, in the order their error message lists."""
    supported = SUPPORTED_DTYPES[device]
    names = {torch.float32: "Float", torch.float64: "Double", torch.float16: "Half"}
    names[torch.bfloat16] = "BFloat16"
    listed = ", ".join(names[d] for d in supported)
    for dtype in (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int32):
        x = torch.ones(2, 3, device=device).to(dtype)
        w = torch.ones(4, 3, device=device).to(dtype)
        if dtype in supported:
            assert twolayer_ext.linear_relu(x, w).dtype == dtype
        else:
            with pytest.raises(RuntimeError, match=f"supported dtypes are {listed}$"):
                twolayer_ext.linear_relu(x, w)
    assert twolayer_ext.build_info()["dtypes"][device] == [
        str(d).removeprefix("torch.") for d in supported
    ]


def test_installed_wheel_is_abi3_and_pins_its_torch():
    """One wheel for every Python >= 3.10 (stable ABI), requiring the torch it was built with."""
    import importlib.metadata as m

    wheel = m.distribution("twolayer_ext").read_text("WHEEL")
    assert "Tag: cp310-abi3-" in wheel, wheel
    assert twolayer_ext._C.__file__.endswith(".abi3.so")
    pins = [r for r in m.requires("twolayer_ext") if r.startswith("torch")]
    assert pins == [f"torch=={m.version('torch')}"], pins


def test_installed_package_is_typed():
    """PEP 561 marker, so type checkers read the annotations (CI runs mypy --strict on them)."""
    import pathlib

    assert (pathlib.Path(twolayer_ext.__file__).parent / "py.typed").is_file()
