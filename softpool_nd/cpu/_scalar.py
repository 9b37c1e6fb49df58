"""Scalar helpers shared by the numba kernels: the accumulation type and
half-precision loads and stores.

numba has no float16 arrays, so half-precision data travels as uint16 and is
widened to float32 with LLVM's own ``fpext`` (a single vcvtph2ps on x86 with
F16C), which vectorises where a bit-twiddling conversion would not.

Kernels receive ``beta`` already converted to the accumulation type
(float32 for half and single precision, float64 otherwise); ``acc(v, beta)``
casts any value to that type, so that no float64 literal silently promotes
single-precision arithmetic.
"""
import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload


@intrinsic
def _half_to_float(typingctx, h):
    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(types.uint16), codegen


@intrinsic
def _float_to_half(typingctx, f):
    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))

    return types.uint16(types.float32), codegen


def acc(v, beta):
    """``v`` (a stored element or a constant) in the type of ``beta``."""


@overload(acc, inline="always")
def _acc(v, beta):
    if v == types.uint16:
        return lambda v, beta: _half_to_float(v)
    if beta == types.float32:
        return lambda v, beta: np.float32(v)
    return lambda v, beta: np.float64(v)


def store(v, out):
    """Accumulator ``v`` converted for storing into array ``out``."""


@overload(store, inline="always")
def _store(v, out):
    if out.dtype == types.uint16:
        return lambda v, out: _float_to_half(np.float32(v))
    return lambda v, out: v
