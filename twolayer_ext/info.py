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


def _cpu_family_model() -> str:
    """The x86 family and model (e.g. "family 25, model 1": Zen 3), from /proc/cpuinfo."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
                if not line.strip():
                    break  # the first processor's block is enough
    except OSError:
        return ""
    if "cpu family" not in fields:
        return ""
    return f"family {fields['cpu family']}, model {fields.get('model', '?')}"


def cpu_info() -> dict[str, Any]:
    """The CPU the ops run on: its name, x86 family and model, cores, L2 size, vector
    instruction sets, whether it has native bfloat16 / float16 arithmetic, and the paths the
    CPU ops take on it (their float32 GEMM kernels, 16-bit products, element-wise passes)."""
    from . import _C

    caps = _C.cpu_capabilities()
    vector_isa = [
        name
        for name in ("avx2", "fma3", "avx512_f", "avx512_bf16", "avx512_fp16", "amx_bf16")
        if caps.get(name)
    ]
    return {
        "name": caps.get("cpu_name", ""),
        "family_model": _cpu_family_model(),
        "physical_cores": caps.get("num_physical_cores"),
        "l2_cache_bytes": caps.get("l2_cache_size"),
        "vector_isa": vector_isa,
        "native_bfloat16": bool(caps.get("avx512_bf16") or caps.get("amx_bf16")),
        "native_float16": bool(caps.get("avx512_fp16") or caps.get("amx_fp16")),
        "paths": _C.cpu_paths(),
    }


def build_info() -> dict[str, Any]:
    """Describe how the extension was built and what it runs with.

    Returns a dict with the package version, the torch version it was built
    against (and the running one), whether CUDA kernels were compiled (read from
    the dispatcher, not just the build flags), the CUDA arch list, the number of
    intra-op (OpenMP) threads, the CPU ISA in use (ATen's and the extension's element-wise
    passes'), the CPU and the paths the CPU ops take on it (:func:`cpu_info`), the path
    switches' values, whether CUDA float32 products would use TF32, and the supported dtypes
    per device.
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
        # extension's own CPU kernels follow it (cpu.paths).
        "cpu_isa": torch.backends.cpu.get_cpu_capability(),
        # The instruction set of the extension's element-wise passes (csrc/cpu/isa/), compiled
        # per ISA with at::vec and picked to match ATen's (ATEN_CPU_CAPABILITY selects it too).
        "cpu_passes_isa": _C.cpu_paths()["elementwise_passes"],
        "cpu": cpu_info(),
        # The environment switches of the paths (README, "Path switches"), "" when unset.
        "switches": _C.switches(),
        # How the CUDA ops' own float32 products would run now: on TF32 tensor cores where
        # torch's matmuls do (torch.backends.cuda.matmul.fp32_precision), else in full float32.
        "cuda_float32_products": "tf32" if _C.cuda_matmul_tf32() else "ieee",
        "dtypes": {
            dev: [str(d).removeprefix("torch.") for d in ds] for dev, ds in SUPPORTED_DTYPES.items()
        },
    }
