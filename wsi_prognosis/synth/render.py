"""Render one synthetic H&E field: tissue, glands, stroma, nuclei, in optical-density space.

The image is built as two stain concentration maps (haematoxylin, eosin) and turned into RGB by
Beer-Lambert, so stain shifts and per-slide stain variation are physically plausible. Every size
is in µm and converted with `mpp`, so the same slide can be rendered at 0.25 µm/px for the
pyramid or at 1 µm/px for cheap statistics.

The risk signal is morphological only: after drawing, the mean H and E concentration over the
tissue is reset to a per-slide target drawn independently of r (the stroma and cytoplasm tone
absorbs the difference), and tissue area comes from a quantile threshold, so neither mean
colour nor tissue area carries r.

The layout (tissue, glands, buds) is drawn by `synth.layout`, the nuclei by `synth.nuclei`; here
the stains are composed into RGB. Their names are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from wsi_prognosis.synth import artefacts
from wsi_prognosis.synth.layout import (BACKGROUND, BUD, EPITHELIUM, LUMEN, STROMA, THETA_BINS, Gland, draw_buds,
                                        draw_glands, tissue_field, tissue_layout)
from wsi_prognosis.synth.morphology import architecture_params, nuclear_params
from wsi_prognosis.synth.nuclei import Nuclei, draw_all_nuclei, draw_nuclei
from wsi_prognosis.synth.spec import FieldSpec
from wsi_prognosis.synth.textures import crop, crop_many, texture_bank

# stain optical-density vectors (R, G, B) per unit concentration
H_OD = np.array([0.62, 0.72, 0.30], np.float32)
E_OD = np.array([0.05, 0.86, 0.52], np.float32)
GLASS_OD = np.array([0.055, 0.052, 0.06], np.float32)
GLASS_RGB = tuple(int(v) for v in np.clip(255.0 * np.exp(-GLASS_OD) + 0.5, 0, 255))  # (241, 242, 240)
# mean transmittance (R, G, B) of tissue that the colour balance resets every slide to (x jitter)
TARGET_TISSUE_TRANSMITTANCE = np.array([0.80, 0.61, 0.745], np.float32)


@dataclass
class FieldResult:
    rgb: np.ndarray                   # (H, W, 3) uint8
    tissue: np.ndarray                # (H, W) bool, the true tissue mask
    stats: dict[str, float] = field(default_factory=dict)


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


__all__ = ["FieldResult", "FieldSpec", "render_field", "balance_mean_colour", "H_OD", "E_OD", "GLASS_OD", "GLASS_RGB",
           "TARGET_TISSUE_TRANSMITTANCE", "BACKGROUND", "STROMA", "EPITHELIUM", "LUMEN", "BUD", "THETA_BINS", "Gland",
           "tissue_field", "tissue_layout", "draw_glands", "draw_buds", "Nuclei", "draw_nuclei", "draw_all_nuclei"]
