"""A short run of every CUDA kernel and dtype at awkward sizes, for compute-sanitizer.

The layer ops (cuBLAS with the passes of csrc/cuda/passes.cu), then the fully
fused two-layer kernels (csrc/cuda/fused_mlp.cu, TWOLAYER_EXT_CUDA_FUSED_MLP=1), both ways and
with the recomputing backward.

Usage: compute-sanitizer --tool memcheck python scripts/cuda_smoke.py
Exits non-zero if any result differs from the reference.
"""

from __future__ import annotations

import os
import sys

import torch

from twolayer_ext import reference

TOL = {torch.float32: 1e-4, torch.float64: 1e-10, torch.float16: 5e-3, torch.bfloat16: 3e-2}


def _err(got: torch.Tensor, want: torch.Tensor) -> float:
    return (got.double() - want).abs().max().item() / max(1.0, want.abs().max().item())


def two_layer(dtype: torch.dtype, tol: float) -> int:
    """The whole-network ops once, at a size that takes the pipelined GEMM for 16-bit types."""
    x = torch.randn(200, 264, device="cuda", dtype=dtype)
    w1 = torch.randn(136, 264, device="cuda", dtype=dtype) / 16
    w2 = torch.randn(72, 136, device="cuda", dtype=dtype) / 12
    b1, b2 = (
        torch.randn(136, device="cuda", dtype=dtype),
        torch.randn(72, device="cuda", dtype=dtype),
    )
    out, hidden = torch.ops.twolayer_ext.two_layer_forward(x, w1, b1, w2, b2)
    g = torch.randn_like(out)
    got = torch.ops.twolayer_ext.two_layer_backward(g, x, w1, w2, hidden, [True] * 5)
    d = [t.double() for t in (x, w1, b1, w2, b2, g, hidden)]
    ref_out = torch.nn.functional.linear(d[6], d[3], d[4])
    want = reference.two_layer_backward(d[5], d[0], d[1], d[3], d[6], [True] * 5)
    bad = 0
    for a, r in [(out, ref_out), *zip(got, want)]:
        if not _err(a, r) <= tol:
            print(f"MISMATCH two_layer {dtype}: {_err(a, r):.3g}")
            bad += 1
    return bad


def layers() -> int:
    bad = 0
    for dtype, tol in TOL.items():
        # Contiguous and transposed weights, sizes off every tile edge.
        # (1, 1, 1): one mask byte with a single bit; 70 x 67: partial mask bytes and strips.
        for rows, in_f, out_f, w_t in [
            (1, 1, 1, True),
            (70, 33, 67, True),
            (3, 130, 9, True),
            (200, 264, 136, False),
            (130, 40, 256, False),
        ]:
            x = torch.randn(rows, in_f, device="cuda", dtype=dtype)
            if w_t:
                w = torch.randn(in_f, out_f, device="cuda", dtype=dtype).t()
            else:
                w = torch.randn(out_f, in_f, device="cuda", dtype=dtype)
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
        bad += two_layer(dtype, tol)
    torch.cuda.synchronize()
    return bad


def fused_mlp() -> int:
    """The fused kernels at two sizes: three row blocks, a short last one, odd widths; and
    1032 row blocks (more than the backward's 1024 thread blocks, so chunks of two)."""
    os.environ["TWOLAYER_EXT_CUDA_FUSED_MLP"] = "1"
    bad = 0
    try:
        for dtype, tol in TOL.items():
            for rows, d_in, hidden, d_out in [(70, 17, 40, 3), (33000, 16, 24, 5)]:
                x = torch.randn(rows, d_in, device="cuda", dtype=dtype)
                w1 = torch.randn(d_in, hidden, device="cuda", dtype=dtype).t() / d_in**0.5
                w2 = torch.randn(d_out, hidden, device="cuda", dtype=dtype) / hidden**0.5
                b1 = torch.randn(hidden, device="cuda", dtype=dtype)
                b2 = torch.randn(d_out, device="cuda", dtype=dtype)
                out, h = torch.ops.twolayer_ext.two_layer_forward(x, w1, b1, w2, b2)
                g = torch.randn_like(out)
                got = [out, *torch.ops.twolayer_ext.two_layer_backward(g, x, w1, w2, h, [True] * 5)]
                got += torch.ops.twolayer_ext.two_layer_backward_recompute(
                    g, x, w1, b1, w2, [True] * 5
                )
                d = [t.double() for t in (x, w1, b1, w2, b2, g, h)]
                want = reference.two_layer_backward(d[5], d[0], d[1], d[3], d[6], [True] * 5)
                want = [torch.nn.functional.linear(d[6], d[3], d[4]), *want, *want]
                for a, r in zip(got, want):
                    if not _err(a, r) <= tol:
                        print(f"MISMATCH fused_mlp {dtype} {rows}x{d_in}: {_err(a, r):.3g}")
                        bad += 1
        torch.cuda.synchronize()
    finally:
        del os.environ["TWOLAYER_EXT_CUDA_FUSED_MLP"]
    return bad


def main() -> int:
    bad = layers()
    print("cuda_smoke [layers]:", "ok" if bad == 0 else f"{bad} mismatches")
    fused_bad = fused_mlp()
    print("cuda_smoke [fused_mlp]:", "ok" if fused_bad == 0 else f"{fused_bad} mismatches")
    return 1 if bad + fused_bad else 0


if __name__ == "__main__":
    sys.exit(main())
