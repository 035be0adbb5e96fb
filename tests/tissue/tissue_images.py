"""Colours and builders shared by the tissue tests (imported as a plain module)."""

from __future__ import annotations

import numpy as np

GLASS = (243, 241, 244)      # slightly grey-pink glass as scanners render it: saturation ~0.01
PINK = (222, 150, 196)       # eosin-rich tissue at 8 µm/px: saturation ~0.32
PALE = (236, 205, 222)       # pale stroma: saturation ~0.13, above the 0.05 floor
BLUE_INK = (45, 80, 170)     # marker: hue ~223°, saturation ~0.74
GREEN_INK = (60, 150, 90)    # marker: hue ~140°, saturation ~0.6
BLACK_INK = (35, 33, 38)     # marker: brightest channel 38, grey


def canvas(height: int, width: int, colour: tuple[int, int, int] = GLASS) -> np.ndarray:
    """An (height, width, 3) uint8 image of one colour."""
    image = np.empty((height, width, 3), dtype=np.uint8)
    image[...] = colour
    return image


def add_noise(image: np.ndarray, sigma: float = 2.0, seed: int = 0) -> np.ndarray:
    """Seeded Gaussian noise (sigma in gray levels), like a scanner's JPEG noise."""
    noise = np.random.default_rng(seed).normal(0, sigma, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)
