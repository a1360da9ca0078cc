"""Before and after on one machine: the CLI bench's tutorial-size cases for two builds.

    python scripts/bench_ab.py BASE NEW [--runs 8] [--rounds 25]

BASE and NEW are directories from which ``import twolayer_ext`` loads a build (a source tree
built in place, e.g. ``git worktree add /tmp/base <ref> && cd /tmp/base &&
python setup.py build_ext --inplace``), or ``installed`` for the package installed in this
Python. Each run is one fresh process per build, base and new alternating, that times the
cases with that build's own ``twolayer_ext.bench.cpu`` functions (what ``python -m
twolayer_ext bench`` runs): LinearReLU forward and forward+backward at 64x1000->100 float32,
the tutorial's training step as a drop-in (TwoLayerNet + loss.backward() + SGD) and fused
(``sgd_step``), and the same step on a 1-unit network (its fixed cost). The machine's speed
drifts between processes by tens of percent on a shared 2-core VM, so each case is compared
by its ext/torch time ratio within a run (torch eager being the same in both), medians over
the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = """
import json, torch
from twolayer_ext.bench import cpu as b
results = (
    b.bench_layer(64, 1000, 100, {rounds}, False, torch.float32)
    + b.bench_tutorial_step({rounds}, False)
    + b.bench_tutorial_step({rounds}, False, sizes=b.TINY_NET)
)
# The fused rows of both step sizes share a case name; their keys differ.
print(json.dumps({{r.case if r.key == "layer" else r.key: r.timings_ms for r in results}}))
"""


def run_once(root: str, rounds: int) -> dict[str, dict[str, float]]:
    env = dict(os.environ)
    if root != "installed":
        env["PYTHONPATH"] = os.path.abspath(root)
    out = subprocess.run(
        [sys.executable, "-c", CHILD.format(rounds=rounds)],
        env=env,
        cwd="/",  # not a source checkout, so `installed` finds the installed package
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    result: dict[str, dict[str, float]] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("base")
    parser.add_argument("new")
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args()
    runs: dict[str, list[dict[str, dict[str, float]]]] = {"base": [], "new": []}
    for _ in range(args.runs):
        runs["base"].append(run_once(args.base, args.rounds))
        runs["new"].append(run_once(args.new, args.rounds))
    print(f"{'case':<48}{'base ext/torch':>16}{'new ext/torch':>16}{'new vs base':>13}")
    for case in runs["base"][0]:
        ratio = {
            k: statistics.median(r[case]["ext"] / r[case]["torch"] for r in v)
            for k, v in runs.items()
        }
        change = ratio["new"] / ratio["base"] - 1
        print(f"{case:<48}{ratio['base']:>16.3f}{ratio['new']:>16.3f}{change:>+13.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
