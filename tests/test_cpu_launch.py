"""The CPU launch layer: argument blocks declared once, packed by the driver and unpacked by the task."""

import numba
import numpy as np
import pytest
from numba import njit
from numba.core.errors import TypingError

from softpool_nd.cpu import kernels
from softpool_nd.cpu._launch import ACC, FLAG, INDEX, SCALAR, STORED, TABLE, ArgumentBlock, swap_chunksize

_ARGS = ArgumentBlock(("x", STORED), ("x0", INDEX), ("tab", TABLE), ("beta", SCALAR), ("lse", ACC), ("flag", FLAG))
_pack, _unpack, _size = _ARGS.pack, _ARGS.unpack, _ARGS.size


@njit
def _round_trip(x, x0, tab, beta, lse, flag):
    argv = np.zeros(_size, np.int64)
    _pack(argv, (x, x0, tab, beta, lse, flag))
    return argv, _unpack(argv, np.uint16, np.float32)


def test_every_kind_of_argument_comes_back_as_it_went_in():
    assert _ARGS.size == 2 + 1 + 2 + 1 + 2 + 1
    assert [_ARGS.index(n) for n in ("x", "tab", "flag")] == [0, 2, 5]
    x = np.arange(5, dtype=np.uint16)
    tab = np.arange(18, dtype=np.int64)
    lse = np.array([1.5, -2.0], np.float32)
    beta = np.float32(-3.0e-7)
    argv, (x2, x0, tab2, beta2, lse2, flag) = _round_trip(x, 7, tab, beta, lse, True)
    # arrays come back as views of the same memory, in the kind's type and (for the table) shape
    assert x2.dtype == np.uint16 and x2.ctypes.data == x.ctypes.data and np.array_equal(x2, x)
    assert tab2.shape == (2, 9) and tab2.ctypes.data == tab.ctypes.data
    assert lse2.dtype == np.float32 and np.array_equal(lse2, lse)
    assert x0 == 7 and flag is True
    assert np.float32(beta2).tobytes() == beta.tobytes()  # bit for bit (numba returns a Python float)
    # the slots are laid out in table order: x (address, size), x0, tab (address, size), beta, lse, flag
    assert argv[1] == 5 and argv[2] == 7 and argv[4] == 18 and argv[7] == 2 and argv[8] == 1


def test_the_driver_side_refuses_an_array_of_another_type_when_compiled():
    with pytest.raises(TypingError, match="C-contiguous array of float32"):
        _round_trip(np.zeros(3, np.uint16), 0, np.zeros(9, np.int64), np.float32(1), np.zeros(2), False)


def test_each_direction_declares_what_its_drivers_are_called_with():
    assert kernels.FORWARD_ARGS.names == ("x", "x0", "tab", "beta", "y", "lse", "with_lse")
    assert kernels.BACKWARD_ARGS.names == ("x", "x0", "tab", "beta", "gy", "y", "lse", "exact", "gx")


@njit
def _swap(n):
    return swap_chunksize(n)


def test_swap_chunksize_sets_the_threads_chunk_size_and_returns_the_old_one():
    caller = numba.get_parallel_chunksize()
    try:
        numba.set_parallel_chunksize(5)
        assert _swap(2) == 5 and numba.get_parallel_chunksize() == 2
    finally:
        numba.set_parallel_chunksize(caller)


@pytest.mark.parametrize("caller", [0, 3])
def test_parallel_calls_hand_out_chunks_one_by_one_and_keep_the_callers_chunk_size(caller, monkeypatch):
    # the drivers and the jvp kernel set numba's chunk size around their prange (chunks handed out one by
    # one: _compile.CHUNKSIZE; timed in benchmarks/, not here) and give the caller's setting back
    import softpool_nd
    from softpool_nd.cpu import backend

    monkeypatch.setattr(backend, "SERIAL_BELOW", 0)  # numba's threads even for this small input
    x = np.random.default_rng(5).standard_normal((3, 4, 10, 12)).astype(np.float32)
    previous = numba.set_parallel_chunksize(caller)
    try:
        y, lse = softpool_nd.forward(x, 2)
        assert numba.get_parallel_chunksize() == caller
        gx = softpool_nd.backward(np.ones_like(y), x, 2, y=y, lse=lse)
        assert numba.get_parallel_chunksize() == caller
        dy = softpool_nd.jvp(x, x, 2, y=y, lse=lse)
        assert numba.get_parallel_chunksize() == caller
    finally:
        numba.set_parallel_chunksize(previous)
    # the same bits as on the calling thread alone
    monkeypatch.setattr(backend, "SERIAL_BELOW", 1 << 30)
    y1, lse1 = softpool_nd.forward(x, 2)
    assert y.tobytes() == y1.tobytes() and lse.tobytes() == lse1.tobytes()
    assert gx.tobytes() == softpool_nd.backward(np.ones_like(y), x, 2, y=y, lse=lse).tobytes()
    assert dy.tobytes() == softpool_nd.jvp(x, x, 2, y=y, lse=lse).tobytes()
