"""A small bank of tileable noise textures, made once per process and per pixel size.

Filtering fresh noise for every slide costs more than the rest of a demo slide; cropping a
precomputed, wrap-around texture at a random offset costs one fancy-index.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

BANK_PX = 1024
N_FIBRE_ANGLES = 4


@lru_cache(maxsize=8)
def texture_bank(mpp: float) -> dict[str, np.ndarray]:
    """Zero-mean, unit-variance float32 textures (BANK_PX square, tileable) at `mpp` µm/px.

    grain: chromatin / fine granularity (~0.4 µm); blotch: slow variations (~10 µm); fibre:
    collagen fibres (9 x 0.4 µm) whose angle follows fibre_direction (x 45 degrees), which is
    cropped at the same offset (`crop_many`) so fibroblasts can lie along the fibres.
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

    bank = {"grain": make(0.35, 0.35), "blotch": make(10.0, 10.0)}
    # collagen: fibres at four angles blended along a smooth direction field (in [0, 4): angle
    # = direction * 45 degrees), done once here rather than per slide
    direction = (make(25.0, 25.0) * 1.3) % N_FIBRE_ANGLES
    fibre = np.zeros((BANK_PX, BANK_PX), np.float32)
    for k in range(N_FIBRE_ANGLES):
        weight = np.clip(1.0 - np.abs(((direction - k + 2) % 4) - 2), 0, None)
        fibre += weight * make(9.0, 0.4, np.pi * k / N_FIBRE_ANGLES)
    bank["fibre"] = (fibre - fibre.mean()) / (fibre.std() + 1e-6)
    bank["fibre_direction"] = direction.astype(np.float32)
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
    return crop_many([texture], rng, shape)[0]


def crop_many(textures: list[np.ndarray], rng: np.random.Generator, shape: tuple[int, int]) -> list[np.ndarray]:
    """The same random window of several same-sized tileable textures (read-only views)."""
    size_y, size_x = textures[0].shape
    y0, x0 = int(rng.integers(size_y)), int(rng.integers(size_x))
    views = []
    for texture in textures:
        view = _tiled(texture, shape[0], shape[1])[y0:y0 + shape[0], x0:x0 + shape[1]]
        view.flags.writeable = False
        views.append(view)
    return views
