"""Launch the kernels on a CUDA GPU through CuPy (RawModule, compiled by NVRTC).

The module is built once per process from ``softpool.cu`` with every
instantiation named up front; CuPy compiles it once per device and keeps the
binary in its on-disk kernel cache, so later processes skip NVRTC. Launches
go to CuPy's current stream and never synchronise the host.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from .launch import Launcher, bfloat16_dtype, instantiations, source

__all__ = ["CupyLauncher", "require_cupy"]


def require_cupy():
    """Import cupy, or raise ImportError saying how to install it."""
    try:
        import cupy
    except ImportError as err:
        raise ImportError(
            "softpool_nd's GPU backend needs CuPy; install it with `pip install softpool_nd[gpu]` "
            "(CUDA 12, cupy-cuda12x) or the cupy wheel matching your CUDA"
        ) from err
    return cupy


def _cupy_has_bfloat16():
    """True when this CuPy ships bfloat16 support (its header) and ml_dtypes is importable."""
    spec = importlib.util.find_spec("cupy")
    root = Path(spec.origin).parent if spec and spec.origin else None
    return bfloat16_dtype() is not None and root is not None and (root / "_core/include/cupy/bfloat16.cuh").exists()


class CupyLauncher(Launcher):
    """Launcher for CuPy's current device and stream."""

    block = 256

    def __init__(self):
        self._cupy = require_cupy()
        self.bf16 = _cupy_has_bfloat16()
        self.names = tuple(instantiations(self.bf16))
        self._module = self._cupy.RawModule(
            code=source(),
            options=("-std=c++17", f"-DSOFTPOOL_BF16={int(self.bf16)}"),
            name_expressions=self.names,
        )
        self._kernels = {}
        self._blocks = {}

    def max_blocks(self):
        # Enough resident blocks to fill every SM several times over; beyond
        # that the grid-stride loop keeps threads busy without launch overhead.
        dev = self._cupy.cuda.Device().id
        if dev not in self._blocks:
            self._blocks[dev] = self._cupy.cuda.Device(dev).attributes["MultiProcessorCount"] * 32
        return self._blocks[dev]

    def device_of(self, x):
        # cupy.cuda.Device is a context manager: outputs and launches follow x
        return x.device

    def launch(self, name, grid, args):
        key = (self._cupy.cuda.Device().id, name)
        fn = self._kernels.get(key)
        if fn is None:
            fn = self._kernels[key] = self._module.get_function(name)
        fn((grid,), (self.block,), args)
