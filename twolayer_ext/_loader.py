"""Loads the compiled extension after checking it matches the running torch.

A C++ extension is tied to the exact torch it was compiled against; loading it
into another torch fails with an undefined-symbol error or worse. We compare
versions first and raise an ImportError that says what to do.
"""

from __future__ import annotations

import importlib

import torch

REBUILD = "pip install --no-build-isolation ."


def load_extension() -> None:
    """Import ``twolayer_ext._C`` (which registers ``torch.ops.twolayer_ext``)."""
    try:
        config = importlib.import_module("twolayer_ext._build_config")
    except ImportError as e:  # source checkout, never built
        raise ImportError(
            "twolayer_ext is not built: no twolayer_ext/_build_config.py. Build and install it "
            f"with `{REBUILD}` (if you are inside the source checkout, run Python from another "
            "directory so the installed package is imported rather than the sources)."
        ) from e
    if config.TORCH_VERSION != torch.__version__:
        raise ImportError(
            f"twolayer_ext was built against torch {config.TORCH_VERSION} but torch "
            f"{torch.__version__} is installed; the compiled extension only works with the torch "
            f"it was built against. Rebuild it against the installed torch with `{REBUILD}`."
        )
    importlib.import_module("twolayer_ext._C")
