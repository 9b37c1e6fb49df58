"""``softpool-nd demo``: what SoftPool keeps when it downsamples, next to average and max pooling.

Every method pools with non-overlapping windows (stride = kernel) over the
spatial axes only; the pooled result is upsampled back by nearest-neighbour
(``np.repeat``) and compared with the original by PSNR and SSIM (see
:mod:`softpool_nd.cli.metrics`). The pooled images are also compared with
each other by mean absolute difference.
"""

import math
import os
from dataclasses import dataclass

import numpy as np

import softpool_nd

from . import figure, scenes
from ._errors import CLIError
from .baselines import avg_pool, max_pool, upsample_nearest
from .images import load_image
from .metrics import SSIM_WINDOW, mean_abs_diff, psnr, ssim_to

__all__ = ["MethodResult", "KernelResult", "compare", "format_table", "run"]

STILL_NAME = "softpool_demo.png"
VIDEO_NAME = "softpool_demo_video.gif"
# panels larger than this are shown as a centre crop (metrics always use the whole input)
_MAX_PANEL = 320
_MIN_PANEL = 180


@dataclass(frozen=True)
class MethodResult:
    """One pooling method at one kernel: the pooled array, its upsampled copy and its scores."""

    name: str
    pooled: np.ndarray
    restored: np.ndarray
    psnr: float
    ssim: float


@dataclass(frozen=True)
class KernelResult:
    """All methods at one kernel, with pairwise mean absolute differences of the pooled arrays."""

    kernel: int
    in_shape: tuple
    out_shape: tuple
    methods: tuple
    mad: dict

    def method(self, name):
        return next(m for m in self.methods if m.name == name)


def _methods(beta):
    return (
        ("SoftPool", lambda x, k, axes: softpool_nd.pool(x, kernel=k, axes=axes, beta=beta)),
        ("average", avg_pool),
        ("max", max_pool),
    )


def _progress(total, desc):
    """A tqdm bar on stderr that shows itself only after 2 s and only on a terminal; a no-op without tqdm."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, delay=2.0, disable=None, leave=False, unit="step")


def compare(x, kernels, axes, *, beta=1.0, similarity_to=ssim_to, desc="pooling"):
    """Pool ``x`` with SoftPool, average and max at each kernel and score what each keeps.

    Parameters
    ----------
    x : numpy.ndarray
        Float array in [0, 1] whose pooled axes are multiples of every kernel.
    kernels : sequence of int
    axes : tuple of int
        The pooled axes (the spatial ones).
    beta : float
        SoftPool's inverse temperature.
    similarity_to : callable
        ``similarity_to(original)`` returns ``f(restored) -> float``; SSIM by default.

    Returns
    -------
    list of KernelResult

    Examples
    --------
    >>> import numpy as np
    >>> from softpool_nd.cli.demo import compare
    >>> x = np.random.default_rng(0).random((16, 16))
    >>> [r.out_shape for r in compare(x, [2, 4], axes=(0, 1))]
    [(8, 8), (4, 4)]
    """
    methods = _methods(beta)
    similarity = similarity_to(x)
    bar = _progress(len(kernels) * len(methods), desc)
    results = []
    try:
        for k in kernels:
            scored = []
            for name, fn in methods:
                pooled = np.asarray(fn(x, k, axes), dtype=np.float64)
                restored = upsample_nearest(pooled, k, axes)
                scored.append(MethodResult(name, pooled, restored, psnr(x, restored), similarity(restored)))
                if bar is not None:
                    bar.update()
            mad = {
                (a.name, b.name): mean_abs_diff(a.pooled, b.pooled) for a in scored for b in scored if a.name != b.name
            }
            results.append(KernelResult(k, x.shape, scored[0].pooled.shape, tuple(scored), mad))
    finally:
        if bar is not None:
            bar.close()
    return results


def _ranks(values):
    """Competition ranks, 1 for the highest value."""
    return [1 + sum(v > u for v in values) for u in values]


def _dims(shape, axes):
    return "x".join(str(shape[a]) for a in axes)


def format_table(results, axes, header):
    """The retention table: one block per kernel, one row per method, SoftPool's row marked with ``*``.

    Examples
    --------
    >>> import numpy as np
    >>> from softpool_nd.cli.demo import compare, format_table
    >>> x = np.random.default_rng(0).random((16, 16))
    >>> table = format_table(compare(x, [2], axes=(0, 1)), (0, 1), ["demo"])
    >>> [line.split()[1] for line in table.splitlines() if line.startswith("  *")]
    ['SoftPool']
    """
    names = [m.name for m in results[0].methods]
    lines = list(header)
    lines += [
        "Each pooled image is upsampled back by nearest-neighbour and compared with the original:",
        "PSNR and SSIM, higher = keeps more, (rank) 1 = best. MAD: mean absolute difference between pooled images.",
    ]
    mad_heads = "".join(f"{'MAD ' + n:>14}" for n in names)
    for res in results:
        p_ranks = _ranks([m.psnr for m in res.methods])
        s_ranks = _ranks([m.ssim for m in res.methods])
        lines += ["", f"kernel {res.kernel}: {_dims(res.in_shape, axes)} -> {_dims(res.out_shape, axes)}"]
        lines.append(f"     {'method':<10}{'PSNR [dB]':>14}{'SSIM':>14}{mad_heads}")
        for m, pr, sr in zip(res.methods, p_ranks, s_ranks):
            mark = "*" if m.name == "SoftPool" else " "
            mads = "".join(f"{'-' if n == m.name else f'{res.mad[(m.name, n)]:.4f}':>14}" for n in names)
            lines.append(f"  {mark}  {m.name:<10}{f'{m.psnr:.2f} ({pr})':>14}{f'{m.ssim:.4f} ({sr})':>14}{mads}")
    lines += ["", "* SoftPool is softpool_nd.pool; average and max pooling are NumPy, for comparison."]
    return "\n".join(lines)


def _display(x, axes, align):
    """A centre crop of at most _MAX_PANEL pixels per spatial axis, aligned to ``align``, and a zoom factor."""
    crop = [slice(None)] * x.ndim
    for a in axes[-2:]:
        n = x.shape[a]
        if n > _MAX_PANEL:
            size = _MAX_PANEL // align * align
            start = (n - size) // 2 // align * align
            crop[a] = slice(start, start + size)
    shown = tuple(crop)
    panel = min(x[shown].shape[a] for a in axes[-2:])
    return shown, max(1, -(-_MIN_PANEL // panel))


def _panel_rows(original, results, pick, caption):
    """Grid rows, one per kernel: the original, then each method upsampled back, labelled with its scores."""
    rows = []
    for res in results:
        row = [figure.Panel(pick(original), ("original", caption))]
        for m in res.methods:
            lines = (f"{m.name}, kernel {res.kernel}", f"PSNR {m.psnr:.2f} dB  SSIM {m.ssim:.3f}")
            row.append(figure.Panel(pick(m.restored), lines, highlight=m.name == "SoftPool"))
        rows.append(row)
    return rows


def _fit(x, kernels, axes, what):
    """Crop the pooled axes to a multiple of every kernel; CLIError when a kernel does not fit."""
    smallest = min(x.shape[a] for a in axes)
    too_big = [k for k in kernels if k > smallest]
    if too_big:
        raise CLIError(
            f"kernel {max(too_big)} is larger than the {what} ({'x'.join(map(str, x.shape))}); "
            f"use --kernel at most {smallest}"
        )
    align = math.lcm(*kernels)
    if align > smallest:
        raise CLIError(
            f"kernels {kernels} need the {what} to be at least {align} wide (their common multiple); "
            f"got shape {x.shape}"
        )
    crop = tuple(slice(0, n - n % align) if a in axes else slice(None) for a, n in enumerate(x.shape))
    return x[crop], align


def _out_path(out_dir, name):
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"cannot create output directory {out_dir}: {exc}") from None
    return os.path.join(out_dir, name)


def _still(args, kernels, out):
    if args.image is None:
        x, what = scenes.still(), "built-in synthetic scene, 256x256 RGB"
    else:
        x, what = load_image(args.image)
    if min(x.shape[:2]) < SSIM_WINDOW:
        raise CLIError(
            f"the image is {x.shape[0]}x{x.shape[1]} pixels; the demo needs at least "
            f"{SSIM_WINDOW}x{SSIM_WINDOW} (the SSIM window)"
        )
    cropped, align = _fit(x, kernels, (0, 1), "image")
    header = [f"SoftPool demo: {what}, values in [0, 1], beta {args.beta:g}, pooled over height and width"]
    if cropped.shape != x.shape:
        header.append(f"(cropped to {cropped.shape[0]}x{cropped.shape[1]} so that every window is full)")
    results = compare(cropped, kernels, (0, 1), beta=args.beta)
    out(format_table(results, (0, 1), header))
    shown, scale = _display(cropped, (0, 1), align)
    caption = f"{cropped.shape[0]}x{cropped.shape[1]}"
    rows = _panel_rows(cropped, results, lambda a: a[shown], caption)
    path = figure.save_png(figure.grid(rows, scale), _out_path(args.out, STILL_NAME))
    crop_note = "" if cropped[shown].shape == cropped.shape else " (panels show a centre crop)"
    out(f"\nwrote {path}{crop_note}")


def _frame_ssim_to(clip):
    """``f(other) -> float``: mean 2-D SSIM over the frames of ``other`` against ``clip`` (time, height, width)."""
    frames = [ssim_to(frame) for frame in clip]
    return lambda other: float(np.mean([score(frame) for score, frame in zip(frames, other)]))


def _video(args, clip, kernels, out):
    cropped, align = _fit(clip, kernels, (0, 1, 2), "video")
    header = [
        f"SoftPool demo, 3-D: synthetic video, {'x'.join(map(str, clip.shape))} (time x height x width), "
        f"beta {args.beta:g}, pooled over all three axes; SSIM is the mean over frames"
    ]
    results = compare(cropped, kernels, (0, 1, 2), beta=args.beta, similarity_to=_frame_ssim_to, desc="pooling video")
    out("\n" + format_table(results, (0, 1, 2), header))
    shown, scale = _display(cropped, (1, 2), align)
    n = cropped.shape[0]
    frames = [
        figure.grid(_panel_rows(cropped, results, lambda a, t=t: a[shown][t], f"frame {t + 1}/{n}"), scale)
        for t in range(n)
    ]
    path = figure.save_gif(frames, _out_path(args.out, VIDEO_NAME))
    out(f"\nwrote {path} ({len(frames)} frames)")


def run(args, out=print):
    """Run the demo for parsed arguments (``image``, ``kernel``, ``beta``, ``out``, ``video``).

    Returns
    -------
    int
        0 on success; failures raise CLIError.
    """
    kernels = sorted(set(args.kernel))
    clip = scenes.video() if args.video else None
    if clip is not None:
        _fit(clip, kernels, (0, 1, 2), "video")  # fail before any work is done
    _still(args, kernels, out)
    if clip is not None:
        _video(args, clip, kernels, out)
    return 0
