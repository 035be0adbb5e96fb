"""Tile augmentations for training, on uint8 arrays, vectorised over a bag, every draw from one rng.

Flips and 90° rotations (tissue has no orientation), H&E stain jitter in scikit-image's HED
space (stain amount and background of each stain vary between labs), brightness / contrast /
saturation jitter, and a mild Gaussian blur (focus varies between scanners). The caller passes a
seeded `np.random.Generator`, so a bag's augmentation is reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter
from skimage.color import hed_from_rgb, rgb_from_hed

# skimage.color.rgb2hed / hed2rgb, fused and in float32 (tested equal to them within 1/255):
# a 256-entry table replaces the log of uint8 pixels, one exp replaces two conversions' worth.
_LOG_ADJUST = np.log(1e-6)
_OD_LUT = (np.log(np.maximum(np.arange(256) / 255.0, 1e-6)) / _LOG_ADJUST).astype(np.float32)
_HED_FROM_RGB = hed_from_rgb.astype(np.float32)
_RGB_FROM_HED_LOG = (rgb_from_hed * _LOG_ADJUST).astype(np.float32)  # log adjustment folded in


def hed_jitter(tiles: np.ndarray, alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """`hed2rgb(rgb2hed(tiles) * alpha + beta)` for (N, H, W, 3) uint8 tiles; float32 RGB in [0, 1].

    alpha, beta : (N, 1, 1, 3) per-tile scale and shift of the haematoxylin, eosin and DAB channels.
    """
    n = len(tiles)
    stains = np.matmul(_OD_LUT[tiles].reshape(n, -1, 3), _HED_FROM_RGB)  # batched (N, H*W, 3)
    np.maximum(stains, 0, out=stains)
    stains *= alpha.astype(np.float32).reshape(n, 1, 3)
    stains += beta.astype(np.float32).reshape(n, 1, 3)
    rgb = np.exp(np.matmul(stains, _RGB_FROM_HED_LOG), out=stains).reshape(tiles.shape)
    return np.clip(rgb, 0.0, 1.0, out=rgb)


@dataclass(frozen=True)
class AugmentConfig:
    """Strengths of each augmentation; 0 (or False) switches one off."""

    flips: bool = True
    rot90: bool = True
    hed_alpha: float = 0.05        # each stain's amount scaled by U(1 - a, 1 + a)
    hed_beta: float = 0.01         # and shifted by U(-b, b) in HED optical density
    brightness: float = 0.1        # x U(1 - b, 1 + b)
    contrast: float = 0.1          # blend with the tile mean by U(1 - c, 1 + c)
    saturation: float = 0.1        # blend with grey by U(1 - s, 1 + s)
    blur_probability: float = 0.2  # share of tiles blurred ...
    blur_sigma_px: float = 0.8     # ... with sigma U(0.1, this), in tile pixels

    @property
    def enabled(self) -> bool:
        return any([self.flips, self.rot90, self.hed_alpha, self.hed_beta, self.brightness, self.contrast,
                    self.saturation, self.blur_probability])


def augment_tiles(tiles: np.ndarray, rng: np.random.Generator, config: AugmentConfig) -> np.ndarray:
    """Augment a bag of tiles.

    Parameters
    ----------
    tiles : (N, H, W, 3) uint8 ndarray
        RGB tiles (square: H == W, needed for 90° rotations).
    rng : numpy Generator, the only source of randomness.
    config : which augmentations, how strong.

    Returns
    -------
    (N, H, W, 3) uint8 ndarray, a new array.
    """
    n = len(tiles)
    out = np.array(tiles, copy=True)
    if n == 0:
        return out
    if config.flips or config.rot90:
        flip_h = rng.random(n) < 0.5 if config.flips else np.zeros(n, bool)
        flip_v = rng.random(n) < 0.5 if config.flips else np.zeros(n, bool)
        turns = rng.integers(0, 4, n) if config.rot90 else np.zeros(n, int)
        for i in range(n):
            tile = out[i]
            if flip_h[i]:
                tile = tile[:, ::-1]
            if flip_v[i]:
                tile = tile[::-1]
            if turns[i]:
                tile = np.rot90(tile, int(turns[i]))
            out[i] = tile
    x: np.ndarray | None = None
    if config.hed_alpha or config.hed_beta:
        alpha = rng.uniform(1 - config.hed_alpha, 1 + config.hed_alpha, (n, 1, 1, 3))
        beta = rng.uniform(-config.hed_beta, config.hed_beta, (n, 1, 1, 3))
        x = hed_jitter(out, alpha, beta)  # float32 in [0, 1]
    if config.brightness or config.contrast or config.saturation:
        if x is None:
            x = out.astype(np.float32) / 255.0
        if config.brightness:
            x *= rng.uniform(1 - config.brightness, 1 + config.brightness, (n, 1, 1, 1)).astype(np.float32)
        if config.contrast:
            c = rng.uniform(1 - config.contrast, 1 + config.contrast, (n, 1, 1, 1)).astype(np.float32)
            mean = x.mean(axis=(1, 2, 3), keepdims=True)
            x = (x - mean) * c + mean
        if config.saturation:
            s = rng.uniform(1 - config.saturation, 1 + config.saturation, (n, 1, 1, 1)).astype(np.float32)
            grey = x @ np.array([0.299, 0.587, 0.114], np.float32)
            x = (x - grey[..., None]) * s + grey[..., None]
    if x is not None:
        out = np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if config.blur_probability and config.blur_sigma_px > 0.1:
        blurred = rng.random(n) < config.blur_probability
        sigmas = rng.uniform(0.1, config.blur_sigma_px, n)
        for i in np.flatnonzero(blurred):
            out[i] = gaussian_filter(out[i], sigma=(sigmas[i], sigmas[i], 0), mode="reflect")
    return out
