"""numba kernel of the forward-mode derivative (Jacobian-vector product) of SoftPool.

For a window W with output y_W and log-sum-exp lse_W the tangent is

    dy_W = sum_{i in W} w_i (1 + beta (x_i - y_W)) dx_i,   w_i = exp(beta x_i - lse_W),

one sweep over the window's cells of x and dx. Windows are independent, so
the kernel splits the output rows of the loop table (``softpool_nd._loops``)
among numba's threads; each window is summed by one thread in a fixed cell
order, so results do not depend on the number of threads.

The numeric rules are those of NUMERICS.md (rules 2-4):

- beta == 0: the mean of dx over the window's real cells (sum, then divide by
  the count), whatever x holds;
- where beta*x_i or lse_W overflowed (an infinite value), the window's weights
  are taken as the forward pass takes them: e_i = exp(beta (x_i - m)) with m
  the maximiser of beta*x found without multiplying (beta*x_i - beta*m where
  x_i - m itself overflowed, weight 0 where that is not finite), w = e / sum e,
  and y_W with them (the given y is not read there: every term stays relative
  to m, so none overflows);
- a cell of weight 0 contributes nothing (its bracket may be infinite);
  x_i - y_W is taken as beta*x_i - beta*y_W only where it overflowed.

The loop table's column GS holds the strides of dx (it holds grad_x's for the
backward); dx's cell offsets come from a copy of the table with those strides
in column XS, through the same ``_window_offsets`` the forward uses.
"""

import numpy as np
from numba import prange

from .._loops import GS, XS, YS, K, O
from ._cache import cached_njit
from ._compile import _OPTIONS, CHUNKSIZE, _inlined, _jit
from ._launch import swap_chunksize
from ._scalar import acc, exp_le0, store
from ._walk import _clip, _next_row, _row_geometry, _row_index, _u, _window_offsets

__all__ = ["jvp_kernel", "dx_table"]


def dx_table(tab):
    """The loop table with dx's strides (column GS) in column XS, for ``_window_offsets``."""
    dtab = tab.copy()
    dtab[:, XS] = tab[:, GS]
    return dtab


@_jit
def _bracket(v, y_w, beta):
    """1 + beta * (v - y_w); beta*v - beta*y_w where v - y_w overflowed; 1 where v == y_w (infinite too)."""
    one = acc(1.0, beta)
    if v == y_w:
        return one
    diff = v - y_w
    if np.isinf(diff):
        return one + (beta * v - beta * y_w)
    return one + beta * diff


@_jit
def _forward_weight(v, m, beta):
    """(e, a): the forward pass's weight e = exp(a) of a cell, a = beta * (v - m) for the maximiser m of beta*x.

    As the forward takes it (rule 3): beta*v - beta*m where v - m overflowed,
    weight 0 where that is not finite either; a = 0 at the maximiser (also an
    infinite one).
    """
    zero = acc(0.0, beta)
    if v == m:
        return acc(1.0, beta), zero
    diff = v - m
    a = beta * v - beta * m if np.isinf(diff) else beta * diff
    # a <= 0 by the choice of m; NaN (an overflowed beta*v - beta*m) is the limit weight 0
    return (exp_le0(a), a) if a <= zero else (zero, zero)


@_inlined
def _window_jvp(x, xb, offs, dx, db, doffs, count, lo, hi, xstep, dstep, y_w, lse_w, beta):
    """dy of one window: cells xb + offs[q] + i*xstep of x and db + doffs[q] + i*dstep of dx, i in [lo, hi)."""
    zero = acc(0.0, beta)
    if beta == zero:
        t = zero
        for q in range(count):
            for i in range(lo, hi):
                t += acc(dx[_u(db + doffs[q] + i * dstep)], beta)
        return t / acc(count * (hi - lo), beta)
    finite = np.isfinite(lse_w)
    t = zero
    if finite:
        for q in range(count):
            for i in range(lo, hi):
                v = acc(x[_u(xb + offs[q] + i * xstep)], beta)
                z = beta * v
                finite = finite and np.isfinite(z)
                # z - lse_w <= 0 up to rounding; exp_le0 is exact for small positive arguments too,
                # and is the backward's exp (no libm call per cell)
                w = exp_le0(z - lse_w)
                if w > zero:
                    t += w * _bracket(v, y_w, beta) * acc(dx[_u(db + doffs[q] + i * dstep)], beta)
        if finite:
            return t
    # beta*x or lse overflowed: the forward's weights, from x and the window's maximiser
    m = acc(x[_u(xb + offs[0] + lo * xstep)], beta)
    for q in range(count):
        for i in range(lo, hi):
            v = acc(x[_u(xb + offs[q] + i * xstep)], beta)
            if (v > m) if beta > zero else (v < m):
                m = v
    # with a_i = beta (x_i - m) and S, A, B, C the sums of e, e dx, e a, e a dx:
    # beta (y - m) = B / S and dy = sum e (1 + a - B/S) dx / S, every term finite
    s = zero
    sa = zero
    sb = zero
    sc = zero
    for q in range(count):
        for i in range(lo, hi):
            e, a = _forward_weight(acc(x[_u(xb + offs[q] + i * xstep)], beta), m, beta)
            if e > zero:
                d = acc(dx[_u(db + doffs[q] + i * dstep)], beta)
                s += e
                sa += e * d
                sb += e * a
                sc += e * a * d
    return (sa + sc - sb / s * sa) / s


@cached_njit(parallel=True, **_OPTIONS)
def jvp_kernel(x, x0, dx, d0, tab, dtab, beta, y, lse, dy, tasks):
    """Write dy for every window; x, dx, y, lse and dy are flat buffers (see ``softpool_nd.cpu.backend``).

    ``tab`` is the loop table (x strides in XS, dx strides in GS, output
    strides in YS), ``dtab`` is ``dx_table(tab)``, ``x0``/``d0`` the offsets
    of x[0, ..., 0] and dx[0, ..., 0], ``beta`` in the accumulation type,
    ``tasks`` the most blocks of output rows to run in parallel.
    """
    inner = tab.shape[0] - 1
    rows = 1
    cells = 1
    for a in range(inner):
        rows *= tab[a, O]
        cells *= tab[a, K]
    Li, Oi, Ki, Si, Di, Pi = _row_geometry(tab, inner)
    xs, ds, ys = tab[inner, XS], tab[inner, GS], tab[inner, YS]
    n_chunks = max(1, min(rows, tasks))
    caller = swap_chunksize(CHUNKSIZE)
    for c in prange(n_chunks):
        r0 = c * rows // n_chunks
        r1 = (c + 1) * rows // n_chunks
        idx = np.zeros(max(inner, 1), np.int64)
        offs = np.empty(cells, np.int64)
        doffs = np.empty(cells, np.int64)
        if r0 < r1:
            _row_index(tab, r0, O, idx)
        for r in range(r0, r1):
            if r > r0:
                _next_row(tab, O, idx)
            count, ybase = _window_offsets(tab, idx, offs)
            _window_offsets(dtab, idx, doffs)
            for o in range(Oi):
                start = o * Si - Pi
                lo, hi = _clip(start, Ki, Di, Li)
                at = ybase + o * ys
                v = _window_jvp(
                    x,
                    x0 + start * xs,
                    offs,
                    dx,
                    d0 + start * ds,
                    doffs,
                    count,
                    lo,
                    hi,
                    Di * xs,
                    Di * ds,
                    acc(y[at], beta),
                    acc(lse[at], beta),
                    beta,
                )
                dy[at] = store(v, dy)
    swap_chunksize(caller)
