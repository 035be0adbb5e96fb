"""One resampling function, shared by `Slide.read_region` and `TileReader`.

Both readers fetch the same integer window of level pixels and pass it through here, so the
fast direct-decode path and the OpenSlide path return identical tiles.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def level_window(x_level: float, y_level: float, extent: float) -> tuple[int, int, int, int]:
    """Integer window (x, y, w, h) of level pixels covering a square of `extent` level px at (x_level, y_level)."""
    x0, y0 = math.floor(x_level + 1e-9), math.floor(y_level + 1e-9)
    x1 = math.ceil(x_level + extent - 1e-9)
    y1 = math.ceil(y_level + extent - 1e-9)
    return x0, y0, max(1, x1 - x0), max(1, y1 - y0)


def resample_window(
    window: np.ndarray, box: tuple[float, float, float, float], out_px: int
) -> np.ndarray:
    """Resample `box` (x0, y0, x1, y1 in window pixels) of an RGB uint8 window to (out_px, out_px, 3).

    Returns the window unchanged when it already is the box at the right size. Antialiased
    bilinear (PIL), the same filter in every reader.
    """
    x0, y0, x1, y1 = box
    h, w = window.shape[:2]
    if w == out_px and h == out_px and abs(x0) < 1e-9 and abs(y0) < 1e-9 and abs(x1 - out_px) < 1e-6:
        return window
    image = Image.fromarray(np.ascontiguousarray(window))
    return np.asarray(image.resize((out_px, out_px), Image.Resampling.BILINEAR, box=box))


def rgba_to_rgb_on_white(rgba: np.ndarray) -> np.ndarray:
    """OpenSlide's RGBA (transparent outside the scanned area) composited on white, as uint8 RGB."""
    rgb = rgba[..., :3]
    alpha = rgba[..., 3]
    if alpha.min() == 255:
        return np.ascontiguousarray(rgb)
    a = alpha[..., None].astype(np.float32) / 255.0
    return (rgb.astype(np.float32) * a + 255.0 * (1.0 - a) + 0.5).astype(np.uint8)
