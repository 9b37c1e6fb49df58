"""The backward of tilings: output rows walked as the forward walks them.

For loop tables where every input cell lies in exactly one window (k2s2 over
two or three axes, 2-D channels-last: see ``kernels._tiles``), the backward
walks output rows like the forward and finishes all the input rows of a
window row at once (``_tiled_sweep_for``): a row's fixed cost is paid once
per output row, not once per input row (a quarter as often in 3-D), and y,
lse and grad_y are read once, not once per input row. Cells the sweep does
not take go to the cell-major backward's per-cell path.
"""

from numba import types
from numba.extending import overload

from .._loops import XS, YS, O, S
from ._backward import _all_lse_ok, _cell_backward, _cell_backward_careful, _memo, _term, _z
from ._compile import _inlined
from ._scalar import acc, store
from ._walk import (
    BLOCK,
    LANES,
    ROW_SCOPES,
    _base,
    _bases,
    _first_window_unit,
    _interior,
    _n_blocks,
    _next_window_unit,
    _offsets_scratch,
    _row_geometry,
    _u,
    borrowed,
    keep_alive,
    scoped_load,
    scoped_store,
    wide_vectors,
)


def _batches(gx):
    """True where channels-last rows are swept in batches and steps store to gx
    directly (see ``_tiled_sweep_for``): not for float16 (stored as uint16),
    whose conversion made that 7-9% slower than the copy of g."""


@overload(_batches, inline="always")
def _batches_for(gx):
    batches = gx.dtype != types.uint16
    return lambda gx: batches


@_inlined
def _load(a, i, scoped):
    # a[i], in the inputs' alias scope if scoped (see scoped_load)
    return scoped_load(a, i) if scoped else a[i]


@_inlined
def _store(gx, at, v, q, scoped):
    # gx[at] = v, if scoped in the alias scope of grad_x row q (see
    # scoped_store), q a constant once LLVM unrolls the loop over q (as in _base)
    if not scoped:
        gx[at] = v
    elif q == 0:
        scoped_store(gx, at, v, 0)
    else:
        scoped_store(gx, at, v, 1)


def _tiled_sweep_for(k, count):
    """The backward sweep of a tiling (kernel = stride = k, ``count`` <= 4 outer cells), constants.

    Window o of a block of one output row, at yb + o in the output-shaped
    arrays, holds the cells xb + offs[q] + o*k + i (q < count, i < k), and
    each of them lies in that window only: its gradient is the one term of
    ``_cell_backward``. A step loads a window's lse, grad_y and y once and
    writes its count*k gradients to g[q*k + i, o]: a loop over LANES windows
    as the forward sweep's, padded in the same way and returning how many
    windows it did (none when one needs ``_fallback_weight``), whose body is
    big enough not to be unrolled into scalar code. Then the count input
    rows' cells are copied from g to gx (at gb + offs[q]). In the common
    case (exact, beta != 0) whole steps store to gx themselves instead: with
    k = 1 (channels-last), and with k = 2 and two rows (NCHW), whose loads
    and stores carry alias scopes (``scoped_load``; without them the direct
    stores ran 3x slower than the copy). Not in 3-D: four rows need four
    scopes, and its direct step, in two loops of two rows, stayed scalar.
    With k = 1, ``rows`` output rows, each sx further in x and gx and sy in
    the outputs, are swept in one call: see ``_tiled_units_for``.
    """

    # k == 2: the step's accesses carry alias scopes (see scoped_load), where
    # each of its rows can have one of its own, and whole steps store to gx
    scoped = k == 2 and count <= ROW_SCOPES

    @_inlined
    def step(gy, x, y, lse, xb, yb, bases, o0, go, beta, exact, common, g, gx, gb, direct):
        # common: exact and beta != 0, a constant (see sweep); direct: write
        # gx (at gb) instead of g (at column go + o), a constant, for whole steps only
        zero = acc(0.0, beta)
        for j in range(LANES):
            o = o0 + j
            at = _u(yb + o)
            lse_w = acc(_load(lse, at, scoped), beta)
            gy_w = acc(_load(gy, at, scoped), beta)
            y_w = acc(_load(y, at, scoped), beta) if exact else zero
            for q in range(count):
                b = xb + _base(q, bases) + o * k
                for i in range(k):
                    v = acc(_load(x, _u(b + i), scoped), beta)
                    # beta*v rounded, as lse's beta*m was: "+ zero" keeps LLVM from
                    # contracting the product into an fma with "z - lse" (its error
                    # there, ~1e31 for beta*v near fmax, would make the weight inf);
                    # it changes only a -0.0 to 0.0, whose weight exp(-lse) is the same
                    z = v * beta + zero if common else _z(v, beta)
                    # zero + term, as the per-cell sum gives: -0.0 becomes 0.0
                    t = zero + _term(v, z, lse_w, gy_w, y_w if exact else z, beta, exact)
                    if direct:
                        _store(gx, _u(gb + _base(q, bases) + o * k + i), store(t, gx), q, scoped)
                    else:
                        g[q * k + i, _u(go + o)] = t

    @_inlined
    def sweep(gy, x, y, lse, gx, xb, gb, offs, yb, n, rows, sx, sy, beta, exact, g):
        wide_vectors()  # a tiling, bound by its arithmetic as the forward's (see wide_vectors)
        # see units: batches of k == 2 rows ran 4.7x slower in 3-D; float16: see _batches
        rows = rows if k == 1 and _batches(gx) else 1
        bases = _bases(offs, count)
        top = max(max(bases[0], bases[1]), max(bases[2], bases[3]))
        ok = True
        for r in range(rows):
            ok &= _all_lse_ok(lse, yb + r * sy, yb + r * sy + n, beta)
        if not ok:
            return 0  # the per-cell path takes the windows that need it
        # the last row's padding may not run past the arrays (the others' runs into the next row)
        xl, yl = xb + (rows - 1) * sx, yb + (rows - 1) * sy
        spare = min((x.size - (xl + top + n * k)) // k, min(lse.size, min(gy.size, y.size)) - (yl + n))
        steps = (n + LANES - 1) // LANES if (LANES - n % LANES) % LANES <= spare else n // LANES
        cols = steps * LANES  # g's columns per row
        first = 0  # the first window whose gradients are in g
        if exact and beta != acc(0.0, beta):
            # the common case, its tests of exact and beta folded out of the
            # vectorised loop (they cost a branch and mask operations per cell).
            # Whole steps write their rows of gx themselves, a padded last one
            # through g: no copy of g (k == 1: 0.88-0.95x the time; k == 2, 2-D:
            # float32 0.83-0.99x, float64 0.77-0.82x, CPU time of one thread)
            first = (n // LANES) * LANES if (k == 1 or scoped) and _batches(gx) else 0
            for r in range(rows):
                for t in range(first // LANES):
                    step(
                        gy,
                        x,
                        y,
                        lse,
                        xb + r * sx,
                        yb + r * sy,
                        bases,
                        t * LANES,
                        0,
                        beta,
                        True,
                        True,
                        g,
                        gx,
                        gb + r * sx,
                        True,
                    )
                for t in range(first // LANES, steps):
                    step(
                        gy,
                        x,
                        y,
                        lse,
                        xb + r * sx,
                        yb + r * sy,
                        bases,
                        t * LANES,
                        r * cols,
                        beta,
                        True,
                        True,
                        g,
                        gx,
                        gb,
                        False,
                    )
        else:
            for r in range(rows):
                for t in range(steps):
                    step(
                        gy,
                        x,
                        y,
                        lse,
                        xb + r * sx,
                        yb + r * sy,
                        bases,
                        t * LANES,
                        r * cols,
                        beta,
                        exact,
                        False,
                        g,
                        gx,
                        gb,
                        False,
                    )
        done = min(n, cols)
        for r in range(rows):
            for q in range(count):
                row = gb + r * sx + _base(q, bases)
                for o in range(first, done):
                    for i in range(k):
                        gx[_u(row + o * k + i)] = store(g[q * k + i, _u(r * cols + o)], gx)
        return done

    return sweep


def _tiled_units_for(sweep, k, cells):
    """Backward over the work units [u0, u1) (see ``_window_work``) of a tiling (kernel = stride = k).

    For loop tables where every input cell lies in exactly one window (see
    ``_tiles``): each output row's ``cells`` input rows are finished together,
    their unclipped windows' cells by ``sweep``, the cells after those it
    did (the last rows' unpadded rest, cells in a clipped window or in none)
    by ``_cell_backward``. With k == 1 (channels-last) short rows go to the
    sweep in batches; with k > 1 one row per call: the batches' bookkeeping
    in this loop, though it never batches there, cost NCHW and NCDHW 3-4%
    of their time (and a vectorised 3-D step is easily lost: check its asm).
    """

    @_inlined
    def rest(args, offs, count, ybase, lo, last, geometry, row, memo):
        # the cells [lo, last) of the count rows at offs, per cell
        x, x0, tab, beta, gy, y, lse, exact, gx = args
        Ki, Si, Di, Pi, Oi, xs, ys = geometry
        row[0] = ybase
        for q in range(count):
            for j in range(lo, last):
                at = offs[q] + j * xs
                gj, ok = _cell_backward(
                    gy, x, y, lse, x0 + at, j, row, 1, Ki, Si, Di, Pi, Oi, ys, beta, exact, x0, tab, None
                )
                if not ok:
                    gj = _cell_backward_careful(
                        gy, x, y, lse, x0 + at, j, row, 1, Ki, Si, Di, Pi, Oi, ys, beta, exact, x0, tab, memo
                    )[0]
                gx[at] = store(gj, gx)

    @_inlined
    def start(tab):
        # what both units loops derive from the loop table's innermost row, and their per-cell scratch
        inner = tab.shape[0] - 1
        Li, Oi, Ki, Si, Di, Pi = _row_geometry(tab, inner)
        xs, ys = tab[inner, XS], tab[inner, YS]
        n = _interior(Oi, Li, Ki, Si, Di, Pi)[1]
        return inner, Li, Si, xs, ys, (Ki, Si, Di, Pi, Oi, xs, ys), n, _n_blocks(n), _offsets_scratch(1), _memo()

    @_inlined
    def batched(args, u0, u1, offs_owned, idx_owned, g_owned):
        x, x0, tab, beta, gy, y, lse, exact, gx = args
        # no reference counts in the loop over rows (see units)
        offs, idx, g = borrowed(offs_owned), borrowed(idx_owned), borrowed(g_owned)
        inner, Li, Si, xs, ys, geometry, n, n_blocks, row, memo = start(tab)
        bi, count, ybase = _first_window_unit(tab, u0, n_blocks, idx, offs)
        # Rows of one block each go to the sweep together along the last outer
        # axis a (a tiling's next row there is one shift away: sx in x and gx,
        # sy in the outputs), as many as g holds: the per-row set-up and copy
        # loops, a large part of a short row's time, are paid once per batch.
        a = inner - 1
        sx, sy = tab[a, S] * tab[a, XS], tab[a, YS]
        cap = (BLOCK + LANES) // ((n + LANES - 1) // LANES * LANES) if n_blocks == 1 and n > 0 and _batches(gx) else 1
        done = 0
        left = 0  # rows of the current batch after this one (the sweep did them)
        for u in range(u0, u1):
            if u > u0:
                bi, count, ybase = _next_window_unit(tab, bi, n_blocks, idx, offs, count, ybase)
            o0 = bi * BLOCK
            o1 = min(n, o0 + BLOCK)
            if left > 0:
                left -= 1
            else:
                rows = min(cap, u1 - u, tab[a, O] - idx[a])
                left = rows - 1
                done = 0
                if o1 > o0:
                    xb, yb = x0 + o0 * Si * xs, ybase + o0 * ys
                    done = sweep(gy, x, y, lse, gx, xb, o0 * Si * xs, offs, yb, o1 - o0, rows, sx, sy, beta, exact, g)
            last = Li if bi == n_blocks - 1 else o1 * Si
            if (o0 + done) * Si < last:
                rest(args, offs, count, ybase, (o0 + done) * Si, last, geometry, row, memo)
        keep_alive(offs_owned)  # the owners of the borrowed views live until here
        keep_alive(idx_owned)
        keep_alive(g_owned)

    @_inlined
    def units(args, u0, u1, offs_owned, idx_owned, g_owned):
        x, x0, tab, beta, gy, y, lse, exact, gx = args
        # no reference counts in the loop over rows (see ``borrowed``): atomic
        # operations on every sweep call, each waiting for the row's stores
        # (the arguments' arrays are views without a count already)
        offs, idx, g = borrowed(offs_owned), borrowed(idx_owned), borrowed(g_owned)
        inner, Li, Si, xs, ys, geometry, n, n_blocks, row, memo = start(tab)
        bi, count, ybase = _first_window_unit(tab, u0, n_blocks, idx, offs)
        for u in range(u0, u1):
            if u > u0:
                bi, count, ybase = _next_window_unit(tab, bi, n_blocks, idx, offs, count, ybase)
            o0 = bi * BLOCK
            o1 = min(n, o0 + BLOCK)
            done = 0
            if o1 > o0:
                xb, yb = x0 + o0 * Si * xs, ybase + o0 * ys
                done = sweep(gy, x, y, lse, gx, xb, o0 * Si * xs, offs, yb, o1 - o0, 1, 0, 0, beta, exact, g)
            last = Li if bi == n_blocks - 1 else o1 * Si
            if (o0 + done) * Si < last:
                rest(args, offs, count, ybase, (o0 + done) * Si, last, geometry, row, memo)
        keep_alive(offs_owned)  # the owners of the borrowed views live until here
        keep_alive(idx_owned)
        keep_alive(g_owned)

    return batched if k == 1 else units
