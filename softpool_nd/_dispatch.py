"""Pick the backend for an array by the package its type comes from.

As in einops, a backend is a module found by the array's type and imported
only when such an array is first seen, so that importing softpool_nd stays
cheap and optional frameworks stay optional.

Every backend module provides ``name``, ``xp`` (its array namespace) and::

    forward(x, geom, beta, acc_dtype, out=None, with_lse=True) -> (y, lse or None)
    backward(grad_y, x, y, lse, geom, beta, acc_dtype, exact) -> grad_x
    jvp(dx, x, y, lse, geom, beta, acc_dtype) -> dy

with arguments already checked and converted by ``softpool_nd._api``: ``x`` is
float16/32/64, ``beta`` a Python float, ``geom`` a Geometry with a non-empty
output, ``grad_y``/``y`` in x's dtype and ``lse`` in ``acc_dtype``; ``dx`` (the tangent
of ``x``) in x's dtype and shape, any layout. ``jvp`` returns ``dy`` in x's dtype,
of the output shape: ``sum_W w_i (1 + beta (x_i - y_W)) dx_i`` per window, with
the numeric rules of ``softpool_nd.cpu.jvp``. With ``with_lse``
False (what :func:`softpool_nd.pool` asks for) ``forward`` neither computes nor
allocates lse and returns None in its place. Two optional members:
``device_of(x)``, a context manager making x's device current (``_api`` does
every conversion and allocation of a call inside it), and ``bfloat16()``,
True when the backend computes bfloat16 arrays itself (otherwise ``_api``
hands it float32 copies and casts the results back). A backend with
``takes_out = True`` writes preallocated outputs itself: ``forward`` then also
takes ``lse_out=``, ``backward`` and ``jvp`` take ``out=`` (the CPU and GPU
backends: a call with its outputs given neither allocates nor copies, and a
torch CUDA call allocates nothing); for others ``_api`` copies into them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Protocol, cast

import numpy as np

if TYPE_CHECKING:
    from ._geometry import Geometry

__all__ = ["Backend", "backend_for", "register"]


class Backend(Protocol):
    """The interface above, as a type: each backend module satisfies it (``device_of`` and ``bfloat16`` are
    optional, looked up with getattr)."""

    name: str
    xp: Any

    def forward(
        self, x: Any, geom: Geometry, beta: float, acc_dtype: np.dtype, out: Any = None, with_lse: bool = True
    ) -> tuple[Any, Any | None]: ...

    def backward(
        self, grad_y: Any, x: Any, y: Any, lse: Any, geom: Geometry, beta: float, acc_dtype: np.dtype, exact: bool
    ) -> Any: ...

    def jvp(self, dx: Any, x: Any, y: Any, lse: Any, geom: Geometry, beta: float, acc_dtype: np.dtype) -> Any: ...


# top-level package of the array type -> module implementing forward/backward
_BACKENDS = {
    "numpy": "softpool_nd.cpu.backend",
    "cupy": "softpool_nd.gpu.backend",
    "dask": "softpool_nd.dask.backend",
}


# package -> its imported backend module (every call looks it up)
_LOADED: dict[str, Backend] = {}


def register(package: str, module: str) -> None:
    """Route arrays whose type is defined in ``package`` to backend ``module``."""
    _BACKENDS[package] = module
    _LOADED.pop(package, None)


def _backend(package: str) -> Backend:
    module = _LOADED.get(package)
    if module is None:
        module = _LOADED[package] = cast(Backend, importlib.import_module(_BACKENDS[package]))
    return module


def backend_for(x: Any, argname: str = "x") -> Backend:
    """The backend module for array ``x``; TypeError for anything else."""
    if isinstance(x, np.ndarray):
        return _backend("numpy")
    package = type(x).__module__.split(".")[0]
    if package in _BACKENDS:
        return _backend(package)
    shape = getattr(x, "shape", None)
    where = f" (input shape {tuple(shape)})" if shape is not None else ""
    raise TypeError(
        f"{argname} of type {type(x).__module__}.{type(x).__qualname__}{where} is not an array softpool_nd "
        f"can pool; pass a numpy.ndarray (numpy.asarray({argname}) converts lists) or a cupy.ndarray"
    )
