"""The output cache (softpool_nd._outputs): reuse only of buffers nothing refers to, a hard bound, same results."""

import os
import subprocess
import sys
import threading
import tracemalloc

import numpy as np
import pytest

import softpool_nd
from softpool_nd import _outputs

#: The smallest float32 input whose k2s2 output over the last two axes reaches the cache (1 MiB).
SHAPE = (4, 4, 256, 256)


def _address(a):
    return a.__array_interface__["data"][0]


@pytest.fixture
def cache():
    """A cache with room for a few outputs of SHAPE, empty at the start and the end of the test."""
    previous = softpool_nd.set_output_cache(0)
    softpool_nd.set_output_cache(16 << 20)
    yield _outputs._CACHE
    softpool_nd.set_output_cache(0)
    softpool_nd.set_output_cache(previous)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).normal(size=SHAPE).astype(np.float32)


def test_a_dropped_output_is_reused(cache, x):
    y = softpool_nd.pool(x, 2)
    assert y.nbytes >= _outputs._MIN_BYTES
    address = _address(y)
    del y
    assert _address(softpool_nd.pool(x, 2)) == address


@pytest.mark.parametrize(
    "holder",
    [
        lambda y: y[1:, ::2],  # a view
        lambda y: y.reshape(-1),
        lambda y: memoryview(y),
        lambda y: y.__dlpack__(),  # a DLPack capsule, as another framework takes it
        lambda y: np.frombuffer(y.data, np.float32),
    ],
    ids=["view", "reshape", "memoryview", "dlpack", "frombuffer"],
)
def test_an_output_something_refers_to_is_not_reused(cache, x, holder):
    y = softpool_nd.pool(x, 2)
    address, held = _address(y), holder(y)
    del y
    z = softpool_nd.pool(x, 2)
    assert _address(z) != address
    del held, z


def test_a_torch_tensor_keeps_its_output(cache, x):
    torch = pytest.importorskip("torch")
    t = torch.from_numpy(softpool_nd.pool(x, 2))
    before = t.clone()
    others = [softpool_nd.pool(x + i, 2) for i in range(3)]
    assert not any(np.shares_memory(o, t.numpy()) for o in others)
    assert torch.equal(t, before)


def test_reused_memory_gives_the_same_results(cache, x):
    """Outputs in reused buffers (filled with NaN first) equal outputs in fresh memory, for every kernel."""
    kw = dict(kernel=3, stride=2, padding=1)

    def run():
        y, lse = softpool_nd.forward(x, **kw)
        gy = np.ones_like(y)
        gx = softpool_nd.backward(gy, x, y=y, lse=lse, **kw)
        dy = softpool_nd.jvp(x, np.ones_like(x), y=y, lse=lse, **kw)
        return [a.copy() for a in (y, lse, gx, dy)], (y, lse, gx, dy)

    fresh, _ = run()  # the cache's first outputs: new memory
    for _ in range(2):
        got, outputs = run()
        for a in outputs:
            a.fill(np.nan)  # whatever the next call's buffer holds must not show through
        del outputs
        for g, f in zip(got, fresh):
            np.testing.assert_array_equal(g, f)
    assert cache.held > 0


def test_the_cache_holds_at_most_its_limit(cache, x):
    softpool_nd.set_output_cache(3 << 20)  # three outputs of 1 MiB
    live = [softpool_nd.pool(x + i, 2) for i in range(5)]
    assert cache.held <= 3 << 20
    assert len({_address(y) for y in live}) == 5
    del live
    assert cache.held <= 3 << 20
    assert softpool_nd.set_output_cache(0) == 3 << 20
    assert cache.held == 0 and cache.buffers == []  # off: the free buffers are released


def test_a_smaller_limit_drops_free_buffers_first(cache, x):
    kept = softpool_nd.pool(x, 2)
    freed = softpool_nd.pool(x + 1, 2)
    del freed
    softpool_nd.set_output_cache(kept.nbytes)
    assert [_address(b) for b in cache.buffers] == [_address(kept)]


def test_small_outputs_and_an_off_cache_are_plain_allocations(cache, x):
    small = softpool_nd.pool(x[:1, :1, :64], 2)
    assert small.nbytes < _outputs._MIN_BYTES and cache.held == 0
    softpool_nd.set_output_cache(0)
    y = softpool_nd.pool(x, 2)
    del y
    assert cache.held == 0 and cache.buffers == []


@pytest.mark.parametrize("bad", [-1, 1.5, "1e9", None, True])
def test_a_bad_limit_is_refused(bad):
    with pytest.raises(ValueError, match=r"max_bytes=.* must be an int >= 0"):
        softpool_nd.set_output_cache(bad)


def test_a_bad_environment_limit_is_refused_at_import():
    env = dict(os.environ, SOFTPOOL_ND_OUTPUT_CACHE="lots")
    out = subprocess.run([sys.executable, "-c", "import softpool_nd"], env=env, capture_output=True, text=True)
    assert out.returncode != 0 and "SOFTPOOL_ND_OUTPUT_CACHE='lots' must be a number of bytes" in out.stderr


def test_the_environment_sets_the_limit():
    env = dict(os.environ, SOFTPOOL_ND_OUTPUT_CACHE="0")
    code = "import softpool_nd; print(softpool_nd.set_output_cache(5))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"


def test_threads_never_share_a_live_output(cache, x):
    want = softpool_nd.pool(x, 2)
    errors, live = [], {}
    lock = threading.Lock()

    def work():
        try:
            for _ in range(6):
                y = softpool_nd.pool(x, 2)
                with lock:
                    if any(np.shares_memory(y, other) for other in live.values()):
                        errors.append("two live outputs share memory")
                    live[id(y)] = y
                if not np.array_equal(y, want):
                    errors.append("wrong result")
                with lock:
                    del live[id(y)]
        except Exception as e:  # reported below, not lost in the thread
            errors.append(repr(e))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


_FORK_WHILE_LOCKED = """
import os, sys, time, numpy as np, softpool_nd
from softpool_nd import _outputs
x = np.ones((4, 4, 256, 256), np.float32)
softpool_nd.pool(x, 2)  # dropped at once: a free buffer in the cache
with _outputs._CACHE.lock:  # as another thread may hold it at the fork
    pid = os.fork()
    if pid == 0:
        os._exit(0 if softpool_nd.pool(x, 2).shape == (4, 4, 128, 128) else 1)
deadline = time.monotonic() + 100
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        sys.exit(os.waitstatus_to_exitcode(status))
    time.sleep(0.05)
os.kill(pid, 9)
sys.exit("the child hung")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_while_the_cache_is_locked_can_allocate():
    """A thread may hold the cache's lock at a fork; the child's outputs must not wait for it forever.

    In a fresh interpreter, as tests/test_fork.py runs its scenarios: a hung child must fail this test only.
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(softpool_nd.__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])))
    try:
        out = subprocess.run([sys.executable, "-c", _FORK_WHILE_LOCKED], env=env, capture_output=True, timeout=120)
    except subprocess.TimeoutExpired:
        pytest.fail("the child forked while the cache was locked hung on the lock")
    assert out.returncode == 0, out.stderr[-2000:]


@pytest.mark.parametrize("call", ["forward", "backward", "jvp"])
def test_given_outputs_are_written_by_the_kernels(call, x):
    """out= in the layout the kernels would allocate is written in place: nothing output-sized is allocated,
    nothing copied (before, the CPU forward computed lse, and backward and jvp their result, into new memory
    and copied it over)."""
    y, lse = softpool_nd.forward(x, 2)
    gy = np.ones_like(y)
    out = {"forward": (np.empty_like(y), np.empty_like(lse)), "backward": np.empty_like(x), "jvp": np.empty_like(y)}
    run = {
        "forward": lambda: softpool_nd.forward(x, 2, out=out["forward"]),
        "backward": lambda: softpool_nd.backward(gy, x, 2, y=y, lse=lse, out=out["backward"]),
        "jvp": lambda: softpool_nd.jvp(x, x, 2, y=y, lse=lse, out=out["jvp"]),
    }[call]
    want = run()
    want = tuple(a.copy() for a in want) if call == "forward" else want.copy()
    previous = softpool_nd.set_output_cache(0)  # an output-sized allocation must show in tracemalloc
    tracemalloc.start()
    try:
        got = run()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        softpool_nd.set_output_cache(previous)
    assert peak < y.nbytes // 4
    for g, o, w in zip(*((got, out[call], want) if call == "forward" else ((got,), (out[call],), (want,)))):
        assert g is o
        np.testing.assert_array_equal(g, w)
