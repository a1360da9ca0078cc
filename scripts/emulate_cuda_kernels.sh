#!/usr/bin/env bash
# Runs CUDA kernels' own source on the CPU (tests/cuda_emulation/: each thread block's
# threads as fibers on one OS thread, WMMA as whole tiles) and checks their results: the
# fused MLP (fused_mlp.cpp) and the passes around cuBLAS (passes.cpp), each twice:
#   1. under AddressSanitizer + UBSan: out-of-bounds shared or global memory, and the results
#      against a float64 reference (every variant and dtype). ASan warns once per run that it
#      does not fully support swapcontext; emu.h tells it of every stack switch, as its fiber
#      API asks;
#   2. under ThreadSanitizer: a barrier missing between one thread's write to shared memory
#      and another's read is a data race there (what compute-sanitizer's racecheck finds);
#      then once more with one barrier left out, where it must report one.
# Not a substitute for scripts/gpu_check.sh (no timing, no real warps, no tensor-core
# rounding). Needs g++ with C++20, the CUDA toolkit's headers and torch's (Python: $1).
# Usage: bash scripts/emulate_cuda_kernels.sh [PYTHON]   (in .ci/run, beside two other lanes,
# about 2 minutes)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-python3}
CUDA_INCLUDE=${CUDA_HOME:-/usr/local/cuda}/include
if [ ! -f "$CUDA_INCLUDE/cuda_fp16.h" ]; then
  echo "emulate_cuda_kernels: no CUDA toolkit headers at $CUDA_INCLUDE (set CUDA_HOME)" >&2
  exit 1
fi
read -r TORCH_INCLUDE TORCH_LIB < <($PY -c "
import os, torch
root = os.path.dirname(torch.__file__)
print(os.path.join(root, 'include'), os.path.join(root, 'lib'))")
OUT=$(mktemp -d /tmp/twolayer_emu.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
build() {  # build SOURCE-NAME SANITIZER-FLAGS
  g++ -std=c++20 -O1 -g1 -Wall -Wno-attributes -Wno-unknown-pragmas $2 \
    -I tests/cuda_emulation -I csrc/cuda -I csrc/include -I "$TORCH_INCLUDE" -I "$CUDA_INCLUDE" \
    "tests/cuda_emulation/$1.cpp" -o "$OUT/$1_${2//[^a-z]/}" \
    -L "$TORCH_LIB" -lc10 -Wl,-rpath,"$TORCH_LIB" -lpthread
}
ASAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"
TSAN="-fsanitize=thread"
export TSAN_OPTIONS="halt_on_error=1 exitcode=66"
# Each kernel file with the __syncthreads that its self-test leaves out (emu.h's
# EMU_DROP_BARRIER): one that orders a write to shared memory before other threads' reads in
# the first case (fused MLP: the simt forward's second, after the input rows are loaded;
# passes: the bias-gradient sums' only one).
for spec in fused_mlp:2 passes:1; do  # two compilers at a time (2 cores)
  kernels=${spec%:*} drop=${spec#*:}
  build $kernels "$ASAN" &
  build $kernels "$TSAN" &
  wait -n
  wait -n
  echo "--- $kernels: AddressSanitizer + UBSan"
  "$OUT/${kernels}_${ASAN//[^a-z]/}" | grep -v ": done$"
  echo "--- $kernels: ThreadSanitizer"
  "$OUT/${kernels}_${TSAN//[^a-z]/}" | grep -v ": done$"
  # The self-test: without that barrier, ThreadSanitizer must report a data race.
  status=0
  EMU_DROP_BARRIER=$drop "$OUT/${kernels}_${TSAN//[^a-z]/}" >"$OUT/selftest.log" 2>&1 || status=$?
  if [ "$status" -ne 66 ] || ! grep -q "ThreadSanitizer: data race" "$OUT/selftest.log"; then
    echo "$kernels: __syncthreads number $drop left out, but no race reported (exit $status)"
    tail -5 "$OUT/selftest.log"
    exit 1
  fi
  echo "--- $kernels: __syncthreads number $drop left out: ThreadSanitizer reports the race"
done
