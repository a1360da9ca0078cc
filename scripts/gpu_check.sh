#!/usr/bin/env bash
# GPU verification, for a machine with a CUDA GPU and PyTorch already installed:
#   1. builds the extension against the installed torch,
#   2. runs the whole test suite with the CUDA tests enabled,
#   3. runs compute-sanitizer (memcheck; racecheck on the shared-memory kernels: the GEMM and
#      the fused MLP) over a short CUDA run (scripts/cuda_smoke.py),
#   4. prints the register/spill report and the GPU benchmark tables (ops; narrow MLPs).
# Usage: bash scripts/gpu_check.sh [LOG_DIR]   (about 5 minutes on an H100 with 16 cores)
set -uo pipefail
cd "$(dirname "$0")/.."
LOG=${1:-gpu_check_logs}
mkdir -p "$LOG"
LOG=$(cd "$LOG" && pwd)
ROOT=$(pwd)
PY=${PYTHON:-python3}
status=0
step() { echo; echo "=== $* ==="; }

step "environment"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name())"
nvcc --version | tail -2
git rev-parse HEAD 2>/dev/null || true

step "build (pip install --no-build-isolation .)"
TWOLAYER_EXT_CUDA=1 MAX_JOBS=${MAX_JOBS:-16} $PY -m pip install --no-build-isolation --no-deps -v . \
  >"$LOG/build.log" 2>&1 || { tail -50 "$LOG/build.log"; echo "BUILD FAILED"; exit 1; }
(cd /tmp && $PY -c "import twolayer_ext, json; print(json.dumps(twolayer_ext.build_info()))")

step "test suite (CUDA tests enabled)"
# pytest-xdist, where installed, isolates a crashing test instead of losing the whole run.
# 8 workers x 2 OpenMP threads: more threads per worker oversubscribes the CPU badly.
XDIST=""; THREADS=${OMP_NUM_THREADS:-}
$PY -c "import xdist" 2>/dev/null && XDIST="-n 8" && THREADS=2
(cd /tmp && env ${THREADS:+OMP_NUM_THREADS=$THREADS} TWOLAYER_EXT_EXPECT_CUDA=1 $PY -m pytest -q -p no:cacheprovider $XDIST "$ROOT/tests" \
  2>&1 | tee "$LOG/pytest.log" | tail -25) || status=1
grep -E "^(FAILED|ERROR)" "$LOG/pytest.log" | head -40

step "compute-sanitizer"
for tool in memcheck racecheck; do
  (cd /tmp && compute-sanitizer --tool $tool --error-exitcode 9 $PY "$ROOT/scripts/cuda_smoke.py" \
    >"$LOG/sanitizer_$tool.log" 2>&1)
  rc=$?
  echo "$tool: exit $rc; $(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$LOG/sanitizer_$tool.log" | tail -1)"
  [ $rc -eq 0 ] || status=1
done

step "main job on the GPU (train --compare, all schemes)"
(cd /tmp && $PY -m twolayer_ext train --device cuda --compare --every 250 >"$LOG/train_cuda.txt" 2>&1) \
  || { echo "train FAILED"; status=1; }
sed -n '/## final losses/,$p' "$LOG/train_cuda.txt"

step "register / spill report"
bash scripts/cuda_resource_usage.sh | tee "$LOG/resource_usage.txt" | tail -20

step "benchmark"
(cd /tmp && $PY -m twolayer_ext bench --device cuda --json "$LOG/gpu-bench.json") | tee "$LOG/bench.txt"
(cd /tmp && $PY -m twolayer_ext bench --device cuda --suite mlp --rounds 5 \
  --json "$LOG/gpu-mlp-bench.json") | tee "$LOG/bench_mlp.txt"

echo
[ $status -eq 0 ] && echo "GPU CHECK: PASS" || echo "GPU CHECK: FAIL"
exit $status
