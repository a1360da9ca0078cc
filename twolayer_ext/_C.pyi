# ruff: noqa: N999  (the module name is the extension's: twolayer_ext._C)
"""The compiled extension (csrc/ops.cpp). Importing it registers torch.ops.twolayer_ext."""

def cpu_paths() -> dict[str, str]:
    """The paths the CPU ops take on this CPU now: float32_gemm_kernels ("avx512", "avx2" or
    "none"), bfloat16_products and float16_products ("native" or "float32"),
    elementwise_passes ("avx512", "avx2" or "default")."""

def cpu_capabilities() -> dict[str, bool | int | str]:
    """ATen's description of the CPU (at::cpu::get_cpu_capabilities: cpuinfo's name,
    instruction-set flags, cache sizes and core counts)."""
