"""The layout of a synthetic field: where the tissue is, its glands and tumour buds, as a class label map.

Every size is in µm and converted with the field's mpp. The tissue area comes from a quantile
of a smooth random field, so it is set by the configuration alone; the glands' disruption
follows the architecture parameters (the 10x signal).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from wsi_prognosis.synth.morphology import ArchitectureParams
from wsi_prognosis.synth.spec import FieldSpec

# class labels of the label map
BACKGROUND = 0
STROMA = 1
EPITHELIUM = 2
LUMEN = 3
BUD = 4
THETA_BINS = 720


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    out = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="reflect")
    return out / (out.std() + 1e-6)


def _resize(field_: np.ndarray, width: int, height: int) -> np.ndarray:
    return np.asarray(Image.fromarray(field_.astype(np.float32), mode="F").resize((width, height), Image.BILINEAR))


def tissue_field(rng: np.random.Generator, grid_w: int, grid_h: int, tissue_fraction: float) -> tuple[np.ndarray, float]:
    """A smooth (grid_h, grid_w) field and the threshold above which a cell is tissue.

    One to three elliptical pieces with ragged edges, kept off the slide border; the threshold
    is the field's (1 - tissue_fraction) quantile, so the tissue area is set by the configuration
    alone (never by the risk).
    """
    yy, xx = np.mgrid[0:grid_h, 0:grid_w].astype(np.float32)
    xx, yy = xx / grid_w, yy / grid_h
    envelope = np.full((grid_h, grid_w), -1.0, np.float32)
    for _ in range(int(rng.integers(1, 4))):
        cx, cy = rng.uniform(0.35, 0.65), rng.uniform(0.35, 0.65)
        ax, ay = rng.uniform(0.22, 0.38), rng.uniform(0.22, 0.38)
        angle = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
        v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
        envelope = np.maximum(envelope, 1.0 - (u / ax) ** 2 - (v / ay) ** 2)
    border = np.minimum.reduce([xx, 1 - xx, yy, 1 - yy])
    field_ = envelope + 0.30 * _smooth_noise(rng, (grid_h, grid_w), max(grid_w, grid_h) / 12) \
        + 0.10 * _smooth_noise(rng, (grid_h, grid_w), 1.5) - 8.0 * np.clip(0.12 - border, 0, None) ** 2 / 0.12
    return field_.astype(np.float32), float(np.quantile(field_, 1.0 - tissue_fraction))


def tissue_layout(rng: np.random.Generator, spec: FieldSpec, cell_um: float = 8.0) -> np.ndarray:
    """(H, W) bool tissue mask at the field's resolution (all True for a full-tissue patch)."""
    if spec.full_tissue:
        return np.ones((spec.height_px, spec.width_px), bool)
    w_um, h_um = spec.width_px * spec.mpp, spec.height_px * spec.mpp
    grid_w, grid_h = max(int(np.ceil(w_um / cell_um)), 8), max(int(np.ceil(h_um / cell_um)), 8)
    field_, threshold = tissue_field(rng, grid_w, grid_h, spec.tissue_fraction)
    return _resize(field_, spec.width_px, spec.height_px) > threshold


@dataclass
class Gland:
    cx_px: float
    cy_px: float
    kind: str        # "tubular" | "cribriform" | "solid"


def draw_glands(rng: np.random.Generator, spec: FieldSpec, tissue: np.ndarray, arch: ArchitectureParams,
                label: np.ndarray, gland_id: np.ndarray) -> list[Gland]:
    """Paint glands into `label` (epithelium, lumen) inside the tissue; returns the glands."""
    mpp = spec.mpp
    spacing_um = 68.0
    glands: list[Gland] = []
    h, w = tissue.shape
    rows = int(spec.height_px * mpp / (spacing_um * 0.866)) + 2
    cols = int(spec.width_px * mpp / spacing_um) + 2
    for row in range(rows):
        for col in range(cols):
            cx_um = (col + 0.5 * (row % 2)) * spacing_um + rng.normal(0, 0.18 * spacing_um)
            cy_um = row * spacing_um * 0.866 + rng.normal(0, 0.18 * spacing_um)
            cx, cy = cx_um / mpp, cy_um / mpp
            if not (0 <= cx < w and 0 <= cy < h) or not tissue[int(cy), int(cx)] or rng.random() > 0.85:
                continue
            u = rng.random()
            kind = "solid" if u < arch.solid_probability else (
                "cribriform" if u < arch.solid_probability + arch.cribriform_probability else "tubular")
            radius_um = rng.uniform(19, 30) * {"solid": 0.85, "cribriform": 1.0, "tubular": 1.0}[kind]
            _paint_gland(rng, len(glands) + 1, cx, cy, radius_um / mpp, kind, arch, mpp, tissue, label, gland_id)
            glands.append(Gland(cx, cy, kind))
    return glands


def _paint_gland(rng: np.random.Generator, gid: int, cx: float, cy: float, radius_px: float, kind: str,
                 arch: ArchitectureParams, mpp: float, tissue: np.ndarray, label: np.ndarray,
                 gland_id: np.ndarray) -> None:
    h, w = label.shape
    irregular = arch.irregularity * (1.6 if kind != "tubular" else 1.0)
    ks = np.arange(2, 8)
    amps = irregular * rng.standard_normal(ks.size) / ks ** 0.7
    phases = rng.uniform(0, 2 * np.pi, ks.size)
    ellipticity = rng.uniform(0.7, 1.0)
    tilt = rng.uniform(0, np.pi)
    # the outline radius as a function of angle, tabulated once (cheaper than cos per pixel)
    angles = np.linspace(-np.pi, np.pi, THETA_BINS + 1, dtype=np.float32)
    table = radius_px * (1.0 + (amps[:, None] * np.cos(ks[:, None] * angles[None, :] + phases[:, None])).sum(0))
    table = table.astype(np.float32)
    reach = int(table.max()) + 2
    x0, x1 = max(int(cx) - reach, 0), min(int(cx) + reach + 1, w)
    y0, y1 = max(int(cy) - reach, 0), min(int(cy) + reach + 1, h)
    if x1 <= x0 or y1 <= y0:
        return
    dx = (np.arange(x0, x1, dtype=np.float32) - cx)[None, :]
    dy = (np.arange(y0, y1, dtype=np.float32) - cy)[:, None]
    c, s = np.float32(np.cos(tilt)), np.float32(np.sin(tilt))
    u = dx * c + dy * s
    v = (dy * c - dx * s) / np.float32(ellipticity)
    rho = np.hypot(u, v)
    theta_bin = ((np.arctan2(v, u) + np.float32(np.pi)) * np.float32(THETA_BINS / (2 * np.pi))).astype(np.int32)
    outline = table[theta_bin]
    inside = rho < outline
    inside &= tissue[y0:y1, x0:x1]
    box = label[y0:y1, x0:x1]
    box[inside] = EPITHELIUM
    gland_id[y0:y1, x0:x1][inside] = gid
    if kind == "tubular":
        thickness = rng.uniform(8.5, 11.5) / mpp
        lumen = inside & (rho < outline - np.float32(thickness))
        box[lumen] = LUMEN
    elif kind == "cribriform":
        for _ in range(int(rng.integers(3, 7))):
            angle, dist = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.55) * radius_px
            lr = rng.uniform(3.0, 6.0) / mpp
            lumen = inside & (np.hypot(dx - dist * np.cos(angle), dy - dist * np.sin(angle)) < lr)
            box[lumen] = LUMEN


def draw_buds(rng: np.random.Generator, spec: FieldSpec, label: np.ndarray,
              arch: ArchitectureParams) -> np.ndarray:
    """Tumour buds: clusters of 1-4 cells in the stroma. Returns (N, 2) cell centres (x, y) px."""
    mpp = spec.mpp
    stroma = np.flatnonzero(label.ravel() == STROMA)
    area_mm2 = stroma.size * (mpp * 1e-3) ** 2
    n_buds = int(rng.poisson(arch.budding_per_mm2 * area_mm2)) if stroma.size else 0
    centres: list[tuple[float, float]] = []
    cell_px = 4.5 / mpp
    h, w = label.shape
    for idx in rng.choice(stroma, size=n_buds, replace=True) if n_buds else []:
        by, bx = divmod(int(idx), w)
        for k in range(int(rng.integers(1, 5))):
            x = bx + (rng.normal(0, 1.3 * cell_px) if k else 0.0)
            y = by + (rng.normal(0, 1.3 * cell_px) if k else 0.0)
            r = int(cell_px + 2)
            x0, x1, y0, y1 = max(int(x) - r, 0), min(int(x) + r + 1, w), max(int(y) - r, 0), min(int(y) + r + 1, h)
            if x1 <= x0 or y1 <= y0:
                continue
            yy, xx = np.mgrid[y0:y1, x0:x1]
            disc = np.hypot(xx - x, yy - y) < cell_px * rng.uniform(0.8, 1.15)
            sub = label[y0:y1, x0:x1]
            sub[disc & (sub == STROMA)] = BUD
            centres.append((x, y))
    return np.asarray(centres, np.float32).reshape(-1, 2)


__all__ = ["BACKGROUND", "STROMA", "EPITHELIUM", "LUMEN", "BUD", "THETA_BINS", "Gland", "tissue_field", "tissue_layout",
           "draw_glands", "draw_buds"]
