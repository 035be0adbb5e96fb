"""Slide artefacts for tissue QC to find: a pen stroke, a tissue fold, a blurred patch.

Chosen per slide independently of the risk, so they add noise, never signal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

if TYPE_CHECKING:
    from wsi_prognosis.synth.render import FieldSpec

KINDS = ("pen", "fold", "blur_patch")
INKS = {  # optical density per unit ink (R, G, B)
    "blue": np.array([1.1, 0.55, 0.08], np.float32),
    "green": np.array([0.95, 0.15, 0.75], np.float32),
    "black": np.array([1.2, 1.2, 1.15], np.float32),
}


def choose(rng: np.random.Generator, probability: float) -> tuple[str, ...]:
    """Each kind independently with `probability` (always draws 3 numbers: stable streams)."""
    draws = rng.random(len(KINDS))
    return tuple(kind for kind, u in zip(KINDS, draws) if u < probability)


def _line_distance(h: int, w: int, p0: np.ndarray, p1: np.ndarray) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    d = p1 - p0
    t = np.clip(((xx - p0[0]) * d[0] + (yy - p0[1]) * d[1]) / max(float(d @ d), 1e-6), 0, 1)
    return np.hypot(xx - (p0[0] + t * d[0]), yy - (p0[1] + t * d[1]))


def apply_od(rng: np.random.Generator, spec: "FieldSpec", od: np.ndarray, tissue: np.ndarray) -> None:
    """Pen stroke (ink added anywhere) and fold (tissue doubled along a band), in place."""
    h, w = tissue.shape
    if "pen" in spec.artefacts:
        ink = INKS[list(INKS)[int(rng.integers(len(INKS)))]]
        p0 = np.array([rng.uniform(0, w), rng.uniform(0, h)], np.float32)
        p1 = p0 + rng.normal(0, 0.35, 2).astype(np.float32) * np.array([w, h], np.float32)
        width_px = rng.uniform(10, 22) / spec.mpp
        dist = _line_distance(h, w, p0, p1)
        alpha = np.clip((width_px / 2 - dist) / 2.0, 0, 1) * rng.uniform(0.6, 1.0)
        od += alpha[..., None] * ink
    if "fold" in spec.artefacts and tissue.any():
        ys, xs = np.nonzero(tissue)
        k = int(rng.integers(ys.size))
        centre = np.array([xs[k], ys[k]], np.float32)
        direction = rng.normal(0, 1, 2).astype(np.float32)
        direction /= np.linalg.norm(direction) + 1e-6
        half = 0.4 * max(h, w)
        dist = _line_distance(h, w, centre - half * direction, centre + half * direction)
        width_px = rng.uniform(12, 30) / spec.mpp
        band = (dist < width_px / 2) & tissue
        od[band] = od[band] * 1.85 + 0.05


def apply_rgb(rng: np.random.Generator, spec: "FieldSpec", rgb: np.ndarray) -> None:
    """Blurred patch (out-of-focus region), in place on float RGB."""
    if "blur_patch" not in spec.artefacts:
        return
    h, w = rgb.shape[:2]
    radius = rng.uniform(0.12, 0.25) * min(h, w)
    cx, cy = rng.uniform(radius, w - radius), rng.uniform(radius, h - radius)
    x0, x1 = int(max(cx - radius, 0)), int(min(cx + radius, w))
    y0, y1 = int(max(cy - radius, 0)), int(min(cy + radius, h))
    sigma = 2.5 / spec.mpp
    patch = rgb[y0:y1, x0:x1]
    blurred = ndimage.gaussian_filter(patch, (sigma, sigma, 0))
    yy, xx = np.mgrid[y0:y1, x0:x1]
    weight = np.clip((radius - np.hypot(xx - cx, yy - cy)) / (0.2 * radius), 0, 1)[..., None]
    rgb[y0:y1, x0:x1] = patch * (1 - weight) + blurred * weight
