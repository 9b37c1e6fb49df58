"""SoftPool for JAX (``pip install softpool_nd[jax]``), in two implementations.

``impl="xla"`` runs the decomposition of :mod:`softpool_nd.composite` in
``jax.numpy``: XLA compiles it for the CPU, a GPU or a TPU, and JAX
differentiates it, so ``jit``, ``grad``, ``vmap``, ``jvp``, ``jacfwd`` and
``hessian`` all work. It is the default for arrays on a device other than the
CPU.

``impl="callback"`` calls :func:`softpool_nd.forward` and
:func:`softpool_nd.backward` on the host through :func:`jax.pure_callback`
with a custom VJP: ``jit``, ``grad`` and ``vmap``, reverse mode only. It is
the default on the CPU, where the numba kernels are faster than XLA's code
(``benchmarks/composite.py``). On a GPU or TPU it would copy every input to
host memory and back.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from . import _api, composite
from ._dtypes import accumulation_dtype
from ._geometry import make_geometry
from .composite import jax as _xla

__all__ = ["soft_pool"]

_NUMPY_FLOATS = (np.float16, np.float32, np.float64)


def _host(a):
    """A NumPy view of a callback argument, float32 for a dtype the kernels lack (bfloat16)."""
    a = np.asarray(a)
    return a if a.dtype.type in _NUMPY_FLOATS else a.astype(np.float32)


def _shifted(params, extra):
    """Core keyword arguments for an input with ``extra`` leading (vmapped) axes."""
    geom, ceil_mode, beta = params
    return dict(
        kernel=geom.kernel,
        stride=geom.stride,
        padding=tuple(zip(geom.pad_lo, geom.pad_hi)),
        dilation=geom.dilation,
        ceil_mode=ceil_mode,
        axes=tuple(a + extra for a in geom.axes),
        beta=beta,
    )


def _shapes(x, params):
    """Shapes and dtypes of (y, lse), as softpool_nd.forward gives them."""
    out_shape = params[0].out_shape
    return jax.ShapeDtypeStruct(out_shape, x.dtype), jax.ShapeDtypeStruct(out_shape, accumulation_dtype(x.dtype))


def _host_pool(x, *, params, dtype):
    x = _host(x)
    return _api.pool(x, **_shifted(params, x.ndim - len(params[0].in_shape))).astype(dtype, copy=False)


def _host_forward(x, *, params, dtype):
    x = _host(x)
    y, lse = _api.forward(x, **_shifted(params, x.ndim - len(params[0].in_shape)))
    return y.astype(dtype, copy=False), lse


def _host_backward(grad_y, x, y, lse, *, params, gradient, dtype):
    x = _host(x)
    kwargs = _shifted(params, x.ndim - len(params[0].in_shape))
    grad_x = _api.backward(_host(grad_y), x, y=_host(y), lse=np.asarray(lse), gradient=gradient, **kwargs)
    return grad_x.astype(dtype, copy=False)


# vmap adds leading axes; vmap_method="broadcast_all" gives every argument all of them, which _shifted handles


@partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _pool(x, params, gradient):
    # without differentiation only y is needed: pool skips computing lse
    return jax.pure_callback(
        partial(_host_pool, params=params, dtype=x.dtype), _shapes(x, params)[0], x, vmap_method="broadcast_all"
    )


def _pool_fwd(x, params, gradient):
    y, lse = jax.pure_callback(
        partial(_host_forward, params=params, dtype=x.dtype), _shapes(x, params), x, vmap_method="broadcast_all"
    )
    return y, (x, y, lse)


def _pool_bwd(params, gradient, residuals, grad_y):
    x, y, lse = residuals
    grad_x = jax.pure_callback(
        partial(_host_backward, params=params, gradient=gradient, dtype=x.dtype),
        jax.ShapeDtypeStruct(x.shape, x.dtype),
        grad_y,
        x,
        y,
        lse,
        vmap_method="broadcast_all",
    )
    return (grad_x,)


_pool.defvjp(_pool_fwd, _pool_bwd)


def soft_pool(
    x,
    kernel=2,
    stride=None,
    padding=0,
    *,
    dilation=1,
    ceil_mode=False,
    axes=None,
    beta=1.0,
    gradient="exact",
    impl=None,
):
    """SoftPool of a JAX array, differentiable and usable under ``jit`` and ``vmap``.

    On the CPU the pooling runs on softpool_nd's kernels through
    :func:`jax.pure_callback`; elsewhere (or with ``impl='xla'``) as XLA
    operations (see the module docstring).

    Parameters
    ----------
    x : jax.Array
        Input of any rank. float16, bfloat16, float32 and float64 keep their
        dtype (bfloat16 computes in float32); integer inputs are pooled in the
        default float dtype.
    kernel, stride, padding, dilation, ceil_mode, axes, beta
        As in :func:`softpool_nd.pool`; they must be Python values (static
        under ``jit``).
    gradient : {'exact', 'weights'}, default 'exact'
        The gradient ``jax.grad`` uses, as in :func:`softpool_nd.backward`.
    impl : {None, 'xla', 'callback'}, default None
        None: ``'callback'`` for arrays on the CPU (under ``jit``: when the
        default backend is the CPU), ``'xla'`` otherwise. See the module
        docstring; only ``'xla'`` supports forward mode (``jvp``, ``jacfwd``,
        ``hessian``).

    Returns
    -------
    jax.Array
        Pooled array of shape :func:`softpool_nd.output_shape` of ``x.shape``.

    Examples
    --------
    >>> import jax, jax.numpy as jnp
    >>> from softpool_nd.jax import soft_pool
    >>> x = jnp.array([0.0, 1.0, 4.0, 4.0])
    >>> soft_pool(x, 2)
    Array([0.7310586, 4.       ], dtype=float32)
    >>> jax.grad(lambda x: soft_pool(x, 2).sum())(x)
    Array([0.07232948, 0.92767054, 0.5       , 0.5       ], dtype=float32)
    >>> jax.jvp(lambda x: soft_pool(x, 2, impl="xla"), (x,), (jnp.ones(4),))[1]
    Array([1., 1.], dtype=float32)
    """
    x = jnp.asarray(x)
    # every check happens here: an exception raised inside a pure_callback is undefined behaviour in JAX
    if jnp.issubdtype(x.dtype, jnp.integer) or x.dtype == jnp.bool_:
        x = x.astype(jnp.result_type(float))
    elif not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"x has dtype {x.dtype} (input shape {tuple(x.shape)}); SoftPool takes floating, integer or bool arrays"
        )
    _api._check_gradient(gradient, tuple(x.shape))
    # the accumulation dtype bounds beta (checked here, not inside the callback)
    beta = _api._check_beta(beta, tuple(x.shape), accumulation_dtype(x.dtype))
    if impl is None:
        impl = _default_impl(x)
    elif impl not in ("xla", "callback"):
        raise ValueError(f"impl={impl!r} must be None, 'xla' or 'callback' (input shape {tuple(x.shape)})")
    if impl == "xla":
        p = composite.plan(x.shape, kernel, stride, padding, dilation, ceil_mode, axes)
        return _xla.pool(x, p, beta, gradient)
    geom = make_geometry(x.shape, kernel, stride, padding, dilation, ceil_mode, axes)
    params = (geom, ceil_mode, beta)
    try:
        return _pool(x, params, gradient)
    except (TypeError, ValueError) as err:
        # JAX refuses forward mode on a custom_vjp (TypeError) or on the callback inside it (ValueError)
        if "forward-mode" not in str(err) and "JVP" not in str(err):
            raise
        raise TypeError(
            f"softpool_nd.jax.soft_pool(impl='callback') supports jit, vmap and reverse mode (grad, vjp, jacrev), "
            f"not forward mode (jvp, jacfwd, hessian); pass impl='xla' for every transformation "
            f"(input shape {tuple(x.shape)})"
        ) from err


def _default_impl(x):
    """'xla' where x lives on (or, traced, jit compiles for) a device other than the CPU, else 'callback'."""
    devices = getattr(x, "devices", None)
    try:
        platforms = {d.platform for d in devices()} if devices is not None else None
    except jax.errors.ConcretizationTypeError:  # a tracer has no devices
        platforms = None
    if platforms is None:
        platforms = {jax.default_backend()}
    return "callback" if platforms == {"cpu"} else "xla"
