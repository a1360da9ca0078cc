"""twolayer_ext: fused Linear+ReLU forward and backward kernels for PyTorch.

Importing the package loads the compiled operators into ``torch.ops.twolayer_ext`` (with
their kernels and autograd) and registers their fake and autocast kernels. The public API:

* functions: :func:`linear_relu`, :func:`relu`, :func:`two_layer_mlp`, and
  :func:`two_layer_sgd_step` (a whole training step in one op call)
* autograd Functions: :class:`LinearReLUFunction`, :class:`ReLUFunction`,
  :class:`TwoLayerMLPFunction`
* modules: :class:`LinearReLU`, :class:`ReLU`
* the tutorial's network: :class:`TwoLayerNet` and its state-dict converters
* model conversion: :func:`fuse_modules`
* :func:`build_info` describes what the extension was compiled with.
* :func:`twolayer_ext.onnx.translation_table` is ``torch.onnx.export``'s
  ``custom_translation_table`` for the ops.
"""

from ._loader import load_extension
from ._version import __version__

load_extension()

from . import onnx as onnx
from . import ops
from .autograd import LinearReLUFunction, ReLUFunction, TwoLayerMLPFunction
from .functional import linear_relu, relu, two_layer_mlp, two_layer_sgd_step
from .fusion import fuse_modules
from .info import build_info
from .models import (
    TwoLayerNet,
    sequential_state_dict_to_twolayer,
    twolayer_state_dict_to_sequential,
)
from .nn import LinearReLU, ReLU

__all__ = [
    "LinearReLU",
    "LinearReLUFunction",
    "ReLU",
    "ReLUFunction",
    "TwoLayerMLPFunction",
    "TwoLayerNet",
    "__version__",
    "build_info",
    "fuse_modules",
    "linear_relu",
    "onnx",
    "ops",
    "relu",
    "sequential_state_dict_to_twolayer",
    "two_layer_mlp",
    "two_layer_sgd_step",
    "twolayer_state_dict_to_sequential",
]
