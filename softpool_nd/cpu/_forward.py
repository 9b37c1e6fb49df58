"""The forward: a window's (y, lse), per window and in vectorised sweeps.

Per window the forward pass does two sweeps over the (cached) cells (the
numeric rules are /NUMERICS.md's, issue #13): the maximiser m of beta * x,
found as the maximum of sign(beta) * x (no product that can overflow), then
the sums s = sum(e) and t = sum(e * (x - ref)), with e = exp(beta * (x - m))
in (0, 1] and ref = m (0 when m is infinite or beta = 0, where y is the plain
mean). Shifting by ref keeps t bounded for finite inputs of any magnitude and
any accepted beta; e is exactly 1 at the maximiser, so infinite maxima give
weight 1 instead of exp(inf - inf). lse = beta * m + log(s).

``_window`` computes one window of any geometry. ``_sweep_for`` builds, for
a configuration class's constants, the sweep that computes a whole block of
a row's unclipped windows at a time, the window index being the vectorised
loop; ``_forward_units_for`` the class's loop over its work units, which
leaves the windows the sweep does not take to ``_window``. Both paths
evaluate the same formula in the same cell order, so they give the same bits.
"""

import numpy as np

from .._loops import XS, YS, D, K, L, O, P, S
from ._compile import _inlined, _jit
from ._scalar import acc, exp_le0, log_ge1, mul_nc, store
from ._walk import (
    BLOCK,
    LANES,
    _clip,
    _first_window_unit,
    _interior,
    _n_blocks,
    _next_window_unit,
    _row_geometry,
    _u,
    bases_for,
    borrowed,
    keep_alive,
    wide_vectors,
)


@_jit
def _sign(beta):
    """1 or -1: the maximiser of beta*x is the maximum of _sign(beta)*x, found without overflow."""
    return acc(-1.0, beta) if beta < acc(0.0, beta) else acc(1.0, beta)


@_jit
def _half(v):
    return v * acc(0.5, v)


@_jit
def _weight(v, m, beta):
    """exp(beta * (v - m)) for the window's maximiser m: in (0, 1], exactly 1 at m
    (also an infinite one) and for beta = 0 (the mean).

    The difference is taken halved, as beta * (v/2 - m/2) * 2: v/2 - m/2 cannot
    overflow, and where v - m does not overflow the result is the same bits
    (scaling by 2 is exact in the normal range). Where v - m itself overflows
    this is beta * (v - m) without the intermediate infinity: finite for a tiny
    beta, -inf (weight 0, the limit) otherwise.
    """
    if v == m or beta == acc(0.0, beta):
        return acc(1.0, beta)
    return exp_le0(beta * (_half(v) - _half(m)) * acc(2.0, beta))


@_jit
def _twice(beta):
    """2 * beta: (2*beta) * d is (beta * d) * 2, bit for bit, when 2*beta is finite (scaling by 2
    commutes with rounding; a subnormal beta*d, the one exception, has weight exactly 1 either way)."""
    return beta * acc(2.0, beta)


@_jit
def _finite_diff(v, mh):
    """v/2 - m/2 as ``_weight`` and ``_moment`` take it, for finite v and m: the halving kept
    a rounded product of its own (an fma of v*0.5 - m/2 would round a subnormal v differently)."""
    return mul_nc(v, acc(0.5, v)) - mh


@_jit
def _moment(e, v, ref_half):
    """e * (v - ref) / 2, 0 for a zero weight (where v - ref may be infinite)."""
    return e * (_half(v) - ref_half) if e > acc(0.0, e) else acc(0.0, e)


@_jit
def _shift(m, beta):
    """The value the moments are taken about: the maximiser, or 0 when it is
    infinite (inf - inf) or beta = 0 (the plain sum of the mean)."""
    return m if np.isfinite(m) and beta != acc(0.0, beta) else acc(0.0, m)


@_jit
def _result(ref, t, s):
    """y = ref + 2t/s from halved moments t, kept halved until the end: |ref/2 + t/s| <= max|x|."""
    return (_half(ref) + t / s) * acc(2.0, t)


@_jit
def _lse(m, s, beta):
    """beta*m + log(s): may overflow only where the true value does; log(count) for beta = 0."""
    return (beta * m if beta != acc(0.0, beta) else acc(0.0, beta)) + log_ge1(s)


#: Cells summed in the accumulation type before their partial sums are added
#: in float64 (``_window``): float32 error then grows with the log of a long
#: window, not linearly (issue #13 item 6), at no cost to short windows, which
#: never reach it and keep the sweeps' arithmetic exactly.
PARTIAL = 256


@_jit
def _window(x, first, offs, count, lo, hi, d, xs, beta):
    """(y, lse) of one window: cells first + offs[q] + i*d*xs for i in [lo, hi)."""
    zero = acc(0.0, beta)
    sgn = _sign(beta)
    ms = sgn * acc(x[_u(first + offs[0] + lo * d * xs)], beta)
    for q in range(count):
        for i in range(lo, hi):
            v = sgn * acc(x[_u(first + offs[q] + i * d * xs)], beta)
            if v > ms:
                ms = v
    m = sgn * ms
    ref = _shift(m, beta)
    rh = _half(ref)
    s64 = 0.0
    t64 = 0.0
    s = zero
    t = zero
    n = 0
    long = False
    for q in range(count):
        for i0 in range(lo, hi, PARTIAL):
            for i in range(i0, min(hi, i0 + PARTIAL)):
                v = acc(x[_u(first + offs[q] + i * d * xs)], beta)
                e = _weight(v, m, beta)
                s += e
                t += _moment(e, v, rh)
            n += min(hi, i0 + PARTIAL) - i0
            if n >= PARTIAL:
                s64 += s
                t64 += t
                s = zero
                t = zero
                n = 0
                long = True
    if not long:
        # a short window: the same arithmetic as the sweeps, bit for bit
        # (dask's chunks, for one, rely on every path giving the same bits)
        return _result(ref, t, s), _lse(m, s, beta)
    s64 += s
    t64 += t
    return acc(_result(np.float64(ref), t64, s64), beta), acc(_lse(np.float64(m), s64, np.float64(beta)), beta)


def _sweep_for(k, s, count):
    """The forward sweep for kernel k, stride s and ``count`` (<= 9) outer cells, all constants.

    It reduces the n unclipped windows of a block of each of ``rows`` rows,
    unit strides: window o of row r has the cells xb + r*sx + offs[q] + o*s + i
    for q < count and i < k; its result goes to y[yb + r*sy + o]. The cell
    loops unroll and the loop over the LANES windows of a step, with every
    value in registers, vectorises.
    Rows are short (56 windows for a 112-wide image), so the last step is not
    left to scalar code: it runs over whole LANES windows too when the cells
    of the extra windows (``spare`` of them) still lie inside x, and only
    the first n results are kept. Only the last rows of x have no spare
    cells (they go one at a time); the sweep returns how many windows of each
    row and how many rows it did, and leaves the other windows to the
    caller's per-window path (one copy of the step less to compile).
    Cells are visited in the order of ``_window``; lse, when asked for, is
    finished in a second loop over the block (``log_ge1`` vectorises too).
    A row of finite cells (beta != 0, 2*beta finite: the usual case) takes
    ``finite_row``, the step without the masks that only infinities and NaN
    need (0.86-0.93x the forward's CPU time, same bits); a row where they
    matter runs ``step`` after it.
    Tilings of the row (k == s: k2s2, channels-last) take 512-bit vectors
    (``wide_vectors``); with overlapping windows (k3s2) LLVM loads the cells
    with gathers, which 512-bit vectors do not help.
    """
    mark = wide_vectors if k == s else _no_mark
    cell_bases, base, top_of = bases_for(count)
    # batches of rows only for tilings: with overlapping windows (k3s2, whose
    # step loads by gathers) a row is long work already, and the batch's
    # loop over rows cost 3-6% there
    tiles = k == s

    @_inlined
    def step(x, xb, bases, o0, col, beta, scratch):
        zero = acc(0.0, beta)
        sgn = _sign(beta)
        for j in range(LANES):
            o = o0 + j
            # the first cell seeds the maximum; loaded like the others (one
            # interleaved vector load), not on its own (a gather)
            ms = sgn * acc(x[_u(xb + base(0, bases) + o * s)], beta)
            for q in range(count):
                b = xb + base(q, bases) + o * s
                for i in range(k):
                    if q + i > 0:
                        v = sgn * acc(x[_u(b + i)], beta)
                        ms = v if v > ms else ms
            m = sgn * ms
            ref = _shift(m, beta)
            rh = _half(ref)
            ssum = zero
            tsum = zero
            for q in range(count):
                b = xb + base(q, bases) + o * s
                for i in range(k):
                    v = acc(x[_u(b + i)], beta)
                    e = _weight(v, m, beta)
                    ssum += e
                    tsum += _moment(e, v, rh)
            scratch[0, _u(col + o)] = m
            scratch[1, _u(col + o)] = ssum
            scratch[2, _u(col + o)] = _result(ref, tsum, ssum)

    @_inlined
    def finite_row(x, xb, bases, nw, col, beta, b2, scratch):
        """``step`` over windows [0, nw) for finite cells, beta != 0 and a finite 2*beta: then
        m is finite, the moments are taken about it and a cell's weight is 1 at m, so the masks
        of ``_weight``, ``_moment`` and ``_shift`` change no bit, and this goes without them.
        True when a window's weight or moment sum is not finite: a cell was inf or NaN (the
        sums are NaN then) or the sum overflowed; the caller then runs ``step`` instead."""
        zero = acc(0.0, beta)
        sgn = _sign(beta)
        bad = False
        for o in range(nw):
            # the maximum as in ``step``, written out again: as a shared inlined
            # function it kept LLVM from vectorising both loops (zmm instructions
            # of forward class (1, 1, 4) float32: 333 -> 37)
            ms = sgn * acc(x[_u(xb + base(0, bases) + o * s)], beta)
            for q in range(count):
                b = xb + base(q, bases) + o * s
                for i in range(k):
                    if q + i > 0:
                        v = sgn * acc(x[_u(b + i)], beta)
                        ms = v if v > ms else ms
            m = sgn * ms
            mh = _half(m)
            ssum = zero
            tsum = zero
            for q in range(count):
                b = xb + base(q, bases) + o * s
                for i in range(k):
                    d = _finite_diff(acc(x[_u(b + i)], beta), mh)
                    e = exp_le0(d * b2)
                    ssum += e
                    tsum += mul_nc(e, d)
            scratch[0, _u(col + o)] = m
            scratch[1, _u(col + o)] = ssum
            scratch[2, _u(col + o)] = _result(m, tsum, ssum)
            c = ssum + tsum
            bad |= c - c != zero
        return bad

    @_inlined
    def sweep(x, y, lse, xb, offs, yb, n, rows, sx, sy, beta, with_lse, scratch):
        mark()
        rows = rows if tiles else 1
        bases = cell_bases(offs, count)
        top = top_of(bases)
        pad = (LANES - n % LANES) % LANES
        # the spare cells after the batch's last row (its first for sx < 0)
        spare = (x.size - (xb + max(0, (rows - 1) * sx) + top + (n - 1) * s + k)) // s
        if rows > 1 and pad > spare:
            # near the end of x: the row alone, with the windows it does
            # unbatched (the same path for each window: the same bits)
            rows = 1
            spare = (x.size - (xb + top + (n - 1) * s + k)) // s
        steps = (n + LANES - 1) // LANES if pad <= spare else n // LANES
        b2 = _twice(beta)
        finite = b2 != acc(0.0, beta) and b2 - b2 == acc(0.0, beta)
        for r in range(rows):
            # row r's windows go to columns r*n + o; a padded last step's
            # extra lanes are overwritten by the next row's
            if not finite or finite_row(x, xb + r * sx, bases, steps * LANES, r * n, beta, b2, scratch):
                for t in range(steps):
                    step(x, xb + r * sx, bases, t * LANES, r * n, beta, scratch)
        done = min(n, steps * LANES)
        # a batch (rows > 1) is of whole rows that follow each other in y
        # and lse (done == n == sy): one loop over it, whole vectors, in
        # which the lse chains of several rows overlap
        for j in range(rows * done):
            y[_u(yb + j)] = store(scratch[2, _u(j)], y)
        if with_lse:
            for j in range(rows * done):
                lse[_u(yb + j)] = _lse(scratch[0, _u(j)], scratch[1, _u(j)], beta)
        return done, rows

    return sweep


@_inlined
def _no_mark():
    """No function attribute: LLVM's default vector width."""


@_inlined
def _no_sweep(x, y, lse, xb, offs, yb, n, rows, sx, sy, beta, with_lse, scratch):
    """The general kernel's sweep: it takes no window (every one takes ``_window``)."""
    return 0, 1


#: Windows of a batch of short rows (see ``_forward_units_for``): enough for
#: the lse loop's dependent chains to overlap, few enough that the batch's
#: scratch and cells stay in L1 (36 rows of 56 windows, BLOCK's worth, made
#: the 112-wide maps slower).
BATCH = 256


def _forward_units_for(sweep, cells):
    """Forward over the work units [u0, u1) (see ``_window_work``) for one configuration class.

    Blocks of rows with ``cells`` outer cells take ``sweep`` (``_no_sweep``
    for the general kernel); every other window, the clipped ones at the row
    ends included, takes ``_window``.
    """

    @_inlined
    def units(args, u0, u1, offs_owned, idx_owned, scratch_owned):
        x, x0, tab, beta, y, lse, with_lse = args
        # no reference counting in the loop over rows (see ``borrowed``)
        offs, idx, scratch = borrowed(offs_owned), borrowed(idx_owned), borrowed(scratch_owned)
        inner = tab.shape[0] - 1
        Li, Oi, Ki, Si, Di, Pi = _row_geometry(tab, inner)
        xs, ys = tab[inner, XS], tab[inner, YS]
        oa, ob = _interior(Oi, Li, Ki, Si, Di, Pi)
        n = ob - oa
        n_blocks = _n_blocks(n)
        bi, count, ybase = _first_window_unit(tab, u0, n_blocks, idx, offs)
        # Whole rows (every window unclipped, one block) go to the sweep in
        # batches along the last outer axis a, whose next unclipped row is
        # one shift away (sx in x, sy in y and lse), when their outputs
        # follow each other (sy == n), up to BATCH windows: the sweep's
        # set-up and its copy and lse loops, most of a short row's time (16
        # windows on a 32-wide map), are paid once per batch, and the walk
        # jumps over the batch's rows.
        a = inner - 1
        sx = tab[a, S] * tab[a, XS] if a >= 0 else 0
        sy = tab[a, YS] if a >= 0 else 0
        ob_a = _interior(tab[a, O], tab[a, L], tab[a, K], tab[a, S], tab[a, D], tab[a, P])[1] if a >= 0 else 0
        batches = cells > 0 and a >= 0 and n_blocks == 1 and oa == 0 and ob == Oi and n == sy and n > 0
        cap = max(1, BATCH // n) if batches else 1
        done = 0
        left = 0  # rows of the current batch after this one (the sweep did them)
        for u in range(u0, u1):
            if left > 0:
                left -= 1
                continue
            if u > u0:
                bi, count, ybase = _next_window_unit(tab, bi, n_blocks, idx, offs, count, ybase)
            o0 = oa + bi * BLOCK
            o1 = min(ob, o0 + BLOCK)
            done = 0
            if count == cells and o1 > o0:
                rows = min(cap, u1 - u, ob_a - idx[a]) if cap > 1 else 1
                done, rows = sweep(
                    x,
                    y,
                    lse,
                    x0 + (o0 * Si - Pi) * xs,
                    offs,
                    ybase + o0 * ys,
                    o1 - o0,
                    rows,
                    sx,
                    sy,
                    beta,
                    with_lse,
                    scratch,
                )
                left = rows - 1
                if left > 0:
                    # the walk moves to the batch's last row at once (what
                    # ``_next_window_unit`` does row by row: a shift along a)
                    idx[a] += left
                    for q in range(count):
                        offs[q] += left * sx
                    ybase += left * sy
            first = 0 if bi == 0 else o0
            last = Oi if bi == n_blocks - 1 else o1
            # the windows of [first, last) outside the sweep's [o0, o0 + done),
            # without visiting (and testing) every window of the row
            for i in range(first, last - done):
                o = i if i < o0 else i + done
                start = o * Si - Pi
                lo, hi = _clip(start, Ki, Di, Li)
                yo, lse_o = _window(x, x0 + start * xs, offs, count, lo, hi, Di, xs, beta)
                y[ybase + o * ys] = store(yo, y)
                if with_lse:
                    lse[ybase + o * ys] = lse_o
        # the owners of the borrowed views live until here
        keep_alive(offs_owned)
        keep_alive(idx_owned)
        keep_alive(scratch_owned)

    return units
