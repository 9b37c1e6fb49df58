"""Speed of the CPU kernels under numba's threading layers, side by side (issue 13, item 2).

Usage: ``python benchmarks/threading_layers.py [--rounds N] [--layers tbb,omp,workqueue]``.

The layer is chosen once per process, so each (round, layer) is a fresh
process that times every case (median of its repeats); the processes of the
layers alternate round after round, so a machine whose load drifts slows all
layers alike, and each layer's figure is the median over rounds. Threads: 2
(``NUMBA_NUM_THREADS``), ``OMP_WAIT_POLICY`` left to the caller.
"""

import argparse
import json
import os
import subprocess
import sys

_CHILD = r"""
import json, time, numpy as np, numba, softpool_nd
cases = [
    ("pool 1-D 64 f64 (call overhead)", (64,), {"kernel": 2}, "pool"),
    ("pool (1,3,32,32) k2s2 f32", (1, 3, 32, 32), {"kernel": 2}, "pool"),
    ("pool (8,64,56,56) k2s2 f32", (8, 64, 56, 56), {"kernel": 2}, "pool"),
    ("pool (8,64,56,56) k3s2p1 f32", (8, 64, 56, 56), {"kernel": 3, "stride": 2, "padding": 1}, "pool"),
    ("backward (8,64,56,56) k3s2p1 f32", (8, 64, 56, 56), {"kernel": 3, "stride": 2, "padding": 1}, "backward"),
    ("pool (16,64,112,112) k2s2 f32 (reference)", (16, 64, 112, 112), {"kernel": 2}, "pool"),
]
out = {"layer": None}
for name, shape, kw, what in cases:
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32 if len(shape) > 1 else np.float64)
    if what == "pool":
        f = lambda: softpool_nd.pool(x, **kw)
    else:
        y, lse = softpool_nd.forward(x, **kw)
        gy = np.ones_like(y)
        f = lambda: softpool_nd.backward(gy, x, y=y, lse=lse, **kw)
    f()
    t0 = time.perf_counter(); f(); once = time.perf_counter() - t0
    n = max(1, min(2000, int(0.02 / max(once, 1e-7))))  # about 20 ms per repeat
    times = []
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(n):
            f()
        times.append((time.perf_counter() - t0) / n)
    out[name] = sorted(times)[len(times) // 2]
out["layer"] = numba.threading_layer()
print(json.dumps(out))
"""


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--layers", default="tbb,omp")
    args = p.parse_args()
    layers = args.layers.split(",")
    runs = {layer: [] for layer in layers}
    for r in range(args.rounds):
        for layer in layers[::-1] if r % 2 else layers:  # alternate which layer goes first
            env = dict(os.environ, NUMBA_THREADING_LAYER=layer, NUMBA_NUM_THREADS="2")
            res = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True)
            got = json.loads(res.stdout.strip().splitlines()[-1])
            assert got.pop("layer") == layer, f"asked for {layer}, got another layer"
            runs[layer].append(got)
    names = list(runs[layers[0]][0])
    med = {layer: {n: sorted(r[n] for r in runs[layer])[len(runs[layer]) // 2] for n in names} for layer in layers}
    base = layers[-1]
    head = (
        f"{'case':45s}"
        + "".join(f"{layer:>12s}" for layer in layers)
        + "".join(f"{layer + '/' + base:>14s}" for layer in layers[:-1])
    )
    print(head)
    for n in names:
        row = f"{n:45s}" + "".join(f"{med[layer][n] * 1e6:10.1f}us" for layer in layers)
        row += "".join(f"{med[layer][n] / med[base][n]:14.2f}" for layer in layers[:-1])
        print(row)


if __name__ == "__main__":
    main()
