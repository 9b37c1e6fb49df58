"""Read a PNG/JPEG/... file into a float array in [0, 1] with Pillow (the ``demo`` extra)."""

import os

import numpy as np

from ._errors import CLIError, optional_import

__all__ = ["load_image"]

_GRAY = {"1", "L", "LA", "La"}
_WIDE_GRAY = {"I", "I;16", "I;16B", "I;16L", "I;16N"}


def load_image(path):
    """``(image, description)``: H x W (gray) or H x W x 3 (colour) float64 in [0, 1].

    EXIF orientation is applied, alpha is dropped, palettes and other colour
    modes become RGB, 16-bit grayscale is scaled by 65535 and 32-bit float
    images by their own min/max.

    Raises
    ------
    CLIError
        For a missing path, a directory, or a file Pillow cannot decode.
    """
    Image = optional_import("PIL.Image", "reading --image")
    ImageOps = optional_import("PIL.ImageOps", "reading --image")
    if not os.path.exists(path):
        raise CLIError(f"no such file: {path}")
    if os.path.isdir(path):
        raise CLIError(f"{path} is a directory, not an image file")
    try:
        with Image.open(path) as opened:
            opened.load()
            img = ImageOps.exif_transpose(opened)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise CLIError(f"cannot read {path} as an image: {exc}") from None
    mode = img.mode
    if mode in _GRAY:
        arr = np.asarray(img.convert("L"), dtype=np.float64) / 255.0
    elif mode in _WIDE_GRAY:
        arr = np.clip(np.asarray(img, dtype=np.float64) / 65535.0, 0.0, 1.0)
    elif mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise CLIError(f"cannot use {path}: its float pixels are not all finite")
        arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    else:
        arr = np.asarray(img.convert("RGB"), dtype=np.float64) / 255.0
    kind = "RGB" if arr.ndim == 3 else "grayscale"
    return arr, f"{os.path.basename(path)}, {arr.shape[0]}x{arr.shape[1]} {kind} (mode {mode})"
