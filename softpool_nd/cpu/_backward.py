"""The backward, cell-major: per input cell, the sum of its shares of the windows it lies in.

The backward gathers per input cell: each cell sums its share of every window
it lies in, so nothing is written twice and no atomics are needed. The
per-cell gradient (``_cell_grad``) and its numeric rules (``_lse_ok``,
``_fallback_weight``: NUMERICS.md rule 4) are shared with the tiled backward
(``_tiled``). Here it walks input rows (cell-major): ``_backward_sweep_for``
builds, for a configuration class's constants, the sweep over a block of a
row's cells, ``_backward_units_for`` the class's loop over its work units
(see ``_walk._cell_work``), which leaves the cells the sweep does not take to
the per-cell path.
"""

import numpy as np

from .._loops import GS, XS, YS, D, K, L, O, P, S
from ._compile import _inlined, _jit
from ._forward import _half, _sign, _weight
from ._scalar import acc, exp_le0, store
from ._walk import (
    BLOCK,
    LANES,
    _block_cells,
    _clip,
    _containing,
    _containing_offsets,
    _first_unit,
    _member,
    _next_unit,
    _row_geometry,
    _u,
    bases_for,
)

#: The cell-major backward sweeps' step; their bodies are small enough for LLVM to unroll
#: a constant 16-iteration loop instead of vectorising it, so a sweep runs its
#: whole steps as one loop of a multiple of BACK_LANES iterations.
BACK_LANES = 64


@_jit
def _z(v, beta):
    """beta * v, with beta = 0 meaning weight exp(-lse) = 1/count for every cell (infinities too)."""
    return v * beta if beta != acc(0.0, beta) else acc(0.0, beta)


#: lse of a window below which, with |beta| > 1, some beta*x of the window may
#: have overflowed to -inf while its weight exp(beta*x - lse) is not 0.
_LSE_LOW = -1e38


@_jit
def _lse_ok(lse_w, beta):
    """True when exp(beta*x - lse_w) is the window's weight of every finite x in it.

    For |beta| <= 1, beta*x and lse never overflow (finite x). Otherwise they
    may (issue #13 item 5): then lse_w must be finite, and far enough from
    -inf that a beta*x of -inf (below -fmax) has weight 0. Other windows take
    ``_fallback_weight``.
    """
    return not abs(beta) > acc(1.0, beta) or (lse_w > acc(_LSE_LOW, beta) and lse_w < acc(np.inf, beta))


@_jit
def _all_lse_ok(lse, i0, i1, beta):
    """``_lse_ok`` for every window of lse[i0:i1] (clamped to lse): may a sweep take them all?"""
    if not abs(beta) > acc(1.0, beta):
        return True
    ok = True
    for i in range(max(i0, 0), min(i1, lse.size)):
        ok &= _lse_ok(lse[_u(i)], beta)
    return ok


@_jit
def _advance(cur, lo, hi):
    """The next multi-index of the box [lo, hi) after cur, the last axis fastest; False after the last."""
    for a in range(cur.size - 1, -1, -1):
        cur[a] += 1
        if cur[a] < hi[a]:
            return True
        cur[a] = lo[a]
    return False


@_jit
def _window_stats(x, x0, tab, at, beta):
    """(maximiser, weight sum) of the window at flat output offset ``at``, as the forward computes them.

    The window's multi-index is read back from ``at`` (output-shaped arrays are
    dense, strides YS); its cells are walked over every dimension of ``tab``.
    """
    n = tab.shape[0]
    lo = np.empty(n, np.int64)
    hi = np.empty(n, np.int64)
    first = x0
    for a in range(n):
        o = (at // tab[a, YS]) % tab[a, O] if tab[a, O] > 1 else 0
        start = o * tab[a, S] - tab[a, P]
        lo[a], hi[a] = _clip(start, tab[a, K], tab[a, D], tab[a, L])
        first += start * tab[a, XS]
        if hi[a] == lo[a]:
            return acc(np.nan, beta), np.nan
    sgn = _sign(beta)
    ms = acc(0.0, beta)
    s = 0.0
    for sweep in range(2):
        cur = lo.copy()
        more = True
        seed = True
        while more:
            off = first
            for a in range(n):
                off += cur[a] * tab[a, D] * tab[a, XS]
            v = acc(x[_u(off)], beta)
            if sweep == 0:
                # the first cell seeds the maximum, as in ``_window`` (a flag,
                # not np.all(cur == lo): no temporary array per cell, and no
                # NumPy-array machinery for numba to compile and load)
                ms = sgn * v if sgn * v > ms or seed else ms
                seed = False
            else:
                s += _weight(v, sgn * ms, beta)
            more = _advance(cur, lo, hi)
    return sgn * ms, s


@_jit
def _fallback_weight(x, x0, tab, at, v, beta, memo):
    """The weight of a cell with value v in the window at output offset ``at``, from the window's
    maximiser and weight sum (NUMERICS rule 4); ``memo`` keeps the last window's (at, m, s)."""
    if memo[0] != at:
        m, s = _window_stats(x, x0, tab, at, beta)
        memo[0], memo[1], memo[2] = at, m, s
    return acc(_weight(v, acc(memo[1], beta), beta) / memo[2], beta)


@_jit
def _memo():
    """An empty ``_fallback_weight`` memo."""
    memo = np.empty(3, np.float64)
    memo[0] = -1.0
    return memo


@_jit
def _term_w(w, v, gy_w, y_w, beta, exact):
    """The share, of weight w, of a window in the gradient of a cell with value v.

    Takes window w's grad_y and y (read only when ``exact``) as
    accumulation-type scalars: an array argument would cost reference counting
    calls, which keep a loop from vectorising. The bracket 1 + beta*(v - y) is
    taken on halved values, as the forward's weights (no overflow of v - y).
    """
    zero = acc(0.0, beta)
    if w == zero:
        return zero
    term = w * gy_w
    if exact and beta != zero:
        term *= acc(1.0, beta) + beta * (_half(v) - _half(y_w)) * acc(2.0, beta)
    return term


@_jit
def _term(v, z, lse_w, gy_w, y_w, beta, exact):
    """``_term_w`` with the weight exp(z - lse_w) (z = beta*v), for a window that is ``_lse_ok``."""
    return _term_w(exp_le0(z - lse_w), v, gy_w, y_w, beta, exact)


def _cell_grad(gy, x, y, lse, xj, j, offs, count, Ki, Si, Di, Pi, Oi, ys, beta, exact, x0, tab, memo):
    """(grad of input cell j (at flat position xj) of a row, windows in ascending order; done).

    With ``memo`` None (``_cell_backward``, inlined in every per-cell path) a
    window that is not ``_lse_ok`` leaves the cell undone (done False; numba
    prunes the other branch); the caller then calls ``_cell_backward_careful``,
    the same function compiled apart with a memo, which takes those windows'
    weights from ``_fallback_weight``. The rare path stays out of the hot one:
    inlined there, it made the k3s2 backward 1.4x slower. For the same reason
    each caller writes out both calls: an inlined wrapper doing the two made
    the k3s2 backward 1.2x (NCHW) to 2.5x (channels-last) slower.
    """
    v = acc(x[_u(xj)], beta)
    z = _z(v, beta)
    g = acc(0.0, beta)
    done = True
    lo, hi = _containing(j, Ki, Si, Di, Pi, Oi)
    for o in range(lo, hi):
        if _member(j, o, Si, Di, Pi):
            for q in range(count):
                at = offs[q] + o * ys
                lse_w = acc(lse[at], beta)
                if _lse_ok(lse_w, beta):
                    w = exp_le0(z - lse_w)
                elif memo is None:
                    done = False
                    w = acc(0.0, beta)
                else:
                    w = _fallback_weight(x, x0, tab, at, v, beta, memo)
                y_w = acc(y[at], beta) if exact else z
                g += _term_w(w, v, acc(gy[at], beta), y_w, beta, exact)
    return g, done


_cell_backward = _inlined(_cell_grad)
_cell_backward_careful = _jit(_cell_grad)


def _backward_sweep_for(kc, sc, cc):
    """The backward sweep for kernel kc, stride sc and cc outer windows per cell, all constants.

    It writes the gradients of a row's cells j = c*sc + u (0 <= u < sc) for c
    in [c0, c1), unit strides: cell j sits at xb + j in x and gb + j in gx and
    lies in the windows c - b with b*sc + u < kc, at offs[q] + yb + c - b in
    the output-shaped arrays. The windows are summed in the order of
    ``_cell_backward``. The loop over c runs in whole BACK_LANES steps, then
    in a loop of LANES steps (a multiple of LANES iterations, not a constant,
    so it is vectorised, not unrolled) whose last step is padded, as in the
    forward sweep, with extra cells (gathered into ``g``, never stored) when
    they lie inside the arrays: a 28-window row computes 32 cells, not 64.
    As the forward sweep, it returns how many of the c it did: none when a
    window needs ``_fallback_weight`` (see ``_lse_ok``), which only the per-cell
    path takes.
    """
    last = (kc - 1) // sc
    cell_bases, base, top_of = bases_for(cc)

    @_inlined
    def step(gy, x, y, lse, xb, yb, bases, c0, cs, width, beta, exact, g):
        zero = acc(0.0, beta)
        for j in range(width):
            c = cs + j
            for u in range(sc):
                v = acc(x[_u(xb + c * sc + u)], beta)
                z = _z(v, beta)
                gj = zero
                for bb in range(last + 1):
                    b = last - bb
                    if b * sc + u < kc:
                        for q in range(cc):
                            at = _u(base(q, bases) + yb + c - b)
                            y_w = acc(y[at], beta) if exact else z
                            gj += _term(v, z, acc(lse[at], beta), acc(gy[at], beta), y_w, beta, exact)
                g[_u((c - c0) * sc + u)] = gj

    @_jit
    def sweep(gy, x, y, lse, gx, xb, gb, yb, offs, c0, c1, beta, exact, g):
        bases = cell_bases(offs, cc)
        top = top_of(bases)
        n = c1 - c0
        for q in range(cc):
            if not _all_lse_ok(lse, base(q, bases) + yb + c0 - last, base(q, bases) + yb + c1, beta):
                return 0  # the per-cell path takes the windows that need it
        spare = min((x.size - xb) // sc, lse.size - top - yb) - c1
        steps = n // BACK_LANES
        rest = n - steps * BACK_LANES
        tail = (rest + LANES - 1) // LANES if (LANES - rest % LANES) % LANES <= spare else rest // LANES
        # one loop over whole steps: its trip count is a multiple of any vector
        # width and unroll factor LLVM picks, so no scalar remainder runs
        step(gy, x, y, lse, xb, yb, bases, c0, c0, steps * BACK_LANES, beta, exact, g)
        c = c0 + steps * BACK_LANES
        step(gy, x, y, lse, xb, yb, bases, c0, c, tail * LANES, beta, exact, g)
        done = min(n, steps * BACK_LANES + tail * LANES)
        for i in range(done * sc):
            gx[_u(gb + c0 * sc + i)] = store(g[_u(i)], gx)
        return done

    return sweep


@_inlined
def _no_cell_sweep(gy, x, y, lse, gx, xb, gb, yb, offs, c0, c1, beta, exact, g):
    """The general kernel's sweep: it takes no cell (every one takes the per-cell path)."""
    return 0


def _backward_units_for(sweep, windows, sweep_one=_no_cell_sweep, sweep_part=_no_cell_sweep, part=0):
    """Backward over the work units [u0, u1) (see ``_cell_work``) for one configuration class.

    Block cells of rows in ``windows`` outer windows take ``sweep``, those of
    rows in one window, in a class of more, ``sweep_one``, and those of rows
    in ``part`` ``sweep_part`` (channels-last k3s2, class 4: its rows along
    each of the two outer axes alternate between two windows and one, so a
    row is in 4, 2 or 1; k3s1 p1, class 9: 6 along a padded border) (the
    general kernel has ``_no_cell_sweep`` for all); all other cells, those
    next to clipped windows included, take ``_cell_backward``.
    """

    @_inlined
    def units(args, u0, u1, offs, idx, scratch):
        x, x0, tab, beta, gy, y, lse, exact, gx = args
        gbuf = scratch[0]
        memo = _memo()
        inner = tab.shape[0] - 1
        Li, Oi, Ki, Si, Di, Pi = _row_geometry(tab, inner)
        xs, ys, gs = tab[inner, XS], tab[inner, YS], tab[inner, GS]
        oa, cf, n, n_blocks = _block_cells(Oi, Li, Ki, Si, Di, Pi)
        # Block cells: those of c in [cf, n), clamped to the row: with a stride
        # longer than the window, the last block would run past it.
        j0 = oa * Si - Pi
        ja = min(Li, j0 + cf * Si) if n else Li
        jb = max(ja, min(Li, j0 + n * Si)) if n else Li
        bi = _first_unit(tab, u0, n_blocks, L, idx)
        for u in range(u0, u1):
            if u > u0:
                bi = _next_unit(tab, bi, n_blocks, L, idx)
            count, xbase, gbase = _containing_offsets(tab, idx, offs)
            c0 = cf + bi * BLOCK
            c1 = min(n, c0 + BLOCK)
            done = 0
            if count == windows and c1 > c0:
                done = sweep(gy, x, y, lse, gx, x0 + xbase + j0, gbase + j0, oa, offs, c0, c1, beta, exact, gbuf)
            elif count == 1 and c1 > c0:
                done = sweep_one(gy, x, y, lse, gx, x0 + xbase + j0, gbase + j0, oa, offs, c0, c1, beta, exact, gbuf)
            elif count == part and c1 > c0:
                done = sweep_part(gy, x, y, lse, gx, x0 + xbase + j0, gbase + j0, oa, offs, c0, c1, beta, exact, gbuf)
            ca = max(ja, j0 + c0 * Si)
            cb = max(ca, min(jb, j0 + c1 * Si))
            first = 0 if bi == 0 else ca
            last = Li if bi == n_blocks - 1 else cb
            # the cells of [first, last) that the sweep did not do
            gap = max(ca, min(jb, j0 + (c0 + done) * Si)) - ca
            for i in range(first, last - gap):
                j = i if i < ca else i + gap
                xj = x0 + xbase + j * xs
                g, ok = _cell_backward(
                    gy,
                    x,
                    y,
                    lse,
                    xj,
                    j,
                    offs,
                    count,
                    Ki,
                    Si,
                    Di,
                    Pi,
                    Oi,
                    ys,
                    beta,
                    exact,
                    x0,
                    tab,
                    None,
                )
                if not ok:
                    g = _cell_backward_careful(
                        gy,
                        x,
                        y,
                        lse,
                        xj,
                        j,
                        offs,
                        count,
                        Ki,
                        Si,
                        Di,
                        Pi,
                        Oi,
                        ys,
                        beta,
                        exact,
                        x0,
                        tab,
                        memo,
                    )[0]
                gx[gbase + j * gs] = store(g, gx)

    return units
