"""Where blocks start along one pooled axis: the chunk arithmetic of the dask backend.

A block is a run of consecutive output windows ``[o0, o1)`` and the input
cells from the start of window ``o0`` to the start of window ``o1``. With
input chunk boundaries on window starts, the windows of a block read only
their own chunk plus ``overlap = span - stride`` cells of the next chunk
(none when windows do not overlap), and the cells of a chunk are read by
its own windows plus the ``halo = (span - 1) // stride`` last windows of the
previous block. Both numbers are the least any blocking can need: a window
spans ``span`` cells and consecutive windows start ``stride`` apart.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AxisPlan", "plan_axis"]


@dataclass(frozen=True)
class AxisPlan:
    """Blocks along one pooled axis.

    Attributes
    ----------
    length, kernel, stride, dilation, pad_lo : int
        The axis and its pooling, as in :class:`softpool_nd.Geometry`.
    out_starts : tuple of int
        First output window of every block, then the output length.
    """

    length: int
    kernel: int
    stride: int
    dilation: int
    pad_lo: int
    out_starts: tuple

    @property
    def span(self):
        return self.dilation * (self.kernel - 1) + 1

    @property
    def overlap(self):
        """Input cells a block reads past its own chunk (forward)."""
        return max(self.span - self.stride, 0) if len(self.out_starts) > 2 else 0

    @property
    def halo(self):
        """Output windows of the previous block that reach into a chunk (backward)."""
        return (self.span - 1) // self.stride if len(self.out_starts) > 2 else 0

    def in_start(self, j):
        """First input cell of block ``j`` (``j`` = number of blocks gives the length)."""
        if j == len(self.out_starts) - 1:
            return self.length
        return max(self.out_starts[j] * self.stride - self.pad_lo, 0)

    @property
    def in_chunks(self):
        return tuple(self.in_start(j + 1) - self.in_start(j) for j in range(len(self.out_starts) - 1))

    @property
    def out_chunks(self):
        return tuple(b - a for a, b in zip(self.out_starts[:-1], self.out_starts[1:]))

    def window_padding(self, j, first_window, n_windows, extent):
        """``(lo, hi, used)``: pool ``n_windows`` windows from ``first_window`` over the
        ``extent`` cells from the start of block ``j``.

        ``lo``/``hi`` are the padding that makes exactly those windows fit and
        ``used`` how many of the ``extent`` cells they reach; the cells past
        ``used`` belong to no window of the call.
        """
        lo = self.in_start(j) - (first_window * self.stride - self.pad_lo)
        need = (n_windows - 1) * self.stride + self.span - lo
        used = min(extent, need)
        return lo, need - used, used


def plan_axis(chunks, length, out_len, kernel, stride, dilation, pad_lo):
    """Blocks whose input chunks start on window starts, near the given chunk boundaries.

    Every interior boundary of ``chunks`` moves to the nearest window start,
    so a chunk grows or shrinks by less than ``stride`` cells; boundaries that
    collide merge. Chunks too small for the overlap and halo (and, for
    overlapping windows, narrower than ``dilation``, so that every window
    reaching into a chunk has a cell in it) merge with the next one.

    Examples
    --------
    >>> p = plan_axis((5, 5, 5), 15, 7, 2, 2, 1, 0)
    >>> p.in_chunks, p.out_chunks
    ((6, 4, 5), (3, 2, 2))
    """
    span = dilation * (kernel - 1) + 1
    halo = (span - 1) // stride
    min_in = max(span - stride, dilation if halo else 0, 1)
    lowest = pad_lo // stride + 1  # first window that starts inside the axis

    starts, pos = set(), 0
    for c in chunks[:-1]:
        pos += c
        o = (pos + pad_lo + stride // 2) // stride
        if lowest <= o <= out_len - 1:
            starts.add(o)

    def cell(o):
        return length if o == out_len else max(o * stride - pad_lo, 0)

    def fits(a, b):
        return cell(b) - cell(a) >= min_in and b - a >= halo

    kept = [0]
    for o in sorted(starts):
        if fits(kept[-1], o):
            kept.append(o)
    while len(kept) > 1 and not fits(kept[-1], out_len):
        kept.pop()
    return AxisPlan(length, kernel, stride, dilation, pad_lo, tuple(kept) + (out_len,))
