"""Model conversion: fuse ``nn.Linear`` → ``nn.ReLU`` pairs into :class:`LinearReLU`.

State-dict keys do not change: the fused layer takes the Linear's place (and its
``weight``/``bias`` names) and the ReLU's slot becomes an ``nn.Identity`` with no
state, so ``model.0.weight`` stays ``model.0.weight``. Checkpoints of the unfused
model load into the fused one as they are (:func:`load_unfused_state_dict`), and
the other way round.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import torch
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


def load_unfused_state_dict(
    model: nn.Module, state_dict: Mapping[str, torch.Tensor], strict: bool = True
) -> Any:
    """Load a checkpoint saved from the unfused model into ``fuse_modules(model)``.

    The key mapping is the identity (see the module docstring), so this is
    ``model.load_state_dict`` with that guarantee spelled out; it returns what
    ``load_state_dict`` returns (missing and unexpected keys).
    """
    return model.load_state_dict(state_dict, strict=strict)
