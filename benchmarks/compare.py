"""The CPU table against PyTorch, with the project's targets and whether each is met, in one run, without asv.

Usage: ``python benchmarks/compare.py [--quick]``. The measurements come from
:func:`softpool_nd.bench.measure` (which ``softpool-nd bench`` prints without
targets); the targets and the acceptance live here. Exit status 1 when a
target is missed.

Run from the repository root, ``benchmarks/training_breakdown.py`` and others
import :func:`timeit_interleaved`, :func:`training_steps` and
:func:`_training_rows` from here (``from benchmarks.compare import ...``, or
``from compare import ...`` in a script in this folder).
"""

import re
import sys

from softpool_nd.bench import (  # noqa: F401 (re-exported for the scripts in this folder)
    measure,
    timeit_interleaved,
    training_rows,
    training_steps,
    use_passive_wait_policy,
)

#: Training step through softpool_nd.torch: speed-up over torch.compile of the formula, per TRAINING_SHAPES entry.
TRAINING_TARGETS = (3.0, 1.5, 1.0)

#: key (without its [index]) -> (target as printed, test of the row's value)
TARGETS = {
    "avg_pool_ratio": ("<= 1.5", lambda v: v <= 1.5),
    "nhwc_ratio": ("<= 1.3", lambda v: v <= 1.3),
    "float16_ratio": ("<= 1.0", lambda v: v <= 1.0),
    "threads_speedup": (">= 1.7x", lambda v: v >= 1.7),
    "size_spread": ("<= 1.3", lambda v: v <= 1.3),
    "forward_peak": ("<= 0.05", lambda v: v <= 0.05),
    "backward_peak": ("<= 1 + small", lambda v: v <= 1.05),
    "cold_first": ("< 5 s", lambda v: v < 5),
    "cold_rest": ("< 5 s", lambda v: v < 5),
    "tiny": ("serial <= threads", lambda v: v <= 1.0),
    "training_forward": ("<= 1.3", lambda v: v <= 1.3),
    "training_no_grad": ("<= 1.15", lambda v: v <= 1.15),
    "training_eager": ("-", lambda v: True),
    "training_passive": ("-", lambda v: True),
    "import": ("< 0.5 s", lambda v: v < 0.5),
    "first_call": ("< 1 s", lambda v: v < 1.0),
}


def target(key, training_targets=TRAINING_TARGETS):
    """(target as printed, test) of the row keyed ``key``."""
    name, index = re.fullmatch(r"([a-z_0-9]+)(?:\[(.*)\])?", key).groups()
    if name in ("forward_speedup", "backward_speedup"):
        need = 8 if index == "0" else 5  # the reference case, then the others
        return f">= {need}x", lambda v: v >= need
    if name == "training_compiled":
        need = training_targets[int(index)]
        return f">= {need:g}x", lambda v: v >= need
    return TARGETS[name]


def _line(row, training_targets=TRAINING_TARGETS):
    text, ok = target(row.key, training_targets)
    return f"| {row.label} | {row.text} | {text} | {'yes' if ok(row.value) else 'NO'} |"


def _training_rows(shapes, layouts, rounds, lines):
    """Append the training rows of ``shapes`` ((shape, target speed-up over compiled formula) pairs) to ``lines``."""
    rows = training_rows([shape for shape, _ in shapes], layouts, rounds)
    if not rows:
        lines.append("| training rows | - | - | torch not installed |")
    lines += [_line(r, [t for _, t in shapes]) for r in rows]


def run(quick=False, threads=2, out=print):
    """Measure, print the table with targets; True when every target is met."""
    rows = measure(quick, threads)
    lines = ["| measure | value | target | met |", "|---|---|---|---|"] + [_line(r) for r in rows]
    if not any(r.key.startswith("forward_speedup") for r in rows):
        lines.append("(torch is not installed: no ratios against PyTorch)")
    out("\n".join(lines))
    return all(target(r.key)[1](r.value) for r in rows)


if __name__ == "__main__":
    use_passive_wait_policy()  # first: before torch loads and numba's first parallel call
    sys.exit(0 if run(quick="--quick" in sys.argv[1:]) else 1)
