"""Start-up of the CPU backend: what a fresh process loads, and bits that do not depend on compile order."""

import os
import subprocess
import sys

# exp and log of the scalar helpers over their domains, in float32 and float64,
# through a function compiled with the kernels' options; ``first`` names a
# function compiled before it in the same process
_HELPERS = """
import sys
import numpy as np
from numba import njit
from softpool_nd.cpu._compile import _OPTIONS
from softpool_nd.cpu._scalar import exp_le0, log_ge1

@njit
def plain(d, s):  # a caller with numba's default options (no FMA contraction)
    return exp_le0(d) + log_ge1(s)

@njit(**_OPTIONS)  # the kernels' options
def kernel_like(d, s):
    e = np.empty_like(d)
    l = np.empty_like(s)
    for i in range(d.size):
        e[i] = exp_le0(d[i])
        l[i] = log_ge1(s[i])
    return e, l

rng = np.random.default_rng(0)
for t, low in ((np.float32, -100.0), (np.float64, -700.0)):
    d = rng.uniform(low, 0.0, 4000).astype(t)
    s = np.exp(rng.uniform(0.0, 80.0, 4000)).astype(t)
    if sys.argv[1] == "plain":
        plain(d[0], s[0])
    e, l = kernel_like(d, s)
    print(e.tobytes().hex(), l.tobytes().hex())
"""


def _run(code, *args, env=None):
    env = {**os.environ, **(env or {})}
    res = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_scalar_helpers_bits_do_not_depend_on_the_first_caller():
    # numba compiles a helper once per process and signature; before, options
    # the helper left unset (FMA contraction, error model) came from its first
    # caller, and every kernel compiled afterwards (and written to the disk
    # cache) linked that helper: float64/float16 results differed by 1 ulp
    # between a pytest process and a fresh one.
    assert _run(_HELPERS, "plain") == _run(_HELPERS, "kernel")


_FIRST_POOL = """
import sys
import numpy as np, softpool_nd
x = np.random.default_rng(1).standard_normal((2, 3, 8, 8))
y, lse = softpool_nd.forward(x, 2)
softpool_nd.backward(np.ones_like(y), x, 2, y=y, lse=lse)
print(sorted(m for m in ("numba.np.arraymath", "numba.np.linalg", "scipy.linalg") if m in sys.modules))
"""


def test_a_warm_cache_loads_kernels_without_numbas_registries():
    # Loading machine code from the disk cache needs numba's runtime, not its
    # implementation registries: numba's refresh of them (NumPy linear algebra,
    # and with it SciPy, random generators, typed containers) was half of a
    # fresh process's first call. The first run fills the cache (if the
    # suite's numba cache is cold), the second is the fresh process to check.
    _run(_FIRST_POOL)
    assert _run(_FIRST_POOL).strip() == "[]"


def test_every_cpu_module_building_kernels_is_in_the_cache_digest():
    # the digest leaves out the pure Python glue (an edit there recompiles
    # nothing), so a module that starts defining numba functions must be added
    import pathlib
    import re

    from softpool_nd.cpu import _cache

    builds = re.compile(r"\b(njit|_jit|_inlined|_driver|intrinsic|overload|cfunc|cached_njit|class_task|driver_for)\b")
    folder = pathlib.Path(_cache.__file__).parent
    kernel_modules = {p for p in folder.glob("*.py") if builds.search(p.read_text())}
    assert kernel_modules - set(_cache.SOURCES) == set()
    assert {p.name for p in folder.glob("*.py")} - {p.name for p in _cache.SOURCES} == {
        "__init__.py",
        "_threads.py",
        "backend.py",
    }
