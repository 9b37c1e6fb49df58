"""The forward sweeps' batches: whole short rows swept together along the last outer axis.

Rows of one block whose windows are all unclipped, and whose outputs follow
each other, go to the sweep in batches of up to ``_forward.BATCH`` windows,
never past the end of the last outer axis or of a task's work units; near
the end of x (no spare cells for a padded last step) a row goes alone.
Every split of the work among tasks starts and ends batches elsewhere: the
bits must not change, and must be those of the general kernel (the same
formula in the same cell order) and close to the float64 oracle.
"""

import numpy as np
import pytest

from softpool_nd._geometry import make_geometry
from softpool_nd._loops import element_strides
from softpool_nd.cpu import backend, kernels

from reference import reference_forward


def _forward(x, kw, beta, tasks, with_lse=True, general=False):
    """(y, lse, kernel) of the CPU forward of x run on ``tasks`` tasks; lse is None without ``with_lse``."""
    geom = make_geometry(x.shape, **kw)
    ys, tab, kernel = backend._forward_plan(geom, element_strides(x))
    if general:
        kernel = kernels.forward
    acc = np.float64 if x.dtype == np.float64 else np.float32
    y = np.full(geom.out_shape, np.nan, x.dtype)
    lse = np.full(geom.out_shape, np.nan, acc)
    xflat, x0 = backend._flat(x)
    kernel(xflat, x0, tab, acc(beta), backend._flat(y, True)[0], backend._flat(lse, True)[0], with_lse, tasks)
    return y, (lse if with_lse else None), kernel


def _same_bits(a, b, msg):
    np.testing.assert_array_equal(a.view(np.uint8), b.view(np.uint8), err_msg=msg)


def _check(x, kw, beta, cls):
    """Every split gives the bits of one task, with and without lse, and of the general kernel."""
    y, lse, kernel = _forward(x, kw, beta, 1)
    assert kernel is kernels._FORWARD_KERNELS[cls]
    msg = f"{x.shape} {x.strides} {kw} beta={beta}"
    for tasks in (2, 3, 7, 64):
        y2, lse2, _ = _forward(x, kw, beta, tasks)
        _same_bits(y2, y, f"{msg}, {tasks} tasks")
        _same_bits(lse2, lse, f"{msg}, {tasks} tasks")
    y3 = _forward(x, kw, beta, 3, with_lse=False)[0]
    _same_bits(y3, y, f"{msg}, no lse")
    yg, lseg, _ = _forward(x, kw, beta, 5, general=True)
    _same_bits(yg, y, f"{msg}, general kernel")
    _same_bits(lseg, lse, f"{msg}, general kernel")
    return y, lse


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("beta", [1.0, -3.0, 0.0])
def test_nchw_batches_give_the_bits_of_any_split_and_of_the_general_kernel(dtype, beta):
    rng = np.random.default_rng(14)
    kw = dict(kernel=2)
    # widths: rows of 1 to 40 windows (batches of 256 to 6 rows; padded last
    # steps or not; odd widths leave a cell in no window); heights: batches
    # ending at the plane's end (7 rows) or the scratch's cap (40 rows of 16)
    for h, w in ((14, 2), (14, 31), (80, 32), (14, 33), (6, 34), (14, 80)):
        x = rng.normal(size=(2, 3, h, w)).astype(dtype)
        y, lse = _check(x, kw, beta, (2, 2, 2))
        if dtype != np.float16:
            ry, rl = reference_forward(x.astype(np.float64), beta, **kw)
            tol = 2e-5 if dtype == np.float32 else 1e-12
            np.testing.assert_allclose(y.astype(np.float64), ry, rtol=tol, atol=tol)
            np.testing.assert_allclose(lse.astype(np.float64), rl, rtol=tol, atol=tol)


def test_batches_of_flipped_rows_channels_last_and_3d():
    rng = np.random.default_rng(15)
    x = rng.normal(size=(2, 3, 12, 34)).astype(np.float32)
    # negative strides along the batched axis: the batch's rows run backwards in memory
    _check(x[:, :, ::-1, :], dict(kernel=2), 1.0, (2, 2, 2))
    # channels-last 2-d (kernel 1 over the channels): rows of 5 and 40 channels
    for c in (5, 40):
        xc = rng.normal(size=(2, 14, 10, c)).astype(np.float32)
        _check(xc, dict(kernel=2, axes=(1, 2)), -2.0, (1, 1, 4))
    # 3-d: batches along H of a (D, H, W) volume
    _check(rng.normal(size=(2, 4, 6, 10, 32)).astype(np.float32), dict(kernel=2), 1.0, (2, 2, 4))


def test_batches_keep_the_nonfinite_rules():
    # nan, inf and -inf in batched rows: the general kernel's values (NaN where it has NaN)
    rng = np.random.default_rng(16)
    x = rng.normal(size=(2, 3, 16, 32)) * 30
    flat = x.reshape(-1)
    i = rng.choice(flat.size, size=(3, 40), replace=False)
    flat[i[0]], flat[i[1]], flat[i[2]] = np.nan, np.inf, -np.inf
    x = x.astype(np.float32)
    for beta in (1.0, -2.0, 0.0, 1e30):
        y, lse, _ = _forward(x, dict(kernel=2), beta, 7)
        yg, lseg, _ = _forward(x, dict(kernel=2), beta, 1, general=True)
        np.testing.assert_array_equal(y, yg)
        np.testing.assert_array_equal(lse, lseg)
