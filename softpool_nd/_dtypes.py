"""The dtype rule: which input dtypes SoftPool takes and the dtype it accumulates in.

One home for the rule of NUMERICS.md: float16, bfloat16 and float32 accumulate
in float32; float64, integer and bool inputs compute and accumulate in float64.
bfloat16 is ``ml_dtypes.bfloat16`` (what CuPy 14 and NumPy DLPack imports
give for a bfloat16 tensor); ml_dtypes stays optional and is imported only
when an array of an unknown (kind 'V') dtype arrives.
"""

from __future__ import annotations

import numpy as np

__all__ = ["bfloat16", "is_bfloat16", "compute_dtypes", "accumulation_dtype"]

_F32, _F64 = np.dtype(np.float32), np.dtype(np.float64)
_NATIVE = (np.dtype(np.float16), _F32, _F64)
_BF16: list[np.dtype | None] = []  # [dtype or None] once looked up


def bfloat16():
    """numpy dtype of ``ml_dtypes.bfloat16``, or None when ml_dtypes is not installed.

    Examples
    --------
    >>> from softpool_nd._dtypes import bfloat16
    >>> bfloat16() is None or bfloat16().itemsize == 2
    True
    """
    if not _BF16:
        try:
            import ml_dtypes
        except ImportError:
            _BF16.append(None)
        else:
            _BF16.append(np.dtype(ml_dtypes.bfloat16))
    return _BF16[0]


def is_bfloat16(dtype):
    """True for ml_dtypes' bfloat16 (without importing ml_dtypes for the usual dtypes)."""
    dtype = np.dtype(dtype)
    return dtype.kind == "V" and dtype == bfloat16()


def accumulation_dtype(dtype):
    """float64 for float64 inputs, float32 for float16, bfloat16 and float32 inputs."""
    return _F64 if np.dtype(dtype) == _F64 else _F32


def compute_dtypes(dtype, argname, shape):
    """(compute dtype, accumulation dtype) for an input dtype, as numpy.mean types it.

    float16, bfloat16, float32 and float64 keep their dtype; integer and bool
    inputs compute in float64. Anything else is a TypeError naming ``argname``,
    the dtype and the input's ``shape``.

    Examples
    --------
    >>> import numpy as np
    >>> compute_dtypes(np.dtype(np.float16), "x", (4,))
    (dtype('float16'), dtype('float32'))
    >>> compute_dtypes(np.dtype(np.int8), "x", (4,))
    (dtype('float64'), dtype('float64'))
    """
    try:
        dt = np.dtype(dtype)
    except TypeError:  # a framework's dtype NumPy lacks (torch's float8 types): refused by its own name
        dt = None
    if dt is not None and dt.kind == "f":
        # non-native byte order (FITS, HDF5, netCDF files) computes in native order, as numpy ufuncs do
        dt = dt.newbyteorder("=")
    if dt is not None and dt.kind in "biu":
        dt = _F64
    elif dt is None or not (dt in _NATIVE or is_bfloat16(dt)):
        raise TypeError(
            f"{argname} has dtype {dtype if dt is None else dt} (input shape {tuple(shape)}); SoftPool takes "
            f"float16, bfloat16, float32, float64, integer or bool arrays"
        )
    return dt, accumulation_dtype(dt)
