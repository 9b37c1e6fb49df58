"""Scalar helpers shared by the numba kernels: the accumulation type,
half-precision loads and stores, and an exponential that vectorises.

numba has no float16 arrays, so half-precision data travels as uint16 and is
widened to float32 with LLVM's own ``fpext`` (a single vcvtph2ps on x86 with
F16C), which vectorises where a bit-twiddling conversion would not.

Kernels receive ``beta`` already converted to the accumulation type
(float32 for half and single precision, float64 otherwise); ``acc(v, beta)``
casts any value to that type, so that no float64 literal silently promotes
single-precision arithmetic.

``exp_le0`` replaces ``np.exp`` inside the kernels: libm's ``exp`` is an
opaque call that stops LLVM from vectorising a loop, while a polynomial in
plain arithmetic becomes SIMD code. It is written for the arguments SoftPool
feeds it, ``z - max`` (never positive, or NaN), and is accurate to about one
ulp over that whole range, subnormal results and the underflow to 0 included.
``log_ge1`` does the same for ``np.log`` on what SoftPool takes the logarithm
of, a window's weight sum (at least 1, as the maximum's weight is 1): the
lse of a row of windows is then one SIMD loop instead of a libm call per
window, which made ``forward()`` cost up to twice ``pool()``.
"""

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from ._compile import _HELPER_OPTIONS, _jit


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


@intrinsic
def _bits(typingctx, f):
    """The IEEE bit pattern of a float32/float64 as int64 (sign-extended for float32)."""
    width = f.bitwidth

    def codegen(context, builder, signature, args):
        i = builder.bitcast(args[0], ir.IntType(width))
        return i if width == 64 else builder.sext(i, ir.IntType(64))

    return types.int64(f), codegen


@intrinsic
def _float_from_bits(typingctx, i, like):
    """The float of ``like``'s type whose bit pattern is the low bits of int64 ``i``."""
    width = like.bitwidth
    flt = ir.DoubleType() if width == 64 else ir.FloatType()

    def codegen(context, builder, signature, args):
        v = args[0] if width == 64 else builder.trunc(args[0], ir.IntType(32))
        return builder.bitcast(v, flt)

    return like(types.int64, like), codegen


@intrinsic
def mul_nc(typingctx, a, b):
    """``a * b`` that LLVM may not contract into an fma with the addition it feeds.

    The kernels run with fastmath's ``contract``: a product feeding a sum
    becomes one fma, rounded once, wherever LLVM sees the pair. A path that
    must give the same bits as another path, where a select (a mask) stands
    between the same product and sum and keeps them apart, takes its product
    from here: an fmul without the contract flag. (It carries ``arcp``, which
    means nothing to a product, because numba's fastmath pass gives every
    float operation without flags the kernels' ones, contract included.)
    """

    def codegen(context, builder, signature, args):
        return builder.fmul(args[0], args[1], flags=("arcp",))

    return a(a, b), codegen


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


@_jit
def _exp_f32(d):
    # Cephes expf: d = n ln2 + r, |r| <= ln2/2, e^r by a degree-7 polynomial.
    # Below -104 every result rounds to 0; the comparison keeps NaN as NaN.
    d = np.float32(-104.0) if d < np.float32(-104.0) else d
    # Adding 1.5 * 2**23 rounds d / ln2 to the integer n held in the low mantissa
    # bits, without a float-to-int conversion (undefined for NaN in LLVM).
    k = d * np.float32(1.4426950408889634) + np.float32(12582912.0)
    n = k - np.float32(12582912.0)
    r = d - n * np.float32(0.693359375)
    r = r + n * np.float32(2.12194440e-4)
    p = np.float32(1.9875691500e-4)
    p = p * r + np.float32(1.3981999507e-3)
    p = p * r + np.float32(8.3334519073e-3)
    p = p * r + np.float32(4.1665795894e-2)
    p = p * r + np.float32(1.6666665459e-1)
    p = p * r + np.float32(5.0000001201e-1)
    p = p * (r * r) + r + np.float32(1.0)
    # p * 2**(n + 64) is exact and normal for n >= -150; the final * 2**-64 is
    # the one rounding, so subnormal results are correctly scaled.
    scale = _float_from_bits((_bits(k) + 191) << 23, d)
    return p * scale * np.float32(5.421010862427522e-20)


@_jit
def _exp_f64(d):
    # Same scheme in double: Cody-Waite reduction, Taylor polynomial of degree 13
    # (truncation error below 1e-17 for |r| <= ln2/2), exponent via the bits.
    d = -746.0 if d < -746.0 else d
    k = d * 1.4426950408889634 + 6755399441055744.0
    n = k - 6755399441055744.0
    r = d - n * 6.93145751953125e-1
    r = r - n * 1.42860682030941723212e-6
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * (r * r) + r + 1.0
    scale = _float_from_bits((_bits(k) + 1087) << 52, d)
    return p * scale * 5.421010862427522e-20


def exp_le0(d):
    """``exp(d)`` for ``d <= 0`` or NaN, as SIMD-friendly arithmetic."""


@overload(exp_le0, jit_options=_HELPER_OPTIONS)
def _exp_le0(d):
    if d == types.float32:
        return lambda d: _exp_f32(d)
    return lambda d: _exp_f64(d)


@intrinsic
def _split_f32(typingctx, s):
    """(n, f) with s = 2**n * f, f in [sqrt(1/2), sqrt(2)) and n a float32, for a normal s > 0.

    Integer arithmetic on the bits in int32, not numba's int64: a SIMD lane
    per value instead of sign extensions, 64-bit shifts and conversions on
    two registers' halves (the lse loop is one ``_log_f32`` per window). For
    s >= 1, inf and NaN (all it is given) the values equal the int64 ones.
    """

    def codegen(context, builder, signature, args):
        i32 = ir.IntType(32)
        # the bits of sqrt(1/2): n counts from there
        b = builder.sub(builder.bitcast(args[0], i32), ir.Constant(i32, 0x3F3504F3))
        n = builder.sitofp(builder.ashr(b, ir.Constant(i32, 23)), ir.FloatType())
        low = builder.and_(b, ir.Constant(i32, 0x7FFFFF))
        f = builder.bitcast(builder.add(low, ir.Constant(i32, 0x3F3504F3)), ir.FloatType())
        return context.make_tuple(builder, signature.return_type, (n, f))

    return types.UniTuple(types.float32, 2)(types.float32), codegen


@_jit
def _log_f32(s):
    # s = 2**n * f with f in [sqrt(1/2), sqrt(2)), from the bits (s is normal:
    # s >= 1); log f = 2 atanh(u), u = (f - 1) / (f + 1), |u| <= 0.172, by its
    # odd series to u**11 (truncation below 4e-10 relative).
    n, f = _split_f32(s)
    u = (f - np.float32(1.0)) / (f + np.float32(1.0))
    u2 = u * u
    p = np.float32(2.0 / 11.0)
    p = p * u2 + np.float32(2.0 / 9.0)
    p = p * u2 + np.float32(2.0 / 7.0)
    p = p * u2 + np.float32(2.0 / 5.0)
    p = p * u2 + np.float32(2.0 / 3.0)
    r = n * np.float32(0.693359375) + (u * u2 * p + np.float32(2.0) * u)
    r = r + n * np.float32(-2.12194440e-4)
    # infinities and NaN (and, never given, s < 1) as np.log has them
    return r if s < np.float32(np.inf) else s


@_jit
def _log_f64(s):
    # The same in double: the series to u**23 (truncation below 2e-18).
    b = _bits(s) - 0x3FE6A09E667F3BCD
    n = b >> 52
    f = _float_from_bits((b & 0xFFFFFFFFFFFFF) + 0x3FE6A09E667F3BCD, s)
    u = (f - 1.0) / (f + 1.0)
    u2 = u * u
    p = 2.0 / 23.0
    p = p * u2 + 2.0 / 21.0
    p = p * u2 + 2.0 / 19.0
    p = p * u2 + 2.0 / 17.0
    p = p * u2 + 2.0 / 15.0
    p = p * u2 + 2.0 / 13.0
    p = p * u2 + 2.0 / 11.0
    p = p * u2 + 2.0 / 9.0
    p = p * u2 + 2.0 / 7.0
    p = p * u2 + 2.0 / 5.0
    p = p * u2 + 2.0 / 3.0
    r = n * 6.93145751953125e-1 + (u * u2 * p + 2.0 * u)
    r = r + n * 1.42860682030941723212e-6
    return r if s < np.inf else s


def log_ge1(s):
    """``log(s)`` for ``s >= 1``, inf or NaN, as SIMD-friendly arithmetic."""


@overload(log_ge1, jit_options=_HELPER_OPTIONS)
def _log_ge1(s):
    if s == types.float32:
        return lambda s: _log_f32(s)
    return lambda s: _log_f64(s)
