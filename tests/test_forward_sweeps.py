"""The forward sweeps (the configuration classes' vectorised steps) give the per-window path's bits.

Every row length from 1 to 2 * LANES + 3 windows: whole steps and a last
step padded with spare windows, or left to the per-window path where there
are no spare cells (the array's last rows). Also non-finite cells and the
three kinds of beta (the rules of NUMERICS.md take branches).
"""

import numpy as np
import pytest
from test_cpu_kernels import _general_forward, _table

import softpool_nd
from softpool_nd.cpu import kernels
from softpool_nd.cpu._walk import LANES


def _assert_same_bits(got, want, msg):
    """Bit for bit, NaN aside: a NaN's sign may differ (the per-window path and the
    sweeps differed in it before this test, as on main at 9baa221)."""
    nan = np.isnan(want)
    np.testing.assert_array_equal(np.isnan(got), nan, err_msg=msg)
    np.testing.assert_array_equal(
        np.where(nan, 0, got).view(np.uint8), np.where(nan, 0, want).view(np.uint8), err_msg=msg
    )


# (outer shape, arguments, forward class): the row's windows are the last axis
SWEEPS = [
    ((2, 3), dict(kernel=2), (2, 2, 1)),
    ((2, 3, 2), dict(kernel=2), (2, 2, 2)),
    ((1, 2, 2, 2), dict(kernel=2), (2, 2, 4)),
    ((2, 3, 3), dict(kernel=3, stride=2), (3, 2, 3)),
    ((2, 2, 2), dict(kernel=2, axes=(1, 2)), (1, 1, 4)),
    # channels-last k3 over two axes (a row of 3x3 cells), 1-d k2 and k3, 3-d k2
    ((3, 3), dict(kernel=3, stride=2, axes=(0, 1)), (1, 1, 9)),
    ((2, 2), dict(kernel=2, axes=(1,)), (1, 1, 2)),
    ((2, 3), dict(kernel=3, stride=2, axes=(1,)), (1, 1, 3)),
    ((2, 2, 2), dict(kernel=2, axes=(0, 1, 2)), (1, 1, 8)),
]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("outer, kw, cls", SWEEPS)
def test_forward_sweeps_give_the_per_window_bits_for_every_row_length(outer, kw, cls, dtype):
    rng = np.random.default_rng(5)
    # n windows along the last axis (channels-last: n channels, at least 2, as
    # a single channel is no longer that class's layout)
    channels_last = cls[0] == 1
    for n in range(2 if channels_last else 1, 2 * LANES + 4):
        cells = n if channels_last else kw["kernel"] + (n - 1) * kw.get("stride", kw["kernel"])
        x = rng.normal(size=outer + (cells,))
        flat = x.reshape(-1)
        if n % 3 == 0:
            idx = rng.choice(flat.size, size=(3, max(1, flat.size // 30)), replace=False)
            flat[idx[0]], flat[idx[1]], flat[idx[2]] = np.nan, np.inf, -np.inf
        x = x.astype(dtype)
        out_shape = softpool_nd.output_shape(x.shape, **kw)
        assert kernels.forward_kernel(_table(x, kw, out_shape)[1]) is kernels._FORWARD_KERNELS[cls]
        for beta in (1.0, -2.0, 0.0):
            y, lse = softpool_nd.forward(x, beta=beta, **kw)
            y_g, lse_g = _general_forward(x, kw, beta, threads=1)
            msg = f"{n} windows, beta {beta}"
            _assert_same_bits(y, y_g, msg)
            _assert_same_bits(lse, lse_g, msg)
            _assert_same_bits(softpool_nd.pool(x, beta=beta, **kw), y, msg)
