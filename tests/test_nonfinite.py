"""Non-finite inputs follow the limit of the formula; huge finite inputs never overflow."""

import numpy as np
import pytest

import softpool_nd

inf, nan = np.inf, np.nan


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_nan_poisons_only_its_window(dtype):
    x = np.array([1.0, nan, 2.0, 3.0, inf, nan], dtype=dtype)
    y, lse = softpool_nd.forward(x, 2)
    assert np.isnan(y[0]) and np.isnan(lse[0]) and np.isnan(y[2])
    np.testing.assert_allclose(y[1], (2 * np.exp(2) + 3 * np.exp(3)) / (np.exp(2) + np.exp(3)), rtol=2e-3)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_dominating_infinity_is_the_result(dtype):
    x = np.array([inf, 5.0, -inf, 5.0, inf, inf, -inf, -inf], dtype=dtype)
    y, lse = softpool_nd.forward(x, 2)
    np.testing.assert_array_equal(y, np.array([inf, 5.0, inf, -inf], dtype=dtype))
    assert lse[0] == inf and lse[2] == inf and lse[3] == -inf
    np.testing.assert_allclose(lse[1], 5.0, rtol=1e-3)
    ym = softpool_nd.pool(x, 2, beta=-1.0)
    np.testing.assert_array_equal(ym, np.array([5.0, -inf, inf, -inf], dtype=dtype))


def test_minus_infinity_next_to_finite_gets_zero_weight():
    x = np.array([[-inf, 1.0, 2.0, 5.0], [3.0, -inf, -inf, -inf]])
    y, lse = softpool_nd.forward(x, 2, axes=1)
    soft = (2 * np.exp(2) + 5 * np.exp(5)) / (np.exp(2) + np.exp(5))
    np.testing.assert_allclose(y, [[1.0, soft], [3.0, -inf]], rtol=1e-14)
    g = softpool_nd.backward(np.ones_like(y), x, 2, axes=1, y=y, lse=lse)
    np.testing.assert_array_equal(g[:, :2], [[0.0, 1.0], [1.0, 0.0]])
    np.testing.assert_allclose(g[0, 2:].sum(), 1.0, rtol=1e-14)  # a softpool window passes gradient 1 on
    # a window of only -inf has no derivative: documented as NaN
    assert np.all(np.isnan(g[1, 2:]))


def test_beta_zero_averages_infinities_too():
    x = np.array([1.0, inf, -inf, -inf, inf, -inf, 2.0, 4.0])
    np.testing.assert_array_equal(softpool_nd.pool(x, 2, beta=0.0)[:2], [inf, -inf])
    assert np.isnan(softpool_nd.pool(x, 2, beta=0.0)[2])
    assert softpool_nd.pool(x, 2, beta=0.0)[3] == 3.0


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_huge_finite_values_stay_finite_forward_and_backward(dtype):
    big = np.finfo(dtype).max / 2
    rng = np.random.default_rng(0)
    x = (rng.choice([-1.0, 1.0, 0.5, -0.25], size=(2, 3, 8, 8)) * big).astype(dtype)
    x[0, 0] = big  # constant windows of the largest allowed value
    for kw in (dict(kernel=2), dict(kernel=3, stride=2, padding=1), dict(kernel=(4, 4))):
        y, lse = softpool_nd.forward(x, **kw)
        assert np.all(np.isfinite(y)) and np.all(np.isfinite(lse)), kw
        assert y[0, 0].min() == dtype(big)
        g = softpool_nd.backward(np.ones(y.shape, dtype), x, y=y, lse=lse, **kw)
        assert np.all(np.isfinite(g)), kw
        gw = softpool_nd.backward(np.ones(y.shape, dtype), x, gradient="weights", **kw)
        assert np.all(np.isfinite(gw)), kw


def test_weights_of_huge_values_are_the_max_cells():
    big = np.finfo(np.float64).max / 2
    x = np.array([big, -big, big / 4, big])
    y = softpool_nd.pool(x, 2)
    np.testing.assert_array_equal(y, [big, big])
