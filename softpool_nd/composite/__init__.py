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

Lengths may be symbolic (torch SymInts under ``torch.export`` and the dynamo
ONNX exporter with a ``Dim`` on a pooled axis): the geometry keeps them as
expressions, the plan compares none of them, and the implementations compute
what depends on them (the window counts of beta == 0) as array operations,
so the exported graph follows the input's size. The legacy ONNX exporter
traces with Python ints: there the pooled lengths are those of the example.
"""

import itertools
from typing import NamedTuple

from .._geometry import make_geometry

__all__ = ["Plan", "plan"]


class Plan(NamedTuple):
    """Pooling geometry as a padding and, per axis, the strided slices of the window offsets.

    Lengths are Python ints, or torch SymInts where the input's shape is
    traced symbolically (``torch.export``, dynamo ONNX export): then the
    slices' ends and the padding of 'same' follow the input's size.

    Attributes
    ----------
    geom : softpool_nd._geometry.Geometry
        The geometry.
    pads : tuple of (int, int)
        (before, after) padding of every axis of the input (0, 0 for unpooled
        axes): ``pad_lo`` before, ``pad_hi`` after (plus ``stride - 1`` in
        ceil mode, enough for the last window, which may reach past
        ``pad_hi``). Cells past the last window are padded but never read.
    slices : tuple of tuple of slice
        Per axis of the padded input, one slice per kernel offset along it
        (``(slice(None),)`` for an unpooled axis); each picks the output's
        length.
    """

    geom: object
    pads: tuple
    slices: tuple

    @property
    def offsets(self):
        """For each of the prod(kernel) window offsets, one slice per axis: an array of the output shape."""
        return tuple(itertools.product(*self.slices))


def plan(shape, kernel=2, stride=None, padding=0, dilation=1, ceil_mode=False, axes=None):
    """The :class:`Plan` of a pooling of an input of ``shape``.

    The geometry comes from :func:`softpool_nd.make_geometry`, which keeps
    symbolic lengths (torch SymInts) symbolic.

    Examples
    --------
    >>> p = plan((2, 5), 2, padding=((0, 1),), axes=1, ceil_mode=True)
    >>> p.geom.out_shape, p.pads
    ((2, 3), ((0, 0), (0, 2)))
    >>> p.offsets[1]
    (slice(None, None, None), slice(1, 6, 2))
    """
    geom = make_geometry(tuple(shape), kernel, stride, padding, dilation, ceil_mode, axes)
    pads = [(0, 0)] * len(geom.in_shape)
    slices = [(slice(None),)] * len(geom.in_shape)
    for i, a in enumerate(geom.axes):
        o = geom.out_shape[a]
        k, s, d = geom.kernel[i], geom.stride[i], geom.dilation[i]
        # in ceil mode the last window may start in pad_hi's last cells and reach stride - 1 cells further;
        # a bound that needs no comparison keeps a symbolic length free of guards
        pads[a] = (geom.pad_lo[i], geom.pad_hi[i] + (s - 1 if ceil_mode else 0))
        slices[a] = tuple(slice(j * d, j * d + (o - 1) * s + 1, s) for j in range(k))
    return Plan(geom, tuple(pads), tuple(slices))
