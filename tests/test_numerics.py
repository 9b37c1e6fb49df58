"""The numeric rules of issue #13 items 5-6 (NUMERICS.md) on the CPU backend: every accepted beta
follows the limit of the formula (no overflow of beta * x), beta = 0 is the plain mean, and float32
error of long windows grows like log n."""

import numpy as np
import pytest

import softpool_nd

from reference import reference_backward, reference_forward

_HALF_AND_SINGLE = (np.float16, np.float32)


def _central_differences(f, x, h):
    """d sum(f(x)) / dx by central differences, cell by cell (float64 x)."""
    g = np.zeros_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e.flat[i] = h
        g.flat[i] = ((f(x + e) - f(x - e)) / (2 * h)).sum()
    return g


_HUGE_BETAS = [
    (1e30, [1, 0], [0, 1, 0, 1]),
    (-1e30, [0, -1], [1, 0, 1, 0]),
    (3e38, [1, 0], [0, 1, 0, 1]),  # the largest float32 betas
    (-3e38, [0, -1], [1, 0, 1, 0]),
]


@pytest.mark.parametrize("dtype", _HALF_AND_SINGLE + (np.float64,))
@pytest.mark.parametrize("beta, y_want, g_want", _HUGE_BETAS)
def test_huge_beta_is_the_limit_max_or_min_pooling(dtype, beta, y_want, g_want):
    # issue #13 item 5: beta rounded to inf in float32 gave 0 * inf = nan
    x = np.array([0, 1, -1, 0], dtype)
    y, lse = softpool_nd.forward(x, 2, beta=beta)
    np.testing.assert_array_equal(y, np.array(y_want, dtype))
    assert np.all(np.isfinite(lse))
    np.testing.assert_allclose(lse, beta * np.array([1, 0]) if beta > 0 else beta * np.array([0, -1]), rtol=1e-6)
    for gradient in ("exact", "weights"):
        g = softpool_nd.backward(np.ones(2, dtype), x, 2, beta=beta, gradient=gradient)
        np.testing.assert_array_equal(g, np.array(g_want, dtype))


def test_huge_float64_values_and_beta_give_the_larger_value():
    # issue #13 item 5: 1.5e300 (the mean) instead of the limit 2e300
    x = np.array([1e300, 2e300])
    y, lse = softpool_nd.forward(x, 2, beta=1e10)
    np.testing.assert_array_equal(y, [2e300])
    assert lse[0] == np.inf  # beta * 2e300 is beyond float64: so is the true lse
    # the gradient of the limit (max pooling), also by central differences
    g = softpool_nd.backward(np.ones(1), x, 2, beta=1e10)
    np.testing.assert_array_equal(g, [0, 1])
    fd = _central_differences(lambda a: softpool_nd.pool(a, 2, beta=1e10), x, 1e290)
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-9)
    for beta in (1e300, -1e300, np.finfo(np.float64).max):
        want = x.max() if beta > 0 else x.min()
        assert softpool_nd.pool(x, 2, beta=beta)[0] == want
        assert np.all(np.isfinite(softpool_nd.backward(np.ones(1), x, 2, beta=beta)))


@pytest.mark.parametrize("dtype", _HALF_AND_SINGLE + (np.float64,))
def test_beta_zero_is_the_plain_mean(dtype):
    # issue #13 item 5: [fmax, -fmax] gave -inf; the README promises the mean
    big = np.finfo(dtype).max
    x = np.array([big, -big, big, big / 2, -big, -big / 2], dtype)
    y, lse = softpool_nd.forward(x, 2, beta=0.0)
    np.testing.assert_array_equal(y, np.array([0, 0.75 * float(big), -0.75 * float(big)]).astype(dtype))
    np.testing.assert_allclose(lse, np.log(2), rtol=1e-6)
    g = softpool_nd.backward(np.array([1, 2, 4], dtype), x, 2, beta=0.0)
    np.testing.assert_allclose(g, [0.5, 0.5, 1, 1, 2, 2], rtol=1e-6)
    # random windows, padded ones included: the mean of the real cells, as numpy.mean computes it
    acc = np.float64 if dtype == np.float64 else np.float32
    x = np.random.default_rng(0).normal(size=(3, 13)).astype(dtype)
    y = softpool_nd.pool(x, 4, stride=3, padding=1, beta=0.0, axes=1)
    want = [[np.mean(r[max(0, o * 3 - 1) : o * 3 + 3], dtype=acc) for o in range(y.shape[1])] for r in x]
    np.testing.assert_allclose(y, np.array(want).astype(dtype), rtol=np.finfo(dtype).eps * 4, atol=np.finfo(dtype).eps)


@pytest.mark.parametrize("dtype", _HALF_AND_SINGLE + (np.float64,))
def test_huge_values_with_a_tiny_beta_do_not_overflow(dtype):
    # x_i - max overflows while beta * (x_i - max) does not: [fmax, -fmax] with a
    # tiny beta is nearly the mean, as the formula's limit gives it
    big = float(np.finfo(dtype).max)
    beta = 1 / big
    x = np.array([big, -big], dtype)
    y, lse = softpool_nd.forward(x, 2, beta=beta)
    e = np.exp(-2.0)  # the weight of -fmax: exp(beta * (-2 fmax))
    np.testing.assert_allclose(y.astype(np.float64) / big, [(1 - e) / (1 + e)], rtol=1e-3)
    g = softpool_nd.backward(np.ones(1, dtype), x, 2, beta=beta)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(
        g.astype(np.float64),
        [1 / (1 + e) * (1 + (1 - (1 - e) / (1 + e))), e / (1 + e) * (1 + (-1 - (1 - e) / (1 + e)))],
        rtol=1e-3,
        atol=1e-3,
    )


@pytest.mark.parametrize("dtype", _HALF_AND_SINGLE + (np.float64,))
def test_ties_under_an_overflowing_beta_share_the_weight(dtype):
    # lse overflows to inf: the backward takes the window's weights from its
    # maximum (exp(beta*x - inf) was exp(inf - inf) = nan)
    x = np.array([5, 5, 3, 5], dtype)
    beta = 3e38 if dtype != np.float64 else 1e308
    y, lse = softpool_nd.forward(x, 2, beta=beta)
    np.testing.assert_array_equal(y, np.array([5, 5], dtype))
    for gradient in ("exact", "weights"):
        g = softpool_nd.backward(np.ones(2, dtype), x, 2, beta=beta, gradient=gradient)
        np.testing.assert_array_equal(g, np.array([0.5, 0.5, 0, 1], dtype))


_CASES = [
    ((2, 3, 8, 8), dict(kernel=2)),  # tiled backward
    ((2, 3, 9, 11), dict(kernel=3, stride=2)),  # cell-major class sweeps
    ((2, 3, 40), dict(kernel=2)),  # 1-d k2s2
    ((2, 8, 8, 3), dict(kernel=2, axes=(1, 2))),  # channels-last
    ((2, 9, 8, 3), dict(kernel=3, stride=2, padding=1, axes=(1, 2))),  # channels-last k3s2
    ((2, 3, 7, 9), dict(kernel=3, stride=1, padding=1, dilation=(1, 2))),  # general kernels
]


# (dtype, scale of x, beta) with beta * x beyond the accumulation dtype
_OVERFLOWS = [
    (np.float32, 1e37, 100.0),
    (np.float32, 1e37, -100.0),
    (np.float16, 1e2, 1e36),
    (np.float64, 1e306, 1e5),
    (np.float64, 1.0, -1e308),
]


@pytest.mark.parametrize("shape, kw", _CASES)
@pytest.mark.parametrize("dtype, scale, beta", _OVERFLOWS)
def test_overflowing_products_match_the_float64_oracle(shape, kw, dtype, scale, beta):
    # beta * x beyond the accumulation dtype in most cells (the oracle's float64
    # holds the float32 ones): every kernel class, forward and backward, both
    # gradients; the backward sweeps leave such windows to the per-cell path
    rng = np.random.default_rng(5)
    x = (rng.normal(size=shape) * scale).astype(dtype)
    x.flat[::7] = 4 * scale * np.sign(beta)  # exact ties, maximisers of beta*x, whose beta*x overflows
    y, lse = softpool_nd.forward(x, beta=beta, **kw)
    gy = rng.normal(size=y.shape).astype(dtype)
    assert np.all(np.isfinite(y))
    if dtype != np.float64:
        y_ref, lse_ref = reference_forward(x, beta=beta, **kw)
        np.testing.assert_allclose(y, y_ref, rtol=1e-3)
        np.testing.assert_allclose(lse, lse_ref.astype(lse.dtype), rtol=1e-5)
    for gradient in ("exact", "weights"):
        g = softpool_nd.backward(gy, x, y=y, lse=lse, beta=beta, gradient=gradient, **kw)
        assert np.all(np.isfinite(g))
        # the limit: each window's gradient goes to its maximiser(s) of beta*x
        g_lim = _limit_gradient(x, gy, beta, gradient, kw)
        np.testing.assert_allclose(g, g_lim, rtol=1e-3, atol=1e-3 * np.abs(gy).max())


def _limit_gradient(x, gy, beta, gradient, kw):
    """The gradient in the limit of a huge beta: max (or min) pooling's, ties sharing equally.

    The oracle's gradient for x scaled to unit size and a beta of that sign for
    which every weight but the maximisers' is exp(-1000) or less.
    """
    xf = x.astype(np.float64)
    unit = xf / np.abs(xf).max()
    return reference_backward(gy, unit, beta=np.sign(beta) * 1e7, gradient=gradient, **kw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_moderate_beta_gradients_match_central_differences_at_large_magnitudes(dtype):
    # values near the top of float32/float64 with beta * x still finite: the halved
    # differences change no result where nothing overflows (float16 is left out:
    # its stored y is too coarse for the exact gradient's beta * (x - y))
    big = float(np.finfo(dtype).max) / 4
    rng = np.random.default_rng(2)
    x = (big * (1 - rng.random(12) * 1e-2)).astype(dtype).astype(np.float64)
    beta = 2000 / big
    f = lambda a: softpool_nd.pool(a.astype(dtype), 3, stride=2, beta=beta).astype(np.float64)
    g = softpool_nd.backward(np.ones(5, dtype), x.astype(dtype), 3, stride=2, beta=beta).astype(np.float64)
    if dtype == np.float64:
        fd = _central_differences(f, x, big * 1e-6)
        np.testing.assert_allclose(g, fd, rtol=1e-4, atol=1e-6)
    g_ref = reference_backward(np.ones(5), x.astype(dtype), beta=beta, kernel=3, stride=2)
    np.testing.assert_allclose(g, g_ref, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(
    "dtype, bad",
    [
        (np.float32, 1e300),
        (np.float16, -3.5e38),
        (np.float64, float("inf")),
        (np.float64, 10**400),
        (np.int64, -(10**309)),
    ],
)
def test_betas_beyond_the_accumulation_dtype_are_refused(dtype, bad):
    x = np.zeros((2, 4), dtype)
    acc = "float64" if dtype in (np.float64, np.int64) else "float32"
    with pytest.raises(ValueError, match=rf"beta=.*{acc}.*\(2, 4\)"):
        softpool_nd.pool(x, 2, beta=bad)
    with pytest.raises(ValueError, match="beta="):
        softpool_nd.backward(np.zeros((1, 2), x.dtype if dtype != np.int64 else np.float64), x, 2, beta=bad)


def test_the_largest_accepted_betas():
    for dtype in (np.float16, np.float32):
        assert np.isfinite(softpool_nd.pool(np.ones(2, dtype), 2, beta=float(np.finfo(np.float32).max))).all()
    assert np.isfinite(softpool_nd.pool(np.ones(2), 2, beta=-float(np.finfo(np.float64).max))).all()
    assert softpool_nd.pool(np.ones(2), 2, beta=10**300)[0] == 1  # an int that float64 holds


@pytest.mark.parametrize("n", [1024, 2048])
def test_global_pooling_of_large_float32_maps_is_accurate(n):
    # issue #13 item 6: 2.4e-4 relative at 1024x1024, 3.3e-3 at 2048x2048
    x = np.random.default_rng(n).standard_normal((n, n), dtype=np.float32)
    kw = dict(kernel=(n, n))
    y, lse = softpool_nd.forward(x, **kw)
    y_ref, lse_ref = reference_forward(x, **kw)
    np.testing.assert_allclose(y, y_ref, rtol=2e-5)
    np.testing.assert_allclose(lse, lse_ref, rtol=2e-5)
    g = softpool_nd.backward(np.ones_like(y), x, y=y, lse=lse, **kw)
    g_ref = reference_backward(np.ones(y.shape), x, **kw)
    np.testing.assert_allclose(g.sum(dtype=np.float64), g_ref.sum(), rtol=2e-5)
    # the weights' gradient sums to grad_y, whatever x
    g_w = softpool_nd.backward(np.ones_like(y), x, y=y, lse=lse, gradient="weights", **kw)
    np.testing.assert_allclose(g_w.sum(dtype=np.float64), 1.0, rtol=2e-5)
