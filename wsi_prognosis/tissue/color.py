"""Colour measures on uint8 RGB, computed with integer / float32 numpy.

`skimage.color.rgb2hsv` converts the whole image to float64 and costs about 3 s on a
2500 x 1900 thumbnail; these take tens of milliseconds and give the same saturation and hue.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "channels", "check_rgb", "hue_deg", "max_min_u8", "saturation_from_max_min",
    "saturation_u8", "to_gray",
]


def check_rgb(rgb: np.ndarray, name: str = "rgb") -> np.ndarray:
    """Return `rgb` as an (H, W, 3) uint8 array or raise ValueError saying what it got."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"{name} must be an (H, W, 3) uint8 array, got {rgb.shape} {rgb.dtype}")
    return rgb


def channels(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """R, G, B as contiguous (H, W) uint8 planes (reductions over a length-3 last axis are
    several times slower than element-wise ops on planes)."""
    planes = np.ascontiguousarray(np.moveaxis(check_rgb(rgb), 2, 0))
    return planes[0], planes[1], planes[2]


def max_min_u8(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel max and min over the channels, (H, W) uint8 each."""
    r, g, b = channels(rgb)
    return np.maximum(np.maximum(r, g), b), np.minimum(np.minimum(r, g), b)


def saturation_u8(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation scaled to 0-255.

    Parameters
    ----------
    rgb : (H, W, 3) uint8 ndarray

    Returns
    -------
    sat : (H, W) uint8 ndarray
        ``floor(255 * (max - min) / max)`` over the channels; 0 where ``max == 0``.
        Divide by 255 for the [0, 1] saturation of `skimage.color.rgb2hsv`.

    Examples
    --------
    >>> saturation_u8(np.array([[[255, 255, 255], [200, 100, 100], [0, 0, 0]]], np.uint8))
    array([[  0, 127,   0]], dtype=uint8)
    """
    mx, mn = max_min_u8(rgb)
    return saturation_from_max_min(mx, mn)


def saturation_from_max_min(mx: np.ndarray, mn: np.ndarray) -> np.ndarray:
    """`saturation_u8` from precomputed channel max and min (uint8 arrays)."""
    chroma = (mx - mn).astype(np.uint16)
    chroma *= 255
    chroma //= np.maximum(mx, 1)
    return chroma.astype(np.uint8)


def hue_deg(rgb: np.ndarray) -> np.ndarray:
    """HSV hue in degrees.

    Parameters
    ----------
    rgb : (..., 3) uint8 ndarray
        Any leading shape, e.g. (K, 3) selected pixels.

    Returns
    -------
    hue : (...) float32 ndarray
        In [0, 360): red 0, yellow 60, green 120, cyan 180, blue 240, magenta 300;
        0 for grey pixels (max == min), as in `skimage.color.rgb2hsv`.
    """
    c = np.asarray(rgb, dtype=np.float32)
    r, g, b = c[..., 0], c[..., 1], c[..., 2]
    mx = c.max(axis=-1)
    delta = mx - c.min(axis=-1)
    safe = np.where(delta > 0, delta, 1.0).astype(np.float32)
    hue = np.where(mx == r, ((g - b) / safe) % 6.0,
                   np.where(mx == g, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    hue = (hue * 60.0).astype(np.float32)
    hue[delta == 0] = 0.0
    return hue


def to_gray(rgb: np.ndarray) -> np.ndarray:
    """Luma (ITU-R 601: 0.299 R + 0.587 G + 0.114 B) of uint8 RGB tiles.

    Parameters
    ----------
    rgb : (..., 3) uint8 ndarray
        E.g. (N, H, W, 3) tiles.

    Returns
    -------
    gray : (...) uint8 ndarray
        Rounded luma, the input of `blur_score`.
    """
    rgb = np.asarray(rgb)
    if rgb.shape[-1:] != (3,) or rgb.dtype != np.uint8:
        raise ValueError(f"rgb must be a (..., 3) uint8 array, got {rgb.shape} {rgb.dtype}")
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.rint(rgb @ weights).astype(np.uint8)
