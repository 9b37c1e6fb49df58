"""fork after use and calls from many threads (issue 13, item 2).

Each scenario runs in a fresh interpreter: the threading layer is chosen once per process, and a
child killed by GNU OpenMP, or a pool hanging while it replaces dead workers, must fail the test,
not the test run.
"""

import os
import subprocess
import sys

import pytest

import softpool_nd

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")

#: The folder softpool_nd was imported from, for the subprocesses to import the same one.
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(softpool_nd.__file__)))

_PARENT_CALL = """
import numpy as np, softpool_nd
x = np.random.default_rng(0).normal(size=(2, 3, 16, 16)).astype(np.float32)
y, lse = softpool_nd.forward(x, 3, stride=2, padding=1)  # the parent has used the kernels
g = softpool_nd.backward(np.ones_like(y), x, 3, stride=2, padding=1, y=y, lse=lse)
want = float(y.sum()) + float(g.sum())

def work(i):
    y, lse = softpool_nd.forward(x + i, 3, stride=2, padding=1)
    g = softpool_nd.backward(np.ones_like(y), x + i, 3, stride=2, padding=1, y=y, lse=lse)
    return float(y.sum()) + float(g.sum())
"""


def _run(code, env=None, timeout=180):
    full_env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")])))
    full_env.update(env or {})
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=full_env, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"hung for {timeout} s (a pool replacing dead workers forever?)")
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_multiprocessing_pool_after_use():
    code = (
        _PARENT_CALL
        + """
import multiprocessing
with multiprocessing.get_context("fork").Pool(2) as pool:
    got = pool.map(work, [0, 0, 1, 2])
assert got[0] == got[1] == want, (got, want)
print("ok")
"""
    )
    assert _run(code).strip() == "ok"


def test_process_pool_executor_after_use():
    code = (
        _PARENT_CALL
        + """
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("fork")) as ex:
    got = list(ex.map(work, [0, 1, 2, 0]))
assert got[0] == got[3] == want, (got, want)
print("ok")
"""
    )
    assert _run(code).strip() == "ok"


def test_torch_dataloader_workers_after_use():
    pytest.importorskip("torch")
    code = (
        _PARENT_CALL
        + """
import torch
from softpool_nd.torch import soft_pool2d

class Pooled(torch.utils.data.Dataset):
    def __len__(self):
        return 8
    def __getitem__(self, i):
        return soft_pool2d(torch.full((3, 8, 8), float(i)), 2)

torch.set_num_threads(1)
soft_pool2d(torch.zeros(1, 3, 8, 8), 2)  # and the torch path too
loader = torch.utils.data.DataLoader(Pooled(), batch_size=4, num_workers=2,
                                     multiprocessing_context="fork")
batches = [b for b in loader]
assert [tuple(b.shape) for b in batches] == [(4, 3, 4, 4)] * 2
assert float(batches[1][3].mean()) == 7.0
print("ok")
"""
    )
    assert _run(code).strip() == "ok"


_THREADS = (
    _PARENT_CALL
    + """
import threading
results, errors = [None] * 8, []

def thread(i):
    try:
        rs = [work(0) for _ in range(20)]
        results[i] = rs
    except Exception as e:  # reported below
        errors.append(e)

threads = [threading.Thread(target=thread, args=(i,)) for i in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
assert not errors, errors
assert {r for rs in results for r in rs} == {want}  # bit-identical in every thread and call
import numba
print(numba.threading_layer())
"""
)


def test_eight_threads_at_once_are_bit_identical():
    assert _run(_THREADS).strip() in ("tbb", "omp", "workqueue")


def test_eight_threads_under_workqueue_are_serialised():
    # the layer used where there is no TBB: it aborts the process on concurrent calls unless serialised
    assert _run(_THREADS, env={"NUMBA_THREADING_LAYER": "workqueue"}).strip() == "workqueue"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="other systems keep numba's default layer")
def test_default_layer_on_linux_is_fork_safe():
    code = "import numba, numpy as np, softpool_nd; softpool_nd.pool(np.ones(4)); print(numba.threading_layer())"
    # "default" is what numba reads when the variable is not set
    assert _run(code, env={"NUMBA_THREADING_LAYER": "default"}).strip() in ("tbb", "workqueue")
