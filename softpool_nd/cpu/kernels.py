"""numba kernels: where a SoftPool window is reduced on the CPU.

Every kernel walks a loop table (see ``softpool_nd._loops``): rows of
(L, O, K, S, D, P, XS, YS, GS), the last row being the innermost loop.
Arrays arrive as flat 1-D buffers plus the element offset of their first
element, so one compiled kernel serves every rank and memory layout, and all
index arithmetic is int64 (cast to uint64 at the access: numba then skips
its negative-index wraparound, which would turn a vector load into a gather).

Per window the forward pass does two sweeps over the (cached) cells (the
numeric rules are /NUMERICS.md's, issue #13): the maximiser m of beta * x,
found as the maximum of sign(beta) * x (no product that can overflow), then
the sums s = sum(e) and t = sum(e * (x - ref)), with e = exp(beta * (x - m))
in (0, 1] and ref = m (0 when m is infinite or beta = 0, where y is the plain
mean). Shifting by ref keeps t bounded for finite inputs of any magnitude and
any accepted beta; e is exactly 1 at the maximiser, so infinite maxima give
weight 1 instead of exp(inf - inf). lse = beta * m + log(s).

Speed comes from the innermost loop dimension. Windows that lie wholly inside
the input along it (all but a few per row) are computed a whole row at a
time, the window index being the vectorised loop. The sweeps are built by a
factory once per configuration class of ``FAST_FORWARD`` / ``FAST_BACKWARD`` /
``FAST_TILED`` (kernel, stride and number of outer cells or windows as compile-time
constants), so LLVM unrolls the window cells, keeps every value in registers
and emits SIMD code. Each class has its own kernel (``forward_kernel(tab)`` /
``backward_kernel(tab)`` pick it; everything else takes the general
``forward`` / ``backward``), compiled once per dtype on first use and cached
on disk (see ``_launch``): a call never triggers a compilation that depends
on its sizes.
The few clipped windows at the row ends, and rows of another class, take the
scalar per-window / per-cell path. All paths evaluate the same formula in the
same cell order, so non-finite inputs follow the same rules everywhere.

The backward gathers per input cell: each cell sums its share of every window
it lies in, so nothing is written twice and no atomics are needed. It walks
input rows (cell-major), except for tilings (every cell in exactly one
window: k2s2 over two or three axes, 2-D channels-last): those walk output rows like
the forward and finish all the input rows of a window row at once (see
``_tiled_sweep_for``): a row's fixed cost is paid once per output row, not
once per input row (a quarter as often in 3-D), and y, lse and grad_y are
read once, not once per input row.
"""
import numpy as np
from numba import njit, prange

from .._loops import D, GS, K, L, NCOLS, O, P, S, XS, YS
from ._cache import cached_njit
from ._launch import ClassKernel, argument_block, block, buffer, call_task, check_done, expect, mark_done, put, serial
from ._scalar import _bits, _float_from_bits, acc, exp_le0, log_ge1, store

# FMA contraction only: no assumption about NaN, infinities or signed zeros.
# NumPy's error model: a float division by zero gives inf/NaN instead of a
# checked branch that raises, which would keep every loop with a division
# from vectorising (the weight sum is never 0: the maximum has weight 1).
_OPTIONS = dict(fastmath={"contract"}, error_model="numpy")
# Helpers are only ever called from compiled code. Without a Python wrapper
# numba does not also turn each of them into machine code of its own: 0.8-1 s
# less of a process's first cold compile.
_jit = njit(no_cpython_wrapper=True, no_cfunc_wrapper=True, **_OPTIONS)
# Inlined by numba itself: every sweep's step (it must sit in the loop LLVM
# vectorises), the forward and tiled sweeps, each class's loop over its work
# units (inlined into the class's task: one library less for numba to
# optimise and link, 0.2-0.4 s per class) and the backward's per-row and
# per-cell functions (as calls, the k3s2 backward was 15-25% slower). The
# cell-major backward sweep stays a call: inlined, its k3s2 class ran 6x
# slower. Calls cost no shared atomic operations: the arrays every thread
# shares are views of raw memory, without reference counts (a task's own
# scratch arrays have them, on its own cache lines).
_inlined = njit(inline="always", no_cpython_wrapper=True, no_cfunc_wrapper=True, **_OPTIONS)
# The parallel drivers of ``_launch``: one per direction, compiled per dtype
# (each with a serial twin for small calls: ``_launch.serial``).
_driver = cached_njit(parallel=True, **_OPTIONS)


@_jit
def _u(i):
    return np.uint64(i)


@_jit
def _clip(start, k, d, n):
    """Range [lo, hi) of window indices i with 0 <= start + i*d < n."""
    lo = 0 if start >= 0 else (-start + d - 1) // d
    hi = k if start + (k - 1) * d < n else (n - 1 - start) // d + 1
    return lo, max(lo, hi)


@_jit
def _interior(n_out, n, k, s, d, p):
    """Range [a, b) of windows along one axis that hold no padding cell."""
    a = min(n_out, (p + s - 1) // s)
    last = n - 1 - (k - 1) * d + p
    b = min(n_out, last // s + 1) if last >= 0 else 0
    return a, max(a, b)


@_jit
def _row_index(tab, r, col, idx):
    """Set idx to the multi-index of row r over the outer dimensions, of extents tab[:-1, col]."""
    rem = r
    for a in range(tab.shape[0] - 2, -1, -1):
        idx[a] = rem % tab[a, col]
        rem //= tab[a, col]


@_jit
def _next_row(tab, col, idx):
    """Advance idx to the next row, the last outer dimension fastest.

    Rows are visited in order, so counting replaces the per-row integer
    divisions of ``_row_index``, which a short row would wait on.
    """
    a = tab.shape[0] - 2
    while a >= 0:
        idx[a] += 1
        if idx[a] < tab[a, col]:
            return
        idx[a] = 0
        a -= 1


@_jit
def _first_unit(tab, u0, n_blocks, col, idx):
    """Set idx to the row of work unit u0 (rows of n_blocks units); return u0's block in its row."""
    _row_index(tab, u0 // n_blocks, col, idx)
    return u0 % n_blocks


@_jit
def _next_unit(tab, bi, n_blocks, col, idx):
    """The block of the work unit after block bi; idx moves on to the next row after a row's last block."""
    if bi + 1 < n_blocks:
        return bi + 1
    _next_row(tab, col, idx)
    return 0


@_jit
def _window_offsets(tab, idx, offs):
    """Offsets of the window cells along the outer dimensions for the output row at multi-index idx.

    Returns (number of cells, output offset of the row). The cell list is the
    product of each outer dimension's clipped window, expanded in place.
    """
    n_outer = tab.shape[0] - 1
    offs[0] = 0
    count = 1
    ybase = 0
    for a in range(n_outer - 1, -1, -1):
        o = idx[a]
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


@_jit
def _first_window_unit(tab, u0, n_blocks, idx, offs):
    """``_first_unit`` over output rows: (block, count, ybase), offs holding the row's cell offsets.

    The row's cells and output offset are those of ``_window_offsets``.
    """
    bi = _first_unit(tab, u0, n_blocks, O, idx)
    count, ybase = _window_offsets(tab, idx, offs)
    return bi, count, ybase


@_jit
def _next_window_unit(tab, bi, n_blocks, idx, offs, count, ybase):
    """``_next_unit`` over output rows, keeping (count, ybase) and offs those of the unit's row.

    When only the last outer index moves on, and neither its old nor its new
    window is clipped, every cell moves by one stride: a shift instead of the
    rebuild, which cost about 20 ns a row (``benchmarks/row_costs.py``), a
    fifth of a 28-window row.
    """
    bi = _next_unit(tab, bi, n_blocks, O, idx)
    if bi > 0:
        return bi, count, ybase
    a = tab.shape[0] - 2
    if a >= 0 and idx[a] > 0:
        start = idx[a] * tab[a, S] - tab[a, P]
        if start - tab[a, S] >= 0 and start + (tab[a, K] - 1) * tab[a, D] < tab[a, L]:
            shift = tab[a, S] * tab[a, XS]
            for q in range(count):
                offs[q] += shift
            return bi, count, ybase + tab[a, YS]
    count, ybase = _window_offsets(tab, idx, offs)
    return bi, count, ybase


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


@_jit
def _bases(offs, count):
    """The first (up to) four entries of ``offs`` as scalars.

    A vectorised loop must not read ``offs`` itself: LLVM cannot prove that
    the stores to the outputs leave it unchanged, and gives up.
    """
    last = count - 1
    return offs[0], offs[min(1, last)], offs[min(2, last)], offs[min(3, last)]


@_jit
def _base(q, bases):
    """bases[q] for a q that is a constant once the loop over q is unrolled."""
    return bases[0] if q == 0 else bases[1] if q == 1 else bases[2] if q == 2 else bases[3]


#: Windows per vector step of a sweep: a constant trip count, so that LLVM
#: emits one SIMD pass (16 float32 lanes on AVX-512) without a scalar tail.
LANES = 16
#: The cell-major backward sweeps' step; their bodies are small enough for LLVM to unroll
#: a constant 16-iteration loop instead of vectorising it, so a sweep runs its
#: whole steps as one loop of a multiple of BACK_LANES iterations.
BACK_LANES = 64


def _sweep_for(k, s, count):
    """The forward sweep for kernel k, stride s and ``count`` (<= 4) outer cells, all constants.

    It reduces the n unclipped windows of a block of one row, unit strides:
    window o has the cells xb + offs[q] + o*s + i for q < count and i < k; its
    result goes to y[yb + o]. The cell loops unroll and the loop over the
    LANES windows of a step, with every value in registers, vectorises.
    Rows are short (56 windows for a 112-wide image), so the last step is not
    left to scalar code: it runs over whole LANES windows too when the cells
    of the extra windows (``spare`` of them) still lie inside x, and only
    the first n results are kept. Only the last rows of x have no spare
    cells; the sweep returns how many windows it did, and leaves the others
    to the caller's per-window path (one copy of the step less to compile).
    Cells are visited in the order of ``_window``; lse, when asked for, is
    finished in a second loop over the block (``log_ge1`` vectorises too).
    """

    @_inlined
    def step(x, xb, bases, o0, beta, scratch):
        zero = acc(0.0, beta)
        sgn = _sign(beta)
        for j in range(LANES):
            o = o0 + j
            # the first cell seeds the maximum; loaded like the others (one
            # interleaved vector load), not on its own (a gather)
            ms = sgn * acc(x[_u(xb + _base(0, bases) + o * s)], beta)
            for q in range(count):
                b = xb + _base(q, bases) + o * s
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
                b = xb + _base(q, bases) + o * s
                for i in range(k):
                    v = acc(x[_u(b + i)], beta)
                    e = _weight(v, m, beta)
                    ssum += e
                    tsum += _moment(e, v, rh)
            scratch[0, _u(o)] = m
            scratch[1, _u(o)] = ssum
            scratch[2, _u(o)] = _result(ref, tsum, ssum)

    @_inlined
    def sweep(x, y, lse, xb, offs, yb, n, beta, with_lse, scratch):
        bases = _bases(offs, count)
        top = max(max(bases[0], bases[1]), max(bases[2], bases[3]))
        spare = (x.size - (xb + top + (n - 1) * s + k)) // s
        steps = (n + LANES - 1) // LANES if (LANES - n % LANES) % LANES <= spare else n // LANES
        for t in range(steps):
            step(x, xb, bases, t * LANES, beta, scratch)
        done = min(n, steps * LANES)
        for o in range(done):
            y[_u(yb + o)] = store(scratch[2, _u(o)], y)
        if with_lse:
            for o in range(done):
                lse[_u(yb + o)] = _lse(scratch[0, _u(o)], scratch[1, _u(o)], beta)
        return done

    return sweep


#: Windows per unit of work: long rows are split so that every thread gets work
#: and the lse scratch stays in L1.
BLOCK = 2048

#: Configuration classes with a kernel of their own, as (kernel, stride, outer
#: cells) of the innermost dimension on unit strides: k2s2 over 1, 2 and 3
#: axes, k3s2 over 2, and 2-d channels-last (kernel 1 innermost, 2x2 outer).
FAST_FORWARD = ((2, 2, 1), (2, 2, 2), (2, 2, 4), (3, 2, 3), (1, 1, 4))


@_jit
def _offsets_scratch(n):
    """A thread's offsets (or row multi-index) array, rewritten for every row.

    Padded to 512 bytes beyond what is used, so that no two threads' arrays
    share a cache line: false sharing here made two threads slower than one.
    """
    return np.empty(max(n, 4) + 64, np.int64)


@_jit
def _scratch(shape, dtype):
    """A thread's scratch of ``shape`` rows and columns, its kernel's constant.

    For the max, weight sum and result of a block of windows (forward) or the
    gradients of a block's cells (backward). Padded like ``_offsets_scratch``;
    and kept small, as every call allocates one per task: a 196 kB scratch
    (above malloc's default mmap threshold, 128 kB) made the k3s2 forward up
    to 10x slower with two threads in some processes.
    """
    return np.empty((shape[0], shape[1] + 64), dtype)


@_jit
def _n_blocks(n):
    return max(1, (n + BLOCK - 1) // BLOCK)


def _forward_units_for(sweep, cells):
    """Forward over the work units [u0, u1) (see ``forward``) for one configuration class.

    Blocks of rows with ``cells`` outer cells take ``sweep`` (cells -1: no row
    has that many); every other window, the clipped ones at the row ends
    included, takes ``_window``.
    """

    @_inlined
    def units(args, u0, u1, offs, idx, scratch):
        x, x0, tab, beta, y, lse, with_lse = args
        inner = tab.shape[0] - 1
        Li, Oi, Ki, Si, Di, Pi = tab[inner, L], tab[inner, O], tab[inner, K], tab[inner, S], tab[inner, D], tab[inner, P]
        xs, ys = tab[inner, XS], tab[inner, YS]
        oa, ob = _interior(Oi, Li, Ki, Si, Di, Pi)
        n = ob - oa
        n_blocks = _n_blocks(n)
        bi, count, ybase = _first_window_unit(tab, u0, n_blocks, idx, offs)
        for u in range(u0, u1):
            if u > u0:
                bi, count, ybase = _next_window_unit(tab, bi, n_blocks, idx, offs, count, ybase)
            o0 = oa + bi * BLOCK
            o1 = min(ob, o0 + BLOCK)
            done = 0
            if count == cells and o1 > o0:
                done = sweep(x, y, lse, x0 + (o0 * Si - Pi) * xs, offs, ybase + o0 * ys, o1 - o0, beta, with_lse, scratch)
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

    return units


@_jit
def _window_work(tab):
    """(work units, outer cells per window) of a kernel that walks output rows.

    Its work units are blocks of at most BLOCK unclipped windows of one output
    row (a row's clipped windows go with its first or last block).
    """
    inner = tab.shape[0] - 1
    n_rows = 1
    n_cells = 1
    for a in range(inner):
        n_rows *= tab[a, O]
        n_cells *= tab[a, K]
    oa, ob = _interior(tab[inner, O], tab[inner, L], tab[inner, K], tab[inner, S], tab[inner, D], tab[inner, P])
    return n_rows * _n_blocks(ob - oa), n_cells


def _class_kernel(direction, units, work, scratch, name):
    """The kernel ``name`` of a configuration class: ``_class_task`` run by the
    driver of ``direction`` (``_FORWARD`` or ``_BACKWARD``), with
    ``_class_units`` bound to ``units``, ``_class_work`` to ``work`` and
    ``_class_scratch`` to the (rows, columns) of the scratch ``units`` needs.

    Each configuration class gets its own kernel, compiled on first use, so
    that a program compiles only the classes it pools with. numba freezes
    globals as constants, so ``units`` is called directly, not through a
    function value.
    """
    driver, serial_driver, args, slots = direction
    bound = {
        "_class_args": args, "_class_slots": slots,
        "_class_units": units, "_class_work": work, "_class_scratch": scratch,
    }
    return ClassKernel(name, _class_task, driver, serial_driver, bound, _OPTIONS)


def _class_task(argv, chunk, chunks):
    """A class's work units (see ``_window_work`` and ``_cell_work``) split into
    at most ``chunks`` contiguous ranges, each with its own scratch: this is
    range ``chunk``. The split never changes a result, only who computes it.

    The block at ``argv`` holds ``_class_slots`` argument slots, filled by the
    direction's driver and turned back into the units' arguments by
    ``_class_args``, then the tasks' completion slots.
    """
    a = block(argv, _class_slots)  # noqa: F821 (bound per direction)
    tab = buffer(a, 3, np.int64).reshape((a[4] // NCOLS, NCOLS))
    units, n_offs = _class_work(tab)  # noqa: F821 (bound per class)
    n_chunks = max(1, min(units, chunks))
    if chunk < n_chunks:
        offs = _offsets_scratch(n_offs)
        idx = _offsets_scratch(tab.shape[0] - 1)
        scratch = _scratch(_class_scratch, _ACC)  # noqa: F821 (bound per class and dtype)
        u0, u1 = chunk * units // n_chunks, (chunk + 1) * units // n_chunks
        args = _class_args(a, tab, _STORED, _ACC)  # noqa: F821 (bound per direction and dtype)
        _class_units(args, u0, u1, offs, idx, scratch)  # noqa: F821 (bound per class)
    mark_done(argv, _class_slots + chunk)  # noqa: F821 (bound per direction)


@_jit
def _common_args(argv, x, x0, tab, beta):
    """Argument block slots 0-5, those of every task: x (2), x0, tab (2), beta's bits."""
    expect(x, x)
    expect(tab, argv)
    put(argv, 0, x)
    argv[2] = x0
    put(argv, 3, tab)
    argv[5] = _bits(beta)


#: Argument slots of a forward block: those of ``_common_args``, y (2), lse (2), with_lse.
_FORWARD_SLOTS = 11


@_driver
def _run_forward(task, x, x0, tab, beta, y, lse, with_lse, tasks):
    """Run forward task ``task`` (an address) on ``tasks`` chunks in parallel."""
    expect(y, x)
    expect(lse, beta)
    argv = argument_block(_FORWARD_SLOTS, tasks)
    _common_args(argv, x, x0, tab, beta)
    put(argv, 6, y)
    put(argv, 8, lse)
    argv[10] = with_lse
    for chunk in prange(tasks):
        call_task(task, argv, chunk, tasks)
    check_done(argv, _FORWARD_SLOTS)


@_inlined
def _forward_args(a, tab, stored, acc):
    """The forward units' arguments (a tuple, their first), from a block of ``_run_forward``.

    SoftPool forward: y and, when with_lse, lse (flat, offset 0, strides in column YS).
    """
    return (
        buffer(a, 0, stored), a[2], tab, _float_from_bits(a[5], acc(0)),
        buffer(a, 6, stored), buffer(a, 8, acc), a[10] != 0,
    )


_FORWARD = (_run_forward, serial(_run_forward, _OPTIONS), _forward_args, _FORWARD_SLOTS)


#: Scratch of the forward sweeps: max, weight sum and result of a block's
#: windows, whose last step may be padded.
_FORWARD_SCRATCH = (3, BLOCK + LANES)
_FORWARD_KERNELS = {
    key: _class_kernel(
        _FORWARD, _forward_units_for(_sweep_for(*key), key[2]), _window_work, _FORWARD_SCRATCH,
        "forward_%d%d%d" % key,
    )
    for key in FAST_FORWARD
}
#: The general forward kernel (any geometry, any strides); its units never
#: call their sweep: no row has -1 cells.
forward = _class_kernel(
    _FORWARD, _forward_units_for(_sweep_for(2, 2, 1), -1), _window_work, _FORWARD_SCRATCH, "forward",
)


def _unit(tab, *cols):
    inner = tab[-1]
    return all(inner[c] == 1 for c in cols) and (inner[D] == 1 or inner[K] == 1)


def forward_kernel(tab):
    """The forward kernel for loop table ``tab``: its configuration class's, else the general one."""
    cells = int(np.prod(tab[:-1, K]))
    key = (int(tab[-1, K]), int(tab[-1, S]), cells) if _unit(tab, XS, YS) else None
    return _FORWARD_KERNELS.get(key, forward)


@_jit
def _floordiv(a, s):
    """a // s for s > 0; the common strides 1 and 2 without an integer division,
    which this per-row (and per-outer-axis) arithmetic would otherwise wait on."""
    return a if s == 1 else a >> 1 if s == 2 else a // s


@_jit
def _containing(j, k, s, d, p, n_out):
    """Range [lo, hi) of windows o whose cells along one axis may include input j."""
    lo = max(0, _floordiv(j + p - (k - 1) * d + s - 1, s)) if j + p - (k - 1) * d > 0 else 0
    hi = min(n_out, _floordiv(j + p, s) + 1)
    return lo, max(lo, hi)


@_jit
def _member(j, o, s, d, p):
    """True when window o has a cell exactly at input j (dilation can skip it)."""
    # called for every row and window along each outer axis: without
    # dilation, no integer division
    return d == 1 or (j + p - o * s) % d == 0


@_inlined
def _containing_offsets(tab, idx, offs):
    """Output offsets of the windows containing the input row at multi-index idx, along the outer dimensions.

    Returns (number of windows, input offset of the row, grad offset of the row).
    """
    n_outer = tab.shape[0] - 1
    offs[0] = 0
    count = 1
    xbase = 0
    gbase = 0
    for a in range(n_outer - 1, -1, -1):
        j = idx[a]
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
        while more:
            off = first
            for a in range(n):
                off += cur[a] * tab[a, D] * tab[a, XS]
            v = acc(x[_u(off)], beta)
            if sweep == 0:
                # the first cell seeds the maximum, as in ``_window``
                ms = sgn * v if sgn * v > ms or np.all(cur == lo) else ms
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
    inlined there, it made the k3s2 backward 1.4x slower.
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
                            at = _u(_base(q, bases) + yb + c - b)
                            y_w = acc(y[at], beta) if exact else z
                            gj += _term(v, z, acc(lse[at], beta), acc(gy[at], beta), y_w, beta, exact)
                g[_u((c - c0) * sc + u)] = gj

    @_jit
    def sweep(gy, x, y, lse, gx, xb, gb, yb, offs, c0, c1, beta, exact, g):
        bases = _bases(offs, cc)
        top = max(max(bases[0], bases[1]), max(bases[2], bases[3]))
        n = c1 - c0
        for q in range(cc):
            if not _all_lse_ok(lse, _base(q, bases) + yb + c0 - last, _base(q, bases) + yb + c1, beta):
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


#: Configuration classes with a kernel of their own, as (kernel, stride,
#: windows per cell along the outer dimensions) on unit strides: k2s2 of any
#: rank, channels-last (kernel 1 innermost), k3s2 over one axis, and k3s2 over
#: two, whose rows alternate between two windows and one.
FAST_BACKWARD = ((2, 2, 1), (1, 1, 1), (3, 2, 1), (3, 2, 2))


@_jit
def _block_cells(n_out, n, k, s, d, p):
    """The cells of a row that the backward sweeps may take, and its number of work units.

    Returns (oa, cf, nc, n_blocks): the cells j = (oa + c)*s - p + u (0 <= u < s)
    for c in [cf, nc), oa being the first unclipped window. Such a cell lies in
    the windows oa + c - b for b*s + u < d*(k - 1) + 1; c starts at the first
    value for which all of them are unclipped: 0 when no cell is in two windows
    (k2s2), so that only padded rows' edges are left to the per-cell path.
    """
    oa, ob = _interior(n_out, n, k, s, d, p)
    cf = (d * (k - 1)) // s
    nc = ob - oa if ob - oa > cf else 0
    return oa, cf, nc, _n_blocks(nc - cf)


def _backward_units_for(sweep, windows, sweep_one):
    """Backward over the work units [u0, u1) (see ``backward``) for one configuration class.

    Block cells of rows in ``windows`` outer windows take ``sweep``, those of
    rows in one window ``sweep_one`` (windows -1: no row is in that many);
    all other cells, those next to clipped windows included, take
    ``_cell_backward``.
    """

    @_inlined
    def units(args, u0, u1, offs, idx, scratch):
        gy, x, x0, y, lse, tab, beta, exact, gx = args
        gbuf = scratch[0]
        memo = _memo()
        inner = tab.shape[0] - 1
        Li, Oi, Ki, Si, Di, Pi = tab[inner, L], tab[inner, O], tab[inner, K], tab[inner, S], tab[inner, D], tab[inner, P]
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
            elif windows > 0 and count == 1 and c1 > c0:
                done = sweep_one(gy, x, y, lse, gx, x0 + xbase + j0, gbase + j0, oa, offs, c0, c1, beta, exact, gbuf)
            ca = max(ja, j0 + c0 * Si)
            cb = max(ca, min(jb, j0 + c1 * Si))
            first = 0 if bi == 0 else ca
            last = Li if bi == n_blocks - 1 else cb
            # the cells of [first, last) that the sweep did not do
            gap = max(ca, min(jb, j0 + (c0 + done) * Si)) - ca
            for i in range(first, last - gap):
                j = i if i < ca else i + gap
                xj = x0 + xbase + j * xs
                g, ok = _cell_backward(gy, x, y, lse, xj, j, offs, count, Ki, Si, Di, Pi, Oi, ys, beta, exact, x0, tab, None)
                if not ok:
                    g = _cell_backward_careful(
                        gy, x, y, lse, xj, j, offs, count, Ki, Si, Di, Pi, Oi, ys, beta, exact, x0, tab, memo,
                    )[0]
                gx[gbase + j * gs] = store(g, gx)

    return units


@_jit
def _cell_work(tab):
    """(work units, outer windows per cell) of a kernel that walks input rows.

    Its work units are blocks of a row's cells (see ``_block_cells``), the
    row's other cells going with its first or last block.
    """
    inner = tab.shape[0] - 1
    n_rows = 1
    n_windows = 1
    for a in range(inner):
        n_rows *= tab[a, L]
        n_windows *= (tab[a, D] * (tab[a, K] - 1)) // tab[a, S] + 1
    blocks = _block_cells(tab[inner, O], tab[inner, L], tab[inner, K], tab[inner, S], tab[inner, D], tab[inner, P])[3]
    return n_rows * blocks, n_windows


def _tiled_sweep_for(k, count):
    """The backward sweep of a tiling (kernel = stride = k, ``count`` <= 4 outer cells), constants.

    Window o of a block of one output row, at yb + o in the output-shaped
    arrays, holds the cells xb + offs[q] + o*k + i (q < count, i < k), and
    each of them lies in that window only: its gradient is the one term of
    ``_cell_backward``. A step loads a window's lse, grad_y and y once and
    writes its count*k gradients to g[q*k + i, o]: a loop over LANES windows
    as the forward sweep's, padded in the same way and returning how many
    windows it did (none when one needs ``_fallback_weight``), whose body is big enough not to be unrolled into scalar
    code. (Stores interleaved by k, to g or straight to gx, kept LLVM from
    vectorising it: 3-4x slower.) Then the count input rows' cells are
    copied from g to gx (at gb + offs[q]).
    """

    @_inlined
    def step(gy, x, y, lse, xb, yb, bases, o0, beta, exact, g):
        zero = acc(0.0, beta)
        for j in range(LANES):
            o = o0 + j
            at = _u(yb + o)
            lse_w = acc(lse[at], beta)
            gy_w = acc(gy[at], beta)
            y_w = acc(y[at], beta) if exact else zero
            for q in range(count):
                b = xb + _base(q, bases) + o * k
                for i in range(k):
                    v = acc(x[_u(b + i)], beta)
                    z = _z(v, beta)
                    # zero + term, as the per-cell sum gives: -0.0 becomes 0.0
                    g[q * k + i, _u(o)] = zero + _term(v, z, lse_w, gy_w, y_w if exact else z, beta, exact)

    @_inlined
    def sweep(gy, x, y, lse, gx, xb, gb, offs, yb, n, beta, exact, g):
        bases = _bases(offs, count)
        top = max(max(bases[0], bases[1]), max(bases[2], bases[3]))
        if not _all_lse_ok(lse, yb, yb + n, beta):
            return 0  # the per-cell path takes the windows that need it
        spare = min((x.size - (xb + top + n * k)) // k, min(lse.size, min(gy.size, y.size)) - (yb + n))
        steps = (n + LANES - 1) // LANES if (LANES - n % LANES) % LANES <= spare else n // LANES
        for t in range(steps):
            step(gy, x, y, lse, xb, yb, bases, t * LANES, beta, exact, g)
        done = min(n, steps * LANES)
        for q in range(count):
            row = gb + _base(q, bases)
            for o in range(done):
                for i in range(k):
                    gx[_u(row + o * k + i)] = store(g[q * k + i, _u(o)], gx)
        return done

    return sweep


def _tiled_units_for(sweep, cells):
    """Backward over the work units [u0, u1) (see ``_window_work``) of a tiling.

    For loop tables where every input cell lies in exactly one window (see
    ``_tiles``): each output row's ``cells`` input rows are finished together,
    their unclipped windows' cells by ``sweep``, the cells after those it
    did (the last rows' unpadded rest, cells in a clipped window or in none)
    by ``_cell_backward``.
    """

    @_inlined
    def units(args, u0, u1, offs, idx, g):
        gy, x, x0, y, lse, tab, beta, exact, gx = args
        inner = tab.shape[0] - 1
        Li, Oi, Ki, Si, Di, Pi = tab[inner, L], tab[inner, O], tab[inner, K], tab[inner, S], tab[inner, D], tab[inner, P]
        xs, ys = tab[inner, XS], tab[inner, YS]
        n = _interior(Oi, Li, Ki, Si, Di, Pi)[1]
        n_blocks = _n_blocks(n)
        row = _offsets_scratch(1)
        memo = _memo()
        bi, count, ybase = _first_window_unit(tab, u0, n_blocks, idx, offs)
        for u in range(u0, u1):
            if u > u0:
                bi, count, ybase = _next_window_unit(tab, bi, n_blocks, idx, offs, count, ybase)
            o0 = bi * BLOCK
            o1 = min(n, o0 + BLOCK)
            done = 0
            if o1 > o0:
                done = sweep(gy, x, y, lse, gx, x0 + o0 * Si * xs, o0 * Si * xs, offs, ybase + o0 * ys, o1 - o0, beta, exact, g)
            last = Li if bi == n_blocks - 1 else o1 * Si
            if (o0 + done) * Si < last:
                row[0] = ybase
                for q in range(count):
                    for j in range((o0 + done) * Si, last):
                        at = offs[q] + j * xs
                        gj, ok = _cell_backward(gy, x, y, lse, x0 + at, j, row, 1, Ki, Si, Di, Pi, Oi, ys, beta, exact, x0, tab, None)
                        if not ok:
                            gj = _cell_backward_careful(
                                gy, x, y, lse, x0 + at, j, row, 1, Ki, Si, Di, Pi, Oi, ys, beta, exact, x0, tab, memo,
                            )[0]
                        gx[at] = store(gj, gx)

    return units


#: Argument slots of a backward block: those of ``_common_args``, gy (2), y (2), lse (2), exact, gx (2).
_BACKWARD_SLOTS = 15


@_driver
def _run_backward(task, x, x0, tab, beta, gy, y, lse, exact, gx, tasks):
    """Run backward task ``task`` (an address) on ``tasks`` chunks in parallel."""
    expect(gy, x)
    expect(y, x)
    expect(lse, beta)
    expect(gx, x)
    argv = argument_block(_BACKWARD_SLOTS, tasks)
    _common_args(argv, x, x0, tab, beta)
    put(argv, 6, gy)
    put(argv, 8, y)
    put(argv, 10, lse)
    argv[12] = exact
    put(argv, 13, gx)
    for chunk in prange(tasks):
        call_task(task, argv, chunk, tasks)
    check_done(argv, _BACKWARD_SLOTS)


@_inlined
def _backward_args(a, tab, stored, acc):
    """The backward units' arguments (a tuple, their first), from a block of ``_run_backward``.

    Vector-Jacobian product, gathered per input cell (no atomics): gy, y and
    lse are flat output-shaped buffers sharing column YS; gx is a flat buffer
    with strides in column GS. ``exact`` False gives the paper's rule (weights
    treated as constants) and never reads y.
    """
    return (
        buffer(a, 6, stored), buffer(a, 0, stored), a[2], buffer(a, 8, stored), buffer(a, 10, acc), tab,
        _float_from_bits(a[5], acc(0)), a[12] != 0, buffer(a, 13, stored),
    )


_BACKWARD = (_run_backward, serial(_run_backward, _OPTIONS), _backward_args, _BACKWARD_SLOTS)


_back_221, _back_111, _back_321, _back_322 = (_backward_sweep_for(*key) for key in FAST_BACKWARD)
# (sweep for rows in the class's number of windows, that number, sweep for rows in one)
_BACKWARD_UNITS = {
    (2, 2, 1): (_back_221, 1, _back_221),
    (1, 1, 1): (_back_111, 1, _back_111),
    (3, 2, 1): (_back_321, 1, _back_321),
    (3, 2, 2): (_back_322, 2, _back_321),
}
#: Scratch of the cell-major sweeps: the gradients of a block's cells, at most
#: two (the stride) per window, whose last step may be padded.
_CELL_SCRATCH = (1, 2 * (BLOCK + LANES))
_BACKWARD_KERNELS = {
    key: _class_kernel(
        _BACKWARD, _backward_units_for(*_BACKWARD_UNITS[key]), _cell_work, _CELL_SCRATCH,
        "backward_%d%d%d" % key,
    )
    for key in FAST_BACKWARD
}
#: Tilings with a backward kernel of their own, as (kernel = stride innermost,
#: outer cells): k2s2 over 2 and 3 axes and 2-d channels-last. (Over one
#: axis the step is too small: LLVM unrolls it into scalar code, 4x slower
#: than the cell-major sweep, whose rows are as long there.)
FAST_TILED = ((2, 2), (2, 4), (1, 4))
_TILED_KERNELS = {
    key: _class_kernel(
        _BACKWARD, _tiled_units_for(_tiled_sweep_for(*key), key[1]), _window_work,
        (key[0] * key[1], BLOCK + LANES), "backward_tiled_%d%d" % key,
    )
    for key in FAST_TILED
}
#: The general backward kernel; its units never call their sweeps: no row is
#: in -1 windows.
backward = _class_kernel(
    _BACKWARD, _backward_units_for(_back_111, -1, _back_111), _cell_work, _CELL_SCRATCH, "backward",
)


def _tiles(tab):
    """True when every input cell lies in exactly one window, the outer windows unclipped.

    Kernel = stride, no dilation, no padding and, outer dimensions, a whole
    number of windows; gx in x's layout (the tiled sweeps address both with
    the same offsets). The innermost dimension may end in a clipped window or
    in cells of no window.
    """
    k, s, d, p = tab[:, K], tab[:, S], tab[:, D], tab[:, P]
    whole = tab[:-1, L] == tab[:-1, O] * tab[:-1, K]
    return bool(np.all((k == s) & ((d == 1) | (k == 1)) & (p == 0)) and np.all(whole)
                and np.array_equal(tab[:, XS], tab[:, GS]))


def backward_kernel(tab):
    """The backward kernel for loop table ``tab``: its configuration class's, else the general one."""
    if not _unit(tab, XS, YS, GS):
        return backward
    if _tiles(tab):
        tiled = _TILED_KERNELS.get((int(tab[-1, K]), int(np.prod(tab[:-1, K]))))
        if tiled is not None:
            return tiled
    windows = int(np.prod((tab[:-1, D] * (tab[:-1, K] - 1)) // tab[:-1, S] + 1))
    return _BACKWARD_KERNELS.get((int(tab[-1, K]), int(tab[-1, S]), windows), backward)
