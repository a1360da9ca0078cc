# ruff: noqa: N999  (the module name is the extension's: twolayer_ext._C)
"""The compiled extension (csrc/ops.cpp). Importing it registers torch.ops.twolayer_ext."""

def cpu_paths() -> dict[str, str]:
    """The paths the CPU ops take on this CPU now: float32_gemm_kernels ("avx512", "avx2" or
    "none"), float32_gemm_bounds (whose measurements bound them: "intel", "avx512", "avx2"
    or "none"), bfloat16_products and float16_products ("native" or "float32"),
    bfloat16_fused_mlp ("amx": the fully fused bfloat16 network, forward and backward, on the
    extension's AMX tile kernel; "products": on the products above), elementwise_passes
    ("avx512", "avx2" or "default")."""

def cpu_capabilities() -> dict[str, bool | int | str]:
    """ATen's description of the CPU (at::cpu::get_cpu_capabilities: cpuinfo's name,
    instruction-set flags, cache sizes and core counts)."""

def switches() -> dict[str, str]:
    """Each environment switch of the paths (README, "Path switches") and its value ("" when
    unset). Raises ValueError if one has a value it does not accept."""

def cuda_matmul_tf32() -> bool:
    """Whether CUDA float32 products of the extension run on TF32 tensor cores now, as torch's
    matmuls would (torch.backends.cuda.matmul.fp32_precision)."""
