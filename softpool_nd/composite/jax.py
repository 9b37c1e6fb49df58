"""The SoftPool decomposition in jax.numpy operations (see :mod:`softpool_nd.composite`).

What ``softpool_nd.jax.soft_pool(..., impl="xla")`` runs: pad, strided
slices, maximum, exp and sums, compiled by XLA for any device and
differentiated by JAX (jit, grad, vmap, jvp, jacfwd, hessian).
"""

import jax
import jax.numpy as jnp

__all__ = ["pool"]


def _count(plan, dtype):
    """Real cells of each window, broadcastable against the output: per pooled axis, window sums of padded ones."""
    count = 1.0
    ndim = len(plan.geom.in_shape)
    for a in plan.geom.axes:
        shape = [1] * ndim
        shape[a] = plan.geom.in_shape[a]
        pads = [(0, 0)] * ndim
        pads[a] = plan.pads[a]
        ones = jnp.pad(jnp.ones(shape, dtype), pads)
        lead = (slice(None),) * a
        cells = [ones[lead + (sl,)] for sl in plan.slices[a]]
        count = count * sum(cells[1:], cells[0])
    return count


def pool(x, plan, beta, gradient="exact"):
    """SoftPool of a floating JAX array ``x`` over ``plan`` (a :class:`softpool_nd.composite.Plan`).

    ``beta`` is a checked Python float; ``gradient`` is ``'exact'`` or
    ``'weights'``. Returns ``y`` in ``x``'s dtype, computed in float32
    (float64 for float64 ``x``).

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from softpool_nd.composite import plan
    >>> pool(jnp.array([0.0, 1.0, 4.0, 4.0]), plan((4,), 2), 1.0)
    Array([0.7310586, 4.       ], dtype=float32)
    """
    acc = jnp.float64 if x.dtype == jnp.float64 else jnp.float32
    xa = x.astype(acc)
    if beta == 0.0:
        xp = jnp.pad(xa, plan.pads, constant_values=0)
        offsets = plan.offsets
        total = xp[offsets[0]]
        for off in offsets[1:]:
            total = total + xp[off]
        return (total / _count(plan, acc)).astype(x.dtype)
    if beta < 0:
        # the soft minimum is minus the soft maximum of -x: negation is exact
        return -pool(-x, plan, -beta, gradient)
    xp = jnp.pad(xa, plan.pads, constant_values=-jnp.inf)
    cells = [xp[off] for off in plan.offsets]
    m = cells[0]
    for v in cells[1:]:
        m = jnp.maximum(m, v)
    # y is the same for any m (dy/dm = 0), so differentiation may treat it as a constant
    m = jax.lax.stop_gradient(m)
    m_fin = jnp.isfinite(m)
    m0 = jnp.where(m_fin, m, 0)
    beta_m0, half_m0 = beta * m0, 0.5 * m0
    s = t = t_half = 0
    parts = []  # what gradient='weights' needs
    for v in cells:
        d = v - m
        # d <= 0 or NaN (padding is -inf, m the maximum): finite exactly where above -inf
        fin = d > -jnp.inf
        d0 = jnp.where(fin, d, 0)
        # x_off - m overflowed for finite x_off and m (v > -inf: v = +inf would make m infinite)
        over = (d == -jnp.inf) & (v > -jnp.inf) & m_fin
        # then the weight is exp(beta*x_off - beta*m); a cell equal to an infinite maximum weighs 1;
        # otherwise d is -inf (weight 0) or NaN
        z = jnp.where(fin, beta * d0, jnp.where(over, beta * v - beta_m0, jnp.where(v == m, 0, d)))
        e = jnp.exp(z)
        s = s + e
        t = t + e * d0
        # an overflowed difference may not fit even times e: its moment is accumulated halved
        t_half = t_half + e * jnp.where(over, 0.5 * v - half_m0, 0)
        if gradient == "weights":
            parts.append((e, v))
    # m + t/s, exactly when nothing overflowed (halving is exact), and finite wherever y is
    y = 2 * (0.5 * m + (0.5 * t + t_half) / s)
    if gradient == "weights":
        # value exactly 0, derivative sum(w * dx): the weights held constant
        y = jax.lax.stop_gradient(y)
        for e, v in parts:
            v0 = jnp.where(jnp.isfinite(v), v, 0)
            y = y + jax.lax.stop_gradient(e / s) * (v0 - jax.lax.stop_gradient(v0))
    return y.astype(x.dtype)
