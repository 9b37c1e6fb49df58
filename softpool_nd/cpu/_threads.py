"""numba's threading layer for the CPU kernels: safe after ``fork`` and for concurrent calls.

numba starts one threading layer per process, at its first parallel call or
compilation, trying ``tbb``, ``omp`` and ``workqueue`` in turn. On Linux
``omp`` is GNU OpenMP, which kills every child forked after a call at the
child's first parallel region ("fork() called from a process already using
GNU OpenMP"): multiprocessing pools, ProcessPoolExecutor and torch's
DataLoader workers fork on Linux. numba's ``tbb`` layer is safe both after
fork (it joins its workers before a fork and restarts them after) and for
calls from many Python threads at once, but numba finds ``libtbb.so.12`` only
on the loader's path, and the ``tbb`` wheel (a Linux x86-64 dependency of
softpool_nd) puts it in the environment's ``lib/``. So it is loaded here, by
its path, before numba chooses: numba's own order then picks ``tbb``.

Without a usable TBB on Linux the fork-safe ``workqueue`` layer is chosen
instead; it aborts the process when two threads run parallel code at once, so
the kernel calls are then serialised through :data:`serial`. A layer the user
chose (``NUMBA_THREADING_LAYER``, ``numba.config``) is kept (TBB is still made
loadable for it), as is one that other code already started (too late to
choose); calls are serialised whenever the layer is ``workqueue``. Other
systems keep numba's default: their Python does not fork by default.

Importing this module (``softpool_nd.cpu`` does, before any kernel is
compiled) starts the layer.
"""

import contextlib
import ctypes
import importlib.metadata
import sys
import threading

import numba

__all__ = ["LAYER", "serial"]

#: The oldest TBB numba's layer runs on (numba.np.ufunc.parallel: TBB 2021 update 6).
_TBB_INTERFACE_MIN = 12060


def _load_tbb():
    """Load the ``tbb`` wheel's libtbb.so.12 for the whole process; True when numba's layer can use it."""
    try:
        files = importlib.metadata.files("tbb") or ()
    except importlib.metadata.PackageNotFoundError:
        files = ()
    for f in files:
        if f.name == "libtbb.so.12":
            try:
                ctypes.CDLL(str(f.locate()), mode=ctypes.RTLD_GLOBAL)
            except OSError:
                break
    try:
        lib = ctypes.CDLL("libtbb.so.12")  # from the wheel, or wherever the loader finds one
        if lib.TBB_runtime_interface_version() < _TBB_INTERFACE_MIN:
            return False
        import numba.np.ufunc.tbbpool  # noqa: F401  (numba's layer, linked against libtbb.so.12)
    except (OSError, AttributeError, ImportError):
        return False
    return True


def _start():
    """Choose (where nobody else has) and start numba's threading layer; return its name."""
    try:
        return numba.threading_layer()  # started by other code: too late to choose
    except ValueError:
        pass
    if sys.platform.startswith("linux"):
        # also when the user asked for tbb ("tbb", "safe", ...): numba would not find the wheel's library either
        tbb = _load_tbb()
        if not tbb and str(numba.config.THREADING_LAYER).lower() == "default":
            numba.config.THREADING_LAYER = "workqueue"
    numba.get_num_threads()  # starts the layer now, once, rather than inside the first kernel call
    return numba.threading_layer()


#: The threading layer the kernels run on.
LAYER = _start()

#: Entered around every kernel call: a lock under ``workqueue`` (one parallel call at a time), else nothing.
serial = threading.Lock() if LAYER == "workqueue" else contextlib.nullcontext()
