"""The CPU backend's specialised paths: polynomial exp, configuration-class kernels, work blocks."""

import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

import softpool_nd
from softpool_nd._geometry import make_geometry
from softpool_nd._loops import element_strides, empty_like_layout, loop_table
from softpool_nd.cpu import backend, kernels
from softpool_nd.cpu._scalar import exp_le0

from configs import tolerance
from reference import reference_backward, reference_forward

inf, nan = np.inf, np.nan


@njit
def _exp_all(a):
    out = np.empty_like(a)
    for i in range(a.size):
        out[i] = exp_le0(a[i])
    return out


@pytest.mark.parametrize("dtype, lo", [(np.float32, -110.0), (np.float64, -750.0)])
def test_polynomial_exp_is_within_one_ulp_over_its_whole_range(dtype, lo):
    rng = np.random.default_rng(0)
    a = np.concatenate(
        [
            np.linspace(lo, 0.0, 200_001),
            -np.logspace(-40, np.log10(-lo), 50_001),
            rng.uniform(lo, 0.0, 50_000),
        ]
    ).astype(dtype)
    got = _exp_all(a).astype(np.longdouble)
    exact = np.exp(a.astype(np.longdouble))
    # one ulp of the result; below the normal range the ulp is the smallest subnormal
    ulp = np.maximum(np.spacing(exact.astype(dtype)).astype(np.longdouble), np.finfo(dtype).smallest_subnormal)
    err = np.abs(got - exact) / ulp
    assert err.max() <= 1.0, (a[np.argmax(err)], err.max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_polynomial_exp_special_values(dtype):
    tiny = np.finfo(dtype).smallest_subnormal
    a = np.array([0.0, -0.0, -inf, nan, np.finfo(dtype).min, -1e-30, np.log(tiny), 2 * np.log(tiny)], dtype)
    got = _exp_all(a)
    assert got[0] == 1.0 and got[1] == 1.0 and got[2] == 0.0 and np.isnan(got[3]) and got[4] == 0.0
    assert got[5] == 1.0
    assert got[6] == tiny  # the smallest subnormal, not flushed to 0
    assert got[7] == 0.0  # underflow


# (shape, pooling kwargs, forward class, backward class): each configuration class
# with a kernel of its own, on rows long enough for the sweeps and with padding
# so that clipped windows and rows with fewer cells take the general code.
# Backward classes of three numbers are cell-major (``_BACKWARD_KERNELS``), of
# two tilings (``_TILED_KERNELS``).
CLASSES = [
    ((2, 3, 70), dict(kernel=2), (2, 2, 1), (2, 2, 1)),
    ((2, 3, 8, 70), dict(kernel=2), (2, 2, 2), (2, 2)),
    ((2, 3, 8, 71), dict(kernel=2), (2, 2, 2), (2, 2)),  # a last cell in no window
    ((2, 3, 8, 71), dict(kernel=2, ceil_mode=True), (2, 2, 2), (2, 2)),  # a clipped last window
    ((1, 2, 4, 6, 71), dict(kernel=2), (2, 2, 4), (2, 4)),
    ((2, 8, 10, 40), dict(kernel=2, axes=(1, 2)), (1, 1, 4), (1, 4)),
    ((2, 3, 9, 70), dict(kernel=2), (2, 2, 2), (2, 2, 1)),  # a row in no window: not a tiling
    ((2, 3, 9, 70), dict(kernel=2, padding=1), (2, 2, 2), (2, 2, 1)),
    ((1, 2, 5, 6, 70), dict(kernel=2), (2, 2, 4), (2, 2, 1)),
    ((2, 3, 11, 70), dict(kernel=3, stride=2, padding=1), (3, 2, 3), (3, 2, 2)),
    ((2, 3, 71), dict(kernel=3, stride=2), None, (3, 2, 1)),
    ((2, 7, 9, 40), dict(kernel=2, axes=(1, 2)), (1, 1, 4), (1, 1, 1)),
    # channels-last k3s2: padding clips the first window along both outer axes
    # (rows of 6 and 4 cells: the per-window path); backward rows in 4, 2 and 1 windows
    ((2, 13, 12, 40), dict(kernel=3, stride=2, padding=1, axes=(1, 2)), (1, 1, 9), (1, 1, 4)),
    ((2, 12, 13, 37), dict(kernel=3, stride=2, padding=1, axes=(1, 2)), (1, 1, 9), (1, 1, 4)),
    ((2, 11, 12, 40), dict(kernel=3, stride=2, axes=(1, 2)), (1, 1, 9), (1, 1, 4)),
    # channels-last k3s1 p1 (same-size pooling): backward rows in 9, 6 (borders) and 4 (corners) windows
    ((2, 9, 8, 40), dict(kernel=3, stride=1, padding=1, axes=(1, 2)), (1, 1, 9), (1, 1, 9)),
    # 1-d and 3-d channels-last: (N, L, C) and (N, D, H, W, C)
    ((2, 51, 40), dict(kernel=3, stride=2, padding=1, axes=(1,)), (1, 1, 3), (1, 1, 2)),
    ((2, 50, 37), dict(kernel=2, axes=(1,)), (1, 1, 2), (1, 1, 1)),
    ((1, 5, 9, 8, 40), dict(kernel=2, padding=1, axes=(1, 2, 3)), (1, 1, 8), (1, 1, 1)),
]


def _table(x, kw, out_shape):
    geom = make_geometry(x.shape, **kw)
    ys = backend.layout_strides(out_shape, x.strides)
    return geom, loop_table(geom, element_strides(x), ys)


@pytest.mark.parametrize("shape, kw, fwd_class, bwd_class", CLASSES)
def test_each_configuration_class_gets_its_kernel(shape, kw, fwd_class, bwd_class):
    x = np.zeros(shape, np.float32)
    geom, tab = _table(x, kw, softpool_nd.output_shape(shape, **kw))
    expect_fwd = kernels._FORWARD_KERNELS[fwd_class] if fwd_class else kernels.forward
    assert kernels.forward_kernel(tab) is expect_fwd
    expect_bwd = (kernels._BACKWARD_KERNELS if len(bwd_class) == 3 else kernels._TILED_KERNELS)[bwd_class]
    assert kernels.backward_kernel(tab) is expect_bwd


def test_other_layouts_take_the_general_kernels():
    x = np.zeros((2, 3, 9, 140), np.float32)[..., ::2]  # inner stride 2
    geom, tab = _table(x, dict(kernel=2), softpool_nd.output_shape(x.shape, 2))
    assert kernels.forward_kernel(tab) is kernels.forward
    assert kernels.backward_kernel(tab) is kernels.backward


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("shape, kw, fwd_class, bwd_class", CLASSES)
def test_class_kernels_match_the_oracle(shape, kw, fwd_class, bwd_class, dtype):
    rng = np.random.default_rng(len(shape) * 100 + shape[-1])
    x = rng.normal(size=shape).astype(dtype)
    rtol = tolerance(dtype)[0]
    for beta in (1.0, 0.0, -2.0):
        y, lse = softpool_nd.forward(x, beta=beta, **kw)
        y_ref, lse_ref = reference_forward(x.astype(np.float64), beta=beta, **kw)
        np.testing.assert_allclose(y.astype(np.float64), y_ref, rtol=rtol, atol=rtol)
        np.testing.assert_allclose(lse.astype(np.float64), lse_ref, rtol=rtol, atol=10 * rtol)
        np.testing.assert_array_equal(softpool_nd.pool(x, beta=beta, **kw), y)
        gy = rng.normal(size=y.shape).astype(dtype)
        for gradient in ("exact", "weights"):
            g = softpool_nd.backward(gy, x, y=y, lse=lse, beta=beta, gradient=gradient, **kw)
            g_ref = reference_backward(gy.astype(np.float64), x.astype(np.float64), beta=beta, gradient=gradient, **kw)
            np.testing.assert_allclose(g.astype(np.float64), g_ref, rtol=4 * rtol, atol=8 * rtol)


def _general_forward(x, kw, beta=1.0, threads=4):
    """y and lse from the general forward kernel, whose every window takes the per-window path."""
    acc = np.dtype(np.float64 if x.dtype == np.float64 else np.float32)
    out_shape = softpool_nd.output_shape(x.shape, **kw)
    _, tab = _table(x, kw, out_shape)
    y = empty_like_layout(out_shape, x.strides, x.dtype)
    lse = empty_like_layout(out_shape, x.strides, acc)
    xflat, x0 = backend._flat(x)
    kernels.forward(
        xflat, x0, tab, acc.type(beta), backend._flat(y, True)[0], backend._flat(lse, True)[0], True, threads
    )
    return y, lse


def _run_general(x, kw, beta=1.0):
    """forward and backward through the general kernels, for comparison with the class kernels."""
    acc = np.dtype(np.float64 if x.dtype == np.float64 else np.float32)
    out_shape = softpool_nd.output_shape(x.shape, **kw)
    geom, _ = _table(x, kw, out_shape)
    y, lse = _general_forward(x, kw, beta)
    xflat, x0 = backend._flat(x)
    gy = np.ones(out_shape, x.dtype)
    gx = empty_like_layout(x.shape, x.strides, x.dtype)
    tab_b = loop_table(geom, element_strides(x), element_strides(y), element_strides(gx))
    kernels.backward(
        xflat,
        x0,
        tab_b,
        acc.type(beta),
        backend._flat(gy)[0],
        backend._flat(y)[0],
        backend._flat(lse)[0],
        True,
        backend._flat(gx, True)[0],
        4,
    )
    return y, lse, gx


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("shape, kw, fwd_class, bwd_class", CLASSES)
def test_class_kernels_follow_the_nonfinite_rules_of_the_general_kernel(shape, kw, fwd_class, bwd_class, dtype):
    rng = np.random.default_rng(7)
    x = rng.normal(size=shape)
    big = np.finfo(dtype).max / 2
    flat = x.reshape(-1)
    idx = rng.choice(flat.size, size=(6, max(1, flat.size // 40)), replace=False)
    flat[idx[0]], flat[idx[1]], flat[idx[2]] = nan, inf, -inf
    flat[idx[3]], flat[idx[4]] = big, -big
    x = x.astype(dtype)
    for beta in (1.0, 0.0):
        y, lse = softpool_nd.forward(x, beta=beta, **kw)
        g = softpool_nd.backward(np.ones(y.shape, dtype), x, y=y, lse=lse, beta=beta, **kw)
        y_g, lse_g, g_g = _run_general(x, kw, beta)
        for got, want in ((y, y_g), (lse, lse_g), (g, g_g)):
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
            np.testing.assert_array_equal(np.isposinf(got), np.isposinf(want))
            np.testing.assert_array_equal(np.isneginf(got), np.isneginf(want))
            fin = np.isfinite(want)
            tol = 8 * np.finfo(dtype).eps
            np.testing.assert_allclose(got[fin].astype(np.float64), want[fin].astype(np.float64), rtol=tol, atol=tol)


def test_long_rows_are_split_into_blocks_with_the_same_result():
    # one row of 3 * BLOCK + 5 windows: several work units, each a thread's share
    n = 2 * (3 * kernels.BLOCK + 5)
    x = np.random.default_rng(3).normal(size=n).astype(np.float32)
    y, lse = softpool_nd.forward(x, 2)
    y_ref, lse_ref = reference_forward(x.astype(np.float64), kernel=2)
    np.testing.assert_allclose(y, y_ref, rtol=2e-5, atol=2e-5)
    np.testing.assert_allclose(lse, lse_ref, rtol=2e-5, atol=2e-4)
    g = softpool_nd.backward(np.ones_like(y), x, 2, y=y, lse=lse)
    np.testing.assert_allclose(
        g, reference_backward(np.ones(y.shape), x.astype(np.float64), kernel=2), rtol=1e-4, atol=2e-4
    )


@pytest.mark.parametrize(
    "shape, kw",
    [
        ((3, 5, 4 * kernels.BLOCK + 6), dict(kernel=2)),  # rows of several work units
        ((1, 3, 4, 2 * kernels.BLOCK + 9), dict(kernel=2)),  # the same, tiled, a last cell in no window
        ((2, 3, 4, 6, 14), dict(kernel=2)),  # 3-d, tiled
        # overlapping, dilated and padded outer windows: the forward moves its cell
        # offsets from row to row by a shift only between unclipped windows
        ((2, 3, 11, 40), dict(kernel=2, stride=(1, 2), dilation=(2, 1), padding=(1, 0))),
        ((2, 3, 7, 9, 12), dict(kernel=2, padding=1)),  # 3-d, clipped outer windows
        ((2, 5, 11, 13), dict(kernel=3, stride=2)),
    ],
)
def test_any_split_into_tasks_gives_the_same_bits(shape, kw):
    # every task starts its run of rows at an arbitrary work unit: the row index
    # it counts from there must be the one the unit's number gives
    x = np.random.default_rng(12).normal(size=shape).astype(np.float32)
    geom = make_geometry(x.shape, **kw)
    xs = element_strides(x)
    ys, tab, fwd = backend._forward_plan(geom, xs)
    _, btab, bwd = backend._backward_plan(geom, xs, xs)
    gy = np.random.default_rng(13).normal(size=geom.out_shape).astype(np.float32)
    xflat = backend._flat(x)[0]  # read-only, as the backend passes it: no new compilation
    results = []
    for tasks in (1, 2, 3, 7, 64, 1000):
        y = np.full(geom.out_shape, np.nan, np.float32)
        lse = np.full(geom.out_shape, np.nan, np.float32)
        fwd(xflat, 0, tab, np.float32(1.0), y.reshape(-1), lse.reshape(-1), True, tasks)
        gx = np.full(x.shape, np.nan, np.float32)
        bwd(
            xflat,
            0,
            btab,
            np.float32(1.0),
            backend._flat(gy)[0],
            backend._flat(y)[0],
            backend._flat(lse)[0],
            True,
            gx.reshape(-1),
            tasks,
        )
        results.append((y, lse, gx))
    y_ref, lse_ref = reference_forward(x.astype(np.float64), **kw)
    np.testing.assert_allclose(results[0][0], y_ref, rtol=2e-5, atol=2e-5)
    for y, lse, gx in results[1:]:
        for got, want in zip((y, lse, gx), results[0]):
            np.testing.assert_array_equal(got, want)


def _forward_call(dtype=np.float32):
    """(kernel, x flat, loop table, y, lse) of a small k2s2 forward, for calling a kernel directly."""
    x = np.random.default_rng(3).normal(size=(1, 2, 8, 8)).astype(dtype)
    geom = make_geometry(x.shape, 2)
    _, tab, kernel = backend._forward_plan(geom, element_strides(x))
    n = int(np.prod(geom.out_shape))
    return kernel, backend._flat(x)[0], tab, np.empty(n, x.dtype), np.empty(n, np.float32)


def test_kernels_refuse_buffers_of_another_type_or_layout():
    # only addresses and sizes reach the tasks, which read each buffer as the
    # type they expect: a float64 y (or a strided one) for a float32 x must be
    # refused when the driver is compiled, not filled with float32 bits
    kernel, xf, tab, y, lse = _forward_call()
    beta = np.float32(1.0)
    with pytest.raises(TypingError, match="C-contiguous array of float32, not array.float64"):
        kernel(xf, 0, tab, beta, y.astype(np.float64), lse, True, 4)
    with pytest.raises(TypingError, match="C-contiguous array of float32, not array.float32, 1d, A"):
        kernel(xf, 0, tab, beta, np.empty(2 * y.size, np.float32)[::2], lse, True, 4)
    with pytest.raises(TypingError, match="C-contiguous array of float32, not array.float64"):
        kernel(xf, 0, tab, beta, y, lse.astype(np.float64), True, 4)
    kernel(xf, 0, tab, beta, y, lse, True, 4)  # the same call with the right buffers runs


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")  # the exception numba prints
def test_a_failing_task_raises_instead_of_returning_unwritten_outputs():
    # a task is a C callback: numba prints an exception raised in it and
    # returns; the driver must see that the task did not finish
    kernel, xf, tab, y, lse = _forward_call()
    short = np.ascontiguousarray(tab[:, :-1])  # its size is no whole number of rows: reshape raises
    with pytest.raises(RuntimeError, match="kernel task failed"):
        kernel(xf, 0, short, np.float32(1.0), y, lse, True, 4)


def test_pool_asks_the_backend_for_no_lse():
    x = np.random.default_rng(4).normal(size=(2, 3, 8, 8)).astype(np.float32)
    geom = make_geometry(x.shape, 2)
    y, lse = backend.forward(x, geom, 1.0, np.dtype(np.float32), with_lse=False)
    assert lse is None
    np.testing.assert_array_equal(y, softpool_nd.forward(x, 2)[0])


@pytest.mark.parametrize(
    "outer, kw",
    [
        ((2, 3), dict(kernel=2)),
        ((2, 3), dict(kernel=2, padding=1)),
        ((2, 3), dict(kernel=3, stride=2)),
        ((2, 3, 2), dict(kernel=2)),  # tiled
        ((1, 2, 2, 2), dict(kernel=2)),  # tiled, 3-d
        ((2, 2, 2), dict(kernel=2, axes=(1, 2))),  # tiled, channels-last: rows of n channels
    ],
)
def test_backward_sweeps_match_the_general_kernel_for_every_row_length(outer, kw):
    # rows of 1 to 76 windows: whole BACK_LANES steps, padded LANES steps and an
    # unpadded rest (the last row of an array has no spare cells to pad with)
    rng = np.random.default_rng(11)
    for n in range(3, 154):
        x = rng.normal(size=outer + (n,)).astype(np.float32)
        y, lse = softpool_nd.forward(x, **kw)
        g = softpool_nd.backward(np.ones(y.shape, np.float32), x, y=y, lse=lse, **kw)
        _, _, g_general = _run_general(x, kw)
        tol = 8 * np.finfo(np.float32).eps
        np.testing.assert_allclose(g, g_general, rtol=tol, atol=tol, err_msg=f"row length {n}")
        g_ref = reference_backward(np.ones(y.shape), x.astype(np.float64), **kw)
        np.testing.assert_allclose(g, g_ref, rtol=1e-4, atol=2e-4, err_msg=f"row length {n}")


def test_tiled_backward_only_where_grad_x_shares_the_layout_of_x():
    # the tiled sweeps address x and grad_x with the same offsets: an input
    # cut out of a wider array (row stride 80, grad_x's 70) takes the cell-major kernel
    x = np.random.default_rng(14).normal(size=(2, 3, 8, 80)).astype(np.float32)[..., :70]
    geom = make_geometry(x.shape, 2)
    gs = backend.layout_strides(x.shape, x.strides)
    assert (
        kernels.backward_kernel(backend._backward_plan(geom, element_strides(x), gs)[1])
        is (kernels._BACKWARD_KERNELS[(2, 2, 1)])
    )
    assert kernels.backward_kernel(backend._backward_plan(geom, gs, gs)[1]) is kernels._TILED_KERNELS[(2, 2)]
    y, lse = softpool_nd.forward(x, 2)
    gy = np.random.default_rng(15).normal(size=y.shape).astype(np.float32)
    g = softpool_nd.backward(gy, x, 2, y=y, lse=lse)
    g_contig = softpool_nd.backward(gy, np.ascontiguousarray(x), 2, y=y, lse=lse)
    np.testing.assert_array_equal(g, g_contig)


def test_small_calls_run_on_the_calling_thread(monkeypatch):
    # issue #14: below SERIAL_BELOW input elements the serial driver runs the
    # work without entering numba's parallel region; above, the parallel one
    x = np.random.default_rng(5).normal(size=(2, 3, 8, 8)).astype(np.float32)
    assert x.size < backend.SERIAL_BELOW
    geom = make_geometry(x.shape, 2)
    xs = element_strides(x)
    fwd, bwd = backend._forward_plan(geom, xs)[2], backend._backward_plan(geom, xs, xs)[2]
    y, lse = softpool_nd.forward(x, 2)
    g = softpool_nd.backward(np.ones_like(y), x, 2, y=y, lse=lse)

    def refuse(*args):
        raise AssertionError("the parallel driver ran")

    for kernel in (fwd, bwd):
        monkeypatch.setattr(kernel, "_driver", refuse)
    y_s, lse_s = softpool_nd.forward(x, 2)
    g_s = softpool_nd.backward(np.ones_like(y), x, 2, y=y, lse=lse)
    for got, want in ((y_s, y), (lse_s, lse), (g_s, g)):
        np.testing.assert_array_equal(got, want)
    monkeypatch.setattr(backend, "SERIAL_BELOW", x.size)
    with pytest.raises(AssertionError, match="parallel driver ran"):
        softpool_nd.pool(x, 2)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize(
    "shape, kw",
    [
        ((2, 13, 12, 40), dict(kernel=3, stride=2, padding=1, axes=(1, 2))),
        ((2, 12, 13, 37), dict(kernel=3, stride=2, padding=1, axes=(1, 2))),
        ((2, 11, 12, 40), dict(kernel=3, stride=2, axes=(1, 2))),
        ((2, 9, 8, 40), dict(kernel=3, stride=1, padding=1, axes=(1, 2))),
    ],
)
def test_channels_last_k3_classes_give_the_bits_of_the_general_kernel(shape, kw, dtype):
    # the strongest check of the (1, 1, 9) forward and (1, 1, 4) / (1, 1, 9) backward classes: every y, lse
    # and grad_x the bits of the general kernel's, also with inf/NaN/huge cells and overflowing
    # betas (a NaN as a NaN: the sign of a NaN made of inf - inf is not kept, as in every class)
    rng = np.random.default_rng(11)
    x = rng.normal(size=shape)
    flat = x.reshape(-1)
    idx = rng.choice(flat.size, size=(5, flat.size // 50), replace=False)
    flat[idx[0]], flat[idx[1]], flat[idx[2]] = nan, inf, -inf
    flat[idx[3]], flat[idx[4]] = np.finfo(dtype).max / 2, -np.finfo(dtype).max / 2
    x = x.astype(dtype)
    big = float(np.finfo(np.float64 if dtype == np.float64 else np.float32).max) / 2
    for beta in (1.0, 0.0, -2.5, 1e-30, big, -big):
        y, lse = softpool_nd.forward(x, beta=beta, **kw)
        g = softpool_nd.backward(np.ones(y.shape, dtype), x, y=y, lse=lse, beta=beta, **kw)
        for got, want in zip((y, lse, g), _run_general(x, kw, beta)):
            nan_at = np.isnan(want)
            np.testing.assert_array_equal(np.isnan(got), nan_at)
            bits = np.dtype(f"u{got.dtype.itemsize}")
            np.testing.assert_array_equal(got.view(bits)[~nan_at], want.view(bits)[~nan_at])
