"""Preallocated outputs (issue #15 item 8): the GPU backend writes given y, lse, grad_x and dy itself.

softpool_nd.torch hands CUDA calls outputs that torch allocated on its current stream, so that an op
launches kernels only (no CuPy pool allocation, no synchronisation) and CUDA graph capture works.
Here the GPU backend runs on the host emulation with an array namespace that counts every
allocation: with outputs in the result's layout a call allocates nothing and launches one kernel.
The torch CUDA path itself is covered by tests/test_gpu_cuda.py (GPU only).
"""

import types

import numpy as np
import pytest

import softpool_nd
from softpool_nd import _dispatch, make_geometry
from softpool_nd._loops import empty_like_layout
from softpool_nd.gpu.backend import Backend
from softpool_nd.gpu.host import HostLauncher

F32 = np.dtype(np.float32)
_ALLOCATORS = ("empty", "zeros", "ones", "empty_like", "zeros_like", "ascontiguousarray", "array", "copy")


class CountingNumpy:
    """numpy, with every call of an allocating function recorded in ``calls``."""

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        attr = getattr(np, name)
        if name not in _ALLOCATORS:
            return attr

        def counted(*args, **kwargs):
            self.calls.append(name)
            return attr(*args, **kwargs)

        return counted


class RecordingLauncher(HostLauncher):
    """The host emulation, recording the name of every kernel launched."""

    def __init__(self):
        super().__init__()
        self.launched = []

    def launch(self, name, grid, args):
        self.launched.append(name)
        super().launch(name, grid, args)


@pytest.fixture(scope="module")
def launcher():
    return RecordingLauncher()


@pytest.fixture
def gpu(launcher):
    launcher.launched.clear()
    return Backend(launcher, CountingNumpy())


def _case(channels_last):
    x = np.random.default_rng(1).standard_normal((2, 3, 9, 8)).astype(np.float32)
    if channels_last:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    return x, make_geometry(x.shape, 3, 2, padding=1)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("beta", [1.0, 0.0])
def test_gpu_outputs_in_layout_are_written_by_the_kernels(gpu, channels_last, beta):
    x, geom = _case(channels_last)
    y_want, lse_want = gpu.forward(x, geom, beta, F32)
    gy = empty_like_layout(geom.out_shape, x.strides, F32)  # in y's layout, as softpool_nd.torch passes it
    gy[...] = np.random.default_rng(2).standard_normal(geom.out_shape)
    g_want = gpu.backward(gy, x, y_want, lse_want, geom, beta, F32, True)
    dx = np.cos(x)
    dy_want = gpu.jvp(dx, x, y_want, lse_want, geom, beta, F32)
    gpu.xp.calls.clear()
    gpu.launcher.launched.clear()

    y, lse = (empty_like_layout(geom.out_shape, x.strides, dt) for dt in (F32, F32))
    gx = np.empty(x.shape, F32).transpose(1, 0, 2, 3).copy().transpose(1, 0, 2, 3)  # grad_x: any layout
    dy = empty_like_layout(geom.out_shape, x.strides, F32)
    got = gpu.forward(x, geom, beta, F32, y, lse_out=lse)
    assert got[0] is y and got[1] is lse
    assert gpu.backward(gy, x, y, lse, geom, beta, F32, True, out=gx) is gx
    assert gpu.jvp(dx, x, y, lse, geom, beta, F32, out=dy) is dy
    assert gpu.xp.calls == []  # nothing allocated: what a torch CUDA op needs for graph capture
    assert [n.split("<")[0] for n in gpu.launcher.launched] == ["softpool_forward", "softpool_backward", "softpool_jvp"]
    for a, b in ((y, y_want), (lse, lse_want), (gx, g_want), (dy, dy_want)):
        np.testing.assert_array_equal(a, b)


def test_gpu_outputs_in_another_layout_are_filled(gpu):
    x, geom = _case(False)
    y_want, lse_want = gpu.forward(x, geom, 1.0, F32)
    y = np.empty(geom.out_shape[::-1], F32).T  # reversed axis order: not the kernel's layout
    lse = np.empty(geom.out_shape[::-1], F32).T
    got = gpu.forward(x, geom, 1.0, F32, y, lse_out=lse)
    assert got[0] is y and got[1] is lse
    np.testing.assert_array_equal(y, y_want)
    np.testing.assert_array_equal(lse, lse_want)
    dy = np.empty(geom.out_shape[::-1], F32).T
    assert gpu.jvp(np.ones_like(x), x, y_want, lse_want, geom, 1.0, F32, out=dy) is dy
    np.testing.assert_allclose(dy, 1.0, rtol=1e-5)  # pooling is shift-equivariant


@pytest.fixture
def numpy_on_gpu(gpu, monkeypatch):
    """softpool_nd's public functions send NumPy arrays to the GPU backend (host emulation, counting xp)."""
    module = types.SimpleNamespace(
        name="gpu", xp=gpu.xp, forward=gpu.forward, backward=gpu.backward, jvp=gpu.jvp, takes_out=True
    )
    monkeypatch.setitem(_dispatch._LOADED, "numpy", module)
    return gpu


def test_gpu_outputs_through_the_public_functions(numpy_on_gpu):
    """What softpool_nd.torch calls for CUDA tensors: forward(out=(y, lse)), backward(out=), jvp(out=)."""
    gpu = numpy_on_gpu
    x, geom = _case(True)
    kw = dict(kernel=3, stride=2, padding=1)
    y_want, lse_want = softpool_nd.forward(x, **kw)
    y, lse = (empty_like_layout(geom.out_shape, x.strides, F32) for _ in range(2))
    gy = empty_like_layout(geom.out_shape, x.strides, F32)
    gy[...] = 1.0
    gx = empty_like_layout(x.shape, x.strides, F32)
    dy = empty_like_layout(geom.out_shape, x.strides, F32)
    gpu.xp.calls.clear()
    gpu.launcher.launched.clear()
    got = softpool_nd.forward(x, out=(y, lse), **kw)
    assert got[0] is y and got[1] is lse
    assert softpool_nd.backward(gy, x, y=y, lse=lse, out=gx, **kw) is gx
    assert softpool_nd.jvp(x, x, y=y, lse=lse, out=dy, **kw) is dy
    assert gpu.xp.calls == []
    assert len(gpu.launcher.launched) == 3
    np.testing.assert_array_equal(y, y_want)
    np.testing.assert_array_equal(lse, lse_want)
    np.testing.assert_array_equal(gx, softpool_nd.backward(gy, x, y=y_want, lse=lse_want, **kw))
    np.testing.assert_array_equal(dy, softpool_nd.jvp(x, x, y=y_want, lse=lse_want, **kw))


def test_outputs_on_a_backend_that_does_not_write_them():
    """The CPU backend (no takes_out): the same keywords fill the given arrays by a copy."""
    x = np.random.default_rng(3).standard_normal((2, 7, 6))
    kw = dict(kernel=2, beta=0.5)
    y_want, lse_want = softpool_nd.forward(x, **kw)
    y, lse = np.empty_like(y_want), np.empty_like(lse_want)
    got = softpool_nd.forward(x, out=(y, lse), **kw)
    assert got[0] is y and got[1] is lse
    np.testing.assert_array_equal(y, y_want)
    np.testing.assert_array_equal(lse, lse_want)
    gx = np.empty_like(x)
    assert softpool_nd.backward(np.ones_like(y), x, y=y, lse=lse, out=gx, **kw) is gx
    np.testing.assert_array_equal(gx, softpool_nd.backward(np.ones_like(y), x, y=y, lse=lse, **kw))
    dy = np.empty_like(y)
    assert softpool_nd.jvp(x, np.ones_like(x), y=y, lse=lse, out=dy, **kw) is dy
    np.testing.assert_allclose(dy, 1.0, rtol=1e-12)


@pytest.mark.parametrize(
    "which, bad, match",
    [
        (
            "forward",
            (np.empty((2, 7, 3)), np.empty((2, 7, 3), np.float32)),
            r"out\[1\] has shape \(2, 7, 3\) and dtype float32 but lse",
        ),
        ("forward", (np.empty((2, 7, 4)), np.empty((2, 7, 3))), r"out\[0\] has shape \(2, 7, 4\)"),
        ("backward", np.empty((2, 7, 6), np.float32), r"out has shape \(2, 7, 6\) and dtype float32 but x"),
        ("jvp", np.empty((2, 3, 4)), r"out has shape \(2, 3, 4\) .*input shape \(2, 7, 6\)"),
    ],
)
def test_bad_outputs_name_themselves(which, bad, match):
    x = np.zeros((2, 7, 6))
    with pytest.raises(ValueError, match=match):
        if which == "forward":
            softpool_nd.forward(x, 2, out=bad)
        elif which == "backward":
            softpool_nd.backward(np.zeros((2, 7, 3)), x, 2, out=bad)
        else:
            softpool_nd.jvp(x, x, 2, out=bad)
