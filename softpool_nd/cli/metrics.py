"""How much of an image a pooled-and-restored copy keeps: PSNR, SSIM and mean absolute difference.

SSIM is Wang, Bovik, Sheikh and Simoncelli (IEEE TIP 2004) as their reference
code computes it: an 11x11 Gaussian window with sigma 1.5, K1 = 0.01,
K2 = 0.03, weighted (not sample) variances, the map taken over the 'valid'
region (windows that fit inside the image) and averaged; colour images are
the mean over channels. Images are float arrays with values in [0, 1].
"""
import numpy as np

__all__ = ["psnr", "ssim", "mean_abs_diff", "SSIM_WINDOW"]

SSIM_WINDOW = 11
_SIGMA = 1.5
_K1, _K2 = 0.01, 0.03


def _gaussian():
    r = np.arange(SSIM_WINDOW) - (SSIM_WINDOW - 1) / 2
    g = np.exp(-(r**2) / (2 * _SIGMA**2))
    return g / g.sum()


def _filter_valid(a, weights):
    """Separable 'valid' correlation over axes 0 and 1, one shifted slice at a time to keep memory flat."""
    k = len(weights)
    for axis in (0, 1):
        n = a.shape[axis] - k + 1
        out = np.zeros(a.shape[:axis] + (n,) + a.shape[axis + 1:])
        for i, w in enumerate(weights):
            out += w * np.take(a, np.arange(i, i + n), axis=axis)
        a = out
    return a


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
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"x has shape {x.shape} but y has shape {y.shape}")
    if x.ndim not in (2, 3) or min(x.shape[:2]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs an H x W (x C) image of at least {SSIM_WINDOW}x{SSIM_WINDOW}; got shape {x.shape}")
    g = _gaussian()
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    mx, my = _filter_valid(x, g), _filter_valid(y, g)
    sxx = _filter_valid(x * x, g) - mx * mx
    syy = _filter_valid(y * y, g) - my * my
    sxy = _filter_valid(x * y, g) - mx * my
    smap = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return float(smap.mean())


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
