"""fuse_modules: Linear→ReLU pairs in nn.Sequential become LinearReLU, outputs unchanged."""

from __future__ import annotations

import torch
from torch import nn

import twolayer_ext


class Wrapper(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Sequential(nn.Linear(12, 12), nn.ReLU(inplace=True))
        self.head = nn.Linear(12, 3)

    def forward(self, x):
        return self.head(self.block(x))


def make_model() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(10, 16),
        nn.ReLU(),
        nn.Sequential(nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 12)),
        nn.ReLU(),  # follows a Sequential, not a Linear: stays
        Wrapper(),
        nn.Linear(3, 3),  # last, no ReLU after it: stays
    )


def test_fuses_nested_pairs_and_keeps_outputs():
    model = make_model()
    x = torch.randn(7, 10)
    before = model(x)
    params_before = dict(model.named_parameters())
    keys_before = list(model.state_dict())
    fused = twolayer_ext.fuse_modules(model)
    assert fused is model
    assert isinstance(fused[0], twolayer_ext.LinearReLU) and isinstance(fused[1], nn.Identity)
    assert isinstance(fused[2][0], twolayer_ext.LinearReLU)
    assert type(fused[2][2]) is nn.Linear and type(fused[3]) is nn.ReLU
    assert isinstance(fused[4].block[0], twolayer_ext.LinearReLU)
    assert type(fused[5]) is nn.Linear
    # Same parameter tensors, same state-dict keys, same outputs.
    for name, p in fused.named_parameters():
        assert p is params_before[name]
    assert list(fused.state_dict()) == keys_before
    assert torch.allclose(fused(x), before, atol=1e-6)


def test_unfused_checkpoint_loads_into_fused_model():
    source = make_model()
    checkpoint = source.state_dict()
    fused = twolayer_ext.fuse_modules(make_model())
    result = fused.load_state_dict(checkpoint)  # the keys do not change: plain load_state_dict
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.randn(4, 10)
    assert torch.allclose(fused(x), source(x), atol=1e-6)


def test_fused_model_trains_like_the_original():
    torch.manual_seed(0)
    ref = make_model().double()
    model = make_model().double()
    model.load_state_dict(ref.state_dict())
    twolayer_ext.fuse_modules(model)
    x, y = torch.randn(32, 10, dtype=torch.float64), torch.randn(32, 3, dtype=torch.float64)
    for m in (ref, model):
        loss = nn.functional.mse_loss(m(x), y)
        loss.backward()
    for (n, a), (_, b) in zip(ref.named_parameters(), model.named_parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-12), n
