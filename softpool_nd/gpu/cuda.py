"""Launch the kernels on a CUDA GPU through CuPy (RawModule, compiled by NVRTC).

The module is built once per process from ``softpool.cu`` with every
instantiation named up front. CuPy compiles it at the first launch on each
device (about 15 s of NVRTC for all instantiations) and keeps the binary in
its on-disk kernel cache (``$CUPY_CACHE_DIR``, default ``~/.cupy/kernel_cache``),
so later processes load it in well under a second. That first compile runs
under a lock: concurrent first calls (dask threads) wait for one compile
instead of running several. Launches go to CuPy's current stream and never
synchronise the host.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import threading
from pathlib import Path

from .._dtypes import bfloat16
from .launch import Launcher, instantiations, source

__all__ = ["CupyLauncher", "require_cupy", "OPTIONS", "options", "cupy_distributions"]

#: NVRTC options of the module, besides the -DSOFTPOOL_BF16 switch (CuPy adds its own, e.g. -ftz=true).
OPTIONS = ("-std=c++17",)

#: Serialises module creation and every kernel's first get_function (where CuPy compiles or loads).
_LOCK = threading.Lock()


def cupy_distributions():
    """Names of the installed CuPy distributions (cupy, cupy-cuda12x, cupy-cuda13x, ...)."""
    names = set()
    for dist in importlib.metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name == "cupy" or name.startswith("cupy-cuda") or name.startswith("cupy-rocm"):
            names.add(name)
    return sorted(names)


def require_cupy():
    """Import cupy, or raise ImportError saying how to install it.

    Two CuPy distributions installed side by side (say cupy-cuda12x and
    cupy-cuda13x) overwrite each other's files in the one ``cupy`` package;
    that is an ImportError naming both, not a crash at the first kernel.
    """
    try:
        import cupy
    except ImportError as err:
        raise ImportError(
            "softpool_nd's GPU backend needs CuPy; install it with `pip install softpool_nd[gpu]` "
            "(CUDA 12) or `pip install softpool_nd[gpu-cuda13]` (CUDA 13)"
        ) from err
    if not getattr(require_cupy, "_checked", False):
        found = cupy_distributions()
        if len(found) > 1:
            raise ImportError(
                f"several CuPy packages are installed side by side ({', '.join(found)}); they share the "
                f"`cupy` directory and break each other. Uninstall all of them and install the one matching "
                f"your CUDA driver: softpool_nd[gpu] (CUDA 12) or softpool_nd[gpu-cuda13] (CUDA 13)"
            )
        require_cupy._checked = True
    return cupy


def cupy_has_bfloat16():
    """True when this CuPy ships bfloat16 support (its header) and ml_dtypes is importable."""
    spec = importlib.util.find_spec("cupy")
    root = Path(spec.origin).parent if spec and spec.origin else None
    return bfloat16() is not None and root is not None and (root / "_core/include/cupy/bfloat16.cuh").exists()


def options(bf16):
    """The NVRTC options this package gives CuPy's RawModule."""
    return OPTIONS + (f"-DSOFTPOOL_BF16={int(bf16)}",)


class CupyLauncher(Launcher):
    """Launcher for CuPy's current device and stream."""

    block = 256

    def __init__(self):
        self._cupy = require_cupy()
        self.bf16 = cupy_has_bfloat16()
        self.names = tuple(instantiations(self.bf16))
        self._module = self._cupy.RawModule(code=source(), options=options(self.bf16), name_expressions=self.names)
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

    def function(self, name):
        """The compiled kernel ``name`` on the current device; compiles (once, under the lock) on first use."""
        key = (self._cupy.cuda.Device().id, name)
        fn = self._kernels.get(key)
        if fn is None:
            with _LOCK:
                fn = self._kernels.get(key)
                if fn is None:
                    fn = self._kernels[key] = self._module.get_function(name)
        return fn

    def launch(self, name, grid, args):
        self.function(name)((grid,), (self.block,), args)


_LAUNCHER = []


def launcher():
    """The process's one CupyLauncher, created under the lock."""
    if not _LAUNCHER:
        with _LOCK:
            if not _LAUNCHER:
                _LAUNCHER.append(CupyLauncher())
    return _LAUNCHER[0]
