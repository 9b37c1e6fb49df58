"""Arrays and arguments at the edge (issue 13): byte order, out= overlapping x, geometry near the int64
limit, arrays that look plain (masked, negated views, tensors that require grad, foreign x with a numpy
out=), pyramid levels, the reference module signature, and y/lse that do not come from forward."""

import os
import subprocess
import sys

import numpy as np
import pytest

import softpool_nd

from reference import reference_backward, reference_forward

#: The folder softpool_nd was imported from, for subprocesses to import the same one.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(softpool_nd.__file__)))


def _in_subprocess(code, timeout=60):
    """Run ``code`` in a fresh interpreter: a hang fails the test instead of stalling the suite."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"did not finish within {timeout} s: {code}")
    assert out.returncode == 0, out.stderr
    return out.stdout


# ----------------------------------------------------------------------------------------------- byte order

NON_NATIVE = ">" if np.little_endian else "<"


def _swapped(a):
    """The values of ``a`` in non-native byte order (as FITS, HDF5 and netCDF files give them)."""
    return a.astype(a.dtype.newbyteorder(NON_NATIVE))


@pytest.mark.parametrize("dtype", ["f2", "f4", "f8", "i4"])
def test_non_native_byte_order_input_pools_like_native(dtype):
    x = np.random.default_rng(0).normal(size=(3, 8, 9)).astype(dtype) * 3
    kw = dict(kernel=(3, 2), stride=(2, 2), padding=1)
    xs = _swapped(x)
    assert xs.dtype.byteorder == NON_NATIVE or xs.dtype.itemsize == 1
    y, lse = softpool_nd.forward(xs, **kw)
    y0, lse0 = softpool_nd.forward(x, **kw)
    assert y.dtype == y0.dtype and y.dtype.isnative and lse.dtype == lse0.dtype
    np.testing.assert_array_equal(y, y0)
    np.testing.assert_array_equal(lse, lse0)
    np.testing.assert_array_equal(softpool_nd.pool(xs, **kw), y0)
    g0 = softpool_nd.backward(np.ones_like(y0), x, y=y0, lse=lse0, **kw)
    # every output-shaped argument in non-native order too
    g = softpool_nd.backward(_swapped(np.ones_like(y0)), xs, y=_swapped(y0), lse=_swapped(lse0), **kw)
    assert g.dtype == g0.dtype and g.dtype.isnative
    np.testing.assert_array_equal(g, g0)


def test_non_native_byte_order_issue_example():
    x = np.arange(16, dtype=">f8").reshape(4, 4)
    np.testing.assert_allclose(softpool_nd.pool(x, 2), reference_forward(x.astype(np.float64), kernel=2)[0])


@pytest.mark.parametrize("overlap", [False, True])
def test_non_native_out_is_filled_and_returned(overlap):
    x = np.random.default_rng(1).normal(size=(2, 10)).astype(np.float32)
    want = softpool_nd.pool(x, 2, axes=1)
    out = _swapped(np.full(want.shape, np.nan, np.float32))
    if overlap:  # out viewing x's own (non-native) memory
        x = _swapped(x)
        out = x[:, :5]
    res = softpool_nd.pool(x, 2, axes=1, out=out)
    assert res is out
    np.testing.assert_array_equal(out, want)


def test_non_native_byte_order_through_pyramid_and_dask():
    da = pytest.importorskip("dask.array")
    x = np.random.default_rng(2).normal(size=(16, 16))
    xs = _swapped(x)
    for got, want in zip(softpool_nd.pyramid(xs, 2), softpool_nd.pyramid(x, 2)):
        np.testing.assert_array_equal(got, want)
    d = da.from_array(xs, chunks=(8, 8))
    y, lse = softpool_nd.forward(d, 2)
    y0, lse0 = softpool_nd.forward(x, 2)
    np.testing.assert_allclose(y.compute(), y0)
    np.testing.assert_allclose(lse.compute(), lse0)
    g = softpool_nd.backward(da.from_array(_swapped(np.ones((8, 8))), chunks=4), d, 2).compute()
    np.testing.assert_allclose(g, softpool_nd.backward(np.ones((8, 8)), x, 2))


def test_non_native_calls_leave_no_growing_error_state():
    # each failing compile used to append to numba's cached exception (300 KB after 2,000 calls)
    x = np.arange(16, dtype=">f4").reshape(4, 4)
    first = softpool_nd.pool(x, 2)
    for _ in range(50):
        np.testing.assert_array_equal(softpool_nd.pool(x, 2), first)


# --------------------------------------------------------------------------------- out= overlapping x


def _overlap_cases():
    rng = np.random.default_rng(3)
    one = rng.normal(size=100)
    yield "in-place smoothing", one, dict(kernel=3, stride=1, padding="same"), lambda x: x
    yield "out=x[1:]", rng.normal(size=11), dict(kernel=2, stride=1), lambda x: x[1:]
    yield "out=x[:-1]", rng.normal(size=11), dict(kernel=2, stride=1), lambda x: x[:-1]
    two = rng.normal(size=(9, 9))
    yield "2-D same", two, dict(kernel=3, stride=1, padding="same"), lambda x: x
    yield "2-D reversed", two, dict(kernel=3, stride=1, padding="same"), lambda x: x[::-1, ::-1]
    four = rng.normal(size=(2, 3, 6, 6)).astype(np.float32)
    yield "4-D same", four, dict(kernel=3, stride=1, padding=1), lambda x: x
    yield (
        "4-D transposed",
        four,
        dict(kernel=3, stride=1, padding=1),
        lambda x: x.transpose(1, 0, 3, 2).transpose(1, 0, 3, 2),
    )


def _buffer_tail_case():
    # out= the tail of x's buffer: x is the head of one allocation, out starts inside it
    buf = np.random.default_rng(4).normal(size=20)
    x = buf[:16]
    return x, dict(kernel=2, stride=2), buf[12:20]


@pytest.mark.parametrize("case", list(_overlap_cases()), ids=lambda c: c[0])
def test_out_overlapping_x_is_as_if_x_were_copied(case):
    _, x, kw, view = case
    x = x.copy()
    want = softpool_nd.pool(x.copy(), **kw)
    out = view(x)
    assert np.shares_memory(out, x)
    res = softpool_nd.pool(x, out=out, **kw)
    assert res is out
    np.testing.assert_array_equal(out, want)


def test_out_is_the_tail_of_x_buffer():
    x, kw, out = _buffer_tail_case()
    want = softpool_nd.pool(x.copy(), **kw)
    assert softpool_nd.pool(x, out=out, **kw) is out
    np.testing.assert_array_equal(out, want)


def test_out_overlapping_a_torch_input():
    torch = pytest.importorskip("torch")
    x = torch.linspace(-2, 2, 50, dtype=torch.float64)
    want = softpool_nd.pool(x.clone(), 3, stride=1, padding="same")
    assert softpool_nd.pool(x, 3, stride=1, padding="same", out=x) is x
    torch.testing.assert_close(x, want, rtol=0, atol=0)


# ----------------------------------------------------------------------------- geometry beyond int64

M = 2**63 - 1

#: (pooling arguments, what the ValueError says); the first one was a segmentation fault
BEYOND_INT64 = {
    "sum": (dict(kernel=3, stride=2, padding=M, dilation=M), r"length + padding + dilation*(kernel-1) + stride = "),
    "sum-stride1": (dict(kernel=3, stride=1, padding=M, dilation=M), r"padding=9223372036854775807"),
    "sum-2**61": (dict(kernel=3, stride=1, padding=2**61, dilation=2**61), r"= 9223372036854775814 exceeds 2**63 - 1"),
    "stride": (dict(kernel=1, stride=2**63), r"stride=9223372036854775808 exceeds 2**63 - 1"),
    "kernel": (dict(kernel=2**63), r"kernel=9223372036854775808 exceeds"),
    "dilation": (dict(kernel=2, dilation=10**30), r"dilation=1000000000000000000000000000000 exceeds"),
    "padding-pair": (dict(kernel=2, padding=((0, 2**64),)), r"padding=((0, 18446744073709551616),) exceeds"),
    "unprintable": (dict(kernel=(10**5000,)), r"kernel=(~2**16609,) exceeds"),
}


@pytest.mark.parametrize("name", BEYOND_INT64)
def test_geometry_beyond_int64_is_a_value_error_naming_it(name):
    kw, match = BEYOND_INT64[name]
    with pytest.raises(ValueError) as e:
        softpool_nd.output_shape((5,), **kw)
    assert match in str(e.value)


def test_pool_beyond_int64_raises_instead_of_crashing():
    # in a subprocess: a regression here was a segmentation fault, which would end the test run
    code = f"""
import numpy as np, softpool_nd
for kw, _ in {list(BEYOND_INT64.values())[:6]!r}:
    for call in (lambda: softpool_nd.pool(np.arange(1.0, 6.0), **kw),
                 lambda: softpool_nd.backward(np.ones(2), np.arange(1.0, 6.0), **kw)):
        try:
            call()
        except ValueError as e:
            print(str(e)[-100:])
"""
    lines = _in_subprocess(code).splitlines()
    assert len(lines) == 12 and all("exceeds 2**63 - 1" in line for line in lines), lines


@pytest.mark.parametrize("big", [2**40, 2**61, 2**62 - 10])
def test_geometry_near_int64_gives_exact_results(big):
    x = np.arange(1.0, 6.0)
    # each window: one cell `big` before (padding) and one real cell: y == x, grad == 1
    for pad in (((big, 0),), ((0, big),)):
        kw = dict(kernel=2, stride=1, padding=pad, dilation=big)
        np.testing.assert_array_equal(softpool_nd.pool(x, **kw), x)
        np.testing.assert_array_equal(softpool_nd.backward(np.ones(5), x, **kw), np.ones(5))
    # strides beyond the input: the first window only
    for kw in (dict(kernel=1, stride=2**62), dict(kernel=2, stride=2**62, dilation=2), dict(kernel=3, stride=M - 8)):
        np.testing.assert_allclose(softpool_nd.pool(x, **kw), reference_forward(x, **kw)[0], rtol=1e-15)


def test_huge_padding_checks_windows_without_a_hang():
    # 2**40 windows start in the left padding, all holding a real cell: checked in O(length), not O(padding)
    code = "import softpool_nd; print(softpool_nd.output_shape((5,), kernel=2**40 + 1, stride=1, padding=2**40))"
    assert _in_subprocess(code).strip() == str((2**40 + 5,))
    with pytest.raises(ValueError, match="window 5 along axis 0 holds only padding"):
        softpool_nd.output_shape((5,), kernel=2, stride=1, padding=2**40, dilation=2**40)


def test_dilation_beyond_the_input_checks_every_residue():
    # windows starting in the padding reach the input at start % dilation: every residue counts. Stride 2,
    # dilation 4, length 3: the windows in the left padding reach cells 2, 0, 2: all valid
    kw = dict(kernel=3, stride=2, padding=6, dilation=4)
    assert softpool_nd.output_shape((3,), **kw) == (4,)
    x = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(softpool_nd.pool(x, **kw), reference_forward(x, **kw)[0])
    # stride 1: window 1 reaches cell 3 = the length: only padding
    with pytest.raises(ValueError, match="window 1 along axis 0 holds only padding"):
        softpool_nd.output_shape((3,), kernel=3, stride=1, padding=6, dilation=4)


@pytest.mark.parametrize("beta", [10**400, -(10**400)], ids=["1e400", "-1e400"])
def test_beta_beyond_float_range_is_a_value_error(beta):
    with pytest.raises(ValueError, match=r"beta=-?1000000000"):
        softpool_nd.pool(np.arange(4.0), 2, beta=beta)


def test_torch_adapter_validates_geometry_like_the_core_api():
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("softpool_nd.torch")
    x = torch.ones(1, 1, 8, 8)
    with pytest.raises(ValueError, match="dilation=1000000000000000000000000000000 exceeds 2\\*\\*63 - 1"):
        st.soft_pool(x, 2, dilation=10**30)
    with pytest.raises(ValueError, match="padding=9223372036854775808 exceeds"):
        st.SoftPool2d(2, padding=2**63)(x)


# --------------------------------------------------------------------------------- arrays that look plain


def test_masked_array_is_refused():
    x = np.ma.masked_array([1.0, 100.0, 2.0, 3.0], mask=[0, 1, 0, 0])
    with pytest.raises(TypeError, match=r"x is a numpy masked array \(shape \(4,\)\).*filled"):
        softpool_nd.pool(x, 2)
    with pytest.raises(TypeError, match="grad_y is a numpy masked array"):
        softpool_nd.backward(np.ma.masked_array(np.ones(2)), np.arange(4.0), 2)
    with pytest.raises(TypeError, match="out is a numpy masked array"):
        softpool_nd.pool(np.arange(4.0), 2, out=np.ma.masked_array(np.ones(2)))
    np.testing.assert_allclose(
        softpool_nd.pool(x.filled(-np.inf), 2), [1.0, reference_forward(np.array([2.0, 3.0]))[0][0]]
    )


def test_torch_negative_and_conjugate_views_through_the_core_api():
    torch = pytest.importorskip("torch")
    a = torch.arange(6, dtype=torch.float64)
    neg = torch.complex(a, a).conj().imag  # -a, stored as a with the negative bit
    assert neg.is_neg()
    np.testing.assert_allclose(softpool_nd.pool(neg, 2).numpy(), softpool_nd.pool(-a.numpy(), 2))
    y, lse = softpool_nd.forward(neg, 2)
    g = softpool_nd.backward(torch.ones(3, dtype=torch.float64), neg, 2, y=y, lse=lse)
    np.testing.assert_allclose(g.numpy(), reference_backward(np.ones(3), -a.numpy(), kernel=2))
    # an out= with the negative bit is written through (its storage holds the negated result)
    out = torch.complex(torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)).conj().imag
    assert softpool_nd.pool(a, 2, out=out) is out
    np.testing.assert_allclose(out.resolve_neg().numpy(), softpool_nd.pool(a.numpy(), 2))


def test_torch_tensor_that_requires_grad_points_to_the_torch_adapter():
    torch = pytest.importorskip("torch")
    x = torch.ones(1, 1, 4, 4, requires_grad=True)
    with pytest.raises(TypeError, match="x is a torch.Tensor that requires grad.*softpool_nd.torch"):
        softpool_nd.pool(x, 2)
    with pytest.raises(TypeError, match="grad_y is a torch.Tensor that requires grad"):
        softpool_nd.backward(torch.ones(1, 1, 2, 2, requires_grad=True), x.detach(), 2)


def test_foreign_x_with_numpy_out_returns_out():
    jnp = pytest.importorskip("jax.numpy")
    x = jnp.arange(8.0, dtype=jnp.float32)
    out = np.full(4, np.nan, np.float32)
    assert softpool_nd.pool(x, 2, out=out) is out
    np.testing.assert_allclose(out, softpool_nd.pool(np.arange(8.0, dtype=np.float32), 2))


# --------------------------------------------------------------------------------- pyramid, module signature

#: (levels, kernel, what the ValueError says): these hung, failed formatting the message or looped forever
PYRAMID_LEVELS = [
    ("10**11", 2, "levels=100000000000 must be between 0 and 63"),
    ("10**6", 2, "levels=1000000 must be"),
    ("10**12", 1, "levels=1000000000000 must be"),
    ("10**5000", 2, "levels=~2**16609 must be"),
    ("64", 1, "levels=64 must be"),
    ("40", 2, "levels=40 with kernel=2 needs axis 0 to hold at least 1099511627776"),
]


def test_pyramid_levels_fail_fast():
    code = f"""
import numpy as np, softpool_nd
for levels, kernel, _ in {PYRAMID_LEVELS!r}:
    try:
        softpool_nd.pyramid(np.ones((16, 16)), eval(levels), kernel=kernel)
    except ValueError as e:
        print(e)
"""
    lines = _in_subprocess(code).splitlines()
    assert len(lines) == len(PYRAMID_LEVELS)
    for line, (_, _, match) in zip(lines, PYRAMID_LEVELS):
        assert match in line


def test_pyramid_kernel_one_keeps_a_few_levels():
    x = np.arange(6.0)
    levels = softpool_nd.pyramid(x, 3, kernel=1)
    assert len(levels) == 4 and all(np.array_equal(lv, x) for lv in levels)


def test_reference_signature_refuses_positional_padding():
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("softpool_nd.torch")
    x = torch.ones(1, 1, 8, 8)
    for bad in (1, "yes", None):
        with pytest.raises(TypeError, match="force_inplace=.* must be True or False.*padding as a keyword"):
            st.SoftPool2d(3, 2, bad)
        with pytest.raises(TypeError, match="force_inplace"):
            st.soft_pool2d(x, 3, 2, bad)
    with pytest.raises(TypeError, match="force_inplace"):
        st.SoftPool1d(3, 2, 1)
    with pytest.raises(TypeError, match="force_inplace"):
        st.soft_pool3d(torch.ones(1, 1, 4, 4, 4), 2, 2, 0)
    assert st.SoftPool2d(3, 2, True, padding=1)(x).shape == (1, 1, 4, 4)


# --------------------------------------------------------------------------------- y/lse are trusted


@pytest.mark.parametrize("fill", [np.nan, np.inf, -np.inf, 1e308, -1e308, 0.0])
def test_backward_with_inconsistent_y_lse_stays_in_bounds(fill):
    # y and lse are used as given (documented as trusted): garbage in gives garbage numbers, never an
    # out-of-bounds access; the cells no window covers and the shapes are untouched
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2, 3, 9, 10))
    kw = dict(kernel=3, stride=2, padding=1, dilation=1)
    y, lse = softpool_nd.forward(x, **kw)
    gx = softpool_nd.backward(np.ones_like(y), x, y=np.full_like(y, fill), lse=np.full_like(lse, fill), **kw)
    assert gx.shape == x.shape and gx.dtype == x.dtype
    bad = rng.normal(size=y.shape) * 1e6
    g2 = softpool_nd.backward(np.ones_like(y), x, y=bad, lse=-bad, **kw)
    assert g2.shape == x.shape
    # consistent y/lse give the exact gradient
    np.testing.assert_allclose(
        softpool_nd.backward(np.ones_like(y), x, y=y, lse=lse, **kw),
        reference_backward(np.ones_like(y), x, **kw),
        rtol=1e-10,
        atol=1e-12,
    )
