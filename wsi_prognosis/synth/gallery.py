"""gallery.png: what the model should learn — tiles across the risk range at 40x and 10x.

Tiles are read back from the written slides with OpenSlide (what the pipeline will see), at the
window with the most tissue, 224 px at 1 µm/px (10x, 224 µm) and at 0.25 µm/px (40x, 56 µm,
the centre of the 10x tile).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from scipy import ndimage

from wsi_prognosis.atomic import atomic_path
from wsi_prognosis.synth.writer import BACKGROUND_RGB

TILE_PX = 224


def _read(slide, x: int, y: int, size_um: float, mpp: float, out_px: int) -> np.ndarray:  # noqa: ANN001
    base_mpp = float(slide.properties["openslide.mpp-x"])
    ds = (size_um / out_px) / base_mpp
    level = slide.get_best_level_for_downsample(max(ds, 1.0) + 1e-6)
    level_ds = slide.level_downsamples[level]
    size_level = int(round(size_um / base_mpp / level_ds))
    region = slide.read_region((x, y), level, (size_level, size_level))
    glass = Image.new("RGBA", region.size, (*BACKGROUND_RGB, 255))
    region = Image.alpha_composite(glass, region).convert("RGB")   # outside the slide: glass, not black
    return np.asarray(region.resize((out_px, out_px), Image.BILINEAR))


def tissue_tiles(path: str | Path, *, mpp_40x: float, mpp_10x: float, tile_px: int = TILE_PX) -> tuple[np.ndarray, np.ndarray]:
    """(10x tile, 40x tile) at the most tissue-rich 10x window of the slide."""
    import openslide

    with openslide.OpenSlide(str(path)) as slide:
        base_mpp = float(slide.properties["openslide.mpp-x"])
        # an overview at ~4 µm/px, coarser for big slides (at most ~2,000 px across)
        overview_mpp = max(4.0, max(slide.dimensions) * base_mpp / 2000.0)
        level = slide.get_best_level_for_downsample(overview_mpp / base_mpp)
        thumb = np.asarray(slide.read_region((0, 0), level, slide.level_dimensions[level]).convert("RGB"))
        ds = slide.level_downsamples[level]
        rgb = thumb.astype(np.float32)
        tissue = (rgb.max(-1) - rgb.min(-1)) > 25
        win_um = tile_px * mpp_10x
        win = max(int(win_um / (base_mpp * ds)), 1)
        score = ndimage.uniform_filter(tissue.astype(np.float32), size=win, mode="constant")
        cy, cx = np.unravel_index(int(np.argmax(score)), score.shape)
        x0 = int(max(cx * ds - win_um / base_mpp / 2, 0))
        y0 = int(max(cy * ds - win_um / base_mpp / 2, 0))
        x0 = min(x0, max(slide.dimensions[0] - int(win_um / base_mpp), 0))
        y0 = min(y0, max(slide.dimensions[1] - int(win_um / base_mpp), 0))
        tile10 = _read(slide, x0, y0, win_um, mpp_10x, tile_px)
        # the 40x tile: the window of the 10x tile with the most nuclei (red channel well below
        # stroma and cytoplasm, so pale low-grade nuclei count too)
        small_um = tile_px * mpp_40x
        dark = (tile10[..., 0] < 170).astype(np.float32)
        k = max(int(round(small_um / mpp_10x)), 1)
        density = ndimage.uniform_filter(dark, size=k, mode="constant")
        half = k // 2
        inner = density[half:tile_px - half, half:tile_px - half] if tile_px > 2 * half else density
        py, px = np.unravel_index(int(np.argmax(inner)), inner.shape)
        cx0 = x0 + int((px * mpp_10x) / base_mpp)
        cy0 = y0 + int((py * mpp_10x) / base_mpp)
        tile40 = _read(slide, cx0, cy0, small_um, mpp_40x, tile_px)
    return tile10, tile40


def write_gallery(path: str | Path, manifest: pd.DataFrame, truth: pd.DataFrame, *, mpp_40x: float = 0.25,
                  mpp_10x: float = 1.0, n_columns: int = 6) -> Path:
    """A 2-row grid (10x above, 40x below), one column per slide at evenly spaced risk ranks."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cohort = "training" if (manifest["cohort"] == "training").any() else manifest["cohort"].iloc[0]
    slides = manifest[manifest["cohort"] == cohort].merge(truth, on="patient_id").sort_values("risk")
    if "artefacts" in slides.columns:   # show morphology, not pen marks, where there is a choice
        clean = slides[slides["artefacts"].fillna("").astype(str) == ""]
        if len(clean) >= min(n_columns, len(slides)):
            slides = clean
    picks = slides.iloc[np.unique(np.linspace(0, len(slides) - 1, min(n_columns, len(slides))).round().astype(int))]
    fig, axes = plt.subplots(2, len(picks), figsize=(2.3 * len(picks), 5.0), squeeze=False)
    for col, row in enumerate(picks.itertuples(index=False)):
        tile10, tile40 = tissue_tiles(row.path, mpp_40x=mpp_40x, mpp_10x=mpp_10x)
        for r, tile in enumerate((tile10, tile40)):
            ax = axes[r][col]
            ax.imshow(tile)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0][col].set_title(f"{row.patient_id}\nrisk r = {row.risk:+.2f}", fontsize=9)
    axes[0][0].set_ylabel(f"10x: {TILE_PX * mpp_10x:.0f} µm\n({mpp_10x} µm/px)", fontsize=9)
    axes[1][0].set_ylabel(f"40x: {TILE_PX * mpp_40x:.0f} µm\n({mpp_40x} µm/px)", fontsize=9)
    fig.suptitle(f"Synthetic {cohort} slides, low risk (left) to high risk (right)", fontsize=11)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
