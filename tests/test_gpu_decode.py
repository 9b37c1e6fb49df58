"""The CUDA kernels' short decode paths, on the host emulation (softpool.cu through g++).

launch.pack_table marks two kinds of loop-table rows, and every decode
(softpool.cu's sp_window, sp_window_at and the cell-gathering backward)
takes a short path on them:

- ``batch``: an unpooled row (K == 1, S == 1, P == 0): output o's window is
  input cell o, so no clip and no window slot;
- ``whole``: no window of the row reaches past the input (no padding, the
  last window inside), so no clip.

The short paths must give the general path's integers: every kernel's result
is compared bit for bit with the same launch whose masks are cleared, which
forces the general path on every row.
"""

import numpy as np
import pytest

from softpool_nd import make_geometry
from softpool_nd._loops import _is_batch, element_strides, layout_strides, loop_table
from softpool_nd.gpu import launch
from softpool_nd.gpu.backend import Backend
from softpool_nd.gpu.host import HostLauncher

from configs import random_config, random_layout

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
ACC = {F16: F32, F32: F32, F64: F64}

_GEOMETRIES = [
    ((2, 3, 8, 10), dict(kernel=2)),  # NCHW k2: one batch row, both pooled rows whole
    ((2, 9, 10, 5), dict(kernel=2, axes=(1, 2))),  # channels-last: two batch rows
    ((2, 9, 10, 5), dict(kernel=3, stride=2, padding=1, axes=(1, 2))),  # padding: clipped rows beside batch rows
    ((3, 7, 9), dict(kernel=2, ceil_mode=True, axes=(1, 2))),  # ceil_mode: the last window clipped
    ((2, 3, 9), dict(kernel=2)),  # floor mode, odd length: whole, a cell past the last window
    ((2, 5, 6), dict(kernel=(1, 2), stride=(2, 2), axes=(1, 2))),  # K == 1 with S == 2: pooled, not batch
    ((2, 3, 4, 5, 6), dict(kernel=2, dilation=(1, 2, 1), axes=(2, 3, 4))),  # 3-D, dilation
]


def _masks_cleared(monkeypatch):
    pack = launch.pack_table

    def general(tab, shape, index="long long"):
        packed = pack(tab, shape, index)
        packed["batch"] = packed["whole"] = 0
        return packed

    monkeypatch.setattr(launch, "pack_table", general)


def _run(gpu, x, geom, beta, gy, dx):
    acc = ACC[x.dtype]
    y, lse = gpu.forward(x, geom, beta, acc)
    out = [y, lse, gpu.jvp(dx, x, y, lse, geom, beta, acc)]
    for exact in (True, False):
        out.append(gpu.backward(gy, x, y, lse, geom, beta, acc, exact))  # windows kernel where they don't overlap
        cells = np.empty(x.shape, x.dtype, order="F")  # another layout: the cell-gathering kernel
        out.append(gpu.backward(gy, x, y, lse, geom, beta, acc, exact, out=cells))
    return out


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


@pytest.fixture(scope="module", params=[False, True], ids=["int", "long long"])
def gpu(request):
    if request.param:
        return Backend(HostLauncher(block=64, blocks=2, index64=True), np)
    return Backend(HostLauncher(), np)


_RANDOM = [random_config(np.random.default_rng(seed)) for seed in range(24)]


@pytest.mark.parametrize("shape, kw", _GEOMETRIES + _RANDOM, ids=lambda v: str(v))
def test_gpu_decode_short_paths_give_the_general_paths_bits(gpu, monkeypatch, shape, kw):
    rng = np.random.default_rng(len(shape) * 1000 + sum(shape))
    geom = make_geometry(shape, **kw)
    dtype = [F16, F32, F64][sum(shape) % 3]
    x = random_layout(rng, (rng.standard_normal(shape) * 3).astype(dtype))
    gy = random_layout(rng, rng.standard_normal(geom.out_shape).astype(dtype))
    dx = rng.standard_normal(shape).astype(dtype)
    for beta in (1.0, 0.0, -0.7, 1e30):
        fast = _run(gpu, x, geom, beta, gy, dx)
        with monkeypatch.context() as m:
            _masks_cleared(m)
            general = _run(gpu, x, geom, beta, gy, dx)
        for a, b in zip(fast, general):
            np.testing.assert_array_equal(_bits(a), _bits(b), err_msg=f"beta={beta}")


def _table(shape, kw):
    geom = make_geometry(shape, **kw)
    x = np.empty(shape)
    return loop_table(geom, element_strides(x), layout_strides(geom.out_shape, element_strides(x)))


@pytest.mark.parametrize("shape, kw", _GEOMETRIES + _RANDOM, ids=lambda v: str(v))
def test_gpu_decode_masks_are_exact(shape, kw):
    """batch is _loops._is_batch; whole holds exactly where no window of the row needs clipping."""
    tab = _table(shape, kw)
    packed = launch.pack_table(tab, shape)
    for a, row in enumerate(tab):
        n_in, n_out, k, s, d, p = (int(v) for v in row[:6])
        starts = np.arange(n_out) * s - p
        inside = bool((starts >= 0).all() and (starts + (k - 1) * d < n_in).all())
        assert bool(packed["whole"][0] >> a & 1) == inside, (a, row)
        assert bool(packed["batch"][0] >> a & 1) == bool(_is_batch(row)), (a, row)


def test_gpu_decode_common_layouts_take_the_short_paths():
    nchw = launch.pack_table(_table((8, 16, 32, 32), dict(kernel=2)), (8, 16, 32, 32))
    assert int(nchw["batch"][0]) == 0b001 and int(nchw["whole"][0]) == 0b111  # N*C merged; H, W whole
    nhwc = _table((8, 32, 32, 16), dict(kernel=2, axes=(1, 2)))
    packed = launch.pack_table(nhwc, (8, 32, 32, 16))
    assert int(packed["batch"][0]) == 0b1001 and int(packed["whole"][0]) == 0b1111  # N and C batch
