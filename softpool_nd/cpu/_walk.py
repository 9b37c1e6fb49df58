"""Walking the loop table: rows, work units, window and cell offsets, thread scratch.

Every kernel walks a loop table (see ``softpool_nd._loops``): rows of
(L, O, K, S, D, P, XS, YS, GS), the last row being the innermost loop.
Arrays arrive as flat 1-D buffers plus the element offset of their first
element, so one compiled kernel serves every rank and memory layout, and all
index arithmetic is int64 (cast to uint64 at the access, ``_u``: numba then
skips its negative-index wraparound, which would turn a vector load into a
gather).

A kernel's work is a list of work units, split among tasks (see
``_launch.class_task``): blocks of at most BLOCK windows of an output row
(``_window_work``: the forward and the tiled backward) or of a row's input
cells (``_cell_work``: the cell-major backward). Here are how units map to
rows (``_first_unit``/``_next_unit`` and their output-row forms), the cell
offsets of a row's windows (``_window_offsets``) or of the windows containing
an input row (``_containing_offsets``), and the per-thread scratch.
"""

import numpy as np
from numba import carray, types
from numba.core import cgutils
from numba.extending import intrinsic

from .._loops import GS, XS, YS, D, K, L, O, P, S
from ._compile import _inlined, _jit

#: Windows per unit of work: long rows are split so that every thread gets work
#: and the lse scratch stays in L1.
BLOCK = 2048
#: Windows per vector step of a sweep: a constant trip count, so that LLVM
#: emits one SIMD pass (16 float32 lanes on AVX-512) without a scalar tail.
LANES = 16


@intrinsic
def wide_vectors(typingctx):
    """Let LLVM vectorise the calling function's loops with 512-bit vectors where the CPU has them.

    LLVM's default on AVX-512 CPUs (Skylake-X to Rocket Lake and later) is
    256-bit vectors, for fear of the lower clock 512-bit code may run at.
    The sweeps are bound by their arithmetic (an exponential per cell), not
    by memory: on this project's reference machine (Rocket Lake) zmm code
    made the forward sweep ~1.6x faster, with the same bits (every lane
    computes the same IEEE operations). A string attribute of the function
    being compiled (the class task the sweep is inlined into); a no-op where
    the CPU has no 512-bit vectors.
    """

    def codegen(context, builder, signature, args):
        # llvmlite's attribute set knows no string attributes: add it as
        # the text it writes into the function's definition
        set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        return context.get_dummy_value()

    return types.none(), codegen


@intrinsic
def _data(typingctx, a):
    """A typed pointer to the first element of C-contiguous array ``a``."""

    def codegen(context, builder, signature, args):
        return context.make_array(a)(context, builder, args[0]).data

    return types.CPointer(a.dtype)(a), codegen


@_inlined
def borrowed(a):
    """A view of the C-contiguous array ``a`` that owns no reference to its memory.

    numba counts references to a thread's scratch arrays (they have an
    owner), and the per-row code of the sweeps (the sweep's arguments, inlined
    into the units loop) takes and drops references to them for every row:
    atomic operations, each waiting for the row's pending stores. A borrowed
    view's count is a null pointer, tested and skipped. numba frees an array
    after the last use of its variable, not at the end of the function: the
    caller passes ``a`` to ``keep_alive`` after the view's last use.
    """
    return carray(_data(a), a.shape)


@intrinsic
def keep_alive(typingctx, a):
    """Nothing, but a use of ``a``: numba releases ``a`` after this point, not before (see ``borrowed``)."""

    def codegen(context, builder, signature, args):
        return context.get_dummy_value()

    return types.none(a), codegen


#: The grad_x rows a tiled backward step stores to directly, each in an LLVM alias scope of its own (see
#: ``scoped_store``): their stores differ in their alignment, halved from row to row.
ROW_SCOPES = 2


def _scoped(builder, inst, scope):
    """Tag load or store ``inst`` with LLVM alias-scope metadata: ``scope`` is -1 for a load of an input, q for a
    store to grad_x row q (see ``scoped_load``).

    Each input load is in the scope "inputs", each row's stores in the scope
    of that row, and every access is ``!noalias`` against all the scopes but
    its own: LLVM's scoped alias analysis then knows every pair of them
    independent. The scopes are named, the same in every function: what they
    claim holds across calls, rows and threads (see ``scoped_load``).
    """
    module = builder.module
    domain = module.add_metadata(["softpool_nd: tiled backward accesses"])
    names = ["softpool_nd: inputs"] + [f"softpool_nd: grad_x row {q}" for q in range(ROW_SCOPES)]
    scopes = [module.add_metadata([name, domain]) for name in names]
    own = scopes[scope + 1]
    inst.set_metadata("alias.scope", module.add_metadata([own]))
    inst.set_metadata("noalias", module.add_metadata([s for s in scopes if s is not own]))


def _pointer(context, builder, a, args):
    ary = context.make_array(a)(context, builder, args[0])
    return cgutils.get_item_pointer(context, builder, a, ary, [args[1]])


@intrinsic
def scoped_load(typingctx, a, i):
    """``a[i]`` for an input of a tiled backward step, ``i`` an unsigned index (see ``_u``).

    The loads of x, y, lse and grad_y and the stores to the rows of grad_x
    (``scoped_store``) carry alias-scope metadata saying that none of them
    touches memory that another one writes (``_scoped``). Without it, LLVM's
    loop vectoriser cannot relate the stores to the loads or the rows to each
    other, and guards the vector step with dozens of run-time overlap checks,
    among them pairs of ranges that always overlap (a row's two interleaved
    stores): the scalar loop ran, 3x slower than the vector step and a copy
    from scratch. What the metadata claims is true wherever the kernel runs: the
    inputs are only read, grad_x shares no memory with them
    (``softpool_nd._api._direct`` gives the kernel a new grad_x otherwise),
    and in a tiling every grad_x cell lies in exactly one window, stored once,
    by one step of one thread.
    """

    def codegen(context, builder, signature, args):
        v = builder.load(_pointer(context, builder, a, args), align=a.dtype.bitwidth // 8)
        _scoped(builder, v, -1)
        return v

    return a.dtype(a, i), codegen


@intrinsic
def scoped_store(typingctx, a, i, v, row):
    """``a[i] = v`` for a tiled backward step's store to grad_x row ``row`` (a constant < ROW_SCOPES): see
    ``scoped_load``; ``v`` of ``a``'s type.

    A step's loop over its rows is one loop when LLVM merges the stores of
    ``if q == 0: ... else: ...`` into one store with the metadata of both,
    unless the stores differ in more than their metadata: the alignment
    given to LLVM is the element's size halved ``row`` times (true, and
    as fast on x86).
    """
    if not isinstance(row, types.IntegerLiteral) or v != a.dtype:
        return None
    scope = row.literal_value
    align = max(1, (a.dtype.bitwidth // 8) >> scope)

    def codegen(context, builder, signature, args):
        st = builder.store(args[2], _pointer(context, builder, a, args), align=align)
        _scoped(builder, st, scope)
        return context.get_dummy_value()

    return types.none(a, i, v, row), codegen


@_jit
def _row_geometry(tab, inner):
    """(L, O, K, S, D, P) of loop-table row ``inner``: input and output length, kernel, stride, dilation, padding."""
    return tab[inner, L], tab[inner, O], tab[inner, K], tab[inner, S], tab[inner, D], tab[inner, P]


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


@_jit
def _bases9(offs, count):
    """``_bases`` for classes of five to nine outer cells (a 3x3 window over two outer axes): nine entries."""
    last = count - 1
    return _bases(offs, count) + (
        offs[min(4, last)],
        offs[min(5, last)],
        offs[min(6, last)],
        offs[min(7, last)],
        offs[min(8, last)],
    )


@_jit
def _base9(q, bases):
    """``_base`` over ``_bases9``'s nine entries."""
    if q < 4:
        return _base(q, bases)
    return bases[4] if q == 4 else bases[5] if q == 5 else bases[6] if q == 6 else bases[7] if q == 7 else bases[8]


def bases_for(cells):
    """(bases, base, top) for a sweep of ``cells`` (at most 9) outer cells: ``_bases``/``_base`` up to four,
    ``_bases9``/``_base9`` beyond (the classes of at most four keep their code), and ``top``, the largest
    of the bases (how far a step reaches into x)."""
    if cells > 9:
        raise ValueError(f"a sweep takes at most 9 outer cells, not {cells}")
    return (_bases, _base, _top4) if cells <= 4 else (_bases9, _base9, _top9)


@_jit
def _top4(bases):
    return max(max(bases[0], bases[1]), max(bases[2], bases[3]))


@_jit
def _top9(bases):
    return max(_top4(bases[:4]), max(max(bases[4], bases[5]), max(max(bases[6], bases[7]), bases[8])))


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
    Li, Oi, Ki, Si, Di, Pi = _row_geometry(tab, inner)
    oa, ob = _interior(Oi, Li, Ki, Si, Di, Pi)
    return n_rows * _n_blocks(ob - oa), n_cells


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
    Li, Oi, Ki, Si, Di, Pi = _row_geometry(tab, inner)
    blocks = _block_cells(Oi, Li, Ki, Si, Di, Pi)[3]
    return n_rows * blocks, n_windows
