"""bfloat16 (ml_dtypes) as a first-class input dtype: computed in float32 where no bfloat16 kernel exists."""

import numpy as np
import pytest

import softpool_nd
from softpool_nd import _dtypes

from reference import reference_backward, reference_forward

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
KW = dict(kernel=3, stride=2, padding=1)


def _x(shape=(2, 3, 9, 8), seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(BF16)


def test_dtype_rule():
    assert _dtypes.bfloat16() == BF16 and _dtypes.is_bfloat16(BF16) and not _dtypes.is_bfloat16(np.float16)
    for dt, acc in [(np.float16, np.float32), (BF16, np.float32), (np.float32, np.float32), (np.float64, np.float64)]:
        assert _dtypes.compute_dtypes(np.dtype(dt), "x", (1,)) == (np.dtype(dt), np.dtype(acc))
    assert _dtypes.compute_dtypes(np.dtype(bool), "x", (1,)) == (np.dtype(np.float64),) * 2
    with pytest.raises(TypeError, match=r"x has dtype complex64 \(input shape \(3,\)\).*bfloat16"):
        _dtypes.compute_dtypes(np.dtype(np.complex64), "x", (3,))


def test_bfloat16_pool_forward_backward_on_cpu():
    x = _x()
    x32 = x.astype(np.float32)
    y = softpool_nd.pool(x, **KW)
    assert y.dtype == BF16 and y.shape == (2, 3, 5, 4)
    # the float32 result rounded once to bfloat16
    np.testing.assert_array_equal(y.view(np.uint16), softpool_nd.pool(x32, **KW).astype(BF16).view(np.uint16))
    y2, lse = softpool_nd.forward(x, **KW)
    assert y2.dtype == BF16 and lse.dtype == np.float32
    np.testing.assert_array_equal(y2.view(np.uint16), y.view(np.uint16))
    y_r, lse_r = reference_forward(x.astype(np.float64), **KW)
    np.testing.assert_allclose(y.astype(np.float64), y_r, rtol=1e-2, atol=1e-2)  # 8 significant bits
    np.testing.assert_allclose(lse, lse_r, rtol=1e-5, atol=1e-5)  # float32 accumulation and storage
    gy = np.random.default_rng(1).standard_normal(y.shape).astype(BF16)
    for given in (dict(y=y2, lse=lse), {}):
        g = softpool_nd.backward(gy, x, y=given.get("y"), lse=given.get("lse"), **KW)
        assert g.dtype == BF16 and g.shape == x.shape
        g_r = reference_backward(gy.astype(np.float64), x.astype(np.float64), **KW)
        np.testing.assert_allclose(g.astype(np.float64), g_r, rtol=2e-2, atol=2e-2)


def test_bfloat16_out_argument_and_mixed_grad_dtype():
    x = _x(seed=2)
    out = np.empty((2, 3, 5, 4), BF16)
    assert softpool_nd.pool(x, out=out, **KW) is out
    np.testing.assert_array_equal(out.view(np.uint16), softpool_nd.pool(x, **KW).view(np.uint16))
    with pytest.raises(ValueError, match="dtype float32 but the result has shape .* and dtype bfloat16"):
        softpool_nd.pool(x, out=np.empty((2, 3, 5, 4), np.float32), **KW)
    g = softpool_nd.backward(np.ones((2, 3, 5, 4), np.float32), x, **KW)  # float32 grad_y for bfloat16 x
    assert g.dtype == BF16


def test_bfloat16_torch_cpu_tensor_over_dlpack():
    torch = pytest.importorskip("torch")
    x = _x(seed=3)
    t = torch.from_numpy(x.astype(np.float32)).to(torch.bfloat16)
    y = softpool_nd.pool(t, **KW)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.bfloat16
    np.testing.assert_array_equal(y.float().numpy(), softpool_nd.pool(x, **KW).astype(np.float32))
