"""Model conversion: fuse ``nn.Linear`` → ``nn.ReLU`` pairs into :class:`LinearReLU`.

State-dict keys do not change: the fused layer takes the Linear's place (and its
``weight``/``bias`` names) and the ReLU's slot becomes an ``nn.Identity`` with no
state, so ``model.0.weight`` stays ``model.0.weight``. Checkpoints of the unfused
model load into the fused one with plain ``load_state_dict``, and the other way round.
"""

from __future__ import annotations

import itertools

from torch import nn

from .nn import LinearReLU


def fuse_modules(model: nn.Module) -> nn.Module:
    """Fuse, in place, every ``nn.Linear`` immediately followed by ``nn.ReLU`` in an ``nn.Sequential``.

    Nested Sequentials (at any depth, inside any module) are fused too. Each pair
    becomes a :class:`LinearReLU` holding the *same* parameter tensors (so an
    optimizer built on the model keeps working) followed by ``nn.Identity()``.
    Only exact ``nn.Linear``/``nn.ReLU`` instances are fused, not subclasses.

    Returns:
        ``model`` itself, fused; its outputs are unchanged.
    """
    for module in list(model.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        keys = list(module._modules)
        for first, second in itertools.pairwise(keys):
            a, b = module._modules[first], module._modules[second]
            if type(a) is nn.Linear and type(b) is nn.ReLU:
                module._modules[first] = LinearReLU.from_linear(a)
                module._modules[second] = nn.Identity()
    return model
