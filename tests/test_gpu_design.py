"""The bandwidth design of the CUDA kernels, on the host emulation (softpool.cu through g++).

- the backward for windows that never share a cell walks windows (one thread
  per output, softpool_backward_windows), zeroing the cells in no window;
  its values are those of the cell-gathering kernel, bit for bit;
- the forward (and the backward's rule-4 fallback) takes one pass over a
  window of <= 256 cells with an online maximum, two passes over longer ones.

Every case is compared with the float64 oracle and with the CPU backend, and
the kernel chosen is recorded from the launches.
"""

import numpy as np
import pytest

from softpool_nd import _dtypes, make_geometry
from softpool_nd._loops import loop_table
from softpool_nd.cpu import backend as cpu
from softpool_nd.gpu import launch
from softpool_nd.gpu.backend import Backend
from softpool_nd.gpu.host import HostLauncher

from configs import tolerance
from reference import reference_backward, reference_forward

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
BF16 = _dtypes.bfloat16()
ACC = {F16: F32, F32: F32, F64: F64}
ORACLE_RTOL = {F16: 2e-2, F32: 1e-4, F64: 1e-10}


class Recording(HostLauncher):
    """HostLauncher that records the name of every kernel it runs."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.ran = []

    def launch(self, name, grid, args):
        self.ran.append(name.split("<")[0])
        super().launch(name, grid, args)


@pytest.fixture(scope="module")
def gpu():
    return Backend(Recording(), np)


@pytest.fixture(scope="module")
def gpu64():
    return Backend(Recording(block=64, blocks=2, index64=True), np)


# (shape, pooling arguments, True when the windows reach every cell)
_NON_OVERLAPPING = [
    ((2, 3, 8, 6), dict(kernel=2), True),  # tiling
    ((2, 9, 7), dict(kernel=(3, 1), stride=(3, 1)), True),  # a tiling with a K = 1 axis
    ((2, 3, 11, 10), dict(kernel=2, stride=3), False),  # gaps
    ((1, 2, 13, 12), dict(kernel=2, stride=4, dilation=2), False),  # dilation holes and gaps
    ((1, 2, 9, 10), dict(kernel=3, stride=3, padding=1), False),  # padding: clipped edge windows, a cell past the last
    ((2, 2, 7, 9), dict(kernel=2, ceil_mode=True), True),  # ceil_mode: a clipped last window
    ((1, 2, 8, 11), dict(kernel=3, stride=4, padding=1, ceil_mode=True), False),
    ((1, 2, 7, 9), dict(kernel=2), False),  # floor mode drops the last row and column
    ((2, 3, 4, 5, 6), dict(kernel=2, axes=(-3, -2, -1)), False),  # 3-D windows (W = 4)
    ((1, 2, 20, 20), dict(kernel=20), True),  # 400 cells: two passes in sp_stats
]
_BETAS = [1.0, 0.0, -0.7, 30.0, 1e30, -1e30]


def _ids(case):
    shape, kw, _ = case
    return "x".join(map(str, shape)) + "-" + "-".join(f"{k}{v}" for k, v in kw.items())


def _data(shape, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape) * 3
    x.flat[rng.integers(x.size, size=3)] = x.flat[0]  # ties with the maximiser
    return x.astype(dtype), rng.standard_normal(shape).astype(dtype)


def _other_layout(shape, dtype):
    """A grad_x buffer in Fortran order: the backend takes the cell-gathering kernel for it."""
    return np.zeros(shape, dtype, order="F")


def _backward_both(gpu, x, geom, beta, exact):
    """grad_x by the window kernel and by the gathering kernel, with the names of the kernels run."""
    acc = ACC.get(x.dtype, F32)
    y, lse = gpu.forward(x, geom, beta, acc)
    gy = np.random.default_rng(5).standard_normal(y.shape).astype(x.dtype)
    gpu.launcher.ran.clear()
    by_window = gpu.backward(gy, x, y, lse, geom, beta, acc, exact)
    by_cell = gpu.backward(gy, x, y, lse, geom, beta, acc, exact, out=_other_layout(x.shape, x.dtype))
    return gy, y, lse, by_window, by_cell, list(gpu.launcher.ran)


@pytest.mark.parametrize("case", _NON_OVERLAPPING, ids=_ids)
@pytest.mark.parametrize("dtype", [F16, F32, F64], ids=str)
def test_gpu_design_window_backward_equals_cell_backward(gpu, case, dtype):
    shape, kw, covered = case
    geom = make_geometry(shape, **kw)
    assert not geom.overlapping
    x, _ = _data(shape, dtype, 1)
    for beta in _BETAS:
        for exact in (True, False):
            gy, y, lse, by_window, by_cell, ran = _backward_both(gpu, x, geom, beta, exact)
            assert ran == ["softpool_backward_windows", "softpool_backward"], ran
            np.testing.assert_array_equal(by_window, by_cell, err_msg=f"beta={beta} exact={exact}")
            if not np.isfinite(beta) or abs(beta) > 100:
                continue  # the oracle's exp(beta*x) overflows: the limits are checked against the CPU below
            ref = reference_backward(
                gy.astype(np.float64), x.astype(np.float64), beta=beta, gradient="exact" if exact else "simple", **kw
            )
            rtol = ORACLE_RTOL[dtype] * (10 if abs(beta) > 10 else 1)
            np.testing.assert_allclose(
                by_window.astype(np.float64), ref, rtol=rtol, atol=rtol * max(1.0, np.abs(ref).max())
            )
            if not covered:
                # cells in no window get 0 (the oracle's gradient is 0 there)
                assert np.all(by_window[ref == 0] == 0)


@pytest.mark.parametrize("case", _NON_OVERLAPPING[:5], ids=_ids)
@pytest.mark.parametrize("beta", [1.0, 0.0, 1e30, -1e30])
def test_gpu_design_window_backward_matches_cpu_backend(gpu, case, beta):
    """The limits of huge beta (rule 4's fallback computed once per window) against the CPU kernels."""
    shape, kw, _ = case
    geom = make_geometry(shape, **kw)
    x, gy = _data(shape, F32, 2)
    y, lse = gpu.forward(x, geom, beta, F32)
    gx = gpu.backward(gy[tuple(slice(0, n) for n in y.shape)], x, y, lse, geom, beta, F32, True)
    y_c, lse_c = cpu.forward(x, geom, beta, F32)
    gx_c = cpu.backward(gy[tuple(slice(0, n) for n in y.shape)], x, y_c, lse_c, geom, beta, F32, True)
    rtol = tolerance(F32)[0]
    assert np.array_equal(np.isfinite(gx), np.isfinite(gx_c))
    np.testing.assert_allclose(gx, gx_c, rtol=rtol, atol=rtol * max(1.0, np.abs(gx_c).max()))


def test_gpu_design_window_backward_zeroes_cells_in_no_window(gpu):
    """An out= buffer full of NaN: every cell no window holds is written 0, the others their gradient."""
    x, gy = _data((2, 3, 11, 10), F32, 3)
    geom = make_geometry(x.shape, 2, 3, dilation=1)
    y, lse = gpu.forward(x, geom, 1.0, F32)
    gy = gy[:, :, : y.shape[2], : y.shape[3]].copy()
    out = np.full(x.shape, np.nan, np.float32)
    got = gpu.backward(gy, x, y, lse, geom, 1.0, F32, True, out=out)
    assert got is out and np.isfinite(out).all()
    ref = reference_backward(gy.astype(np.float64), x.astype(np.float64), kernel=2, stride=3)
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    assert (out[:, :, 2::3, :] == 0).all() and (out[:, :, :, 2::3] == 0).all()


def test_gpu_design_window_backward_tiling_writes_every_cell_itself(gpu):
    """A tiling is not pre-zeroed: the kernel must write every cell (NaN-filled out= comes back finite)."""
    x, gy = _data((2, 3, 8, 6), F32, 4)
    geom = make_geometry(x.shape, 2)
    y, lse = gpu.forward(x, geom, -0.7, F32)
    out = np.full(x.shape, np.nan, np.float32)
    gpu.backward(gy[:, :, :4, :3].copy(), x, y, lse, geom, -0.7, F32, True, out=out)
    assert np.isfinite(out).all()


def test_gpu_design_window_backward_64bit_index_and_grid_stride(gpu64):
    shape, kw, _ = _NON_OVERLAPPING[3]
    geom = make_geometry(shape, **kw)
    x, _ = _data(shape, F64, 6)
    for beta in (1.0, 0.0, 1e30):
        gy, y, lse, by_window, by_cell, ran = _backward_both(gpu64, x, geom, beta, True)
        assert ran == ["softpool_backward_windows", "softpool_backward"]
        np.testing.assert_array_equal(by_window, by_cell)


def test_gpu_design_overlapping_windows_gather_per_cell(gpu):
    x, _ = _data((1, 2, 9, 9), F32, 7)
    geom = make_geometry(x.shape, 3, 2)
    assert geom.overlapping
    gy, y, lse, by_window, by_cell, ran = _backward_both(gpu, x, geom, 1.0, True)
    assert ran == ["softpool_backward", "softpool_backward"]
    np.testing.assert_array_equal(by_window, by_cell)


def test_gpu_design_window_backward_bfloat16(gpu):
    if BF16 is None:
        pytest.skip("ml_dtypes is not installed")
    shape, kw, _ = _NON_OVERLAPPING[4]
    geom = make_geometry(shape, **kw)
    x, _ = _data(shape, BF16, 8)
    for beta in (1.0, 0.0, -1e30):
        gy, y, lse, by_window, by_cell, ran = _backward_both(gpu, x, geom, beta, True)
        assert ran == ["softpool_backward_windows", "softpool_backward"]
        np.testing.assert_array_equal(by_window.view(np.uint16), by_cell.view(np.uint16))


def _forward_cases():
    """Windows whose maximiser changes at every cell, never, or through infinities and NaN."""
    fmax = float(np.finfo(np.float32).max)
    ramp = np.arange(16.0)
    return [
        ("ascending", ramp),
        ("descending", ramp[::-1].copy()),
        ("zigzag", np.array([0, 5, 1, 6, 2, 7, 3, 8, -1, 9, -2, 10, 4, 4, 11, 11.0])),
        ("neg-inf-first", np.r_[-np.inf, ramp[1:]]),
        ("pos-inf-late", np.r_[ramp[:10], np.inf, ramp[11:]]),
        ("inf-both", np.r_[np.inf, -np.inf, ramp[2:]]),
        ("nan-first", np.r_[np.nan, ramp[1:]]),
        ("nan-last", np.r_[ramp[:15], np.nan]),
        ("fmax-overflow", np.array([-fmax, fmax, 0, -fmax] * 4)),
        ("ties", np.full(16, 3.0)),
    ]


@pytest.mark.parametrize("name, values", _forward_cases(), ids=[c[0] for c in _forward_cases()])
@pytest.mark.parametrize("dtype", [F16, F32, F64], ids=str)
def test_gpu_design_online_forward_matches_cpu_backend(gpu, name, values, dtype):
    """One pass with an online maximum gives the two-pass kernels' results (the CPU backend) and the oracle's."""
    with np.errstate(over="ignore", invalid="ignore"):
        x = np.stack([values, values[::-1]]).astype(dtype)
    for kernel in (16, 4):  # one 16-cell window per row; 4-cell windows
        geom = make_geometry(x.shape, kernel, axes=(-1,))
        for beta in (1.0, -1.0, 0.0, 1e-39 if dtype != F16 else 1e-7, 30.0, 1e30, -1e30):
            y, lse = gpu.forward(x, geom, beta, ACC[dtype])
            y_c, lse_c = cpu.forward(x, geom, beta, ACC[dtype])
            what = f"{name} beta={beta} kernel={kernel}"
            for a, b in ((y, y_c), (lse, lse_c)):
                a64, b64 = a.astype(np.float64), b.astype(np.float64)
                assert np.array_equal(np.isnan(a64), np.isnan(b64)), what
                fin = np.isfinite(b64)
                assert np.array_equal(a64[~fin & ~np.isnan(b64)], b64[~fin & ~np.isnan(b64)]), what
                rtol = tolerance(dtype)[0]
                np.testing.assert_allclose(a64[fin], b64[fin], rtol=rtol, atol=rtol * 16, err_msg=what)
            if np.isfinite(x.astype(np.float64)).all() and abs(beta) <= 30 and "fmax" not in name:
                y_r, lse_r = reference_forward(x.astype(np.float64), beta=beta, kernel=kernel, axes=(-1,))
                np.testing.assert_allclose(y, y_r, rtol=ORACLE_RTOL[dtype], atol=ORACLE_RTOL[dtype] * 16)


@pytest.mark.parametrize("case", _NON_OVERLAPPING, ids=_ids)
def test_gpu_design_zero_fill_only_where_windows_leave_cells_out(case):
    """launch._covered: the window kernel's pre-zeroing is skipped exactly for geometries that tile x."""
    shape, kw, covered = case
    geom = make_geometry(shape, **kw)
    dense = lambda s: tuple(int(np.prod(s[i + 1 :])) for i in range(len(s)))  # noqa: E731
    assert launch._covered(loop_table(geom, dense(shape), dense(geom.out_shape))) == covered
