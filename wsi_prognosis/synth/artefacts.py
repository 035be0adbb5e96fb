"""Slide artefacts for tissue QC to find: a pen stroke, a tissue fold, a blurred patch.

Chosen per slide independently of the risk, so they add noise, never signal.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from wsi_prognosis.synth.spec import FieldSpec

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


def _segment_band(h: int, w: int, p0: np.ndarray, p1: np.ndarray, half_px: float) -> tuple[tuple[slice, slice], np.ndarray]:
    """The bounding box of a band around segment p0-p1 and each box pixel's distance to it."""
    lo = np.floor(np.minimum(p0, p1) - half_px - 2).astype(int)
    hi = np.ceil(np.maximum(p0, p1) + half_px + 2).astype(int)
    x0, y0 = max(lo[0], 0), max(lo[1], 0)
    x1, y1 = min(hi[0], w), min(hi[1], h)
    box = (slice(y0, max(y1, y0)), slice(x0, max(x1, x0)))
    yy, xx = np.mgrid[box].astype(np.float32)
    d = p1 - p0
    t = np.clip(((xx - p0[0]) * d[0] + (yy - p0[1]) * d[1]) / max(float(d @ d), 1e-6), 0, 1)
    return box, np.hypot(xx - (p0[0] + t * d[0]), yy - (p0[1] + t * d[1]))


def apply_transmittance(rng: np.random.Generator, spec: FieldSpec, trans: np.ndarray, tissue: np.ndarray) -> None:
    """Pen stroke (ink over anything) and fold (tissue doubled along a band), in place on planar
    (3, H, W) transmittance (Beer-Lambert: optical densities add, transmittances multiply)."""
    h, w = tissue.shape
    if "pen" in spec.artefacts:
        ink = INKS[list(INKS)[int(rng.integers(len(INKS)))]]
        p0 = np.array([rng.uniform(0, w), rng.uniform(0, h)], np.float32)
        p1 = p0 + rng.normal(0, 0.35, 2).astype(np.float32) * np.array([w, h], np.float32)
        width_px = rng.uniform(10, 22) / spec.mpp
        box, dist = _segment_band(h, w, p0, p1, width_px / 2)
        alpha = np.clip((width_px / 2 - dist) / 2.0, 0, 1) * rng.uniform(0.6, 1.0)
        trans[(slice(None), *box)] *= np.exp(-alpha[None] * ink[:, None, None])
    if "fold" in spec.artefacts and tissue.any():
        ys, xs = np.nonzero(tissue)
        k = int(rng.integers(ys.size))
        centre = np.array([xs[k], ys[k]], np.float32)
        direction = rng.normal(0, 1, 2).astype(np.float32)
        direction /= np.linalg.norm(direction) + 1e-6
        half = 0.4 * max(h, w)
        width_px = rng.uniform(12, 30) / spec.mpp
        box, dist = _segment_band(h, w, centre - half * direction, centre + half * direction, width_px / 2)
        band = (dist < width_px / 2) & tissue[box]
        for channel in trans:
            sub = channel[box]
            sub[band] = sub[band] ** 1.85 * 0.95


def apply_rgb(rng: np.random.Generator, spec: FieldSpec, rgb: np.ndarray) -> None:
    """Blurred patch (out-of-focus region), in place on planar (3, H, W) float RGB."""
    if "blur_patch" not in spec.artefacts:
        return
    h, w = rgb.shape[1:]
    radius = rng.uniform(0.12, 0.25) * min(h, w)
    cx, cy = rng.uniform(radius, w - radius), rng.uniform(radius, h - radius)
    x0, x1 = int(max(cx - radius, 0)), int(min(cx + radius, w))
    y0, y1 = int(max(cy - radius, 0)), int(min(cy + radius, h))
    sigma = 2.5 / spec.mpp
    patch = rgb[:, y0:y1, x0:x1]
    blurred = ndimage.gaussian_filter(patch, (0, sigma, sigma))
    yy, xx = np.mgrid[y0:y1, x0:x1]
    weight = np.clip((radius - np.hypot(xx - cx, yy - cy)) / (0.2 * radius), 0, 1)[None]
    rgb[:, y0:y1, x0:x1] = patch * (1 - weight) + blurred * weight
