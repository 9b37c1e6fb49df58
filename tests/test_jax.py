"""softpool_nd.jax: jit, grad and vmap through pure_callback, against the NumPy path."""

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
    f = lambda x: spj.soft_pool(x, 2, padding=(0, 1), axes=(1, 2))
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


@pytest.mark.parametrize("impl", ["xla", "callback"])
def test_beta_beyond_float32_is_refused_for_float32_before_the_callback(impl):
    # float32 accumulates in float32: beta=1e39 gave NaN (xla) or failed inside the callback
    with pytest.raises(ValueError, match=r"beta=1e\+39 .*float32.*input shape \(4,\)"):
        spj.soft_pool(jnp.zeros(4, jnp.float32), 2, beta=1e39, impl=impl)


def test_complex_input_is_refused_before_the_callback():
    with pytest.raises(TypeError, match="complex64"):
        spj.soft_pool(jnp.zeros(4, jnp.complex64), 2)


# --- the XLA path (impl='xla'): the composite decomposition in jax.numpy ---

from configs import random_config, tolerance


def _xla(x, **kw):
    return spj.soft_pool(x, impl="xla", **kw)


@pytest.mark.parametrize("seed", range(3))
def test_xla_path_matches_kernels_on_random_configs(seed):
    """Forward and both gradients against softpool_nd's CPU kernels and the oracle (float32).

    Rank <= 3 keeps each jit (one per configuration) small: the graph grows with prod(kernel).
    """
    rng = np.random.default_rng(200 + seed)
    rtol, atol = tolerance(np.float32)
    for _ in range(4):
        shape, kw = random_config(rng, max_rank=3, max_cells=300)
        kw["beta"] = float(rng.choice([1.0, 2.5, -0.7, 0.0]))
        a = rng.standard_normal(shape).astype(np.float32)
        g = rng.standard_normal(softpool_nd.output_shape(shape, **{k: v for k, v in kw.items() if k != "beta"}))

        @jax.jit
        def all_three(x):
            y, vjp = jax.vjp(lambda x: _xla(x, **kw), x)
            return (
                y,
                vjp(g.astype(np.float32))[0],
                jax.grad(lambda x: jnp.vdot(_xla(x, gradient="weights", **kw), g))(x),
            )

        y, exact, weights = all_three(jnp.asarray(a))
        assert y.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(y), softpool_nd.pool(a, **kw), rtol=rtol, atol=atol)
        np.testing.assert_allclose(np.asarray(y), reference_forward(a, **kw)[0], rtol=rtol, atol=atol)
        for gradient, got in (("exact", exact), ("weights", weights)):
            want = softpool_nd.backward(g.astype(np.float32), a, gradient=gradient, **kw)
            np.testing.assert_allclose(np.asarray(got), want, rtol=rtol, atol=atol, err_msg=f"{shape} {kw}")


def test_xla_path_jaxpr_has_no_host_callback():
    x = jnp.zeros((2, 3, 7, 6))
    for kw in (dict(kernel=3, stride=2, padding="same"), dict(kernel=2, beta=-1.0, gradient="weights")):
        for fn in (lambda a: _xla(a, **kw), jax.grad(lambda a: _xla(a, **kw).sum())):
            text = str(jax.make_jaxpr(fn)(x))
            assert "callback" not in text and "pure_callback" not in text
    assert "callback" in str(jax.make_jaxpr(lambda a: spj.soft_pool(a, 2, impl="callback"))(x))


def test_xla_path_forward_mode_and_hessian_against_finite_differences():
    kw = dict(kernel=(2, 3), stride=(1, 2), padding=((1, 0), (0, 1)), dilation=(2, 1), ceil_mode=True, beta=1.7)
    rng = np.random.default_rng(8)
    with jax.enable_x64(True):
        a = jnp.asarray(rng.standard_normal((2, 5, 6)))
        v = jnp.asarray(rng.standard_normal(a.shape))
        f = lambda x: _xla(x, axes=(1, 2), **kw)
        h = 1e-6
        _, dy = jax.jvp(f, (a,), (v,))
        np.testing.assert_allclose(dy, (f(a + h * v) - f(a - h * v)) / (2 * h), rtol=1e-6, atol=1e-8)
        loss = lambda x: (f(x) ** 2).sum()
        g = jax.grad(loss)
        _, hvp = jax.jvp(g, (a,), (v,))
        np.testing.assert_allclose(hvp, (g(a + h * v) - g(a - h * v)) / (2 * h), rtol=1e-5, atol=1e-7)
        # the exact gradient against the float64 oracle
        np.testing.assert_allclose(
            g(a), reference_backward(2 * np.asarray(f(a)), np.asarray(a), axes=(1, 2), **kw), rtol=1e-12, atol=1e-12
        )
        # jacfwd, jacrev and hessian under jit on a small input
        small = a[:1, :3, :4]
        jf = jax.jit(jax.jacfwd(f))(small)
        np.testing.assert_allclose(jf, jax.jit(jax.jacrev(f))(small), rtol=1e-12, atol=1e-14)
        hess = jax.jit(jax.hessian(loss))(small)
        np.testing.assert_allclose(
            jnp.tensordot(hess, v[:1, :3, :4], axes=3),
            jax.jvp(g, (small,), (v[:1, :3, :4],))[1],
            rtol=1e-10,
            atol=1e-12,
        )


def test_xla_path_vmap_equals_batched_call():
    a = jnp.asarray(_a((3, 2, 5, 6), seed=9))
    f = lambda x: _xla(x, kernel=2, padding=(0, 1), axes=(1, 2))
    np.testing.assert_array_equal(jax.vmap(f)(a), _xla(a, kernel=2, padding=(0, 1), axes=(2, 3)))
    grads = jax.vmap(jax.grad(lambda x: f(x).sum()))(a)
    ones = np.ones(softpool_nd.output_shape(a.shape, 2, padding=(0, 1), axes=(2, 3)), np.float32)
    want = softpool_nd.backward(ones, np.asarray(a), 2, padding=(0, 1), axes=(2, 3))
    np.testing.assert_allclose(grads, want, rtol=2e-5, atol=2e-6)


def test_xla_path_dtypes_and_non_finite_rules():
    a = _a((2, 8), seed=10)
    yb = _xla(jnp.asarray(a, jnp.bfloat16), kernel=2)
    assert yb.dtype == jnp.bfloat16
    np.testing.assert_array_equal(
        np.asarray(yb, np.float32),
        np.asarray(
            jnp.asarray(softpool_nd.pool(np.asarray(jnp.asarray(a, jnp.bfloat16), np.float32), 2), jnp.bfloat16),
            np.float32,
        ),
    )
    inf, nan = np.inf, np.nan
    x = np.array([1.0, nan, inf, 5.0, -inf, 5.0, inf, inf, -inf, -inf, -inf, 2.0], np.float32)
    for beta in (1.0, -1.0, 0.0):
        np.testing.assert_array_equal(_xla(jnp.asarray(x), kernel=2, beta=beta), softpool_nd.pool(x, 2, beta=beta))
    fmax = float(np.finfo(np.float32).max)
    assert _xla(jnp.array([0.0, 1.0, -1.0, 0.0]), kernel=2, beta=1e30).tolist() == [1.0, 0.0]
    assert _xla(jnp.array([fmax, -fmax]), kernel=2, beta=0.0).tolist() == [0.0]
    big = jnp.asarray(np.random.default_rng(0).choice([-1.0, 1.0, 0.5], size=(2, 8, 8)) * fmax / 2, jnp.float32)
    # (not 1e-38: XLA's CPU backend flushes a subnormal float32 beta to 0)
    for beta in (1.0, 1e-30, 1e30, -1.0):
        assert jnp.isfinite(jax.grad(lambda x: _xla(x, kernel=3, stride=2, padding=1, beta=beta).sum())(big)).all()


def test_default_impl_is_the_callback_on_cpu_and_bad_impl_is_named():
    x = jnp.zeros((2, 4))
    assert "callback" in str(jax.make_jaxpr(lambda a: spj.soft_pool(a, 2))(x))
    with pytest.raises(ValueError, match="impl='numba'"):
        spj.soft_pool(x, 2, impl="numba")


@pytest.mark.parametrize("transform", ["jvp", "jacfwd", "hessian"])
def test_forward_mode_on_the_callback_path_says_what_is_supported(transform):
    """Issue #14 item 4: softpool_nd's own message, naming impl='xla', instead of JAX's generic one."""
    x = jnp.asarray(_a((1, 2, 4, 4), seed=11))
    f = lambda a: spj.soft_pool(a, 2, impl="callback").sum()
    run = {
        "jvp": lambda: jax.jvp(f, (x,), (x,)),
        "jacfwd": lambda: jax.jacfwd(f)(x),
        "hessian": lambda: jax.hessian(f)(x),
    }[transform]
    with pytest.raises(TypeError, match=r"softpool_nd.*impl='xla'"):
        run()
    np.testing.assert_allclose(jax.hessian(lambda a: spj.soft_pool(a, 2, impl="xla").sum())(x).shape, (1, 2, 4, 4) * 2)
