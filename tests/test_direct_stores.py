"""The tiled backward of NCHW-like k2s2 pooling: whole steps store grad_x directly, under LLVM alias scopes.

The NCHW tiled backward's steps (k = 2 over the last axis, 2 outer cells)
store their gradients straight into grad_x, and tell LLVM that these stores
never touch what the step reads, nor each other's rows
(``cpu._walk.scoped_load``). That holds only where grad_x shares no memory
with x, grad_y, y and lse: a caller's ``out=`` that overlaps any of them is
not written by the kernel (it gets a new array, then ``out`` a copy). Here:
the direct stores give the results of the general kernel and of the float64
oracle, for every split among tasks, rows with or without a padded last step,
a clipped last window (ceil_mode), cells in no window, 3-D (whose steps keep
the scratch), and ``out=`` given, apart from or overlapping the inputs.
"""

import numpy as np
import pytest

import softpool_nd

from reference import reference_backward
from tiled_calls import tiled_backward


def _bits(a):
    return np.ascontiguousarray(a).view(np.uint8)


# (shape, pooling keywords, tiled class): rows of 1 to 70 windows, so with and without
# whole steps (16 windows) and a padded last one; odd last axes (a cell in no window);
# ceil_mode (a clipped last window); rows at the end of the arrays; 3-D
CASES = [
    ((2, 3, 4, 2), {}, (2, 2)),
    ((2, 3, 6, 33), {}, (2, 2)),
    ((1, 2, 8, 64), {}, (2, 2)),
    ((3, 2, 4, 141), {}, (2, 2)),
    ((2, 2, 6, 35), {"ceil_mode": True}, (2, 2)),
    ((5, 10, 96), {"axes": (1, 2)}, (2, 2)),
    ((1, 2, 4, 6, 37), {}, (2, 4)),
]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("beta, exact", [(1.0, True), (-3.0, True), (0.0, True), (1.0, False), (1e30, True)])
def test_direct_stores_match_the_general_kernel_and_the_oracle(dtype, beta, exact):
    rng = np.random.default_rng(5)
    eps = np.finfo(dtype).eps
    for shape, kw, key in CASES:
        kw = {"kernel": 2, **kw}
        x = rng.normal(size=shape).astype(dtype)
        y, lse = softpool_nd.forward(x, beta=beta, **kw)
        gy = rng.normal(size=y.shape).astype(dtype)
        results = [tiled_backward(x, gy, y, lse, beta, exact, tasks, key, **kw) for tasks in (1, 2, 3, 7)]
        for g in results[1:]:
            np.testing.assert_array_equal(_bits(g), _bits(results[0]), err_msg=f"{shape} {kw}")
        assert not np.isnan(results[0]).any()
        general = tiled_backward(x, gy, y, lse, beta, exact, 4, key, general=True, **kw).astype(np.float64)
        np.testing.assert_allclose(results[0].astype(np.float64), general, rtol=8 * eps, atol=8 * eps)
        if abs(beta) < 1e3:
            gradient = "exact" if exact else "weights"
            ref = reference_backward(gy.astype(np.float64), x.astype(np.float64), beta, gradient, **kw)
            tol = 3e-2 if dtype == np.float16 else 2e-4
            np.testing.assert_allclose(results[0].astype(np.float64), ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_out_apart_from_the_inputs_is_written_in_place(dtype):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(2, 3, 8, 70)).astype(dtype)
    y, lse = softpool_nd.forward(x)
    gy = rng.normal(size=y.shape).astype(dtype)
    expected = softpool_nd.backward(gy, x, y=y, lse=lse)
    out = np.full_like(x, np.nan)
    assert softpool_nd.backward(gy, x, y=y, lse=lse, out=out) is out
    np.testing.assert_array_equal(_bits(out), _bits(expected))


@pytest.mark.parametrize("shared", ["grad_y", "y", "lse"])
def test_out_overlapping_an_input_gives_the_result_of_separate_memory(shared):
    # out= may share memory with grad_y, y or lse (not only x): the result is that of
    # copies of the inputs, as numpy's ufuncs give, not of inputs the kernel overwrote
    # while it read them (and LLVM is told the kernel's stores and loads never overlap)
    rng = np.random.default_rng(7)
    shape = (2, 4, 16, 96)
    x = rng.normal(size=shape).astype(np.float32)
    y, lse = softpool_nd.forward(x)
    gy = rng.normal(size=y.shape).astype(np.float32)
    expected = softpool_nd.backward(gy, x, y=y.copy(), lse=lse.copy())
    # one buffer: out in front, the shared input from a quarter of the way into out on
    memory = np.empty(x.size + y.size, np.float32)
    out = memory[: x.size].reshape(shape)
    start = x.size // 4
    view = memory[start : start + y.size].reshape(y.shape)
    inputs = {"grad_y": gy, "y": y, "lse": lse}
    view[...] = inputs[shared]
    inputs[shared] = view
    got = softpool_nd.backward(inputs["grad_y"], x, y=inputs["y"], lse=inputs["lse"], out=out)
    assert got is out
    np.testing.assert_array_equal(_bits(out), _bits(expected))


def test_jvp_out_overlapping_dx_gives_the_result_of_separate_memory():
    # jvp's out= goes through the same rule as backward's: the kernel never writes what it reads
    rng = np.random.default_rng(8)
    x = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    y, lse = softpool_nd.forward(x)
    dx = rng.normal(size=x.shape).astype(np.float32)
    expected = softpool_nd.jvp(x, dx.copy(), y=y, lse=lse)
    memory = np.empty(dx.size, np.float32)
    memory[...] = dx.ravel()
    shared_dx = memory.reshape(x.shape)
    out = memory[-y.size :].reshape(y.shape)  # dx's last quarter: windows read it after the first are written
    got = softpool_nd.jvp(x, shared_dx, y=y, lse=lse, out=out)
    assert got is out
    np.testing.assert_array_equal(_bits(out), _bits(expected))


def test_forward_outs_sharing_memory_are_refused():
    # y and lse cannot both be left in memory they share: an error, not a silently overwritten result
    x = np.random.default_rng(9).normal(size=(2, 3, 8, 8)).astype(np.float32)
    memory = np.empty(2 * 3 * 4 * 4 + 8, np.float32)
    y_out = memory[:96].reshape(2, 3, 4, 4)
    lse_out = memory[8:104].reshape(2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"out\[0\] and out\[1\] share memory \(input shape \(2, 3, 8, 8\)\)"):
        softpool_nd.forward(x, out=(y_out, lse_out))
    # interleaved views of one buffer share none: accepted, and written as separate arrays would be
    both = np.empty((2, 3, 4, 4, 2), np.float32)
    y, lse = softpool_nd.forward(x, out=(both[..., 0], both[..., 1]))
    ref_y, ref_lse = softpool_nd.forward(x)
    np.testing.assert_array_equal(y, ref_y)
    np.testing.assert_array_equal(lse, ref_lse)
