"""Nuclei of a synthetic field, drawn into the haematoxylin / eosin concentration maps.

Epithelial nuclei carry the 40x signal (size, pleomorphism, polarity, chromatin, nucleoli
follow the nuclear parameters); fibroblasts and lymphocytes in the stroma do not depend on r.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from wsi_prognosis.synth.layout import EPITHELIUM, STROMA, Gland
from wsi_prognosis.synth.morphology import NuclearParams
from wsi_prognosis.synth.spec import FieldSpec


def _hex_points(rng: np.random.Generator, width: int, height: int, spacing_px: float,
                jitter: float) -> np.ndarray:
    rows = np.arange(0, height + spacing_px, spacing_px * 0.866)
    cols = np.arange(0, width + spacing_px, spacing_px)
    gx, gy = np.meshgrid(cols, rows)
    gx = gx + (np.arange(rows.size)[:, None] % 2) * spacing_px / 2
    pts = np.stack([gx.ravel(), gy.ravel()], 1)
    pts += rng.normal(0, jitter * spacing_px, pts.shape)
    keep = (pts[:, 0] >= 0) & (pts[:, 0] < width) & (pts[:, 1] >= 0) & (pts[:, 1] < height)
    return pts[keep].astype(np.float32)


@dataclass
class Nuclei:
    """A batch of elliptical nuclei (px units), drawn in order: later ones lie on top."""

    x: np.ndarray
    y: np.ndarray
    a: np.ndarray             # semi-axis along `angle`
    b: np.ndarray
    angle: np.ndarray
    darkness: np.ndarray
    coarseness: float
    nucleolus_px: np.ndarray  # 0 = none


def draw_nuclei(ch: np.ndarray, ce: np.ndarray, alpha_map: np.ndarray, grain: np.ndarray, nuclei: Nuclei) -> None:
    """Blend nuclei (soft edge, chromatin texture, darker rim, optional nucleolus) into the maps.

    Shapes are computed for the whole batch at once in a common box; only the blend into the
    image is a loop (three slice operations per nucleus).
    """
    n = nuclei.x.size
    if n == 0:
        return
    h, w = ch.shape
    m = int(np.ceil(max(nuclei.a.max(), nuclei.b.max()))) + 2
    offsets = np.arange(-m, m + 1, dtype=np.float32)
    xi, yi = np.floor(nuclei.x).astype(int), np.floor(nuclei.y).astype(int)
    dx = offsets[None, None, :] + (xi - nuclei.x).astype(np.float32)[:, None, None]
    dy = offsets[None, :, None] + (yi - nuclei.y).astype(np.float32)[:, None, None]
    c = np.cos(nuclei.angle).astype(np.float32)[:, None, None]
    s = np.sin(nuclei.angle).astype(np.float32)[:, None, None]
    a = nuclei.a.astype(np.float32)[:, None, None]
    b = nuclei.b.astype(np.float32)[:, None, None]
    u = (dx * c + dy * s) / a
    v = (dy * c - dx * s) / b
    d = np.sqrt(u * u + v * v)
    alpha = np.clip((1.0 - d) * np.minimum(a, b) + 0.5, 0.0, 1.0)
    rows = np.clip(yi[:, None] + np.arange(-m, m + 1)[None, :], 0, h - 1)
    cols = np.clip(xi[:, None] + np.arange(-m, m + 1)[None, :], 0, w - 1)
    texture = grain[rows[:, :, None], cols[:, None, :]]
    dark = nuclei.darkness.astype(np.float32)[:, None, None]
    value = dark * np.maximum(1.55 + 1.5 * nuclei.coarseness * texture + 0.35 * (d > 0.72), 0.5)
    if (nuclei.nucleolus_px > 0).any():
        sigma2 = (2 * np.maximum(nuclei.nucleolus_px, 1e-3) ** 2).astype(np.float32)[:, None, None]
        spot = np.exp(-((dx - 0.2 * a * c) ** 2 + (dy - 0.2 * a * s) ** 2) / sigma2)
        value += 1.2 * dark * spot * (nuclei.nucleolus_px > 0)[:, None, None]
    for k in range(n):
        x0, y0 = xi[k] - m, yi[k] - m
        cx0, cy0 = max(x0, 0), max(y0, 0)
        cx1, cy1 = min(x0 + 2 * m + 1, w), min(y0 + 2 * m + 1, h)
        if cx1 <= cx0 or cy1 <= cy0:
            continue
        al = alpha[k, cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0]
        sub_h, sub_e = ch[cy0:cy1, cx0:cx1], ce[cy0:cy1, cx0:cx1]
        sub_h += al * (value[k, cy0 - y0:cy1 - y0, cx0 - x0:cx1 - x0] - sub_h)
        sub_e += al * (0.10 - sub_e)
        np.maximum(alpha_map[cy0:cy1, cx0:cx1], al, out=alpha_map[cy0:cy1, cx0:cx1])


def draw_all_nuclei(rng: np.random.Generator, spec: FieldSpec, label: np.ndarray, gland_id: np.ndarray,
                    glands: list[Gland], buds: np.ndarray, nuc: NuclearParams, ch: np.ndarray,
                    ce: np.ndarray, fibre_direction: np.ndarray, grain: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
    """Epithelial nuclei (hex-packed, radial when polar), bud nuclei, fibroblasts, lymphocytes."""
    mpp = spec.mpp
    h, w = label.shape
    alpha_map = np.zeros((h, w), np.float32)
    # epithelium: hex packing at the risk-dependent density, disorder loosens the packing
    spacing_px = np.sqrt(2.0 / (np.sqrt(3.0) * nuc.density_per_um2)) / mpp
    pts = _hex_points(rng, w, h, spacing_px, 0.08 + 0.22 * nuc.disorder)
    ix = np.clip(pts[:, 0].astype(int), 0, w - 1)
    iy = np.clip(pts[:, 1].astype(int), 0, h - 1)
    in_epi = label[iy, ix] == EPITHELIUM
    ex, ey, gids = pts[in_epi, 0], pts[in_epi, 1], gland_id[iy, ix][in_epi]
    n = ex.size
    centres = np.array([[g.cx_px, g.cy_px] for g in glands] + [[0.0, 0.0]], np.float32)
    polar = (gids > 0) & np.array([False] + [g.kind != "solid" for g in glands])[gids]
    size = nuc.radius_um * np.exp(rng.normal(0, nuc.pleomorphism_cv, n)) / mpp
    aspect = 1.0 + rng.uniform(0.25, 0.7, n) * (1.0 - 0.7 * nuc.disorder)
    radial = np.arctan2(ey - centres[gids - 1, 1], ex - centres[gids - 1, 0])
    angle = np.where(polar, radial + rng.normal(0, 0.2 + 1.4 * nuc.disorder, n), rng.uniform(0, np.pi, n))
    epi = Nuclei(
        x=ex, y=ey, a=size * np.sqrt(aspect), b=size / np.sqrt(aspect), angle=angle,
        darkness=nuc.darkness * np.exp(rng.normal(0, 0.6 * nuc.pleomorphism_cv, n)),
        coarseness=nuc.coarseness,
        nucleolus_px=np.where(rng.random(n) < nuc.nucleolus_probability, 0.45 / mpp, 0.0),
    )
    draw_nuclei(ch, ce, alpha_map, grain, epi)
    areas = np.pi * epi.a * epi.b * mpp * mpp
    if len(buds):
        size = nuc.radius_um * np.exp(rng.normal(0, nuc.pleomorphism_cv, len(buds))) / mpp
        draw_nuclei(ch, ce, alpha_map, grain, Nuclei(
            x=buds[:, 0], y=buds[:, 1], a=size * 1.1, b=size / 1.1, angle=rng.uniform(0, np.pi, len(buds)),
            darkness=np.full(len(buds), nuc.darkness), coarseness=nuc.coarseness,
            nucleolus_px=np.zeros(len(buds))))
    # stroma: fibroblasts along the fibres, scattered lymphocytes (independent of r)
    stroma = np.flatnonzero(label.ravel() == STROMA)
    area_um2 = stroma.size * mpp * mpp
    if stroma.size:
        idx = rng.choice(stroma, size=int(rng.poisson(area_um2 / 320.0)), replace=True)
        fy, fx = np.divmod(idx, w)
        k = idx.size
        draw_nuclei(ch, ce, alpha_map, grain, Nuclei(
            x=fx + 0.5, y=fy + 0.5, a=rng.uniform(3.0, 4.5, k) / mpp, b=rng.uniform(0.8, 1.2, k) / mpp,
            angle=np.pi / 4 * fibre_direction[fy, fx] + rng.normal(0, 0.2, k),
            darkness=np.full(k, 0.95), coarseness=0.1, nucleolus_px=np.zeros(k)))
        idx = rng.choice(stroma, size=int(rng.poisson(area_um2 / 1400.0)), replace=True)
        ly, lx = np.divmod(idx, w)
        k = idx.size
        r = rng.uniform(1.5, 2.0, k) / mpp
        draw_nuclei(ch, ce, alpha_map, grain, Nuclei(
            x=lx + 0.5, y=ly + 0.5, a=r, b=r * 0.92, angle=rng.uniform(0, np.pi, k),
            darkness=np.full(k, 1.3), coarseness=0.08, nucleolus_px=np.zeros(k)))
    epi_area_um2 = float((label == EPITHELIUM).sum()) * mpp * mpp
    stats = {
        "nuclear_area_um2": float(np.mean(areas)) if n else float("nan"),
        "nuclear_density_per_mm2": n / max(epi_area_um2, 1.0) * 1e6,
        "n_epithelial_nuclei": float(n),
    }
    return alpha_map, stats


__all__ = ["Nuclei", "draw_nuclei", "draw_all_nuclei"]
