"""softpool_nd.jvp: the forward-mode derivative, against central differences, the oracle and backward."""

import numba
import numpy as np
import pytest

import softpool_nd

from configs import DTYPES, random_config, tolerance
from reference import reference_jvp

BETAS = [1.0, 2.5, -1.0, 0.3, 0.0]


def _numeric_jvp(x, dx, beta, kw, h=1e-6):
    """Central difference of pool along dx."""
    plus = softpool_nd.pool(x + h * dx, beta=beta, **kw)
    minus = softpool_nd.pool(x - h * dx, beta=beta, **kw)
    return (plus - minus) / (2 * h)


@pytest.mark.parametrize("seed", range(16))
def test_jvp_is_the_derivative(seed):
    rng = np.random.default_rng(900 + seed)
    shape, kw = random_config(rng, max_rank=4, max_cells=300)
    beta = BETAS[seed % len(BETAS)]
    x, dx = rng.normal(size=shape), rng.normal(size=shape)
    got = softpool_nd.jvp(x, dx, beta=beta, **kw)
    np.testing.assert_allclose(got, _numeric_jvp(x, dx, beta, kw), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(got, reference_jvp(x, dx, beta=beta, **kw), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(8))
def test_jvp_is_the_transpose_of_backward(seed):
    rng = np.random.default_rng(950 + seed)
    shape, kw = random_config(rng, max_rank=4, max_cells=600)
    beta = BETAS[seed % len(BETAS)]
    x, dx = rng.normal(size=shape), rng.normal(size=shape)
    y, lse = softpool_nd.forward(x, beta=beta, **kw)
    g = rng.normal(size=y.shape)
    lhs = np.sum(softpool_nd.jvp(x, dx, beta=beta, y=y, lse=lse, **kw) * g)
    rhs = np.sum(dx * softpool_nd.backward(g, x, beta=beta, y=y, lse=lse, **kw))
    np.testing.assert_allclose(lhs, rhs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", range(4))
def test_low_precision_against_the_float64_oracle(dtype, seed):
    rng = np.random.default_rng(970 + seed)
    shape, kw = random_config(rng, max_rank=4, max_cells=2000)
    beta = BETAS[seed % len(BETAS)]
    x, dx = rng.normal(size=shape).astype(dtype), rng.normal(size=shape).astype(dtype)
    got = softpool_nd.jvp(x, dx, beta=beta, **kw)
    assert got.dtype == dtype and got.shape == softpool_nd.output_shape(shape, **kw)
    want = reference_jvp(x, dx, beta=beta, **kw)
    rtol, atol = tolerance(dtype)
    # dy sums up to 27 terms of size ~|1 + beta*(x - y)| * |dx|; y itself is rounded to dtype
    scale = 10 if dtype != np.float64 else 1
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=scale * rtol, atol=scale * atol)


def test_given_y_and_lse_are_used():
    rng = np.random.default_rng(4)
    x, dx = rng.normal(size=(2, 3, 6, 6)), rng.normal(size=(2, 3, 6, 6))
    y, lse = softpool_nd.forward(x, 2)
    base = softpool_nd.jvp(x, dx, 2)
    np.testing.assert_array_equal(softpool_nd.jvp(x, dx, 2, y=y, lse=lse), base)
    # an lse larger by log 2 halves every weight: only visible if the given lse is read
    halved = softpool_nd.jvp(x, dx, 2, y=y, lse=lse + np.log(2.0))
    np.testing.assert_allclose(halved, base / 2, rtol=1e-12, atol=1e-15)
    assert not np.allclose(softpool_nd.jvp(x, dx, 2, y=y + 1.0, lse=lse), base)


def test_beta_zero_is_the_mean_of_dx():
    x = np.array([np.finfo(np.float32).max, -np.finfo(np.float32).max, 3.0, np.inf], np.float32)
    dx = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    np.testing.assert_array_equal(softpool_nd.jvp(x, dx, 2, beta=0.0), [1.5, 3.5])
    # padding cells are not counted
    np.testing.assert_array_equal(softpool_nd.jvp(np.zeros(3), np.array([1.0, 2.0, 4.0]), 2, padding=1), [1, 3])


def test_large_beta_follows_the_limit_without_nan():
    # NUMERICS.md rule 3's examples: the tangent of the window's maximiser (of beta*x)
    x = np.array([0, 1, -1, 0], np.float32)
    dx = np.array([1, 2, 3, 4], np.float32)
    np.testing.assert_array_equal(softpool_nd.jvp(x, dx, 2, beta=1e30), [2, 4])
    np.testing.assert_array_equal(softpool_nd.jvp(x, dx, 2, beta=-1e30), [1, 3])
    # beta*x overflows: lse is +inf, the weights are the forward's
    big = np.array([1e300, 2e300])
    np.testing.assert_array_equal(
        softpool_nd.jvp(big, np.array([1.0, 2.0]), 2, beta=1e10, y=np.array([2e300]), lse=np.array([np.inf])), [2.0]
    )
    tie = np.array([1e30, 1e30, 2e30, -1e30], np.float32)
    np.testing.assert_array_equal(softpool_nd.jvp(tie, dx, 2, beta=1e10), [1.5, 3])
    fmax = np.finfo(np.float64).max
    rng = np.random.default_rng(0)
    for beta in (1e-300, 0.5, 1.0, 1e10, 1e300, -1e300):
        x = rng.choice([fmax, -fmax, 1e300, -1e300, 0.0, 1.0], size=(4, 6))
        got = softpool_nd.jvp(x, np.ones_like(x), (2, 3), beta=beta)
        assert np.all(np.isfinite(got)), (beta, got)


def test_any_layout_of_x_and_dx():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 7, 9, 3)).astype(np.float32)
    dx = rng.normal(size=x.shape).astype(np.float32)
    kw = dict(kernel=(3, 2), stride=(2, 1), padding=1, axes=(1, 2), beta=1.5)
    want = softpool_nd.jvp(x, dx, **kw)
    # dx's layout, dtype or a view of x with the same memory order change no bit
    same_order = [
        (x, np.asfortranarray(dx)),
        (x, np.ascontiguousarray(dx.transpose(0, 3, 1, 2)).transpose(0, 2, 3, 1)),
        (np.ascontiguousarray(x[:, ::-1])[:, ::-1], dx[:, :, ::-1].copy()[:, :, ::-1]),
        (x, dx.astype(np.float64)),
    ]
    for xl, dxl in same_order:
        np.testing.assert_array_equal(softpool_nd.jvp(xl, dxl, **kw), want)
    # another memory order of x sums each window's cells in another order
    xf = np.asfortranarray(x)
    got = softpool_nd.jvp(xf, dx, **kw)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert got.strides == softpool_nd.pool(xf, **kw).strides


def test_integer_input_gives_float64():
    x = np.arange(8).reshape(2, 4)
    got = softpool_nd.jvp(x, np.ones((2, 4), np.float32), 2)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, np.ones((1, 2)), rtol=1e-15)


def test_deterministic_whatever_the_thread_count():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(4, 8, 20, 20)).astype(np.float32)
    dx = rng.normal(size=x.shape).astype(np.float32)
    old = numba.get_num_threads()
    try:
        results = []
        for n in {1, old}:
            numba.set_num_threads(n)
            results.append(softpool_nd.jvp(x, dx, 3, 2, 1))
    finally:
        numba.set_num_threads(old)
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])


def test_bad_tangent_names_itself():
    x = np.zeros((1, 2, 4, 4))
    with pytest.raises(ValueError, match=r"dx has shape \(1, 2, 4\) but x has shape \(1, 2, 4, 4\)"):
        softpool_nd.jvp(x, np.zeros((1, 2, 4)))
    with pytest.raises(TypeError, match=r"dx of type list is not an array"):
        softpool_nd.jvp(x, [0.0])
    with pytest.raises(TypeError, match="dx has dtype complex128"):
        softpool_nd.jvp(x, np.zeros(x.shape, complex))
    with pytest.raises(ValueError, match=r"lse has shape"):
        softpool_nd.jvp(x, x, y=np.zeros((1, 2, 2, 2)), lse=np.zeros(3))


def test_dask_is_blocked_like_the_forward():
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, 3, 11, 10))
    dx = rng.normal(size=x.shape)
    kw = dict(kernel=3, stride=2, padding=1, beta=0.7)
    want = softpool_nd.jvp(x, dx, **kw)
    got = softpool_nd.jvp(da.from_array(x, chunks=(1, 2, 4, 5)), da.from_array(dx, chunks=(2, 1, 6, 3)), **kw)
    assert isinstance(got, da.Array)
    np.testing.assert_allclose(got.compute(), want, rtol=1e-12, atol=1e-12)
    y, lse = softpool_nd.forward(da.from_array(x, chunks=4), **kw)
    np.testing.assert_allclose(
        softpool_nd.jvp(da.from_array(x, chunks=4), da.from_array(dx, chunks=4), y=y, lse=lse, **kw).compute(),
        want,
        rtol=1e-12,
        atol=1e-12,
    )
