"""The public functions: check arguments, build the geometry, call a backend."""

from __future__ import annotations

import contextlib
import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from . import _interop
from ._dispatch import backend_for
from ._dtypes import compute_dtypes, is_bfloat16
from ._geometry import IntOrTuple, Padding, make_geometry
from ._loops import into

__all__ = ["pool", "forward", "backward", "jvp", "output_shape"]

#: An array softpool_nd pools: NumPy, CuPy, Dask, or any array exporting DLPack (torch, JAX), returned in its type.
Array = Any


def _shape_of(x, argname):
    shape = getattr(x, "shape", None)
    if shape is None or not hasattr(x, "dtype"):
        raise TypeError(
            f"{argname} of type {type(x).__qualname__} is not an array; convert it first, e.g. numpy.asarray({argname})"
        )
    shape = tuple(shape)
    if isinstance(x, np.ma.MaskedArray):
        # a masked cell would have to leave its windows like padding: a kernel of its own
        raise TypeError(
            f"{argname} is a numpy masked array (shape {shape}); SoftPool does not take masks. Pass "
            f"{argname}.filled(value) or numpy.ma.getdata({argname}) to pool its values regardless of the mask"
        )
    if any(n != n for n in shape):
        raise ValueError(f"{argname} has unknown dimensions {shape}; call {argname}.compute_chunk_sizes() first")
    return shape


def _float_dtype(x, argname):
    """(compute dtype, accumulation dtype) for an input dtype: the rule of :mod:`softpool_nd._dtypes`."""
    return compute_dtypes(x.dtype, argname, x.shape)


def _device(backend, x):
    """Context for every step of a call that touches device memory: the device holding ``x``."""
    enter = getattr(backend, "device_of", None)
    return contextlib.nullcontext() if enter is None else enter(x)


def _work_dtype(backend, dtype):
    """float32 for bfloat16 on a backend without bfloat16 kernels, else ``dtype`` itself."""
    if is_bfloat16(dtype) and not getattr(backend, "bfloat16", lambda: False)():
        return np.dtype(np.float32)
    return dtype


def _check_beta(beta, shape, acc_dtype=np.float64):
    """``beta`` as a float, if the accumulation dtype can represent it: finite and
    ``|beta| <= finfo(acc_dtype).max`` (the one home of this rule; the adapters
    call it too). Otherwise a ValueError naming beta, the dtype and the shape.
    """
    if type(beta) is float and math.isfinite(beta) and (acc_dtype == np.float64 or abs(beta) <= _F32_MAX):
        return beta
    if not isinstance(beta, numbers.Real) or isinstance(beta, (bool, np.bool_)):
        raise TypeError(f"beta={beta!r} must be a real number (input shape {shape})")
    try:
        value = float(beta)
    except OverflowError:  # an int beyond float64
        value = math.inf
    big = float(np.finfo(acc_dtype).max)
    if not math.isfinite(value) or abs(value) > big:
        raise ValueError(
            f"beta={beta!r} must be finite and at most {big:.7g} in magnitude, the largest {np.dtype(acc_dtype).name} "
            f"(the accumulation dtype of this input; input shape {shape})"
        )
    return value


_F32_MAX = float(np.finfo(np.float32).max)


def _check_gradient(gradient, shape):
    """ValueError unless ``gradient`` is 'exact' or 'weights' (the one home of this check; the adapters call it)."""
    if gradient not in ("exact", "weights"):
        raise ValueError(f"gradient={gradient!r} must be 'exact' or 'weights' (input shape {shape})")


def _prepare(x, kernel, stride, padding, dilation, ceil_mode, axes, beta, argname="x"):
    shape = _shape_of(x, argname)
    backend = backend_for(x, argname)
    geom = make_geometry(shape, kernel, stride, padding, dilation, ceil_mode, axes)
    dtype, acc_dtype = _float_dtype(x, argname)
    beta = _check_beta(beta, shape, acc_dtype)
    return x, geom, dtype, acc_dtype, beta, backend


def _as(a, dtype):
    """``a`` in ``dtype``, copied only when it differs (call inside :func:`_device`)."""
    return a if a.dtype == dtype else a.astype(dtype)


def _output_like(name, a, shape, dtype, backend, in_shape, what="the pooled output"):
    """Check an output-shaped array (grad_y, y, lse), or ``what`` else has ``shape``, and bring it to ``dtype``."""
    got = _shape_of(a, name)
    if got != tuple(shape):
        raise ValueError(f"{name} has shape {got} but {what} has shape {tuple(shape)} (input shape {in_shape})")
    if backend_for(a, name) is not backend:
        raise TypeError(
            f"{name} is a {type(a).__qualname__} but x is handled by the {backend.name} backend "
            f"(input shape {in_shape})"
        )
    _float_dtype(a, name)
    return _as(a, dtype)


def _check_out(name, a, shape, dtype, backend, x, in_shape, what="the result"):
    """Check a preallocated output: ``shape``, exactly ``dtype`` (any byte order), x's backend, writeable."""
    got = _shape_of(a, name)
    if backend_for(a, name) is not backend:
        raise TypeError(
            f"{name} is a {type(a).__qualname__} but x is a {type(x).__qualname__} (input shape {in_shape})"
        )
    if got != tuple(shape) or np.dtype(a.dtype).newbyteorder("=") != dtype:
        raise ValueError(
            f"{name} has shape {got} and dtype {a.dtype} but {what} has shape {tuple(shape)} "
            f"and dtype {dtype} (input shape {in_shape})"
        )
    flags = getattr(a, "flags", None)
    if flags is not None and not getattr(flags, "writeable", True):
        raise ValueError(f"{name} is read-only (input shape {in_shape})")


def _direct(out, dtype, backend, *inputs):
    """True when the backend may write ``out`` itself: native byte order and no memory shared with any of the
    ``inputs`` (x, and grad_y or dx, y and lse: the kernels read them while they write ``out``, and the CPU
    kernels tell LLVM that they never overlap, see ``cpu._walk.scoped_load``)."""
    return out is not None and out.dtype == dtype and not any(_may_overlap(out, a, backend) for a in inputs)


def output_shape(
    shape: Sequence[int],
    kernel: IntOrTuple = 2,
    stride: IntOrTuple | None = None,
    padding: Padding = 0,
    *,
    dilation: IntOrTuple = 1,
    ceil_mode: bool = False,
    axes: IntOrTuple | None = None,
) -> tuple[int, ...]:
    """Shape of the pooled output for an input of ``shape``, without computing it.

    Parameters are those of :func:`pool`.

    Returns
    -------
    tuple of int

    Examples
    --------
    >>> import softpool_nd
    >>> softpool_nd.output_shape((8, 3, 32, 32), kernel=3, stride=2, padding=1)
    (8, 3, 16, 16)
    >>> softpool_nd.output_shape((10, 7), kernel=(2, 3), ceil_mode=True)
    (5, 3)
    """
    return make_geometry(shape, kernel, stride, padding, dilation, ceil_mode, axes).out_shape


def forward(
    x: Array,
    kernel: IntOrTuple = 2,
    stride: IntOrTuple | None = None,
    padding: Padding = 0,
    *,
    dilation: IntOrTuple = 1,
    ceil_mode: bool = False,
    axes: IntOrTuple | None = None,
    beta: float = 1.0,
    out: tuple[Array, Array] | None = None,
) -> tuple[Array, Array]:
    """SoftPool and the log-sum-exp of every window, for a later :func:`backward`.

    Parameters are those of :func:`pool`, except ``out``: a pair ``(y, lse)``
    of preallocated arrays (output shape; x's result dtype and the
    accumulation dtype), which are filled and returned. With CuPy arrays (and
    torch CUDA tensors) in the layout the result would have, the kernels write
    them directly and the call allocates nothing.

    Returns
    -------
    y : array
        The pooled array, as :func:`pool` returns it.
    lse : array
        ``log(sum(exp(beta * x_i)))`` over the real cells of each window, shaped
        like ``y``, in the accumulation dtype (float32 for float16 and float32
        inputs, float64 otherwise).

    Examples
    --------
    >>> import numpy as np, softpool_nd
    >>> y, lse = softpool_nd.forward(np.array([0.0, 1.0, 2.0, 2.0]), kernel=2)
    >>> np.round(y, 4), np.round(lse, 4)
    (array([0.7311, 2.    ]), array([1.3133, 2.6931]))
    """
    y_out, lse_out = (None, None) if out is None else out
    (x, y_out, lse_out), to_caller = _interop.native(x, y_out, lse_out, names=("x", "out[0]", "out[1]"))
    x, geom, dtype, acc_dtype, beta, backend = _prepare(x, kernel, stride, padding, dilation, ceil_mode, axes, beta)
    with _device(backend, x):
        if out is None:
            return to_caller(_forward(x, geom, dtype, acc_dtype, beta, backend, None))
        _check_out("out[0]", y_out, geom.out_shape, dtype, backend, x, geom.in_shape)
        _check_out("out[1]", lse_out, geom.out_shape, acc_dtype, backend, x, geom.in_shape, what="lse")
        if _shares_memory(y_out, lse_out, backend):
            # no order of writes leaves both results in memory they share
            raise ValueError(f"out[0] and out[1] share memory (input shape {geom.in_shape})")
        direct = _direct(y_out, dtype, backend, x) and _direct(lse_out, acc_dtype, backend, x)
        y, lse = _forward(
            x, geom, dtype, acc_dtype, beta, backend, y_out if direct else None, lse_out=lse_out if direct else None
        )
        return to_caller((into(y_out, y), into(lse_out, lse)))


def _forward(x, geom, dtype, acc_dtype, beta, backend, out, with_lse=True, lse_out=None):
    """Backend forward (call inside :func:`_device`); bfloat16 via float32 where the backend needs it.

    ``lse_out`` goes to a backend that writes outputs itself (``takes_out``), else lse is copied into it.
    """
    if math.prod(geom.out_shape) == 0:
        y = backend.xp.empty(geom.out_shape, dtype=dtype) if out is None else out
        if lse_out is not None:
            return y, lse_out
        return y, backend.xp.empty(geom.out_shape, dtype=acc_dtype) if with_lse else None
    work = _work_dtype(backend, dtype)
    if work == dtype:
        kw = _out_kw(backend, lse_out=lse_out)
        y, lse = backend.forward(_as(x, dtype), geom, beta, acc_dtype, out, with_lse=with_lse, **kw)
        return y, into(lse_out, lse)
    y, lse = backend.forward(_as(x, work), geom, beta, acc_dtype, None, with_lse=with_lse)
    lse = into(lse_out, lse)
    if out is None:
        return y.astype(dtype), lse
    out[...] = y
    return out, lse


def _out_kw(backend, **outputs):
    """The given outputs as keyword arguments for a backend that writes them itself (``takes_out``), else none."""
    if not getattr(backend, "takes_out", False):
        return {}
    return {k: v for k, v in outputs.items() if v is not None}


def pool(
    x: Array,
    kernel: IntOrTuple = 2,
    stride: IntOrTuple | None = None,
    padding: Padding = 0,
    *,
    dilation: IntOrTuple = 1,
    ceil_mode: bool = False,
    axes: IntOrTuple | None = None,
    beta: float = 1.0,
    out: Array | None = None,
) -> Array:
    """SoftPool: reduce every pooling window to the softmax-weighted mean of its values.

    For a window W of real (non-padding) cells, ``w_i = exp(beta*x_i) / sum_W exp(beta*x_j)``
    and ``y = sum_W w_i * x_i``. ``beta=1`` is the paper's SoftPool, ``beta=0`` the
    mean, large ``beta`` approaches max pooling and negative ``beta`` a soft minimum.

    Parameters
    ----------
    x : numpy.ndarray, cupy.ndarray, dask.array.Array or any DLPack array
        Input of any rank >= 1 and any memory layout. A dask array gives a lazy
        dask result (see :mod:`softpool_nd.dask.backend` for how chunks are
        aligned); torch, JAX and other ``__dlpack__`` arrays come back in their
        own framework. float16, float32 and float64
        keep their dtype (float16 accumulates in float32); integer and bool
        inputs give float64.
    kernel : int or tuple of int, default 2
        Window size, one int for every pooled axis or one per pooled axis.
    stride : int or tuple of int, optional
        Step between windows; defaults to ``kernel``.
    padding : int, tuple, 'valid' or 'same', default 0
        Implicit padding per pooled axis: an int, a tuple of ints, a tuple of
        ``(before, after)`` pairs, ``'valid'`` (none) or ``'same'``
        (``out = ceil(L / stride)``, the odd cell after). Padded cells never take
        part in a window.
    dilation : int or tuple of int, default 1
        Spacing between the cells of a window.
    ceil_mode : bool, default False
        Round the output length up, as in PyTorch: a last window that would
        start inside the right padding is dropped.
    axes : int or tuple of int, optional
        Pooled axes. By default a tuple ``kernel`` pools the trailing
        ``len(kernel)`` axes; an int ``kernel`` pools every axis from the third
        on (batch and channel lead), or every axis of a 1-d or 2-d input.
    beta : float, default 1.0
        Inverse temperature: any finite value the accumulation dtype holds
        (``|beta| <= 3.4e38`` for float16 and float32 inputs, which accumulate
        in float32). Every such beta follows the limit of the formula: no
        overflow of ``beta * x``, and ``beta=0`` is the plain mean.
    out : array, optional
        Preallocated result of the output shape and result dtype.

    Returns
    -------
    array
        Pooled array of shape :func:`output_shape` of ``x.shape``, on the
        input's device.

    Raises
    ------
    TypeError
        For a non-array input, an unsupported dtype or a wrongly typed argument.
    ValueError
        For an out-of-range argument, a window made only of padding or an empty output.

    Examples
    --------
    >>> import numpy as np, softpool_nd
    >>> x = np.array([[0.0, 1.0, 4.0, 4.0],
    ...               [1.0, 0.0, 4.0, 4.0]])
    >>> softpool_nd.pool(x, kernel=2)
    array([[0.73105858, 4.        ]])
    >>> softpool_nd.pool(x, kernel=2, beta=0.0)
    array([[0.5, 4. ]])
    """
    (x, out), to_caller = _interop.native(x, out, names=("x", "out"))
    x, geom, dtype, acc_dtype, beta, backend = _prepare(x, kernel, stride, padding, dilation, ceil_mode, axes, beta)
    if out is not None:
        _check_out("out", out, geom.out_shape, dtype, backend, x, geom.in_shape)
    with _device(backend, x):
        if out is not None and (out.dtype != dtype or _may_overlap(out, x, backend)):
            # as numpy ufuncs do: compute as if x had been copied first (or into native byte order), then copy
            out[...] = _forward(x, geom, dtype, acc_dtype, beta, backend, None, with_lse=False)[0]
            return to_caller(out)
        return to_caller(_forward(x, geom, dtype, acc_dtype, beta, backend, out, with_lse=False)[0])


def _may_overlap(out, x, backend):
    """True when ``out`` may share memory with ``x``: bounds only, so a false alarm costs a copy, never a wrong result.

    numpy and cupy have ``may_share_memory``; dask (no such function) builds a new graph and never aliases.
    """
    may_share_memory = getattr(backend.xp, "may_share_memory", None)
    return may_share_memory is not None and bool(may_share_memory(out, x))


def _shares_memory(a, b, backend):
    """True when ``a`` and ``b`` have an element in common (exactly: interleaved views of one buffer do not)."""
    if not _may_overlap(a, b, backend):
        return False
    shares_memory = getattr(backend.xp, "shares_memory", None)
    return shares_memory is None or bool(shares_memory(a, b))


def backward(
    grad_y: Array,
    x: Array,
    kernel: IntOrTuple = 2,
    stride: IntOrTuple | None = None,
    padding: Padding = 0,
    *,
    y: Array | None = None,
    lse: Array | None = None,
    dilation: IntOrTuple = 1,
    ceil_mode: bool = False,
    axes: IntOrTuple | None = None,
    beta: float = 1.0,
    gradient: str = "exact",
    out: Array | None = None,
) -> Array:
    """Gradient of a scalar loss with respect to ``x``, given its gradient w.r.t. the pooled output.

    Parameters
    ----------
    grad_y : array
        Gradient with respect to ``pool(x, ...)``; must have the output shape.
    x : array
        The input of the forward pass.
    kernel, stride, padding, dilation, ceil_mode, axes, beta
        As given to :func:`forward`.
    y, lse : array, optional
        The outputs of :func:`forward`. When both are given they are used as
        they are; otherwise they are recomputed.
    gradient : {'exact', 'weights'}, default 'exact'
        ``'exact'`` is the true vector-Jacobian product
        ``sum_W grad_y_W * w_Wj * (1 + beta * (x_j - y_W))``. ``'weights'`` is
        ``sum_W grad_y_W * w_Wj``, the rule of the paper's reference CUDA code,
        which treats the weights as constants.
    out : array, optional
        Preallocated ``grad_x`` (x's shape and result dtype), filled and
        returned; with CuPy arrays (and torch CUDA tensors) the kernel writes
        it directly, in any layout.

    Returns
    -------
    array
        ``grad_x`` with the shape and dtype of ``x`` (float64 for integer ``x``).
        Cells that belong to no window get 0.

    Examples
    --------
    >>> import numpy as np, softpool_nd
    >>> x = np.array([0.0, 1.0, 2.0, 2.0])
    >>> y, lse = softpool_nd.forward(x, kernel=2)
    >>> np.round(softpool_nd.backward(np.ones(2), x, kernel=2, y=y, lse=lse), 4)
    array([0.0723, 0.9277, 0.5   , 0.5   ])
    """
    params = (kernel, stride, padding, dilation, ceil_mode, axes, beta)
    return _linearized("backward", grad_y, x, y, lse, out, params, gradient)


def _linearized(direction, v, x, y, lse, out, params, gradient=None):
    """:func:`backward` (``v`` is grad_y) or :func:`jvp` (``v`` is dx): the checks, conversions and
    outputs both share, around the backend's ``direction`` method.

    ``params`` are (kernel, stride, padding, dilation, ceil_mode, axes, beta); ``gradient`` is backward's.
    """
    if direction == "backward":
        v_name, v_space, result_space = "grad_y", "the pooled output", "x"
    else:
        v_name, v_space, result_space = "dx", "x", "the result"
    (x, v, y, lse, out), to_caller = _interop.native(x, v, y, lse, out, names=("x", v_name, "y", "lse", "out"))
    x, geom, dtype, acc_dtype, beta, backend = _prepare(x, *params)
    if direction == "backward":
        _check_gradient(gradient, geom.in_shape)
        v_shape, result_shape = geom.out_shape, geom.in_shape
    else:
        v_shape, result_shape = geom.in_shape, geom.out_shape
    with _device(backend, x):
        v = _output_like(v_name, v, v_shape, dtype, backend, geom.in_shape, what=v_space)
        if out is not None:
            _check_out("out", out, result_shape, dtype, backend, x, geom.in_shape, what=result_space)
        if math.prod(result_shape) == 0:
            return to_caller(into(out, backend.xp.zeros(result_shape, dtype=dtype)))
        y, lse = _given_or_forward(x, y, lse, geom, dtype, acc_dtype, beta, backend)
        work = _work_dtype(backend, dtype)
        direct = work == dtype and _direct(out, dtype, backend, x, v, y, lse)
        args = (_as(v, work), _as(x, work), _as(y, work), lse, geom, beta, acc_dtype)
        kw = _out_kw(backend, out=out if direct else None)
        if direction == "backward":
            result = backend.backward(*args, gradient == "exact", **kw)
        else:
            result = backend.jvp(*args, **kw)
        return to_caller(into(out, _as(result, dtype)))


def _given_or_forward(x, y, lse, geom, dtype, acc_dtype, beta, backend):
    """(y, lse) as given, checked and converted, when both are; else recomputed by the forward pass."""
    if y is None or lse is None:
        return _forward(x, geom, dtype, acc_dtype, beta, backend, None)
    y = _output_like("y", y, geom.out_shape, dtype, backend, geom.in_shape)
    return y, _output_like("lse", lse, geom.out_shape, acc_dtype, backend, geom.in_shape)


def jvp(
    x: Array,
    dx: Array,
    kernel: IntOrTuple = 2,
    stride: IntOrTuple | None = None,
    padding: Padding = 0,
    *,
    y: Array | None = None,
    lse: Array | None = None,
    dilation: IntOrTuple = 1,
    ceil_mode: bool = False,
    axes: IntOrTuple | None = None,
    beta: float = 1.0,
    out: Array | None = None,
) -> Array:
    """Forward-mode derivative: the change of ``pool(x, ...)`` along a tangent ``dx`` of ``x``.

    For every window W, ``dy_W = sum_W w_i * (1 + beta * (x_i - y_W)) * dx_i``
    with ``w_i = exp(beta * x_i - lse_W)``: the Jacobian-vector product, the
    transpose of :func:`backward` (``sum(jvp(x, dx) * g) == sum(dx * backward(g, x))``).
    One pass over x and dx, deterministic (every window is summed by one
    thread in a fixed order). ``beta=0`` gives the mean of ``dx`` over each
    window; windows where ``beta * x`` or lse overflowed are weighted as the
    forward pass weighs them, so finite input never gives NaN.

    Parameters
    ----------
    x : array
        The input of the forward pass.
    dx : array
        Tangent of ``x``: same shape and backend, any real dtype (converted
        to x's result dtype), any memory layout.
    kernel, stride, padding, dilation, ceil_mode, axes, beta
        As given to :func:`forward`.
    y, lse : array, optional
        The outputs of :func:`forward`. When both are given they are used as
        they are; otherwise they are recomputed.
    out : array, optional
        Preallocated ``dy`` (output shape, x's result dtype), filled and
        returned; with CuPy arrays (and torch CUDA tensors) laid out like
        ``y`` the kernel writes it directly.

    Returns
    -------
    array
        ``dy`` with the output shape, in x's result dtype (float64 for integer
        ``x``; float16 accumulates in float32), laid out like ``y``.

    Examples
    --------
    >>> import numpy as np, softpool_nd
    >>> x = np.array([0.0, 1.0, 2.0, 2.0])
    >>> np.round(softpool_nd.jvp(x, np.array([1.0, 0.0, 1.0, -1.0]), kernel=2), 4)
    array([0.0723, 0.    ])
    >>> y, lse = softpool_nd.forward(x, kernel=2)
    >>> np.round(softpool_nd.jvp(x, np.ones(4), kernel=2, y=y, lse=lse), 4)
    array([1., 1.])
    """
    return _linearized("jvp", dx, x, y, lse, out, (kernel, stride, padding, dilation, ceil_mode, axes, beta))
