"""SoftPool decomposed into standard array operations, for runtimes where the kernels cannot run.

The decomposition is the kernels' arithmetic written with operations every
compiler and runtime has (Pad, strided Slice, Max, Exp, Log, Add, Mul, Div,
Where), so that ``torch.onnx.export`` writes it as plain ONNX and XLA
compiles it for any device:

1. The input is brought to the accumulation dtype (float32 for half and
   single precision, float64 otherwise) and padded along the pooled axes,
   with -inf for the maximum (0 for beta == 0). Padded cells weigh nothing.
2. For each of the prod(kernel) window offsets, a strided slice of the padded
   input is aligned with the windows (``x_off``). Their elementwise maximum is
   the max pool of the same geometry, ``m``.
3. Per offset, ``e = exp(beta * (x_off - m))``, ``s += e``,
   ``t += e * (x_off - m)``; then ``y = m + t / s`` and
   ``lse = beta * m + log(s)``.

beta < 0 pools ``-x`` with ``-beta`` and negates the result (negation is
exact), so that ``m`` is the window's minimum found without multiplying.
beta == 0 is the plain mean of the real cells. The non-finite rules are the
README's and NUMERICS.md's: a cell equal to an infinite maximum weighs 1,
``-inf`` next to finite cells weighs 0 (and its moment is skipped), NaN
propagates, and where ``x_off - m`` alone overflows the weight is
``exp(beta*x_off - beta*m)``.

Gradients are the frameworks' own automatic differentiation of this formula
with ``m`` held constant: y does not depend on the choice of ``m`` (dy/dm is
identically 0), so this is the exact gradient
``w_i * (1 + beta * (x_i - y))`` at every order, forward and reverse mode,
with every non-selected branch of a ``where`` kept finite.
``gradient='weights'`` adds a term that is exactly 0 in value and has
derivative ``sum(w_i * dx_i)`` (the weights held constant).

This module holds what both implementations share: :func:`plan`, the
pooling geometry as slices. One implementation per framework:
:mod:`softpool_nd.composite.torch` and :mod:`softpool_nd.composite.jax`.
"""
import itertools
from typing import NamedTuple

import numpy as np

from .._geometry import make_geometry, normalize_args

__all__ = ["Plan", "plan"]


class Plan(NamedTuple):
    """Pooling geometry as a padding and one tuple of slices per window offset.

    Attributes
    ----------
    geom : softpool_nd._geometry.Geometry
        The geometry (for a traced shape: with 1 for every unpooled length).
    pads : tuple of (int, int)
        (before, after) padding of every axis of the input (0, 0 for unpooled
        axes): ``pad_lo`` before, and after it as much as the last window
        reaches (more than ``pad_hi`` in ceil mode, less where the last cells
        belong to no window).
    offsets : tuple of tuple of slice
        For each of the prod(kernel) window offsets, one slice per axis of the
        padded input; each picks an array of the output shape.
    count : numpy.ndarray
        Real (non-padding) cells of each window, shaped for broadcasting
        against the output (1 on unpooled axes), float64.
    """

    geom: object
    pads: tuple
    offsets: tuple
    count: np.ndarray


def plan(shape, kernel=2, stride=None, padding=0, dilation=1, ceil_mode=False, axes=None):
    """The :class:`Plan` of a pooling of an input of ``shape``.

    The geometry comes from :func:`softpool_nd.make_geometry`. For
    a traced shape (torch SymInts) only the pooled axes' lengths enter it, so
    that unpooled axes (a batch) stay free in the traced graph.

    Examples
    --------
    >>> p = plan((2, 5), 2, padding=((0, 1),), axes=1, ceil_mode=True)
    >>> p.geom.out_shape, p.pads
    ((2, 3), ((0, 0), (0, 1)))
    >>> p.offsets[1]
    (slice(None, None, None), slice(1, 6, 2))
    >>> p.count.ravel().tolist()
    [2.0, 2.0, 1.0]
    """
    shape = tuple(shape)
    ndim = len(shape)
    if not all(type(n) is int for n in shape):
        # a traced shape: unpooled lengths do not change the geometry, and leaving them out of
        # make_geometry (which takes int() of every length) keeps a traced batch size symbolic
        pooled = normalize_args(ndim, kernel, stride, padding, dilation, ceil_mode, axes, shape).axes
        shape = tuple(int(n) if a in pooled else 1 for a, n in enumerate(shape))
    geom = make_geometry(shape, kernel, stride, padding, dilation, ceil_mode, axes)
    pads = [(0, 0)] * ndim
    per_axis = [[slice(None)] for _ in range(ndim)]
    count = np.ones([1] * ndim)
    for i, a in enumerate(geom.axes):
        n, o = geom.in_shape[a], geom.out_shape[a]
        k, s, d, lo = geom.kernel[i], geom.stride[i], geom.dilation[i], geom.pad_lo[i]
        reach = (o - 1) * s + (k - 1) * d + 1  # padded cells the windows span
        pads[a] = (lo, max(reach - lo - n, 0))
        per_axis[a] = [slice(j * d, j * d + (o - 1) * s + 1, s) for j in range(k)]
        starts = np.arange(o) * s - lo
        cells = starts[:, None] + np.arange(k) * d
        shape_a = [1] * ndim
        shape_a[a] = o
        count = count * ((cells >= 0) & (cells < n)).sum(axis=1).reshape(shape_a)
    return Plan(geom, tuple(pads), tuple(itertools.product(*per_axis)), count)
