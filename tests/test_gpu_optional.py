"""CuPy is optional: without it softpool_nd imports and runs on the CPU, and GPU use says what to install."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import softpool_nd
from softpool_nd import _dispatch
from softpool_nd.gpu import backend


def test_gpu_missing_cupy_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # makes `import cupy` raise ImportError
    monkeypatch.setattr(backend, "_CUDA", None)
    with pytest.raises(ImportError, match=r"pip install softpool_nd\[gpu\]"):
        _ = backend.xp
    geom = softpool_nd.make_geometry((1, 1, 4, 4), 2)
    with pytest.raises(ImportError, match=r"pip install softpool_nd\[gpu\]"):
        backend.forward(np.zeros((1, 1, 4, 4), np.float32), geom, 1.0, np.dtype(np.float32))


def test_gpu_cpu_work_unaffected_without_cupy():
    code = textwrap.dedent("""
        import sys
        sys.modules["cupy"] = None
        import numpy as np, softpool_nd
        y = softpool_nd.pool(np.array([0.0, 1.0, 2.0, 2.0]), kernel=2)
        assert np.allclose(y, [0.7310585786, 2.0]), y
        assert "softpool_nd.gpu.backend" not in sys.modules
        print("ok")
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


def test_gpu_cupy_arrays_route_to_gpu_backend():
    fake = type("ndarray", (), {"__module__": "cupy._core.core"})()
    assert _dispatch.backend_for(fake) is backend
    assert backend.name == "gpu"
