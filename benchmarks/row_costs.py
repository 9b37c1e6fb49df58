"""Fixed cost per row and cost per window of the CPU class kernels, one thread.

Short rows are where the CPU kernels lose (the 3-D case of issue #3 has rows
of 28 windows): this script times the k2s2 forward and backward class kernels
alone (no allocation, no Python per call) on rows of a growing number of
windows, each input 8 MB (in the L3 cache of the CI-class machine, so that
memory does not blur the row costs), and fits
``time per row = fixed + per_window * windows`` by least squares.

Usage: ``python benchmarks/row_costs.py [windows ...]`` (default 1 8 16 17
28 32 33 48 56 64 128 512).
"""

import sys

import numba
import numpy as np

import softpool_nd
from softpool_nd._geometry import make_geometry
from softpool_nd._loops import element_strides
from softpool_nd.bench import timeit_interleaved
from softpool_nd.cpu import backend

#: Output rows times windows per row, for every row length: 8 MB float32 inputs.
WINDOWS_TOTAL = 2**19


def _five(fn):
    """``fn`` called 5 times per timed call: one kernel call is too short to time alone."""
    return lambda: [fn() for _ in range(5)]


def row_times(windows):
    """(forward, backward) seconds per row of ``windows`` k2s2 windows (2 input rows of 2*windows cells)."""
    planes = max(1, WINDOWS_TOTAL // windows // 8)
    x = np.random.default_rng(0).standard_normal((1, planes, 16, 2 * windows), dtype=np.float32)
    geom = make_geometry(x.shape, 2)
    xs = element_strides(x)
    flat = lambda a: backend._flat(a)[0]  # read-only views, as the backend passes them
    y, lse = softpool_nd.forward(x)
    gy = np.ones_like(y)
    gx = np.empty_like(x)
    _, tab, fwd = backend._forward_plan(geom, xs)
    _, btab, bwd = backend._backward_plan(geom, xs, xs)
    tasks = 8 * numba.get_num_threads()
    beta = np.float32(1.0)
    t = timeit_interleaved(
        {
            "forward": _five(lambda: fwd(flat(x), 0, tab, beta, y.reshape(-1), lse.reshape(-1), False, tasks)),
            "backward": _five(
                lambda: bwd(flat(x), 0, btab, beta, flat(gy), flat(y), flat(lse), True, gx.reshape(-1), tasks)
            ),
        }
    )
    f, b = t["forward"] / 5, t["backward"] / 5
    out_rows = y.size // windows
    return f / out_rows, b / x.shape[1] / x.shape[2]


def main(windows):
    numba.set_num_threads(1)
    print("| windows per row | forward ns / output row | backward ns / input row |")
    print("|---|---|---|")
    rows = []
    for n in windows:
        f, b = row_times(n)
        rows.append((n, f, b))
        print(f"| {n} | {f * 1e9:.1f} | {b * 1e9:.1f} |")
    n = np.array([r[0] for r in rows], float)
    for name, col in (("forward", 1), ("backward", 2)):
        slope, fixed = np.polyfit(n, [r[col] * 1e9 for r in rows], 1)
        print(f"{name}: about {fixed:.0f} ns per row + {slope:.2f} ns per window (least squares, one thread)")


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1, 8, 16, 17, 28, 32, 33, 48, 56, 64, 128, 512])
