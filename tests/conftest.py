"""Shared fixtures: devices, dtypes, tolerances and reproducible fresh randomness.

Every test draws fresh random inputs: the seed is random per session unless
TWOLAYER_TEST_SEED is set, and it is printed in the report header so a failure
can be replayed.
"""

from __future__ import annotations

import os
import random
import zlib

import pytest
import torch

SESSION_SEED = int(os.environ.get("TWOLAYER_TEST_SEED", random.SystemRandom().randrange(2**31)))

HAS_CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")

CPU_DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
CUDA_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]

DEVICE_DTYPES = [pytest.param("cpu", dt, id=f"cpu-{str(dt)[6:]}") for dt in CPU_DTYPES] + [
    pytest.param("cuda", dt, id=f"cuda-{str(dt)[6:]}", marks=requires_cuda) for dt in CUDA_DTYPES
]
DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]

# The CUDA ops run their products on cuBLAS ("vendor") or on the extension's own GEMM
# ("custom"), chosen per call (csrc/cuda/layer.cu); TWOLAYER_EXT_CUDA_GEMM forces one.
# On a machine with a GPU every test that touches CUDA runs once per path.
CUDA_GEMM_PATHS = ["vendor", "custom"]

# Max error relative to the largest reference magnitude, against a float64
# reference computed from the same (rounded) inputs.
TOLERANCE = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,
    torch.float16: 4e-3,
    torch.bfloat16: 3e-2,
}


def pytest_report_header(config):
    return f"twolayer_ext tests: TWOLAYER_TEST_SEED={SESSION_SEED}"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    # Also at the end, where `pytest -q ... | tail` (CI, scripts/sanitize_cpu.sh) shows it.
    if exitstatus != 0:
        terminalreporter.write_line(f"replay with TWOLAYER_TEST_SEED={SESSION_SEED}")


if HAS_CUDA:

    @pytest.fixture(autouse=True, params=CUDA_GEMM_PATHS)
    def cuda_gemm_path(request, monkeypatch):
        monkeypatch.setenv("TWOLAYER_EXT_CUDA_GEMM", request.param)
        return request.param

    def pytest_collection_modifyitems(config, items):
        """Keep the custom-GEMM copy of a test only where the test touches CUDA."""
        keep, drop = [], []
        for item in items:
            params = getattr(item, "callspec", None)
            params = params.params if params else {}
            path = params.get("cuda_gemm_path")
            only = item.get_closest_marker("gemm_path")
            touches_cuda = "cuda" in item.nodeid.lower() or params.get("device") == "cuda"
            if only is not None:
                wanted = path == only.args[0]
            else:
                wanted = path != "custom" or touches_cuda
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


def assert_close(actual: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype, what: str = ""):
    """Max |actual - expected| <= tol(dtype) * max(1, max |expected|); shapes and NaNs must match."""
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    assert torch.equal(a.isnan(), e.isnan()), f"{what}: NaN positions differ"
    a, e = a.nan_to_num(0.0), e.nan_to_num(0.0)
    if e.numel() == 0:
        return
    scale = max(1.0, e.abs().max().item())
    err = (a - e).abs().max().item()
    tol = TOLERANCE[dtype] * scale
    assert err <= tol, f"{what}: max error {err:.3g} > {tol:.3g} (dtype {dtype})"
