"""The planted morphology of `realtex`: nuclei (tumour and lymphocytes) and glands at a planted level n.

Each function draws one kind of feature whose look follows n (the signal's strength x risk, or a
nuisance level independent of the risk), so only the configured kind carries the prognosis.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsi_prognosis.synth.morphology import architecture_params

H_OD = np.array([0.65, 0.70, 0.29], np.float32)   # haematoxylin OD per unit concentration (R, G, B)
E_OD = np.array([0.07, 0.99, 0.11], np.float32)   # eosin


@dataclass(frozen=True)
class NucleiLook:
    density_per_mm2: float
    radius_um: float
    radius_cv: float        # pleomorphism
    aspect: float           # mean long/short axis
    mass: float             # haematoxylin concentration x area / (pi * 2.7² µm²): fixed "DNA" per nucleus
    texture: float          # chromatin coarseness
    nucleolus_probability: float


def _sig(x: float) -> float:
    return float(1 / (1 + np.exp(-x)))


def tumour_nuclei(n: float) -> NucleiLook:
    """Epithelial nuclei at planted level n (strength x r, clipped to +-2.5): size, shape, chromatin."""
    n = float(np.clip(n, -2.5, 2.5))
    return NucleiLook(density_per_mm2=5200.0, radius_um=2.7 * np.exp(0.13 * n),
                      radius_cv=float(np.clip(0.08 * np.exp(0.5 * n), 0.03, 0.35)),
                      aspect=1.0 + 0.55 * _sig(1.6 * n - 0.3), mass=1.0, texture=float(np.clip(0.2 + 0.12 * n, 0.02, 0.6)),
                      nucleolus_probability=_sig(1.8 * n - 1.6))


def lymphocytes(n: float) -> NucleiLook:
    """Lymphocytes at planted level n: fewer as n (risk) grows; always small, round and dark."""
    n = float(np.clip(n, -2.5, 2.5))
    return NucleiLook(density_per_mm2=2600.0 * np.exp(-0.75 * n), radius_um=2.1, radius_cv=0.06, aspect=1.05,
                      mass=1.15, texture=0.05, nucleolus_probability=0.0)


def plant_nuclei(rng: np.random.Generator, conc: np.ndarray, allowed: np.ndarray, look: NucleiLook, mpp: float) -> int:
    """Add `look`'s nuclei (haematoxylin concentration) into `conc` at random places where `allowed`."""
    h, w = conc.shape
    area_mm2 = float(allowed.sum()) * (mpp * 1e-3) ** 2
    count = int(rng.poisson(look.density_per_mm2 * area_mm2))
    ys, xs = np.nonzero(allowed)
    if count == 0 or ys.size == 0:
        return 0
    pick = rng.integers(0, ys.size, count)
    base_area = np.pi * (2.7 / mpp) ** 2
    for cy, cx in zip(ys[pick], xs[pick]):
        r = look.radius_um / mpp * float(np.exp(look.radius_cv * rng.standard_normal()))
        aspect = max(1.0, look.aspect * float(np.exp(0.5 * look.radius_cv * rng.standard_normal())))
        a, b = r * np.sqrt(aspect), r / np.sqrt(aspect)
        theta = rng.uniform(0, np.pi)
        reach = int(a + 2)
        y0, y1, x0, x1 = max(cy - reach, 0), min(cy + reach + 1, h), max(cx - reach, 0), min(cx + reach + 1, w)
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        u = (xx - cx) * np.cos(theta) + (yy - cy) * np.sin(theta)
        v = -(xx - cx) * np.sin(theta) + (yy - cy) * np.cos(theta)
        d = np.sqrt((u / a) ** 2 + (v / b) ** 2)
        inside = np.clip((1.0 - d) * r * 0.8 + 0.5, 0, 1)      # ~1 px soft edge
        level = look.mass * base_area / (np.pi * a * b) * 0.9
        chromatin = 1.0 + look.texture * rng.standard_normal(inside.shape).astype(np.float32)
        blob = inside * level * np.clip(chromatin, 0.3, None)
        if rng.random() < look.nucleolus_probability:
            nr = max(0.8 / mpp * 0.6, 1.2)
            ny, nx = cy + rng.normal(0, 0.2 * b), cx + rng.normal(0, 0.2 * b)
            blob += 1.2 * (np.hypot(xx - nx, yy - ny) < nr)
        box = conc[y0:y1, x0:x1]
        np.maximum(box, blob, out=box)
    return count


def plant_glands(rng: np.random.Generator, tissue: np.ndarray, n: float, mpp: float) -> tuple[np.ndarray, np.ndarray]:
    """Glands whose disruption follows n (layout.draw_glands): (epithelium mask, lumen mask)."""
    from wsi_prognosis.synth.layout import EPITHELIUM, LUMEN, STROMA, draw_glands
    from wsi_prognosis.synth.spec import FieldSpec

    h, w = tissue.shape
    spec = FieldSpec(width_px=w, height_px=h, mpp=mpp, risk=n, strength_10x=1.0)
    label = np.where(tissue, STROMA, 0).astype(np.uint8)
    gland_id = np.zeros((h, w), np.int32)
    draw_glands(rng, spec, tissue, architecture_params(n, 1.0), label, gland_id)
    return label == EPITHELIUM, label == LUMEN


__all__ = ["H_OD", "E_OD", "NucleiLook", "tumour_nuclei", "lymphocytes", "plant_nuclei", "plant_glands"]
