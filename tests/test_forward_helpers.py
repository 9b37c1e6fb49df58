"""The forward kernels' low-level helpers: the lse's exponent split and the borrowed scratch views.

Speed changes of issue #14 item 3; each must leave every value as it was.
"""

import numpy as np
from numba import njit

from softpool_nd.cpu._compile import _OPTIONS
from softpool_nd.cpu._scalar import _split_f32
from softpool_nd.cpu._walk import borrowed, keep_alive


@njit(**_OPTIONS)
def _splits(s, n, f):
    for i in range(s.size):
        n[i], f[i] = _split_f32(s[i])


def test_log_exponent_split_in_int32_equals_the_int64_arithmetic_it_replaced():
    # every float32 log_ge1 is given: [1, inf] (sampled across every binade, both
    # ends of each), and NaN of either sign (its result is the NaN itself)
    low = np.arange(0x3F800000, 0x7F800001, 997, dtype=np.int64)
    ends = np.arange(0x3F800000, 0x7F800001, 1 << 23, dtype=np.int64)
    special = np.array([0x7F800000, 0x7F800001, 0x7FC00000, 0x7FFFFFFF, 0xFF800001, 0xFFC00000, 0xFFFFFFFF])
    bits = np.concatenate([low, ends, ends - 1, special]).astype(np.uint32)
    s = bits.view(np.float32)
    n = np.empty_like(s)
    f = np.empty_like(s)
    _splits(s, n, f)
    # the int64 arithmetic of main at 5358f68: the float32's bits sign-extended
    b = bits.view(np.int32).astype(np.int64) - 0x3F3504F3
    want_n = (b >> 23).astype(np.float32)
    want_f = ((b & 0x7FFFFF) + 0x3F3504F3).astype(np.uint32).view(np.float32)
    np.testing.assert_array_equal(n.view(np.uint32), want_n.view(np.uint32))
    np.testing.assert_array_equal(f.view(np.uint32), want_f.view(np.uint32))
    # and it is the split it claims: s = 2**n * f, f in [sqrt(1/2), sqrt(2)), for finite s
    finite = np.isfinite(s)
    np.testing.assert_array_equal(np.ldexp(f[finite].astype(np.float64), n[finite].astype(int)), s[finite])
    assert np.all((f[finite] >= np.sqrt(0.5, dtype=np.float32)) & (f[finite] < np.sqrt(2, dtype=np.float32)))


@njit(**_OPTIONS)
def _write_through(a, b):
    va, vb = borrowed(a), borrowed(b)
    va[1] = 7.0
    vb[1, 2] = 9.0
    return va.shape, vb.shape


def test_borrowed_views_are_the_arrays_themselves():
    a = np.zeros(5)
    b = np.zeros((3, 4), np.float32)
    shapes = _write_through(a, b)
    assert shapes == (a.shape, b.shape)
    assert a[1] == 7.0 and a.sum() == 7.0
    assert b[1, 2] == 9.0 and b.sum() == 9.0


@njit(**_OPTIONS)
def _borrow_then_allocate(n):
    owner = np.zeros(n)
    view = borrowed(owner)
    # were owner released at its last use (the borrow), malloc could hand its
    # block to this array, and the view would read 5s
    other = np.empty(n)
    other[:] = 5.0
    total = view.sum()
    keep_alive(owner)
    return total, other.sum()


def test_keep_alive_holds_a_borrowed_views_owner():
    assert _borrow_then_allocate(1000) == (0.0, 5000.0)
