"""numba kernels: where a SoftPool window is reduced on the CPU.

Every kernel walks a loop table (see ``softpool_nd._loops``): rows of
(L, O, K, S, D, P, XS, YS, GS), the last row being the innermost loop.
Arrays arrive as flat 1-D buffers plus the element offset of their first
element, so one compiled kernel serves every rank and memory layout, and all
index arithmetic is int64.

Per window the forward pass does two sweeps over the (cached) cells: the
maximum of z = beta * x, then the sums s = sum(e) and t = sum(e * (x - ref)),
with e = exp(z - max) and ref the value at the maximum. Shifting by ref keeps
t bounded for finite inputs of any magnitude; e is exactly 1 at the maximum,
so infinite maxima give weight 1 instead of exp(inf - inf).
"""
import numpy as np
from numba import njit, prange

from .._loops import D, GS, K, L, O, P, S, XS, YS
from ._scalar import acc, store


@njit(inline="always")
def _clip(start, k, d, n):
    """Range [lo, hi) of window indices i with 0 <= start + i*d < n."""
    lo = 0 if start >= 0 else (-start + d - 1) // d
    hi = k if start + (k - 1) * d < n else (n - 1 - start) // d + 1
    return lo, max(lo, hi)


@njit(inline="always")
def _window_offsets(tab, r, offs):
    """Offsets of the window cells along the outer dimensions for output row r.

    Returns (number of cells, output offset of the row). The cell list is the
    product of each outer dimension's clipped window, expanded in place.
    """
    n_outer = tab.shape[0] - 1
    offs[0] = 0
    count = 1
    ybase = 0
    rem = r
    for a in range(n_outer - 1, -1, -1):
        o = rem % tab[a, O]
        rem //= tab[a, O]
        ybase += o * tab[a, YS]
        start = o * tab[a, S] - tab[a, P]
        lo, hi = _clip(start, tab[a, K], tab[a, D], tab[a, L])
        w = hi - lo
        for j in range(count - 1, -1, -1):
            base = offs[j]
            for i in range(lo, hi):
                offs[j * w + i - lo] = base + (start + i * tab[a, D]) * tab[a, XS]
        count *= w
    return count, ybase


@njit(parallel=True, cache=True)
def forward(x, x0, tab, beta, y, lse, tasks):
    """SoftPool forward: y and lse (both flat, offset 0, strides in column YS).

    Work is split into at most ``tasks`` contiguous blocks of rows, each with its
    own scratch; the split never changes a result, only who computes it.
    """
    inner = tab.shape[0] - 1
    n_rows = 1
    cells = 1
    for a in range(inner):
        n_rows *= tab[a, O]
        cells *= tab[a, K]
    Li, Oi, Ki, Si, Di, Pi = tab[inner, L], tab[inner, O], tab[inner, K], tab[inner, S], tab[inner, D], tab[inner, P]
    xs, ys = tab[inner, XS], tab[inner, YS]
    one = acc(1.0, beta)
    zero = acc(0.0, beta)
    n_chunks = max(1, min(n_rows, tasks))
    for c in prange(n_chunks):
        offs = np.empty(cells, np.int64)
        for r in range(c * n_rows // n_chunks, (c + 1) * n_rows // n_chunks):
            count, ybase = _window_offsets(tab, r, offs)
            for o in range(Oi):
                start = o * Si - Pi
                lo, hi = _clip(start, Ki, Di, Li)
                first = x0 + offs[0] + (start + lo * Di) * xs
                ref = acc(x[first], beta)
                m = ref * beta if beta != zero else zero
                for q in range(count):
                    for i in range(lo, hi):
                        v = acc(x[x0 + offs[q] + (start + i * Di) * xs], beta)
                        z = v * beta if beta != zero else zero
                        if z > m:
                            m = z
                            ref = v
                if not np.isfinite(ref):
                    ref = zero
                s = zero
                t = zero
                for q in range(count):
                    for i in range(lo, hi):
                        v = acc(x[x0 + offs[q] + (start + i * Di) * xs], beta)
                        z = v * beta if beta != zero else zero
                        e = one if z == m else np.exp(z - m)
                        s += e
                        t += e * (v - ref) if e > zero else zero
                out = ybase + o * ys
                y[out] = store(ref + t / s, y)
                lse[out] = m + np.log(s)


@njit(inline="always")
def _containing(j, k, s, d, p, n_out):
    """Range [lo, hi) of windows o whose cells along one axis may include input j."""
    lo = max(0, (j + p - (k - 1) * d + s - 1) // s) if j + p - (k - 1) * d > 0 else 0
    hi = min(n_out, (j + p) // s + 1)
    return lo, max(lo, hi)


@njit(inline="always")
def _member(j, o, s, d, p):
    """True when window o has a cell exactly at input j (dilation can skip it)."""
    return (j + p - o * s) % d == 0


@njit(inline="always")
def _containing_offsets(tab, r, offs):
    """Output offsets of the windows containing input row r along the outer dimensions.

    Returns (number of windows, input offset of the row, grad offset of the row).
    """
    n_outer = tab.shape[0] - 1
    offs[0] = 0
    count = 1
    xbase = 0
    gbase = 0
    rem = r
    for a in range(n_outer - 1, -1, -1):
        j = rem % tab[a, L]
        rem //= tab[a, L]
        xbase += j * tab[a, XS]
        gbase += j * tab[a, GS]
        lo, hi = _containing(j, tab[a, K], tab[a, S], tab[a, D], tab[a, P], tab[a, O])
        w = 0
        for o in range(lo, hi):
            if _member(j, o, tab[a, S], tab[a, D], tab[a, P]):
                w += 1
        for q in range(count - 1, -1, -1):
            base = offs[q]
            n = 0
            for o in range(lo, hi):
                if _member(j, o, tab[a, S], tab[a, D], tab[a, P]):
                    offs[q * w + n] = base + o * tab[a, YS]
                    n += 1
        count *= w
    return count, xbase, gbase


@njit(parallel=True, cache=True)
def backward(gy, x, x0, y, lse, tab, beta, exact, gx, tasks):
    """Vector-Jacobian product, gathered per input cell (no atomics).

    gy, y and lse are flat output-shaped buffers sharing column YS; gx is a
    flat buffer with strides in column GS. ``exact`` False gives the
    paper's rule (weights treated as constants) and never reads y.
    """
    inner = tab.shape[0] - 1
    n_rows = 1
    windows = 1
    for a in range(inner):
        n_rows *= tab[a, L]
        windows *= (tab[a, D] * (tab[a, K] - 1)) // tab[a, S] + 1
    Li, Oi, Ki, Si, Di, Pi = tab[inner, L], tab[inner, O], tab[inner, K], tab[inner, S], tab[inner, D], tab[inner, P]
    xs, ys, gs = tab[inner, XS], tab[inner, YS], tab[inner, GS]
    zero = acc(0.0, beta)
    one = acc(1.0, beta)
    n_chunks = max(1, min(n_rows, tasks))
    for c in prange(n_chunks):
        offs = np.empty(windows, np.int64)
        for r in range(c * n_rows // n_chunks, (c + 1) * n_rows // n_chunks):
            count, xbase, gbase = _containing_offsets(tab, r, offs)
            for j in range(Li):
                v = acc(x[x0 + xbase + j * xs], beta)
                z = v * beta if beta != zero else zero
                g = zero
                lo, hi = _containing(j, Ki, Si, Di, Pi, Oi)
                for o in range(lo, hi):
                    if not _member(j, o, Si, Di, Pi):
                        continue
                    for q in range(count):
                        w_at = offs[q] + o * ys
                        w = np.exp(z - acc(lse[w_at], beta))
                        if w != zero:
                            term = w * acc(gy[w_at], beta)
                            if exact and beta != zero:
                                term *= one + beta * (v - acc(y[w_at], beta))
                            g += term
                gx[gbase + j * gs] = store(g, gx)
