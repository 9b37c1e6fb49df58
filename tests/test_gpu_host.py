"""The GPU backend run on the host: softpool.cu compiled by g++ through host_shim.h.

softpool_nd.gpu.backend.Backend with the HostLauncher is the GPU code path
with CuPy swapped for ctypes: same kernels, same argument packing, same grid
sizes. Results are compared with the CPU backend (same math, so tight
tolerances and identical non-finite positions) and with the float64 oracle.
"""

import re

import numpy as np
import pytest

from softpool_nd import _dtypes, make_geometry
from softpool_nd._loops import NCOLS, loop_table
from softpool_nd.cpu import backend as cpu
from softpool_nd.gpu import launch
from softpool_nd.gpu.backend import Backend
from softpool_nd.gpu.host import HostLauncher

from configs import random_config, random_layout, tolerance
from reference import reference_backward, reference_forward

F16, F32, F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
ACC = {F16: F32, F32: F32, F64: F64}
# against the CPU backend: same math, different exp/log and summation order
RTOL = {dt: tolerance(dt)[0] for dt in (F16, F32, F64)}
# against the float64 oracle, after rounding the input to the dtype
ORACLE_RTOL = {F16: 2e-2, F32: 1e-4, F64: 1e-10}


@pytest.fixture(scope="module")
def gpu():
    return Backend(HostLauncher(), np)


@pytest.fixture(scope="module")
def gpu64():
    return Backend(HostLauncher(block=64, blocks=2, index64=True), np)


def close(a, b, rtol, what):
    b64 = b.astype(np.float64)
    scale = max(float(np.abs(b64[np.isfinite(b64)]).max(initial=0.0)), 1.0)
    np.testing.assert_allclose(
        a.astype(np.float64), b.astype(np.float64), rtol=rtol, atol=rtol * scale, equal_nan=True, err_msg=what
    )


def _cases(n, seed):
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        shape, kw = random_config(rng)
        geom = make_geometry(shape, **kw)
        dtype = [F16, F32, F64][i % 3]
        beta = float(rng.choice([1.0, 0.0, -0.7, 2.5]))
        out.append((shape, kw, geom, dtype, beta, int(rng.integers(2**31))))
    return out


@pytest.mark.parametrize("case", _cases(60, 20261126), ids=lambda c: f"{c[0]}-{c[3]}-b{c[4]}")
def test_gpu_host_matches_cpu_backend_and_oracle(gpu, case):
    shape, kw, geom, dtype, beta, seed = case
    rng = np.random.default_rng(seed)
    x = random_layout(rng, (rng.standard_normal(shape) * 3).astype(dtype))
    acc = ACC[dtype]
    y, lse = gpu.forward(x, geom, beta, acc)
    y_c, lse_c = cpu.forward(x, geom, beta, acc)
    assert y.dtype == dtype and lse.dtype == acc and y.shape == geom.out_shape
    assert y.strides == y_c.strides and lse.strides == lse_c.strides  # same layout rules
    close(y, y_c, RTOL[dtype], "y vs cpu")
    close(lse, lse_c, RTOL[dtype], "lse vs cpu")
    y_r, lse_r = reference_forward(x.astype(np.float64), beta=beta, **kw)
    close(y, y_r, ORACLE_RTOL[dtype], "y vs oracle")
    close(lse, lse_r, ORACLE_RTOL[dtype], "lse vs oracle")

    gy = random_layout(rng, rng.standard_normal(geom.out_shape).astype(dtype))
    for gradient in ("exact", "weights"):
        exact = gradient == "exact"
        gx = gpu.backward(gy, x, y, lse, geom, beta, acc, exact)
        gx_c = cpu.backward(gy, x, y_c, lse_c, geom, beta, acc, exact)
        assert gx.dtype == dtype and gx.shape == shape and gx.strides == gx_c.strides
        close(gx, gx_c, 4 * RTOL[dtype], f"{gradient} grad vs cpu")
        gx_r = reference_backward(gy.astype(np.float64), x.astype(np.float64), beta=beta, gradient=gradient, **kw)
        close(gx, gx_r, 2 * ORACLE_RTOL[dtype], f"{gradient} grad vs oracle")


@pytest.mark.parametrize("case", _cases(12, 7), ids=lambda c: f"{c[0]}-{c[3]}")
def test_gpu_host_64bit_index_and_grid_stride(gpu, gpu64, case):
    """The long long instantiations and another block/grid split give the same bits."""
    shape, kw, geom, dtype, beta, seed = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    y, lse = gpu.forward(x, geom, beta, ACC[dtype])
    y64, lse64 = gpu64.forward(x, geom, beta, ACC[dtype])
    np.testing.assert_array_equal(y, y64)
    np.testing.assert_array_equal(lse, lse64)
    gy = rng.standard_normal(geom.out_shape).astype(dtype)
    np.testing.assert_array_equal(
        gpu.backward(gy, x, y, lse, geom, beta, ACC[dtype], True),
        gpu64.backward(gy, x, y, lse, geom, beta, ACC[dtype], True),
    )


@pytest.mark.parametrize("dtype", [F16, F32, F64])
def test_gpu_host_non_finite_rules_match_cpu(gpu, dtype):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 4, 9, 8)).astype(dtype)
    flat = x.reshape(-1)
    idx = rng.choice(flat.size, 40, replace=False)
    flat[idx[:15]] = np.inf
    flat[idx[15:30]] = -np.inf
    flat[idx[30:]] = np.nan
    x[0, 0, :2, :2] = np.inf  # a window of +inf only
    x[0, 1, :2, :2] = -np.inf  # a window of -inf only
    if dtype != F16:
        x[1, 0, :2, :2] = np.finfo(dtype).max  # overflowing magnitudes stay finite
    for beta in (1.0, -1.0, 0.0):
        geom = make_geometry(x.shape, 3, 2, padding=1)
        y, lse = gpu.forward(x, geom, beta, ACC[dtype])
        y_c, lse_c = cpu.forward(x, geom, beta, ACC[dtype])
        if beta == 0.0:
            # the plain mean sums in the accumulation dtype (NUMERICS.md rule 2): fmax + fmax overflows,
            # as in numpy.mean; test_gpu_host_numerics_examples pins those windows down
            y, y_c = y.copy(), y_c.copy()
            y[1, 0, :2, :2] = y_c[1, 0, :2, :2] = 0
        close(y, y_c, RTOL[dtype], "y")
        close(lse, lse_c, RTOL[dtype], "lse")
        gy = np.ones(geom.out_shape, dtype)
        for exact in (True, False):
            close(
                gpu.backward(gy, x, y, lse, geom, beta, ACC[dtype], exact),
                cpu.backward(gy, x, y_c, lse_c, geom, beta, ACC[dtype], exact),
                4 * RTOL[dtype],
                "grad",
            )
    assert np.isnan(y).any() and np.isinf(y).any()  # the rules above were really exercised


def test_gpu_host_out_argument_any_layout(gpu):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    geom = make_geometry(x.shape, 2)
    expect, _ = cpu.forward(x, geom, 1.0, F32)
    direct = np.empty(geom.out_shape, np.float32)
    y, _ = gpu.forward(x, geom, 1.0, F32, out=direct)
    assert y is direct
    np.testing.assert_allclose(direct, expect, rtol=1e-6)
    strided = np.empty(geom.out_shape, np.float32, order="F")
    y, _ = gpu.forward(x, geom, 1.0, F32, out=strided)
    assert y is strided
    np.testing.assert_allclose(strided, expect, rtol=1e-6)


def test_gpu_host_channels_last_keeps_layout(gpu):
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 6, 6, 5)).astype(np.float32).transpose(0, 3, 1, 2)  # NCHW view of NHWC
    geom = make_geometry(x.shape, 3, 1, padding=1)
    y, lse = gpu.forward(x, geom, 1.0, F32)
    assert y.transpose(0, 2, 3, 1).flags.c_contiguous and lse.transpose(0, 2, 3, 1).flags.c_contiguous
    gx = gpu.backward(np.ones_like(y), x, y, lse, geom, 1.0, F32, True)
    assert gx.transpose(0, 2, 3, 1).flags.c_contiguous
    close(gx, reference_backward(np.ones(y.shape), x.astype(np.float64), kernel=3, stride=1, padding=1), 1e-4, "gx")


def test_gpu_host_bfloat16_matches_oracle(gpu):
    bf16 = _dtypes.bfloat16()
    if bf16 is None:
        pytest.skip("ml_dtypes is not installed, so there is no bfloat16 numpy dtype")
    rng = np.random.default_rng(8)
    x = rng.standard_normal((2, 3, 7, 6)).astype(bf16)
    geom = make_geometry(x.shape, 3, 2, padding=1)
    y, lse = gpu.forward(x, geom, 1.0, F32)
    assert y.dtype == bf16 and lse.dtype == F32
    xr = x.astype(np.float64)
    y_r, lse_r = reference_forward(xr, kernel=3, stride=2, padding=1)
    close(y, y_r, 1e-2, "y")  # bfloat16 keeps 8 significant bits
    close(lse, lse_r, 1e-5, "lse")  # accumulated and stored in float32
    gx = gpu.backward(np.ones(y.shape, bf16), x, y, lse, geom, 1.0, F32, True)
    close(gx, reference_backward(np.ones(y.shape), xr, kernel=3, stride=2, padding=1), 2e-2, "gx")


def test_gpu_host_half_conversion_rounds_like_numpy(gpu):
    """Every float16 value round-trips and float32 halfway cases round to even, as on a GPU."""
    bits = np.arange(2**16, dtype=np.uint16)
    h = bits.view(np.float16)
    h = h[np.isfinite(h) & (bits != 0x8000)]  # -0.0 comes back as ref + 0 = +0.0, on the CPU too
    # kernel 1 pools nothing away: y == x exactly, through __half2float and __float2half_rn
    y, _ = gpu.forward(h, make_geometry(h.shape, 1), 0.0, F32)
    np.testing.assert_array_equal(y.view(np.uint16), h.view(np.uint16))
    # means of neighbours hit halfway points between float16 values
    pairs = np.sort(h[np.abs(h) < 60000])
    y, _ = gpu.forward(pairs[: pairs.size // 2 * 2], make_geometry((pairs.size // 2 * 2,), 2), 0.0, F32)
    expect = ((pairs[0:-1:2].astype(np.float32) + pairs[1::2].astype(np.float32)) / 2).astype(np.float16)
    np.testing.assert_array_equal(y.view(np.uint16), expect.view(np.uint16))


def test_gpu_host_kernel_constants_match_python():
    """Column order and SP_MAX_DIMS in softpool.cu are the ones launch.py packs."""
    text = (launch.SOURCE_DIR / "softpool.cu").read_text()
    cols = re.search(r"enum \{([^}]*)\}", text).group(1).replace(" ", "").split(",")
    assert cols == ["COL_L", "COL_O", "COL_K", "COL_S", "COL_D", "COL_P", "COL_XS", "COL_YS", "COL_GS", "SP_NCOLS"]
    assert len(cols) - 1 == NCOLS
    assert int(re.search(r"#define SP_MAX_DIMS (\d+)", text).group(1)) == launch.MAX_DIMS
    divs = re.search(r"enum \{\s*(DIV_[^}]*)\}", text).group(1).replace(" ", "").split(",")
    assert divs == ["DIV_O", "DIV_L", "DIV_S", "DIV_D", "DIV_E", "DIV_Y", "SP_NDIVS"] and len(divs) - 1 == launch.NDIVS
    assert launch.TABLE_DTYPE.itemsize == 8 * (3 + launch.MAX_DIMS * (NCOLS + 2 * launch.NDIVS + 1))
    assert launch.TABLE_DTYPE.itemsize < 4096 - 128  # CUDA's parameter limit, with room for the other arguments


@pytest.mark.parametrize("bits", [32, 64])
def test_gpu_host_magic_division_is_exact(bits):
    """n // d == (mulhi(n, m) + n) >> s over edge and random dividends and divisors of the index width."""
    rng = np.random.default_rng(bits)
    top = 2 ** (bits - 1) - 1
    divisors = [1, 2, 3, 5, 7, 10, 64, 112, 641, 2**16 + 1, top // 3, top - 1, top]
    divisors += [int(v) for v in rng.integers(1, top, 200, dtype=np.int64 if bits == 64 else np.int32)]
    mask = (1 << bits) - 1
    for d in divisors:
        m, s = launch.magic(d, bits)
        assert 0 < m <= mask and s < bits
        dividends = [0, 1, d - 1, d, d + 1, 2 * d - 1, top - 1, top] + [int(v) for v in rng.integers(0, top, 50)]
        for n in dividends:
            if 0 <= n <= top:
                t = (n * m) >> bits
                assert ((t + n) & mask) >> s == n // d, (n, d)


def test_gpu_host_too_many_loop_dims_is_a_clear_error(gpu):
    # alternating pooled/unpooled axes of length 2 cannot merge: one row per axis
    shape = (2,) * (launch.MAX_DIMS + 1)
    geom = make_geometry(shape, 2, axes=tuple(range(0, len(shape), 2)))
    x = np.zeros(shape, np.float32)
    assert loop_table(geom, tuple(s // 4 for s in x.strides), (1,) * len(shape)).shape[0] > launch.MAX_DIMS
    with pytest.raises(ValueError, match=r"input shape \(2, 2.*at most 16"):
        gpu.forward(x, geom, 1.0, F32)


def test_gpu_host_index_width_and_grid_choice():
    """int indices while every offset fits in 31 bits, long long past that; grids capped."""

    class Probe(launch.Launcher):
        block = 256

        def __init__(self):
            self.bf16 = False
            self.calls = []

        def max_blocks(self):
            return 1000

        def launch(self, name, grid, args):
            self.calls.append((name, grid, args))

    probe = Probe()
    small = loop_table(make_geometry((8, 3, 64, 64), 2), (12288, 4096, 64, 1), (3072, 1024, 32, 1))
    huge = loop_table(make_geometry((2**16, 3, 128, 128), 2), (49152, 16384, 128, 1), (12288, 4096, 64, 1))
    for tab in (small, huge):
        launch.launch_forward(probe, np.empty(0, F32), None, None, tab, 1.0, F32)
    (n1, g1, a1), (n2, g2, a2) = probe.calls
    assert n1 == "softpool_forward<float, float, int, 2>" and a1[-1] == np.int32(8 * 3 * 32 * 32)
    assert g1 == 8 * 3 * 32 * 32 // 256 and isinstance(a1[-2], np.float32)
    assert n2 == "softpool_forward<float, float, long long, 2>" and a2[-1].dtype == np.int64 and g2 == 1000
    with pytest.raises(TypeError, match="float16, float32, float64"):
        launch.launch_forward(probe, np.empty(0, np.int16), None, None, small, 1.0, F32)


@pytest.mark.parametrize(
    "shape,kw,width",
    [
        ((3, 9, 8), dict(kernel=(3, 2), stride=(2, 1)), 2),
        ((2, 5, 6, 7), dict(kernel=(2, 3, 2), stride=1, padding=1), 4),
        ((2, 4, 3, 5, 4, 3), dict(kernel=(2, 2, 3, 2, 2), stride=(1, 2, 1, 2, 1)), 16),
    ],
)
def test_gpu_host_window_width_instantiations(shape, kw, width):
    """Each compiled window capacity W is picked by pooled rank and gives the CPU's answer."""
    launcher = HostLauncher()
    names = []
    run = launcher.launch
    launcher.launch = lambda name, grid, args: (names.append(name), run(name, grid, args))
    gpu = Backend(launcher, np)
    x = np.random.default_rng(9).standard_normal(shape)
    geom = make_geometry(shape, **kw)
    y, lse = gpu.forward(x, geom, 1.0, F64)
    y_c, lse_c = cpu.forward(x, geom, 1.0, F64)
    close(y, y_c, 1e-12, "y")
    gy = np.random.default_rng(10).standard_normal(y.shape)
    close(
        gpu.backward(gy, x, y, lse, geom, 1.0, F64, True),
        cpu.backward(gy, x, y_c, lse_c, geom, 1.0, F64, True),
        1e-12,
        "gx",
    )
    assert names == [
        f"softpool_forward<double, double, int, {width}>",
        f"softpool_backward<double, double, int, true, {width}>",
    ]


def test_gpu_host_forward_without_lse(gpu):
    """pool() asks for y only: the kernel gets a null lse pointer and y is unchanged."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 3, 7, 9)).astype(np.float32)
    geom = make_geometry(x.shape, 3, 2, padding=1)
    y_full, _ = gpu.forward(x, geom, 1.0, F32)
    y, lse = gpu.forward(x, geom, 1.0, F32, with_lse=False)
    assert lse is None
    np.testing.assert_array_equal(y, y_full)


def test_gpu_host_numerics_examples(gpu):
    """NUMERICS.md rules 2 and 3: extreme-relative weights, the plain mean for beta == 0."""

    def run(values, dtype, beta, kernel=2):
        x = np.array(values, dtype)
        return gpu.forward(x, make_geometry(x.shape, kernel), beta, ACC[np.dtype(dtype)])

    y, lse = run([0, 1, -1, 0], np.float32, 1e30)
    np.testing.assert_array_equal(y, [1, 0])
    np.testing.assert_array_equal(lse, np.array([1e30, 0], np.float32))
    y, lse = run([0, 1, -1, 0], np.float32, -1e30)
    np.testing.assert_array_equal(y, [0, -1])
    y, lse = run([1e300, 2e300], np.float64, 1e10, kernel=2)
    np.testing.assert_array_equal(y, [2e300])
    assert np.isinf(lse[0]) and lse[0] > 0  # beta * m overflows, as the true value does
    fmax = np.finfo(np.float32).max
    y, lse = run([fmax, -fmax, 3, 5], np.float32, 0.0)
    np.testing.assert_array_equal(y, [0, 4])
    np.testing.assert_allclose(lse, np.log([2, 2]), rtol=1e-7)
    y, _ = run([fmax, fmax], np.float32, 0.0)
    with np.errstate(over="ignore"):
        assert y[0] == np.mean(np.array([fmax, fmax], np.float32))  # inf, as numpy.mean
    y, lse = run([1, np.nan, 2, 3], np.float32, 1.0)
    assert np.isnan(y[0]) and np.isnan(lse[0]) and np.isfinite(y[1])


def test_gpu_host_long_window_accuracy(gpu):
    """Global pooling of a 1024x1024 float32 map: within 2e-5 of the float64 oracle (NUMERICS.md rule 5)."""
    x = np.random.default_rng(12).standard_normal((1024, 1024)).astype(np.float32)
    geom = make_geometry(x.shape, (1024, 1024))
    for beta in (1.0, 0.0):
        y, lse = Backend(HostLauncher(block=1, blocks=1), np).forward(x, geom, beta, F32)
        y_r, lse_r = reference_forward(x.astype(np.float64), beta=beta, kernel=(1024, 1024))
        np.testing.assert_allclose(y, y_r, rtol=2e-5, atol=2e-5 * max(1.0, abs(float(y_r[0, 0]))))
        np.testing.assert_allclose(lse, lse_r, rtol=2e-5)
