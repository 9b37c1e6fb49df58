"""Correctness and bandwidth report for the GPU backend, on a CUDA machine.

:func:`run` checks the CUDA kernels against the CPU backend on randomized
pooling configurations, then times forward and backward on large inputs
against a device-to-device copy of the input (the memory-bandwidth floor)
and, when PyTorch with CUDA is present, against the SoftPool formula written
with PyTorch's average pooling. ``benchmarks/gpu_check.py`` and the
command-line interface call it. :func:`random_config` and
:func:`random_layout` are the case generators the host-emulation tests share.
"""
from __future__ import annotations

import math
import statistics

import numpy as np

from .._geometry import make_geometry

__all__ = ["run", "available", "random_config", "random_layout", "TARGETS"]

#: Acceptance targets on an H100 (fractions of copy bandwidth, speed ratios).
TARGETS = {"forward_vs_copy": 0.80, "backward_vs_copy": 0.70, "vs_torch": 5.0, "half_vs_single": 1.7}

_F16, _F32, _F64 = np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64)
#: Relative tolerance of GPU against CPU results (different exp/log and summation order).
RTOL = {_F16: 2e-3, _F32: 2e-5, _F64: 1e-12}


def random_config(rng, max_rank=4, max_len=8):
    """A random valid ``(shape, pooling kwargs, Geometry)`` of rank 1 to ``max_rank``.

    Examples
    --------
    >>> shape, kw, geom = random_config(np.random.default_rng(0))
    >>> geom.in_shape == shape
    True
    """
    while True:
        ndim = int(rng.integers(1, max_rank + 1))
        shape = tuple(int(n) for n in rng.integers(1, max_len, ndim))
        n_axes = int(rng.integers(1, ndim + 1))
        axes = tuple(sorted(rng.choice(ndim, n_axes, replace=False).tolist()))
        kw = dict(
            kernel=tuple(int(k) for k in rng.integers(1, 4, n_axes)),
            axes=axes,
            stride=tuple(int(s) for s in rng.integers(1, 4, n_axes)),
            dilation=tuple(int(d) for d in rng.integers(1, 3, n_axes)),
            ceil_mode=bool(rng.integers(2)),
        )
        kw["padding"] = "same" if rng.random() < 0.2 else tuple(int(p) for p in rng.integers(0, 2, n_axes))
        try:
            return shape, kw, make_geometry(shape, **kw)
        except ValueError:
            continue  # e.g. a window made only of padding: draw again


def random_layout(rng, x, xp=np):
    """``x`` (of namespace ``xp``) in a random memory layout: as is, transposed, reversed or strided.

    Examples
    --------
    >>> x = np.arange(6.0).reshape(2, 3)
    >>> bool((random_layout(np.random.default_rng(1), x) == x).all())
    True
    """
    kind = int(rng.integers(4))
    if kind == 1:
        perm = tuple(int(a) for a in rng.permutation(x.ndim))
        return xp.ascontiguousarray(x.transpose(perm)).transpose(tuple(np.argsort(perm)))
    if kind == 2:
        flip = (slice(None, None, -1),) * x.ndim
        return x[flip].copy()[flip]
    if kind == 3:
        big = xp.zeros(tuple(2 * n for n in x.shape), x.dtype)
        view = big[(slice(None, None, 2),) * x.ndim]
        view[...] = x
        return view
    return x


def _worst(a, b):
    """Largest |a - b| relative to max(1, max |b|) over finite b; inf where non-finite positions differ."""
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    fa, fb = np.isfinite(a), np.isfinite(b)
    if (fa != fb).any() or not np.array_equal(a[~fb], b[~fb], equal_nan=True):
        return math.inf
    scale = max(float(np.abs(b[fb]).max(initial=0.0)), 1.0)
    return float(np.abs(a[fb] - b[fb]).max(initial=0.0)) / scale


def _correctness(cp, n_cases, seed=20261126):
    """Randomized comparison with the CPU backend; rows of (dtype, cases, worst error, ok)."""
    import softpool_nd

    rng = np.random.default_rng(seed)
    worst = {dt: 0.0 for dt in RTOL}
    count = {dt: 0 for dt in RTOL}
    deterministic = True
    for i in range(n_cases):
        shape, kw, geom = random_config(rng)
        dtype = list(RTOL)[i % 3]
        beta = float(rng.choice([1.0, 0.0, -0.7, 2.5]))
        x = (rng.standard_normal(shape) * 3).astype(dtype)
        if i % 5 == 0:
            x.reshape(-1)[rng.integers(x.size)] = rng.choice([np.inf, -np.inf, np.nan])
        gy = rng.standard_normal(geom.out_shape).astype(dtype)
        xg = random_layout(rng, cp.asarray(x), cp)
        gyg = random_layout(rng, cp.asarray(gy), cp)
        y, lse = softpool_nd.forward(x, beta=beta, **kw)
        yg, lseg = softpool_nd.forward(xg, beta=beta, **kw)
        errs = [_worst(cp.asnumpy(yg), y), _worst(cp.asnumpy(lseg), lse)]
        for gradient in ("exact", "weights"):
            gx = softpool_nd.backward(gy, x, y=y, lse=lse, beta=beta, gradient=gradient, **kw)
            gxg = softpool_nd.backward(gyg, xg, y=yg, lse=lseg, beta=beta, gradient=gradient, **kw)
            again = softpool_nd.backward(gyg, xg, y=yg, lse=lseg, beta=beta, gradient=gradient, **kw)
            deterministic &= bool((cp.asnumpy(gxg).view(np.uint8) == cp.asnumpy(again).view(np.uint8)).all())
            errs.append(_worst(cp.asnumpy(gxg), gx) / 4)
        worst[dtype] = max(worst[dtype], *errs)
        count[dtype] += 1
    rows = [(str(dt), count[dt], worst[dt], worst[dt] <= RTOL[dt]) for dt in RTOL]
    return rows, deterministic


def _timer(cp):
    def elapsed(fn):
        start, end = cp.cuda.Event(), cp.cuda.Event()
        start.record()
        fn()
        end.record()
        end.synchronize()
        return cp.cuda.get_elapsed_time(start, end) * 1e-3

    return elapsed


def _medians(cp, fns, reps):
    """Median seconds of each callable, runs interleaved so clocks and caches treat all alike."""
    elapsed = _timer(cp)
    for fn in fns.values():
        fn()  # warm-up: compilation, allocator pools
    times = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            times[k].append(elapsed(fn))
    return {k: statistics.median(v) for k, v in times.items()}


def _device_copy(dst, src):
    """cudaMemcpyAsync device to device on the current stream: the bandwidth floor."""
    dst.data.copy_from_device_async(src.data, src.nbytes)


def _torch_cuda():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def _torch_formula(torch, x, kw, nd):
    """SoftPool as the paper's PyTorch code writes it: avg_pool(x * e^x) / avg_pool(e^x)."""
    pool = getattr(torch.nn.functional, f"avg_pool{nd}d")
    args = dict(kernel_size=kw["kernel"], stride=kw.get("stride") or kw["kernel"], padding=kw.get("padding", 0))
    e = torch.exp(x)
    return pool(x * e, **args).div_(pool(e, **args))


_CASES = [
    # name, shape, dtype, pooling kwargs, pooled axes
    ("f32 2-D k2", (64, 64, 112, 112), _F32, dict(kernel=2)),
    ("f32 2-D k3s2", (64, 64, 112, 112), _F32, dict(kernel=3, stride=2, padding=1)),
    ("f32 3-D k2", (16, 32, 32, 56, 56), _F32, dict(kernel=2)),
    ("f16 2-D k2", (64, 64, 112, 112), _F16, dict(kernel=2)),
]


def _bench(cp, quick):
    """Timing rows: (case, pass, ms, GB/s, % of copy, torch ms or None, speed-up or None)."""
    import softpool_nd

    torch = _torch_cuda()
    reps = 5 if quick else 25
    rng = np.random.default_rng(0)
    rows, times = [], {}
    for name, shape, dtype, kw in _CASES:
        if quick:
            shape = (max(1, shape[0] // 16),) + shape[1:]
        x = cp.asarray(rng.standard_normal(shape, dtype=np.float32).astype(dtype))
        y, lse = softpool_nd.forward(x, **kw)
        gy = cp.ones_like(y)
        dst = cp.empty_like(x)
        fns = {
            "copy": lambda: _device_copy(dst, x),
            "forward": lambda: softpool_nd.forward(x, **kw),
            "backward": lambda: softpool_nd.backward(gy, x, y=y, lse=lse, **kw),
        }
        if torch is not None:
            xt = torch.from_dlpack(x).requires_grad_(True)
            yt = _torch_formula(torch, xt, kw, len(shape) - 2)
            gyt = torch.from_dlpack(gy)
            fns["torch forward"] = lambda: _torch_formula(torch, xt.detach(), kw, len(shape) - 2)
            fns["torch backward"] = lambda: torch.autograd.grad(yt, xt, gyt, retain_graph=True)
        t = _medians(cp, fns, reps)
        times[name] = t
        copy_bw = 2 * x.nbytes / t["copy"]
        traffic = {
            "forward": x.nbytes + y.nbytes + lse.nbytes,
            "backward": 2 * x.nbytes + gy.nbytes + y.nbytes + lse.nbytes,
        }
        for phase, target in (("forward", "forward_vs_copy"), ("backward", "backward_vs_copy")):
            bw = traffic[phase] / t[phase]
            frac = bw / copy_bw
            tt = t.get(f"torch {phase}")
            speedup = tt / t[phase] if tt is not None else None
            ok = frac >= TARGETS[target] and (speedup is None or speedup >= TARGETS["vs_torch"])
            rows.append((f"{name} {phase}", ok, t[phase] * 1e3, bw / 1e9, 100 * frac,
                         None if tt is None else tt * 1e3, speedup))
        rows.append((f"{name} copy", True, t["copy"] * 1e3, copy_bw / 1e9, 100.0, None, None))
    for phase in ("forward", "backward"):
        ratio = times["f32 2-D k2"][phase] / times["f16 2-D k2"][phase]
        rows.append((f"f16/f32 {phase} {ratio:.2f}x", ratio >= TARGETS["half_vs_single"],
                     None, None, None, None, None))
    return rows, torch is not None


def _fmt(v, spec):
    """``v`` formatted by ``spec``, or a dash of the same width."""
    return format("-", f">{spec.split('.')[0]}") if v is None else format(v, spec)


def available():
    """True when CuPy is installed and sees at least one CUDA device.

    Examples
    --------
    >>> from softpool_nd.gpu import check
    >>> isinstance(check.available(), bool)
    True
    """
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no cupy, no driver, too old a driver: all mean no usable GPU
        return False


def run(quick: bool = False) -> str:
    """Check and time the GPU backend on the current CuPy device; print and return the report.

    Parameters
    ----------
    quick : bool, default False
        Fewer random cases, 1/16 of the batch and fewer repetitions: a smoke test
        whose timings are printed but not judged against :data:`TARGETS`.

    Returns
    -------
    str
        The printed table. Rows marked FAIL missed a correctness tolerance or
        a target of :data:`TARGETS`.

    Examples
    --------
    >>> from softpool_nd.gpu import check
    >>> report = check.run(quick=True)  # doctest: +SKIP
    """
    from .cuda import require_cupy

    text = _report(require_cupy(), quick)
    print(text)
    return text


def _report(cp, quick):
    """The report of :func:`run` for array module ``cp`` (CuPy, or a stand-in in the tests)."""
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    dev = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    lines = [f"softpool_nd GPU check on {dev} ({'quick' if quick else 'full'})", ""]
    rows, deterministic = _correctness(cp, 30 if quick else 300)
    lines.append(f"{'correctness vs CPU backend':32} {'cases':>6} {'worst rel err':>14} {'tolerance':>10}  result")
    for dt, n, err, ok in rows:
        lines.append(f"{'  ' + dt:32} {n:>6} {err:>14.3g} {RTOL[np.dtype(dt)]:>10.0e}  {'PASS' if ok else 'FAIL'}")
    lines.append(f"{'  backward bitwise deterministic':32} {'':>6} {'':>14} {'':>10}  {'PASS' if deterministic else 'FAIL'}")
    lines.append("")
    bench, has_torch = _bench(cp, quick)
    lines.append(f"{'timing (median)':32} {'ms':>8} {'GB/s':>8} {'% copy':>7} {'torch ms':>9} {'x torch':>8}  result")
    for label, ok, ms, gbs, pct, tms, speed in bench:
        # small quick-run inputs cannot fill the GPU: their timings are not held to the targets
        verdict = "-" if quick else "PASS" if ok else "FAIL"
        lines.append(
            f"{'  ' + label:32} {_fmt(ms, '8.3f')} {_fmt(gbs, '8.1f')} {_fmt(pct, '7.1f')} "
            f"{_fmt(tms, '9.3f')} {_fmt(speed, '8.2f')}  {verdict}"
        )
    lines.append("")
    lines.append(
        "targets: forward >= {forward_vs_copy:.0%} and backward >= {backward_vs_copy:.0%} of copy bandwidth "
        "(bytes read + written), >= {vs_torch:g}x the PyTorch formula, float16 >= {half_vs_single:g}x float32"
        .format(**TARGETS)
    )
    if not has_torch:
        lines.append("PyTorch with CUDA not found: torch columns left empty")
    return "\n".join(lines)
