"""The tissue outline covers the mask's tissue: rasterised back onto the mask grid, IoU > 0.9."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wsi_prognosis.review.entry import SlideEntry
from wsi_prognosis.scoring.exports import tissue_polygons

# the demo's tile settings (configs/demo.yaml): a 4 µm/px mask and small tissue pieces kept
DEMO_TISSUE = {"mask_mpp": 4.0, "min_tissue_area_um2": 5000}
DEMO_RESOLUTIONS = {"10x": {"mpp": 1.0, "tile_px": 64}, "40x": {"mpp": 0.25, "tile_px": 64}}


def outline_mask(polygons: list, shape: tuple[int, int], scale: float) -> np.ndarray:
    """The outline's polygons (level-0 px) rasterised onto the mask grid (`scale` level-0 px per mask
    px): a mask pixel is inside when its centre is inside an exterior ring and no hole ring."""
    from skimage.draw import polygon2mask

    out = np.zeros(shape, bool)
    for rings in polygons:
        for i, ring in enumerate(rings):
            xy = np.asarray(ring, dtype=float) / scale - 0.5  # pixel edges -> pixel-centre units
            inside = polygon2mask(shape, xy[:, ::-1])
            out = out | inside if i == 0 else out & ~inside
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.fixture(scope="module")
def demo_tiles(scored_batch, tmp_path_factory) -> Path:
    """The review batch's synthetic slides tiled as the demo tiles them (4 µm/px mask)."""
    from wsi_prognosis.cohort import read_manifest
    from wsi_prognosis.tiling.config import TilingConfig
    from wsi_prognosis.tiling.pipeline import tile_manifest

    out = tmp_path_factory.mktemp("demo_tiles")
    config = TilingConfig.from_mapping(tiling={"resolutions": DEMO_RESOLUTIONS, "min_tissue_fraction": 0.5},
                                       tissue=DEMO_TISSUE)
    summary = tile_manifest(read_manifest(Path(scored_batch).parent / "manifest.csv"), out, config, workers=1)
    assert (summary["status"] == "ok").all(), summary
    return out


def test_outline_keeps_pieces_that_touch_only_at_a_corner() -> None:
    # two 6x6 squares touching at one corner (one 8-connected piece), a 6x6 square with a 2x2 hole,
    # and a piece on the mask's border. Traced with find_contours' default rule, the corner-joined
    # piece split in two and only one square was kept (IoU 0.5 for it).
    mask = np.zeros((24, 30), bool)
    mask[2:8, 2:8] = mask[8:14, 8:14] = True
    mask[2:8, 18:24] = True
    mask[4:6, 20:22] = False
    mask[18:24, 0:6] = True
    polygons = tissue_polygons(mask, 4.0, 0.25, (30 * 16, 24 * 16), tolerance_px=1.0)
    assert len(polygons) == 3                                  # corner-joined squares are one piece
    assert sorted(len(p) for p in polygons) == [1, 1, 2]       # the hole is an interior ring
    raster = outline_mask(polygons, mask.shape, 16.0)
    assert iou(raster, mask) > 0.9
    assert raster[2:8, 2:8].mean() > 0.8 and raster[8:14, 8:14].mean() > 0.8 and not raster[4:6, 20:22].any()


def test_outline_covers_the_mask_at_the_demo_resolution(demo_tiles) -> None:
    from wsi_prognosis.review.overlay import tissue_outline
    from wsi_prognosis.tiling import open_tile_store

    stores = sorted(demo_tiles.glob("*.h5"))
    assert stores
    for path in stores:
        with open_tile_store(path) as store:
            mask, mask_mpp = store.tissue_mask()
            scale = mask_mpp / store.mpp
        assert mask_mpp == 4.0 and mask.sum() > 100
        entry = SlideEntry(slide_id=path.stem, patient_id="", cohort="", score=None, risk_group="", n_tiles={},
                           status="ok", error="", members={}, tile_store=path)
        polygons = tissue_outline(entry)
        assert polygons, path.name
        assert iou(outline_mask(polygons, mask.shape, scale), mask) > 0.9, path.name
