"""Side-by-side panels with labels, written as PNG or animated GIF (Pillow, the ``demo`` extra)."""

from dataclasses import dataclass

import numpy as np

from ._errors import CLIError, optional_import

__all__ = ["Panel", "grid", "save_png", "save_gif"]

_GAP = 6
_LINE = 14
_BACKGROUND = (32, 32, 36)
_TEXT = (225, 225, 225)
_HIGHLIGHT = (255, 214, 64)


@dataclass(frozen=True)
class Panel:
    """One image in the grid: float array in [0, 1] (H x W or H x W x 3), label lines, highlighted or not."""

    image: np.ndarray
    lines: tuple
    highlight: bool = False


def _pil():
    return optional_import("PIL.Image", "writing the demo picture"), optional_import(
        "PIL.ImageDraw", "writing the demo picture"
    )


def _font():
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=12)
    except TypeError:  # Pillow < 10.1 has one fixed bitmap font
        return ImageFont.load_default()


def _to_rgb8(image, scale):
    a = np.clip(np.rint(np.asarray(image) * 255.0), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=-1)
    # integer nearest-neighbour zoom keeps every pooled block visible as a block
    return np.repeat(np.repeat(a, scale, axis=0), scale, axis=1)


def grid(rows, scale=1):
    """Lay out rows of :class:`Panel` (all images the same size) into one Pillow RGB image.

    Examples
    --------
    >>> import numpy as np
    >>> from softpool_nd.cli.figure import Panel, grid
    >>> img = grid([[Panel(np.zeros((8, 8)), ["a"]), Panel(np.ones((8, 8)), ["b"], True)]], scale=2)
    >>> img.size
    (50, 46)
    """
    Image, ImageDraw = _pil()
    n_lines = max(len(p.lines) for row in rows for p in row)
    label_h = n_lines * _LINE + 4
    h, w = np.asarray(rows[0][0].image).shape[:2]
    ph, pw = h * scale, w * scale
    cols = max(len(row) for row in rows)
    width = cols * pw + (cols + 1) * _GAP
    height = len(rows) * (ph + label_h) + (len(rows) + 1) * _GAP
    canvas = Image.new("RGB", (width, height), _BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = _font()
    for r, row in enumerate(rows):
        top = _GAP + r * (ph + label_h + _GAP)
        for c, panel in enumerate(row):
            left = _GAP + c * (pw + _GAP)
            colour = _HIGHLIGHT if panel.highlight else _TEXT
            for i, line in enumerate(panel.lines):
                draw.text((left + 2, top + 2 + i * _LINE), line, fill=colour, font=font)
            canvas.paste(Image.fromarray(_to_rgb8(panel.image, scale)), (left, top + label_h))
            if panel.highlight:
                draw.rectangle(
                    [left - 2, top + label_h - 2, left + pw + 1, top + label_h + ph + 1], outline=colour, width=2
                )
    return canvas


def _writing(path, save):
    try:
        save()
    except OSError as exc:
        raise CLIError(f"cannot write {path}: {exc}") from None
    return path


def save_png(image, path):
    """Write a Pillow image as an optimised PNG; CLIError when the file cannot be written."""
    return _writing(path, lambda: image.save(path, format="PNG", optimize=True))


def save_gif(frames, path, frame_ms=150):
    """Write Pillow images as a looping animated GIF; CLIError when the file cannot be written."""
    return _writing(
        path,
        lambda: frames[0].save(path, format="GIF", save_all=True, append_images=frames[1:], duration=frame_ms, loop=0),
    )
