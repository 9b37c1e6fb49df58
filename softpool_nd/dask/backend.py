"""Dask arrays in, lazy dask arrays out: one in-memory SoftPool call per block.

The input is first rechunked along the pooled axes so that every chunk starts
on a window start (see :mod:`softpool_nd.dask._plan`); that moves each chunk
boundary by less than one stride and is skipped on axes already aligned, so
it costs one extra task per chunk and the transfer of thin slabs between
neighbours, never a full shuffle. Overlapping windows then read
``span - stride`` cells of the next chunk through :func:`dask.array.overlap.overlap`
(right side only), the least any blocking needs. Every task calls
:func:`softpool_nd.forward` or :func:`softpool_nd.backward` on its block, so
NumPy and CuPy chunks both work, with the block's own padding: global padding
on the outer blocks, and on inner blocks just enough to keep the count of
windows exact (those padding cells never take part, as everywhere).
:func:`softpool_nd.jvp` is blocked as the forward is, its tangent chunked like ``x``.
"""

import dask.array as da
from dask.array.core import handle_out
from dask.array.utils import meta_from_array
from dask.base import tokenize

from .. import _api
from .._dispatch import backend_for
from ._plan import plan_axis

name = "dask"
xp = da

__all__ = ["name", "xp", "forward", "backward", "jvp", "plans", "aligned"]


def plans(x, geom):
    """One :class:`~softpool_nd.dask._plan.AxisPlan` per pooled axis of ``x``."""
    return tuple(
        plan_axis(
            x.chunks[a],
            geom.in_shape[a],
            geom.out_shape[a],
            geom.kernel[i],
            geom.stride[i],
            geom.dilation[i],
            geom.pad_lo[i],
        )
        for i, a in enumerate(geom.axes)
    )


def aligned(x, geom, axis_plans):
    """``x`` rechunked so that its pooled-axis chunks start on window starts (no-op when they do)."""
    chunks = list(x.chunks)
    for a, p in zip(geom.axes, axis_plans):
        chunks[a] = p.in_chunks
    return x.rechunk(tuple(chunks))


def _out_chunks(x, geom, axis_plans):
    chunks = list(x.chunks)
    for a, p in zip(geom.axes, axis_plans):
        chunks[a] = p.out_chunks
    return tuple(chunks)


def _overlapped(a, geom, depths):
    """``a`` with ``(left, right)`` extra cells per pooled axis from the neighbouring blocks."""
    depth = {ax: d for ax, d in zip(geom.axes, depths) if d != (0, 0)}
    if not depth:
        return a
    return da.overlap.overlap(a, depth=depth, boundary="none", allow_rechunk=False)


def _block_call(geom, axis_plans, block_id, extents, halos):
    """Padding per pooled axis and the slice of the block the windows use."""
    padding, used = [], [slice(None)] * len(geom.in_shape)
    for a, p, h, extent in zip(geom.axes, axis_plans, halos, extents):
        j = block_id[a]
        first = p.out_starts[j] - (h if j else 0)
        lo, hi, n = p.window_padding(j, first, p.out_starts[j + 1] - first, extent)
        padding.append((lo, hi))
        used[a] = slice(0, n)
    return tuple(padding), tuple(used)


def _kwargs(geom, beta, padding):
    return dict(
        kernel=geom.kernel, stride=geom.stride, padding=padding, dilation=geom.dilation, axes=geom.axes, beta=beta
    )


def _forward_block(block, geom, axis_plans, beta, acc_dtype, with_lse, block_id=None):
    if with_lse:
        block_id = block_id[1:]  # the stacked output's leading (y, lse) axis
    extents = [block.shape[a] for a in geom.axes]
    padding, used = _block_call(geom, axis_plans, block_id, extents, [0] * len(geom.axes))
    kwargs = _kwargs(geom, beta, padding)
    if not with_lse:
        return _api.pool(block[used], **kwargs)
    y, lse = _api.forward(block[used], **kwargs)
    return backend_for(y).xp.stack([y.astype(acc_dtype), lse])


def forward(x, geom, beta, acc_dtype, out=None, with_lse=True):
    """Lazy ``(y, lse)``, or ``(y, None)`` without ``with_lse``; one task per block.

    With ``with_lse`` the block tasks return ``y`` and ``lse`` stacked in the
    accumulation dtype (exact for float16 ``y``), so that ``y`` and ``lse``
    come from one pass over each block, and ``y`` alone from the same tasks.
    """
    axis_plans = plans(x, geom)
    xa = _overlapped(aligned(x, geom, axis_plans), geom, [(0, p.overlap) for p in axis_plans])
    token = tokenize(x, geom, beta, acc_dtype.str, with_lse)
    out_chunks = _out_chunks(x, geom, axis_plans)
    args = (_forward_block, xa, geom, axis_plans, beta, acc_dtype, with_lse)
    if with_lse:
        both = da.map_blocks(
            *args,
            chunks=((2,),) + out_chunks,
            new_axis=0,
            dtype=acc_dtype,
            meta=meta_from_array(x._meta, x.ndim + 1, acc_dtype),
            name=f"softpool-forward-{token}",
        )
        y, lse = both[0].astype(x.dtype), both[1]
    else:
        y = da.map_blocks(
            *args,
            chunks=out_chunks,
            dtype=x.dtype,
            meta=meta_from_array(x._meta, x.ndim, x.dtype),
            name=f"softpool-pool-{token}",
        )
        lse = None
    if out is not None:
        y = handle_out(out, y)
    return y, lse


def _backward_block(x_block, grad_y, y, lse, geom, axis_plans, beta, exact, block_id=None):
    extents = [x_block.shape[a] for a in geom.axes]
    halos = [p.halo for p in axis_plans]
    padding, used = _block_call(geom, axis_plans, block_id, extents, halos)
    g = _api.backward(
        grad_y, x_block[used], y=y, lse=lse, gradient="exact" if exact else "weights", **_kwargs(geom, beta, padding)
    )
    if g.shape == x_block.shape:
        return g
    grad = backend_for(g).xp.zeros(x_block.shape, dtype=g.dtype)
    grad[used] = g
    return grad


def backward(grad_y, x, y, lse, geom, beta, acc_dtype, exact):
    """Lazy ``grad_x``, chunked like ``x`` after alignment to window starts.

    Every task reads one chunk of ``x`` (no overlap: a cell's gradient needs
    only its own value and the ``grad_y``, ``y`` and ``lse`` of its windows)
    and the output blocks of the windows that reach into it: its own block
    plus ``(span - 1) // stride`` windows of the previous one.
    """
    axis_plans = plans(x, geom)
    xa = aligned(x, geom, axis_plans)
    out_chunks = _out_chunks(xa, geom, axis_plans)
    depths = [(p.halo, 0) for p in axis_plans]
    outs = [_overlapped(a.rechunk(out_chunks), geom, depths) for a in (grad_y, y, lse)]
    token = tokenize(grad_y, x, y, lse, geom, beta, exact)
    return da.map_blocks(
        _backward_block,
        xa,
        *outs,
        geom,
        axis_plans,
        beta,
        exact,
        chunks=xa.chunks,
        dtype=x.dtype,
        meta=meta_from_array(x._meta, x.ndim, x.dtype),
        name=f"softpool-backward-{token}",
    )


def _jvp_block(x_block, dx_block, y, lse, geom, axis_plans, beta, block_id=None):
    extents = [x_block.shape[a] for a in geom.axes]
    padding, used = _block_call(geom, axis_plans, block_id, extents, [0] * len(geom.axes))
    return _api.jvp(x_block[used], dx_block[used], y=y, lse=lse, **_kwargs(geom, beta, padding))


def jvp(dx, x, y, lse, geom, beta, acc_dtype):
    """Lazy ``dy``, blocked as the forward is: every task reads an aligned chunk of ``x`` and
    of ``dx`` with the forward's overlap, and its block of ``y`` and ``lse``.
    """
    axis_plans = plans(x, geom)
    depths = [(0, p.overlap) for p in axis_plans]
    xa, dxa = (_overlapped(aligned(a, geom, axis_plans), geom, depths) for a in (x, dx.rechunk(x.chunks)))
    out_chunks = _out_chunks(x, geom, axis_plans)
    token = tokenize(dx, x, y, lse, geom, beta)
    return da.map_blocks(
        _jvp_block,
        xa,
        dxa,
        y.rechunk(out_chunks),
        lse.rechunk(out_chunks),
        geom,
        axis_plans,
        beta,
        chunks=out_chunks,
        dtype=x.dtype,
        meta=meta_from_array(x._meta, x.ndim, x.dtype),
        name=f"softpool-jvp-{token}",
    )
