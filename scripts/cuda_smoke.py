"""A short run of every CUDA kernel and dtype at awkward sizes, for compute-sanitizer.

Usage: compute-sanitizer --tool memcheck python scripts/cuda_smoke.py
Exits non-zero if any result differs from the reference.
"""

from __future__ import annotations

import sys

import torch

from twolayer_ext import reference

TOL = {torch.float32: 1e-4, torch.float64: 1e-10, torch.float16: 5e-3, torch.bfloat16: 3e-2}


def main() -> int:
    bad = 0
    for dtype, tol in TOL.items():
        for rows, in_f, out_f in [(1, 1, 1), (70, 33, 67), (3, 130, 9)]:
            x = torch.randn(rows, in_f, device="cuda", dtype=dtype)
            w = torch.randn(in_f, out_f, device="cuda", dtype=dtype).t()  # transposed view
            b = torch.randn(out_f, device="cuda", dtype=dtype)
            y, mask = torch.ops.twolayer_ext.linear_relu(x, w, b)
            g = torch.randn_like(y)
            grads = torch.ops.twolayer_ext.linear_relu_backward(g, x, w, mask, [True, True, True])
            ry = reference.linear_relu(x.double(), w.double(), b.double())
            rg = reference.linear_relu_backward(
                g.double(), x.double(), w.double(), mask, [True] * 3
            )
            ys = torch.ops.twolayer_ext.relu(x)
            gs = torch.ops.twolayer_ext.relu_backward(x, ys)
            for got, want in [
                (y, ry),
                *zip(grads, rg),
                (ys, x.double().relu()),
                (gs, reference.relu_backward(x.double(), ys.double())),
            ]:
                err = (got.double() - want).abs().max().item() / max(1.0, want.abs().max().item())
                if not err <= tol:
                    print(f"MISMATCH {dtype} {rows}x{in_f}->{out_f}: {err:.3g}")
                    bad += 1
    torch.cuda.synchronize()
    print("cuda_smoke:", "ok" if bad == 0 else f"{bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
