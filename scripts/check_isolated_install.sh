#!/usr/bin/env bash
# The design card's own command, `pip install .` with build isolation, in a fresh virtual
# environment that already has a torch (2.13.0, the CPU build: another torch than the one
# `make test` uses). It must compile against that torch and import, never report success
# for a package that cannot be imported; the wheel must be the one abi3 wheel
# (cp310-abi3) and pin the torch it was built against. .ci/run runs it once, beside two other
# lanes (about 9 minutes there).
# Usage: bash scripts/check_isolated_install.sh
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/twolayer_isolated.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
python3 -m venv "$WORK/venv"
PY="$WORK/venv/bin/python"
"$PY" -m pip install -q torch==2.13.0 numpy
# A copy of the tracked files: no build/ folder of the checkout can leak into the wheel.
mkdir "$WORK/src"
git -C "$ROOT" ls-files -z | (cd "$ROOT" && xargs -0 cp --parents -t "$WORK/src")
echo "isolated pip install . into a venv with torch $("$PY" -c 'import torch; print(torch.__version__)')"
"$PY" -m pip install -q "$WORK/src" >"$WORK/pip.log" 2>&1 || { tail -30 "$WORK/pip.log"; exit 1; }
cd /
"$PY" - <<'PY'
import importlib.metadata as m

import torch

import twolayer_ext

info = twolayer_ext.build_info()
assert info["torch_built_against"] == torch.__version__, info
wheel = m.distribution("twolayer_ext").read_text("WHEEL")
assert "Tag: cp310-abi3-" in wheel, wheel
pins = [r for r in m.requires("twolayer_ext") if r.startswith("torch")]
assert pins == [f"torch=={m.version('torch')}"], pins
x, w = torch.randn(5, 4), torch.randn(3, 4)
torch.testing.assert_close(twolayer_ext.linear_relu(x, w), torch.relu(x @ w.t()))
print(f"isolated pip install: OK (torch {torch.__version__}, {wheel.split('Tag: ')[1].strip()})")
PY
