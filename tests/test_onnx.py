"""ONNX export (``torch.onnx.export(..., dynamo=True)`` with README's one extra argument,
``custom_translation_table=twolayer_ext.onnx.translation_table()``) of every public op and
module, run in ONNX Runtime at another batch size than the one exported, against eager.

The table translates the ops to the standard ONNX the plain nn.Linear + nn.ReLU model
exports to; torch.export keeps the ops (tests/test_export.py).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import twolayer_ext
from twolayer_ext import LinearReLU, ReLU, TwoLayerNet, fuse_modules

onnx = pytest.importorskip("onnx", reason="needs onnx (pip install onnx onnxscript onnxruntime)")
pytest.importorskip("onnxscript", reason="needs onnxscript (the dynamo exporter's ONNX builder)")
ort = pytest.importorskip("onnxruntime", reason="needs onnxruntime to run the exported model")

D_IN, H, D_OUT = 12, 20, 5
EXPORT_ROWS, RUN_ROWS = 6, 11
OPS = torch.ops.twolayer_ext


class Call(nn.Module):
    """A module whose forward calls fn with its parameters (nn.Linear's layouts)."""

    def __init__(self, fn, bias: bool = True) -> None:
        super().__init__()
        self.fn = fn
        self.l1 = nn.Linear(D_IN, H, bias=bias)
        self.l2 = nn.Linear(H, D_OUT, bias=bias)

    def forward(self, x: torch.Tensor):
        return self.fn(self, x)


def _network(m, x):
    return m.l1.weight, m.l1.bias, m.l2.weight, m.l2.bias


MODELS = {
    "linear_relu": lambda: Call(lambda m, x: twolayer_ext.linear_relu(x, m.l1.weight, m.l1.bias)),
    "linear_relu op (y, mask)": lambda: Call(
        lambda m, x: OPS.linear_relu(x, m.l1.weight, m.l1.bias)
    ),
    "linear_relu_output": lambda: Call(
        lambda m, x: OPS.linear_relu_output(x, m.l1.weight, m.l1.bias)
    ),
    "relu": lambda: Call(lambda m, x: twolayer_ext.relu(x)),
    "two_layer": lambda: Call(lambda m, x: OPS.two_layer(x, *_network(m, x))),
    "two_layer_forward": lambda: Call(lambda m, x: OPS.two_layer_forward(x, *_network(m, x))),
    "two_layer_mlp": lambda: Call(lambda m, x: twolayer_ext.two_layer_mlp(x, *_network(m, x))),
    "two_layer_mlp without bias": lambda: Call(
        lambda m, x: twolayer_ext.two_layer_mlp(x, *_network(m, x)), bias=False
    ),
    "LinearReLU": lambda: LinearReLU(D_IN, H),
    "LinearReLU + Linear": lambda: nn.Sequential(LinearReLU(D_IN, H), nn.Linear(H, D_OUT)),
    "ReLU": lambda: ReLU(),
    "TwoLayerNet": lambda: TwoLayerNet(D_IN, H, D_OUT),
    "TwoLayerNet without bias": lambda: TwoLayerNet(D_IN, H, D_OUT, bias=False),
    "fuse_modules": lambda: fuse_modules(
        nn.Sequential(nn.Linear(D_IN, H), nn.ReLU(), nn.Linear(H, D_OUT), nn.ReLU())
    ),
}


def export(model: nn.Module, dtype: torch.dtype):
    model = model.to(dtype).eval()
    x = torch.randn(EXPORT_ROWS, D_IN, dtype=dtype)
    batch = torch.export.Dim("batch")
    program = torch.onnx.export(
        model,
        (x,),
        dynamo=True,
        dynamic_shapes=({0: batch},),
        custom_translation_table=twolayer_ext.onnx.translation_table(),
    )
    return model, program.model_proto


def run(proto, x: torch.Tensor) -> list:
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x.numpy()})


def outputs(result) -> list[torch.Tensor]:
    return list(result) if isinstance(result, tuple) else [result]


@pytest.mark.parametrize("name", MODELS)
def test_exports_to_standard_onnx_and_runs_in_onnxruntime(name):
    model, proto = export(MODELS[name](), torch.float32)
    domains = {node.domain for node in proto.graph.node}
    assert domains <= {"", "ai.onnx"}, domains  # standard ONNX only
    ops = {node.op_type for node in proto.graph.node}
    assert "Relu" in ops or "Max" in ops, ops
    x = torch.randn(RUN_ROWS, D_IN)  # another batch size than the exported one
    with torch.no_grad():
        want = outputs(model(x))
    got = run(proto, x)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        g = torch.from_numpy(g)
        assert g.shape == w.shape and g.dtype == w.dtype
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(EXPORT_ROWS, D_IN), (2, EXPORT_ROWS, D_IN)])
def test_the_graph_is_the_plain_models(shape):
    net = TwoLayerNet(D_IN, H, D_OUT).eval()
    plain = nn.Sequential(nn.Linear(D_IN, H), nn.ReLU(), nn.Linear(H, D_OUT)).eval()
    x = torch.randn(shape)
    table = twolayer_ext.onnx.translation_table()
    ours = torch.onnx.export(net, (x,), dynamo=True, custom_translation_table=table)
    theirs = torch.onnx.export(plain, (x,), dynamo=True)
    assert [n.op_type for n in ours.model_proto.graph.node] == [
        n.op_type for n in theirs.model_proto.graph.node
    ]
    got = run(ours.model_proto, x)[0]
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(got), net(x), rtol=1e-5, atol=1e-5)


def test_mask_matches_the_kernel_where_relu_sees_zeros_and_nans():
    """linear_relu's packed mask in ONNX: bit set where y > 0 or NaN, as the kernel's."""
    model = MODELS["linear_relu op (y, mask)"]().eval()
    with torch.no_grad():
        model.l1.weight[:3] = 0.0  # y = relu(bias) there
        model.l1.bias[:3] = torch.tensor([0.0, -1.0, float("nan")])
    _, proto = export(model, torch.float32)
    x = torch.randn(RUN_ROWS, D_IN)
    x[0, 0] = float("nan")  # a whole row of NaN outputs
    y, mask = run(proto, x)
    want_y, want_mask = model(x)
    assert mask.dtype == want_mask.numpy().dtype
    assert torch.equal(torch.from_numpy(mask), want_mask)
    torch.testing.assert_close(torch.from_numpy(y), want_y.detach(), equal_nan=True)


def test_without_the_table_the_exporter_names_the_op():
    """The exporter does not find the ops by itself (twolayer_ext/onnx.py says why)."""
    x = torch.randn(EXPORT_ROWS, D_IN)
    with pytest.raises(Exception, match="twolayer_ext.two_layer"):
        torch.onnx.export(TwoLayerNet(D_IN, H, D_OUT).eval(), (x,), dynamo=True)


@pytest.mark.parametrize("name", ["TwoLayerNet", "LinearReLU + Linear"])
def test_float16(name):
    model, proto = export(MODELS[name](), torch.float16)
    x = torch.randn(RUN_ROWS, D_IN, dtype=torch.float16)
    try:
        got = torch.from_numpy(run(proto, x)[0])
    except Exception as error:  # ONNX Runtime's CPU provider lacks some float16 kernels
        if "NOT_IMPLEMENTED" not in str(error):
            raise
        pytest.skip(f"ONNX Runtime's CPU provider has no float16 kernel here: {error}")
    with torch.no_grad():
        want = model(x)
    assert got.dtype == torch.float16
    torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3)


TRAINING = {
    "twolayer_ext::relu_backward": lambda m, x: OPS.relu_backward(x, torch.relu(x)),
    "twolayer_ext::two_layer_backward": lambda m, x: OPS.two_layer_backward(
        torch.ones(x.shape[0], D_OUT),
        x,
        m.l1.weight,
        m.l2.weight,
        torch.relu(x @ m.l1.weight.t()),
        [True] * 5,
    ),
    "twolayer_ext::two_layer_sgd_step": lambda m, x: twolayer_ext.two_layer_sgd_step(
        x, torch.zeros(x.shape[0], D_OUT), *_network(m, x), 1e-3
    ),
}


@pytest.mark.parametrize("op", TRAINING)
def test_training_ops_are_refused_by_name(op):
    x = torch.randn(EXPORT_ROWS, D_IN)
    with pytest.raises(Exception, match=f"{op} is a training op and has no ONNX form"):
        torch.onnx.export(
            Call(TRAINING[op]).eval(),
            (x,),
            dynamo=True,
            custom_translation_table=twolayer_ext.onnx.translation_table(),
        )


def test_torch_export_keeps_the_ops():
    """The ONNX translation does not reach torch.export's default decompositions."""
    ep = torch.export.export(TwoLayerNet(D_IN, H, D_OUT), (torch.randn(EXPORT_ROWS, D_IN),))
    targets = {str(n.target) for n in ep.run_decompositions().graph.nodes}
    assert "twolayer_ext.two_layer.default" in targets
