"""The CPU kernels: configuration classes, their tables and drivers.

A SoftPool window is reduced on the CPU by one of these kernels. The work is
split by job across the modules of ``softpool_nd.cpu``:

- ``_walk``: walking the loop table (rows, work units, cell offsets, scratch);
- ``_forward``: a window's (y, lse), per window and in vectorised sweeps;
- ``_backward``: the per-cell gradient and the cell-major backward;
- ``_tiled``: the backward of tilings (every cell in exactly one window);
- ``_launch``: argument blocks, the parallel drivers and the class tasks they
  call (C callbacks);
- ``_compile``: the numba settings; ``_cache``: the disk cache;
- this module: which configuration classes have a kernel of their own, the
  kernels themselves, and ``forward_kernel(tab)`` / ``backward_kernel(tab)``,
  which pick a loop table's kernel.

Speed comes from the innermost loop dimension. Windows that lie wholly inside
the input along it (all but a few per row) are computed a whole row at a
time, the window index being the vectorised loop. The sweeps are built by a
factory once per configuration class of ``FAST_FORWARD`` / ``FAST_BACKWARD`` /
``FAST_TILED`` (kernel, stride and number of outer cells or windows as
compile-time constants), so LLVM unrolls the window cells, keeps every value
in registers and emits SIMD code. Each class has its own kernel; everything
else takes the general ``forward`` / ``backward``, whose units sweep nothing.
Kernels are compiled once per dtype on first use and cached on disk (see
``_launch``): a call never triggers a compilation that depends on its sizes.
The few clipped windows at the row ends, and rows of another class, take the
scalar per-window / per-cell path. All paths evaluate the same formula in the
same cell order, so non-finite inputs follow the same rules everywhere.

How to add a configuration class
--------------------------------
1. Add its key to ``FAST_FORWARD`` (kernel, stride, outer cells),
   ``FAST_BACKWARD`` (kernel, stride, outer windows per cell) or
   ``FAST_TILED`` (kernel = stride, outer cells). The tables below build its
   kernel from the direction's sweep factory (``_sweep_for``,
   ``_backward_sweep_for``, ``_tiled_sweep_for``) and units factory; a
   cell-major class whose rows are in several windows also names, in
   ``_BACKWARD_UNITS``, the sweep for its rows in one and, where most of
   the others are in a given part of them (channels-last k3s2: 4, 2 or 1),
   the sweep for those and that number. A sweep takes at most 9 outer
   cells or windows (``_walk.bases_for``).
2. If ``forward_kernel`` / ``backward_kernel`` cannot tell the class from the
   loop table yet, teach them.
3. Add a row to ``CLASSES`` in tests/test_cpu_kernels.py (that the class is
   picked, that it matches the oracle and the general kernel's non-finite
   rules), and time it against the general kernel (``benchmarks/``): a
   class costs compile time (a cold cache compiles every class a program
   uses), so it must pay for itself.
A new argument of a direction is one row of its ``ArgumentBlock`` below (and
the name at its place in the units' tuple).
"""

import functools

import numpy as np

from .._loops import GS, XS, YS, D, K, L, O, P, S
from ._backward import _backward_sweep_for, _backward_units_for, _no_cell_sweep
from ._forward import _forward_units_for, _no_sweep, _sweep_for
from ._launch import ACC, FLAG, INDEX, SCALAR, STORED, TABLE, ArgumentBlock, ClassKernel, class_task, driver_for
from ._tiled import _tiled_sweep_for, _tiled_units_for
from ._walk import BLOCK, LANES, _cell_work, _window_work

#: The forward's argument block: SoftPool forward of x (flat, x0 the offset of
#: x[0, ..., 0], strides in column XS of the loop table), writing y and, when
#: with_lse, lse (flat, offset 0, strides in column YS).
FORWARD_ARGS = ArgumentBlock(
    ("x", STORED),
    ("x0", INDEX),
    ("tab", TABLE),
    ("beta", SCALAR),
    ("y", STORED),
    ("lse", ACC),
    ("with_lse", FLAG),
)
#: The backward's: vector-Jacobian product, gathered per input cell (no
#: atomics). gy, y and lse are flat output-shaped buffers sharing column YS;
#: gx is a flat buffer with strides in column GS. ``exact`` False gives the
#: paper's rule (weights treated as constants) and never reads y.
BACKWARD_ARGS = ArgumentBlock(
    ("x", STORED),
    ("x0", INDEX),
    ("tab", TABLE),
    ("beta", SCALAR),
    ("gy", STORED),
    ("y", STORED),
    ("lse", ACC),
    ("exact", FLAG),
    ("gx", STORED),
)
_run_forward, _run_forward_serial = driver_for(FORWARD_ARGS, "_run_forward")
_run_backward, _run_backward_serial = driver_for(BACKWARD_ARGS, "_run_backward")
# (argument block, parallel driver, serial driver) of each direction
_FORWARD = (FORWARD_ARGS, _run_forward, _run_forward_serial)
_BACKWARD = (BACKWARD_ARGS, _run_backward, _run_backward_serial)


def _class_kernel(direction, units, work, scratch, name):
    """The kernel ``name`` of a configuration class: a ``class_task`` of
    ``units`` (its loop over work units), ``work`` (their count) and
    ``scratch`` (the (rows, columns) of scratch ``units`` needs), run by the
    drivers of ``direction`` (``_FORWARD`` or ``_BACKWARD``).

    Each configuration class gets its own kernel, compiled on first use, so
    that a program compiles only the classes it pools with. numba freezes a
    closure's variables as constants, so ``units`` is called directly, not
    through a function value.
    """
    args, driver, serial_driver = direction
    return ClassKernel(name, functools.partial(class_task, args, units, work, scratch), driver, serial_driver)


#: Configuration classes with a kernel of their own, as (kernel, stride, outer
#: cells) of the innermost dimension on unit strides: k2s2 over 1, 2 and 3
#: axes, k3s2 over 2, and channels-last (kernel 1 innermost): 2-d k2 (2x2
#: outer cells) and k3 (3x3: k3s2 and k3s1, where rows along a padded border,
#: 3x2, take the per-window path), 1-d k2 and k3, 3-d k2 (2x2x2). Without a
#: class, channels-last pooling ran 10-18x slower than with one (one thread).
FAST_FORWARD = ((2, 2, 1), (2, 2, 2), (2, 2, 4), (3, 2, 3), (1, 1, 4), (1, 1, 9), (1, 1, 2), (1, 1, 3), (1, 1, 8))
#: Scratch of the forward sweeps: max, weight sum and result of a block's
#: windows, whose last step may be padded.
_FORWARD_SCRATCH = (3, BLOCK + LANES)
_FORWARD_KERNELS = {
    key: _class_kernel(
        _FORWARD,
        _forward_units_for(_sweep_for(*key), key[2]),
        _window_work,
        _FORWARD_SCRATCH,
        "forward_%d%d%d" % key,
    )
    for key in FAST_FORWARD
}
#: The general forward kernel (any geometry, any strides): every window takes the per-window path.
forward = _class_kernel(_FORWARD, _forward_units_for(_no_sweep, 0), _window_work, _FORWARD_SCRATCH, "forward")


def _unit(tab, *cols):
    inner = tab[-1]
    return all(inner[c] == 1 for c in cols) and (inner[D] == 1 or inner[K] == 1)


def forward_kernel(tab):
    """The forward kernel for loop table ``tab``: its configuration class's, else the general one."""
    cells = int(np.prod(tab[:-1, K]))
    key = (int(tab[-1, K]), int(tab[-1, S]), cells) if _unit(tab, XS, YS) else None
    return _FORWARD_KERNELS.get(key, forward)


#: Configuration classes with a kernel of their own, as (kernel, stride,
#: windows per cell along the outer dimensions) on unit strides: k2s2 of any
#: rank, channels-last (kernel 1 innermost), k3s2 over one axis, k3s2 over
#: two, whose rows alternate between two windows and one, and channels-last
#: k3s2 over one axis (rows in 2 windows or 1) and two (4, 2 or 1) and k3s1
#: over two (9, and 6 along a padded border).
FAST_BACKWARD = ((2, 2, 1), (1, 1, 1), (3, 2, 1), (3, 2, 2), (1, 1, 4), (1, 1, 9), (1, 1, 2))
_back_221, _back_111, _back_321, _back_322, _back_114, _back_119, _back_112 = (
    _backward_sweep_for(*key) for key in FAST_BACKWARD
)
_back_116 = _backward_sweep_for(1, 1, 6)
#: Each class's units: (sweep for rows in the class's number of windows, that
#: number) and, for a class of more than one, the sweep for rows in one.
_BACKWARD_UNITS = {
    (2, 2, 1): (_back_221, 1),
    (1, 1, 1): (_back_111, 1),
    (3, 2, 1): (_back_321, 1),
    (3, 2, 2): (_back_322, 2, _back_321),
    (1, 1, 4): (_back_114, 4, _back_111, _back_112, 2),
    (1, 1, 9): (_back_119, 9, _no_cell_sweep, _back_116, 6),
    (1, 1, 2): (_back_112, 2, _back_111),
}
#: Scratch of the cell-major sweeps: the gradients of a block's cells, at most
#: two (the stride) per window, whose last step may be padded.
_CELL_SCRATCH = (1, 2 * (BLOCK + LANES))
_BACKWARD_KERNELS = {
    key: _class_kernel(
        _BACKWARD,
        _backward_units_for(*_BACKWARD_UNITS[key]),
        _cell_work,
        _CELL_SCRATCH,
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
        _BACKWARD,
        _tiled_units_for(_tiled_sweep_for(*key), *key),
        _window_work,
        (key[0] * key[1], BLOCK + LANES),
        "backward_tiled_%d%d" % key,
    )
    for key in FAST_TILED
}
#: The general backward kernel: every cell takes the per-cell path.
backward = _class_kernel(
    _BACKWARD,
    _backward_units_for(_no_cell_sweep, 0),
    _cell_work,
    _CELL_SCRATCH,
    "backward",
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
    return bool(
        np.all((k == s) & ((d == 1) | (k == 1)) & (p == 0)) and np.all(whole) and np.array_equal(tab[:, XS], tab[:, GS])
    )


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
