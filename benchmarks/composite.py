"""CPU speed of the composite (standard-ops) SoftPool against the kernels, as ratios in one process.

Usage: ``python benchmarks/composite.py [jax|torch] [--quick]``.

- jax: ``softpool_nd.jax.soft_pool`` with ``impl='xla'`` (the decomposition,
  compiled by XLA) and ``impl='callback'`` (numba kernels through
  ``pure_callback``), and the ``jax.numpy`` formula a user would write
  (``sum_pool(x * exp(x)) / sum_pool(exp(x))`` by ``lax.reduce_window``,
  kernel = stride only, no stability), all under ``jax.jit``; the forward pass
  and ``jax.grad`` of a sum.
- torch: ``softpool_nd.torch.soft_pool`` with ``impl='composite'`` under
  ``torch.compile`` against the default (the custom op on the kernels),
  forward under ``no_grad`` and a forward+backward step.

Each row: medians of interleaved runs (:func:`softpool_nd.bench.timeit_interleaved`),
as times relative to the first contender. The machine's load moves all
contenders alike, but only roughly: quote the ratios with the load.
"""

import sys

from softpool_nd import bench

bench.use_passive_wait_policy()  # before torch loads (see softpool_nd.bench)

import numpy as np  # noqa: E402

SHAPES = [(16, 64, 112, 112), (64, 64, 32, 32), (8, 16, 16, 16)]
QUICK_SHAPES = [(4, 32, 56, 56), (8, 16, 16, 16)]


def _line(label, times, first):
    base = times[first]
    ratios = ", ".join(f"{k} {v / base:.2f}x" for k, v in times.items())
    return f"{label}: {first} {base * 1e3:.2f} ms; {ratios}"


def run_jax(shapes, rounds):
    import jax
    import jax.numpy as jnp

    from softpool_nd.jax import soft_pool

    def formula(x):
        e = jnp.exp(x)
        win = (1, 1, 2, 2)
        num = jax.lax.reduce_window(x * e, 0.0, jax.lax.add, win, win, "VALID")
        return num / jax.lax.reduce_window(e, 0.0, jax.lax.add, win, win, "VALID")

    fns = {
        "xla": jax.jit(lambda x: soft_pool(x, 2, impl="xla")),
        "callback": jax.jit(lambda x: soft_pool(x, 2, impl="callback")),
        "jnp formula": jax.jit(formula),
    }
    for shape in shapes:
        x = jnp.asarray(np.random.default_rng(0).standard_normal(shape, np.float32))
        fwd = {k: (lambda f=f: f(x).block_until_ready()) for k, f in fns.items()}
        print(_line(f"jax forward {shape}", bench.timeit_interleaved(fwd, rounds=rounds), "callback"), flush=True)
        grads = {k: jax.jit(jax.grad(lambda x, f=f: f(x).sum())) for k, f in fns.items()}
        bwd = {k: (lambda g=g: g(x).block_until_ready()) for k, g in grads.items()}
        print(_line(f"jax grad {shape}", bench.timeit_interleaved(bwd, rounds=rounds), "callback"), flush=True)


def run_torch(shapes, rounds):
    import torch

    from softpool_nd.torch import soft_pool

    torch.set_num_threads(2)
    kernels = torch.compile(lambda x: soft_pool(x, 2), dynamic=False)
    comp = torch.compile(lambda x: soft_pool(x, 2, impl="composite"), dynamic=False)
    for shape in shapes:
        x = torch.randn(shape)
        with torch.no_grad():
            t = bench.timeit_interleaved({"kernels": lambda: kernels(x), "composite": lambda: comp(x)}, rounds=rounds)
        print(_line(f"torch.compile forward, no_grad {shape}", t, "kernels"), flush=True)
        xg = x.clone().requires_grad_()

        def step(f):
            f(xg).sum().backward()
            xg.grad = None

        t = bench.timeit_interleaved({"kernels": lambda: step(kernels), "composite": lambda: step(comp)}, rounds=rounds)
        print(_line(f"torch.compile forward+backward {shape}", t, "kernels"), flush=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    quick = "--quick" in args
    shapes, rounds = (QUICK_SHAPES, 5) if quick else (SHAPES, 7)
    if "torch" not in args:
        run_jax(shapes, rounds)
    if "jax" not in args:
        run_torch(shapes, rounds)
