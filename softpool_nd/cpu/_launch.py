"""How a configuration class's kernel runs: a C callback per class and dtype,
called through its address from a parallel driver that every class shares.

numba links each function a kernel calls into the kernel and optimises and
compiles it again there. A parallel kernel per class therefore compiled its
row loop three times (on its own, in the parallel loop's body and in the
kernel), and every class paid numba's parallel-loop passes. Here a class's
work over one chunk of its work units is compiled once, as a ``cfunc`` with
the C signature ``void(int64 argv, int64 chunk, int64 chunks)``; ``argv`` is
the address of an int64 argument block (buffer addresses and sizes, scalars)
that the driver fills and the task reads back with ``buffer``. The drivers
(one per direction, compiled per dtype) are the only parallel functions.
Both are cached on disk by numba, stamped with a digest of every source they
compile from (see ``_cache``).

Two rules follow from C callbacks. Arrays cross as address and size, and
the task reads each as the type it expects: the drivers refuse, when they
are compiled, buffers that are not C-contiguous or not of that type
(``expect``). And an exception raised in a callback is printed by numba,
not raised, and the callback returns: each task marks a slot of the block
when it has finished, and the driver raises if one is left unmarked
(``check_done``), instead of handing back unwritten outputs.
"""
import types

import numpy as np
from llvmlite import ir
from numba import carray, njit
from numba import types as nbtypes
from numba.core.errors import TypingError
from numba.extending import intrinsic, overload

from ._cache import cached_cfunc, cached_njit

# only ever called from compiled code: see softpool_nd.cpu.kernels
_WRAPPERLESS = {"no_cpython_wrapper": True, "no_cfunc_wrapper": True}
_inlined = njit(inline="always", **_WRAPPERLESS)

#: The task's C signature: (argument block address, chunk, number of chunks).
TASK_SIGNATURE = nbtypes.void(nbtypes.int64, nbtypes.int64, nbtypes.int64)


@intrinsic
def pointer(typingctx, address, dtype):
    """A typed pointer to the ``dtype`` (a NumPy scalar type) at integer ``address``."""
    ptr = nbtypes.CPointer(dtype.instance_type)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], context.get_value_type(ptr))

    return ptr(nbtypes.int64, dtype), codegen


@intrinsic
def _address(typingctx, a):
    """The address of array ``a``'s first element, as int64."""

    def codegen(context, builder, signature, args):
        data = context.make_array(a)(context, builder, args[0]).data
        return builder.ptrtoint(data, ir.IntType(64))

    return nbtypes.int64(a), codegen


@_inlined
def put(argv, i, a):
    """Store the address and size of the 1-D contiguous array ``a`` at argv[i] and argv[i + 1]."""
    argv[i] = _address(a)
    argv[i + 1] = a.size


def expect(a, like):
    """Refuse, when the caller is compiled, an ``a`` that is not a C-contiguous array of the type of ``like``.

    ``like`` is an array (its dtype counts) or a scalar (its type counts).
    """


@overload(expect, inline="always", jit_options=_WRAPPERLESS)
def _expect(a, like):
    want = like.dtype if isinstance(like, nbtypes.Array) else like
    if not (isinstance(a, nbtypes.Array) and a.layout == "C" and a.dtype == want):
        raise TypingError(f"a kernel buffer must be a C-contiguous array of {want}, not {a}")
    return lambda a, like: None


@njit(**_WRAPPERLESS)
def argument_block(n, tasks):
    """An int64 block of ``n`` argument slots, then one zeroed slot per task (see ``mark_done``).

    Allocated here, not in the parallel driver: there numba turns ``np.zeros``
    into a parallel loop of its own, a thread wake-up (about 1 µs) per call.
    """
    return np.zeros(n + tasks, np.int64)


@intrinsic
def mark_done(typingctx, argv, slot):
    """Store 1 in int64 slot ``slot`` of the argument block at address ``argv``.

    An intrinsic, not ``block(...)[slot] = 1``: numba's dead-code elimination
    drops that store, as nothing in the task reads the array afterwards.
    """

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        slots = builder.inttoptr(args[0], i64.as_pointer())
        builder.store(ir.Constant(i64, 1), builder.gep(slots, [args[1]]))
        return context.get_dummy_value()

    return nbtypes.none(nbtypes.int64, nbtypes.int64), codegen


@_inlined
def check_done(argv, first):
    """Raise unless every task marked its slot argv[first + chunk] (see the module docstring)."""
    for i in range(first, argv.size):
        if argv[i] == 0:
            raise RuntimeError("a SoftPool kernel task failed (numba printed its exception above); no result")


@_inlined
def block(argv, n):
    """The argument block of ``n`` int64 slots at address ``argv``."""
    return carray(pointer(argv, np.int64), n)


@_inlined
def buffer(argv, i, dtype):
    """The 1-D array of ``dtype`` that ``put`` stored at argv[i] (address) and argv[i + 1] (size)."""
    return carray(pointer(argv[i], dtype), argv[i + 1])


@intrinsic
def call_task(typingctx, task, argv, chunk, chunks):
    """Call the task at address ``task`` with the address of int64 array ``argv``.

    Taking the array itself, not its address, keeps it alive (numba's
    reference counting) for as long as the loop that calls the task runs.
    """

    def codegen(context, builder, signature, args):
        i64 = ir.IntType(64)
        fn = builder.inttoptr(args[0], ir.FunctionType(ir.VoidType(), [i64, i64, i64]).as_pointer())
        block = context.make_array(argv)(context, builder, args[1]).data
        builder.call(fn, [builder.ptrtoint(block, i64), args[2], args[3]])
        return context.get_dummy_value()

    return nbtypes.none(nbtypes.int64, argv, nbtypes.int64, nbtypes.int64), codegen


def serial(driver, options):
    """``driver`` (a parallel njit function) compiled again without numba's
    parallel region: its ``prange`` runs as ``range`` on the calling thread,
    and no worker thread is woken. Named apart, as numba's disk cache keys
    its entries on the function's name, not on the compile options.
    """
    py = driver.py_func
    fn = types.FunctionType(py.__code__, py.__globals__, py.__name__ + "_serial")
    fn.__qualname__ = fn.__name__
    fn.__doc__ = py.__doc__
    return cached_njit(**options)(fn)


class ClassKernel:
    """A configuration class's kernel, called as ``kernel(x, x0, tab, beta, *rest, tasks)``.

    ``template(argv, chunk, chunks)`` is compiled, on the first call with
    a new (storage dtype of x, type of beta), as a C callback whose globals
    are the template's plus ``bound``, ``_STORED`` (x's storage type) and
    ``_ACC`` (the accumulation type); ``driver(task_address, x, x0, tab, beta,
    *rest, tasks)`` runs it, or, for ``tasks == 1``, its ``serial`` twin on the
    calling thread. The callback is named after the class and both
    types: numba keys its disk cache on the name and the code, not on the
    globals.
    """

    def __init__(self, name, template, driver, serial, bound, options):
        self.__name__ = name
        self._template = template
        self._driver = driver
        self._serial = serial
        self._bound = bound
        self._options = options
        self._tasks = {}

    def __repr__(self):
        return "<ClassKernel %s>" % self.__name__

    def _compile(self, key):
        stored, acc = key
        name = "%s_%s_%s" % (self.__name__, np.dtype(stored).name, np.dtype(acc).name)
        bound = {**self._template.__globals__, **self._bound, "_STORED": stored, "_ACC": acc}
        fn = types.FunctionType(self._template.__code__, bound, name)
        fn.__qualname__ = name
        task = cached_cfunc(TASK_SIGNATURE, fn, **self._options)
        # the callback lives as long as this kernel, so its address stays
        # valid; of two threads compiling at once, the first to get here wins
        return self._tasks.setdefault(key, (task, task.address))

    def __call__(self, x, x0, tab, beta, *rest):
        key = (x.dtype.type, type(beta))
        task = self._tasks.get(key) or self._compile(key)
        (self._serial if rest[-1] == 1 else self._driver)(task[1], x, x0, tab, beta, *rest)
