"""Mathematical properties of SoftPool that any correct implementation has."""

import numpy as np
import pytest

import softpool_nd

from configs import random_config
from reference import windows


@pytest.mark.parametrize("seed", range(10))
def test_beta_zero_is_the_mean_of_real_cells(seed):
    rng = np.random.default_rng(seed)
    shape, kw = random_config(rng, max_rank=3)
    x = rng.normal(size=shape)
    ones = np.ones(shape)
    # mean over real cells = box sum / real-cell count; padded cells must not count
    axes, out, cells = windows(shape, **kw)
    y = softpool_nd.pool(x, beta=0.0, **kw)
    xt = np.moveaxis(x, axes, range(len(shape) - len(axes), len(shape)))
    for o in np.ndindex(*(out[a] for a in axes)):
        idx = np.ix_(*(cells[i][oi] for i, oi in enumerate(o)))
        expect = xt[(Ellipsis,) + idx].reshape(xt.shape[: len(shape) - len(axes)] + (-1,)).mean(-1)
        got = np.moveaxis(y, axes, range(len(shape) - len(axes), len(shape)))[(Ellipsis,) + o]
        np.testing.assert_allclose(got, expect, rtol=1e-12, atol=1e-13)
    assert softpool_nd.pool(ones, beta=0.0, **kw).min() == 1.0


def test_large_beta_approaches_max_and_negative_beta_the_min():
    rng = np.random.default_rng(1)
    x = rng.permutation(64).astype(np.float64).reshape(1, 1, 8, 8)
    mx = x.reshape(4, 2, 4, 2).max(axis=(1, 3))
    mn = x.reshape(4, 2, 4, 2).min(axis=(1, 3))
    np.testing.assert_allclose(softpool_nd.pool(x, 2, beta=50.0)[0, 0], mx, atol=1e-12)
    np.testing.assert_allclose(softpool_nd.pool(x, 2, beta=-50.0)[0, 0], mn, atol=1e-12)
    soft = softpool_nd.pool(x, 2)[0, 0]
    assert np.all(soft < mx) and np.all(soft > x.reshape(4, 2, 4, 2).mean(axis=(1, 3)))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_constant_input_gives_the_constant_exactly(dtype):
    x = np.full((2, 3, 7, 5), 0.3, dtype=dtype)
    y = softpool_nd.pool(x, 3, stride=2, padding=1, ceil_mode=True)
    assert np.all(y == dtype(0.3))


@pytest.mark.parametrize("seed", range(5))
def test_shift_and_scale_equivariance(seed):
    rng = np.random.default_rng(seed)
    shape, kw = random_config(rng, max_rank=4)
    x = rng.normal(size=shape)
    y = softpool_nd.pool(x, **kw)
    np.testing.assert_allclose(softpool_nd.pool(x + 7.5, **kw), y + 7.5, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(softpool_nd.pool(3.0 * x, beta=1 / 3.0, **kw), 3.0 * y, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(softpool_nd.pool(-x, beta=-1.0, **kw), -y, rtol=1e-12, atol=1e-12)


def test_result_lies_between_window_min_and_max():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(3, 4, 10, 10)).astype(np.float32) * 100
    y = softpool_nd.pool(x, 2)
    w = x.reshape(3, 4, 5, 2, 5, 2)
    assert np.all(y >= w.min(axis=(3, 5))) and np.all(y <= w.max(axis=(3, 5)))
