"""Build and runtime information about the extension."""

from __future__ import annotations

from typing import Any

import torch

from . import _build_config
from ._version import __version__

# The dtypes the kernels are compiled for, per device: csrc/include/twolayer_ext/checks.h's
# kCpuDtypes / kCudaDtypes, in their order (the order of the C++ error messages; a test
# checks that the two agree). The 16-bit types accumulate in float32.
SUPPORTED_DTYPES: dict[str, tuple[torch.dtype, ...]] = {
    "cpu": (torch.float32, torch.float64, torch.bfloat16, torch.float16),
    "cuda": (torch.float32, torch.float64, torch.float16, torch.bfloat16),
}


def _has_kernel(op: str, key: str) -> bool:
    return torch._C._dispatch_has_kernel_for_dispatch_key(op, key)


def build_info() -> dict[str, Any]:
    """Describe how the extension was built and what it runs with.

    Returns a dict with the package version, the torch version it was built
    against (and the running one), whether CUDA kernels were compiled (read from
    the dispatcher, not just the build flags), the CUDA arch list, the number of
    intra-op (OpenMP) threads, the CPU ISA in use (ATen's and the extension's element-wise
    passes') and the supported dtypes per device.
    """
    from . import _C  # loaded by the package's import (_loader.py), which checks the build

    cuda_kernels = _has_kernel("twolayer_ext::linear_relu", "CUDA")
    return {
        "version": __version__,
        "torch_built_against": _build_config.TORCH_VERSION,
        "torch_runtime": torch.__version__,
        "cuda_compiled": bool(cuda_kernels),
        "cuda_arch_list": _build_config.CUDA_ARCH_LIST if cuda_kernels else "",
        "torch_cuda_version": _build_config.TORCH_CUDA_VERSION,
        "cuda_available": torch.cuda.is_available(),
        "openmp_threads": torch.get_num_threads(),
        # The ISA ATen picked at run time (its BLAS and vectorised kernels). The
        # extension's own float32 GEMM kernels pick AVX-512 or AVX2 the same way
        # (TWOLAYER_EXT_CPU_GEMM).
        "cpu_isa": torch.backends.cpu.get_cpu_capability(),
        # The instruction set of the extension's element-wise passes (csrc/cpu/isa/), compiled
        # per ISA with at::vec and picked to match ATen's (ATEN_CPU_CAPABILITY selects it too).
        "cpu_passes_isa": _C.cpu_passes_isa(),
        "dtypes": {
            dev: [str(d).removeprefix("torch.") for d in ds] for dev, ds in SUPPORTED_DTYPES.items()
        },
    }
