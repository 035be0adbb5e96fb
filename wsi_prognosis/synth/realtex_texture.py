"""The real-texture pool of `realtex` and what is built from it: mosaics, stain rescaling, tissue masks.

The pixels are real H&E (the slides and tiles shipped in `tests/data`), cut into tissue-only
patches at SOURCE_MPP and tiled into a mosaic with feathered seams; nothing here knows the risk.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from wsi_prognosis.errors import ConfigurationError

SOURCE_MPP = 0.5                 # the texture pool's resolution (µm/px)
PATCH_PX = 96                    # pool patches at SOURCE_MPP (48 µm)
PATCH_STEP = 80                  # mosaic step: 16 px of feathered overlap

# Where the real pixels come from (paths relative to the texture folder, which has the layout of
# tests/data). Source µm/px: CMU-1 records 0.499; the reduced TCGA-CR slide records none, 0.5 is
# assumed (its nuclei measure 6-10 px across, as at 0.5 µm/px); TCGA diagnostic tiles are 40x
# (0.25 µm/px); CRC-VAL-HE-7K tiles are 0.5 µm/px.
SITES: dict[str, tuple[tuple[str, float], ...]] = {
    "site_a": (("slides/CMU-1-Small-Region.svs", 0.499), ("slides/TCGA-CR-7395-01A-01-TS1.svs", 0.5)),
    "site_b": (("tiles/TCGA-AD-6964-01Z-00-DX1_tile_16896_20480.jpg", 0.25),
               ("tiles/TCGA-AD-6964-01Z-00-DX1_tile_22016_11776.jpg", 0.25),
               ("tiles/TCGA-AD-6964-01Z-00-DX1_tile_23040_25088.jpg", 0.25),
               ("tiles/CRC-VAL-HE-7K_NORM-TCGA-YLVCMEHK.tif", 0.5)),
}


def _read_source(path: Path, mpp: float) -> np.ndarray:
    """A whole source image as RGB uint8, resampled to SOURCE_MPP."""
    if path.suffix.lower() == ".svs":
        import openslide

        with openslide.OpenSlide(str(path)) as slide:
            rgb = np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))
    else:
        rgb = np.asarray(Image.open(path).convert("RGB"))
    scale = mpp / SOURCE_MPP
    if abs(scale - 1) > 0.02:
        h, w = rgb.shape[:2]
        rgb = np.asarray(Image.fromarray(rgb).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                                     Image.LANCZOS))
    return rgb


def _haematoxylin(rgb: np.ndarray) -> np.ndarray:
    """Haematoxylin concentration per pixel (colour deconvolution, scikit-image's HED)."""
    from skimage.color import rgb2hed

    return rgb2hed(rgb)[..., 0]


@lru_cache(maxsize=4)
def texture_pool(texture_dir: str, site: str) -> dict[str, np.ndarray]:
    """Tissue-only patches (N, PATCH_PX, PATCH_PX, 3) uint8 of a site and each patch's haematoxylin
    level; cached per process (workers build it once)."""
    patches: list[np.ndarray] = []
    for rel, mpp in SITES[site]:
        rgb = _read_source(Path(texture_dir) / rel, mpp)
        grey = rgb.mean(-1)
        sat = rgb.max(-1).astype(np.int16) - rgb.min(-1)
        tissue = (grey < 215) & (sat > 18)
        step = PATCH_PX // 4 if min(rgb.shape[:2]) < 400 else PATCH_PX // 2
        for y in range(0, rgb.shape[0] - PATCH_PX + 1, step):
            for x in range(0, rgb.shape[1] - PATCH_PX + 1, step):
                if tissue[y:y + PATCH_PX, x:x + PATCH_PX].mean() >= 0.92:
                    patches.append(rgb[y:y + PATCH_PX, x:x + PATCH_PX])
    if not patches:
        raise ConfigurationError(f"realtex: no tissue patches in {site}'s sources under {texture_dir}.")
    stack = np.stack(patches)
    h_level = np.array([_haematoxylin(p).mean() for p in stack], np.float32)
    return {"patches": stack, "h_level": h_level}


def _feather(px: int, overlap: int) -> np.ndarray:
    ramp = np.minimum(np.minimum(np.arange(px) + 1, px - np.arange(px)) / overlap, 1.0).astype(np.float32)
    return np.outer(ramp, ramp)


def mosaic(rng: np.random.Generator, patches: np.ndarray, height: int, width: int) -> np.ndarray:
    """(height, width, 3) float32 RGB at SOURCE_MPP from randomly flipped/rotated pool patches,
    on a grid with a random offset and feathered seams."""
    weight = _feather(PATCH_PX, PATCH_PX - PATCH_STEP)
    acc = np.zeros((height + 2 * PATCH_PX, width + 2 * PATCH_PX, 3), np.float32)
    wsum = np.zeros(acc.shape[:2], np.float32)
    oy, ox = rng.integers(0, PATCH_STEP, 2)
    for y in range(-int(oy), height, PATCH_STEP):
        for x in range(-int(ox), width, PATCH_STEP):
            patch = np.rot90(patches[rng.integers(len(patches))], int(rng.integers(4)))
            if rng.random() < 0.5:
                patch = patch[:, ::-1]
            ys, xs = y + PATCH_PX, x + PATCH_PX
            acc[ys:ys + PATCH_PX, xs:xs + PATCH_PX] += patch * weight[..., None]
            wsum[ys:ys + PATCH_PX, xs:xs + PATCH_PX] += weight
    sl = (slice(PATCH_PX, PATCH_PX + height), slice(PATCH_PX, PATCH_PX + width))
    return acc[sl] / np.maximum(wsum[sl], 1e-6)[..., None]


def rescale_stains(rgb: np.ndarray, h_scale: float, e_scale: float) -> np.ndarray:
    """RGB float32 with haematoxylin and eosin optical densities scaled (scikit-image HED space)."""
    from skimage.color import hed2rgb, rgb2hed

    hed = rgb2hed(np.clip(rgb, 1, 255).astype(np.uint8))
    hed[..., 0] *= h_scale
    hed[..., 1] *= e_scale
    return (hed2rgb(hed) * 255.0).astype(np.float32)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    small = (max(8, int(shape[0] / sigma_px * 4)), max(8, int(shape[1] / sigma_px * 4)))
    noise = ndimage.gaussian_filter(rng.standard_normal(small).astype(np.float32), 2.0, mode="wrap")
    return np.asarray(Image.fromarray(noise, mode="F").resize((shape[1], shape[0]), Image.BICUBIC))


def tissue_mask(rng: np.random.Generator, shape: tuple[int, int], fraction: float) -> np.ndarray:
    """One or two ragged tissue pieces covering `fraction` of the field (area set by the quantile)."""
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = yy / h, xx / w
    env = np.full(shape, -1.0, np.float32)
    for _ in range(int(rng.integers(1, 3))):
        cx, cy, ax, ay = rng.uniform(0.4, 0.6), rng.uniform(0.4, 0.6), rng.uniform(0.3, 0.45), rng.uniform(0.3, 0.45)
        env = np.maximum(env, 1 - ((xx - cx) / ax) ** 2 - ((yy - cy) / ay) ** 2)
    border = np.minimum.reduce([xx, 1 - xx, yy, 1 - yy])
    field_ = env + 0.35 * _smooth_field(rng, shape, max(h, w) / 6) - 6.0 * np.clip(0.1 - border, 0, None)
    return field_ > np.quantile(field_, 1 - fraction)


__all__ = ["SOURCE_MPP", "PATCH_PX", "PATCH_STEP", "SITES", "texture_pool", "mosaic", "rescale_stains", "tissue_mask"]
