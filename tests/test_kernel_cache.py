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
