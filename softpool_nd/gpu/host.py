"""Run softpool.cu on the CPU: the host emulation the tests use in place of a GPU.

g++ compiles ``softpool.cu`` through ``host_shim.h`` together with a small
generated driver that runs a kernel over its whole grid, thread after thread,
taking its arguments as CUDA's ``cudaLaunchKernel`` does (an array of
pointers to the argument values). The shared library is built once per
source hash into a cache directory outside the repository
(``$SOFTPOOL_ND_CACHE``, else ``$XDG_CACHE_HOME/softpool_nd`` or
``~/.cache/softpool_nd``) and loaded with ctypes.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shlex
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from .launch import SOURCE_DIR, Launcher, instantiations

__all__ = ["HostLauncher", "build", "cache_dir"]

_FLAGS = ("-O2", "-std=c++17", "-shared", "-fPIC", "-DSOFTPOOL_HOST=1", "-DSOFTPOOL_BF16=1")

_DRIVER_HEAD = """\
#include "softpool.cu"
#include <cstddef>
#include <type_traits>
#include <utility>

template <typename... P, std::size_t... I>
static void sp_call(void (*k)(P...), void** args, std::index_sequence<I...>) {
    k(*static_cast<std::remove_cv_t<std::remove_reference_t<P>>*>(args[I])...);
}

template <typename... P>
static void sp_run(void (*k)(P...), unsigned grid, unsigned block, void** args) {
    gridDim = {grid, 1, 1};
    blockDim = {block, 1, 1};
    for (unsigned b = 0; b < grid; ++b) {
        for (unsigned t = 0; t < block; ++t) {
            blockIdx = {b, 0, 0};
            threadIdx = {t, 0, 0};
            sp_call(k, args, std::index_sequence_for<P...>{});
        }
    }
}

extern "C" int sp_launch(int which, unsigned grid, unsigned block, void** args) {
    switch (which) {
"""


def driver(names):
    """C++ source of the host driver for kernel name expressions ``names``."""
    cases = "".join(f"    case {i}: sp_run(&{n}, grid, block, args); return 0;\n" for i, n in enumerate(names))
    return _DRIVER_HEAD + cases + "    }\n    return -1;\n}\n"


def cache_dir():
    """Directory for built host libraries (created on demand)."""
    root = os.environ.get("SOFTPOOL_ND_CACHE")
    if root is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(base, "softpool_nd")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def build(names):
    """Path of the shared library for ``names``, compiling it if this source was never built."""
    cxx = shlex.split(os.environ.get("CXX", "g++"))
    text = driver(names)
    digest = hashlib.sha256()
    for part in (
        text,
        (SOURCE_DIR / "softpool.cu").read_text(),
        (SOURCE_DIR / "host_shim.h").read_text(),
        " ".join(cxx + list(_FLAGS)),
    ):
        digest.update(part.encode())
    lib = cache_dir() / f"softpool_host_{digest.hexdigest()[:16]}.so"
    if lib.exists():
        return lib
    with tempfile.TemporaryDirectory(dir=lib.parent) as tmp:
        src = Path(tmp) / "driver.cpp"
        src.write_text(text)
        out = Path(tmp) / lib.name
        cmd = cxx + list(_FLAGS) + ["-I", str(SOURCE_DIR), str(src), "-o", str(out)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"building the host emulation failed: {shlex.join(cmd)}\n{done.stderr}")
        os.replace(out, lib)  # atomic: concurrent builders never load a half-written file
    return lib


_LIBS = {}


def _library(names):
    key = tuple(names)
    if key not in _LIBS:
        lib = ctypes.CDLL(str(build(names)))
        lib.sp_launch.argtypes = (ctypes.c_int, ctypes.c_uint, ctypes.c_uint, ctypes.POINTER(ctypes.c_void_p))
        lib.sp_launch.restype = ctypes.c_int
        _LIBS[key] = lib
    return _LIBS[key]


class HostLauncher(Launcher):
    """Launcher running the kernels on the host over the full grid.

    Small blocks and grids make every grid-stride loop go round several
    times, which a GPU-sized grid would hide on test-sized arrays.

    Examples
    --------
    >>> import numpy as np
    >>> from softpool_nd import make_geometry
    >>> from softpool_nd.gpu.backend import Backend
    >>> gpu_on_host = Backend(HostLauncher(), np)
    >>> y, lse = gpu_on_host.forward(np.array([0.0, 1.0, 2.0, 2.0]), make_geometry((4,), 2), 1.0, np.dtype(np.float64))
    >>> np.round(y, 4)
    array([0.7311, 2.    ])
    """

    def __init__(self, block=32, blocks=3, index64=False):
        self.block = block
        self._blocks = blocks
        self.index64 = index64
        self.bf16 = True
        self.names = tuple(instantiations(self.bf16))
        self._lib = _library(self.names)

    def max_blocks(self):
        return self._blocks

    def launch(self, name, grid, args):
        keep = []
        ptrs = (ctypes.c_void_p * len(args))()
        for i, a in enumerate(args):
            # CuPy's rules: a host structured array is a struct passed by
            # value, a numpy scalar a value, None a null pointer; the other
            # arrays stand for device arrays, passed as pointers.
            if a is None or (isinstance(a, np.ndarray) and a.dtype.names is None):
                cell = ctypes.c_void_p(None if a is None else a.ctypes.data)  # the variable holding the pointer
                keep.append(cell)
                ptrs[i] = ctypes.addressof(cell)
            else:
                value = np.ascontiguousarray(a)
                keep.append(value)
                ptrs[i] = value.ctypes.data
        rc = self._lib.sp_launch(self.names.index(name), grid, self.block, ptrs)
        if rc != 0:
            raise RuntimeError(f"kernel {name} is not in the host library")
