"""twolayer_ext: fused Linear+ReLU forward and backward kernels for PyTorch.

Importing the package loads the compiled operators into ``torch.ops.twolayer_ext``
and registers their fake kernels and autograd formulas. The public API:

* functions: :func:`linear_relu`, :func:`relu`
* autograd Functions: :class:`LinearReLUFunction`, :class:`ReLUFunction`
* modules: :class:`LinearReLU`, :class:`ReLU`
* :func:`build_info` describes what the extension was compiled with.
"""

from ._version import __version__
from ._loader import load_extension

load_extension()

from . import ops  # noqa: E402  (fake kernels + autograd registrations)
from .autograd import LinearReLUFunction, ReLUFunction  # noqa: E402
from .functional import linear_relu, relu  # noqa: E402
from .info import build_info  # noqa: E402
from .models import (  # noqa: E402
    TwoLayerNet,
    sequential_state_dict_to_twolayer,
    twolayer_state_dict_to_sequential,
)
from .nn import LinearReLU, ReLU  # noqa: E402

__all__ = [
    "__version__",
    "LinearReLU",
    "LinearReLUFunction",
    "ReLU",
    "ReLUFunction",
    "TwoLayerNet",
    "build_info",
    "linear_relu",
    "ops",
    "relu",
    "sequential_state_dict_to_twolayer",
    "twolayer_state_dict_to_sequential",
]
