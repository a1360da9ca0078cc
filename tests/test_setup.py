"""The build: setup.py's decision to build the CUDA kernels (TWOLAYER_EXT_CUDA, toolkit
discovery), its compiler flags (TWOLAYER_EXT_DEBUG_INFO, TWOLAYER_EXT_SANITIZE), and the
in-tree PEP 517 backend that pins torch (build_backend/). A real isolated
`pip install .` runs in CI: scripts/check_isolated_install.sh."""

from __future__ import annotations

import importlib.util
import pathlib
import types

import pytest

SETUP = pathlib.Path(__file__).resolve().parents[1] / "setup.py"
BACKEND = pathlib.Path(__file__).resolve().parents[1] / "build_backend" / "twolayer_ext_build.py"


@pytest.fixture
def setup_mod(monkeypatch):
    for var in (
        "TWOLAYER_EXT_CUDA",
        "CUDA_HOME",
        "CUDA_PATH",
        "TWOLAYER_EXT_DEBUG_INFO",
        "TWOLAYER_EXT_SANITIZE",
    ):
        monkeypatch.delenv(var, raising=False)
    spec = importlib.util.spec_from_file_location("twolayer_setup", SETUP)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # defines functions only; main() runs as __main__
    return mod


def _torch(cuda: str | None):
    return types.SimpleNamespace(__version__="9.9.9", version=types.SimpleNamespace(cuda=cuda))


@pytest.fixture
def toolkit(tmp_path):
    (tmp_path / "bin").mkdir()
    (tmp_path / "include").mkdir()
    (tmp_path / "bin" / "nvcc").write_text("#!/bin/sh\n")
    (tmp_path / "include" / "cuda_runtime.h").write_text("")
    return str(tmp_path)


def test_objects_carry_no_debug_information_unless_asked(setup_mod, monkeypatch):
    cxx, _ = setup_mod._compile_flags(with_cuda=True, avx512_passes=True)
    assert "-O3" in cxx and "-g0" in cxx  # -g0 comes after Python's CFLAGS -g, so it wins
    monkeypatch.setenv("TWOLAYER_EXT_DEBUG_INFO", "1")
    cxx, _ = setup_mod._compile_flags(with_cuda=True, avx512_passes=True)
    assert "-g0" not in cxx


def test_sanitizer_build_flags(setup_mod, monkeypatch):
    monkeypatch.setenv("TWOLAYER_EXT_SANITIZE", "1")
    cxx, link = setup_mod._compile_flags(with_cuda=False, avx512_passes=True)
    assert "-fsanitize=address,undefined" in cxx and "-fsanitize=address,undefined" in link
    assert "-g1" in cxx and "-O1" in cxx  # line tables for the reports; no -g0, no -O3
    assert "-g0" not in cxx and "-O3" not in cxx
    with pytest.raises(RuntimeError, match="TWOLAYER_EXT_SANITIZE=1 needs a CPU-only build"):
        setup_mod._compile_flags(with_cuda=True, avx512_passes=True)


def test_cuda_built_when_toolkit_and_cuda_torch(setup_mod, toolkit, monkeypatch):
    monkeypatch.setenv("CUDA_HOME", toolkit)
    assert setup_mod._want_cuda(_torch("13.0")) is True


def test_cpu_only_when_forced_off(setup_mod, toolkit, monkeypatch):
    monkeypatch.setenv("CUDA_HOME", toolkit)
    monkeypatch.setenv("TWOLAYER_EXT_CUDA", "0")
    assert setup_mod._want_cuda(_torch("13.0")) is False


def test_cpu_only_torch_skips_cuda(setup_mod, toolkit, monkeypatch):
    monkeypatch.setenv("CUDA_HOME", toolkit)
    assert setup_mod._want_cuda(_torch(None)) is False


def test_forced_on_without_toolkit_is_an_error(setup_mod, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_HOME", str(tmp_path / "missing"))
    monkeypatch.setenv("TWOLAYER_EXT_CUDA", "1")
    with pytest.raises(
        RuntimeError, match="TWOLAYER_EXT_CUDA=1 but the CUDA kernels cannot be built"
    ):
        setup_mod._want_cuda(_torch("13.0"))


def test_wrapper_nvcc_on_path_falls_back_to_a_real_toolkit(
    setup_mod, tmp_path, toolkit, monkeypatch
):
    wrapper_dir = tmp_path / "wrapper" / "bin"
    wrapper_dir.mkdir(parents=True)
    (wrapper_dir / "nvcc").write_text('#!/bin/sh\nexec /somewhere/nvcc "$@"\n')
    (wrapper_dir / "nvcc").chmod(0o755)
    monkeypatch.setenv("PATH", str(wrapper_dir))
    home = setup_mod._find_cuda_home()
    assert home is None or setup_mod._is_toolkit(home)
    assert home != str(tmp_path / "wrapper")


@pytest.fixture
def backend(monkeypatch):
    spec = importlib.util.spec_from_file_location("twolayer_ext_build", BACKEND)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_backend_pins_the_target_environments_torch(backend, monkeypatch):
    import importlib.metadata

    assert backend._target_torch() == importlib.metadata.version("torch")  # this venv's
    monkeypatch.setattr(backend, "_target_torch", lambda: "2.13.0+cpu")
    assert backend.get_requires_for_build_wheel() == ["torch==2.13.0+cpu"]
    monkeypatch.setattr(backend, "_target_torch", lambda: None)  # no torch there: any torch
    assert backend.get_requires_for_build_wheel() == ["torch"]


def test_backend_stops_before_compiling_on_a_torch_mismatch(backend, monkeypatch, tmp_path):
    """If the build environment's torch is not the target's, build_wheel names the command
    that works and builds nothing (it never reaches setuptools)."""
    monkeypatch.setattr(backend, "_target_torch", lambda: "0.0.1")

    def must_not_build(*args, **kwargs):
        raise AssertionError("compiled despite the mismatch")

    monkeypatch.setattr(backend._setuptools, "build_wheel", must_not_build)
    with pytest.raises(SystemExit, match=r"has torch 0\.0\.1.*pip install --no-build-isolation \."):
        backend.build_wheel(str(tmp_path))
    assert not any(tmp_path.iterdir())
