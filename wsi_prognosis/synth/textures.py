"""A small bank of tileable noise textures, made once per process and per pixel size.

Filtering fresh noise for every slide costs more than the rest of a demo slide; cropping a
precomputed, wrap-around texture at a random offset costs one fancy-index.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from scipy import ndimage

BANK_PX = 512


@lru_cache(maxsize=8)
def texture_bank(mpp: float) -> dict[str, np.ndarray]:
    """Zero-mean, unit-variance float32 textures (BANK_PX square, tileable) at `mpp` µm/px.

    grain: chromatin / fine granularity (~0.4 µm); fibre_h, fibre_v: collagen fibres
    (0.5 x 8 µm); blotch: slow variations (~10 µm).
    """
    rng = np.random.default_rng(20240601)  # fixed: the bank is part of the generator, not the cohort

    def make(sigma_um: tuple[float, float]) -> np.ndarray:
        noise = rng.standard_normal((BANK_PX, BANK_PX)).astype(np.float32)
        sigma_px = (max(sigma_um[0] / mpp, 0.3), max(sigma_um[1] / mpp, 0.3))
        out = ndimage.gaussian_filter(noise, sigma_px, mode="wrap")
        out -= out.mean()
        out /= out.std() + 1e-6
        return out

    return {
        "grain": make((0.35, 0.35)),
        "fibre_h": make((0.45, 7.0)),
        "fibre_v": make((7.0, 0.45)),
        "blotch": make((10.0, 10.0)),
    }


def crop(texture: np.ndarray, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A `shape` window of a tileable `texture` at a random wrap-around offset."""
    size_y, size_x = texture.shape
    y0, x0 = int(rng.integers(size_y)), int(rng.integers(size_x))
    rows = (y0 + np.arange(shape[0])) % size_y
    cols = (x0 + np.arange(shape[1])) % size_x
    return texture[rows[:, None], cols[None, :]]
