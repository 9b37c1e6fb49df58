"""softpool_nd.gpu.check end to end with NumPy standing in for CuPy.

On a GPU machine the report compares CUDA with the CPU backend; here the
stand-in routes both sides to the CPU, so this exercises the harness itself
(case generation, layouts, error measure, timing loop, table, verdicts).
"""
import time
import types

import numpy as np
import pytest

import softpool_nd
from softpool_nd.gpu import check


class _Event:
    def record(self):
        self.t = time.perf_counter()

    def synchronize(self):
        pass


def _fake_cupy():
    cuda = types.SimpleNamespace(
        Event=_Event,
        get_elapsed_time=lambda a, b: (b.t - a.t) * 1e3,
        Device=lambda *a: types.SimpleNamespace(id=0),
        runtime=types.SimpleNamespace(getDeviceProperties=lambda i: {"name": b"host stand-in"}),
    )
    return types.SimpleNamespace(
        cuda=cuda, asarray=np.asarray, asnumpy=np.asarray, ascontiguousarray=np.ascontiguousarray,
        zeros=np.zeros, ones_like=np.ones_like, empty_like=np.empty_like,
    )


def test_gpu_check_report_on_host_stand_in(monkeypatch):
    small = [(name, (2, 3) + shape[2:][:-2] + (16, 16), dtype, kw) for name, shape, dtype, kw in check._CASES]
    monkeypatch.setattr(check, "_CASES", small)
    monkeypatch.setattr(check, "_device_copy", lambda dst, src: np.copyto(dst, src))
    monkeypatch.setattr(check, "_torch_cuda", lambda: None)
    text = check._report(_fake_cupy(), quick=True)
    lines = text.splitlines()
    assert lines[0] == "softpool_nd GPU check on host stand-in (quick)"
    # CPU against CPU (layouts change only the summation order): every correctness row passes
    for dt in ("float16", "float32", "float64"):
        row = next(line for line in lines if line.strip().startswith(dt))
        assert row.split()[1] == "10" and float(row.split()[2]) <= check.RTOL[np.dtype(dt)] / 10
        assert row.endswith("PASS")
    assert any("deterministic" in line and line.endswith("PASS") for line in lines)
    for name, *_ in small:
        for phase in ("forward", "backward", "copy"):
            assert sum(line.strip().startswith(f"{name} {phase}") for line in lines) == 1
    assert sum("f16/f32" in line for line in lines) == 2
    assert "PyTorch with CUDA not found" in text
    assert "FAIL" not in text  # a quick run judges correctness only


def test_gpu_check_error_measure():
    a = np.array([1.0, np.inf, np.nan, 2.0])
    assert check._worst(a, a.copy()) == 0.0
    assert check._worst(a, np.array([1.0, -np.inf, np.nan, 2.0])) == np.inf
    assert check._worst(a, np.array([1.0, np.inf, 5.0, 2.0])) == np.inf
    assert check._worst(np.array([1.0, 4.0]), np.array([1.0, 3.0])) == pytest.approx(1 / 3)


def test_gpu_check_random_config_is_varied_and_valid():
    rng = np.random.default_rng(1)
    seen = [check.random_config(rng) for _ in range(200)]
    assert {len(s) for s, _, _ in seen} == {1, 2, 3, 4}
    assert any(kw["padding"] == "same" for _, kw, _ in seen) and any(g.overlapping for *_, g in seen)
    assert any(not g.overlapping for *_, g in seen)
    for s, kw, g in seen:
        assert g.in_shape == s and all(n >= 1 for n in g.out_shape)


@pytest.mark.parametrize("shape,kw", [((2, 3, 9, 8), dict(kernel=3, stride=2, padding=1)), ((1, 2, 4, 6, 6), dict(kernel=2))])
def test_gpu_check_torch_formula_is_softpool(shape, kw):
    """The PyTorch baseline computes the same function (checked with CPU torch)."""
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(2).standard_normal(shape)
    got = check._torch_formula(torch, torch.from_numpy(x), kw, len(shape) - 2).numpy()
    np.testing.assert_allclose(got, softpool_nd.pool(x, **kw), rtol=1e-12)
