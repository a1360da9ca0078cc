"""Fixtures and hooks: reproducible fresh randomness, the CUDA GEMM path and the CPU's
two-layer path per test.

Every test draws fresh random inputs: the seed is random per session unless
TWOLAYER_TEST_SEED is set, and it is printed in the report header so a failure
can be replayed. Shared helpers and constants live in helpers.py.
"""

from __future__ import annotations

import random
import zlib

import pytest
import torch
from helpers import HAS_CUDA, SESSION_SEED

# The CUDA ops run their products on cuBLAS ("vendor") or on the extension's own GEMM
# ("custom"), chosen per call (csrc/cuda/layer.cu); TWOLAYER_EXT_CUDA_GEMM forces one.
# On a machine with a GPU every test that touches CUDA runs once per path.
CUDA_GEMM_PATHS = ["vendor", "custom"]


def pytest_report_header(config):
    return f"twolayer_ext tests: TWOLAYER_TEST_SEED={SESSION_SEED}"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    # Also at the end, where `pytest -q ... | tail` (CI, scripts/sanitize_cpu.sh) shows it.
    if exitstatus != 0:
        terminalreporter.write_line(f"replay with TWOLAYER_TEST_SEED={SESSION_SEED}")


# The two-layer ops run fully fused (block by block: csrc/cpu/two_layer_fused.cpp,
# csrc/cuda/fused_mlp.cu) or layer by layer, chosen per call; TWOLAYER_EXT_FUSED_MLP forces
# one (on CUDA, "1" where the fused kernels' shared memory fits). Test modules that use this
# fixture run each test on both paths.
MLP_PATHS = {"layered": "0", "fused": "1"}


@pytest.fixture(params=list(MLP_PATHS))
def mlp_path(request, monkeypatch):
    monkeypatch.setenv("TWOLAYER_EXT_FUSED_MLP", MLP_PATHS[request.param])
    return request.param


if HAS_CUDA:

    @pytest.fixture(autouse=True, params=CUDA_GEMM_PATHS)
    def cuda_gemm_path(request, monkeypatch):
        monkeypatch.setenv("TWOLAYER_EXT_CUDA_GEMM", request.param)
        return request.param


def pytest_collection_modifyitems(config, items):
    """Keep a test's custom-GEMM copy only where it touches CUDA."""
    keep, drop = [], []
    for item in items:
        params = getattr(item, "callspec", None)
        params = params.params if params else {}
        touches_cuda = "cuda" in item.nodeid.lower() or params.get("device") == "cuda"
        wanted = True
        if "cuda_gemm_path" in params:
            path = params["cuda_gemm_path"]
            only = item.get_closest_marker("gemm_path")
            wanted = path == only.args[0] if only is not None else path != "custom" or touches_cuda
        (keep if wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(autouse=True)
def _seed(request):
    seed = (SESSION_SEED + zlib.crc32(request.node.nodeid.encode())) % 2**31
    torch.manual_seed(seed)
    random.seed(seed)
    yield
