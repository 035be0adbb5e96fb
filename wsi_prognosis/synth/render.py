"""Render one synthetic H&E field: tissue, glands, stroma, nuclei, in optical-density space.

The image is built as two stain concentration maps (haematoxylin, eosin) and turned into RGB by
Beer-Lambert, so stain shifts and per-slide stain variation are physically plausible. Every size
is in µm and converted with `mpp`, so the same slide can be rendered at 0.25 µm/px for the
pyramid or at 1 µm/px for cheap statistics.

The risk signal is morphological only: after drawing, the mean H and E concentration over the
tissue is reset to a per-slide target drawn independently of r (the stroma and cytoplasm tone
absorbs the difference), and tissue area comes from a quantile threshold, so neither mean
colour nor tissue area carries r.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image
from scipy import ndimage

from wsi_prognosis.synth import artefacts
from wsi_prognosis.synth.morphology import ArchitectureParams, NuclearParams, architecture_params, nuclear_params
from wsi_prognosis.synth.spec import FieldSpec
from wsi_prognosis.synth.textures import crop, crop_many, texture_bank

# stain optical-density vectors (R, G, B) per unit concentration
H_OD = np.array([0.62, 0.72, 0.30], np.float32)
E_OD = np.array([0.05, 0.86, 0.52], np.float32)
GLASS_OD = np.array([0.055, 0.052, 0.06], np.float32)
GLASS_RGB = tuple(int(v) for v in np.clip(255.0 * np.exp(-GLASS_OD) + 0.5, 0, 255))  # (241, 242, 240)
# mean transmittance (R, G, B) of tissue that the colour balance resets every slide to (x jitter)
TARGET_TISSUE_TRANSMITTANCE = np.array([0.80, 0.61, 0.745], np.float32)

BACKGROUND = 0
STROMA = 1
EPITHELIUM = 2
LUMEN = 3
BUD = 4
THETA_BINS = 720


@dataclass
class FieldResult:
    rgb: np.ndarray                   # (H, W, 3) uint8
    tissue: np.ndarray                # (H, W) bool, the true tissue mask
    stats: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------- layout
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


# ---------------------------------------------------------------------------- nuclei
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


# ---------------------------------------------------------------------------- compose
def balance_mean_colour(trans: np.ndarray, tissue: np.ndarray, free: np.ndarray, rng: np.random.Generator,
                        stain_scale: float) -> list[float]:
    """Reset the tissue's mean transmittance per channel to a target drawn independently of r.

    Nuclei keep their colour; stroma, cytoplasm and lumen (`free` tissue pixels) are scaled by one
    gain per channel so that the tissue mean hits the target exactly (up to clipping at white).
    The target is TARGET_TISSUE_TRANSMITTANCE ** (stain_scale * per-slide jitter): a lab with
    stain shift s has a tissue optical density (1 + s) times the reference. Returns the gains.
    """
    jitter = np.exp(rng.normal(0.0, 0.04, 3)).astype(np.float32)
    target = TARGET_TISSUE_TRANSMITTANCE ** (stain_scale * jitter)
    free = free & tissue
    n_tissue = float(tissue.sum())
    gains = [1.0, 1.0, 1.0]
    if n_tissue == 0 or not free.any():
        return gains
    fixed = tissue & ~free
    for c in range(3):
        plane = trans[c]
        free_sum = float(plane[free].sum(dtype=np.float64))
        fixed_sum = float(plane[fixed].sum(dtype=np.float64))
        gain = (float(target[c]) * n_tissue - fixed_sum) / max(free_sum, 1e-6)
        gain = float(np.clip(gain, 0.3, 3.0))
        plane[free] = np.minimum(plane[free] * gain, 1.0)
        gains[c] = gain
    return gains


def render_field(spec: FieldSpec, rng: np.random.Generator) -> FieldResult:
    """Render one field of view (a whole small slide, or one patch of the bank)."""
    mpp = spec.mpp
    bank = texture_bank(round(mpp, 4))
    nuc = nuclear_params(spec.risk, spec.strength_40x)
    arch = architecture_params(spec.risk, spec.strength_10x)
    tissue = tissue_layout(rng, spec)
    h, w = tissue.shape
    label = np.where(tissue, STROMA, BACKGROUND).astype(np.uint8)
    gland_id = np.zeros((h, w), np.int32)
    glands = draw_glands(rng, spec, tissue, arch, label, gland_id)
    buds = draw_buds(rng, spec, label, arch)

    blotch = crop(bank["blotch"], rng, (h, w))
    grain = crop(bank["grain"], rng, (h, w))
    fibre, direction = crop_many([bank["fibre"], bank["fibre_direction"]], rng, (h, w))
    # concentrations by class: base * (1 + fibre/blotch/grain modulation), via per-class tables
    #                 bg    stroma  epi   lumen  bud
    ce_base = np.array([0.0, 0.36, 0.34, 0.20, 0.34], np.float32)[label]
    ch_base = np.array([0.0, 0.05, 0.14, 0.035, 0.14], np.float32)[label]
    fib_k = np.array([0.0, 0.22, 0.0, 0.0, 0.0], np.float32)[label]
    blo_k = np.array([0.0, 0.10, 0.10, 0.25, 0.10], np.float32)[label]
    gra_k = np.array([0.0, 0.0, 0.10, 0.0, 0.10], np.float32)[label]
    ce = ce_base * (1.0 + fib_k * fibre + blo_k * blotch + gra_k * grain)
    ch = ch_base * (1.0 + 0.3 * (label == STROMA) * blotch + 1.5 * gra_k * grain)
    np.clip(ce, 0.0, None, out=ce)
    np.clip(ch, 0.0, None, out=ch)
    is_stroma = label == STROMA
    alpha_map, nuc_stats = draw_all_nuclei(rng, spec, label, gland_id, glands, buds, nuc, ch, ce, direction, grain)

    # per-slide stain variation (independent of r) and the lab's stain shift
    ch *= float(np.exp(rng.normal(0.0, 0.06))) * spec.stain_scale
    ce *= float(np.exp(rng.normal(0.0, 0.06))) * spec.stain_scale
    # planar (3, H, W): per-channel arithmetic is several times faster than (H, W, 3) broadcasting
    trans = np.empty((3, h, w), np.float32)
    for channel in range(3):
        np.multiply(ch, -H_OD[channel], out=trans[channel])
        trans[channel] -= ce * E_OD[channel] + GLASS_OD[channel]
    np.exp(trans, out=trans)
    gain = balance_mean_colour(trans, tissue, alpha_map < 0.2, rng, spec.stain_scale)
    artefacts.apply_transmittance(rng, spec, trans, tissue)
    rgb = trans
    rgb *= 255.0
    artefacts.apply_rgb(rng, spec, rgb)
    if spec.blur_um > 0:
        rgb = ndimage.gaussian_filter(rgb, (0, spec.blur_um / mpp, spec.blur_um / mpp))
    rgb += 0.5
    np.clip(rgb, 0, 255, out=rgb)
    rgb8 = np.ascontiguousarray(rgb.astype(np.uint8).transpose(1, 2, 0))

    epi_area = float(((label == EPITHELIUM) | (label == LUMEN)).sum())
    stats = {
        **nuc_stats,
        "tissue_fraction": float(tissue.mean()),
        "lumen_fraction": float((label == LUMEN).sum()) / max(epi_area, 1.0),
        "solid_fraction": float(np.mean([g.kind == "solid" for g in glands])) if glands else float("nan"),
        "n_glands": float(len(glands)),
        "buds_per_mm2": float(len(buds)) / max(float(is_stroma.sum()) * (mpp * 1e-3) ** 2, 1e-9),
        "disruption": arch.disruption,
        # the mean-colour balance's per-channel gain on stroma/cytoplasm (diagnostic; 1 = none)
        "balance_gain_r": gain[0],
        "balance_gain_g": gain[1],
        "balance_gain_b": gain[2],
    }
    return FieldResult(rgb=rgb8, tissue=tissue, stats=stats)
