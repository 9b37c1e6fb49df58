"""The numba disk cache of the CPU kernels is keyed on every source they compile from."""

import os
import pickle
import shutil
import subprocess
import sys

import softpool_nd
from softpool_nd.cpu import _cache

_POOL = "import numpy as np, softpool_nd; print(softpool_nd.pool(np.array([0.0, 1.0, 2.0, 2.0]), 2).tolist())"


def _pool_in_copy(root, cache):
    env = {**os.environ, "PYTHONPATH": str(root), "NUMBA_CACHE_DIR": str(cache)}
    res = subprocess.run([sys.executable, "-c", _POOL], env=env, cwd=root, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    return res.stdout.strip()


def _stamps(cache):
    stamps = set()
    for folder, _, names in os.walk(cache):
        for name in names:
            if name.endswith(".nbi"):
                with open(os.path.join(folder, name), "rb") as f:
                    pickle.load(f)
                    stamps.add(pickle.loads(f.read())[0])
    return stamps


def test_editing_a_helper_module_alone_recompiles_the_kernels(tmp_path):
    package = os.path.dirname(softpool_nd.__file__)
    shutil.copytree(package, tmp_path / "softpool_nd", ignore=shutil.ignore_patterns("__pycache__"))
    cache = tmp_path / "cache"
    assert _pool_in_copy(tmp_path, cache) == "[0.7310585786300049, 2.0]"
    (old,) = _stamps(cache)
    # an exponential that returns 1 everywhere turns SoftPool into the mean;
    # kernels.py, numba's own key, is left as it was
    scalar = tmp_path / "softpool_nd" / "cpu" / "_scalar.py"
    text = scalar.read_text()
    edited = text.replace("    return p * scale * 5.421010862427522e-20\n", "    return 1.0 + 0.0 * p\n")
    assert edited != text
    scalar.write_text(edited)
    assert _pool_in_copy(tmp_path, cache) == "[0.5, 2.0]"
    # the entries of the old sources were deleted, not left behind
    assert old not in _stamps(cache) and len(_stamps(cache)) == 1


def test_the_digest_covers_every_module_the_kernels_compile_from():
    names = {os.path.basename(p) for p in _cache.SOURCES}
    assert {"kernels.py", "_launch.py", "_scalar.py", "_loops.py"} <= names
    assert len(_cache.DIGEST) == 16 and _cache.DIGEST == _cache._digest(_cache.SOURCES)


# A function cached through softpool_nd's cache, and a run that compiles it for
# one argument type: its save of the index waits, after reading the index,
# until the other run has read it too (or is waiting for the lock that would
# order the two saves), so that two unlocked saves surely overlap.
_ONE_SIGNATURE = """
import os, sys, threading, time
from numba.core import caching
from softpool_nd.cpu import _cache
from f import f

folder, me, other = sys.argv[1:]
saving = threading.local()

def mark(name):
    open(os.path.join(folder, name), "w").close()

def wait_for_other():
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(
        os.path.exists(os.path.join(folder, n + other)) for n in ("read-", "locking-")
    ):
        time.sleep(0.05)

save, load_index = caching.IndexDataCacheFile.save, caching.IndexDataCacheFile._load_index

def saving_save(self, key, data):
    saving.on = True
    try:
        return save(self, key, data)
    finally:
        saving.on = False

def barrier_load_index(self):
    overloads = load_index(self)
    if getattr(saving, "on", False):
        mark("read-" + me)
        wait_for_other()
    return overloads

caching.IndexDataCacheFile.save, caching.IndexDataCacheFile._load_index = saving_save, barrier_load_index
if getattr(_cache, "fcntl", None) is not None:
    class _Marking:
        LOCK_EX, LOCK_UN = _cache.fcntl.LOCK_EX, _cache.fcntl.LOCK_UN
        def flock(self, f, op, real=_cache.fcntl.flock):
            if op == self.LOCK_EX:
                mark("locking-" + me)
            real(f, op)
    _cache.fcntl = _Marking()
print(f(1 if me == "int" else 1.5))
"""

_BOTH = "from f import f; r = f(1), f(1.5); print(r, dict(f.stats.cache_misses), dict(f.stats.cache_hits))"


def test_two_processes_saving_two_signatures_of_one_function_at_once_keep_both(tmp_path):
    # numba reads a function's index, adds a key with the first free data file
    # number and writes both back, unlocked: two processes saving at once took
    # the same number, and one signature was lost or its key led to the other's
    # machine code (parallel test workers, data-loader processes on a cold cache)
    (tmp_path / "f.py").write_text(
        "from softpool_nd.cpu._cache import cached_njit\n\n@cached_njit()\ndef f(x):\n    return x * 2 + 1\n"
    )
    cache, marks = tmp_path / "cache", tmp_path / "marks"
    marks.mkdir()
    root = os.path.dirname(os.path.dirname(softpool_nd.__file__))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), root]), "NUMBA_CACHE_DIR": str(cache)}
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", _ONE_SIGNATURE, str(marks), me, other],
            env=env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for me, other in (("int", "float"), ("float", "int"))
    ]
    outs = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err for _, err in outs]
    assert [out.strip() for out, _ in outs] == ["3", "4.0"]
    res = subprocess.run([sys.executable, "-c", _BOTH], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().startswith("(3, 4.0) {} "), res.stdout
