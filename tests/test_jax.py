"""softpool_nd.jax: jit, grad and vmap through pure_callback, against the NumPy path."""
import doctest

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp

import softpool_nd
import softpool_nd.jax as spj
from reference import reference_backward, reference_forward

CONFIGS = [
    dict(kernel=2),
    dict(kernel=3, stride=2, padding=1, beta=2.0),
    dict(kernel=(2, 3), dilation=(2, 1), ceil_mode=True, beta=-0.5, axes=(1, 3)),
]


def _a(shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("kw", CONFIGS)
def test_output_equals_numpy_path_under_jit(kw):
    a = _a((2, 3, 7, 6))
    y = jax.jit(lambda x: spj.soft_pool(x, **kw))(jnp.asarray(a))
    assert y.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(y), softpool_nd.pool(a, **kw))


@pytest.mark.parametrize("kw", CONFIGS)
@pytest.mark.parametrize("gradient", ["exact", "weights"])
def test_grad_under_jit_matches_numpy_backward(kw, gradient):
    a = _a((1, 2, 6, 5), seed=1)
    g = _a(softpool_nd.output_shape(a.shape, **{k: v for k, v in kw.items() if k != "beta"}), seed=2)

    @jax.jit
    def loss(x):
        return jnp.vdot(spj.soft_pool(x, gradient=gradient, **kw), g)

    got = np.asarray(jax.grad(loss)(jnp.asarray(a)))
    np.testing.assert_array_equal(got, softpool_nd.backward(g, a, gradient=gradient, **kw))
    np.testing.assert_allclose(got, reference_backward(g, a, gradient=gradient, **kw), rtol=1e-4, atol=1e-5)


def test_float64_with_x64():
    a = _a((2, 9), np.float64, seed=3)
    kw = dict(kernel=3, stride=2, axes=1, beta=0.3)
    with jax.enable_x64(True):
        x = jnp.asarray(a)
        y = spj.soft_pool(x, **kw)
        grad = jax.grad(lambda x: spj.soft_pool(x, **kw).sum())(x)
    assert y.dtype == grad.dtype == jnp.float64
    np.testing.assert_allclose(np.asarray(y), reference_forward(a, **kw)[0], rtol=1e-13)
    np.testing.assert_allclose(np.asarray(grad), reference_backward(np.ones(y.shape), a, **kw), rtol=1e-12)


def test_vmap_and_vmap_of_grad():
    a = _a((3, 2, 5, 6), seed=4)
    f = lambda x: spj.soft_pool(x, 2, padding=(0, 1), axes=(1, 2))  # noqa: E731
    y = jax.vmap(f)(jnp.asarray(a))
    np.testing.assert_array_equal(np.asarray(y), softpool_nd.pool(a, 2, padding=(0, 1), axes=(2, 3)))
    grads = jax.jit(jax.vmap(jax.grad(lambda x: f(x).sum())))(jnp.asarray(a))
    ones = np.ones(y.shape, np.float32)
    np.testing.assert_array_equal(np.asarray(grads), softpool_nd.backward(ones, a, 2, padding=(0, 1), axes=(2, 3)))


def test_bfloat16_and_integer_inputs():
    a = _a((2, 8), seed=5)
    xb = jnp.asarray(a, dtype=jnp.bfloat16)
    y = spj.soft_pool(xb, 2)
    assert y.dtype == jnp.bfloat16
    want = softpool_nd.pool(np.asarray(xb, dtype=np.float32), 2)
    rounded = np.asarray(jnp.asarray(want, jnp.bfloat16), np.float32)
    np.testing.assert_array_equal(np.asarray(y, dtype=np.float32), rounded)
    assert jax.grad(lambda x: spj.soft_pool(x, 2).astype(jnp.float32).sum())(xb).dtype == jnp.bfloat16
    yi = spj.soft_pool(jnp.arange(6), 2)
    np.testing.assert_allclose(np.asarray(yi), softpool_nd.pool(np.arange(6.0), 2), rtol=1e-6)


def test_bad_gradient_names_itself():
    with pytest.raises(ValueError, match="gradient='fast'"):
        spj.soft_pool(jnp.zeros(4), gradient="fast")


def test_complex_input_is_refused_before_the_callback():
    with pytest.raises(TypeError, match="complex64"):
        spj.soft_pool(jnp.zeros(4, jnp.complex64), 2)


def test_docstring_examples():
    result = doctest.testmod(spj, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 3 and result.failed == 0
