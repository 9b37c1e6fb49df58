"""The GPU timing module and benchmarks/gpu_check.py with NumPy standing in for CuPy.

On a GPU machine both time CUDA kernels; here the stand-in routes every call
to the CPU backend, so this exercises the harnesses themselves (queued
timing, traffic and copy ratios, the correctness sweep, the table).
"""

import importlib.util
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

import softpool_nd
from softpool_nd.gpu import check

_SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check_script", _SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Event:
    def record(self):
        self.t = time.perf_counter()

    def synchronize(self):
        pass


def _fake_cupy():
    device = types.SimpleNamespace(id=0, synchronize=lambda: None)
    cuda = types.SimpleNamespace(
        Event=_Event,
        get_elapsed_time=lambda a, b: (b.t - a.t) * 1e3,
        Device=lambda *a: device,
        runtime=types.SimpleNamespace(getDeviceProperties=lambda i: {"name": b"host stand-in"}),
    )
    return types.SimpleNamespace(
        cuda=cuda,
        asarray=np.asarray,
        asnumpy=np.asarray,
        ascontiguousarray=np.ascontiguousarray,
        zeros=np.zeros,
        ones_like=np.ones_like,
        empty_like=np.empty_like,
        multiply=np.multiply,
    )


def test_gpu_check_queued_counts_every_call():
    calls = []
    gpu, host = check.queued(_fake_cupy(), lambda: calls.append(1), 25)
    assert len(calls) == 25 and gpu >= 0 and host >= 0


def test_gpu_check_table_on_host_stand_in(monkeypatch):
    small = [(name, (2, 3, 16, 16), dt, kw, cl) for name, _, dt, kw, cl in check.CASES]
    monkeypatch.setattr(check, "CASES", small)
    monkeypatch.setattr(check, "device_copy", lambda dst, src: np.copyto(dst, src))
    text = check.table(_fake_cupy(), quick=True)
    lines = text.splitlines()
    assert lines[0].startswith("softpool_nd GPU timing on host stand-in (quick)")
    for name, *_ in small:
        for phase in ("forward", "backward", "copy"):
            assert sum(line.startswith(f"{name:24} {phase}") for line in lines) == 1
    copy_rows = [line for line in lines if " copy " in line]
    assert all(float(line.split()[-1]) == 100.0 for line in copy_rows)
    for call in ("pool", "forward", "backward", "cupy multiply"):
        assert sum(line.startswith(call + " ") for line in lines) == 1
    assert "FAIL" not in text and "PASS" not in text  # the library measures; benchmarks/ judges


def test_gpu_check_script_correctness_sweep_on_stand_in(monkeypatch, gpu_check):
    monkeypatch.setitem(sys.modules, "cupy", _fake_cupy())
    rows = gpu_check.step_correctness(quick=True)
    assert [r[0] for r in rows] == ["correctness vs CPU"] * 6  # per dtype, determinism, out=, overflows
    assert all(r[4] == "PASS" for r in rows), rows  # CPU against CPU: layouts only change the summation order
    assert rows[0][1] == "float16, 14 cases"


def test_gpu_check_script_error_measure(gpu_check):
    a = np.array([1.0, np.inf, np.nan, 2.0])
    assert gpu_check._worst(a, a.copy()) == 0.0
    assert gpu_check._worst(a, np.array([1.0, -np.inf, np.nan, 2.0])) == np.inf
    assert gpu_check._worst(a, np.array([1.0, np.inf, 5.0, 2.0])) == np.inf
    assert gpu_check._worst(np.array([1.0, 4.0]), np.array([1.0, 3.0])) == pytest.approx(1 / 3)


def test_gpu_check_script_table_and_limits(gpu_check):
    text = gpu_check._table([("bandwidth", "f32 NCHW k2 forward", "81.0%", ">= 80%", "PASS")], "title")
    assert text.splitlines()[0] == "title" and text.splitlines()[-1].split()[-1] == "PASS"
    assert sum(gpu_check.LIMITS.values()) < 8 * 60
    assert set(gpu_check.LIMITS) == set(gpu_check.STEPS)


@pytest.mark.parametrize(
    "shape,kw", [((2, 3, 9, 8), dict(kernel=3, stride=2, padding=1)), ((1, 2, 6, 6), dict(kernel=2))]
)
def test_gpu_check_torch_formula_is_softpool(gpu_check, shape, kw):
    """The PyTorch baseline computes the same function (checked with CPU torch)."""
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(2).standard_normal(shape)
    got = gpu_check.torch_formula(torch, torch.from_numpy(x), kw, len(shape) - 2).numpy()
    np.testing.assert_allclose(got, softpool_nd.pool(x, **kw), rtol=1e-12)


def _alive(pid):
    status = Path(f"/proc/{pid}/status")
    return status.exists() and "\nState:\tZ" not in status.read_text()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc")
def test_gpu_check_step_past_its_limit_is_killed_with_its_children(gpu_check, tmp_path):
    """A step that hangs (say pytest inside the pytest step) must not live on into the next steps."""
    pid_file = tmp_path / "grandchild"
    child = (
        "import subprocess, sys, time; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); "
        f"open({str(pid_file)!r}, 'w').write(str(p.pid)); print('started', flush=True); time.sleep(120)"
    )
    t0 = time.perf_counter()
    rc, out, _ = gpu_check._run([sys.executable, "-c", child], 5)
    assert rc is None and "started" in out and time.perf_counter() - t0 < 60
    grandchild = int(pid_file.read_text())
    for _ in range(50):  # SIGKILL is delivered asynchronously
        if not _alive(grandchild):
            break
        time.sleep(0.1)
    assert not _alive(grandchild)
    assert gpu_check._run([sys.executable, "-c", "print('ok')"], 30) == (0, "ok\n", "")


def test_gpu_check_compile_step_warms_every_cpu_call_of_the_sweep(monkeypatch, gpu_check):
    """The compile step's CPU worker makes every CPU call the correctness step makes, once."""
    seen = []
    monkeypatch.setattr(gpu_check, "_on_cpu", lambda x, gy, dx, beta, kw: seen.append((x.tobytes(), beta, repr(kw))))
    gpu_check._warm_cpu(quick=True)
    cases = [(x.tobytes(), beta, repr(kw)) for _, _, kw, beta, x, *_ in gpu_check._sweep(quick=True)]
    cases += [(x.tobytes(), beta, repr(kw)) for _, kw, beta, x, _ in gpu_check._overflows()]
    assert sorted(seen) == sorted(cases) and len(cases) == 40 + 6 * 5  # test_numerics: 6 cases x 5 overflows
    assert list(gpu_check.STEPS)[0] == "compile"  # before any step that would compile on first use
