"""In-tree PEP 517 build backend: setuptools' own, with torch pinned to the target's.

A C++ extension works only with the exact torch it was compiled against. With build
isolation (plain ``pip install .``), pip compiles in a fresh environment with whatever
torch it picks there, which need not be the torch of the environment it installs into,
and the result then fails to import. So:

* ``get_requires_for_build_wheel`` asks the target environment (pip runs this hook with
  the target's interpreter, but with the isolated environment on its path) which torch it
  has, and requires exactly that version for the build: the extension is compiled against
  the torch it will run with. Without torch there, any torch will do, and the wheel's
  metadata pins the one it was built with (setup.py), so pip installs that one.
* ``build_wheel`` stops before compiling, naming the command that works, if the torch it
  would compile against is still not the target's.

If pip cannot install that exact torch into the build environment (a local or nightly
build that no index has), it stops before compiling; ``pip install --no-build-isolation .``
then builds against the installed torch.
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys

from setuptools import build_meta as _setuptools
from setuptools.build_meta import *  # every other hook is setuptools' own

_NO_ISOLATION = "pip install --no-build-isolation ."


def _target_torch() -> str | None:
    """The torch version of the environment pip installs into, or None if it has none."""
    # pip's isolation works through PYTHONPATH (a sitecustomize that hides the target's
    # site-packages) and PYTHONNOUSERSITE; the interpreter itself is the target's.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONNOUSERSITE")}
    probe = "import importlib.metadata as m; print(m.version('torch'))"
    run = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=False
    )
    return run.stdout.strip() if run.returncode == 0 and run.stdout.strip() else None


def get_requires_for_build_wheel(config_settings=None):
    # Not setuptools' hook on top: it runs setup.py, which imports torch, not installed yet.
    # pyproject.toml's static requirements (setuptools, wheel, ninja) are installed already.
    target = _target_torch()
    return [f"torch=={target}" if target else "torch"]


def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    target = _target_torch()
    try:  # the distribution's version, as pip sees it (torch.__version__ may add a local tag)
        build = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:  # --no-build-isolation without torch
        raise SystemExit(
            "twolayer_ext: building needs torch in the build environment; install torch first"
        ) from None
    if target is not None and build != target:
        raise SystemExit(
            f"twolayer_ext: this build would compile against torch {build}, but the "
            f"environment it installs into has torch {target}, and a C++ extension only works "
            f"with the torch it was compiled against. Build against the installed torch with "
            f"`{_NO_ISOLATION}`."
        )
    return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)
