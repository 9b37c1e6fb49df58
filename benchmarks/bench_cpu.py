"""asv benchmarks of the CPU backend: time, peak memory and ratios against PyTorch.

One axis varies at a time around the reference case (2-d k2s2 float32 NCHW):
rank (1-, 2-, 3- and 5-d pooling), overlap (k2s2, k3s2), dtype (f16, f32,
f64) and layout (NCHW, channels-last), each at two sizes: "small", where
call overhead shows, and "large". Forward is ``pool`` (no lse) and
``forward`` (with lse); backward is the exact gradient with y and lse from
forward. The cases and the interleaved timer come from
:mod:`softpool_nd.bench`, so ``benchmarks/compare.py`` and these benchmarks
measure the same thing; ``track_`` benchmarks return ratios against PyTorch
measured side by side in one process and are skipped when torch is absent.
numba and torch both use 2 threads, the CI-class machine's core count.
"""

import ast

import numpy as np

from softpool_nd import bench

bench.use_passive_wait_policy()  # before torch loads (see softpool_nd.bench)

import softpool_nd  # noqa: E402 (after the wait policy)

THREADS = 2

_SMALL = {1: (2, 8, 512), 2: (2, 8, 32, 32), 3: (1, 4, 8, 16, 16), 5: (1, 2, 4, 4, 4, 8, 8)}
_LARGE = {1: (32, 64, 4096), 2: (16, 64, 112, 112), 3: (4, 32, 16, 56, 56), 5: (1, 4, 8, 8, 8, 16, 16)}


def _case(axis, value, size):
    """The reference case with one axis set to ``value``."""
    rank = value if axis == "rank" else 2
    shape = (_SMALL if size == "small" else _LARGE)[rank]
    kernel = 3 if (axis, value) == ("overlap", "k3s2") else 2
    dtype = value if axis == "dtype" else "float32"
    channels_last = (axis, value) == ("layout", "NHWC")
    if channels_last:
        shape = (shape[0],) + shape[2:] + (shape[1],)
    return bench.Case(f"{axis}={value} {size}", shape, kernel, 2, dtype, channels_last)


class _Pooling:
    """Setup shared by every benchmark: the input, y, lse and grad_y of one case."""

    timeout = 300

    def setup(self, value, size):
        bench._set_threads(THREADS)
        self.case = _case(self.axis, value, size)
        self.x = bench.make_input(self.case)
        self.kw = self.case.kwargs()
        self.y, self.lse = softpool_nd.forward(self.x, **self.kw)
        self.gy = np.ones_like(self.y)

    def time_pool(self, value, size):
        softpool_nd.pool(self.x, **self.kw)

    def time_forward_with_lse(self, value, size):
        softpool_nd.forward(self.x, **self.kw)

    def time_backward(self, value, size):
        softpool_nd.backward(self.gy, self.x, y=self.y, lse=self.lse, **self.kw)

    def peakmem_pool(self, value, size):
        softpool_nd.pool(self.x, **self.kw)

    def peakmem_backward(self, value, size):
        softpool_nd.backward(self.gy, self.x, y=self.y, lse=self.lse, **self.kw)


class Rank(_Pooling):
    axis = "rank"
    params = ([1, 2, 3, 5], ["small", "large"])
    param_names = ["rank", "size"]


class Overlap(_Pooling):
    axis = "overlap"
    params = (["k2s2", "k3s2"], ["small", "large"])
    param_names = ["overlap", "size"]


class Dtype(_Pooling):
    axis = "dtype"
    params = (["float16", "float32", "float64"], ["small", "large"])
    param_names = ["dtype", "size"]


class Layout(_Pooling):
    axis = "layout"
    params = (["NCHW", "NHWC"], ["small", "large"])
    param_names = ["layout", "size"]


class TorchRatios:
    """Speed-ups against the PyTorch formula and time relative to torch's avg_pool, in one process.

    Every case is measured once per run, in ``setup_cache``, for the three track methods (as TrainingStep).
    """

    params = ([case.name for case in bench.CASES],)
    param_names = ["case"]
    timeout = 600
    unit = "ratio"

    def setup_cache(self):
        """{case name: median seconds per function}, without the cases torch has no pooling for; empty
        when torch is not installed."""
        bench._set_threads(THREADS)
        times = {}
        for case in bench.CASES:
            x = bench.make_input(case)
            base = bench.torch_baselines(case, x)
            if base is None:
                continue
            kw = case.kwargs()
            y, lse = softpool_nd.forward(x, **kw)
            gy = np.ones_like(y)
            ours = {
                "pool": lambda: softpool_nd.pool(x, **kw),
                "backward": lambda: softpool_nd.backward(gy, x, y=y, lse=lse, **kw),
            }
            times[case.name] = bench.timeit_interleaved({**ours, **base}, rounds=5)
        return times

    setup_cache.timeout = 3600  # every case, each 5 interleaved rounds (the class timeout is per call)

    def setup(self, times, name):
        if name not in times:
            raise NotImplementedError("torch is not installed or has no pooling of this rank")
        self.t = times[name]

    def track_forward_speedup_vs_torch_formula(self, times, name):
        return self.t["formula"] / self.t["pool"]

    def track_backward_speedup_vs_torch_autograd(self, times, name):
        return self.t["formula_backward"] / self.t["backward"]

    def track_forward_time_over_torch_avg_pool(self, times, name):
        return self.t["pool"] / self.t["avg_pool"]


def _forget_compiled_code():
    """Clear torch.compile's caches: the next shape compiles for its static shape, as in a fresh process
    (dynamo would otherwise recompile the shared formula with dynamic shapes)."""
    import torch._dynamo  # torch is installed: training_steps gave its functions

    torch._dynamo.reset()


class TrainingStep:
    """Issue #14's rows: the training step through softpool_nd.torch against the eager and the
    compiled PyTorch formula, forward() with lse and the no-grad adapter against pool(), in one process.

    Every (shape, layout) is measured once per run, in ``setup_cache``, whose result feeds the four track
    methods: a ``setup`` would repeat the torch.compile and the timed rounds once per method and parameter
    (4 x 6 times; it was about half of CI's time). torch's compiled code is forgotten between parameters
    (:func:`_forget_compiled_code`). asv gives a benchmark no way to know it runs under ``--quick``, so quick
    runs measure the same parameters.
    """

    params = ([str(s) for s in bench.TRAINING_SHAPES], ["NCHW", "channels_last"])
    param_names = ["shape", "layout"]
    timeout = 900
    unit = "ratio"

    def setup_cache(self):
        """{(shape, layout): median seconds per function}; empty when torch is not installed."""
        bench._set_threads(THREADS)
        times = {}
        for shape in self.params[0]:
            for layout in self.params[1]:
                fns = bench.training_steps(ast.literal_eval(shape), layout == "channels_last")
                if fns is None:
                    return times
                before = bench.preceding_layer(ast.literal_eval(shape), layout == "channels_last")
                times[shape, layout] = bench.timeit_interleaved(fns, rounds=5, before=before)
                _forget_compiled_code()
        return times

    setup_cache.timeout = 3600  # six parameters, each a torch.compile and 5 rounds (the class timeout is per call)

    def setup(self, times, shape, layout):
        if not times:
            raise NotImplementedError("torch is not installed")
        self.t = times[shape, layout]

    def track_forward_with_lse_over_pool(self, times, shape, layout):
        return self.t["forward"] / self.t["pool"]

    def track_no_grad_adapter_over_pool(self, times, shape, layout):
        return self.t["no_grad"] / self.t["pool"]

    def track_training_step_speedup_vs_eager_formula(self, times, shape, layout):
        return self.t["eager"] / self.t["softpool_nd"]

    def track_training_step_speedup_vs_compiled_formula(self, times, shape, layout):
        return self.t["compiled"] / self.t["softpool_nd"]


class TinyCall:
    """Per-call time of pool() on tiny inputs: the serial path (no numba thread woken)."""

    params = ([str(s) for s in bench.TINY_SHAPES],)
    param_names = ["shape"]

    def setup(self, shape):
        bench._set_threads(THREADS)
        self.fns = bench.tiny_calls(ast.literal_eval(shape))

    def time_pool_serial_path(self, shape):
        self.fns["serial"]()

    def time_pool_on_numba_threads(self, shape):
        self.fns["parallel"]()
