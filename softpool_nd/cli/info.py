"""``softpool-nd info``: versions, working backends and the numba cache location."""

import os
import platform
import sys
from importlib import metadata

import numpy as np

from ._gpu import cuda_devices

__all__ = ["report"]

# (shown name, distributions that provide it; the first installed one wins)
_PACKAGES = (
    ("numpy", ("numpy",)),
    ("numba", ("numba",)),
    ("cupy", ("cupy-cuda12x", "cupy-cuda13x", "cupy-cuda11x", "cupy")),
    ("torch", ("torch",)),
    ("jax", ("jax",)),
    ("dask", ("dask",)),
    ("zarr", ("zarr",)),
    ("Pillow", ("pillow",)),
    ("tqdm", ("tqdm",)),
)

# SoftPool of [0, 1] with kernel 2: e / (1 + e), the value a working backend returns
_PROBE_EXPECTED = np.e / (1.0 + np.e)


def _version(name, dists):
    for dist in dists:
        try:
            version = metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
        return version if dist.lower() == name.lower() else f"{version} ({dist})"
    return "not installed"


def _probe(xp):
    """'works' or the reason a tiny pool on ``xp`` arrays fails or is wrong."""
    import softpool_nd

    try:
        y = softpool_nd.pool(xp.asarray([0.0, 1.0]), kernel=2)
        value = float(y[0])
    except Exception as exc:
        return f"fails: {type(exc).__name__}: {exc}"
    if abs(value - _PROBE_EXPECTED) > 1e-12:
        return f"fails: pool([0, 1]) gave {value!r}, expected {_PROBE_EXPECTED!r}"
    return "works"


def _cpu_line():
    import numba

    status = _probe(np)
    try:
        layer = f", threading layer {numba.threading_layer()}"
    except ValueError:  # only known once a parallel kernel has run
        layer = ""
    return f"CPU (numba): {status}; {numba.get_num_threads()} threads of {os.cpu_count()} CPUs{layer}"


def _gpu_lines():
    devices, reason = cuda_devices()
    if not devices:
        return [f"GPU (cupy):  none; {reason}"]
    import cupy

    lines = [f"GPU (cupy):  {_probe(cupy)} on device 0"]
    lines += [f"  device {i}: {name}, {mem / 2**30:.1f} GiB" for i, (name, mem) in enumerate(devices)]
    return lines


def _numba_cache():
    """Where numba keeps the compiled kernels, as numba itself resolved it."""
    import numba

    from ..cpu import _cache, kernels

    # the drivers and the class tasks are all built in cpu/_launch.py: numba
    # caches them in the same folder
    cache = getattr(kernels._run_forward, "_cache", None)
    path = getattr(cache, "_cache_path", None)
    if path is None:
        path = numba.config.CACHE_DIR or os.path.join(os.path.dirname(kernels.__file__), "__pycache__")
    stamp = f"kernel sources digest {_cache.DIGEST}"
    if not os.path.isdir(path):
        return f"{path} (not created yet; {stamp})"
    files = len([f for f in os.listdir(path) if f.endswith((".nbi", ".nbc"))])
    access = "writable" if os.access(path, os.W_OK) else "read-only"
    return f"{path} ({access}, {files} cached files; {stamp})"


def report():
    """The ``info`` text.

    Returns
    -------
    str

    Examples
    --------
    >>> from softpool_nd.cli.info import report
    >>> report().splitlines()[0].startswith("softpool_nd ")
    True
    """
    import softpool_nd

    width = max(len(name) for name, _ in _PACKAGES)
    lines = [
        f"softpool_nd {softpool_nd.__version__} ({os.path.dirname(softpool_nd.__file__)})",
        f"Python {platform.python_version()} ({sys.executable}) on {platform.system()} {platform.machine()}",
        "",
        "packages:",
    ]
    lines += [f"  {name:<{width}}  {_version(name, dists)}" for name, dists in _PACKAGES]
    lines += ["", "backends:", f"  {_cpu_line()}"]
    lines += [f"  {line}" for line in _gpu_lines()]
    lines += ["", "numba cache:", f"  {_numba_cache()}"]
    return "\n".join(lines)
