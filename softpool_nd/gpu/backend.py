"""GPU backend: cupy arrays in, our CUDA kernels run, cupy arrays out.

The module follows the backend interface of :mod:`softpool_nd._dispatch`.
Memory handling (layouts, output allocation, loop tables) lives in
:class:`Backend`, parameterised by a launcher and an array namespace, so the
tests run exactly this code with the host emulation and NumPy arrays. CuPy is
imported on first use only: without it, ``import softpool_nd`` and every CPU
call work, and the first cupy-only call raises an ImportError naming
``pip install softpool_nd[gpu]``.
"""

from __future__ import annotations

from .._loops import (
    element_strides,
    empty_like_layout,
    in_layout,
    into,
    layout_strides,
    loop_table,
    out_or_empty,
    same_layout,
    whole,
)
from .launch import launch_backward, launch_forward, launch_jvp

__all__ = ["Backend", "name", "xp", "forward", "backward", "jvp", "device_of", "bfloat16", "takes_out"]  # noqa: F822 (xp: __getattr__)

name = "gpu"

#: forward takes ``lse_out``, backward and jvp ``out``: the kernels write preallocated outputs (torch's, for
#: CUDA graph capture), so a call with every output given allocates nothing (see softpool_nd._dispatch).
takes_out = True


class Backend:
    """forward/backward over arrays of namespace ``xp`` with kernels run by ``launcher``."""

    def __init__(self, launcher, xp):
        self.launcher = launcher
        self.xp = xp

    def forward(self, x, geom, beta, acc_dtype, out=None, with_lse=True, lse_out=None):
        """Return (y, lse) for a float16/32/64 (or bfloat16) array ``x``; ``y`` is ``out`` and lse
        ``lse_out`` when given.

        With ``with_lse`` False, lse is neither computed nor allocated and None is returned for it.
        Outputs in the layout of the result (output shape ordered in memory like ``x``) are written
        by the kernel; others are filled by a copy. Everything happens on the device holding ``x``.
        """
        with self.launcher.device_of(x):
            return self._forward(x, geom, beta, acc_dtype, out, with_lse, lse_out)

    def _forward(self, x, geom, beta, acc_dtype, out, with_lse, lse_out):
        x = whole(x, self.xp)[0]
        ys = layout_strides(geom.out_shape, x.strides)
        y = self._target(out, ys, geom.out_shape, x.strides, x.dtype)
        lse = (
            self._target(lse_out, ys, geom.out_shape, x.strides, acc_dtype) if with_lse or lse_out is not None else None
        )
        tab = loop_table(geom, element_strides(x), ys)
        launch_forward(self.launcher, x, y, lse, tab, beta, acc_dtype)
        return into(out, y), into(lse_out, lse)

    def _target(self, out, strides, shape, like_strides, dtype):
        return out_or_empty(out, strides, shape, like_strides, dtype, self.xp)

    def backward(self, grad_y, x, y, lse, geom, beta, acc_dtype, exact, out=None):
        """Return grad_x for ``x``, on its device; grad_y, y and lse are output-shaped arrays.

        ``out`` (x's shape and dtype, any layout of whole-element strides) is written by the kernel.
        """
        with self.launcher.device_of(x):
            return self._backward(grad_y, x, y, lse, geom, beta, acc_dtype, exact, out)

    def _backward(self, grad_y, x, y, lse, geom, beta, acc_dtype, exact, out):
        x = whole(x, self.xp)[0]
        ys = layout_strides(geom.out_shape, x.strides)
        gy, y, lse = (in_layout(a, ys, x.strides, self.xp) for a in (grad_y, y, lse))
        # the kernel writes grad_x with strides of its own (column GS): any out with whole-element strides
        gx = (
            out
            if out is not None and element_strides(out) is not None
            else empty_like_layout(x.shape, x.strides, x.dtype, self.xp)
        )
        tab = loop_table(geom, element_strides(x), ys, element_strides(gx))
        launch_backward(self.launcher, gy, x, y, lse, gx, tab, beta, acc_dtype, exact, geom.overlapping)
        return into(out, gx)

    def jvp(self, dx, x, y, lse, geom, beta, acc_dtype, out=None):
        """Return dy, the derivative of y along ``dx`` (x-shaped), on x's device; y and lse output-shaped.

        ``out`` in the layout of the result is written by the kernel, any other is filled by a copy.
        """
        with self.launcher.device_of(x):
            return self._jvp(dx, x, y, lse, geom, beta, acc_dtype, out)

    def _jvp(self, dx, x, y, lse, geom, beta, acc_dtype, out):
        x = whole(x, self.xp)[0]
        if not same_layout(dx, element_strides(x)):
            # the kernel reads dx with x's offsets: give both one dense layout
            dense = layout_strides(x.shape, x.strides)
            x, dx = (in_layout(a, dense, x.strides, self.xp) for a in (x, dx))
        ys = layout_strides(geom.out_shape, x.strides)
        y, lse = (in_layout(a, ys, x.strides, self.xp) for a in (y, lse))
        dy = self._target(out, ys, geom.out_shape, x.strides, x.dtype)
        tab = loop_table(geom, element_strides(x), ys)
        launch_jvp(self.launcher, dx, x, y, lse, dy, tab, beta, acc_dtype)
        return into(out, dy)


_CUDA = None


def _cuda():
    global _CUDA
    if _CUDA is None:
        from .cuda import launcher, require_cupy

        xp = require_cupy()
        _CUDA = Backend(launcher(), xp)  # launcher() is one per process, built under a lock
    return _CUDA


def jvp(dx, x, y, lse, geom, beta, acc_dtype, out=None):
    """Backend interface: :meth:`Backend.jvp` on CuPy's current device and stream."""
    return _cuda().jvp(dx, x, y, lse, geom, beta, acc_dtype, out)


def device_of(x):
    """Backend interface: the context (a cupy.cuda.Device) in which all work on ``x`` happens."""
    return x.device


def bfloat16():
    """Backend interface: True when bfloat16 arrays run on the bfloat16 kernels (CuPy 14 with ml_dtypes)."""
    from .cuda import cupy_has_bfloat16

    return cupy_has_bfloat16()


def __getattr__(attr):
    # ``xp`` is cupy, imported only when asked for (PEP 562).
    if attr == "xp":
        from .cuda import require_cupy

        return require_cupy()
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def forward(x, geom, beta, acc_dtype, out=None, with_lse=True, lse_out=None):
    """Backend interface: :meth:`Backend.forward` on CuPy's current device and stream."""
    return _cuda().forward(x, geom, beta, acc_dtype, out, with_lse, lse_out)


def backward(grad_y, x, y, lse, geom, beta, acc_dtype, exact, out=None):
    """Backend interface: :meth:`Backend.backward` on CuPy's current device and stream."""
    return _cuda().backward(grad_y, x, y, lse, geom, beta, acc_dtype, exact, out)
