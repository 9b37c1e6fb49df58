"""backward against central finite differences of the forward pass, in float64."""

import numpy as np
import pytest

import softpool_nd
from softpool_nd._geometry import make_geometry
from softpool_nd._loops import element_strides, loop_table
from softpool_nd.cpu import kernels

from configs import random_config


def _numeric_vjp(x, gy, beta, kw, h=1e-6):
    g = np.zeros_like(x)
    flat = x.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        plus = np.sum(gy * softpool_nd.pool(x, beta=beta, **kw))
        flat[i] = old - h
        minus = np.sum(gy * softpool_nd.pool(x, beta=beta, **kw))
        flat[i] = old
        g.reshape(-1)[i] = (plus - minus) / (2 * h)
    return g


@pytest.mark.parametrize("seed", range(12))
def test_exact_gradient_is_the_derivative(seed):
    rng = np.random.default_rng(500 + seed)
    shape, kw = random_config(rng, max_rank=4, max_cells=120)
    beta = float(rng.choice([1.0, 2.5, -1.0, 0.3]))
    x = rng.normal(size=shape)
    gy = rng.normal(size=softpool_nd.output_shape(shape, **kw))
    analytic = softpool_nd.backward(gy, x, beta=beta, **kw)
    np.testing.assert_allclose(analytic, _numeric_vjp(x.copy(), gy, beta, kw), rtol=1e-6, atol=1e-7)


def test_weights_gradient_is_not_the_derivative_but_the_paper_rule():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1, 1, 4, 4))
    gy = np.ones((1, 1, 2, 2))
    exact = softpool_nd.backward(gy, x, 2)
    weights = softpool_nd.backward(gy, x, 2, gradient="weights")
    # with grad_y = 1 the paper's rule hands each window's weights down: they sum to 1 per window
    np.testing.assert_allclose(weights.reshape(2, 2, 2, 2).transpose(0, 2, 1, 3).reshape(4, 4).sum(1), 1.0, rtol=1e-12)
    assert np.abs(exact - weights).max() > 1e-2
    np.testing.assert_allclose(exact, _numeric_vjp(x.copy(), gy, 1.0, {"kernel": 2}), rtol=1e-6, atol=1e-7)


def test_backward_uses_given_y_and_lse_instead_of_recomputing():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 3, 6, 6))
    y, lse = softpool_nd.forward(x, 2)
    gy = rng.normal(size=y.shape)
    base = softpool_nd.backward(gy, x, 2, gradient="weights")
    np.testing.assert_array_equal(softpool_nd.backward(gy, x, 2, y=y, lse=lse, gradient="weights"), base)
    # lse larger by log 2 halves every weight: only visible if the given lse is read
    halved = softpool_nd.backward(gy, x, 2, y=y, lse=lse + np.log(2.0), gradient="weights")
    np.testing.assert_allclose(halved, base / 2, rtol=1e-12, atol=1e-15)
    shifted = softpool_nd.backward(gy, x, 2, y=y + 1.0, lse=lse)
    assert not np.allclose(shifted, softpool_nd.backward(gy, x, 2))


def test_cells_outside_every_window_get_zero_gradient():
    x = np.arange(10.0)
    g = softpool_nd.backward(np.ones(3), x, kernel=2, stride=4)
    np.testing.assert_array_equal(g[[2, 3, 6, 7]], 0.0)
    assert np.all(g[[0, 1, 4, 5, 8, 9]] > 0)


@pytest.mark.parametrize(
    "kw, bwd_class",
    [
        (dict(kernel=3, stride=2, padding=1), (1, 1, 4)),
        (dict(kernel=3, stride=2), (1, 1, 4)),
        (dict(kernel=3, stride=1, padding=1), (1, 1, 9)),
    ],
)
def test_exact_gradient_of_the_channels_last_k3_classes(kw, bwd_class):
    # (N, H, W, C) pooled over H and W: the forward class (1, 1, 9) and the backward class
    # (1, 1, 4) (k3s2: rows in 4, 2 and 1 windows) or (1, 1, 9) (k3s1 p1: 9, 6 and 4), which
    # the random configurations above seldom reach; 17 channels, so that the sweeps run a
    # whole step and a padded one
    rng = np.random.default_rng(9)
    kw = dict(kw, axes=(1, 2))
    x = rng.normal(size=(1, 7, 6, 17))
    gy = rng.normal(size=softpool_nd.output_shape(x.shape, **kw))
    tab = loop_table(make_geometry(x.shape, **kw), element_strides(x), element_strides(gy))
    assert kernels.forward_kernel(tab) is kernels._FORWARD_KERNELS[(1, 1, 9)]
    assert kernels.backward_kernel(tab) is kernels._BACKWARD_KERNELS[bwd_class]
    for beta in (1.0, -2.5):
        analytic = softpool_nd.backward(gy, x, beta=beta, **kw)
        np.testing.assert_allclose(analytic, _numeric_vjp(x.copy(), gy, beta, kw), rtol=1e-6, atol=1e-7)
