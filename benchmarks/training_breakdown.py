"""Where the time of a training step through softpool_nd.torch goes, against memory bandwidth.

For each shape and layout of issue #14's training rows (float32, k2s2; NCHW
and channels_last), one interleaved timing (medians, one process, 2 torch
and numba threads by default) of:

- ``step``: the training step users run: ``soft_pool`` (forward with lse)
  then ``torch.autograd.grad`` (the backward op);
- ``step (compiled)``: the same step inside ``torch.compile`` (a user who
  compiles the model: the custom operators run from inductor's graph);
- ``fwd_kernel`` / ``bwd_kernel``: :func:`softpool_nd.forward` and
  :func:`softpool_nd.backward` called directly on NumPy views of the same
  memory (kernel time); ``step - fwd_kernel - bwd_kernel`` is what the
  adapter and autograd add;
- ``... (no cache)``: the same three with softpool_nd's output cache off
  (``softpool_nd.set_output_cache(0)``): every output fresh memory;
- ``compiled`` / ``eager``: the same step on the formula
  ``avg_pool(x*exp(x))/avg_pool(exp(x))`` under ``torch.compile`` / eagerly;
- ``pool`` and ``no_grad``: ``softpool_nd.pool`` and the adapter under
  ``torch.no_grad`` (issue #14's ratio rows);
- ``np_copyto`` / ``np_copy`` / ``clone``: copies of the input (into a
  preallocated array; into a new array; ``torch.clone``), the bandwidth
  baselines; the difference of the first two is the price of first touching
  newly allocated memory (page faults), which every output pays;
- ``np_exp`` / ``torch_exp``: one vectorised exp of every input element into
  a preallocated array, the compute baseline: a training step evaluates at
  least one exp per input element (ours two: forward and backward; so does
  the formula's), so ``2 * exp`` is a floor of the same kind as the
  bandwidth floor.

Every row is also given as effective GB/s and as a fraction of the copy's
bandwidth, from the bytes the implementation must move at least (N = input
elements, k2s2 so outputs have N/4; 4 bytes each):

- copy: read N, write N (2N);
- softpool_nd step: forward reads x, writes y and lse (1.5N); backward reads
  grad_y, y, lse (0.75N) and x, writes grad_x (2N): 4.25N;
- formula step, the least any implementation of the task moves (forward reads
  x, writes y; backward reads grad_y and x, writes grad_x): 3.5N. Inductor's
  own graph moves at least this much (it also keeps pooled intermediates).

``floor`` is the step's byte count at the preallocated copy's bandwidth: no
implementation moving those bytes runs faster, so ``compiled / floor(ours)``
bounds the speed-up over the compiled formula that ``softpool_nd`` can reach.

Every timed call comes right after a torch ReLU of the input's size (``preceding_layer``), as in a network,
under the OpenMP wait policy of the environment (OpenMP's default, whose workers spin after each torch
operation, unless ``OMP_WAIT_POLICY`` is set: run it both ways to see what spinning costs).

Run: ``PYTHONPATH=. python benchmarks/training_breakdown.py [--rounds 9]
[--shapes 0,1,2] [--layouts nchw,cl] [--threads 2]``.
"""

import argparse
import time

import numpy as np

from benchmarks.compare import TRAINING_TARGETS
from softpool_nd.bench import TRAINING_SHAPES, _set_threads, preceding_layer, timeit_interleaved, training_steps

#: Minimum bytes moved per input element (float32) by each row; None: not a bandwidth row.
BYTES_PER_ELEMENT = {
    "np_copyto": 2 * 4,
    "np_copy": 2 * 4,
    "clone": 2 * 4,
    "step": 4.25 * 4,
    "step (no cache)": 4.25 * 4,
    "step (compiled)": 4.25 * 4,
    "fwd_kernel": 1.5 * 4,
    "fwd_kernel (no cache)": 1.5 * 4,
    "bwd_kernel": 2.75 * 4,
    "bwd_kernel (no cache)": 2.75 * 4,
    "kernels": 4.25 * 4,
    "compiled": 3.5 * 4,
    "eager": 3.5 * 4,
    "pool": 1.25 * 4,
    "no_grad": 1.25 * 4,
    "np_exp": 2 * 4,
    "torch_exp": 2 * 4,
}


def breakdown_fns(shape, channels_last):
    """The timed callables of one shape and layout (see the module docstring)."""
    import torch

    import softpool_nd
    import softpool_nd.torch

    fns = training_steps(shape, channels_last)
    del fns["forward"]  # forward() alone is fwd_kernel
    fns["step"] = fns.pop("softpool_nd")
    xg = x_grad(shape, channels_last)
    ours = torch.compile(lambda t: softpool_nd.torch.soft_pool(t, 2), dynamic=False)
    gy_t = torch.ones_like(ours(xg))
    fns["step (compiled)"] = lambda: torch.autograd.grad(ours(xg), xg, gy_t)
    # the same data and memory layout as training_steps' tensors, seen by NumPy
    x = torch.from_numpy(_input(shape))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        x_np, kw = x.numpy().transpose(0, 2, 3, 1), dict(kernel=2, axes=(1, 2))
    else:
        x_np, kw = x.numpy(), dict(kernel=2)
    y, lse = softpool_nd.forward(x_np, **kw)
    gy = np.ones_like(y)
    dst = np.empty_like(x_np)
    dst_t = torch.empty_like(x)
    fns.update(
        fwd_kernel=lambda: softpool_nd.forward(x_np, **kw),
        bwd_kernel=lambda: softpool_nd.backward(gy, x_np, y=y, lse=lse, **kw),
        np_copyto=lambda: np.copyto(dst, x_np),
        np_copy=lambda: x_np.copy(),
        clone=lambda: x.clone(memory_format=torch.preserve_format),
        np_exp=lambda: np.exp(x_np, out=dst),
        torch_exp=lambda: torch.exp(x, out=dst_t),
    )
    for name in ("step", "fwd_kernel", "bwd_kernel"):
        fns[f"{name} (no cache)"] = _without_output_cache(fns[name])
    return fns


def _without_output_cache(fn):
    """``fn`` run with softpool_nd's output cache off: every output fresh memory, as before the cache."""
    import softpool_nd

    def run():
        limit = softpool_nd.set_output_cache(0)
        try:
            return fn()
        finally:
            softpool_nd.set_output_cache(limit)

    return run


def x_grad(shape, channels_last):
    """A float32 input that requires grad, in the layout of ``training_steps``' tensors."""
    import torch

    x = torch.from_numpy(_input(shape))
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.requires_grad_(True)


def _input(shape):
    from softpool_nd.bench import Case, make_input

    return make_input(Case("", shape))


def measure(shape, channels_last, rounds):
    """Median seconds of every row, interleaved in one run; plus the derived 'kernels' and 'adapter' rows."""
    t = timeit_interleaved(
        breakdown_fns(shape, channels_last), rounds=rounds, before=preceding_layer(shape, channels_last)
    )
    t["kernels"] = t["fwd_kernel"] + t["bwd_kernel"]
    t["adapter"] = t["step"] - t["kernels"]
    return t


def table(shape, channels_last, t):
    """Markdown lines: every row's time, share of the step, GB/s and fraction of copy bandwidth; then the verdict."""
    n = int(np.prod(shape))
    bw = 2 * 4 * n / t["np_copyto"]  # bytes/s of the preallocated copy
    name = f"{shape} {'channels_last' if channels_last else 'NCHW'}"
    lines = [
        f"### {name}",
        "",
        "| row | ms | / step | GB/s (min bytes) | % of copy bandwidth |",
        "|---|---|---|---|---|",
    ]
    for k in (
        "step",
        "step (no cache)",
        "step (compiled)",
        "fwd_kernel",
        "fwd_kernel (no cache)",
        "bwd_kernel",
        "bwd_kernel (no cache)",
        "kernels",
        "adapter",
        "compiled",
        "eager",
        "pool",
        "no_grad",
        "np_copyto",
        "np_copy",
        "clone",
        "np_exp",
        "torch_exp",
    ):
        b = BYTES_PER_ELEMENT.get(k)
        gbs = f"{b * n / t[k] / 1e9:.1f}" if b else "-"
        pct = f"{b * n / t[k] / bw * 100:.0f}%" if b else "-"
        lines.append(f"| {k} | {t[k] * 1e3:.3f} | {t[k] / t['step']:.2f} | {gbs} | {pct} |")
    floor_ours = BYTES_PER_ELEMENT["step"] * n / bw
    floor_task = BYTES_PER_ELEMENT["compiled"] * n / bw
    target = TRAINING_TARGETS[TRAINING_SHAPES.index(shape)]
    floor_exp = 2 * min(t["np_exp"], t["torch_exp"])
    lines += [
        "",
        f"two exp passes (forward and backward each evaluate one exp per input element): {floor_exp * 1e3:.2f} ms; "
        f"compiled / that: {t['compiled'] / floor_exp:.2f}x",
        f"copy bandwidth {bw / 1e9:.1f} GB/s; step floor at that bandwidth: softpool_nd (4.25N) "
        f"{floor_ours * 1e3:.2f} ms, any implementation (3.5N) {floor_task * 1e3:.2f} ms",
        f"speed-up vs compiled formula: {t['compiled'] / t['step']:.2f}x (target >= {target:g}x); "
        f"reachable at the bandwidth floor: {t['compiled'] / floor_ours:.2f}x (softpool_nd's bytes), "
        f"{t['compiled'] / floor_task:.2f}x (the task's minimum bytes)",
        f"forward()/pool() {t['fwd_kernel'] / t['pool']:.2f} (<= 1.3); no_grad adapter/pool() "
        f"{t['no_grad'] / t['pool']:.2f} (<= 1.15); adapter+autograd overhead {t['adapter'] * 1e3:.3f} ms "
        f"({t['adapter'] / t['step'] * 100:.0f}% of the step)",
        f"softpool_nd's step inside torch.compile / eager: {t['step (compiled)'] / t['step']:.2f}",
        "with the output cache / without (softpool_nd.set_output_cache(0)): step "
        f"{t['step'] / t['step (no cache)']:.2f}, forward() {t['fwd_kernel'] / t['fwd_kernel (no cache)']:.2f}, "
        f"backward {t['bwd_kernel'] / t['bwd_kernel (no cache)']:.2f}",
        "",
    ]
    return lines


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--shapes", default="0,1,2", help="indices into TRAINING_SHAPES")
    p.add_argument("--layouts", default="nchw,cl")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args(argv)
    _set_threads(a.threads)
    for i in (int(s) for s in a.shapes.split(",")):
        for layout in a.layouts.split(","):
            start = time.perf_counter()
            t = measure(TRAINING_SHAPES[i], layout == "cl", a.rounds)
            print("\n".join(table(TRAINING_SHAPES[i], layout == "cl", t)), flush=True)
            print(f"({time.perf_counter() - start:.0f} s including compilation)\n", flush=True)


if __name__ == "__main__":
    main()
