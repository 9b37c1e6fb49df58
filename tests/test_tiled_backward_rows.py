"""The channels-last tiled backward: rows batched along the last outer axis, steps writing grad_x directly.

The tiled backward of 2-d channels-last pooling (kernel 1 over the channels,
2x2 outer windows) gives the sweep several output rows at once (as many as
its scratch holds, never past the end of the last outer axis or of a task's
work units), and its whole steps store into grad_x without the scratch.
Every split of the work among tasks starts and ends batches elsewhere: the
bits must not change, and must match the general kernel and the oracle.
"""

import numpy as np
import pytest

import softpool_nd

from reference import reference_backward
from tiled_calls import tiled_backward

KW = dict(kernel=2, axes=(1, 2))


def _backward(x, gy, y, lse, beta, exact, tasks, general=False):
    return tiled_backward(x, gy, y, lse, beta, exact, tasks, (1, 4), general, **KW)


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("beta, exact", [(1.0, True), (-3.0, True), (0.0, True), (1.0, False)])
def test_batches_of_rows_give_the_bits_of_any_split(dtype, beta, exact):
    rng = np.random.default_rng(21)
    # channels 2 to 150: one step or several, padded or not, and batches of 129 to 12 rows;
    # 13 output rows along W (a batch ends at the axis' end), 2 along H, 2 images
    for channels in (2, 5, 16, 17, 33, 64, 150):
        x = rng.normal(size=(2, 4, 26, channels)).astype(dtype)
        y, lse = softpool_nd.forward(x, beta=beta, **KW)
        gy = rng.normal(size=y.shape).astype(dtype)
        results = [_backward(x, gy, y, lse, beta, exact, tasks) for tasks in (1, 2, 3, 7, 64)]
        for g in results[1:]:
            np.testing.assert_array_equal(g.view(np.uint8), results[0].view(np.uint8), err_msg=f"{channels} channels")
        general = _backward(x, gy, y, lse, beta, exact, 4, general=True).astype(np.float64)
        eps = np.finfo(dtype).eps
        np.testing.assert_allclose(results[0].astype(np.float64), general, rtol=8 * eps, atol=8 * eps)
        gradient = "exact" if exact else "weights"
        ref = reference_backward(gy.astype(np.float64), x.astype(np.float64), beta, gradient, **KW)
        tol = 3e-2 if dtype == np.float16 else 2e-4
        np.testing.assert_allclose(results[0].astype(np.float64), ref, rtol=tol, atol=tol)
