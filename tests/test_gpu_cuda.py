"""The GPU backend on real CUDA hardware through CuPy; skipped where no GPU is visible."""
import numpy as np
import pytest

import softpool_nd
from softpool_nd.gpu import check


cp = pytest.importorskip("cupy") if check.available() else None
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(cp is None, reason="no CUDA GPU visible to CuPy")]


@pytest.mark.parametrize("seed", range(4))
def test_gpu_cuda_matches_cpu_backend(seed):
    rows, deterministic = check._correctness(cp, 25, seed=seed)
    assert deterministic
    for dt, n, err, ok in rows:
        assert n > 0 and ok, (dt, err)


def test_gpu_cuda_result_stays_on_device_and_keeps_layout():
    x = cp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 3), np.float32)).transpose(0, 3, 1, 2)
    y = softpool_nd.pool(x, 2)
    assert isinstance(y, cp.ndarray) and y.device == x.device
    assert y.transpose(0, 2, 3, 1).flags.c_contiguous
    np.testing.assert_allclose(cp.asnumpy(y), softpool_nd.pool(cp.asnumpy(x), 2), rtol=2e-5, atol=1e-6)


def test_gpu_cuda_runs_on_current_stream():
    x = cp.asarray(np.random.default_rng(1).standard_normal((4, 4, 64, 64), np.float32))
    expect = softpool_nd.pool(cp.asnumpy(x), 3, 2)
    with cp.cuda.Stream(non_blocking=True) as stream:
        y = softpool_nd.pool(x, 3, 2)
        stream.synchronize()
    np.testing.assert_allclose(cp.asnumpy(y), expect, rtol=2e-5, atol=1e-6)


def test_gpu_cuda_check_quick_report():
    text = check.run(quick=True)
    assert "FAIL" not in text and text.count("PASS") == 4  # three dtypes and determinism


def test_gpu_cuda_out_and_integer_input():
    x = cp.arange(2 * 3 * 8 * 8).reshape(2, 3, 8, 8) % 7
    out = cp.empty((2, 3, 4, 4), cp.float64)
    y = softpool_nd.pool(x, 2, out=out)
    assert y is out
    np.testing.assert_allclose(cp.asnumpy(out), softpool_nd.pool(cp.asnumpy(x), 2), rtol=1e-12)


def test_gpu_cuda_follows_the_input_device():
    if cp.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two GPUs")
    with cp.cuda.Device(1):
        x = cp.asarray(np.random.default_rng(2).standard_normal((2, 2, 8, 8), np.float32))
    y, lse = softpool_nd.forward(x, 2)  # current device is 0
    assert y.device.id == 1 and lse.device.id == 1
    np.testing.assert_allclose(cp.asnumpy(y), softpool_nd.pool(cp.asnumpy(x), 2), rtol=2e-5, atol=1e-6)
