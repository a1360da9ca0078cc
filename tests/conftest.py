"""Fixtures and hooks: reproducible fresh randomness and the two-layer path per test.

Every test draws fresh random inputs: the seed is random per session unless
TWOLAYER_TEST_SEED is set, and it is printed in the report header so a failure
can be replayed. Shared helpers and constants live in helpers.py.
"""

from __future__ import annotations

import random
import zlib

import pytest
import torch
from helpers import SESSION_SEED


def pytest_report_header(config):
    return f"twolayer_ext tests: TWOLAYER_TEST_SEED={SESSION_SEED}"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    # Also at the end, where `pytest -q ... | tail` (CI, scripts/sanitize_cpu.sh) shows it.
    if exitstatus != 0:
        terminalreporter.write_line(f"replay with TWOLAYER_TEST_SEED={SESSION_SEED}")


# The two-layer ops run fully fused (block by block: csrc/cpu/two_layer_fused.cpp,
# csrc/cuda/fused_mlp.cu) or layer by layer, chosen per call; TWOLAYER_EXT_CPU_FUSED_MLP and
# TWOLAYER_EXT_CUDA_FUSED_MLP force one (on CUDA, "1" where the fused kernels' shared memory
# fits). Test modules that use this fixture run each test on both paths, on either device.
MLP_PATHS = {"layered": "0", "fused": "1"}


@pytest.fixture(params=list(MLP_PATHS))
def mlp_path(request, monkeypatch):
    for device in ("CPU", "CUDA"):
        monkeypatch.setenv(f"TWOLAYER_EXT_{device}_FUSED_MLP", MLP_PATHS[request.param])
    return request.param


@pytest.fixture(autouse=True)
def _seed(request):
    seed = (SESSION_SEED + zlib.crc32(request.node.nodeid.encode())) % 2**31
    torch.manual_seed(seed)
    random.seed(seed)
    yield
