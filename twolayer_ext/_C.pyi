# ruff: noqa: N999  (the module name is the extension's: twolayer_ext._C)
"""The compiled extension (csrc/ops.cpp). Importing it registers torch.ops.twolayer_ext."""

def cpu_passes_isa() -> str:
    """The instruction set of the CPU element-wise passes: "avx512", "avx2" or "default"."""
