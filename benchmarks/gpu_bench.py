"""GPU benchmark: fused linear_relu vs torch (cuBLAS) side by side in one run.

Times with CUDA events, median of repeated runs after warm-up, on random data.
Usage: python benchmarks/gpu_bench.py [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch
import torch.nn.functional as F

import twolayer_ext


def bench(fn, warmup: int = 10, reps: int = 50) -> float:
    """Median milliseconds of fn() on the current stream."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def case(rows: int, in_f: int, out_f: int, dtype: torch.dtype) -> dict:
    x = torch.randn(rows, in_f, device="cuda", dtype=dtype, requires_grad=True)
    w = (torch.randn(out_f, in_f, device="cuda", dtype=dtype) / in_f**0.5).requires_grad_()
    b = torch.randn(out_f, device="cuda", dtype=dtype, requires_grad=True)
    g = torch.randn(rows, out_f, device="cuda", dtype=dtype)

    def ext_fwd():
        with torch.no_grad():
            twolayer_ext.linear_relu(x, w, b)

    def torch_fwd():
        with torch.no_grad():
            F.relu(F.linear(x, w, b))

    def ext_fb():
        torch.autograd.grad(twolayer_ext.linear_relu(x, w, b), (x, w, b), g)

    def torch_fb():
        torch.autograd.grad(F.relu(F.linear(x, w, b)), (x, w, b), g)

    a = torch.randn(rows, in_f, device="cuda", dtype=dtype)
    bt = torch.randn(in_f, out_f, device="cuda", dtype=dtype)
    mm_ms = bench(lambda: torch.mm(a, bt))
    res = {"shape": f"{rows}x{in_f}->{out_f}", "dtype": str(dtype)[6:]}
    # Interleave ext and torch so clock/thermal drift hits both alike.
    res["ext_fwd_ms"], res["torch_fwd_ms"] = bench(ext_fwd), bench(torch_fwd)
    res["ext_fb_ms"], res["torch_fb_ms"] = bench(ext_fb), bench(torch_fb)
    flop = 2 * rows * in_f * out_f
    res["mm_tflops"] = flop / mm_ms / 1e9
    res["ext_fwd_tflops"] = flop / res["ext_fwd_ms"] / 1e9
    res["ext_fb_tflops"] = 3 * flop / res["ext_fb_ms"] / 1e9
    res["fb_speedup_vs_torch"] = res["torch_fb_ms"] / res["ext_fb_ms"]
    res["ext_fwd_frac_of_mm"] = res["ext_fwd_tflops"] / res["mm_tflops"]
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--json", help="write the results to this file")
    args = parser.parse_args()
    cases = [
        (64, 1000, 100, torch.float32),
        (64, 1000, 100, torch.bfloat16),
        (2048, 2048, 2048, torch.float32),
        (8192, 4096, 4096, torch.bfloat16),
        (8192, 4096, 4096, torch.float16),
    ]
    results = [case(*c) for c in cases]
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}")
    hdr = (
        f"{'shape':>18} {'dtype':>9} {'ext fwd':>9} {'torch fwd':>9} {'ext f+b':>9} "
        f"{'torch f+b':>9} {'f+b ratio':>9} {'mm TF/s':>8} {'ext fwd TF/s':>12} {'% of mm':>7}"
    )
    print(hdr)
    for r in results:
        print(
            f"{r['shape']:>18} {r['dtype']:>9} {r['ext_fwd_ms']:9.3f} {r['torch_fwd_ms']:9.3f} "
            f"{r['ext_fb_ms']:9.3f} {r['torch_fb_ms']:9.3f} {r['fb_speedup_vs_torch']:9.2f} "
            f"{r['mm_tflops']:8.1f} {r['ext_fwd_tflops']:12.1f} {100 * r['ext_fwd_frac_of_mm']:6.1f}%"
        )
    print("times in ms (median); f+b ratio = torch time / ext time (>1: ext faster)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
