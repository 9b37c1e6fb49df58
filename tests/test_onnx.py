"""ONNX export of SoftPool modules: standard ONNX ops only, run in onnxruntime, against softpool_nd.

One model holds every geometry (1-D, 2-D, 3-D modules, padding ints, pairs and
'same', dilation, ceil_mode, betas of both signs and 0, random configurations
of tests/configs.py), so that each exporter runs once. The dynamo exporter
gets a dynamic batch and dynamic pooled lengths; the legacy exporter (a
trace, in which Python arithmetic on lengths is frozen) a dynamic batch.
"""

import io
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

import softpool_nd
from softpool_nd.torch import SoftPool1d, SoftPool2d, SoftPool3d, SoftPoolNd

from configs import random_config

# (module, input shape at export, the same pooling as softpool_nd.pool keyword arguments)
CASES = [
    (SoftPool1d(3, 2, padding=1, ceil_mode=True), (2, 3, 11), dict(kernel=3, stride=2, padding=1, ceil_mode=True)),
    (
        SoftPoolNd((2,), 1, ((1, 0),), dilation=2, axes=2, beta=-0.5),
        (2, 3, 9),
        dict(kernel=(2,), stride=1, padding=((1, 0),), dilation=2, axes=2, beta=-0.5),
    ),
    (SoftPool2d(2), (2, 3, 8, 8), dict(kernel=2)),
    (SoftPool2d(3, 2, padding=1, beta=3.0), (2, 3, 9, 10), dict(kernel=3, stride=2, padding=1, beta=3.0)),
    (
        SoftPoolNd((3, 2), (2, 1), "same", axes=(2, 3)),
        (2, 3, 7, 6),
        dict(kernel=(3, 2), stride=(2, 1), padding="same", axes=(2, 3)),
    ),
    (
        SoftPoolNd((2, 3), padding=((0, 1), (2, 1)), dilation=(2, 1), ceil_mode=True, beta=0.0, axes=(2, 3)),
        (2, 3, 9, 8),
        dict(kernel=(2, 3), padding=((0, 1), (2, 1)), dilation=(2, 1), ceil_mode=True, beta=0.0, axes=(2, 3)),
    ),
    (SoftPoolNd(2, axes=(1, 3)), (2, 4, 5, 6), dict(kernel=2, axes=(1, 3))),
    (SoftPool3d(2), (2, 2, 4, 6, 6), dict(kernel=2)),
    (
        SoftPool3d(3, 2, padding=1, dilation=(1, 2, 1), ceil_mode=True, beta=-1.5),
        (2, 2, 5, 7, 6),
        dict(kernel=3, stride=2, padding=1, dilation=(1, 2, 1), ceil_mode=True, beta=-1.5),
    ),
    (
        SoftPoolNd((2, 3, 2), (1, 2, 2), "same", axes=(2, 3, 4)),
        (2, 2, 4, 5, 5),
        dict(kernel=(2, 3, 2), stride=(1, 2, 2), padding="same", axes=(2, 3, 4)),
    ),
]


def _random_cases(n, seed=17):
    """Random configurations of rank 2-4 with a leading batch axis that is never pooled."""
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        shape, kw = random_config(rng, max_rank=3, max_cells=200)
        kw["beta"] = float(rng.choice([1.0, 2.0, -0.5, 0.0]))
        axes = kw.pop("axes", None)
        rank = len(shape)
        pooled = range(rank - len(kw["kernel"]), rank) if axes is None else [a % rank for a in axes]
        kw["axes"] = tuple(a + 1 for a in pooled)
        out.append((SoftPoolNd(**kw), (2,) + shape, kw))
    return out


ALL = CASES + _random_cases(4)
# the dynamo export (~50 ms per graph node in torch's decompositions, and a node per shape computation) gets
# every geometry parameter with fewer window offsets
DYNAMIC = [CASES[i] for i in (0, 1, 4, 5, 6, 7)] + [
    (
        SoftPoolNd((2, 1, 2), (1, 2, 2), padding=((1, 0), 0, 1), dilation=(2, 1, 1), ceil_mode=True, beta=-1.5),
        (2, 2, 5, 6, 7),
        dict(kernel=(2, 1, 2), stride=(1, 2, 2), padding=((1, 0), 0, 1), dilation=(2, 1, 1), ceil_mode=True, beta=-1.5),
    ),
]


class _Many(torch.nn.Module):
    def __init__(self, cases):
        super().__init__()
        self.pools = torch.nn.ModuleList([m for m, _, _ in cases])

    def forward(self, *xs):
        return tuple(m(x) for m, x in zip(self.pools, xs))


def _inputs(shapes, seed):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(np.float32) for shape in shapes]


def _check_standard_ops(model):
    assert {o.domain for o in model.opset_import} <= {"", "ai.onnx"}
    assert not model.functions
    for node in model.graph.node:
        assert node.domain in ("", "ai.onnx"), (node.domain, node.op_type)


def _pooled_axes(shape, kw):
    """The axes ``kw`` pools in an input of ``shape``, all after the batch axis."""
    return softpool_nd.make_geometry(shape, **{k: v for k, v in kw.items() if k != "beta"}).axes


def _check_against_softpool_nd(model_bytes, cases, grow=(0, 0)):
    """Run at batch sizes 1 and 3 (2 at export), the pooled lengths longer by ``grow`` (one entry per run)."""
    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    for batch, seed, extra in ((1, 0, grow[0]), (3, 1, grow[1])):
        shapes = []
        for _, shape, kw in cases:
            pooled = _pooled_axes(shape, kw)
            shapes.append((batch,) + tuple(n + extra * (a in pooled) for a, n in enumerate(shape) if a))
        xs = _inputs(shapes, seed)
        got = sess.run(None, dict(zip(names, xs)))
        for (_, _, kw), x, y in zip(cases, xs, got):
            np.testing.assert_allclose(y, softpool_nd.pool(x, **kw), rtol=1e-5, atol=1e-5, err_msg=f"{x.shape} {kw}")


def _example(cases):
    return tuple(torch.tensor(x) for x in _inputs([(2,) + shape[1:] for _, shape, _ in cases], 5))


@pytest.mark.slow
def test_dynamo_export_runs_in_onnxruntime_with_dynamic_batch_and_pooled_lengths():
    """Every geometry parameter, 1-D, 2-D and 3-D; all cases and random configurations go to the legacy exporter.

    Exported once; run with the pooled lengths 1 and 5 cells longer (every
    residue modulo the strides 1-2 of 'same' and ceil_mode), batch 1 and 3.
    """
    batch = torch.export.Dim("batch", min=1, max=64)
    dynamic = tuple(
        {0: batch, **{a: torch.export.Dim(f"len{i}_{a}", min=4, max=512) for a in _pooled_axes(shape, kw)}}
        for i, (_, shape, kw) in enumerate(DYNAMIC)
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(_Many(DYNAMIC).eval(), _example(DYNAMIC), dynamo=True, dynamic_shapes=(dynamic,))
    model = program.model_proto
    _check_standard_ops(model)
    # the pooled outputs' lengths are symbolic in the graph, not numbers fixed at export
    for out, (_, shape, kw) in zip(model.graph.output, DYNAMIC):
        dims = out.type.tensor_type.shape.dim
        assert all(dims[a].dim_param and not dims[a].dim_value for a in _pooled_axes(shape, kw)), (kw, dims)
    _check_against_softpool_nd(model.SerializeToString(), DYNAMIC, grow=(1, 5))


def test_legacy_export_runs_in_onnxruntime_with_a_dynamic_batch():
    f = io.BytesIO()
    names = [f"x{i}" for i in range(len(ALL))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Many(ALL).eval(),
            _example(ALL),
            f,
            dynamo=False,
            input_names=names,
            dynamic_axes={n: {0: "batch"} for n in names},
        )
    model = onnx.load_from_string(f.getvalue())
    _check_standard_ops(model)
    _check_against_softpool_nd(f.getvalue(), ALL)


def test_export_leaves_the_eager_module_on_the_kernels():
    """The switch to the decomposition lasts only while torch.onnx.export runs."""
    m = SoftPool2d(2)
    x = torch.randn(1, 2, 4, 4)
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(m, (x,), f, dynamo=False)
    assert not torch.onnx.is_in_onnx_export()
    # the custom op again (softpool_nd::pool: no gradient to keep), not the decomposition
    assert "softpool_nd::pool" in str(torch.jit.trace(m, (x,)).graph)
