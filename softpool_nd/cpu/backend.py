"""NumPy arrays in, numba kernels run, NumPy arrays out.

This module only prepares memory: it views arrays as flat buffers (no copy
for any layout), allocates outputs in the input's layout (from the output cache,
:mod:`softpool_nd._outputs`) and builds the loop
table. The arithmetic lives in :mod:`softpool_nd.cpu.kernels`.
"""

import functools

import numba
import numpy as np
from numpy.lib.stride_tricks import as_strided

from .. import _outputs
from .._loops import element_strides, in_layout, into, layout_strides, loop_table, out_or_empty, whole
from . import _threads, kernels
from .jvp import dx_table, jvp_kernel

name = "cpu"
xp = np


def _storage(a):
    """Half precision travels as uint16 (numba has no float16 arrays)."""
    return a.view(np.uint16) if a.dtype == np.float16 else a


def _flat(a, writeable=False):
    """A 1-D view over the memory of ``a`` and the element offset of ``a[0, ..., 0]``.

    Negative-stride axes are flipped so the view starts at the lowest address;
    no element is copied.
    """
    if a.flags.c_contiguous and (a.flags.writeable or not writeable):
        v = _storage(a).reshape(-1)
        # inputs always reach the kernels read-only: one compiled type for them
        v.flags.writeable = writeable
        return v, 0
    flip = tuple(slice(None, None, -1) if s < 0 else slice(None) for s in a.strides)
    b = a[flip]
    item = a.dtype.itemsize
    offset = sum((n - 1) * -s for n, s in zip(a.shape, a.strides) if s < 0) // item
    span = sum((n - 1) * s for n, s in zip(b.shape, b.strides)) // item + 1
    return as_strided(_storage(b), shape=(span,), strides=(item,), writeable=writeable), offset


#: Inputs of fewer elements run on the calling thread (one task, the serial
#: driver): waking numba's threads costs more than they save there. Measured
#: with ``benchmarks/serial_threshold.py`` (see its table in the README).
SERIAL_BELOW = 1 << 16


def _tasks(n):
    """Blocks of work for a call reading ``n`` input elements: one (serial) for small
    calls or a single thread, else enough for load balance across numba's threads."""
    if n < SERIAL_BELOW:
        return 1
    threads = numba.get_num_threads()  # per thread and changeable: asked at every call
    return 1 if threads == 1 else 8 * threads


def _output(out, strides, shape, like_strides, dtype):
    """``out`` where the kernel can write it directly, else a new array in the layout of ``like_strides``, its
    memory from the output cache (``_outputs``)."""
    return out_or_empty(out, strides, shape, like_strides, dtype, _outputs)


#: forward takes ``lse_out``, backward and jvp ``out``: the kernels write preallocated outputs of the layout
#: they would allocate, so a call with its outputs given neither allocates nor copies (softpool_nd._dispatch).
takes_out = True


#: The lse argument of a forward that computes no lse.
_NO_LSE = {np.dtype(t): np.empty(0, t) for t in (np.float32, np.float64)}


@functools.lru_cache(maxsize=1024)
def _forward_plan(geom, x_strides):
    """(output strides, loop table, kernel) of a forward call; cached, as calls repeat."""
    ys = layout_strides(geom.out_shape, x_strides)
    tab = loop_table(geom, x_strides, ys)
    return ys, tab, kernels.forward_kernel(tab)


@functools.lru_cache(maxsize=1024)
def _backward_plan(geom, x_strides, g_strides):
    """(output strides, loop table, kernel) of a backward call; cached like ``_forward_plan``."""
    ys = layout_strides(geom.out_shape, x_strides)
    tab = loop_table(geom, x_strides, ys, g_strides)
    return ys, tab, kernels.backward_kernel(tab)


def forward(x, geom, beta, acc_dtype, out=None, with_lse=True, lse_out=None):
    """Return (y, lse) for a float16/32/64 array ``x``; ``y`` is ``out`` and ``lse`` is ``lse_out`` when given.

    With ``with_lse`` False and no ``lse_out``, lse is neither computed nor allocated and None is returned for it.
    """
    x, x_strides = whole(x)
    xflat, x0 = _flat(x)
    ys, tab, kernel = _forward_plan(geom, x_strides)
    with_lse = with_lse or lse_out is not None
    y = _output(out, ys, geom.out_shape, x.strides, x.dtype)
    lse = _output(lse_out, ys, geom.out_shape, x.strides, acc_dtype) if with_lse else None
    lse_flat = _flat(lse, True)[0] if with_lse else _NO_LSE[acc_dtype]
    with _threads.serial:
        kernel(xflat, x0, tab, acc_dtype.type(beta), _flat(y, True)[0], lse_flat, with_lse, _tasks(x.size))
    return into(out, y), into(lse_out, lse)


def backward(grad_y, x, y, lse, geom, beta, acc_dtype, exact, out=None):
    """Return grad_x for ``x`` (``out`` when given); grad_y, y and lse are output-shaped arrays."""
    x, x_strides = whole(x)
    gx = _output(out, layout_strides(x.shape, x.strides), x.shape, x.strides, x.dtype)
    ys, tab, kernel = _backward_plan(geom, x_strides, element_strides(gx))
    gy, y, lse = (in_layout(a, ys, x.strides) for a in (grad_y, y, lse))
    xflat, x0 = _flat(x)
    with _threads.serial:
        kernel(
            xflat,
            x0,
            tab,
            acc_dtype.type(beta),
            _flat(gy)[0],
            _flat(y)[0],
            _flat(lse)[0],
            exact,
            _flat(gx, True)[0],
            _tasks(x.size),
        )
    return into(out, gx)


@functools.lru_cache(maxsize=1024)
def _jvp_plan(geom, x_strides, dx_strides):
    """(output strides, loop table, its copy with dx's strides as x's) of a jvp call; cached like ``_forward_plan``."""
    ys = layout_strides(geom.out_shape, x_strides)
    tab = loop_table(geom, x_strides, ys, dx_strides)
    return ys, tab, dx_table(tab)


def jvp(dx, x, y, lse, geom, beta, acc_dtype, out=None):
    """Return the tangent dy of y for the tangent ``dx`` of ``x`` (dx in x's dtype and shape, any layout); ``out``
    when given."""
    x, x_strides = whole(x)
    dx, dx_strides = whole(dx)
    ys, tab, dtab = _jvp_plan(geom, x_strides, dx_strides)
    y, lse = in_layout(y, ys, x.strides), in_layout(lse, ys, x.strides)
    dy = _output(out, ys, geom.out_shape, x.strides, x.dtype)
    (xflat, x0), (dflat, d0) = _flat(x), _flat(dx)
    with _threads.serial:
        jvp_kernel(
            xflat,
            x0,
            dflat,
            d0,
            tab,
            dtab,
            acc_dtype.type(beta),
            _flat(y)[0],
            _flat(lse)[0],
            _flat(dy, True)[0],
            _tasks(x.size),
        )
    return into(out, dy)
