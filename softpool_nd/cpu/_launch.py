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

Each direction declares its block once, as an ``ArgumentBlock``: a table of
(name, kind) in slot order, from which the driver's packing and the task's
unpacking are built (``driver_for``, ``class_task``), so no slot number is
written anywhere else. Drivers and tasks are closures made by these
factories, one per direction or per class and dtype pair, each named apart.

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
from numba import carray, prange
from numba import types as nbtypes
from numba.core import cgutils
from numba.core.errors import TypingError
from numba.extending import intrinsic, overload

from .._loops import NCOLS
from ._cache import cached_cfunc, cached_njit
from ._compile import _OPTIONS, _WRAPPERLESS, CHUNKSIZE, _driver, _inlined, _jit
from ._scalar import _bits, _float_from_bits
from ._walk import _offsets_scratch, _scratch

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
def swap_chunksize(typingctx, n):
    """Set numba's parallel chunk size of the calling thread to ``n``; return the one it had.

    ``numba.set_parallel_chunksize`` does this in compiled code through a
    ctypes pointer, which keeps the function out of numba's disk cache; this
    calls the threading layer's functions by their symbols, declared with the
    types numba's parallel loops declare them with, as those loops do.
    """

    def codegen(context, builder, signature, args):
        uintp = context.get_value_type(nbtypes.uintp)
        get = cgutils.get_or_insert_function(builder.module, ir.FunctionType(uintp, []), "get_parallel_chunksize")
        put = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [uintp]), "set_parallel_chunksize"
        )
        previous = builder.call(get, [])
        builder.call(put, [args[0]])
        return previous

    return nbtypes.uintp(nbtypes.uintp), codegen


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


@_jit
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


#: Kinds of argument block entries. The driver stores an array (1-D,
#: C-contiguous) as its address and size (two slots), an int64 or bool as
#: itself and the accumulation-type scalar (beta) as its bits (one slot).
STORED = "stored"  # an array of x's storage type (x being the block's first STORED array)
ACC = "acc"  # an array of the accumulation type (that of the block's SCALAR)
TABLE = "table"  # the int64 loop table, read back in its (rows, NCOLS) shape
INDEX = "index"  # an int64
FLAG = "flag"  # a bool
SCALAR = "scalar"  # the accumulation-type scalar
_SLOTS = {STORED: 2, ACC: 2, TABLE: 2, INDEX: 1, FLAG: 1, SCALAR: 1}


class ArgumentBlock:
    """A direction's argument block, declared once: (name, kind) per argument, in slot order.

    ``size`` is its number of slots. ``pack(argv, values)`` stores ``values``
    (a tuple in table order) in int64 array ``argv``, refusing, when its caller
    is compiled, arrays of another type than their kind's (``expect``);
    ``unpack(a, stored, acc)`` reads them back from the block ``a`` as a tuple
    in the same order, arrays of kind STORED as ``stored`` and of kind ACC as
    ``acc``. Both are inlined chains of one function per argument, built here
    from the table.
    """

    def __init__(self, *fields):
        self.names = tuple(name for name, _ in fields)
        kinds = tuple(kind for _, kind in fields)
        self.kinds = kinds
        starts = np.cumsum([0] + [_SLOTS[kind] for kind in kinds])
        self.size = int(starts[-1])
        pack, unpack = _pack_nothing, _unpack_nothing
        for i, kind in enumerate(kinds):
            pack = _pack_one(pack, i, int(starts[i]), kind, kinds.index(STORED), kinds.index(SCALAR))
            unpack = _unpack_one(unpack, int(starts[i]), kind)
        self.pack, self.unpack = pack, unpack

    def __repr__(self):
        return "ArgumentBlock(%s)" % ", ".join("%s: %s" % f for f in zip(self.names, self.kinds))

    def index(self, name):
        """The position of argument ``name`` in the tuples of ``pack`` and ``unpack``."""
        return self.names.index(name)


@_inlined
def _pack_nothing(argv, values):
    pass


@_inlined
def _unpack_nothing(a, stored, acc):
    return ()


def _pack_one(before, i, slot, kind, x_at, beta_at):
    """``before``, then store values[i] of ``kind`` at argv[slot] (and the next slot for an array)."""
    if kind == TABLE:

        @_inlined
        def pack(argv, values):
            before(argv, values)
            expect(values[i], argv)
            put(argv, slot, values[i])

    elif kind in (STORED, ACC):
        like_at = x_at if kind == STORED else beta_at

        @_inlined
        def pack(argv, values):
            before(argv, values)
            expect(values[i], values[like_at])
            put(argv, slot, values[i])

    elif kind == SCALAR:

        @_inlined
        def pack(argv, values):
            before(argv, values)
            argv[slot] = _bits(values[i])

    else:

        @_inlined
        def pack(argv, values):
            before(argv, values)
            argv[slot] = values[i]

    return pack


def _unpack_one(before, slot, kind):
    """``before``'s tuple followed by the argument of ``kind`` at a[slot]."""
    if kind == TABLE:

        @_inlined
        def read(a, stored, acc):
            return buffer(a, slot, np.int64).reshape((a[slot + 1] // NCOLS, NCOLS))

    elif kind == STORED:

        @_inlined
        def read(a, stored, acc):
            return buffer(a, slot, stored)

    elif kind == ACC:

        @_inlined
        def read(a, stored, acc):
            return buffer(a, slot, acc)

    elif kind == SCALAR:

        @_inlined
        def read(a, stored, acc):
            return _float_from_bits(a[slot], acc(0))

    elif kind == FLAG:

        @_inlined
        def read(a, stored, acc):
            return a[slot] != 0

    else:

        @_inlined
        def read(a, stored, acc):
            return a[slot]

    @_inlined
    def unpack(a, stored, acc):
        return before(a, stored, acc) + (read(a, stored, acc),)

    return unpack


def _named(fn, name):
    fn.__name__ = fn.__qualname__ = name
    return fn


def driver_for(args, name):
    """The parallel driver of a direction whose argument block is ``args`` (an ``ArgumentBlock``),
    cached as ``name``, and its serial twin (see ``serial``).

    ``driver(task, *values, tasks)`` packs the values (in ``args``' order)
    into a block of ``args.size`` slots and runs the task at address ``task``
    on ``tasks`` chunks in parallel.
    """
    size, pack = args.size, args.pack

    def run(task, *values_and_tasks):
        values, tasks = values_and_tasks[:-1], values_and_tasks[-1]
        argv = argument_block(size, tasks)
        pack(argv, values)
        caller = swap_chunksize(CHUNKSIZE)  # the caller's own setting comes back below
        for chunk in prange(tasks):
            call_task(task, argv, chunk, tasks)
        swap_chunksize(caller)
        check_done(argv, size)

    run = _named(run, name)
    return _driver(run), serial(run)


def serial(py_func):
    """``py_func`` (a driver) compiled without numba's parallel region: its
    ``prange`` runs as ``range`` on the calling thread, and no worker thread
    is woken. Named apart, as numba's disk cache keys its entries on the
    function's name, not on the compile options.
    """
    fn = types.FunctionType(
        py_func.__code__, py_func.__globals__, py_func.__name__ + "_serial", py_func.__defaults__, py_func.__closure__
    )
    fn.__doc__ = py_func.__doc__
    return cached_njit(**_OPTIONS)(_named(fn, fn.__name__))


def class_task(args, units, work, scratch, stored, acc, name):
    """The task of a configuration class for one (storage, accumulation) type pair, named ``name``.

    The class's work units (counted by ``work(tab)``, which returns them
    and the length of the offsets scratch ``units`` needs) are split into at
    most ``chunks`` contiguous ranges, each with its own scratch: the task
    runs range ``chunk``, calling ``units(values, u0, u1, offs, idx,
    scratch)`` with the values unpacked from the block (``args``, an
    ``ArgumentBlock`` with a TABLE named "tab") and a scratch array of
    ``scratch`` (rows, columns) of ``acc``. The split never changes a
    result, only who computes it. Then it marks its completion slot.
    """
    size, unpack, at_tab = args.size, args.unpack, args.index("tab")

    def task(argv, chunk, chunks):
        a = block(argv, size)
        values = unpack(a, stored, acc)
        tab = values[at_tab]
        n_units, n_offs = work(tab)
        n_chunks = max(1, min(n_units, chunks))
        if chunk < n_chunks:
            offs = _offsets_scratch(n_offs)
            idx = _offsets_scratch(tab.shape[0] - 1)
            buf = _scratch(scratch, acc)
            u0, u1 = chunk * n_units // n_chunks, (chunk + 1) * n_units // n_chunks
            units(values, u0, u1, offs, idx, buf)
        mark_done(argv, size + chunk)

    return _named(task, name)


class ClassKernel:
    """A configuration class's kernel, called as ``kernel(x, x0, tab, beta, *rest, tasks)``.

    ``make_task(stored, acc, name)`` builds the class's task (see
    ``class_task``) for x's storage type and the accumulation type; it is
    compiled, on the first call with a new pair, as a C callback, named
    after the class and both types (numba's disk cache keys its entries on
    the name: see ``_cache.cached_cfunc``). ``driver(task_address, x, x0,
    tab, beta, *rest, tasks)`` runs it, or, for ``tasks == 1``, its
    ``serial`` twin on the calling thread.
    """

    def __init__(self, name, make_task, driver, serial):
        self.__name__ = name
        self._make_task = make_task
        self._driver = driver
        self._serial = serial
        self._tasks = {}

    def __repr__(self):
        return "<ClassKernel %s>" % self.__name__

    def _compile(self, key):
        stored, acc = key
        name = "%s_%s_%s" % (self.__name__, np.dtype(stored).name, np.dtype(acc).name)
        task = cached_cfunc(TASK_SIGNATURE, self._make_task(stored, acc, name), **_OPTIONS)
        # the callback lives as long as this kernel, so its address stays
        # valid; of two threads compiling at once, the first to get here wins
        return self._tasks.setdefault(key, (task, task.address))

    def __call__(self, x, x0, tab, beta, *rest):
        key = (x.dtype.type, type(beta))
        task = self._tasks.get(key) or self._compile(key)
        (self._serial if rest[-1] == 1 else self._driver)(task[1], x, x0, tab, beta, *rest)
