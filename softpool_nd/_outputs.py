"""The NumPy output arrays of the CPU kernels, from a bounded cache of freed buffers.

A training loop calls the kernels with the same shapes step after step, and
each call's outputs (y and lse, grad_x, a jvp's dy) used to be fresh memory.
On Linux a fresh allocation of a few MB comes straight from the operating
system, and every page of it faults and is cleared on first touch. On the
2-core machine of the README's table, with this cache the training step through
softpool_nd.torch took 0.72-0.89 of its time without it (quiet machine), and on
a loaded one forward() 0.75-0.83 and backward() 0.60-0.71 on (16, 64, 112, 112)
float32 (``benchmarks/training_breakdown.py``, its rows without the cache). So, like
PyTorch's CUDA caching allocator, the buffers of large outputs are kept after
their last user drops them and handed out again for the next output of the
same size, whose pages are then already mapped.

A buffer is free when nothing but the cache refers to it: every array made
from an output (its views, ``torch.from_numpy``, DLPack capsules, pickles
aside) holds a reference to the buffer, so its reference count says whether
anything can still read or write it.

The cache holds at most :func:`set_output_cache`'s limit of bytes, free or
in use (default 256 MiB, or the environment's ``SOFTPOOL_ND_OUTPUT_CACHE`` in
bytes), so it keeps at most that much memory that no user holds; larger
outputs and those that don't fit are plain allocations. Outputs under 1 MiB
are never cached: malloc serves them from memory it already has.
"""

import os
import sys
import threading

import numpy as np

__all__ = ["empty", "set_output_cache"]

#: Smaller outputs are plain allocations: malloc reuses its own memory for them.
_MIN_BYTES = 1 << 20

#: Cache size when ``SOFTPOOL_ND_OUTPUT_CACHE`` does not set it: a training step on the reference
#: (16, 64, 112, 112) float32 shape needs 77 MB of outputs (y, lse, grad_x).
_DEFAULT_LIMIT = 256 << 20


def _refs(buffers, i):
    """The reference count of ``buffers[i]``, taken the same way for the calibration below and the checks."""
    return sys.getrefcount(buffers[i])


#: The count of a buffer that only the cache's list refers to (interpreters count temporaries differently).
_FREE = _refs([np.empty(1, np.uint8)], 0)


def _limit_from_environment():
    text = os.environ.get("SOFTPOOL_ND_OUTPUT_CACHE")
    if text is None:
        return _DEFAULT_LIMIT
    try:
        return _checked_limit(int(text))
    except ValueError:
        raise ValueError(
            f"SOFTPOOL_ND_OUTPUT_CACHE={text!r} must be a number of bytes (an int >= 0; 0 turns the cache off)"
        ) from None


def _checked_limit(max_bytes):
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, (int, np.integer)) or max_bytes < 0:
        raise ValueError(f"max_bytes={max_bytes!r} must be an int >= 0 (0 turns the output cache off)")
    return int(max_bytes)


class _Cache:
    """Flat uint8 buffers, most recently handed out last."""

    def __init__(self, limit):
        self.limit = limit
        self.buffers = []
        self.lock = threading.Lock()

    @property
    def held(self):
        """The bytes the cache holds, free or in use."""
        return sum(b.nbytes for b in self.buffers)

    def take(self, nbytes):
        """A buffer of ``nbytes`` that nothing else refers to (a kept one, or a new one kept if it fits)."""
        with self.lock:
            bufs = self.buffers
            for i in range(len(bufs) - 1, -1, -1):
                if bufs[i].nbytes == nbytes and _refs(bufs, i) == _FREE:
                    buf = bufs.pop(i)
                    bufs.append(buf)
                    return buf
            buf = np.empty(nbytes, np.uint8)
            # make room by dropping free buffers, least recently handed out first
            held, i = self.held, 0
            while held + nbytes > self.limit and i < len(bufs):
                if _refs(bufs, i) == _FREE:
                    held -= bufs.pop(i).nbytes
                else:
                    i += 1
            if held + nbytes <= self.limit:
                bufs.append(buf)
            return buf

    def resize(self, limit):
        """Set the limit and drop what no longer fits (free buffers first, then in-use ones, which their
        users keep); return the previous limit."""
        with self.lock:
            previous, self.limit = self.limit, limit
            bufs = self.buffers
            free = [_refs(bufs, i) == _FREE for i in range(len(bufs))]
            keep, held = [False] * len(bufs), 0
            for want_free in (False, True):
                for i in range(len(bufs)):
                    if free[i] == want_free and held + bufs[i].nbytes <= limit:
                        keep[i] = True
                        held += bufs[i].nbytes
            self.buffers = [b for b, k in zip(bufs, keep) if k]
            return previous

    def after_fork(self):
        # a thread of the parent may have held the lock at the fork: the child's copy would stay locked
        self.lock = threading.Lock()


_CACHE = _Cache(_limit_from_environment())
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_CACHE.after_fork)


def empty(shape, dtype):
    """An uninitialised C-contiguous array of ``shape`` and ``dtype`` for a kernel's output."""
    dtype = np.dtype(dtype)
    nbytes = dtype.itemsize
    for n in shape:
        nbytes *= n
    if nbytes < _MIN_BYTES or nbytes > _CACHE.limit:
        return np.empty(shape, dtype)
    return _CACHE.take(nbytes).view(dtype).reshape(shape)


def set_output_cache(max_bytes):
    """Set how many bytes of output buffers the CPU kernels may keep for reuse; return the previous limit.

    The CPU kernels' outputs of 1 MiB and more come from buffers that earlier
    outputs of the same size left behind once nothing referred to them any
    more: their memory is already mapped, where fresh memory faults and is
    cleared page by page on first touch (up to two fifths of a kernel's time on large
    arrays). At most ``max_bytes`` are held by the cache, free or in use; the
    default is 256 MiB, or the environment's ``SOFTPOOL_ND_OUTPUT_CACHE``
    (bytes) at import. ``0`` turns the cache off and releases the free buffers.

    Parameters
    ----------
    max_bytes : int
        The most bytes the cache may hold, ``>= 0``.

    Returns
    -------
    int
        The previous limit.

    Examples
    --------
    >>> import softpool_nd
    >>> previous = softpool_nd.set_output_cache(0)  # every output is new memory
    >>> softpool_nd.set_output_cache(previous)
    0
    """
    return _CACHE.resize(_checked_limit(max_bytes))
