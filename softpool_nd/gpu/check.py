"""Measure the GPU backend on the current CuPy device: kernel bandwidth and per-call API overhead.

A measurement, not an acceptance test: targets, the correctness sweep and
the PyTorch comparison live in ``benchmarks/gpu_check.py``. ``softpool-nd
bench`` prints :func:`run`'s table where CuPy sees a GPU.

How it times. One call between two CUDA events counts the Python of the call
(tens of microseconds) as if it were GPU time. :func:`queued` instead queues
many calls between two events, so that the GPU runs them back to back: per
call, the events measure the kernels (as long as the host queues calls faster
than the GPU runs them, which it reports) and the host clock measures what
the call costs the caller (the API overhead).
"""

from __future__ import annotations

import statistics
import time

import numpy as np

__all__ = ["available", "queued", "medians", "device_copy", "bandwidth", "overhead", "run", "CASES"]

_F16, _F32 = np.dtype(np.float16), np.dtype(np.float32)

#: Timed inputs: (name, NCHW shape, dtype, pooling kwargs, channels-last).
CASES = [
    (
        f"{'f16' if dt == _F16 else 'f32'} {lay} k{k}",
        (64, 64, 112, 112),
        dt,
        dict(kernel=k, stride=2, padding=k // 2 if k == 3 else 0),
        lay == "NHWC",
    )
    for dt in (_F32, _F16)
    for lay in ("NCHW", "NHWC")
    for k in (2, 3)
]


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


def queued(cp, fn, calls):
    """(GPU seconds per call, host seconds per call) over ``calls`` calls queued between two events.

    GPU time per call is the kernels' time when the host outpaces the GPU
    (host seconds < GPU seconds); otherwise the GPU waited for the host and
    the GPU figure is an upper bound set by the API overhead.
    """
    start, end = cp.cuda.Event(), cp.cuda.Event()
    start.record()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    host = time.perf_counter() - t0
    end.record()
    end.synchronize()
    return cp.cuda.get_elapsed_time(start, end) * 1e-3 / calls, host / calls


def medians(cp, fns, reps, calls):
    """{name: (median GPU s/call, median host s/call)}, the callables' runs interleaved.

    Each callable runs once first (compilation, allocator pools); then every
    repetition times each callable in turn, so clocks and caches treat all alike.
    """
    for fn in fns.values():
        fn()
    cp.cuda.Device().synchronize()
    got = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            got[k].append(queued(cp, fn, calls))
    return {k: (statistics.median(g for g, _ in v), statistics.median(h for _, h in v)) for k, v in got.items()}


def device_copy(dst, src):
    """cudaMemcpyAsync device to device on the current stream: the bandwidth floor."""
    dst.data.copy_from_device_async(src.data, src.nbytes)


def _input(cp, shape, dtype, channels_last, seed=0):
    rng = np.random.default_rng(seed)
    if channels_last:
        n, c, h, w = shape
        return cp.asarray(rng.standard_normal((n, h, w, c), np.float32).astype(dtype)).transpose(0, 3, 1, 2)
    return cp.asarray(rng.standard_normal(shape, np.float32).astype(dtype))


def bandwidth(cp, cases=None, reps=7, calls=20, batch_divisor=1):
    """Rows ``(case, phase, GPU ms/call, host ms/call, GB/s, % of copy)`` for forward, backward and copy.

    Traffic counts the bytes a call must move: forward reads x and writes y
    and lse; backward reads grad_y, x, y, lse and writes grad_x; the copy
    reads and writes x once.
    """
    import softpool_nd

    rows = []
    for name, shape, dtype, kw, channels_last in cases or CASES:
        shape = (max(1, shape[0] // batch_divisor),) + tuple(shape[1:])
        x = _input(cp, shape, dtype, channels_last)
        y, lse = softpool_nd.forward(x, **kw)
        gy = cp.ones_like(y)
        dst = cp.empty_like(x)
        t = medians(
            cp,
            {  # default arguments bind this case's arrays
                "copy": lambda dst=dst, x=x: device_copy(dst, x),
                "forward": lambda x=x, kw=kw: softpool_nd.forward(x, **kw),
                "backward": lambda gy=gy, x=x, y=y, lse=lse, kw=kw: softpool_nd.backward(gy, x, y=y, lse=lse, **kw),
            },
            reps,
            calls,
        )
        traffic = {
            "copy": 2 * x.nbytes,
            "forward": x.nbytes + y.nbytes + lse.nbytes,
            "backward": 2 * x.nbytes + gy.nbytes + y.nbytes + lse.nbytes,
        }
        copy_bw = traffic["copy"] / t["copy"][0]
        for phase in ("forward", "backward", "copy"):
            gpu, host = t[phase]
            bw = traffic[phase] / gpu
            rows.append((name, phase, gpu * 1e3, host * 1e3, bw / 1e9, 100 * bw / copy_bw))
    return rows


def overhead(cp, reps=7, calls=200):
    """{call: host microseconds per call} on a tiny input, where the GPU work is negligible.

    ``cupy multiply`` (one CuPy elementwise kernel) is the floor any
    CuPy-launched operation pays.
    """
    import softpool_nd

    x = cp.asarray(np.random.default_rng(1).standard_normal((1, 2, 8, 8), np.float32))
    y, lse = softpool_nd.forward(x, 2)
    gy = cp.ones_like(y)
    t = medians(
        cp,
        {
            "pool": lambda: softpool_nd.pool(x, 2),
            "forward": lambda: softpool_nd.forward(x, 2),
            "backward": lambda: softpool_nd.backward(gy, x, 2, y=y, lse=lse),
            "cupy multiply": lambda: cp.multiply(x, 2.0),
        },
        reps,
        calls,
    )
    return {k: host * 1e6 for k, (_, host) in t.items()}


def _device_name(cp):
    props = cp.cuda.runtime.getDeviceProperties(cp.cuda.Device().id)
    name = props["name"]
    return name.decode() if isinstance(name, bytes) else str(name)


def table(cp, quick=False):
    """The text of :func:`run`'s report for array module ``cp``."""
    lines = [
        f"softpool_nd GPU timing on {_device_name(cp)} ({'quick' if quick else 'full'}); "
        f"{'1/16 batch, ' if quick else ''}calls queued between two CUDA events",
        "",
    ]
    lines.append(f"{'kernel':24} {'phase':9} {'GPU ms':>8} {'host ms':>8} {'GB/s':>8} {'% copy':>7}")
    for name, phase, gpu, host, gbs, pct in bandwidth(cp, reps=3 if quick else 7, batch_divisor=16 if quick else 1):
        note = "  (host-bound)" if host > gpu else ""
        lines.append(f"{name:24} {phase:9} {gpu:8.3f} {host:8.3f} {gbs:8.1f} {pct:7.1f}{note}")
    lines.append("")
    lines.append(f"{'API overhead per call':24} {'host us':>8}")
    for call, us in overhead(cp, reps=3 if quick else 7).items():
        lines.append(f"{call:24} {us:8.1f}")
    return "\n".join(lines)


def run(quick: bool = False) -> str:
    """Time the GPU backend on the current CuPy device; print and return the table.

    Parameters
    ----------
    quick : bool, default False
        1/16 of the batch and fewer repetitions.

    Returns
    -------
    str
        The printed table: per kernel the GPU time and host time per call,
        bandwidth and its percentage of a device-to-device copy; then the
        per-call API overhead. ``benchmarks/gpu_check.py`` judges such numbers
        against targets.

    Examples
    --------
    >>> from softpool_nd.gpu import check
    >>> report = check.run(quick=True)  # doctest: +SKIP
    """
    from .cuda import require_cupy

    text = table(require_cupy(), quick)
    print(text)
    return text
