"""The test oracle: SoftPool written plainly in NumPy float64, window by window.

It shares no code with softpool_nd: it derives axes, padding and output
lengths from the written rules (PyTorch's pooling arithmetic) on its own, and
reduces each window with the textbook formula. Slow, small inputs only.
"""

import itertools
import math

import numpy as np


def _axes(ndim, kernel, axes):
    if axes is None:
        if isinstance(kernel, (tuple, list)):
            return list(range(ndim - len(kernel), ndim))
        return list(range(2, ndim)) if ndim >= 3 else list(range(ndim))
    axes = [axes] if isinstance(axes, int) else list(axes)
    return [a % ndim for a in axes]


def _each(v, n):
    return list(v) if isinstance(v, (tuple, list)) else [v] * n


def windows(shape, kernel=2, stride=None, padding=0, dilation=1, ceil_mode=False, axes=None):
    """Return (pooled axes, output shape, per-axis list of per-output index lists)."""
    axes_l = _axes(len(shape), kernel, axes)
    n = len(axes_l)
    k = _each(kernel, n)
    s = _each(k if stride is None else stride, n)
    d = _each(dilation, n)
    if padding == "valid":
        pads = [(0, 0)] * n
    elif padding == "same":
        pads = []
        for i, a in enumerate(axes_l):
            out = math.ceil(shape[a] / s[i])
            total = max((out - 1) * s[i] + d[i] * (k[i] - 1) + 1 - shape[a], 0)
            pads.append((total // 2, total - total // 2))
    else:
        pads = [p if isinstance(p, (tuple, list)) else (p, p) for p in _each(padding, n)]
    out_shape = list(shape)
    cells = []
    for i, a in enumerate(axes_l):
        L, (lo, hi) = shape[a], pads[i]
        span = d[i] * (k[i] - 1) + 1
        if ceil_mode:
            out = math.ceil((L + lo + hi - span) / s[i]) + 1
            if (out - 1) * s[i] >= L + lo:
                out -= 1
        else:
            out = (L + lo + hi - span) // s[i] + 1
        out_shape[a] = out
        cells.append(
            [[o * s[i] - lo + j * d[i] for j in range(k[i]) if 0 <= o * s[i] - lo + j * d[i] < L] for o in range(out)]
        )
    return axes_l, tuple(out_shape), cells


def _iter(x_shape, kw):
    axes_l, out_shape, cells = windows(x_shape, **kw)
    for o in itertools.product(*(range(out_shape[a]) for a in axes_l)):
        yield axes_l, out_shape, o, np.ix_(*(cells[i][oi] for i, oi in enumerate(o)))


def reference_forward(x, beta=1.0, **kw):
    """(y, lse) in float64 for finite x; kw are the pooling arguments of softpool_nd.pool."""
    x = np.asarray(x, dtype=np.float64)
    axes_l, out_shape, _ = windows(x.shape, **kw)
    xt = np.moveaxis(x, axes_l, range(x.ndim - len(axes_l), x.ndim))
    lead = xt.shape[: x.ndim - len(axes_l)]
    y = np.empty(lead + tuple(out_shape[a] for a in axes_l))
    lse = np.empty_like(y)
    for _, _, o, ix in _iter(x.shape, kw):
        win = xt[(Ellipsis,) + ix].reshape(lead + (-1,))
        z = beta * win
        m = z.max(axis=-1, keepdims=True)
        e = np.exp(z - m)
        y[(Ellipsis,) + o] = (e * win).sum(-1) / e.sum(-1)
        lse[(Ellipsis,) + o] = m[..., 0] + np.log(e.sum(-1))
    back = range(x.ndim - len(axes_l), x.ndim)
    return np.moveaxis(y, back, axes_l), np.moveaxis(lse, back, axes_l)


def reference_backward(grad_y, x, beta=1.0, gradient="exact", **kw):
    """grad_x in float64: sum over windows of grad_y * w * (1 + beta*(x - y)) (or without the bracket)."""
    x = np.asarray(x, dtype=np.float64)
    y, lse = reference_forward(x, beta=beta, **kw)
    axes_l, _, _ = windows(x.shape, **kw)
    front = range(x.ndim - len(axes_l), x.ndim)
    xt = np.moveaxis(x, axes_l, front)
    gt = np.zeros_like(xt)
    yt = np.moveaxis(y, axes_l, front)
    lt = np.moveaxis(lse, axes_l, front)
    gyt = np.moveaxis(np.asarray(grad_y, dtype=np.float64), axes_l, front)
    for _, _, o, ix in _iter(x.shape, kw):
        sel = (Ellipsis,) + ix
        pick = (Ellipsis,) + o + (None,) * len(axes_l)
        w = np.exp(beta * xt[sel] - lt[pick])
        term = gyt[pick] * w
        if gradient == "exact":
            term = term * (1 + beta * (xt[sel] - yt[pick]))
        gt[sel] += term
    return np.moveaxis(gt, front, axes_l)


def reference_jvp(x, dx, beta=1.0, **kw):
    """dy in float64: per window, sum of w * (1 + beta*(x - y)) * dx (the transpose of reference_backward)."""
    x = np.asarray(x, dtype=np.float64)
    y, lse = reference_forward(x, beta=beta, **kw)
    axes_l, _, _ = windows(x.shape, **kw)
    front = range(x.ndim - len(axes_l), x.ndim)
    xt = np.moveaxis(x, axes_l, front)
    dxt = np.moveaxis(np.asarray(dx, dtype=np.float64), axes_l, front)
    yt = np.moveaxis(y, axes_l, front)
    lt = np.moveaxis(lse, axes_l, front)
    dyt = np.empty_like(yt)
    for _, _, o, ix in _iter(x.shape, kw):
        sel = (Ellipsis,) + ix
        pick = (Ellipsis,) + o + (None,) * len(axes_l)
        term = np.exp(beta * xt[sel] - lt[pick]) * (1 + beta * (xt[sel] - yt[pick])) * dxt[sel]
        dyt[(Ellipsis,) + o] = term.reshape(term.shape[: x.ndim - len(axes_l)] + (-1,)).sum(-1)
    return np.moveaxis(dyt, front, axes_l)
