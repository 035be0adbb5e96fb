"""Per-slide Macenko stain normalisation, as one 3x3 matrix in optical-density space.

Why per slide, not per tile: a tile's own stain statistics depend on what it shows (a stroma
tile has little haematoxylin), so normalising each tile alone would erase exactly the density
and composition signals a prognosis network needs. A slide's stain vectors and 99th-percentile
concentrations are estimated once, from a fixed sample of its tiles, with torchstain's Macenko
normaliser (`fit` on a mosaic of the sample); mapping them onto the target's is then linear in
optical density: OD' = HE_t diag(maxC_t / maxC_s) pinv(HE_s) OD. So every tile of the slide is
normalised by one small matrix product, batched on the training or scoring device.

The target (stain vectors and maximum concentrations) is the median over the training slides,
recorded in each member's preprocessing (`preprocessing["stain"]`) and so in the bundle: scoring
normalises new slides onto exactly the target the member was trained on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

IO = 240.0               # transmitted light intensity (torchstain's default)
MIN_TISSUE_PIXELS = 2000 # fewer stained pixels than this: the fit is not trusted (identity)
FIT_TILES = 32           # tiles per slide the stain is estimated from (evenly spaced, fixed)


def evenly_spaced(n_tiles: int, k: int) -> np.ndarray:
    """Indices of at most `k` evenly spaced tiles of `n_tiles` (all when fewer): a fixed, seed-free sample."""
    if n_tiles <= k:
        return np.arange(n_tiles)
    return np.unique(np.linspace(0, n_tiles - 1, k).round().astype(np.int64))


def fit_slide_sample(tiles: np.ndarray) -> "StainFit | None":
    """The slide's estimate from its FIT_TILES evenly spaced tiles (of all its tiles at one resolution)."""
    return fit_stain(tiles[evenly_spaced(len(tiles), FIT_TILES)])


@dataclass(frozen=True)
class StainFit:
    """A slide's (or the target's) H and E optical-density vectors (3, 2) and 99th-percentile concentrations (2,)."""

    he: np.ndarray
    max_c: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {"he": np.round(self.he, 6).tolist(), "max_c": np.round(self.max_c, 6).tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StainFit":
        return cls(he=np.asarray(d["he"], np.float64).reshape(3, 2), max_c=np.asarray(d["max_c"], np.float64).reshape(2))


def fit_stain(tiles: np.ndarray) -> StainFit | None:
    """Macenko estimate from (N, H, W, 3) uint8 tiles; None when too few stained pixels or the fit fails."""
    import torchstain

    if tiles.size == 0:
        return None
    pixels = tiles.reshape(-1, 3)
    od = -np.log((pixels.astype(np.float64) + 1) / IO)
    if int((~np.any(od < 0.15, axis=1)).sum()) < MIN_TISSUE_PIXELS:
        return None
    normaliser = torchstain.normalizers.MacenkoNormalizer(backend="numpy")
    try:
        normaliser.fit(pixels.reshape(1, -1, 3))
    except (np.linalg.LinAlgError, ValueError, IndexError):
        return None
    he, max_c = np.asarray(normaliser.HERef, np.float64), np.asarray(normaliser.maxCRef, np.float64)
    if not (np.all(np.isfinite(he)) and np.all(np.isfinite(max_c)) and np.all(max_c > 1e-3)):
        return None
    return StainFit(he=he, max_c=max_c)


def median_target(fits: list[StainFit | None]) -> StainFit:
    """The target: element-wise median of the slides' fits (robust to a few odd slides)."""
    good = [f for f in fits if f is not None]
    if not good:
        from wsi_prognosis.errors import TrainingError

        raise TrainingError("stain normalisation: no training slide gave a stain estimate (too little stained "
                            "tissue). Fix: check the tiles, or set data.stain_norm=none.")
    he = np.median(np.stack([f.he for f in good]), axis=0)
    he /= np.linalg.norm(he, axis=0, keepdims=True)
    return StainFit(he=he, max_c=np.median(np.stack([f.max_c for f in good]), axis=0))


def od_matrix(source: StainFit | None, target: StainFit) -> np.ndarray:
    """3x3 M with OD_normalised = M @ OD (identity when the source could not be estimated)."""
    if source is None:
        return np.eye(3)
    return target.he @ np.diag(target.max_c / source.max_c) @ np.linalg.pinv(source.he)


def apply_od_matrix(tiles: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 or float in [0, 255] and (N, 3, 3) or (3, 3) matrices -> float32 in [0, 255]."""
    x = tiles.float()
    od = -torch.log((x + 1.0) / IO)
    m = matrix.to(device=x.device, dtype=torch.float32)
    if m.ndim == 2:
        out = od @ m.T
    else:  # one matrix per tile
        out = torch.einsum("nhwc,ndc->nhwd", od, m)
    return (IO * torch.exp(-out) - 1.0).clamp_(0.0, 255.0)


__all__ = ["FIT_TILES", "evenly_spaced", "fit_slide_sample", "StainFit", "fit_stain", "median_target", "od_matrix", "apply_od_matrix"]
