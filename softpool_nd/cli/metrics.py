"""How much of an image a pooled-and-restored copy keeps: PSNR, SSIM and mean absolute difference.

SSIM is Wang, Bovik, Sheikh and Simoncelli (IEEE TIP 2004) as their reference
code computes it: an 11x11 Gaussian window with sigma 1.5, K1 = 0.01,
K2 = 0.03, weighted (not sample) variances, the map taken over the 'valid'
region (windows that fit inside the image) and averaged; colour images are
the mean over channels. Images are float arrays with values in [0, 1].
"""

import numpy as np

__all__ = ["psnr", "ssim", "ssim_to", "mean_abs_diff", "SSIM_WINDOW"]

SSIM_WINDOW = 11
_SIGMA = 1.5
_K1, _K2 = 0.01, 0.03
_BAND_ELEMENTS = 1 << 17


def _gaussian():
    r = np.arange(SSIM_WINDOW) - (SSIM_WINDOW - 1) / 2
    g = np.exp(-(r**2) / (2 * _SIGMA**2))
    return g / g.sum()


def _filter_valid(a, weights):
    """Separable 'valid' correlation over axes 0 and 1, one shifted slice at a time to keep memory flat."""
    k = len(weights)
    n = a.shape[0] - k + 1
    rows = weights[0] * a[:n]
    for i in range(1, k):
        rows += weights[i] * a[i : i + n]
    n = a.shape[1] - k + 1
    out = weights[0] * rows[:, :n]
    for i in range(1, k):
        out += weights[i] * rows[:, i : i + n]
    return out


def _check_pair(x, y):
    if x.shape != y.shape:
        raise ValueError(f"x has shape {x.shape} but y has shape {y.shape}")


def ssim_to(x, data_range=1.0):
    """A function ``f(y) -> float``: mean SSIM of ``y`` against the reference image ``x``.

    The reference's local means and variances are computed once, so scoring
    several candidates against one original costs three filterings each, not five.

    Raises
    ------
    ValueError
        When ``x`` is not H x W (x C) or is smaller than the 11x11 window, or
        ``y`` does not have the shape of ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> from softpool_nd.cli.metrics import ssim_to
    >>> x = np.random.default_rng(0).random((32, 32))
    >>> score = ssim_to(x)
    >>> score(x), score(1 - x) < 0
    (1.0, True)
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim not in (2, 3) or min(x.shape[:2]) < SSIM_WINDOW:
        raise ValueError(
            f"SSIM needs an H x W (x C) image of at least {SSIM_WINDOW}x{SSIM_WINDOW}; got shape {x.shape}"
        )
    g = _gaussian()
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    # bands of output rows small enough that a band's temporaries stay in cache: several times faster
    # on large images than filtering whole planes, and memory stays flat
    n_out = x.shape[0] - SSIM_WINDOW + 1
    step = max(1, _BAND_ELEMENTS // (x[0].size or 1))
    bands = [(r, min(r + step, n_out)) for r in range(0, n_out, step)]
    ref = []
    for r0, r1 in bands:
        xb = x[r0 : r1 + SSIM_WINDOW - 1]
        mx = _filter_valid(xb, g)
        ref.append((xb, mx, _filter_valid(xb * xb, g) - mx * mx))
    count = n_out * (x.shape[1] - SSIM_WINDOW + 1) * (x[0, 0].size)

    def score(y):
        y = np.asarray(y, dtype=np.float64)
        _check_pair(x, y)
        total = 0.0
        for (r0, r1), (xb, mx, sxx) in zip(bands, ref):
            yb = y[r0 : r1 + SSIM_WINDOW - 1]
            my = _filter_valid(yb, g)
            syy = _filter_valid(yb * yb, g) - my * my
            sxy = _filter_valid(xb * yb, g) - mx * my
            total += float(
                (((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))).sum()
            )
        return total / count

    return score


def ssim(x, y, data_range=1.0):
    """Mean structural similarity of two images of the same shape (H x W or H x W x C).

    Raises
    ------
    ValueError
        When the shapes differ or the image is smaller than the 11x11 window.

    Examples
    --------
    >>> import numpy as np
    >>> from softpool_nd.cli.metrics import ssim
    >>> x = np.random.default_rng(0).random((32, 32))
    >>> ssim(x, x)
    1.0
    >>> ssim(x, 1 - x) < 0
    True
    """
    x, y = np.asarray(x), np.asarray(y)
    _check_pair(x, y)
    return ssim_to(x, data_range)(y)


def psnr(x, y, data_range=1.0):
    """Peak signal-to-noise ratio in dB; ``inf`` for identical images.

    Examples
    --------
    >>> import numpy as np
    >>> from softpool_nd.cli.metrics import psnr
    >>> round(psnr(np.zeros(4), np.full(4, 0.1)), 6)
    20.0
    """
    mse = float(np.mean((np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64)) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(data_range**2 / mse))


def mean_abs_diff(x, y):
    """Mean absolute difference of two arrays of the same shape.

    Examples
    --------
    >>> import numpy as np
    >>> from softpool_nd.cli.metrics import mean_abs_diff
    >>> mean_abs_diff(np.array([0.0, 1.0]), np.array([0.5, 0.5]))
    0.5
    """
    return float(np.mean(np.abs(np.asarray(x, dtype=np.float64) - np.asarray(y, dtype=np.float64))))
