"""QC thumbnail: outline, pen tint and kept tiles drawn on a copy; PNG written atomically."""

from __future__ import annotations

import numpy as np
import openslide
import pytest
from PIL import Image
from tissue_images import BLUE_INK, GLASS, PINK, canvas

from wsi_prognosis.tissue import (
    qc_thumbnail,
    save_png,
    tissue_fraction_per_tile,
    tissue_mask,
)
from wsi_prognosis.tissue.qc import MASK_COLOUR, PEN_COLOUR, TILE_COLOUR


def test_outline_tiles_and_pen_on_literal_image():
    rgb = canvas(40, 40)
    rgb[10:30, 10:30] = PINK
    mask = np.zeros((40, 40), bool)
    mask[10:30, 10:30] = True
    pen = np.zeros((40, 40), bool)
    pen[0:4, 0:4] = True
    boxes = np.array([[12, 12, 20, 20]])                 # one kept tile, 8 x 8 px
    before = rgb.copy()
    out = qc_thumbnail(rgb, mask, tile_boxes=boxes, pen=pen)
    np.testing.assert_array_equal(rgb, before)            # input untouched
    assert out.shape == rgb.shape and out.dtype == np.uint8
    # The outline is the mask's inner boundary: the blob's edge pixels, green.
    assert tuple(out[10, 20]) == MASK_COLOUR and tuple(out[29, 15]) == MASK_COLOUR
    assert tuple(out[9, 20]) == GLASS and tuple(out[25, 25]) == PINK
    # The tile box outline: x 12..19, y 12..19; its inside untouched.
    assert tuple(out[12, 15]) == TILE_COLOUR and tuple(out[19, 12]) == TILE_COLOUR
    assert tuple(out[16, 16]) == PINK
    # Pen: tinted halfway to red.
    expected_pen = (np.array(GLASS) + np.array(PEN_COLOUR)) // 2
    np.testing.assert_array_equal(out[2, 2], expected_pen)


def test_boxes_off_the_image_and_empty_inputs():
    rgb = canvas(20, 20)
    mask = np.zeros((20, 20), bool)
    out = qc_thumbnail(rgb, mask, tile_boxes=np.array([[15, 15, 30, 30], [-10, -10, -5, -5]]))
    assert tuple(out[15, 19]) == TILE_COLOUR              # clipped at the edge
    assert (out[:10, :10] == GLASS).all()                 # the box fully outside is skipped
    np.testing.assert_array_equal(qc_thumbnail(rgb, mask, tile_boxes=np.zeros((0, 4))), rgb)
    with pytest.raises(ValueError, match="mask shape"):
        qc_thumbnail(rgb, np.zeros((10, 10), bool))
    with pytest.raises(ValueError, match="pen shape"):
        qc_thumbnail(rgb, mask, pen=np.zeros((10, 10), bool))


def test_save_png_round_trip_and_atomicity(tmp_path):
    image = np.random.default_rng(0).integers(0, 256, (12, 9, 3), dtype=np.uint8)
    path = tmp_path / "qc" / "slide.png"
    save_png(path, image)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), image)
    assert [p.name for p in path.parent.iterdir()] == ["slide.png"]   # no temporary left
    with pytest.raises(ValueError, match="uint8"):
        save_png(tmp_path / "bad.png", image.astype(np.float32))
    assert not (tmp_path / "bad.png").exists()


def test_real_slide_qc_thumbnail(cmu_slide, tmp_path):
    # The CMU-1 thumbnail at ~8 µm/px with a blue stroke painted on: the PNG shows the green
    # outline, the red-tinted stroke and the 224-µm tiles (28 px) with >= 50 % tissue.
    with openslide.OpenSlide(str(cmu_slide)) as slide:
        mpp = float(slide.properties[openslide.PROPERTY_NAME_MPP_X])
        width, height = slide.dimensions
        size = (round(width * mpp / 8), round(height * mpp / 8))
        thumb = np.array(slide.get_thumbnail(size).convert("RGB"))
    thumb_mpp = width * mpp / thumb.shape[1]
    thumb[150:154, 40:120] = BLUE_INK
    result = tissue_mask(thumb, mpp=thumb_mpp)
    assert result.pen[150:154, 40:120].all() and not result.mask[150:154, 40:120].any()
    step = 224 / thumb_mpp
    ys, xs = np.mgrid[0:thumb.shape[0] - step:step, 0:thumb.shape[1] - step:step]
    boxes = np.stack([xs.ravel(), ys.ravel(), xs.ravel() + step, ys.ravel() + step], axis=1)
    kept = boxes[tissue_fraction_per_tile(result.mask, boxes) >= 0.5]
    assert 5 <= len(kept) < len(boxes)
    image = qc_thumbnail(thumb, result.mask, tile_boxes=kept, pen=result.pen)
    path = tmp_path / "CMU-1-Small-Region.png"
    save_png(path, image)
    assert Image.open(path).size == (thumb.shape[1], thumb.shape[0])
    assert (image == MASK_COLOUR).all(axis=2).sum() > 100
    assert (image == TILE_COLOUR).all(axis=2).sum() > 4 * 20 * len(kept) // 2
