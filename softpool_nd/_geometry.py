"""Pooling geometry: the one place where user arguments become numbers.

Every public entry point turns ``kernel``, ``stride``, ``padding``,
``dilation``, ``ceil_mode`` and ``axes`` into a :class:`Geometry` through
:func:`make_geometry`; backends consume that object and never look at the
user's arguments again.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

__all__ = ["Geometry", "PoolArgs", "make_geometry", "normalize_args", "IntOrTuple", "Padding"]

#: An int for every pooled axis, or one per pooled axis (``kernel``, ``stride``, ``dilation``, ``axes``).
IntOrTuple = int | Sequence[int]
#: ``padding``: an int, one per pooled axis, a (before, after) pair per pooled axis, or ``"same"``.
Padding = int | str | Sequence[int | Sequence[int]]


@dataclass(frozen=True)
class Geometry:
    """Immutable description of one pooling over an N-d array.

    All per-axis tuples have one entry per pooled axis, in the order of
    ``axes`` (which is sorted ascending).

    Attributes
    ----------
    in_shape, out_shape : tuple of int
        Full shapes of the input and of the pooled output.
    axes : tuple of int
        The pooled axes, non-negative and ascending.
    kernel, stride, dilation, pad_lo, pad_hi : tuple of int
        Window size, step, spacing of window cells and implicit padding
        before/after, per pooled axis.

    Examples
    --------
    >>> import softpool_nd
    >>> g = softpool_nd.make_geometry((1, 3, 9, 8), kernel=3, stride=2, padding=1)
    >>> g.axes, g.out_shape, g.pad_lo, g.pad_hi
    ((2, 3), (1, 3, 5, 4), (1, 1), (1, 1))
    >>> g.overlapping
    True
    """

    in_shape: tuple[int, ...]
    out_shape: tuple[int, ...]
    axes: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pad_lo: tuple[int, ...]
    pad_hi: tuple[int, ...]

    def full(self) -> tuple[tuple[int, int, int, int, int, int], ...]:
        """Per-array-axis ``(L, O, K, S, D, P)`` with unpooled axes as kernel 1.

        Treating an unpooled axis as a pooled one with kernel, stride and
        dilation 1 and no padding lets a kernel walk every axis the same way.
        """
        rows = []
        pooled = dict(zip(self.axes, range(len(self.axes))))
        for a, (n, m) in enumerate(zip(self.in_shape, self.out_shape)):
            if a in pooled:
                i = pooled[a]
                rows.append((n, m, self.kernel[i], self.stride[i], self.dilation[i], self.pad_lo[i]))
            else:
                rows.append((n, m, 1, 1, 1, 0))
        return tuple(rows)

    @property
    def overlapping(self) -> bool:
        """True when some input cell belongs to more than one window."""
        return any(d * (k - 1) + 1 > s for k, s, d in zip(self.kernel, self.stride, self.dilation))


def _where(shape):
    return f"(input shape {tuple(shape)})"


#: The kernels index in int64; every geometry is checked to keep its index arithmetic below this.
INDEX_MAX = 2**63 - 1


def _shown(value):
    """``repr(value)``, with ints too long to read (or to format at all) abbreviated."""
    if isinstance(value, (tuple, list)):
        inner = ", ".join(map(_shown, value)) + ("," if isinstance(value, tuple) and len(value) == 1 else "")
        return f"({inner})" if isinstance(value, tuple) else f"[{inner}]"
    if _is_int(value) and abs(int(value)) > 10**30:
        return f"~{'-' if value < 0 else ''}2**{abs(int(value)).bit_length() - 1}"
    return repr(value)


def _check_int64(name, raw, values, shape):
    """Refuse a per-axis value the kernels' int64 index arithmetic cannot hold."""
    if max(values) > INDEX_MAX:
        raise ValueError(
            f"{name}={_shown(raw)} exceeds 2**63 - 1, the largest index SoftPool computes with {_where(shape)}"
        )


def _is_int(v):
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _per_axis(name, value, n, shape, allow_none=False):
    """Expand an int or a sequence of ints into an n-tuple of Python ints."""
    if value is None and allow_none:
        return None
    if _is_int(value):
        return (int(value),) * n
    if isinstance(value, (tuple, list)) and all(_is_int(v) for v in value):
        if len(value) != n:
            raise ValueError(
                f"{name}={value!r} has {len(value)} entries but {n} axes are pooled {_where(shape)}; "
                f"give one entry per pooled axis or a single int"
            )
        return tuple(int(v) for v in value)
    raise TypeError(f"{name}={value!r} must be an int or a tuple of ints {_where(shape)}")


def _resolve_axes(ndim, kernel, axes, shape):
    if axes is None:
        if isinstance(kernel, (tuple, list)):
            n = len(kernel)
            if n == 0 or n > ndim:
                raise ValueError(
                    f"kernel={kernel!r} names {n} axes but the input has {ndim} {_where(shape)}; "
                    f"pass axes= to choose the pooled axes"
                )
            return tuple(range(ndim - n, ndim))
        return tuple(range(2, ndim)) if ndim >= 3 else tuple(range(ndim))
    raw = (axes,) if _is_int(axes) else axes
    if not isinstance(raw, (tuple, list)) or not all(_is_int(a) for a in raw):
        raise TypeError(f"axes={axes!r} must be an int or a tuple of ints {_where(shape)}")
    if len(raw) == 0:
        raise ValueError(f"axes={axes!r} pools no axis {_where(shape)}")
    norm = []
    for a in raw:
        if not -ndim <= a < ndim:
            raise ValueError(f"axes={axes!r}: axis {a} is out of range for a {ndim}-d input {_where(shape)}")
        norm.append(int(a) % ndim)
    if len(set(norm)) != len(norm):
        raise ValueError(f"axes={axes!r} repeats an axis {_where(shape)}")
    return tuple(norm)


def _padding(padding, n, shape):
    """Return per-axis (lo, hi) pairs, or the string 'same' to be resolved later."""
    if isinstance(padding, str):
        if padding == "valid":
            return ((0, 0),) * n
        if padding == "same":
            return "same"
        raise ValueError(
            f"padding={padding!r} is not a known padding; use an int, a tuple, 'valid' or 'same' {_where(shape)}"
        )
    if _is_int(padding):
        return ((int(padding), int(padding)),) * n
    if isinstance(padding, (tuple, list)):
        if len(padding) != n:
            raise ValueError(f"padding={padding!r} has {len(padding)} entries but {n} axes are pooled {_where(shape)}")
        pairs = []
        for p in padding:
            if _is_int(p):
                pairs.append((int(p), int(p)))
            elif isinstance(p, (tuple, list)) and len(p) == 2 and all(_is_int(q) for q in p):
                pairs.append((int(p[0]), int(p[1])))
            else:
                raise TypeError(
                    f"padding={padding!r}: entry {p!r} must be an int or a (before, after) pair {_where(shape)}"
                )
        return tuple(pairs)
    raise TypeError(f"padding={padding!r} must be an int, a tuple, 'valid' or 'same' {_where(shape)}")


def _check_windows(axis, n, out, k, s, d, lo, hi, shape, padding):
    """Raise if some window along one axis would hold only padding cells.

    Windows starting inside the input always hold their first cell, and starts
    grow with the window index, so only the windows starting in the left
    padding and the last window need a look. Of the former, the first
    min(d, n + 1) suffice however large the padding: the first window is the
    one most likely to end before the input, and a window starting in the
    padding reaches the input at ``start % d``; these residues step by
    ``s % d``, so they repeat within d windows, and within n + 1 windows either
    they repeat (each in [0, n), as checked) or one of them is >= n. Plain
    Python (no NumPy), so that tracing compilers can run it; the integer
    arguments decide first, so that a symbolic length ``n`` (torch.export) is
    compared only where the answer depends on it: the last window starts at
    most ``hi - span`` cells before the end (ceil_mode only drops a window that
    would start past it), so it can hold only padding only when ``hi >= span``.
    """
    o = 0
    # n + 1 only where n is a plain int: a symbolic n would gain a guard per window
    limit = min(d, n + 1) if isinstance(n, int) else d
    # a while loop, not range(out): a symbolic out (torch.SymInt) would be specialised
    while o * s - lo < 0 and o < limit and o < out:
        start = o * s - lo
        first = -(start // d)  # first window cell at or right of index 0
        if first >= k or start + first * d >= n:
            _only_padding(o, axis, shape, padding)
        o += 1
    if hi >= d * (k - 1) + 1 and (out - 1) * s - lo >= n:
        _only_padding(out - 1, axis, shape, padding)


def _only_padding(o, axis, shape, padding):
    raise ValueError(
        f"padding={padding!r}: window {o} along axis {axis} holds only padding cells {_where(shape)}; "
        f"reduce the padding or the dilation"
    )


class PoolArgs(NamedTuple):
    """Pooling arguments checked against a rank only, one entry per pooled axis, ascending axes.

    ``padding`` is the string ``'same'`` or a tuple of (before, after) pairs.
    """

    axes: tuple
    kernel: tuple
    stride: tuple
    dilation: tuple
    padding: object
    ceil_mode: bool


def normalize_args(ndim, kernel=2, stride=None, padding=0, dilation=1, ceil_mode=False, axes=None, shape=None):
    """Check and canonicalise pooling arguments for an input of rank ``ndim``.

    Everything that does not depend on the axis lengths is checked here, so
    that a tracing compiler (``torch.compile``) can run it on symbolic shapes;
    :func:`make_geometry` finishes the job with the lengths. ``shape`` is only
    used in error messages.

    Examples
    --------
    >>> normalize_args(4, (2, 3), axes=(-1, 1))
    PoolArgs(axes=(1, 3), kernel=(3, 2), stride=(3, 2), dilation=(1, 1), padding=((0, 0), (0, 0)), ceil_mode=False)
    """
    shape = tuple(shape) if shape is not None else ("?",) * ndim
    if ndim == 0:
        raise ValueError("the input is 0-d (input shape ()); SoftPool needs at least one axis to pool")
    if not (_is_int(kernel) or isinstance(kernel, (tuple, list))):
        raise TypeError(f"kernel={kernel!r} must be an int or a tuple of ints {_where(shape)}")
    axes_t = _resolve_axes(ndim, kernel, axes, shape)
    n = len(axes_t)
    k = _per_axis("kernel", kernel, n, shape)
    s = _per_axis("stride", stride, n, shape, allow_none=True) or k
    d = _per_axis("dilation", dilation, n, shape)
    if not isinstance(ceil_mode, (bool, np.bool_)):
        raise TypeError(f"ceil_mode={ceil_mode!r} must be True or False {_where(shape)}")
    for name, raw, vals in (("kernel", kernel, k), ("stride", stride, s), ("dilation", dilation, d)):
        if min(vals) < 1:
            raise ValueError(f"{name}={_shown(raw)} must be >= 1 on every pooled axis {_where(shape)}")
        _check_int64(name, raw, vals, shape)
    pads = _padding(padding, n, shape)
    if pads != "same":
        if any(p < 0 for pair in pads for p in pair):
            raise ValueError(f"padding={_shown(padding)} must not be negative {_where(shape)}")
        _check_int64("padding", padding, [p for pair in pads for p in pair], shape)
    # Order the per-axis values by axis so equal geometries compare equal.
    order = sorted(range(n), key=lambda i: axes_t[i])
    pick = lambda v: tuple(v[i] for i in order)
    return PoolArgs(pick(axes_t), pick(k), pick(s), pick(d), pads if pads == "same" else pick(pads), bool(ceil_mode))


def _frozen(v):
    """A hashable stand-in for an argument that tells apart what the checks tell apart.

    2, 2.0, True and numpy.int64(2) are equal as dict keys but not as pooling
    arguments (a float or a bool is refused), so the key keeps each value's
    type. Raises TypeError for an unhashable value.
    """
    if isinstance(v, (tuple, list)):
        return (type(v), tuple(_frozen(e) for e in v))
    hash(v)
    return (type(v), v)


#: Argument types that are their own key together with their type.
_SCALARS = frozenset((int, bool, float, str, type(None)))
#: Geometries of recent calls, by shape and frozen arguments: a training loop
#: pools the same shapes again and again, and building a Geometry costs more
#: than pooling a small array.
_GEOMETRIES: dict[tuple, Geometry] = {}
_GEOMETRIES_MAX = 1024


def make_geometry(
    shape: Sequence[int],
    kernel: IntOrTuple = 2,
    stride: IntOrTuple | None = None,
    padding: Padding = 0,
    dilation: IntOrTuple = 1,
    ceil_mode: bool = False,
    axes: IntOrTuple | None = None,
) -> Geometry:
    """Validate pooling arguments against an input shape.

    Parameters
    ----------
    shape : tuple of int
        Shape of the input array.
    kernel, stride, padding, dilation, ceil_mode, axes
        As in :func:`softpool_nd.pool`.

    Returns
    -------
    Geometry
        Immutable; calls with the same shape and arguments may return the same object.

    Examples
    --------
    >>> make_geometry((1, 3, 8, 8), 2).out_shape
    (1, 3, 4, 4)
    """
    args = (kernel, stride, padding, dilation, ceil_mode, axes)
    kinds = tuple(map(type, args))
    try:
        # the shape's entries become ints whatever their type; scalar arguments
        # (the common call) are keyed with their types without _frozen's walk
        key = (tuple(shape), kinds, args) if _SCALARS.issuperset(kinds) else _frozen((shape,) + args)
        geom = _GEOMETRIES.get(key)
    except TypeError:
        return _build_geometry(shape, kernel, stride, padding, dilation, ceil_mode, axes)
    if geom is None:
        geom = _build_geometry(shape, kernel, stride, padding, dilation, ceil_mode, axes)
        if len(_GEOMETRIES) >= _GEOMETRIES_MAX:
            _GEOMETRIES.clear()
        _GEOMETRIES[key] = geom
    return geom


def _length(n):
    """An axis length as a Python int; a torch.SymInt (torch.compile, torch.export) stays symbolic.

    int() of a SymInt would specialise the traced program to this one size.
    """
    return n if type(n).__module__ == "torch" else int(n)


def _build_geometry(shape, kernel, stride, padding, dilation, ceil_mode, axes):
    shape = tuple(_length(n) for n in shape)
    axes_t, k, s, d, pads, ceil_mode = normalize_args(
        len(shape), kernel, stride, padding, dilation, ceil_mode, axes, shape
    )

    out_shape = list(shape)
    lo_t, hi_t = [], []
    for i, a in enumerate(axes_t):
        L, span = shape[a], d[i] * (k[i] - 1) + 1
        if pads == "same":
            # ceil division without a negative floor division: ONNX exports // of lengths as a truncating Div
            out = (L + s[i] - 1) // s[i]
            total = max((out - 1) * s[i] + span - L, 0)
            lo, hi = total // 2, total - total // 2
        else:
            lo, hi = pads[i]
        # the kernels' largest index sums: window starts and ends, cells and their windows along the padded axis
        extent = L + lo + hi + d[i] * (k[i] - 1) + s[i]
        if extent > INDEX_MAX:
            raise ValueError(
                f"kernel={_shown(kernel)}, stride={_shown(stride)}, padding={_shown(padding)}, "
                f"dilation={_shown(dilation)}: along axis {a}, length + padding + dilation*(kernel-1) + stride "
                f"= {_shown(extent)} exceeds 2**63 - 1, the largest index SoftPool computes with {_where(shape)}"
            )
        if pads == "same" and L >= d[i]:
            # 'same' pools to ceil(L / stride) cells in both modes, and from L >= dilation on none of its
            # windows holds only padding: decided without comparing lo and hi, which depend on L % stride
            out_shape[a] = out
            lo_t.append(lo)
            hi_t.append(hi)
            continue
        num = L + lo + hi - span
        if ceil_mode and span - s[i] < hi < span:
            # PyTorch's rule below, in closed form (the last window starts in the input or before it):
            # equal for every such geometry, and free of comparisons of a symbolic length
            out = (L + lo - 1) // s[i] + 1
        elif ceil_mode:
            out = (num + s[i] - 1) // s[i] + 1
            # only possible when hi + stride > span (ints first: see _check_windows)
            if hi + s[i] > span and (out - 1) * s[i] >= L + lo:
                out -= 1
        else:
            out = num // s[i] + 1
        if out < 1:
            raise ValueError(
                f"kernel={kernel!r} with dilation={dilation!r} spans {span} cells, more than the "
                f"{L + lo + hi} (padded) cells of axis {a} {_where(shape)}; the output would be empty"
            )
        _check_windows(a, L, out, k[i], s[i], d[i], lo, hi, shape, padding)
        out_shape[a] = out
        lo_t.append(lo)
        hi_t.append(hi)
    return Geometry(
        in_shape=shape,
        out_shape=tuple(out_shape),
        axes=axes_t,
        kernel=k,
        stride=s,
        dilation=d,
        pad_lo=tuple(lo_t),
        pad_hi=tuple(hi_t),
    )
