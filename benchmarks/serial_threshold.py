"""Where the serial driver stops paying: per-call time of the CPU kernels run
on the calling thread (one task, no parallel region) and on numba's threads,
by input size, interleaved in one process.

``softpool_nd.cpu.backend.SERIAL_BELOW`` is set from this script's output: the
smallest size at which the parallel call is clearly faster. Both wait policies
matter (numba's threads sleep between calls under OMP_WAIT_POLICY=PASSIVE,
which ``softpool_nd.bench`` sets; they spin for a while by default): run it
both ways, e.g. ``OMP_WAIT_POLICY=PASSIVE python benchmarks/serial_threshold.py``.

Usage: ``python benchmarks/serial_threshold.py [threads]`` (default 2).
"""

import sys

import numba
import numpy as np

from softpool_nd._geometry import make_geometry
from softpool_nd._loops import element_strides
from softpool_nd.bench import timeit_interleaved
from softpool_nd.cpu import backend

#: float32 inputs of 2 x 8 x h x h, k2s2 (the reference class), from 0.5 kB on.
SIDES = (4, 8, 12, 16, 24, 32, 48, 64, 96, 128)


def main(threads):
    numba.set_num_threads(threads)
    print(f"threads={threads}; per-call microseconds, serial / parallel ({8 * threads} tasks)")
    print("| elements | forward serial | forward parallel | ratio | backward serial | backward parallel | ratio |")
    print("|---|---|---|---|---|---|---|")
    for h in SIDES:
        x = np.random.default_rng(0).standard_normal((2, 8, h, h), dtype=np.float32)
        geom = make_geometry(x.shape, 2)
        xs = element_strides(x)
        _, tab, fwd = backend._forward_plan(geom, xs)
        _, btab, bwd = backend._backward_plan(geom, xs, xs)
        xf = backend._flat(x)[0]
        y = np.empty(geom.out_shape, np.float32).reshape(-1)
        lse = np.empty_like(y)
        gy = np.ones_like(y)
        gx = np.empty(x.size, np.float32)
        beta = np.float32(1.0)
        reps = max(1, 2**16 // x.size)

        def f(tasks):
            return lambda: [fwd(xf, 0, tab, beta, y, lse, True, tasks) for _ in range(reps)]

        def b(tasks):
            return lambda: [bwd(xf, 0, btab, beta, gy, y, lse, True, gx, tasks) for _ in range(reps)]

        par = 8 * threads
        t = timeit_interleaved({"fs": f(1), "fp": f(par), "bs": b(1), "bp": b(par)}, rounds=15)
        t = {k: v / reps * 1e6 for k, v in t.items()}
        print(
            f"| {x.size} | {t['fs']:.1f} | {t['fp']:.1f} | {t['fs'] / t['fp']:.2f} "
            f"| {t['bs']:.1f} | {t['bp']:.1f} | {t['bs'] / t['bp']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2)
