"""A small bank of tileable noise textures, made once per process and per pixel size.

Filtering fresh noise for every slide costs more than the rest of a demo slide; cropping a
precomputed, wrap-around texture at a random offset costs one fancy-index.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

BANK_PX = 512
N_FIBRE_ANGLES = 4


@lru_cache(maxsize=8)
def texture_bank(mpp: float) -> dict[str, np.ndarray]:
    """Zero-mean, unit-variance float32 textures (BANK_PX square, tileable) at `mpp` µm/px.

    grain: chromatin / fine granularity (~0.4 µm); fibre_0..3: collagen fibres (9 x 0.4 µm) at
    0, 45, 90, 135 degrees; blotch: slow variations (~10 µm); orientation: the fibre direction field.
    """
    rng = np.random.default_rng(20240601)  # fixed: the bank is part of the generator, not the cohort
    freq = np.fft.fftfreq(BANK_PX).astype(np.float32)
    fy, fx = np.meshgrid(freq, freq, indexing="ij")

    def make(sigma_along_um: float, sigma_across_um: float, angle: float = 0.0) -> np.ndarray:
        """Gaussian-filtered white noise, filtered in Fourier space (so it tiles seamlessly)."""
        noise = np.fft.fft2(rng.standard_normal((BANK_PX, BANK_PX)))
        f_along = fx * np.cos(angle) + fy * np.sin(angle)
        f_across = -fx * np.sin(angle) + fy * np.cos(angle)
        s_along, s_across = sigma_along_um / mpp, sigma_across_um / mpp
        kernel = np.exp(-2 * np.pi ** 2 * ((s_along * f_along) ** 2 + (s_across * f_across) ** 2))
        out = np.fft.ifft2(noise * kernel).real.astype(np.float32)
        out -= out.mean()
        out /= out.std() + 1e-6
        return out

    bank = {"grain": make(0.35, 0.35), "blotch": make(10.0, 10.0), "orientation": make(25.0, 25.0)}
    for k in range(N_FIBRE_ANGLES):
        bank[f"fibre_{k}"] = make(9.0, 0.4, np.pi * k / N_FIBRE_ANGLES)
    return bank


_TILED: dict[int, tuple[np.ndarray, int, int]] = {}


def _tiled(texture: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """`texture` repeated to at least (rows, cols) + one period; cached (a view is sliced from it)."""
    cached = _TILED.get(id(texture))
    if cached is None or cached[1] < rows or cached[2] < cols:
        reps = (-(-rows // texture.shape[0]) + 1, -(-cols // texture.shape[1]) + 1)
        big = np.tile(texture, reps)
        _TILED[id(texture)] = cached = (big, big.shape[0] - texture.shape[0], big.shape[1] - texture.shape[1])
    return cached[0]


def crop(texture: np.ndarray, rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A read-only `shape` window of a tileable `texture` at a random wrap-around offset (a view)."""
    size_y, size_x = texture.shape
    y0, x0 = int(rng.integers(size_y)), int(rng.integers(size_x))
    view = _tiled(texture, shape[0], shape[1])[y0:y0 + shape[0], x0:x0 + shape[1]]
    view.flags.writeable = False
    return view
