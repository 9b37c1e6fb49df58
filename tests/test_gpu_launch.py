"""What the CUDA path hands CuPy, checked without a GPU: launch arguments, device context, first-call lock."""

import contextlib
import sys
import threading
import time
import types

import numpy as np
import pytest

import softpool_nd
from softpool_nd import _dispatch, make_geometry
from softpool_nd.gpu import backend as gpu_backend
from softpool_nd.gpu import cuda, launch
from softpool_nd.gpu.backend import Backend
from softpool_nd.gpu.host import HostLauncher

F32 = np.dtype(np.float32)


class _Recording(HostLauncher):
    """The host emulation, keeping every launch's arguments."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def launch(self, name, grid, args):
        self.calls.append((name, args))
        super().launch(name, grid, args)


def test_gpu_no_launch_argument_is_none():
    """pool() has no lse: the kernel gets an explicit 64-bit zero, never None (CuPy 13 mis-passes None)."""
    rec = _Recording()
    gpu = Backend(rec, np)
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    geom = make_geometry(x.shape, 2)
    y, lse = gpu.forward(x, geom, 1.0, F32, with_lse=False)
    assert lse is None
    y2, lse2 = gpu.forward(x, geom, 1.0, F32)
    gpu.backward(np.ones_like(y2), x, y2, lse2, geom, 1.0, F32, True)
    np.testing.assert_array_equal(y, y2)
    assert len(rec.calls) == 3
    for name, args in rec.calls:
        assert all(a is not None for a in args), name
    null = rec.calls[0][1][2]
    assert isinstance(null, np.uint64) and null == 0


# ---------------------------------------------------------------- device context (issue 15 item 7)


class _Device:
    """Which device is current; the stand-in arrays refuse any work outside their own."""

    current = 0


class _Arr:
    """A device-array stand-in on device 1: NumPy inside, every conversion checks the current device."""

    __module__ = "fakedev.core"

    def __init__(self, a):
        self.a = np.asarray(a)

    shape = property(lambda self: self.a.shape)
    dtype = property(lambda self: self.a.dtype)

    def astype(self, dtype):
        assert _Device.current == 1, "astype outside the input's device"
        return _Arr(self.a.astype(dtype))


def _fake_backend():
    from softpool_nd.cpu import backend as cpu

    def check():
        assert _Device.current == 1, "device work outside the input's device"

    @contextlib.contextmanager
    def device_of(x):
        before, _Device.current = _Device.current, 1
        try:
            yield
        finally:
            _Device.current = before

    def empty(shape, dtype):
        check()
        return _Arr(np.empty(shape, dtype))

    def zeros(shape, dtype):
        check()
        return _Arr(np.zeros(shape, dtype))

    def forward(x, geom, beta, acc_dtype, out=None, with_lse=True):
        check()
        y, lse = cpu.forward(x.a, geom, beta, acc_dtype, None, with_lse)
        return _Arr(y), None if lse is None else _Arr(lse)

    def backward(grad_y, x, y, lse, geom, beta, acc_dtype, exact):
        check()
        return _Arr(cpu.backward(grad_y.a, x.a, y.a, lse.a, geom, beta, acc_dtype, exact))

    return types.SimpleNamespace(
        name="fakedev",
        xp=types.SimpleNamespace(empty=empty, zeros=zeros),
        device_of=device_of,
        forward=forward,
        backward=backward,
    )


@pytest.fixture
def fakedev(monkeypatch):
    monkeypatch.setitem(sys.modules, "fakedev_backend", _fake_backend())
    monkeypatch.setitem(_dispatch._BACKENDS, "fakedev", "fakedev_backend")
    monkeypatch.delitem(_dispatch._LOADED, "fakedev", raising=False)
    yield
    _dispatch._LOADED.pop("fakedev", None)


def test_gpu_all_device_work_inside_the_input_device(fakedev):
    """Integer input casts, grad_y/y/lse casts and empty outputs all happen on x's device."""
    x = np.arange(2 * 3 * 8, dtype=np.int16).reshape(2, 3, 8) % 5
    y = softpool_nd.pool(_Arr(x), 2)  # int16 -> float64 cast
    np.testing.assert_array_equal(y.a, softpool_nd.pool(x, 2))
    xf = x.astype(np.float64)
    yf, lse = softpool_nd.forward(_Arr(xf), 2)
    gy = _Arr(np.ones(yf.shape, np.float32))  # float32 grad_y for float64 x: cast
    g = softpool_nd.backward(gy, _Arr(xf), 2, y=_Arr(yf.a.astype(np.float32)), lse=_Arr(lse.a.astype(np.float32)))
    np.testing.assert_allclose(g.a, softpool_nd.backward(np.ones(yf.shape), xf, 2), rtol=1e-6)
    empty = _Arr(np.zeros((0, 3, 8)))
    assert softpool_nd.pool(empty, 2, axes=2).shape == (0, 3, 4)
    assert softpool_nd.forward(empty, 2, axes=2)[1].shape == (0, 3, 4)
    assert softpool_nd.backward(_Arr(np.zeros((0, 3, 4))), empty, 2, axes=2).shape == (0, 3, 8)
    assert _Device.current == 0


def test_gpu_backend_device_of_is_the_arrays_device():
    x = types.SimpleNamespace(device="the device")
    assert gpu_backend.device_of(x) == "the device"


# ---------------------------------------------------------------- first-call compile (issue 15 item 9)


def test_gpu_first_compile_happens_once_under_concurrency(monkeypatch):
    """Threads racing to the first launch build one launcher and compile each kernel once."""
    built, compiled = [], []

    class SlowModule:
        def get_function(self, name):
            compiled.append(name)
            time.sleep(0.05)  # NVRTC takes seconds: long enough for every thread to arrive
            return lambda grid, block, args: None

    class FakeLauncher(cuda.CupyLauncher):
        def __init__(self):
            built.append(1)
            time.sleep(0.05)
            self._cupy = types.SimpleNamespace(cuda=types.SimpleNamespace(Device=lambda: types.SimpleNamespace(id=0)))
            self._module = SlowModule()
            self._kernels = {}

    monkeypatch.setattr(cuda, "CupyLauncher", FakeLauncher)
    monkeypatch.setattr(cuda, "_LAUNCHER", [])
    errors = []

    def first_call():
        try:
            cuda.launcher().launch("softpool_forward<float, float, int, 2>", 1, ())
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=first_call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(built) == 1 and compiled == ["softpool_forward<float, float, int, 2>"]


def test_gpu_two_cupy_packages_are_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", types.ModuleType("cupy"))
    monkeypatch.setattr(cuda, "cupy_distributions", lambda: ["cupy-cuda12x", "cupy-cuda13x"])
    monkeypatch.setattr(cuda.require_cupy, "_checked", False, raising=False)
    with pytest.raises(ImportError, match=r"cupy-cuda12x, cupy-cuda13x.*gpu-cuda13"):
        cuda.require_cupy()
    monkeypatch.setattr(cuda, "cupy_distributions", lambda: ["cupy-cuda12x"])
    assert cuda.require_cupy() is sys.modules["cupy"]


def test_gpu_launch_null_is_pointer_width():
    assert launch.NULL.dtype.itemsize == 8 and launch.NULL == 0
