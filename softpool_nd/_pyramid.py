"""SoftPool image pyramids: the input, then repeatedly pooled copies of it."""

from __future__ import annotations

import numbers

import numpy as np

from ._api import _shape_of, pool
from ._geometry import _shown, make_geometry

__all__ = ["pyramid"]


#: No axis has 2**63 cells, so a kernel >= 2 allows at most 62 levels; with kernel 1 on every
#: axis each level is a copy of x, and more than this many is a mistake, not a pyramid.
_MAX_LEVELS = 63


def _check_levels(levels, shape):
    if not isinstance(levels, numbers.Integral) or isinstance(levels, (bool, np.bool_)):
        raise TypeError(f"levels={levels!r} must be an int (input shape {shape})")
    if not 0 <= levels <= _MAX_LEVELS:
        # levels is formatted through _shown: str() of a huge int can fail
        raise ValueError(f"levels={_shown(int(levels))} must be between 0 and {_MAX_LEVELS} (input shape {shape})")
    return int(levels)


def pyramid(x, levels, kernel=2, axes=None, beta=1.0):
    """The input and ``levels`` successively SoftPooled copies of it.

    Level ``i + 1`` is ``pool(level_i, kernel, axes=axes, beta=beta)``: stride
    equal to the kernel, no padding, a trailing remainder shorter than the
    kernel dropped, as :func:`pool` does. SoftPool keeps small bright
    structures that a mean pyramid blurs away.

    Parameters
    ----------
    x : numpy.ndarray, cupy.ndarray or dask.array.Array
        Input of any rank; float16/32/64, or integer/bool (pooled levels are
        then float64).
    levels : int
        Number of pooled levels, 0 to 63 (no axis is long enough for more
        with a kernel >= 2).
    kernel : int or tuple of int, default 2
        Downsampling factor per pooled axis, as in :func:`pool`.
    axes : int or tuple of int, optional
        Pooled axes, as in :func:`pool`.
    beta : float, default 1.0
        Inverse temperature, as in :func:`pool`.

    Returns
    -------
    list
        ``levels + 1`` arrays: ``x`` itself, then each pooled level. NumPy and
        CuPy levels are computed at the call. Dask levels are lazy and form
        one graph, each built from the one before, so computing or storing
        them together (``dask.compute(*levels)``, or :func:`dask.array.store`
        / ``to_zarr(..., compute=False)`` then one ``dask.compute``) reads the
        input once. Chunk sizes along the pooled axes that are multiples of
        ``kernel ** levels`` keep every level free of rechunking; other
        chunkings are aligned level by level (see :func:`pool`).

    Raises
    ------
    TypeError
        For a non-integer ``levels`` or any error :func:`pool` raises.
    ValueError
        For ``levels`` outside [0, 63], or when a pooled axis is too short
        for ``levels`` rounds of ``kernel``.

    Examples
    --------
    >>> import numpy as np, softpool_nd
    >>> x = np.zeros((8, 8)); x[5, 2] = 10.0
    >>> [level.shape for level in softpool_nd.pyramid(x, 3)]
    [(8, 8), (4, 4), (2, 2), (1, 1)]
    >>> float(softpool_nd.pyramid(x, 3)[3][0, 0]) > 9.9  # the bright cell survives
    True
    """
    shape = _shape_of(x, "x")
    levels = _check_levels(levels, shape)
    geom = make_geometry(shape, kernel, None, 0, 1, False, axes)
    for a, k in zip(geom.axes, geom.kernel):
        if shape[a] < k**levels:  # below 2**(63 * 63): quick, as levels <= 63
            raise ValueError(
                f"levels={levels} with kernel={kernel!r} needs axis {a} to hold at least {_shown(k**levels)} "
                f"cells but it has {shape[a]} (input shape {shape}); use fewer levels"
            )
    out = [x]
    for _ in range(levels):
        out.append(pool(out[-1], geom.kernel, axes=geom.axes, beta=beta))
    return out
