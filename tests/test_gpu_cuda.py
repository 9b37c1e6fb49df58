"""The GPU backend on real CUDA hardware through CuPy; skipped where no GPU is visible.

Written without a GPU to run them on: each test states what it would catch.
"""

import numpy as np
import pytest

import softpool_nd
from softpool_nd.gpu import check

from configs import random_config, random_layout, tolerance

cp = pytest.importorskip("cupy") if check.available() else None
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(cp is None, reason="no CUDA GPU visible to CuPy")]


def _close(got, expect, dtype=np.float32):
    rtol = tolerance(dtype)[0]
    np.testing.assert_allclose(
        cp.asnumpy(got).astype(np.float64), np.asarray(expect, np.float64), rtol=rtol, atol=rtol, equal_nan=True
    )


@pytest.mark.parametrize("seed", range(3))
def test_gpu_cuda_matches_cpu_backend(seed):
    rng = np.random.default_rng(seed)
    for i in range(20):
        shape, kw = random_config(rng)
        dtype = [np.float16, np.float32, np.float64][i % 3]
        beta = float(rng.choice([1.0, 0.0, -0.7, 2.5]))
        x = (rng.standard_normal(shape) * 3).astype(dtype)
        xg = random_layout(rng, cp.asarray(x), cp)
        y, lse = softpool_nd.forward(x, beta=beta, **kw)
        yg, lseg = softpool_nd.forward(xg, beta=beta, **kw)
        _close(yg, y, dtype)
        _close(lseg, lse, dtype)
        gy = rng.standard_normal(y.shape).astype(dtype)
        g = softpool_nd.backward(gy, x, y=y, lse=lse, beta=beta, **kw)
        gg = softpool_nd.backward(random_layout(rng, cp.asarray(gy), cp), xg, y=yg, lse=lseg, beta=beta, **kw)
        again = softpool_nd.backward(cp.asarray(gy), xg, y=yg, lse=lseg, beta=beta, **kw)
        np.testing.assert_allclose(cp.asnumpy(gg), g, rtol=4 * tolerance(dtype)[0], atol=4 * tolerance(dtype)[0])
        bits = [np.ascontiguousarray(cp.asnumpy(a)).view(np.uint8) for a in (gg, again)]
        assert (bits[0] == bits[1]).all()  # deterministic, whatever the layouts


def test_gpu_cuda_result_stays_on_device_and_keeps_layout():
    x = cp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 3), np.float32)).transpose(0, 3, 1, 2)
    y = softpool_nd.pool(x, 2)
    assert isinstance(y, cp.ndarray) and y.device == x.device
    assert y.transpose(0, 2, 3, 1).flags.c_contiguous
    _close(y, softpool_nd.pool(cp.asnumpy(x), 2))


_SPIN = r"""
extern "C" __global__ void spin(long long cycles) {
    const long long t0 = clock64();
    while (clock64() - t0 < cycles) {}
}
"""


def test_gpu_cuda_stream_ordering():
    """A kernel on the wrong stream would read x before the in-place change queued behind a long kernel."""
    spin = cp.RawKernel(_SPIN, "spin")
    x = cp.zeros((4, 4, 64, 64), cp.float32)
    new = np.random.default_rng(1).standard_normal(x.shape).astype(np.float32)
    new_gpu = cp.asarray(new)
    gy = cp.ones((4, 4, 32, 32), cp.float32)
    cp.cuda.Device().synchronize()
    stream = cp.cuda.Stream(non_blocking=True)
    with stream:
        spin((1,), (1,), (np.int64(200_000_000),))  # ~0.1 s on any recent GPU
        x[...] = new_gpu  # in place, queued behind the spin
        y, lse = softpool_nd.forward(x, 3, 2, 1)
        spin((1,), (1,), (np.int64(200_000_000),))
        x *= 2  # the backward must see this change too
        g = softpool_nd.backward(gy, x, 3, 2, 1, y=y, lse=lse)
    stream.synchronize()
    y_c, lse_c = softpool_nd.forward(new, 3, 2, 1)
    _close(y, y_c)
    _close(g, softpool_nd.backward(np.ones(y_c.shape, np.float32), 2 * new, 3, 2, 1, y=y_c, lse=lse_c))


def test_gpu_cuda_out_and_integer_input():
    x = cp.arange(2 * 3 * 8 * 8).reshape(2, 3, 8, 8) % 7
    out = cp.empty((2, 3, 4, 4), cp.float64)
    y = softpool_nd.pool(x, 2, out=out)
    assert y is out
    _close(out, softpool_nd.pool(cp.asnumpy(x), 2), np.float64)


def test_gpu_cuda_pool_without_lse_is_forwards_y():
    """pool() passes a null lse pointer; a bad pointer would fault here (CuPy 13) or corrupt memory."""
    x = cp.asarray(np.random.default_rng(2).standard_normal((3, 5, 17, 13), np.float32))
    for _ in range(3):
        y = softpool_nd.pool(x, 3, 2, 1)
    cp.cuda.Device().synchronize()
    y_f, _ = softpool_nd.forward(x, 3, 2, 1)
    assert (y == y_f).all()


def test_gpu_cuda_bfloat16_runs_the_bf16_kernels():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    from softpool_nd.gpu import backend

    if not backend.bfloat16():
        pytest.skip("this CuPy has no bfloat16 support")
    bf16 = np.dtype(ml_dtypes.bfloat16)
    x = np.random.default_rng(3).standard_normal((2, 3, 9, 8)).astype(bf16)
    xg = cp.asarray(x)
    assert xg.dtype == bf16
    y, lse = softpool_nd.forward(xg, 3, 2, 1)
    assert y.dtype == bf16 and lse.dtype == np.float32
    y_c, lse_c = softpool_nd.forward(x, 3, 2, 1)  # CPU: float32 then rounded to bfloat16
    np.testing.assert_allclose(cp.asnumpy(y).astype(np.float32), y_c.astype(np.float32), rtol=1e-2, atol=1e-2)
    _close(lse, lse_c)
    g = softpool_nd.backward(cp.ones(y.shape, bf16), xg, 3, 2, 1, y=y, lse=lse)
    assert g.dtype == bf16


def test_gpu_cuda_follows_the_input_device():
    if cp.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two GPUs")
    with cp.cuda.Device(1):
        x = cp.asarray(np.random.default_rng(2).standard_normal((2, 2, 8, 8), np.float32))
        xi = cp.arange(2 * 2 * 8 * 8, dtype=cp.int32).reshape(2, 2, 8, 8) % 5
        empty = cp.zeros((0, 2, 8, 8), cp.float32)
        gy16 = cp.ones((2, 2, 4, 4), cp.float16)
    y, lse = softpool_nd.forward(x, 2)  # current device is 0
    assert y.device.id == 1 and lse.device.id == 1
    _close(y, softpool_nd.pool(cp.asnumpy(x), 2))
    assert softpool_nd.pool(xi, 2).device.id == 1  # int -> float64 cast on device 1
    assert softpool_nd.pool(empty, 2).device.id == 1  # empty output allocated on device 1
    assert softpool_nd.backward(gy16, x, 2).device.id == 1  # float16 grad_y cast on device 1


def test_gpu_cuda_dask_cupy_chunks_threaded():
    """Many threads hitting the kernels at once (the first-compile lock, the launch path) give the one answer."""
    da = pytest.importorskip("dask.array")
    import dask

    x = np.random.default_rng(4).standard_normal((6, 3, 40, 36)).astype(np.float32)
    xd = da.from_array(cp.asarray(x).transpose(0, 2, 3, 1).copy().transpose(0, 3, 1, 2), chunks=(1, 3, 13, 11))
    kw = dict(kernel=3, stride=2, padding=1)
    y, lse = softpool_nd.forward(xd, **kw)
    g = softpool_nd.backward(da.ones_like(y), xd, y=y, lse=lse, **kw)
    got_y, got_g = dask.compute(y, g, scheduler="threads", num_workers=8)
    assert isinstance(got_y, cp.ndarray) and isinstance(got_g, cp.ndarray)
    y_c, lse_c = softpool_nd.forward(x, **kw)
    _close(got_y, y_c)
    _close(got_g, softpool_nd.backward(np.ones_like(y_c), x, y=y_c, lse=lse_c, **kw))


# ---------------------------------------------------------------- softpool_nd.torch on CUDA


@pytest.fixture(scope="module")
def torch_cuda():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("torch has no CUDA")
    return torch


def _torch_case(torch, dtype, channels_last=False, seed=0):
    x = torch.from_numpy(np.random.default_rng(seed).standard_normal((2, 3, 13, 12)).astype(np.float32))
    x = x.to("cuda", dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.requires_grad_(True)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("dtype_name", ["float32", "float16", "bfloat16", "float64"])
def test_gpu_cuda_torch_forward_backward(torch_cuda, dtype_name, channels_last):
    import softpool_nd.torch as spt

    torch = torch_cuda
    dtype = getattr(torch, dtype_name)
    x = _torch_case(torch, dtype, channels_last)
    y = spt.soft_pool(x, 3, 2, 1)
    assert y.device == x.device and y.dtype == dtype and y.shape == (2, 3, 7, 6)
    if channels_last:
        assert y.is_contiguous(memory_format=torch.channels_last)
    gy = torch.ones_like(y)
    (g,) = torch.autograd.grad(y, x, gy)
    assert g.dtype == dtype and g.shape == x.shape
    xc = x.detach().cpu().double().requires_grad_(True)
    yc = spt.soft_pool(xc, 3, 2, 1)
    (gc,) = torch.autograd.grad(yc, xc, torch.ones_like(yc))
    tol = {"float64": 1e-10, "float32": 2e-5, "float16": 2e-3, "bfloat16": 2e-2}[dtype_name]
    np.testing.assert_allclose(y.detach().double().cpu().numpy(), yc.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(g.double().cpu().numpy(), gc.numpy(), rtol=2 * tol, atol=2 * tol)


def test_gpu_cuda_torch_graph_capture(torch_cuda):
    """Forward and backward captured in a CUDA graph: no allocation or sync inside the op, replays recompute."""
    import softpool_nd.torch as spt

    torch = torch_cuda
    static_x = _torch_case(torch, torch.float32, seed=1)
    static_gy = torch.ones((2, 3, 7, 6), device="cuda")
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # warm-up outside capture: compile, load, allocator
            torch.autograd.grad(spt.soft_pool(static_x, 3, 2, 1), static_x, static_gy)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_y = spt.soft_pool(static_x, 3, 2, 1)
        (static_g,) = torch.autograd.grad(static_y, static_x, static_gy)
    for seed in (2, 3):
        new = _torch_case(torch, torch.float32, seed=seed).detach()
        with torch.no_grad():
            static_x.copy_(new)
        graph.replay()
        torch.cuda.synchronize()
        xr = new.clone().requires_grad_(True)
        yr = spt.soft_pool(xr, 3, 2, 1)
        (gr,) = torch.autograd.grad(yr, xr, static_gy)
        torch.testing.assert_close(static_y, yr)
        torch.testing.assert_close(static_g, gr)


@pytest.mark.parametrize("channels_last", [False, True])
def test_gpu_cuda_torch_ops_allocate_nothing_through_cupy(torch_cuda, channels_last):
    """Issue #15 item 8: forward, backward (also of an expanded grad_y), no-grad pool and jvp take their
    outputs from torch; a CuPy allocator that refuses every request must never be called."""
    import softpool_nd.torch as spt

    torch = torch_cuda
    x = _torch_case(torch, torch.float32, channels_last, seed=4)

    def run():
        y = spt.soft_pool(x, 3, 2, 1)
        (g,) = torch.autograd.grad(y, x, torch.ones_like(y))
        (g_sum,) = torch.autograd.grad(spt.soft_pool(x, 3, 2, 1).sum(), x)  # grad_y expanded (strides 0)
        with torch.no_grad():
            p = spt.soft_pool(x, 3, 2, 1)
        _, dy = torch.func.jvp(lambda a: spt.soft_pool(a, 3, 2, 1), (x.detach(),), (torch.ones_like(x),))
        return y, g, g_sum, p, dy

    want = run()  # first call: compile and load (allowed to allocate)
    torch.cuda.synchronize()

    def refuse(size):
        raise AssertionError(f"CuPy was asked for {size} bytes inside a softpool_nd.torch op")

    cp.cuda.set_allocator(refuse)
    try:
        got = run()
    finally:
        cp.cuda.set_allocator(cp.get_default_memory_pool().malloc)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)
    torch.testing.assert_close(got[2], got[1])
    torch.testing.assert_close(got[4], torch.ones_like(got[4]))  # pooling is shift-equivariant


def test_gpu_cuda_torch_graph_capture_of_pool_and_jvp(torch_cuda):
    """The no-grad pool and forward-mode jvp captured in a CUDA graph; replays recompute from new data."""
    import softpool_nd.torch as spt

    torch = torch_cuda
    static_x = _torch_case(torch, torch.float32, seed=5).detach()
    static_dx = torch.randn_like(static_x)

    def step():
        with torch.no_grad():
            p = spt.soft_pool(static_x, 3, 2, 1)
        _, dy = torch.func.jvp(lambda a: spt.soft_pool(a, 3, 2, 1), (static_x,), (static_dx,))
        return p, dy

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # warm-up outside capture: compile, load, allocator
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_p, static_dy = step()
    for seed in (6, 7):
        new = _torch_case(torch, torch.float32, seed=seed).detach()
        static_x.copy_(new)
        graph.replay()
        torch.cuda.synchronize()
        p, dy = (
            spt.soft_pool(new, 3, 2, 1),
            torch.func.jvp(lambda a: spt.soft_pool(a, 3, 2, 1), (new,), (static_dx,))[1],
        )
        torch.testing.assert_close(static_p, p)
        torch.testing.assert_close(static_dy, dy)
