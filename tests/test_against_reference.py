"""softpool_nd against the float64 NumPy oracle over randomized configurations."""

import numpy as np
import pytest

import softpool_nd

from configs import DTYPES, random_config, tolerance
from reference import reference_backward, reference_forward

SEEDS = range(40)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_forward_matches_reference(seed, dtype):
    rng = np.random.default_rng(seed)
    shape, kw = random_config(rng)
    beta = float(rng.choice([1.0, 1.0, 0.0, -1.5, 3.0]))
    x = rng.normal(size=shape).astype(dtype)
    y, lse = softpool_nd.forward(x, beta=beta, **kw)
    y_ref, lse_ref = reference_forward(x.astype(np.float64), beta=beta, **kw)
    assert y.dtype == dtype and y.shape == y_ref.shape
    assert lse.dtype == (np.float64 if dtype == np.float64 else np.float32)
    rtol, atol = tolerance(dtype)
    np.testing.assert_allclose(y.astype(np.float64), y_ref, rtol=rtol, atol=atol, err_msg=f"{shape} {kw}")
    np.testing.assert_allclose(lse.astype(np.float64), lse_ref, rtol=rtol, atol=atol * 10, err_msg=f"{shape} {kw}")
    np.testing.assert_array_equal(softpool_nd.pool(x, beta=beta, **kw), y)


@pytest.mark.parametrize("gradient", ["exact", "weights"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("seed", SEEDS)
def test_backward_matches_reference(seed, dtype, gradient):
    rng = np.random.default_rng(1000 + seed)
    shape, kw = random_config(rng)
    beta = float(rng.choice([1.0, 0.0, -0.7, 2.0]))
    x = rng.normal(size=shape).astype(dtype)
    y, lse = softpool_nd.forward(x, beta=beta, **kw)
    gy = rng.normal(size=y.shape).astype(dtype)
    gx = softpool_nd.backward(gy, x, beta=beta, y=y, lse=lse, gradient=gradient, **kw)
    ref = reference_backward(gy.astype(np.float64), x.astype(np.float64), beta=beta, gradient=gradient, **kw)
    assert gx.dtype == dtype and gx.shape == x.shape
    rtol, atol = tolerance(dtype)
    # y, lse and grad_y are rounded to the dtype before backward: allow a few roundings more.
    np.testing.assert_allclose(gx.astype(np.float64), ref, rtol=rtol * 4, atol=atol * 8, err_msg=f"{shape} {kw}")


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_])
def test_integer_and_bool_inputs_give_float64(dtype):
    rng = np.random.default_rng(7)
    x = (
        rng.integers(0, 5, size=(2, 3, 6, 4)) > 2 if dtype == np.bool_ else rng.integers(0, 5, size=(2, 3, 6, 4))
    ).astype(dtype)
    y = softpool_nd.pool(x, 2)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, reference_forward(x.astype(np.float64), kernel=2)[0], rtol=1e-13)
    gx = softpool_nd.backward(np.ones(y.shape), x, 2)
    assert gx.dtype == np.float64
    np.testing.assert_allclose(gx, reference_backward(np.ones(y.shape), x, kernel=2), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("n_pooled", [1, 2, 3, 4, 5])
def test_any_number_of_pooled_axes(n_pooled):
    rng = np.random.default_rng(n_pooled)
    shape = (2,) + (5,) * n_pooled
    x = rng.normal(size=shape)
    kw = dict(kernel=(3,) * n_pooled, stride=(2,) * n_pooled, padding=1)
    y, lse = softpool_nd.forward(x, **kw)
    y_ref, lse_ref = reference_forward(x, **kw)
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    gy = rng.normal(size=y.shape)
    np.testing.assert_allclose(
        softpool_nd.backward(gy, x, y=y, lse=lse, **kw), reference_backward(gy, x, **kw), rtol=1e-12, atol=1e-12
    )
