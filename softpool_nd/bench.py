"""CPU speed of softpool_nd against what users would otherwise write in PyTorch: measurements only.

The baseline is the PyTorch formula ``avg_pool(x * exp(x)) / avg_pool(exp(x))``
(and autograd through it for the gradient); the yardstick is torch's own
``avg_pool``, the cheapest pooling there is. Every ratio is measured side by
side in this process: the contenders run interleaved, round after round, and
each ratio is a ratio of medians, so that a busy machine slows all of them
alike. Threads: numba and torch both get ``threads`` (2 by default).

:func:`measure` returns the rows, :func:`run` prints them (``softpool-nd
bench``). The project's targets, and whether each row meets them, live outside
the library, in ``benchmarks/compare.py``; the asv suite in ``benchmarks/``
reuses the cases and the timer defined here.

torch runs on an OpenMP runtime, whose threads by default spin for a while
after each parallel region; numba runs on the threading layer softpool_nd.cpu
chooses (TBB where its wheel is installed, as in a user's program: the timers
here import softpool_nd.cpu before they set numba's thread count, which would
otherwise start numba's own choice, OpenMP). Threads spinning on two cores
steal time from whichever library runs next, which turns an interleaved
comparison into a measurement of that contention (ratios wandered by 3x and
more when both ran on OpenMP). Set ``OMP_WAIT_POLICY=PASSIVE`` before torch is
imported: ``benchmarks/compare.py`` and ``softpool-nd bench`` do, in their own
process (importing this module changes nothing). The same setting is advisable
for any program that alternates between torch and other threaded code on few
cores.

Two measurements are the exception and run in a fresh process with the wait
policy the caller's environment had before that setting
(:data:`CALLER_WAIT_POLICY`): the size sweep, which measures softpool_nd alone,
as a NumPy program calls it, and the training rows, which measure what a torch
program gets unless it sets the policy (torch's workers spinning after each
operation, the layer before the pooling included: :func:`preceding_layer`).
Where the caller's policy was OpenMP's default, :func:`measure` adds the
training step under PASSIVE as rows of their own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import dataclass, replace

import numpy as np

__all__ = [
    "Case",
    "CASES",
    "QUICK_CASES",
    "Row",
    "TRAINING_SHAPES",
    "TINY_SHAPES",
    "make_input",
    "preceding_layer",
    "timeit_interleaved",
    "torch_baselines",
    "torch_formula",
    "training_steps",
    "training_rows",
    "tiny_calls",
    "use_passive_wait_policy",
    "measure",
    "run",
]

#: OMP_WAIT_POLICY as the environment had it before :func:`use_passive_wait_policy` (None: OpenMP's default).
CALLER_WAIT_POLICY = None
_PASSIVE_SET = []


def use_passive_wait_policy():
    """Set ``OMP_WAIT_POLICY=PASSIVE`` in this process unless the environment chooses (see the module docstring).

    For a benchmark's entry point, before torch is imported and before numba's
    first parallel call; importing softpool_nd never does it.
    """
    global CALLER_WAIT_POLICY
    if not _PASSIVE_SET:
        CALLER_WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY")
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        _PASSIVE_SET.append(True)


@dataclass(frozen=True)
class Row:
    """One measurement: ``key`` names what was measured (benchmarks/compare.py keys its targets by it),
    ``value`` is the number a target compares, ``text`` the value as printed."""

    key: str
    label: str
    value: float
    text: str


@dataclass(frozen=True)
class Case:
    """One benchmark input: an NC... array pooled over its trailing axes (or over ``axes``)."""

    name: str
    shape: tuple
    kernel: int = 2
    stride: int = 2
    dtype: str = "float32"
    channels_last: bool = False

    @property
    def pooled(self):
        """Number of pooled axes."""
        return len(self.shape) - 2

    def kwargs(self):
        kw = dict(kernel=self.kernel, stride=self.stride)
        if self.channels_last:
            kw["axes"] = tuple(range(1, len(self.shape) - 1))
        return kw


#: The reference shape first: a ResNet stem activation.
CASES = (
    Case("2-D k2s2 f32 (reference)", (16, 64, 112, 112)),
    Case("2-D k3s2 f32", (16, 64, 112, 112), kernel=3),
    Case("3-D k2s2 f32", (4, 32, 16, 56, 56)),
    Case("1-D k2s2 f32", (32, 64, 4096)),
    Case("2-D k2s2 f64", (16, 64, 112, 112), dtype="float64"),
    Case("2-D k2s2 f16", (16, 64, 112, 112), dtype="float16"),
    Case("2-D k2s2 f32 NHWC", (16, 112, 112, 64), channels_last=True),
    Case("2-D k3s2 f32 NHWC", (16, 112, 112, 64), kernel=3, channels_last=True),
)


def _quarter_batch_and_channels(case):
    """The case with a quarter of the batch and of the channels: 1/16 of the data."""
    shape = list(case.shape)
    channel = len(shape) - 1 if case.channels_last else 1
    shape[0] //= 4
    shape[channel] //= 4
    return replace(case, shape=tuple(shape))


#: The same cases on 1/16 of the data, for CI and a first look.
QUICK_CASES = tuple(_quarter_batch_and_channels(c) for c in CASES)


def make_input(case, seed=0):
    """Seeded unit-normal input of the case, in its dtype and layout."""
    x = np.random.default_rng(seed).standard_normal(case.shape, dtype=np.float32)
    return x.astype(case.dtype)


def timeit_interleaved(fns, rounds=7, min_time=0.0, before=None):
    """Median seconds per call of each function in ``fns`` (a dict), run interleaved.

    Each function is called once first (compilation, caches); then every round
    calls each once, in turn. Rounds continue past ``rounds`` until ``min_time``
    seconds have been spent. ``before``, if given, is called (untimed) before
    every timed call, so that each row starts from the same state instead of
    the state the row before it left: torch's OpenMP workers spin for
    milliseconds after a torch operation and take a core from whatever runs
    next on other threads (see ``preceding_layer``).
    """
    for f in fns.values():
        f()
    times = {k: [] for k in fns}
    start = time.perf_counter()
    while len(times[next(iter(fns))]) < rounds or time.perf_counter() - start < min_time:
        for k, f in fns.items():
            if before is not None:
                before()
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    return {k: float(np.median(v)) for k, v in times.items()}


def torch_baselines(case, x):
    """Torch callables for ``case`` on the data of ``x``: formula forward, avg_pool, formula backward.

    Returns None when torch is not installed or the case has no torch pooling (rank > 3).
    """
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    if not 1 <= case.pooled <= 3:
        return None
    avg = (F.avg_pool1d, F.avg_pool2d, F.avg_pool3d)[case.pooled - 1]
    xt = torch.from_numpy(x)
    if case.channels_last:
        # the same memory as torch sees it: NCHW shape, channels-last strides
        xt = xt.permute(0, -1, *range(1, x.ndim - 1))
    k, s = case.kernel, case.stride

    formula = torch_formula(lambda t: avg(t, k, s))
    xg = xt.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)
    out = formula(xg)
    gy = torch.ones_like(out)

    def backward():
        return torch.autograd.grad(out, xg, gy, retain_graph=True)

    return {
        "formula": lambda: formula(xt),
        "avg_pool": lambda: avg(xt, k, s),
        "formula_backward": backward,
    }


#: The shapes of issue #14's training rows: float32 NCHW, k2s2, each also in
#: channels_last memory; the first is the ResNet stem activation.
TRAINING_SHAPES = ((16, 64, 112, 112), (64, 64, 32, 32), (8, 16, 16, 16))
#: Inputs whose calls are fixed costs (issue #14: "under load a call on a
#: (1, 2, 6, 6, 5) array took 8 ms"), pooled k2s2 over their trailing axes.
TINY_SHAPES = ((1, 2, 6, 6, 5), (2, 8, 16, 16))


def torch_formula(pool):
    """The PyTorch formula of SoftPool over ``pool`` (an avg_pool), as users write it."""
    import torch

    def formula(t):
        e = torch.exp(t)
        return pool(t * e) / pool(e)

    return formula


def training_steps(shape, channels_last, compiled=True):
    """Callables for one training step (forward, then the gradient w.r.t. x) on a float32 k2s2 input.

    ``softpool_nd``: through ``softpool_nd.torch.soft_pool`` (forward with lse,
    then the backward op, as autograd runs them); ``eager``: the PyTorch
    formula under autograd; ``compiled``: the same formula under
    ``torch.compile`` (inductor fuses it; compiled on the first call, which
    ``timeit_interleaved`` makes before timing). Also ``pool``, softpool_nd's
    own ``pool()`` on the same data, and ``no_grad``, the adapter on an input
    that needs no gradient. None when torch is absent.
    """
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    import softpool_nd
    from softpool_nd import torch as sp_torch

    x_np = make_input(Case("", shape))
    x = torch.from_numpy(x_np)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        x_np = x.numpy().transpose(0, 2, 3, 1)  # the same memory, NHWC
    xg = x.detach().clone(memory_format=torch.preserve_format).requires_grad_(True)
    formula = torch_formula(lambda t: F.avg_pool2d(t, 2, 2))
    gy = torch.ones_like(formula(x))
    kw = dict(kernel=2, axes=(1, 2)) if channels_last else dict(kernel=2)

    def step(f):
        return lambda: torch.autograd.grad(f(xg), xg, gy)

    fns = {
        "softpool_nd": step(lambda t: sp_torch.soft_pool(t, 2)),
        "eager": step(formula),
        "pool": lambda: softpool_nd.pool(x_np, **kw),
        "forward": lambda: softpool_nd.forward(x_np, **kw),
    }

    def no_grad():
        with torch.no_grad():
            return sp_torch.soft_pool(x, 2)

    fns["no_grad"] = no_grad
    if compiled:
        # static shapes: each (shape, layout) gets the specialised kernel a fixed-size training loop gets, not
        # the dynamic-shape recompile dynamo makes when it sees the same formula at a second size
        fns["compiled"] = step(torch.compile(formula, dynamic=False))
    return fns


def preceding_layer(shape, channels_last):
    """The layer before the pooling in a network, as ``timeit_interleaved``'s ``before`` for the training rows:
    a ReLU (torch, into a preallocated tensor) of an input of ``shape`` and layout. Every step, softpool_nd's and
    the formula's, then starts as in a network: right after a torch operation, whose OpenMP workers still spin
    on their cores. None when torch is absent."""
    try:
        import torch
    except ImportError:
        return None
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = torch.from_numpy(make_input(Case("", shape))).contiguous(memory_format=fmt)
    out = torch.empty_like(x)
    return lambda: torch.clamp_min(x, 0, out=out)


def tiny_calls(shape):
    """``pool()`` of a tiny float32 input on the calling thread (the serial path) and forced onto numba's threads."""
    import softpool_nd
    from softpool_nd.cpu import backend

    x = make_input(Case("", shape))

    def parallel():
        below, backend.SERIAL_BELOW = backend.SERIAL_BELOW, 0
        try:
            softpool_nd.pool(x, 2)
        finally:
            backend.SERIAL_BELOW = below

    return {"serial": lambda: softpool_nd.pool(x, 2), "parallel": parallel}


def training_rows(shapes, layouts, rounds):
    """The rows of issue #14 for each shape (its index in ``shapes`` keys the row) and layout (channels_last
    or not): forward()/pool(), no-grad adapter/pool(), training step vs eager and compiled formula.
    Empty when torch is not installed."""
    rows = []
    for i, shape in enumerate(shapes):
        for channels_last in layouts:
            name = f"{shape} {'channels_last' if channels_last else 'NCHW'}"
            fns = training_steps(shape, channels_last)
            if fns is None:
                return rows
            t = timeit_interleaved(fns, rounds=rounds, before=preceding_layer(shape, channels_last))
            step = f"{name}: training step via softpool_nd.torch, speed-up vs"
            for key, label, r, unit in (
                ("training_forward", f"{name}: forward() with lse / pool() time", t["forward"] / t["pool"], ""),
                (
                    "training_no_grad",
                    f"{name}: softpool_nd.torch under no_grad / pool() time",
                    t["no_grad"] / t["pool"],
                    "",
                ),
                ("training_eager", f"{step} eager formula", t["eager"] / t["softpool_nd"], "x"),
                ("training_compiled", f"{step} torch.compile(formula)", t["compiled"] / t["softpool_nd"], "x"),
            ):
                rows.append(Row(f"{key}[{i}]", label, r, f"{r:.2f}{unit}"))
    return rows


def _tiny_rows(rounds):
    """Per-call time of tiny inputs, on the calling thread and forced onto numba's threads."""
    rows = []
    for shape in TINY_SHAPES:
        fns = tiny_calls(shape)
        reps = 20
        repeated = {k: (lambda f=f, n=reps: [f() for _ in range(n)]) for k, f in fns.items()}
        t = timeit_interleaved(repeated, rounds=rounds)
        serial, parallel = t["serial"] / reps * 1e6, t["parallel"] / reps * 1e6
        rows.append(
            Row(
                f"tiny[{shape}]",
                f"tiny pool() {shape}: per-call time (serial path) / on numba's threads",
                serial / parallel,
                f"{serial:.0f} us / {parallel:.0f} us",
            )
        )
    return rows


def _ours(case, x):
    import softpool_nd

    kw = case.kwargs()
    y, lse = softpool_nd.forward(x, **kw)
    gy = np.ones_like(y)
    return {
        "pool": lambda: softpool_nd.pool(x, **kw),
        "backward": lambda: softpool_nd.backward(gy, x, y=y, lse=lse, **kw),
    }


def _set_threads(n):
    import numba

    # softpool_nd.cpu first: it chooses numba's threading layer (TBB) as it does in a user's program, which
    # numba.set_num_threads, called first, would start with numba's own choice (OpenMP here) instead
    import softpool_nd.cpu  # noqa: F401

    numba.set_num_threads(n)
    try:
        import torch

        torch.set_num_threads(n)
    except ImportError:
        pass


def _peak_over(fn, base_bytes):
    """Peak bytes allocated by ``fn`` beyond ``base_bytes``, as a fraction of base_bytes.

    With the output cache off: what a call allocates, not whether an earlier call left a buffer to reuse.
    """
    import softpool_nd

    limit = softpool_nd.set_output_cache(0)
    tracemalloc.start()
    try:
        fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        softpool_nd.set_output_cache(limit)
    return peak / base_bytes


def _first_call_seconds(case):
    """Seconds for import + first pool() of ``case`` in a fresh process (warm numba cache)."""
    code = (
        "import time; t = time.perf_counter(); import numpy as np, softpool_nd; t1 = time.perf_counter(); "
        f"x = np.zeros({case.shape!r}, {case.dtype!r}); t2 = time.perf_counter(); "
        f"softpool_nd.pool(x, **{case.kwargs()!r}); print(t1 - t, time.perf_counter() - t2)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    imp, first = (float(v) for v in out.stdout.split())
    return imp, first


def _cold_compile_seconds(cases):
    """Seconds of the first forward and first backward of each case's class, in one fresh process.

    numba's disk cache is a new empty directory, so every class compiles: the
    first case's forward also pays numba's own start-up (its first function
    and first parallel loop). Small inputs of the cases' shapes and dtypes
    pick the same class kernels as the full ones. Returns [(name, forward
    seconds, backward seconds)] in the order of ``cases``.
    """
    calls = []
    for case in cases:
        keep = {len(case.shape) - 1} if case.channels_last else {1}
        shape = tuple(1 if a == 0 else 2 if a in keep else min(n, 16) for a, n in enumerate(case.shape))
        calls.append((case.name, shape, case.dtype, case.kwargs()))
    code = f"""
import time, numpy as np, softpool_nd
for name, shape, dtype, kw in {calls!r}:
    x = np.random.default_rng(0).standard_normal(shape).astype(dtype)
    t = time.perf_counter(); y, lse = softpool_nd.forward(x, **kw); f = time.perf_counter() - t
    t = time.perf_counter(); softpool_nd.backward(np.ones_like(y), x, y=y, lse=lse, **kw); b = time.perf_counter() - t
    print(f, b)
"""
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    times = [tuple(float(v) for v in line.split()) for line in out.stdout.splitlines()]
    return [(name, f, b) for (name, *_), (f, b) in zip(calls, times)]


def _seconds_per_element(sizes, threads, rounds):
    """Median seconds per element of ``pool()`` on float32 inputs of ``sizes`` bytes, in a fresh process.

    The inputs have the reference image size, 112 x 112; only the number of
    channels grows. As everywhere here, the sizes take turns within each
    round, so that a busy spell of the machine slows all of them alike; the
    small ones repeat within their turn to fill about as long as the largest.
    """
    code = f"""
import time, numba, numpy as np, softpool_nd
numba.set_num_threads({threads})
xs = [np.random.default_rng(0).standard_normal((1, max(1, n // 4 // 12544), 112, 112), dtype=np.float32)
      for n in {tuple(sizes)!r}]
reps = [max(1, xs[-1].size // x.size // 4) for x in xs]
times = [[] for _ in xs]
for r in range({rounds} + 1):
    for x, k, ts in zip(xs, reps, times):
        t = time.perf_counter()
        for _ in range(k):
            softpool_nd.pool(x)
        ts.append((time.perf_counter() - t) / k / x.size)
for ts in times:
    print(float(np.median(ts[1:])))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_caller_env())
    return [float(v) for v in out.stdout.split()]


def _caller_env():
    """This process's environment with the OpenMP wait policy the caller's had (before
    :func:`use_passive_wait_policy`): for a fresh process that measures what a program gets by default."""
    env = dict(os.environ)
    if _PASSIVE_SET:
        env.pop("OMP_WAIT_POLICY", None)
        if CALLER_WAIT_POLICY is not None:
            env["OMP_WAIT_POLICY"] = CALLER_WAIT_POLICY
    return env


def _training_rows_by_default(shapes, layouts, rounds, threads):
    """:func:`training_rows` measured in a fresh process under the caller's OpenMP wait policy: a torch
    program that does not set ``OMP_WAIT_POLICY`` gets OpenMP's default, whose workers spin after each torch
    operation on the cores softpool_nd's kernels then run on."""
    code = f"""
import json
from softpool_nd.bench import _set_threads, training_rows
_set_threads({threads})
print(json.dumps([(r.key, r.label, r.value, r.text) for r in training_rows({shapes!r}, {layouts!r}, {rounds})]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=_caller_env())
    return [Row(*r) for r in json.loads(out.stdout.splitlines()[-1])]


def measure(quick: bool = False, threads: int = 2) -> list[Row]:
    """Measure softpool_nd against the PyTorch formula and torch's avg_pool, and on its own.

    Parameters
    ----------
    quick : bool
        Use inputs 16 times smaller and fewer rounds (about a minute instead of several).
    threads : int
        numba and torch threads for the timings.

    Returns
    -------
    list of Row
        Speed-ups, time and memory ratios, compile and import times.
    """
    import numba

    import softpool_nd

    threads = min(threads, numba.config.NUMBA_NUM_THREADS)
    _set_threads(threads)
    cases = QUICK_CASES if quick else CASES
    rounds = 5 if quick else 9
    # first: in one run that measured it last, right after the 1 GB inputs,
    # the first class took 6.1 s instead of the usual 4-4.5 s
    cold = _cold_compile_seconds(cases)
    rows = []
    for i, case in enumerate(cases):
        x = make_input(case)
        if case.channels_last:
            x = np.ascontiguousarray(x)
        base = torch_baselines(case, x) or {}
        t = timeit_interleaved({**_ours(case, x), **base}, rounds=rounds)
        if base:
            sf = t["formula"] / t["pool"]
            sb = t["formula_backward"] / t["backward"]
            rows.append(
                Row(f"forward_speedup[{i}]", f"{case.name}: forward speed-up vs torch formula", sf, f"{sf:.1f}x")
            )
            rows.append(
                Row(f"backward_speedup[{i}]", f"{case.name}: backward speed-up vs torch autograd", sb, f"{sb:.1f}x")
            )
            if i == 0:
                ra = t["pool"] / t["avg_pool"]
                rows.append(Row("avg_pool_ratio", f"{case.name}: forward time / torch avg_pool2d", ra, f"{ra:.2f}"))
    # The ratios between softpool_nd's own timings get a run of their own:
    # the three inputs (and, for the threads, the two thread counts) take
    # turns within each round, as everywhere here.
    ref, f16, nhwc = cases[0], cases[5], cases[6]
    kw = ref.kwargs()
    inputs = {c.name: (np.ascontiguousarray(make_input(c)), c.kwargs()) for c in (ref, f16, nhwc)}
    t = timeit_interleaved(
        {name: (lambda x=x, kw=kw: softpool_nd.pool(x, **kw)) for name, (x, kw) in inputs.items()},
        rounds=2 * rounds,
    )
    per_elem = {name: t[name] / inputs[name][0].size for name in inputs}
    r = per_elem[nhwc.name] / per_elem[ref.name]
    rows.append(Row("nhwc_ratio", "NHWC (axes=(1, 2)) time / NCHW time", r, f"{r:.2f}"))
    r = per_elem[f16.name] / per_elem[ref.name]
    rows.append(Row("float16_ratio", "float16 time / float32 time (per element)", r, f"{r:.2f}"))

    x = inputs[ref.name][0]

    def one():
        _set_threads(1)
        softpool_nd.pool(x, **kw)
        _set_threads(threads)

    t = timeit_interleaved({"two": lambda: softpool_nd.pool(x, **kw), "one": one}, rounds=2 * rounds)
    r = t["one"] / t["two"]
    rows.append(Row("threads_speedup", f"{threads} threads vs 1 thread (speed-up)", r, f"{r:.2f}x"))

    sizes = (2**20, 2**24, 2**27) if quick else (2**20, 2**24, 2**28, 2**30)
    per = _seconds_per_element(sizes, threads, rounds)
    spread = max(per) / min(per)
    label = f"time per element, {sizes[0] >> 20} MB to {sizes[-1] >> 20} MB (max/min)"
    rows.append(Row("size_spread", label, spread, f"{spread:.2f}"))

    y, lse = softpool_nd.forward(x, **kw)
    gy = np.ones_like(y)
    fwd = _peak_over(lambda: softpool_nd.pool(x, **kw), y.nbytes)
    bwd = _peak_over(lambda: softpool_nd.backward(gy, x, y=y, lse=lse, **kw), x.nbytes)
    extra = (fwd - 1) * y.nbytes / (x.nbytes + y.nbytes)
    rows.append(
        Row(
            "forward_peak",
            "forward peak allocation beyond the output / (input + output size)",
            extra,
            f"{extra:.3f} (peak / output {fwd:.3f})",
        )
    )
    rows.append(Row("backward_peak", "backward peak allocation / grad_x size", bwd, f"{bwd:.3f}"))

    first = cold[0][1]
    label = "cold numba cache: first call of the process's first class (2-D forward, numba's start-up included)"
    rows.append(Row("cold_first", label, first, f"{first:.1f} s"))
    rest = [(t, f"{name} {way}") for name, *ts in cold for t, way in zip(ts, ("forward", "backward"))][1:]
    worst, slowest = max(rest)
    median = float(np.median([t for t, _ in rest]))
    label = f"cold numba cache: the other first calls (each case's forward and backward), median / slowest ({slowest})"
    rows.append(Row("cold_rest", label, worst, f"{median:.1f} s / {worst:.1f} s"))

    # issue #14: the training path; quick mode runs NCHW only on the reference
    # shape at 1/16 of the data (each torch.compile takes 20-40 s on a loaded 2-core machine)
    rows += _tiny_rows(2 * rounds)
    shapes, layouts = _training_shapes(quick), (False,) if quick else (False, True)
    rows += _training_rows_by_default(shapes, layouts, rounds, threads)
    if _PASSIVE_SET and CALLER_WAIT_POLICY is None:
        # what a user gains by setting OMP_WAIT_POLICY=PASSIVE: torch's workers sleep after each operation
        passive = [r for r in training_rows(shapes, layouts, rounds) if r.key.startswith("training_compiled")]
        rows += [
            replace(
                r,
                key=r.key.replace("training_compiled", "training_passive"),
                label=r.label + ", OMP_WAIT_POLICY=PASSIVE",
            )
            for r in passive
        ]

    imp, first = _first_call_seconds(ref)
    rows.append(Row("import", "import softpool_nd in a fresh process", imp, f"{imp:.2f} s"))
    rows.append(Row("first_call", "first pool() in a fresh process (warm numba cache)", first, f"{first:.2f} s"))
    return rows


def _training_shapes(quick):
    """TRAINING_SHAPES; in quick mode the first (the reference) at a quarter of its batch and channels."""
    shapes = list(TRAINING_SHAPES)
    if quick:
        shapes[0] = tuple(n // 4 if a < 2 else n for a, n in enumerate(shapes[0]))
    return shapes


def run(quick: bool = False, threads: int = 2, out=print) -> str:
    """Measure (:func:`measure`), then print and return the table of measurements.

    Parameters
    ----------
    quick, threads
        As in :func:`measure`.
    out : callable
        Receives the table (``print`` by default; pass ``lambda s: None`` to stay silent).

    Returns
    -------
    str
        The markdown table of measurements.

    Examples
    --------
    >>> from softpool_nd import bench
    >>> table = bench.run(quick=True, out=lambda s: None)  # doctest: +SKIP
    >>> table.splitlines()[0]  # doctest: +SKIP
    '| measure | value |'
    """
    rows = measure(quick, threads)
    lines = ["| measure | value |", "|---|---|"] + [f"| {r.label} | {r.text} |" for r in rows]
    if not any(r.key.startswith("forward_speedup") for r in rows):
        lines.append("(torch is not installed: no ratios against PyTorch)")
    table = "\n".join(lines)
    out(table)
    return table
