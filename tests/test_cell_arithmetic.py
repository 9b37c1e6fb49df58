"""The per-cell arithmetic of the CPU forward: the exponential's accuracy and the paths that must agree.

The forward sweep takes a row of windows without the masks of NUMERICS rule 3
(``_forward``'s finite-cells row) when every cell is finite, beta != 0 and
2*beta is finite, and the general step otherwise. Both must give the bits of the per-window path (``_window``),
whatever the lane of a step an infinite or NaN cell sits in.
"""

import numpy as np
import pytest
from numba import njit

import softpool_nd
from softpool_nd.cpu._compile import _OPTIONS
from softpool_nd.cpu._scalar import exp_le0

inf, nan = np.inf, np.nan


def _bits_equal(a, b):
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a.view(np.uint8), b.view(np.uint8))


def _same(a, b):
    """Bit for bit, except that a NaN may be any NaN (negation flips a NaN's sign bit)."""
    nan_a, nan_b = np.isnan(a), np.isnan(b)
    return np.array_equal(nan_a, nan_b) and _bits_equal(np.where(nan_a, 0, a), np.where(nan_b, 0, b))


@njit(**_OPTIONS)
def _exp_all(d, out):
    for i in range(d.size):
        out[i] = exp_le0(d[i])


def test_exp_le0_float32_is_within_one_ulp_of_exp():
    """Max and mean ulp error of exp_le0 over a dense sample of [-104, 0], subnormal results included:
    a cheaper polynomial or reduction must not make them worse (1.0095 and 0.2646 when written)."""
    rng = np.random.default_rng(0)
    d = np.concatenate(
        [
            np.linspace(-104.0, 0.0, 2_000_001),
            -np.abs(rng.normal(size=500_000) * 2),  # results near 1, where most weights are
            -87.3 - np.abs(rng.normal(size=300_000) * 8),  # subnormal results
        ]
    ).astype(np.float32)
    d = d[d >= -104]
    out = np.empty_like(d)
    _exp_all(d, out)
    exact = np.exp(d.astype(np.float64))
    ulp = 2.0 ** (np.maximum(np.floor(np.log2(exact)), -126) - 23)
    err = np.abs(out.astype(np.float64) - exact) / ulp
    assert err.max() <= 1.01, (err.max(), d[err.argmax()])
    assert err.mean() <= 0.266, err.mean()
    # the ends: exactly 1 at 0 (the maximiser's weight), 0 below the subnormals, NaN stays NaN
    _exp_all(np.array([0.0, -0.0, -104.0, -1e30, -inf, nan], np.float32), out[:6])
    assert out[0] == 1 and out[1] == 1 and out[2] == 0 and out[3] == 0 and out[4] == 0 and np.isnan(out[5])


def _windows_in_order(x, k, channels_last=False):
    """x (N, C, H, W) -> (N, C, H//k, W//k, k*k): each k x k window's cells in the kernels' order,
    the axis of the larger stride first (H, then W; W, then H for channels-last)."""
    n, c, h, w = x.shape
    v = x[:, :, : h // k * k, : w // k * k].reshape(n, c, h // k, k, w // k, k)
    inner = (5, 3) if channels_last else (3, 5)
    return np.ascontiguousarray(v.transpose(0, 1, 2, 4, *inner)).reshape(n, c, h // k, w // k, k * k)


# (N, C, H, W), channels-last: classes (1,1,4) (rows of C channels) and (2,2,2) (rows of W // 2 windows)
SHAPES = [((2, 40, 4, 6), True), ((2, 3, 6, 44), False)]
BETAS = [1.0, -1.0, 3.5, -0.25, 1e-30, -1e-30, 1e30, 2.5e38]


def _data(shape, channels_last, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape).astype(dtype)
    if channels_last:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    return x


def _with_specials(x, seed):
    """x with one inf, -inf or NaN in each row of the sweeps, in every lane position in turn."""
    rng = np.random.default_rng(seed)
    x = x.copy(order="K")  # keeps channels-last
    n, c, h, w = x.shape
    lane = 0
    for a in range(n):
        for b in range(c):
            for i in range(h):
                # channels-last rows are (a, i, j) over the channels; NCHW rows are (a, b, i) over j
                j = lane % w
                x[a, (b + lane) % c, i, j] = rng.choice([inf, -inf, nan])
                lane += 1
    return x


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape,channels_last", SHAPES)
def test_every_window_has_the_bits_of_the_per_window_path(shape, channels_last, dtype):
    """Sweep (finite-cells row or general step) == ``_window`` of the same cells, bit for bit,
    with infinities and NaN in every lane position, for both signs of beta and a beta whose
    double overflows (general step only)."""
    for seed, special in ((0, False), (1, True)):
        x = _data(shape, channels_last, dtype, seed)
        if special:
            x = _with_specials(x, seed)
        cells = _windows_in_order(x, 2, channels_last)
        for beta in BETAS:
            if dtype == np.float16 and abs(beta) > 1e30:
                beta = np.sign(beta) * 1e30
            y, lse = softpool_nd.forward(x, 2, beta=beta)
            # one window per row of `cells`: the general kernel's ``_window``, cells in the same order
            y1, lse1 = softpool_nd.forward(cells, 4, axes=-1, beta=beta)
            assert _bits_equal(y, y1[..., 0]), (beta, special)
            assert _bits_equal(lse, lse1[..., 0]), (beta, special)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape,channels_last", SHAPES)
def test_specials_change_only_their_window(shape, channels_last, dtype):
    """A row with an inf or NaN cell runs the general step: its other windows keep the bits they have
    in a row of finite cells (the finite-cells row), and the special windows follow rule 3."""
    x = _data(shape, channels_last, dtype, 2)
    xs = _with_specials(x, 3)
    touched = ~np.all(np.isfinite(_windows_in_order(xs, 2)), axis=-1)
    assert touched.any() and not touched.all()
    for beta in (1.0, -1.0, 3.5, -0.25):
        y, lse = softpool_nd.forward(x, 2, beta=beta)
        ys, lses = softpool_nd.forward(xs, 2, beta=beta)
        assert _bits_equal(ys[~touched], y[~touched]) and _bits_equal(lses[~touched], lse[~touched]), beta
        win = _windows_in_order(xs, 2)[touched]
        want = np.where(
            np.isnan(win).any(-1),
            nan,
            np.where(np.any(win == np.sign(beta) * inf, -1), np.sign(beta) * inf, 0.0),
        )
        got = ys[touched]
        # NaN in -> NaN out; the dominating infinity is the result; a lone opposite infinity gets
        # weight 0 (the window pools its finite cells, or is -inf * sign if it has none)
        assert np.array_equal(np.isnan(got), np.isnan(want))
        dom = np.isinf(want)
        assert np.array_equal(got[dom], want[dom])
        rest = ~np.isnan(want) & ~dom
        fin = np.where(np.isfinite(win[rest]), win[rest], nan)
        z = beta * fin
        e = np.exp(z - np.nanmax(z, -1, keepdims=True))
        ref = np.nansum(e * fin, -1) / np.nansum(e, -1)
        # cells are standard-normal: an absolute bound for the windows whose y cancels to near 0
        tol = 4e-7 if dtype == np.float32 else 1e-15
        np.testing.assert_allclose(got[rest], ref, rtol=4 * tol, atol=4 * tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape,channels_last", SHAPES + [((1, 2, 5, 34), False)])
def test_negative_beta_is_the_mirror_of_positive(shape, channels_last, dtype):
    """pool(x, beta) == -pool(-x, -beta) and the same lse, bit for bit, in both paths of the sweep
    (negation is exact in every step: a path specialised to one sign of beta must keep this)."""
    for seed, special in ((4, False), (5, True)):
        x = _data(shape, channels_last, dtype, seed)
        if special:
            x = _with_specials(x, seed)
        for beta in (1.0, 0.5, 7.0, 1e-30):
            y, lse = softpool_nd.forward(x, 2, beta=-beta)
            ym, lsem = softpool_nd.forward(-x, 2, beta=beta)
            assert _same(y, -ym) and _same(lse, lsem), (beta, special)
