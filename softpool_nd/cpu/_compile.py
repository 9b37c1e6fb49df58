"""numba settings of the CPU kernels, in one place.

Every kernel of ``softpool_nd.cpu`` is compiled with the decorators here, or
with ``_OPTIONS`` through ``_cache`` (the disk-cached drivers, tasks and the
jvp kernel): a change of compile options is one edit, and, this file being
one of ``_cache.SOURCES``, it recompiles every cached kernel.
"""

from numba import njit

from ._cache import cached_njit

# FMA contraction only: no assumption about NaN, infinities or signed zeros.
# NumPy's error model: a float division by zero gives inf/NaN instead of a
# checked branch that raises, which would keep every loop with a division
# from vectorising (the weight sum is never 0: the maximum has weight 1).
_OPTIONS = dict(fastmath={"contract"}, error_model="numpy")
# Helpers are only ever called from compiled code. Without a Python wrapper
# numba does not also turn each of them into machine code of its own: 0.8-1 s
# less of a process's first cold compile.
_WRAPPERLESS = dict(no_cpython_wrapper=True, no_cfunc_wrapper=True)
# Every helper sets all of these itself: numba compiles a function once per
# process and signature, and options its decorator leaves unset it takes from
# whichever caller compiled it first (a test's plain ``njit``, say), so the
# bits of every kernel compiled later, and of the disk cache, would depend on
# what the process compiled first.
_HELPER_OPTIONS = dict(**_WRAPPERLESS, **_OPTIONS)
_jit = njit(**_HELPER_OPTIONS)
# Inlined by numba itself: every sweep's step (it must sit in the loop LLVM
# vectorises), the forward and tiled sweeps, each class's loop over its work
# units (inlined into the class's task: one library less for numba to
# optimise and link, 0.2-0.4 s per class), the backward's per-row and
# per-cell functions (as calls, the k3s2 backward was 15-25% slower) and the
# launch layer's argument packing. The cell-major backward sweep stays a
# call: inlined, its k3s2 class ran 6x slower. Calls cost no shared atomic
# operations: the arrays every thread shares are views of raw memory, without
# reference counts (a task's own scratch arrays have them, on its own cache
# lines).
_inlined = njit(inline="always", **_WRAPPERLESS, **_OPTIONS)
# The parallel drivers of ``_launch``: one per direction, compiled per dtype
# (each with a serial twin for small calls: ``_launch.serial``).
_driver = cached_njit(parallel=True, **_OPTIONS)
# Iterations of a parallel loop (``prange``) that each numba thread takes at a
# time. numba's default (0) splits the loop into one contiguous share per
# thread up front, so a call lasts as long as its slowest thread; 1 hands the
# chunks out one by one as threads free up. A thread slowed by anything else
# on its core then does less of the work: torch's OpenMP workers spin for
# milliseconds after each torch operation (a network's layer before the
# pooling), and the machine may be shared. The split never changes a result.
CHUNKSIZE = 1
