#!/usr/bin/env bash
# Registers, shared memory, stack and spills of every CUDA kernel in the installed extension.
# Uses cuobjdump from CUDA_HOME, PATH, or the copy that ships with triton.
set -euo pipefail
PY=${PYTHON:-python3}
so=$(cd /tmp && $PY -c "import twolayer_ext._C as m; print(m.__file__)" 2>/dev/null) || {
  echo "twolayer_ext is not installed"; exit 1; }
tool=""
for c in "${CUDA_HOME:-/usr/local/cuda}/bin/cuobjdump" "$(command -v cuobjdump || true)" \
         "$($PY -c 'import triton, os; print(os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump"))' 2>/dev/null || true)"; do
  if [ -n "$c" ] && [ -x "$c" ]; then tool=$c; break; fi
done
[ -n "$tool" ] || { echo "cuobjdump not found"; exit 1; }
echo "# $so"
"$tool" --dump-resource-usage "$so" | grep -E "Function|REG" | \
  sed -E 's/^\s*Function ([^:]+):/\1/' | paste - - | \
  sed -E 's/\s+Resource usage://' | (command -v c++filt >/dev/null && c++filt || cat)
