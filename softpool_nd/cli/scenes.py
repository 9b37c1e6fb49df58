"""Deterministic synthetic inputs for the demo: a still scene and a short video.

Built from NumPy alone (no files, no fonts, no network) so that every install
draws the same pixels. Both are made of what pooling loses first: 1-pixel
checkerboards, thin lines, a zone plate, small bright dots on a dark
background and bitmap text, over a smooth gradient.
"""

import numpy as np

__all__ = ["still", "video"]

# 5x7 bitmap glyphs, enough for the scene's caption
_GLYPHS = {
    "S": ("01111", "10000", "10000", "01110", "00001", "00001", "11110"),
    "O": ("01110", "10001", "10001", "10001", "10001", "10001", "01110"),
    "F": ("11111", "10000", "10000", "11110", "10000", "10000", "10000"),
    "T": ("11111", "00100", "00100", "00100", "00100", "00100", "00100"),
    "P": ("11110", "10001", "10001", "11110", "10000", "10000", "10000"),
    "L": ("10000", "10000", "10000", "10000", "10000", "10000", "11111"),
    "N": ("10001", "11001", "10101", "10011", "10001", "10001", "10001"),
    "D": ("11100", "10010", "10001", "10001", "10001", "10010", "11100"),
    "-": ("00000", "00000", "00000", "11111", "00000", "00000", "00000"),
    " ": ("00000",) * 7,
}


def _text_mask(text, scale):
    glyphs = [np.array([[c == "1" for c in row] for row in _GLYPHS[ch]]) for ch in text]
    spaced = [np.pad(g, ((0, 0), (0, 1))) for g in glyphs]
    mask = np.concatenate(spaced, axis=1)[:, :-1]
    return np.kron(mask, np.ones((scale, scale), dtype=bool))


def _paint(img, mask, top, left, colour):
    h, w = mask.shape
    region = img[top : top + h, left : left + w]
    region[mask[: region.shape[0], : region.shape[1]]] = colour


def _line_mask(shape, angle_deg, offset, width=1.0):
    """Pixels within width/2 of a straight line through the centre, shifted by ``offset``."""
    yy, xx = np.mgrid[: shape[0], : shape[1]].astype(float)
    cy, cx = (shape[0] - 1) / 2, (shape[1] - 1) / 2
    t = np.deg2rad(angle_deg)
    dist = (xx - cx) * np.sin(t) - (yy - cy) * np.cos(t) - offset
    return np.abs(dist) <= width / 2


def still(size=256):
    """A ``size x size x 3`` float64 RGB scene in [0, 1].

    Examples
    --------
    >>> from softpool_nd.cli.scenes import still
    >>> img = still(64)
    >>> img.shape, img.dtype, float(img.min()) >= 0.0, float(img.max()) <= 1.0
    ((64, 64, 3), dtype('float64'), True, True)
    """
    if size < 32:
        raise ValueError(f"size={size} must be at least 32 for the scene to fit")
    h = w = size
    half = size // 2
    yy, xx = np.mgrid[:h, :w] / size
    # dark blue-to-purple gradient background
    img = np.stack([0.08 + 0.18 * xx, 0.06 + 0.06 * yy, 0.20 + 0.15 * (1 - yy)], axis=-1)

    # top left: checkerboards of 1, 2 and 4 pixel cells in three bands
    band = half // 3
    for i, cell in enumerate((1, 2, 4)):
        r0 = i * band
        ry, rx = np.mgrid[r0 : r0 + band, :half]
        on = ((ry // cell + rx // cell) % 2).astype(bool)
        img[r0 : r0 + band, :half][on] = (0.95, 0.95, 0.90)
        img[r0 : r0 + band, :half][~on] = (0.05, 0.05, 0.08)

    # top right: zone plate, spatial frequency rising towards the corners
    zy, zx = np.mgrid[:half, :half] - (half - 1) / 2
    img[:half, half:] = (0.5 + 0.5 * np.cos(np.pi * (zx**2 + zy**2) / half))[..., None] * (1.0, 0.85, 0.3)

    # bottom left: thin coloured lines at several angles, then the caption on top
    quad = img[half:, :half]
    for k, (angle, colour) in enumerate(
        ((10, (1, 0.2, 0.2)), (35, (0.2, 1, 0.3)), (60, (0.3, 0.5, 1)), (100, (1, 1, 1)))
    ):
        quad[_line_mask(quad.shape[:2], angle, (k - 1.5) * half / 6)] = colour
    text = _text_mask("SOFTPOOL", max(1, half // 64))
    _paint(quad, text, half // 12, max(0, (half - text.shape[1]) // 2), (1.0, 1.0, 1.0))
    small = _text_mask("N-D", 1)
    _paint(quad, small, half - half // 6, half // 10, (1.0, 0.9, 0.2))

    # bottom right: a star field, single bright pixels and a few 2x2 stars
    sky = img[half:, half:]
    sky[...] = sky * 0.3
    rng = np.random.default_rng(20210101)
    n = max(8, half * half // 60)
    ys, xs = rng.integers(0, half, n), rng.integers(0, half, n)
    sky[ys, xs] = rng.uniform(0.6, 1.0, (n, 1)) * rng.uniform(0.7, 1.0, (n, 3))
    for y, x in zip(ys[: n // 10], xs[: n // 10]):
        sky[y : y + 2, x : x + 2] = (1.0, 1.0, 0.95)
    return np.clip(img, 0.0, 1.0)


def video(frames=16, size=96):
    """A ``frames x size x size`` float64 grayscale clip in [0, 1] (time, height, width).

    A thin bar turns, a bright dot crosses the frame, and a fine grating
    drifts over a dark background: detail in space and in time.

    Examples
    --------
    >>> from softpool_nd.cli.scenes import video
    >>> clip = video(8, 32)
    >>> clip.shape, bool((clip[0] != clip[1]).any())
    ((8, 32, 32), True)
    """
    if frames < 2 or size < 16:
        raise ValueError(f"frames={frames} must be at least 2 and size={size} at least 16")
    clip = np.empty((frames, size, size))
    yy, xx = np.mgrid[:size, :size].astype(float)
    for t in range(frames):
        phase = t / frames
        frame = 0.1 + 0.1 * yy / size
        grating = 0.5 + 0.5 * np.sin(2 * np.pi * (xx / 3.0 + phase))
        frame[: size // 4] = 0.15 + 0.6 * grating[: size // 4]
        frame[_line_mask((size, size), 180 * phase, 0.0)] = 0.95
        dy = int(size * 0.6 + size * 0.2 * np.sin(2 * np.pi * phase))
        dx = int((size - 2) * phase)
        frame[dy : dy + 2, dx : dx + 2] = 1.0
        clip[t] = frame
    return np.clip(clip, 0.0, 1.0)
