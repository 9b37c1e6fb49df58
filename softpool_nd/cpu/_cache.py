"""The numba disk cache of the CPU kernels, keyed on every source they compile from.

numba stamps a cached function with its own source file only. A kernel here
compiles code from several modules (the sweeps of ``_forward``, ``_backward``
and ``_tiled``, the launch layer in ``_launch``, the scalar helpers in
``_scalar``, the loop table's column numbers in ``softpool_nd._loops``): after an edit to one of the others,
or an upgrade that changes only one of them, numba would load the old machine
code. Every kernel cached through this module is stamped instead with
``DIGEST``, a hash of all of ``SOURCES``; a cache entry with another stamp is
stale, as numba treats an entry of an edited source file, and is recompiled.
``prune`` deletes the stale entries' files, which numba itself leaves behind.

Everything here goes through numba's caching classes (``FunctionCache`` and
its locators, the ones numba uses for ``cache=True``), with the source stamp
and the closure-free index key (``_KernelCache._index_key``) as the only
changes.
"""

import contextlib
import hashlib
import os
import pathlib
import pickle
import threading

import numba
from numba.core import sigutils
from numba.core.caching import CompileResultCacheImpl, FunctionCache
from numba.core.ccallback import CFunc
from numba.core.runtime import rtsys

try:
    import fcntl
except ImportError:  # Windows: numba's unlocked save (processes there are spawned, rarely racing)
    fcntl = None

_PACKAGE = pathlib.Path(__file__).resolve().parent.parent

#: The files the CPU kernels are compiled from: the modules of softpool_nd.cpu
#: that define or build numba functions or set their options, this one (how
#: entries are keyed and loaded) and the loop table's layout. Not the pure
#: Python glue (``__init__``, ``_threads``, ``backend``): an edit there
#: recompiles nothing (tests/test_kernel_cache.py checks that every module
#: using numba is listed).
_KERNEL_MODULES = "_backward _cache _compile _forward _launch _scalar _tiled _walk jvp kernels".split()
SOURCES = tuple(_PACKAGE / "cpu" / (name + ".py") for name in _KERNEL_MODULES) + (_PACKAGE / "_loops.py",)


def _digest(paths):
    h = hashlib.sha256()
    for path in paths:
        h.update(path.relative_to(_PACKAGE).as_posix().encode() + b"\0")
        h.update(path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


#: The stamp of every cached kernel: a hash of the names and bytes of ``SOURCES``.
DIGEST = _digest(SOURCES)


def _stamped(locator_class):
    """``locator_class`` (one of numba's) with ``DIGEST`` as the source stamp."""
    return type(locator_class.__name__, (locator_class,), {"get_source_stamp": lambda self: DIGEST})


class _Impl(CompileResultCacheImpl):
    _locator_classes = [_stamped(cls) for cls in CompileResultCacheImpl._locator_classes]

    def __init__(self, py_func):
        super().__init__(py_func)
        prune(self.locator.get_cache_path())


class _KernelCache(FunctionCache):
    _impl_class = _Impl

    def _index_key(self, sig, codegen):
        """numba's key without the hash of a closure's cell contents.

        numba pickles the cells, and a dispatcher pickles with an id of its
        process: the tasks and drivers ``_launch`` builds as closures would
        never be found again. Their names tell them apart instead (one per
        class or direction and dtypes, the file name of the entry), and
        ``DIGEST`` covers the code their cells were built from.
        """
        code = hashlib.sha256(self._py_func.__code__.co_code).hexdigest()
        return (sig, codegen.magic_tuple(), (code, ""))

    def _save_overload(self, sig, data):
        """numba's, holding the cache folder's lock (see ``_locked``)."""
        self._impl.locator.ensure_cache_path()
        with _locked(self._cache_path):
            super()._save_overload(sig, data)

    def load_overload(self, sig, target_context):
        """numba's, without first refreshing ``target_context``'s registries.

        numba's refresh imports every implementation module it has (NumPy
        linear algebra and with it SciPy, random generators, typed
        containers...): half of a fresh process's first call with a warm
        cache, for machine code that is linked, not compiled. The loaded code
        needs only the runtime's symbols (NRT, initialised here; the C helpers
        and the threading layer's are installed by numba's context and by
        ``_threads``). On a miss numba compiles, and its compiler refreshes
        the context itself. An entry still imports the modules of the
        functions it was compiled from (numba rebuilds their environments):
        a kernel that used, say, ``np.all`` on an array would load
        ``numba.np.arraymath`` and SciPy again (tests/test_cpu_startup.py).
        """
        rtsys.initialize(target_context)
        with self._guard_against_spurious_io_errors():
            return self._load_overload(sig, target_context)


#: The lock file of a cache folder (one for all its entries: a save is rare, after a compilation).
LOCK_NAME = "softpool_nd.lock"


@contextlib.contextmanager
def _locked(folder):
    """Hold an exclusive lock on ``folder``'s ``LOCK_NAME`` (blocking), where the OS has ``fcntl``.

    numba saves an entry by reading the function's index, adding the new key
    with the first free data file number, and writing the index and the data
    file back, unlocked. Two processes saving two signatures of one function
    at once (the drivers and ``jvp_kernel`` are compiled per dtype: parallel
    test workers, a pool of data loaders on a cold cache) would both take
    number 1: one key is lost, or mapped to the other signature's machine
    code. Under the lock each save reads the index the previous one wrote.
    """
    if fcntl is None:
        yield
        return
    with open(os.path.join(folder, LOCK_NAME), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def cached_njit(**options):
    """``numba.njit(**options)`` cached on disk under ``DIGEST`` (names as for ``cached_cfunc``)."""

    def decorate(py_func):
        dispatcher = numba.njit(**options)(py_func)
        dispatcher._cache = _KernelCache(py_func)
        return dispatcher

    return decorate


def cached_cfunc(signature, py_func, **options):
    """``numba.cfunc(signature, cache=True, **options)(py_func)``, cached under ``DIGEST``.

    ``py_func``'s name must tell it apart from every other function cached
    from the same line (see ``_KernelCache._index_key``).
    """
    callback = CFunc(py_func, sigutils.normalize_signature(signature), locals={}, options=options)
    callback._cache = _KernelCache(py_func)
    callback.compile()
    return callback


_PRUNED = set()
_PRUNE_LOCK = threading.Lock()
# the modules whose functions are cached through here (numba names an entry's
# files after the module and the function)
_PREFIXES = tuple(p.stem + "." for p in SOURCES)


def _stamp_of(index):
    """The (numba version, source stamp) an index file was written with, or None if unreadable."""
    try:
        with open(index, "rb") as f:
            version = pickle.load(f)
            stamp, _ = pickle.loads(f.read())
    except Exception:  # a partly written or foreign file: leave it to numba
        return None
    return version, stamp


def prune(path):
    """Delete, once per process and folder, the cache files of kernels with another stamp or numba version.

    A process of this same version never loses an entry: only files whose
    index carries another stamp go.
    """
    with _PRUNE_LOCK:
        if path in _PRUNED:
            return
        _PRUNED.add(path)
    try:
        names = os.listdir(path)
    except OSError:
        return
    for name in names:
        if not (name.endswith(".nbi") and name.startswith(_PREFIXES)):
            continue
        stamp = _stamp_of(os.path.join(path, name))
        if stamp is None or stamp == (numba.__version__, DIGEST):
            continue
        base = name[: -len(".nbi")] + "."
        for other in names:
            if other == name or (other.startswith(base) and other.endswith(".nbc")):
                try:
                    os.remove(os.path.join(path, other))
                except OSError:
                    pass
