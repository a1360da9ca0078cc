#!/usr/bin/env bash
# Builds the CPU extension with AddressSanitizer + UndefinedBehaviorSanitizer in a scratch copy
# of the tree and runs the CPU test suite under it. Any ASan/UBSan report fails the run.
# Usage: bash scripts/sanitize_cpu.sh [PYTHON]   (PYTHON: an interpreter with torch, pytest)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${1:-${PYTHON:-python3}}
PY=$(command -v "$PY" | xargs realpath -s)  # absolute: the script changes directory below
WORK=$(mktemp -d /tmp/twolayer_asan.XXXXXX)
[ -n "${KEEP_ASAN_BUILD:-}" ] || trap 'rm -rf "$WORK"' EXIT
git -C "$ROOT" ls-files -z | (cd "$ROOT" && xargs -0 cp --parents -t "$WORK")
cd "$WORK"
echo "building with -fsanitize=address,undefined in $WORK"
TWOLAYER_EXT_CUDA=0 TWOLAYER_EXT_SANITIZE=1 "$PY" setup.py -q build_ext --inplace >build.log 2>&1 \
  || { tail -30 build.log; exit 1; }
ASAN_LIB=$(gcc -print-file-name=libasan.so)
UBSAN_LIB=$(gcc -print-file-name=libubsan.so)
# Python itself is not instrumented: preload the runtimes, and skip leak checking (the
# interpreter's own allocations at exit are not ours). halt_on_error makes any report fatal.
export LD_PRELOAD="$ASAN_LIB $UBSAN_LIB"
export ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:abort_on_error=1
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
export PYTHONPATH="$WORK" CUDA_VISIBLE_DEVICES=""
"$PY" -c "import twolayer_ext, sys; f = twolayer_ext._C.__file__; print('testing', f); \
sys.exit(0 if f.startswith('$WORK') else 'the sanitized build was not the one imported')"
# Deselected: compile, export and ONNX export (inductor's, AOTInductor's and ONNX Runtime's
# own code is not instrumented and slow under ASan; Dynamo's tracing of torch.func.jvp
# likewise), distributed and the path switches' and instruction sets' reruns (subprocesses),
# the CLI's process-level bad-argument check (a subprocess that stops before any op runs),
# the 500-step training comparisons (the same kernels as the op tests, many times over),
# gradcheck's slow mode (its marker; every Jacobian entry: the same ops on the same shapes as
# its fast mode, which runs here) and the 10k-call leak test (time).
# --capture=sys: pytest captures Python's streams only, so a report, written to file descriptor 2
# by the runtime, reaches pytest.log even when it ends the process (fd capture would lose it).
"$PY" -m pytest -q -p no:cacheprovider --capture=sys ${ASAN_TESTS:-tests} -x \
  --deselect tests/test_compile.py --deselect tests/test_distributed.py \
  --deselect tests/test_export.py --deselect tests/test_onnx.py \
  --deselect tests/test_switches.py -m "not gradcheck_slow_mode" \
  -k "not no_memory_growth and not process_exits_2_on_a_bad_argument and not compile_of_jvp \
      and not narrower and not 500_steps and not magnitude and not adam_schemes_learn" \
  >pytest.log 2>&1 \
  && status=0 || status=$?
tail -5 pytest.log
if [ "$status" -ne 0 ]; then  # what failed, and the seed to replay it (none when it aborted)
  grep -E "^E |^FAILED|TWOLAYER_TEST_SEED" pytest.log | head -40 || true
fi
if grep -qE "ERROR: AddressSanitizer|runtime error:" pytest.log; then
  # The report itself: with halt_on_error the run stops there and pytest prints no summary.
  grep -E -A12 "ERROR: AddressSanitizer|runtime error:" pytest.log | head -40
  echo "SANITIZER REPORTS FOUND"; exit 1
fi
if [ "$status" -ne 0 ]; then echo "sanitizers: no reports; pytest exited with status $status"
else echo "sanitizers: no reports"; fi
exit "$status"
