"""One command for a fresh H100/H200 machine: is softpool_nd's GPU path right, and how fast is it?

    python3 benchmarks/gpu_check.py           # the steps' time limits add up to 7 min 35 s
    python3 benchmarks/gpu_check.py --quick   # small inputs, a minute or two

Run from the project checkout. It installs only what is missing (CuPy for the
driver's CUDA major version, the NVRTC and runtime-header wheels, numba, pytest;
torch only for the torch steps; pip gives up quickly where no index can be
reached) and then runs each step in its own process group with its own time
limit, so a crash or hang in one step cannot hide the others (a step past its
limit is killed with every process it started):

0. compile: the first-call compiles, timed apart so that no later step pays
   them: CuPy's NVRTC build of every kernel instantiation (kept in CuPy's
   kernel cache, ``$CUPY_CACHE_DIR``), and, in a parallel worker process,
   the numba CPU kernels the correctness sweep compares with (kept in numba's
   cache); their times are rows of the table;
1. ``pytest -m gpu``: every test marked for a GPU;
2. correctness: randomized configurations, every layout, forward, backward and jvp against the CPU
   backend; out= (what softpool_nd.torch passes for CUDA tensors) bit for bit; the overflowing-beta
   cases of tests/test_numerics.py (NUMERICS.md rules 3 and 4);
3. bandwidth: forward and backward as % of a device-to-device copy, float32 and
   float16, NCHW and channels-last (calls queued between two CUDA events);
4. per-call API overhead (host time per call on a tiny input);
5. speed against the SoftPool formula written in PyTorch, eager and torch.compile'd.

With CuPy and torch already installed it finishes in under 8 minutes; each
install adds its download time. It prints one table: one row per measurement
with its target and verdict.
Exit status 0 when no row failed, 1 otherwise, 2 without a GPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]  # the checkout's package and the tests' shared configurations

#: Acceptance targets on an H100/H200.
TARGETS = {"forward_vs_copy": 80.0, "backward_vs_copy": 70.0, "vs_torch": 5.0}

#: Seconds each step may take; the sum stays under 8 minutes with the installs.
LIMITS = {"compile": 150, "pytest": 90, "correctness": 50, "bandwidth": 60, "overhead": 15, "torch": 90}

#: pip on a machine without an index (a sealed GPU box) fails in seconds instead of retrying for minutes.
_PIP_OFFLINE = ("--retries", "1", "--timeout", "10")


# ------------------------------------------------------------------------------------------- setup


def _have(module):
    return importlib.util.find_spec(module) is not None


def _cuda_major():
    """The driver's CUDA major version from nvidia-smi, or None without a driver."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    done = subprocess.run([smi], capture_output=True, text=True, timeout=60)
    found = re.search(r"CUDA Version:\s*(\d+)", done.stdout)
    return int(found.group(1)) if found else None


def _pip(*packages):
    cmd = [sys.executable, "-m", "pip", "install", "--quiet", *_PIP_OFFLINE, *packages]
    print("installing:", " ".join(packages), flush=True)
    return subprocess.run(cmd, timeout=240).returncode == 0


def setup():
    """Install what is missing; rows describing what was found and done."""
    rows = []
    major = _cuda_major()
    rows.append(("setup", "driver CUDA version", str(major), "", "-" if major else "FAIL"))
    if major is None:
        return rows
    if not _have("cupy"):
        extra = "gpu-cuda13" if major >= 13 else "gpu"
        ok = _pip("-e", f"{ROOT}[{extra}]")
        rows.append(("setup", f"installed softpool_nd[{extra}]", "yes" if ok else "failed", "", "-" if ok else "FAIL"))
    else:
        # cupy is there (say cupy-cuda13x with torch): add NVRTC and the runtime headers for its CUDA only if
        # a kernel that includes cuda_fp16.h (as softpool.cu does) does not compile
        done = subprocess.run([sys.executable, "-c", _NVRTC_PROBE], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            cuda = 13 if "cuda13" in " ".join(_cupy_dists()) else 12
            wheels = (
                ["cuda-toolkit[nvrtc,cudart]==13.*"]
                if cuda >= 13
                else ["nvidia-cuda-nvrtc-cu12", "nvidia-cuda-runtime-cu12"]
            )
            ok = _pip(*wheels)
            rows.append(("setup", "installed NVRTC wheels", "yes" if ok else "failed", "", "-" if ok else "FAIL"))
    for module, package in (("numba", "numba"), ("pytest", "pytest"), ("ml_dtypes", "ml_dtypes")):
        if not _have(module):
            _pip(package)
    if not _have("torch"):
        index = "https://download.pytorch.org/whl/cu130" if major >= 13 else "https://download.pytorch.org/whl/cu126"
        ok = _pip("torch", "--index-url", index)
        rows.append(("setup", "installed torch", "yes" if ok else "failed", "", "-"))
    dists = _cupy_dists()
    rows.append(
        ("setup", "CuPy packages", ", ".join(dists) or "none", "exactly one", "PASS" if len(dists) == 1 else "FAIL")
    )
    return rows


#: Compiles a kernel through CuPy's NVRTC path with the header softpool.cu needs: NVRTC and headers are there.
_NVRTC_PROBE = """
import cupy
src = '#include <cuda_fp16.h>\\nextern "C" __global__ void probe(__half* p) { p[0] = __float2half(1.0f); }'
cupy.RawKernel(src, "probe").compile()
"""


def _cupy_dists():
    from softpool_nd.gpu.cuda import cupy_distributions

    return cupy_distributions()


# ------------------------------------------------------------------------------------------- steps


def step_pytest(quick):
    # stops itself before the step's limit, so that the table shows how far it got
    rc, out, err = _run(
        [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "-p", "no:cacheprovider", "tests"], LIMITS["pytest"] - 10
    )
    tail = out.strip().splitlines()[-1] if out.strip() else err[-200:]
    print(out[-6000:], file=sys.stderr)
    if rc is None:
        stopped = f"stopped at {LIMITS['pytest'] - 10} s: {tail[-60:]}"
        return [("pytest -m gpu", "summary", stopped, "no failures", "FAIL")]
    failed = re.search(r"(\d+) (failed|error)", tail)
    return [("pytest -m gpu", "summary", tail, "no failures", "FAIL" if rc not in (0, 5) or failed else "PASS")]


_DTYPES = ("float16", "float32", "float64")


def _sweep(quick):
    """The correctness sweep's cases, reproducible: (i, shape, kw, beta, x, gy, dx, layout seed)."""
    import numpy as np

    import softpool_nd

    from configs import random_config

    rng = np.random.default_rng(20261126)
    for i in range(40 if quick else 300):
        shape, kw = random_config(rng)
        dtype = np.dtype(_DTYPES[i % 3])
        beta = float(rng.choice([1.0, 0.0, -0.7, 2.5]))
        x = (rng.standard_normal(shape) * 3).astype(dtype)
        if i % 5 == 0:
            x.reshape(-1)[rng.integers(x.size)] = rng.choice([np.inf, -np.inf, np.nan])
        gy = rng.standard_normal(softpool_nd.output_shape(shape, **kw)).astype(dtype)
        dx = rng.standard_normal(shape).astype(dtype)
        yield i, shape, kw, beta, x, gy, dx, int(rng.integers(2**31))


def _overflows():
    """tests/test_numerics.py's cases with beta * x beyond the accumulation dtype: (shape, kw, beta, x, gy)."""
    import numpy as np
    import test_numerics

    import softpool_nd

    rng = np.random.default_rng(20261127)
    for shape, kw in test_numerics._CASES:
        for dtype, scale, beta in test_numerics._OVERFLOWS:
            x = (rng.normal(size=shape) * scale).astype(dtype)
            x.flat[::7] = 4 * scale * np.sign(beta)
            gy = rng.normal(size=softpool_nd.output_shape(shape, **kw)).astype(dtype)
            yield shape, kw, beta, x, gy


def _on_cpu(x, gy, dx, beta, kw):
    """The CPU backend's y, lse, gradients (exact, weights) and jvp: what the GPU results are compared with."""
    import softpool_nd

    y, lse = softpool_nd.forward(x, beta=beta, **kw)
    grads = {g: softpool_nd.backward(gy, x, y=y, lse=lse, beta=beta, gradient=g, **kw) for g in ("exact", "weights")}
    return y, lse, grads, softpool_nd.jvp(x, dx, y=y, lse=lse, beta=beta, **kw)


def _warm_cpu(quick):
    """Compile (or load from numba's cache) every CPU kernel the correctness step calls; seconds taken."""
    t0 = time.perf_counter()
    for _, _, kw, beta, x, gy, dx, _ in _sweep(quick):
        _on_cpu(x, gy, dx, beta, kw)
    for _, kw, beta, x, gy in _overflows():
        _on_cpu(x, gy, x, beta, kw)
    return time.perf_counter() - t0


def _compile_cuda():
    """Build the CUDA module and load every kernel (CuPy compiles all instantiations in one NVRTC call)."""
    from softpool_nd.gpu import cuda

    launcher = cuda.launcher()
    for name in launcher.names:
        launcher.function(name)
    return len(launcher.names)


def step_compile(quick):
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    # a worker process (spawned: no CUDA state inherited) compiles the CPU kernels while this one waits for
    # NVRTC. One, not several: numba's cache index is read, extended and rewritten without a lock, so processes
    # saving overloads of one function at once can lose entries or pair a signature with another's code.
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
        cpu = pool.submit(_warm_cpu, quick)
        t0 = time.perf_counter()
        try:
            kernels = _compile_cuda()
            row = (f"CUDA module, {kernels} kernels (NVRTC or CuPy's cache)", f"{time.perf_counter() - t0:.1f} s", "-")
        except Exception as e:  # the NVRTC log or the load error, in the table; the CPU warm-up goes on
            print(e, file=sys.stderr)  # the whole log goes to stderr, its last line to the table
            last = (str(e).strip().splitlines() or [""])[-1][:100]
            row = ("CUDA module", f"{type(e).__name__}: {last}", "FAIL")
        cpu_s = cpu.result()
    return [
        ("compile", row[0], row[1], "", row[2]),
        ("compile", "CPU kernels of the sweep (numba or its cache)", f"{cpu_s:.1f} s", "", "-"),
    ]


def step_correctness(quick):
    import cupy as cp
    import numpy as np

    import softpool_nd

    from configs import random_layout, tolerance

    dtypes = [np.dtype(d) for d in _DTYPES]
    worst = {dt: 0.0 for dt in dtypes}
    count = {dt: 0 for dt in dtypes}
    deterministic = same_out = True
    for _, _, kw, beta, x, gy, dx, seed in _sweep(quick):
        rng = np.random.default_rng(seed)
        dtype = x.dtype
        y, lse, gx, dy = _on_cpu(x, gy, dx, beta, kw)
        xg = random_layout(rng, cp.asarray(x), cp)
        gyg = random_layout(rng, cp.asarray(gy), cp)
        yg, lseg = softpool_nd.forward(xg, beta=beta, **kw)
        errs = [_worst(cp.asnumpy(yg), y), _worst(cp.asnumpy(lseg), lse)]
        for gradient in ("exact", "weights"):
            gxg = softpool_nd.backward(gyg, xg, y=yg, lse=lseg, beta=beta, gradient=gradient, **kw)
            again = softpool_nd.backward(gyg, xg, y=yg, lse=lseg, beta=beta, gradient=gradient, **kw)
            bits = [np.ascontiguousarray(cp.asnumpy(a)).view(np.uint8) for a in (gxg, again)]
            deterministic &= bool((bits[0] == bits[1]).all())
            errs.append(_worst(cp.asnumpy(gxg), gx[gradient]) / 4)
        dyg = softpool_nd.jvp(xg, random_layout(rng, cp.asarray(dx), cp), y=yg, lse=lseg, beta=beta, **kw)
        errs.append(_worst(cp.asnumpy(dyg), dy) / 4)
        # preallocated outputs (the torch CUDA path): the same bits as the allocating calls
        outs = (cp.empty_like(yg), cp.empty_like(lseg))
        softpool_nd.forward(xg, beta=beta, out=outs, **kw)
        gout = cp.empty_like(xg)
        softpool_nd.backward(gyg, xg, y=yg, lse=lseg, beta=beta, gradient=gradient, out=gout, **kw)  # as gxg
        same_out &= all(_bits_equal(a, b) for a, b in zip(outs + (gout,), (yg, lseg, gxg)))
        worst[dtype] = max(worst[dtype], *errs)
        count[dtype] += 1
    # NUMERICS.md: beta * x beyond the accumulation dtype (tests/test_numerics.py's cases), vs the CPU backend
    overflow = 0.0
    for _, kw, beta, x, gy in _overflows():
        y, lse, gx, dy = _on_cpu(x, gy, x, beta, kw)
        xg = cp.asarray(x)
        yg, lseg = softpool_nd.forward(xg, beta=beta, **kw)
        errs = [_worst(cp.asnumpy(yg), y)]
        for gradient in ("exact", "weights"):
            gxg = softpool_nd.backward(cp.asarray(gy), xg, y=yg, lse=lseg, beta=beta, gradient=gradient, **kw)
            errs.append(_worst(cp.asnumpy(gxg), gx[gradient]))
        errs.append(_worst(cp.asnumpy(softpool_nd.jvp(xg, xg, y=yg, lse=lseg, beta=beta, **kw)), dy))
        overflow = max(overflow, *errs)
    rows = []
    for dt in dtypes:
        tol = tolerance(dt)[0]
        rows.append(
            (
                "correctness vs CPU",
                f"{dt.name}, {count[dt]} cases",
                f"{worst[dt]:.3g}",
                f"<= {tol:g}",
                "PASS" if worst[dt] <= tol else "FAIL",
            )
        )
    rows.append(
        (
            "correctness vs CPU",
            "backward bitwise deterministic",
            str(deterministic),
            "True",
            "PASS" if deterministic else "FAIL",
        )
    )
    rows.append(
        ("correctness vs CPU", "out= writes the same bits", str(same_out), "True", "PASS" if same_out else "FAIL")
    )
    rows.append(
        (
            "correctness vs CPU",
            "overflowing beta*x (y, grad, jvp)",
            f"{overflow:.3g}",
            "<= 1e-3",
            "PASS" if overflow <= 1e-3 else "FAIL",
        )
    )
    return rows


def _bits_equal(a, b):
    import cupy as cp
    import numpy as np

    return bool(
        (np.ascontiguousarray(cp.asnumpy(a)).view(np.uint8) == np.ascontiguousarray(cp.asnumpy(b)).view(np.uint8)).all()
    )


def _worst(a, b):
    """Largest |a - b| relative to max(1, max |b|) over finite b; inf where non-finite positions differ."""
    import numpy as np

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    fa, fb = np.isfinite(a), np.isfinite(b)
    if (fa != fb).any() or not np.array_equal(a[~fb], b[~fb], equal_nan=True):
        return math.inf
    scale = max(float(np.abs(b[fb]).max(initial=0.0)), 1.0)
    return float(np.abs(a[fb] - b[fb]).max(initial=0.0)) / scale


def step_bandwidth(quick):
    import cupy as cp

    from softpool_nd.gpu import check

    rows = []
    for name, phase, gpu, host, gbs, pct in check.bandwidth(
        cp, reps=3 if quick else 7, batch_divisor=16 if quick else 1
    ):
        if phase == "copy":
            rows.append(("bandwidth", f"{name} copy", f"{gpu:.3f} ms {gbs:.0f} GB/s", "", "-"))
            continue
        target = TARGETS[f"{phase}_vs_copy"]
        bound = " host-bound" if host > gpu else ""
        verdict = "-" if quick else "PASS" if pct >= target else "FAIL"
        rows.append(("bandwidth", f"{name} {phase}", f"{pct:.1f}% ({gpu:.3f} ms{bound})", f">= {target:g}%", verdict))
    return rows


def step_overhead(quick):
    import cupy as cp

    from softpool_nd.gpu import check

    # reported, not judged: no target has been set for it
    return [("API overhead per call", call, f"{us:.1f} us host", "", "-") for call, us in check.overhead(cp).items()]


def torch_formula(torch, x, kw, nd):
    """SoftPool as the paper's PyTorch code writes it: avg_pool(x * e^x) / avg_pool(e^x)."""
    pool = getattr(torch.nn.functional, f"avg_pool{nd}d")
    args = dict(
        kernel_size=kw["kernel"],
        stride=kw.get("stride") or kw["kernel"],
        padding=kw.get("padding", 0),
        count_include_pad=False,
    )
    from softpool_nd.bench import torch_formula

    return torch_formula(lambda t: pool(t, **args))(x)


def step_torch(quick):
    import statistics

    import torch

    import softpool_nd.torch as spt

    if not torch.cuda.is_available():
        return [("vs PyTorch formula", "torch with CUDA", "not available", "", "FAIL")]
    rows = []
    compiled = torch.compile(lambda x, kw=None: torch_formula(torch, x, kw, 2))
    for dtype, name in ((torch.float32, "f32"), (torch.float16, "f16")):
        kw = dict(kernel=2, stride=2, padding=0)
        shape = (4 if quick else 64, 64, 112, 112)
        x = torch.randn(shape, device="cuda", dtype=dtype, requires_grad=True)
        gy = torch.ones((shape[0], 64, 56, 56), device="cuda", dtype=dtype)

        def ours():
            torch.autograd.grad(spt.soft_pool(x, kw["kernel"]), x, gy)

        def eager():
            torch.autograd.grad(torch_formula(torch, x, kw, 2), x, gy)

        def comp():
            torch.autograd.grad(compiled(x, kw), x, gy)

        fns = {"softpool_nd": ours, "torch eager": eager, "torch.compile": comp}
        for fn in fns.values():
            fn()
            fn()
        torch.cuda.synchronize()
        times = {k: [] for k in fns}
        for _ in range(3 if quick else 7):
            for k, fn in fns.items():
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                for _ in range(10):
                    fn()
                end.record()
                end.synchronize()
                times[k].append(start.elapsed_time(end) / 10)
        t = {k: statistics.median(v) for k, v in times.items()}
        for base in ("torch eager", "torch.compile"):
            ratio = t[base] / t["softpool_nd"]
            verdict = "-" if quick else "PASS" if ratio >= TARGETS["vs_torch"] else "FAIL"
            rows.append(
                (
                    "vs PyTorch formula",
                    f"{name} 2-D k2 fwd+bwd vs {base}",
                    f"{ratio:.2f}x ({t['softpool_nd']:.3f} vs {t[base]:.3f} ms)",
                    f">= {TARGETS['vs_torch']:g}x",
                    verdict,
                )
            )
    return rows


STEPS = {
    "compile": step_compile,
    "pytest": step_pytest,
    "correctness": step_correctness,
    "bandwidth": step_bandwidth,
    "overhead": step_overhead,
    "torch": step_torch,
}


# ------------------------------------------------------------------------------------------- driver


def _text(v):
    return v.decode(errors="replace") if isinstance(v, bytes) else v or ""


def _run(cmd, limit):
    """Run ``cmd`` in its own process group for at most ``limit`` seconds: (return code or None when it
    ran out of time, stdout, stderr). Past the limit the whole group is killed: a step's own children
    (pytest, compile workers) do not live on into the next step."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", XLA_PYTHON_CLIENT_PREALLOCATE="false")  # JAX: no 75% grab
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=limit)
        return proc.returncode, out, err
    except subprocess.TimeoutExpired as timed_out:
        os.killpg(proc.pid, signal.SIGKILL)
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:  # a process of its own session still holds the pipes: keep what came
            proc.kill()
            out, err = (_text(v) for v in (timed_out.stdout, timed_out.stderr))
        return None, out, err


def _run_step(name, quick):
    """Run one step in a child process under its time limit; its rows, or a FAIL row saying why."""
    cmd = [sys.executable, __file__, "--step", name] + (["--quick"] if quick else [])
    t0 = time.perf_counter()
    rc, out, err = _run(cmd, LIMITS[name])
    took = time.perf_counter() - t0
    sys.stderr.write(err[-4000:])
    if rc is None:
        last = (err.strip().splitlines() or ["no output"])[-1][:80]
        return [(name, "step", f"timed out after {LIMITS[name]} s (last: {last})", f"< {LIMITS[name]} s", "FAIL")]
    last = out.strip().splitlines()[-1] if out.strip() else ""
    if rc != 0 or not last.startswith("["):
        why = (err.strip().splitlines() or ["no output"])[-1][:100]
        return [(name, "step", f"crashed: {why}", "", "FAIL")]
    return [tuple(r) for r in json.loads(last)] + [(name, "step time", f"{took:.0f} s", f"< {LIMITS[name]} s", "-")]


def _table(rows, title):
    widths = [max(len(str(r[i])) for r in rows + [("section", "item", "value", "target", "result")]) for i in range(5)]
    fmt = "  ".join(f"{{:{w}}}" for w in widths)
    lines = [title, fmt.format("section", "item", "value", "target", "result"), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*map(str, r)) for r in rows]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small inputs and few repetitions (timings not judged)")
    parser.add_argument("--step", choices=sorted(STEPS), help=argparse.SUPPRESS)
    parser.add_argument("--no-install", action="store_true", help="use what is installed, install nothing")
    args = parser.parse_args(argv)
    if args.step:
        print(json.dumps(STEPS[args.step](args.quick)))
        return 0
    t0 = time.perf_counter()
    rows = [] if args.no_install else setup()
    if any(r[4] == "FAIL" and r[1] == "driver CUDA version" for r in rows) or _cuda_major() is None:
        print("no NVIDIA driver (nvidia-smi) on this machine: nothing to check")
        return 2
    for name in STEPS:
        rows += _run_step(name, args.quick)
    title = f"softpool_nd GPU check ({'quick' if args.quick else 'full'}), {time.perf_counter() - t0:.0f} s"
    try:
        import cupy

        props = cupy.cuda.runtime.getDeviceProperties(0)
        title += f" on {props['name'].decode() if isinstance(props['name'], bytes) else props['name']}"
    except Exception as e:  # the table still prints; the steps' rows say what failed
        title += f" (device name unavailable: {type(e).__name__})"
    print(_table(rows, title))
    return 1 if any(r[4] == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
