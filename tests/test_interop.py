"""DLPack at the API boundary: foreign arrays in, the caller's arrays out, without copies."""

import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import softpool_nd
from softpool_nd import _interop

torch.set_num_threads(1)


def _rng_tensor(shape, dtype=torch.float32, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).standard_normal(shape)).to(dtype)


def test_numpy_arrays_pass_untouched():
    a, b = np.ones(3), np.zeros(2)
    arrays, to_caller = _interop.native(a, None, b)
    assert arrays[0] is a and arrays[1] is None and arrays[2] is b
    assert to_caller(b) is b


def test_torch_cpu_is_zero_copy_both_ways(seen):
    # a transposed view: the backend must see the tensor's own memory and strides
    t = _rng_tensor((2, 3, 6, 8)).transpose(2, 3)
    y = softpool_nd.pool(t, kernel=2, padding=1, beta=0.5)
    assert isinstance(y, torch.Tensor) and y.dtype == torch.float32
    assert seen["x"].ctypes.data == t.data_ptr() and seen["x"].strides == tuple(4 * s for s in t.stride())
    assert y.data_ptr() == seen["y"].ctypes.data
    np.testing.assert_array_equal(y.numpy(), softpool_nd.pool(t.numpy(), kernel=2, padding=1, beta=0.5))


def test_torch_forward_and_backward(seen):
    t = _rng_tensor((2, 2, 5, 7), torch.float64, seed=1)
    kw = dict(kernel=(3, 2), stride=(2, 1), padding="same", dilation=(1, 2))
    y, lse = softpool_nd.forward(t, **kw)
    assert isinstance(lse, torch.Tensor) and lse.data_ptr() == seen["lse"].ctypes.data
    g = _rng_tensor(tuple(y.shape), torch.float64, seed=2)
    grad = softpool_nd.backward(g, t, y=y, lse=lse, **kw)
    assert isinstance(grad, torch.Tensor) and grad.data_ptr() == seen["grad_x"].ctypes.data
    assert seen["grad_y"].ctypes.data == g.data_ptr()
    y_np, lse_np = softpool_nd.forward(t.numpy(), **kw)
    np.testing.assert_array_equal(y.numpy(), y_np)
    np.testing.assert_array_equal(lse.numpy(), lse_np)
    np.testing.assert_array_equal(grad.numpy(), softpool_nd.backward(g.numpy(), t.numpy(), **kw))


def test_out_tensor_is_written_in_place():
    t = _rng_tensor((1, 2, 4, 4))
    out = torch.full((1, 2, 2, 2), float("nan"))
    assert softpool_nd.pool(t, 2, out=out) is out
    np.testing.assert_array_equal(out.numpy(), softpool_nd.pool(t.numpy(), 2))


def test_bfloat16_round_trips_through_float32():
    t = _rng_tensor((2, 3, 6, 6)).bfloat16()
    y = softpool_nd.pool(t, 3, stride=2)
    expect = torch.from_numpy(softpool_nd.pool(t.float().numpy(), 3, stride=2)).bfloat16()
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y, expect, rtol=0, atol=0)
    y, lse = softpool_nd.forward(t, 3, stride=2)
    assert (y.dtype, lse.dtype) == (torch.bfloat16, torch.float32)
    g = softpool_nd.backward(torch.ones_like(y), t, 3, stride=2, y=y, lse=lse)
    assert g.dtype == torch.bfloat16 and g.shape == t.shape
    out = torch.zeros(2, 3, 2, 2, dtype=torch.bfloat16)
    assert softpool_nd.pool(t, 3, stride=2, out=out) is out
    torch.testing.assert_close(out, expect, rtol=0, atol=0)


def test_result_dtype_follows_x_not_grad_y():
    x = _rng_tensor((4, 6))
    g = torch.ones(2, 3, dtype=torch.bfloat16)
    grad = softpool_nd.backward(g, x, 2)
    assert grad.dtype == torch.float32
    np.testing.assert_array_equal(grad.numpy(), softpool_nd.backward(np.ones((2, 3), np.float32), x.numpy(), 2))


def test_float16_and_integer_tensors_keep_numpy_semantics():
    h = _rng_tensor((3, 8)).half()
    y = softpool_nd.pool(h, 2)
    assert y.dtype == torch.float16
    np.testing.assert_array_equal(y.numpy(), softpool_nd.pool(h.numpy(), 2))
    i = torch.arange(8).reshape(2, 4)
    assert softpool_nd.pool(i, 2).dtype == torch.float64


def test_unsupported_dtype_names_it():
    with pytest.raises(TypeError, match="complex64"):
        softpool_nd.pool(torch.ones(4, dtype=torch.complex64), 2)


def test_jax_array_comes_back_as_jax():
    import jax
    import jax.numpy as jnp

    a = np.random.default_rng(3).standard_normal((2, 3, 6, 4)).astype(np.float32)
    y = softpool_nd.pool(jnp.asarray(a), 2)
    assert isinstance(y, jax.Array)
    np.testing.assert_array_equal(np.asarray(y), softpool_nd.pool(a, 2))


class _Foreign:
    """A DLPack producer on a chosen device, standing in for arrays we cannot create here."""

    shape, dtype = (4,), np.float32

    def __init__(self, device_type):
        self.device_type = device_type

    def __dlpack_device__(self):
        return (self.device_type, 0)

    def __dlpack__(self, stream=None, **kwargs):
        raise AssertionError("the consumer, not this test, reads the memory")


def test_cuda_memory_goes_to_cupy(monkeypatch):
    calls = []
    fake_cupy = types.SimpleNamespace(
        ndarray=type("ndarray", (), {}), from_dlpack=lambda a: calls.append(a) or "cupy array"
    )
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy)
    a = _Foreign(2)
    (b,), _ = _interop.native(a)
    assert b == "cupy array" and calls == [a]


def test_other_devices_are_refused():
    with pytest.raises(TypeError, match="DLPack device type 10"):
        _interop.native(_Foreign(10))


def test_numpy_only_install_imports_and_pools():
    code = textwrap.dedent(
        """
        import importlib.abc, sys
        BLOCKED = {"torch", "jax", "jaxlib", "array_api_compat", "cupy"}

        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{name} is blocked")

        sys.meta_path.insert(0, Block())
        import numpy as np
        import softpool_nd
        y = softpool_nd.pool(np.arange(8.0).reshape(2, 4), 2)
        assert y.shape == (1, 2), y.shape
        assert not BLOCKED & set(m.split(".")[0] for m in sys.modules), sorted(sys.modules)
        try:
            import softpool_nd.torch
        except ImportError as e:
            print("torch adapter:", e)
        print("ok")
        """
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1] == "ok" and "torch is blocked" in run.stdout


def test_register_reroutes_a_package_already_dispatched(monkeypatch):
    # backend modules are looked up once per package and kept: register() must
    # drop the kept one, or a re-registered package would stay on the old backend
    from softpool_nd import _dispatch
    from softpool_nd.cpu import backend as cpu
    from softpool_nd.gpu import backend as gpu

    monkeypatch.setattr(_dispatch, "_BACKENDS", dict(_dispatch._BACKENDS))
    monkeypatch.setattr(_dispatch, "_LOADED", {})
    fake = type("ndarray", (), {"__module__": "fakearrays.core"})()
    _dispatch.register("fakearrays", "softpool_nd.cpu.backend")
    assert _dispatch.backend_for(fake) is cpu
    _dispatch.register("fakearrays", "softpool_nd.gpu.backend")
    assert _dispatch.backend_for(fake) is gpu
