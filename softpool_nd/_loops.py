"""Turn a Geometry and array strides into the integer table kernels walk.

Both backends (numba on the CPU, CUDA on the GPU) read the same table: one
row per loop dimension, columns given by the constants below. Unpooled axes
appear as kernel-1 dimensions, size-1 axes are dropped and neighbouring
unpooled axes that are contiguous in every array are merged, so a
(N, C, H, W) pooling over H and W walks three dimensions, not four. The last
row is the innermost loop: the dimension with the smallest input stride, so
that the innermost loop reads memory in order whatever the layout
(channels-last included).
"""

from __future__ import annotations

import functools

import numpy as np

#: Column indices of a loop table.
L, O, K, S, D, P, XS, YS, GS = range(9)
NCOLS = 9

__all__ = [
    "L",
    "O",
    "K",
    "S",
    "D",
    "P",
    "XS",
    "YS",
    "GS",
    "NCOLS",
    "loop_table",
    "layout_order",
    "layout_strides",
    "empty_like_layout",
    "out_or_empty",
    "element_strides",
    "whole",
    "same_layout",
    "in_layout",
    "into",
]


def element_strides(a):
    """Strides of ``a`` in elements; None when one is not a whole number of elements."""
    return _in_elements(a.strides, a.dtype.itemsize)


# Memoized on the (few) layouts a program uses: every kernel call checks each of its arrays,
# and the generator expressions cost more than the kernels on small maps (issue #14).
@functools.lru_cache(maxsize=1024)
def _in_elements(strides, item):
    if any(s % item for s in strides):
        return None
    return tuple(s // item for s in strides)


def whole(a, xp=np):
    """(``a`` or, when a stride is not a whole number of elements, a contiguous copy; its element strides)."""
    strides = element_strides(a)
    if strides is None:
        a = xp.ascontiguousarray(a)
        strides = element_strides(a)
    return a, strides


def same_layout(a, strides):
    """True when ``a`` can be addressed with element ``strides`` (size-1 axes never move, so their strides
    do not matter): the one test of whether an array is already in the layout a kernel walks."""
    return _addressable(a.strides, a.dtype.itemsize, a.shape, strides)


@functools.lru_cache(maxsize=1024)
def _addressable(byte_strides, item, shape, strides):
    own = _in_elements(byte_strides, item)
    return own is not None and all(s == t for s, t, n in zip(own, strides, shape) if n > 1)


def in_layout(a, strides, like_strides, xp=np):
    """``a`` when it is in the layout of element ``strides``, else a copy of it in the dense layout
    ordered like ``like_strides`` (whose element strides are ``strides``)."""
    if same_layout(a, strides):
        return a
    b = empty_like_layout(a.shape, like_strides, a.dtype, xp)
    b[...] = a
    return b


def into(out, result):
    """``out`` holding ``result`` (a copy unless a kernel wrote ``out`` itself); ``result`` when no ``out`` is given.

    The one rule for a caller's preallocated output, used by the public functions and the GPU backend.
    """
    if out is None or out is result:
        return result
    out[...] = result
    return out


@functools.lru_cache(maxsize=1024)
def layout_order(strides):
    """Axis permutation from the slowest to the fastest varying axis of an array.

    Allocating outputs in this order gives them the memory layout of the input
    (channels-last stays channels-last), as ``torch.preserve_format`` does.
    ``strides`` is a tuple; the result is cached, as calls repeat.
    """
    return tuple(sorted(range(len(strides)), key=lambda a: (-abs(strides[a]), a)))


@functools.lru_cache(maxsize=1024)
def _transposition(strides):
    """(order, its inverse) that ``empty_like_layout`` allocates and views with; None for C order."""
    order = layout_order(strides)
    if order == tuple(range(len(order))):
        return None
    return order, tuple(int(a) for a in np.argsort(order))


def _is_batch(row):
    """An unpooled dimension: every cell is its own window."""
    return row[K] == 1 and row[S] == 1 and row[P] == 0


@functools.lru_cache(maxsize=1024)
def layout_strides(shape, like_strides):
    """Element strides of ``empty_like_layout(shape, like_strides, ...)``, without allocating it; cached."""
    strides = [0] * len(shape)
    step = 1
    for a in reversed(layout_order(like_strides)):
        strides[a] = step
        step *= shape[a]
    return tuple(strides)


def empty_like_layout(shape, like_strides, dtype, xp=np):
    """An uninitialised ``xp`` array of ``shape`` whose axes are ordered in memory like ``like_strides``."""
    perm = _transposition(like_strides)
    if perm is None:
        return xp.empty(shape, dtype=dtype)
    order, inverse = perm
    return xp.empty(tuple(shape[a] for a in order), dtype=dtype).transpose(inverse)


def out_or_empty(out, strides, shape, like_strides, dtype, xp=np):
    """``out`` where a kernel can write it directly (its element strides are ``strides``), else a new array of
    ``shape`` in the layout of ``like_strides`` (:func:`empty_like_layout`); :func:`into` then copies it over."""
    if out is not None and same_layout(out, strides):
        return out
    return empty_like_layout(shape, like_strides, dtype, xp)


def loop_table(geom, x_strides, y_strides, g_strides=None):
    """Build the int64 loop table for one call.

    Parameters
    ----------
    geom : Geometry
    x_strides : tuple of int
        Element strides of the input (may be negative or zero).
    y_strides : tuple of int
        Element strides shared by every output-shaped array (y, lse, grad_y).
    g_strides : tuple of int, optional
        Element strides of grad_x (backward only); defaults to ``x_strides``.

    Returns
    -------
    numpy.ndarray
        Shape (ndims, NCOLS), int64; the last row is the innermost loop.
    """
    if g_strides is None:
        g_strides = x_strides
    rows = [list(r) + [xs, ys, gs] for r, xs, ys, gs in zip(geom.full(), x_strides, y_strides, g_strides)]
    rows = [r for r in rows if not (r[L] == 1 and r[O] == 1 and r[K] == 1)]
    merged: list[list[int]] = []
    for r in rows:
        prev = merged[-1] if merged else None
        if (
            prev is not None
            and _is_batch(prev)
            and _is_batch(r)
            and prev[XS] == r[L] * r[XS]
            and prev[YS] == r[O] * r[YS]
            and prev[GS] == r[L] * r[GS]
        ):
            merged[-1] = [prev[L] * r[L], prev[O] * r[O], 1, 1, 1, 0, r[XS], r[YS], r[GS]]
        else:
            merged.append(r)
    if not merged:
        merged = [[1, 1, 1, 1, 1, 0, 0, 0, 0]]
    # Outer dimensions from the largest input stride down keep consecutive
    # rows close in memory; the smallest input stride goes innermost.
    merged.sort(key=lambda r: (-abs(r[XS]), -r[L]))
    return np.ascontiguousarray(merged, dtype=np.int64)
