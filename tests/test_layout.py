"""Memory layouts, out=, empty arrays, determinism and 64-bit indexing."""

import subprocess
import sys

import numpy as np
import pytest

import softpool_nd

from reference import reference_backward, reference_forward

KW = dict(kernel=3, stride=2, padding=1)


def _views(base):
    yield "strided", base[:, :, ::2, 1::3]
    yield "negative", base[::-1, :, ::-2, ::-1]
    yield "fortran", np.asfortranarray(base)
    yield "transposed", base.transpose(0, 1, 3, 2)
    yield "broadcast", np.broadcast_to(base[:1, :1], base.shape)
    ro = base.copy()
    ro.flags.writeable = False
    yield "readonly", ro


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_every_layout_matches_the_contiguous_result(dtype):
    rng = np.random.default_rng(0)
    base = rng.normal(size=(3, 4, 11, 12)).astype(dtype)
    for name, v in _views(base):
        before = v.copy()
        y, lse = softpool_nd.forward(v, **KW)
        c = np.ascontiguousarray(v)
        y_c, lse_c = softpool_nd.forward(c, **KW)
        # a layout may change the order in which a window's cells are summed: a few ulps
        ulps = 8 * np.finfo(dtype).eps
        np.testing.assert_allclose(y, y_c, rtol=ulps, atol=ulps, err_msg=name)
        np.testing.assert_allclose(lse, lse_c, rtol=ulps, atol=ulps, err_msg=name)
        gy = rng.normal(size=y.shape).astype(dtype)
        g, g_c = softpool_nd.backward(gy, v, **KW), softpool_nd.backward(gy, c, **KW)
        np.testing.assert_allclose(g, g_c, rtol=ulps, atol=ulps, err_msg=name)
        np.testing.assert_array_equal(v, before, err_msg=name)  # the input is never written


def test_channels_last_with_axes():
    rng = np.random.default_rng(1)
    nchw = rng.normal(size=(2, 5, 8, 6))
    nhwc = np.ascontiguousarray(nchw.transpose(0, 2, 3, 1))
    y = softpool_nd.pool(nhwc, 2, axes=(1, 2))
    np.testing.assert_allclose(y, softpool_nd.pool(nchw, 2).transpose(0, 2, 3, 1), rtol=1e-14)
    assert y.flags.c_contiguous  # an NHWC input gives an NHWC output
    gy = rng.normal(size=y.shape)
    g = softpool_nd.backward(gy, nhwc, 2, axes=(1, 2))
    np.testing.assert_allclose(g, reference_backward(gy, nhwc, kernel=2, axes=(1, 2)), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("layout", ["c", "strided"])
def test_out_is_filled_and_returned(layout):
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2, 3, 8, 8)).astype(np.float32)
    out = (
        np.full((2, 3, 4, 4), np.nan, np.float32)
        if layout == "c"
        else np.full((2, 3, 4, 8), np.nan, np.float32)[..., ::2]
    )
    res = softpool_nd.pool(x, 2, out=out)
    assert res is out
    np.testing.assert_array_equal(out, softpool_nd.pool(x, 2))


def test_same_layout_is_the_one_test_both_backends_use():
    from softpool_nd._loops import in_layout, layout_strides, same_layout

    a = np.zeros((4, 1, 6))
    assert same_layout(a, (6, 6, 1)) and same_layout(a, (6, 99, 1))  # a size-1 axis never moves
    assert not same_layout(a, (1, 6, 4))
    assert not same_layout(a[:, :, ::2], (6, 6, 1))
    f = np.asfortranarray(np.arange(12.0).reshape(3, 4))
    assert in_layout(f, (1, 3), f.strides) is f
    c = in_layout(f, layout_strides(f.shape, (8, 1)), (8, 1))
    assert c.flags.c_contiguous and not np.shares_memory(c, f)
    np.testing.assert_array_equal(c, f)
    # an out= whose size-1 axis has any stride is written in place, on the CPU as in the GPU backend
    x = np.random.default_rng(3).normal(size=(2, 1, 8)).astype(np.float32)
    out = np.full((2, 5, 4), np.nan, np.float32)[:, 2:3]
    assert softpool_nd.pool(x, 2, axes=2, out=out) is out
    np.testing.assert_array_equal(out, softpool_nd.pool(x, 2, axes=2))


def test_zero_size_unpooled_axis_gives_empty_result():
    x = np.zeros((0, 3, 8, 8), np.float32)
    y, lse = softpool_nd.forward(x, 2)
    assert y.shape == (0, 3, 4, 4) and y.dtype == np.float32 and lse.shape == (0, 3, 4, 4)
    g = softpool_nd.backward(np.zeros(y.shape, np.float32), x, 2)
    assert g.shape == x.shape and g.dtype == np.float32


def test_results_are_bit_identical_across_runs_and_thread_counts():
    code = """
import numba, numpy as np, softpool_nd, sys
x = np.random.default_rng(0).normal(size=(4, 8, 33, 35)).astype(np.float32)
res = []
for n in (1, 2, 1, 2):
    numba.set_num_threads(n)
    y, lse = softpool_nd.forward(x, 3, stride=2, padding=1)
    g = softpool_nd.backward(np.ones_like(y), x, 3, stride=2, padding=1, y=y, lse=lse)
    res.append(y.tobytes() + lse.tobytes() + g.tobytes())
print(len(set(res)))
"""
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"NUMBA_NUM_THREADS": "2", "PATH": ""},
        check=True,
    )
    assert out.stdout.strip() == "1", out.stderr


def test_indexing_is_64_bit():
    # 2**31 + 8 float16 cells: 4 GiB of virtual memory, of which only a few pages are touched
    n = 2**31 + 8
    x = np.zeros(n, np.float16)
    x[2**31], x[2**31 + 1] = 5.0, 3.0
    y = softpool_nd.pool(x, 2, stride=2**30)
    assert y.shape == (3,)
    np.testing.assert_allclose(
        y.astype(np.float64), [0.0, 0.0, reference_forward(np.array([5.0, 3.0]), kernel=2)[0][0]], rtol=1e-3
    )
    view = x[:: 2**29]  # the last cell sits 2**31 elements past the first
    g = softpool_nd.backward(np.ones(2, np.float16), view, 2)
    np.testing.assert_allclose(
        g.astype(np.float64), reference_backward(np.ones(2), view.astype(np.float64), kernel=2), rtol=1e-3, atol=1e-3
    )
    rows = np.lib.stride_tricks.as_strided(x, shape=(3, 8), strides=(2**30 * 2, 2))  # row 2 starts at 2**31
    rows_y = softpool_nd.pool(rows, 2, axes=1)
    np.testing.assert_allclose(rows_y[2].astype(np.float64), [y[2], 0, 0, 0], rtol=1e-3)
    assert np.all(rows_y[:2] == 0)
    del x, view, rows
