"""NUMERICS.md rules 2 and 4 in the GPU backward and jvp kernels, run by the host emulation.

The numeric-rule tests of test_numerics.py run as they are, with NumPy arrays
routed to the GPU backend (softpool.cu compiled by g++ through host_shim.h), and the overflowing
cases are also compared with the CPU backend. The beta == 0 backward is checked bit for bit:
grad_y / count, the mean's derivative, not a weight exp(-lse) that rounds differently.
"""

import types

import numpy as np
import pytest
import test_numerics

from softpool_nd import _dispatch, make_geometry
from softpool_nd.cpu import backend as cpu
from softpool_nd.gpu.backend import Backend
from softpool_nd.gpu.host import HostLauncher

DTYPES = test_numerics._HALF_AND_SINGLE + (np.float64,)


@pytest.fixture(scope="module")
def gpu():
    return Backend(HostLauncher(), np)


@pytest.fixture
def on_gpu(gpu, monkeypatch):
    """softpool_nd's public functions send NumPy arrays to the GPU backend for the duration of a test."""
    module = types.SimpleNamespace(name="gpu", xp=np, forward=gpu.forward, backward=gpu.backward, jvp=gpu.jvp)
    monkeypatch.setitem(_dispatch._LOADED, "numpy", module)
    return gpu


def test_gpu_huge_float64_values_and_beta(on_gpu):
    test_numerics.test_huge_float64_values_and_beta_give_the_larger_value()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])  # float16's range is too small to overflow float32
def test_gpu_huge_values_with_a_tiny_beta(on_gpu, dtype):
    test_numerics.test_huge_values_with_a_tiny_beta_do_not_overflow(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gpu_ties_under_an_overflowing_beta(on_gpu, dtype):
    test_numerics.test_ties_under_an_overflowing_beta_share_the_weight(dtype)


@pytest.mark.parametrize("shape, kw", test_numerics._CASES)
@pytest.mark.parametrize("dtype, scale, beta", test_numerics._OVERFLOWS)
def test_gpu_overflowing_products(on_gpu, shape, kw, dtype, scale, beta):
    # the oracle and the limit gradient, as test_numerics checks the CPU backend
    test_numerics.test_overflowing_products_match_the_float64_oracle(shape, kw, dtype, scale, beta)
    # and the CPU backend itself, on the same kind of input
    rng = np.random.default_rng(7)
    x = (rng.normal(size=shape) * scale).astype(dtype)
    x.flat[::7] = 4 * scale * np.sign(beta)
    geom = make_geometry(shape, **kw)
    acc = np.dtype(np.float64 if dtype == np.float64 else np.float32)
    y, lse = on_gpu.forward(x, geom, beta, acc)
    y_c, lse_c = cpu.forward(x, geom, beta, acc)
    np.testing.assert_allclose(y.astype(np.float64), y_c.astype(np.float64), rtol=1e-3)
    gy = rng.normal(size=y.shape).astype(dtype)
    for exact in (True, False):
        g = on_gpu.backward(gy, x, y, lse, geom, beta, acc, exact)
        g_c = cpu.backward(gy, x, y_c, lse_c, geom, beta, acc, exact)
        assert np.all(np.isfinite(g))
        np.testing.assert_allclose(
            g.astype(np.float64), g_c.astype(np.float64), rtol=1e-3, atol=1e-3 * float(np.abs(gy).max())
        )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])  # float16 rounding would hide the difference
@pytest.mark.parametrize(
    "shape, kw",
    [
        ((2, 13), dict(kernel=3, stride=3, padding=1, axes=1)),  # windows never share a cell
        ((2, 13), dict(kernel=3, stride=2, padding=1, axes=1)),  # each cell in at most two windows
        ((3, 7, 6), dict(kernel=(3, 2), stride=(3, 2), padding=(1, 0), axes=(1, 2))),
    ],
)
def test_gpu_beta_zero_backward_is_grad_over_count(gpu, dtype, shape, kw):
    """NUMERICS.md rule 2: grad_x_j = sum of grad_y_W / count_W in the accumulation dtype, bit for bit."""
    rng = np.random.default_rng(11)
    x = rng.normal(size=shape).astype(dtype)
    x.flat[::5] = np.finfo(dtype).max  # beta == 0 never looks at x
    geom = make_geometry(shape, **kw)
    acc = np.float64 if dtype == np.float64 else np.float32
    y, lse = gpu.forward(x, geom, 0.0, np.dtype(acc))
    gy = rng.normal(size=y.shape).astype(dtype)
    # count_W and the windows of each cell, from the window index sets
    ones = np.ones(shape, np.float64)
    counts = np.rint(np.exp(cpu.forward(ones, geom, 0.0, np.dtype(np.float64))[1])).astype(np.int64)
    want = np.zeros(shape, acc)
    share = (gy.astype(acc) / counts.astype(acc)).astype(acc)
    mean_of_ones = cpu.forward(ones, geom, 0.0, np.dtype(np.float64))
    for at in np.ndindex(*y.shape):
        delta = np.zeros(y.shape)
        delta[at] = 1
        # the cells of window ``at``: where the mean's exact derivative is nonzero
        cells = cpu.backward(delta, ones, *mean_of_ones, geom, 0.0, np.dtype(np.float64), True) > 0
        want[cells] += share[at]  # at most two windows per cell: the sum is the same in any order
    for exact in (True, False):
        got = gpu.backward(gy, x, y, lse, geom, 0.0, np.dtype(acc), exact)
        np.testing.assert_array_equal(got, want.astype(dtype))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gpu_jvp_huge_values_with_a_tiny_beta(gpu, dtype):
    """x - y overflows where beta * (x - y) does not: the bracket is taken on halved values."""
    big = float(np.finfo(dtype).max)
    x = np.array([big, -big], dtype)
    geom = make_geometry(x.shape, 2)
    acc = np.dtype(np.float64 if dtype == np.float64 else np.float32)
    y, lse = gpu.forward(x, geom, 1 / big, acc)
    dy = gpu.jvp(np.array([1.0, 3.0], dtype), x, y, lse, geom, 1 / big, acc)
    # in units of big, with beta * big = 1: weights (1, e^-2) / (1 + e^-2)
    u = np.array([1.0, -1.0])
    w = np.exp(u - 1) / np.exp(u - 1).sum()
    np.testing.assert_allclose(dy, [np.sum(w * (1 + u - w @ u) * [1.0, 3.0])], rtol=1e-5)
