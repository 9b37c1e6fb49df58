"""A tiled backward kernel called directly, for the tests of its rows and stores (not a test module)."""

import numpy as np

from softpool_nd._geometry import make_geometry
from softpool_nd._loops import element_strides
from softpool_nd.cpu import backend, kernels


def tiled_backward(x, gy, y, lse, beta, exact, tasks, key, general=False, **kw):
    """grad_x from the tiled kernel of class ``key`` (checked to be the one chosen) split into ``tasks``,
    or from the general kernel with ``general``; pooling keywords ``kw``."""
    geom = make_geometry(x.shape, **kw)
    xs = element_strides(x)
    _, tab, bwd = backend._backward_plan(geom, xs, xs)
    assert kernels.backward_kernel(tab) is kernels._TILED_KERNELS[key]
    if general:
        bwd = kernels.backward
    gx = np.full(x.shape, np.nan, x.dtype)
    acc = np.float64 if x.dtype == np.float64 else np.float32
    flat = [backend._flat(a)[0] for a in (x, gy, y, lse)]
    bwd(flat[0], 0, tab, acc(beta), flat[1], flat[2], flat[3], exact, backend._flat(gx, True)[0], tasks)
    return gx
