"""One fused forward+backward at 8192x4096->4096 bfloat16, for Nsight Compute.

Usage: ncu --kernel-name regex:pipelined_gemm_kernel --launch-skip 3 --launch-count 3 \
           python scripts/ncu_gemm.py
(the skipped launches are the warm-up step's three GEMMs).
"""

from __future__ import annotations

import torch

import twolayer_ext

x = torch.randn(8192, 4096, device="cuda", dtype=torch.bfloat16, requires_grad=True)
w = (torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16) / 64).requires_grad_()
b = torch.randn(4096, device="cuda", dtype=torch.bfloat16, requires_grad=True)
g = torch.randn(8192, 4096, device="cuda", dtype=torch.bfloat16)
for _ in range(2):  # warm-up, then the profiled step
    torch.autograd.grad(twolayer_ext.linear_relu(x, w, b), (x, w, b), g)
torch.cuda.synchronize()
