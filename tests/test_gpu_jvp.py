"""The CUDA jvp kernel (forward-mode derivative), run by the host emulation.

dy_W = sum_i w_i (1 + beta (x_i - y_W)) dx_i with w_i = exp(beta x_i - lse_W):
checked against that formula in float64 NumPy, against central finite
differences of the float64 oracle, and in the limits of NUMERICS.md.
"""

import itertools

import numpy as np
import pytest

from softpool_nd import make_geometry
from softpool_nd.gpu.backend import Backend
from softpool_nd.gpu.host import HostLauncher

from configs import random_config, random_layout, tolerance
from reference import reference_forward, windows

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
ACC = {F16: F32, F32: F32, F64: F64}


@pytest.fixture(scope="module")
def gpu():
    return Backend(HostLauncher(), np)


def jvp_formula(dx, x, beta, **kw):
    """float64 dy: the weighted sum over each window, or the mean of dx for beta == 0."""
    x, dx = np.asarray(x, np.float64), np.asarray(dx, np.float64)
    y, lse = reference_forward(x, beta=beta, **kw)
    axes, out_shape, cells = windows(x.shape, **kw)
    front = range(x.ndim - len(axes), x.ndim)
    xt, dxt = np.moveaxis(x, axes, front), np.moveaxis(dx, axes, front)
    yt, lt = np.moveaxis(y, axes, front), np.moveaxis(lse, axes, front)
    dy = np.empty_like(yt)
    for o in itertools.product(*(range(out_shape[a]) for a in axes)):
        ix = (Ellipsis,) + np.ix_(*(cells[i][oi] for i, oi in enumerate(o)))
        pick = (Ellipsis,) + o + (None,) * len(axes)
        if beta == 0:
            d = dxt[ix].reshape(dy.shape[: x.ndim - len(axes)] + (-1,)).mean(-1)
        else:
            w = np.exp(beta * xt[ix] - lt[pick])
            d = (w * (1 + beta * (xt[ix] - yt[pick])) * dxt[ix]).sum(axis=tuple(range(-len(axes), 0)))
        dy[(Ellipsis,) + o] = d
    return np.moveaxis(dy, front, axes), y, lse


def _cases(n, seed):
    rng = np.random.default_rng(seed)
    return [(random_config(rng), [F16, F32, F64][i % 3], float(rng.choice([1.0, 0.0, -0.7, 2.5])), i) for i in range(n)]


@pytest.mark.parametrize("case", _cases(30, 41), ids=lambda c: f"{c[0][0]}-{c[1]}-b{c[2]}")
def test_gpu_jvp_matches_float64_formula(gpu, case):
    (shape, kw), dtype, beta, seed = case
    rng = np.random.default_rng(seed)
    geom = make_geometry(shape, **kw)
    x = random_layout(rng, (rng.standard_normal(shape) * 2).astype(dtype))
    dx = random_layout(rng, rng.standard_normal(shape).astype(dtype))
    y, lse = gpu.forward(x, geom, beta, ACC[dtype])
    dy = gpu.jvp(dx, x, y, lse, geom, beta, ACC[dtype])
    assert dy.dtype == dtype and dy.shape == geom.out_shape and dy.strides == y.strides
    expect, _, _ = jvp_formula(dx.astype(np.float64), x.astype(np.float64), beta, **kw)
    rtol = 4 * tolerance(dtype)[0] if dtype != F16 else 2e-2  # float16 y and dx enter the bracket rounded
    scale = max(float(np.abs(expect).max(initial=0.0)), 1.0)
    np.testing.assert_allclose(dy.astype(np.float64), expect, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("beta", [1.0, -1.5, 0.0])
def test_gpu_jvp_is_the_derivative(gpu, beta):
    """Central finite differences of the float64 oracle along dx."""
    rng = np.random.default_rng(5)
    kw = dict(kernel=3, stride=2, padding=1)
    x, dx = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((2, 3, 7, 6))
    geom = make_geometry(x.shape, **kw)
    y, lse = gpu.forward(x, geom, beta, F64)
    dy = gpu.jvp(dx, x, y, lse, geom, beta, F64)
    h = 1e-6
    fd = (reference_forward(x + h * dx, beta=beta, **kw)[0] - reference_forward(x - h * dx, beta=beta, **kw)[0]) / (
        2 * h
    )
    np.testing.assert_allclose(dy, fd, rtol=1e-6, atol=1e-8)


def test_gpu_jvp_overflowing_beta_takes_the_limit(gpu):
    """lse overflows for beta=1e30: weights from the window's maximum, no NaN (NUMERICS.md rule 4)."""
    x = np.array([0.0, 1.0, -1.0, 0.0], np.float32)
    dx = np.array([2.0, 3.0, 5.0, 7.0], np.float32)
    geom = make_geometry(x.shape, 2)
    for beta, expect in ((1e30, [3.0, 7.0]), (-1e30, [2.0, 5.0])):
        y, lse = gpu.forward(x, geom, beta, F32)
        dy = gpu.jvp(dx, x, y, lse, geom, beta, F32)
        np.testing.assert_array_equal(dy, np.array(expect, np.float32))


def test_gpu_jvp_beta_zero_is_the_window_mean_of_real_cells(gpu):
    x = np.zeros((1, 5), np.float32)
    dx = np.arange(1.0, 6.0, dtype=np.float32)[None]
    geom = make_geometry(x.shape, 3, 2, padding=1, axes=1)
    y, lse = gpu.forward(x, geom, 0.0, F32)
    dy = gpu.jvp(dx, x, y, lse, geom, 0.0, F32)
    np.testing.assert_allclose(dy, [[1.5, 3.0, 4.5]], rtol=1e-7)  # padding cells do not count


def test_gpu_jvp_dx_in_another_layout(gpu):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 6, 6, 5)).astype(np.float32).transpose(0, 3, 1, 2)  # channels-last view
    dx = np.ascontiguousarray(rng.standard_normal(x.shape).astype(np.float32))
    geom = make_geometry(x.shape, 2)
    y, lse = gpu.forward(x, geom, 1.0, F32)
    dy = gpu.jvp(dx, x, y, lse, geom, 1.0, F32)
    np.testing.assert_allclose(dy, jvp_formula(dx, x, 1.0, kernel=2)[0], rtol=1e-5, atol=1e-6)
