"""The SoftPool decomposition in torch operations (see :mod:`softpool_nd.composite`).

What ``softpool_nd.torch.soft_pool(..., impl="composite")`` runs and what
``torch.onnx.export`` writes: pad, strided slices, maximum, exp and sums,
differentiable by autograd (also forward mode and double backward).
"""

import torch
import torch.nn.functional as F

__all__ = ["pool"]


def _pad(x, pads, value):
    # a symbolic pad (padding='same' on an exported length) is not tested for 0: that would be a guard
    if all(type(p) is int and p == 0 for lo_hi in pads for p in lo_hi):
        return x
    flat = [p for lo_hi in reversed(pads) for p in lo_hi]  # F.pad lists the last axis first
    return F.pad(x, flat, value=value)


def _at(x, index, out_shape):
    """``x[index]`` for a tuple of slices, one per leading axis, each of ``out_shape``'s length on that axis.

    Where that length is symbolic (torch.export), the axis is gathered at
    ``arange(length) * step + start`` instead of sliced: a strided slice's end
    must be proven in bounds, which torch's symbolic shapes cannot do for the
    floor divisions of a pooling's geometry (export would fail or specialise
    the length), while every gathered piece has exactly the output's length.
    """
    if all(sl.stop is None or isinstance(sl.stop, int) for sl in index):
        return x[index]
    for a, sl in enumerate(index):
        if sl.stop is None:
            continue
        if isinstance(sl.stop, int):
            x = x[(slice(None),) * a + (sl,)]
        else:
            x = x.index_select(a, torch.arange(out_shape[a], device=x.device) * sl.step + sl.start)
    return x


def _count(plan, dtype, device):
    """Real cells of each window, broadcastable against the output: per pooled axis, window sums of padded ones.

    Computed with tensor operations, so that it follows a symbolic length (an exported graph computes it).
    """
    count = 1.0
    ndim = len(plan.geom.in_shape)
    for a in plan.geom.axes:
        shape = [1] * ndim
        shape[a] = plan.geom.in_shape[a]
        pads = [(0, 0)] * ndim
        pads[a] = plan.pads[a]
        ones = _pad(torch.ones(shape, dtype=dtype, device=device), pads, 0.0)
        lead = (slice(None),) * a
        cells = [_at(ones, lead + (sl,), plan.geom.out_shape) for sl in plan.slices[a]]
        count = count * sum(cells[1:], cells[0])
    return count


def pool(x, plan, beta, gradient="exact"):
    """SoftPool of a floating tensor ``x`` over ``plan`` (a :class:`softpool_nd.composite.Plan`).

    ``beta`` is a checked Python float; ``gradient`` is ``'exact'`` or
    ``'weights'``. Returns ``y`` in ``x``'s dtype, computed in float32
    (float64 for float64 ``x``).

    Examples
    --------
    >>> import torch
    >>> from softpool_nd.composite import plan
    >>> pool(torch.tensor([0.0, 1.0, 4.0, 4.0]), plan((4,), 2), 1.0)
    tensor([0.7311, 4.0000])
    """
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    xa = x.to(acc)
    if beta == 0.0:
        xp = _pad(xa, plan.pads, 0.0)
        offsets = plan.offsets
        total = _at(xp, offsets[0], plan.geom.out_shape)
        for off in offsets[1:]:
            total = total + _at(xp, off, plan.geom.out_shape)
        return (total / _count(plan, acc, x.device)).to(x.dtype)
    if beta < 0:
        # the soft minimum is minus the soft maximum of -x: negation is exact
        return -pool(-x, plan, -beta, gradient)
    xp = _pad(xa, plan.pads, float("-inf"))
    cells = [_at(xp, off, plan.geom.out_shape) for off in plan.offsets]
    m = cells[0]
    for v in cells[1:]:
        m = torch.maximum(m, v)
    # y is the same for any m (dy/dm = 0), so autograd may treat it as a constant
    m = m.detach()
    m_fin = torch.isfinite(m)
    m0 = torch.where(m_fin, m, 0.0)
    beta_m0, half_m0 = beta * m0, 0.5 * m0
    s = t = t_half = 0.0
    parts = []  # what gradient='weights' needs
    for v in cells:
        d = v - m
        # d <= 0 or NaN (padding is -inf, m the maximum): finite exactly where above -inf
        fin = d > -torch.inf
        d0 = torch.where(fin, d, 0.0)
        # x_off - m overflowed for finite x_off and m (v > -inf: v = +inf would make m infinite)
        over = (d == -torch.inf) & (v > -torch.inf) & m_fin
        # then the weight is exp(beta*x_off - beta*m); a cell equal to an infinite maximum weighs 1;
        # otherwise d is -inf (weight 0) or NaN
        z = torch.where(fin, beta * d0, torch.where(over, beta * v - beta_m0, torch.where(v == m, 0.0, d)))
        e = torch.exp(z)
        s = s + e
        t = t + e * d0
        # an overflowed difference may not fit even times e: its moment is accumulated halved
        t_half = t_half + e * torch.where(over, 0.5 * v - half_m0, 0.0)
        if gradient == "weights":
            parts.append((e, v))
    # m + t/s, exactly when nothing overflowed (halving is exact), and finite wherever y is
    y = 2 * (0.5 * m + (0.5 * t + t_half) / s)
    if gradient == "weights":
        # value exactly 0, derivative sum(w * dx): the weights held constant
        y = y.detach()
        for e, v in parts:
            v0 = torch.where(torch.isfinite(v), v, 0.0)
            y = y + (e / s).detach() * (v0 - v0.detach())
    return y.to(x.dtype)
