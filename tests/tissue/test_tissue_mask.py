"""tissue_mask on tiny literal images whose right answer is known, then on a real slide.

All synthetic images are "thumbnails" at 8 µm/px, where one pixel is 64 µm², the default
minimum tissue piece (50,000 µm²) is 781 px and the largest filled hole (20,000 µm²) 312 px.
"""

from __future__ import annotations

import numpy as np
import openslide
import pytest
from PIL import Image
from tissue_images import BLUE_INK, GLASS, PALE, PINK, add_noise, canvas

from wsi_prognosis.tissue import (
    TissueMask,
    TissueParams,
    saturation_threshold,
    saturation_u8,
    tissue_fraction_per_tile,
    tissue_mask,
)

MPP = 8.0
PX_MM2 = (MPP / 1000) ** 2


def blob_image() -> tuple[np.ndarray, np.ndarray]:
    """Glass with one 50 x 50 px pink square (2,500 px = 0.16 mm²) and its true mask."""
    rgb = canvas(100, 100)
    truth = np.zeros((100, 100), bool)
    truth[20:70, 30:80] = True
    rgb[truth] = PINK
    return rgb, truth


def test_pink_blob_on_glass_is_exactly_the_mask():
    rgb, truth = blob_image()
    result = tissue_mask(rgb, mpp=MPP)
    assert isinstance(result, TissueMask)
    assert result.mask.dtype == bool and result.mask.shape == (100, 100)
    # A convex blob survives closing, hole filling and the size filter unchanged.
    np.testing.assert_array_equal(result.mask, truth)
    assert result.tissue_area_mm2 == pytest.approx(2500 * PX_MM2)   # 0.16 mm²
    assert result.mpp == MPP
    assert result.pen_fraction == 0.0 and not result.pen.any()
    # Otsu lands between glass (~0.01) and tissue (~0.32), clipped to [0.05, 0.10].
    assert 0.05 <= result.threshold <= 0.10


def test_noise_on_glass_and_tissue_does_not_change_the_mask():
    rgb, truth = blob_image()
    result = tissue_mask(add_noise(rgb, sigma=3.0), mpp=MPP)
    assert (result.mask != truth).sum() <= 10   # at most a few noisy edge pixels


def test_blank_glass_gives_an_empty_mask_and_the_floor_threshold():
    # One grey level has no Otsu threshold: the documented fallback is min_saturation.
    result = tissue_mask(canvas(64, 80, (255, 255, 255)), mpp=MPP)
    assert not result.mask.any() and not result.pen.any()
    assert result.threshold == TissueParams().min_saturation
    assert result.tissue_area_mm2 == 0.0 and result.pen_fraction == 0.0 and result.tissue_fraction == 0.0
    # Noisy glass: Otsu splits the noise, the 0.05 floor keeps it below the threshold.
    noisy = tissue_mask(add_noise(canvas(200, 200), sigma=2.0), mpp=MPP)
    assert noisy.threshold == TissueParams().min_saturation
    assert not noisy.mask.any()


def test_all_tissue_thumbnail_keeps_pale_stroma():
    # No glass at all: Otsu separates pale (saturation 0.13) from pink (0.32) tissue and
    # would drop the pale stroma; the 0.10 cap keeps it.
    rgb = canvas(80, 80, PINK)
    rgb[:, 40:] = PALE
    result = tissue_mask(rgb, mpp=MPP)
    assert result.threshold == TissueParams().max_saturation
    assert result.mask.all()


def test_small_specks_are_removed_and_large_pieces_kept():
    rgb, truth = blob_image()
    rgb = np.concatenate([rgb, canvas(100, 100)], axis=1)
    rgb[5:25, 120:140] = PINK    # 400 px = 25,600 µm² <= 50,000: dust, removed
    rgb[50:80, 140:170] = PINK   # 900 px = 57,600 µm² > 50,000: a small fragment, kept
    mask = tissue_mask(rgb, mpp=MPP).mask
    assert not mask[5:25, 120:140].any()
    assert mask[50:80, 140:170].all()
    np.testing.assert_array_equal(mask[:, :100], truth)


def test_small_holes_are_filled_and_large_ones_kept():
    rgb = canvas(120, 120)
    rgb[10:110, 10:110] = PINK
    rgb[20:30, 20:30] = GLASS    # 100 px = 6,400 µm² <= 20,000: a tear, filled
    rgb[60:85, 60:85] = GLASS    # 625 px = 40,000 µm² > 20,000: a real gap, kept
    mask = tissue_mask(rgb, mpp=MPP).mask
    assert mask[20:30, 20:30].all()
    assert not mask[62:83, 62:83].any()      # the closing (radius 2 px) nibbles its rim only
    assert mask.sum() == pytest.approx(100 * 100 - 625, abs=20)


def test_sizes_are_physical_so_a_finer_image_gives_the_same_answer():
    # The same layout at 4 µm/px (each pixel -> 2 x 2) with sizes converted via mpp:
    # the same speck (now 1,600 px) is still dust, the same blob still 0.16 mm².
    rgb, _ = blob_image()
    rgb[2:12, 2:12] = PINK        # 100 px at 8 µm/px = 6,400 µm²: dust
    coarse = tissue_mask(rgb, mpp=8.0, params=TissueParams(mask_mpp=4.0))
    fine = tissue_mask(rgb.repeat(2, 0).repeat(2, 1), mpp=4.0, params=TissueParams(mask_mpp=4.0))
    assert not fine.mask[4:24, 4:24].any()
    assert fine.tissue_area_mm2 == pytest.approx(coarse.tissue_area_mm2) == pytest.approx(0.16)


def test_an_image_much_finer_than_mask_mpp_is_reduced_and_the_mask_returned_at_its_size():
    rgb, truth = blob_image()
    fine_rgb = rgb.repeat(4, 0).repeat(4, 1)           # 400 x 400 at 2 µm/px
    result = tissue_mask(fine_rgb, mpp=2.0)            # computed at 8 µm/px
    assert result.mask.shape == (400, 400) and result.mpp == 2.0
    np.testing.assert_array_equal(result.mask, truth.repeat(4, 0).repeat(4, 1))
    assert result.tissue_area_mm2 == pytest.approx(0.16)


def test_pen_is_excluded_and_reported():
    rgb, truth = blob_image()
    rgb[20:70, 52:56] = BLUE_INK      # a 4-px blue stroke across the blob
    result = tissue_mask(rgb, mpp=MPP)
    # Pen = the stroke grown by 24 µm (3 px) each side: columns 49-58 inside the blob.
    assert result.pen[20:70, 49:59].all() and not result.pen[40, :45].any()
    assert not (result.mask & result.pen).any()
    assert result.mask[20:70, 30:48].all() and result.mask[20:70, 60:80].all()
    expected = result.pen.sum() / (result.mask | result.pen).sum()
    assert result.pen_fraction == pytest.approx(expected)
    assert 0.15 < result.pen_fraction < 0.30   # ~10 of 50 columns
    # With pen detection off, saturated blue ink counts as tissue.
    off = tissue_mask(rgb, mpp=MPP, params=TissueParams(detect_pen=False))
    np.testing.assert_array_equal(off.mask, truth)
    assert off.pen_fraction == 0.0


def test_fixed_threshold_method():
    sat = saturation_u8(blob_image()[0])
    params = TissueParams(threshold_method="fixed", fixed_saturation=0.5)
    assert saturation_threshold(sat, params=params) == 0.5
    # PINK has saturation ~0.32 < 0.5: nothing is tissue.
    assert not tissue_mask(blob_image()[0], mpp=MPP, params=params).mask.any()


@pytest.mark.parametrize("bad", [np.zeros((4, 4), np.uint8), np.zeros((4, 4, 3), np.float32),
                                 np.zeros((4, 4, 4), np.uint8)])
def test_rejects_non_rgb_uint8(bad):
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        tissue_mask(bad, mpp=MPP)


@pytest.mark.parametrize("mpp", [0, -1.0, float("nan"), None])
def test_rejects_bad_mpp(mpp):
    with pytest.raises(ValueError, match="mpp"):
        tissue_mask(blob_image()[0], mpp=mpp)


# --- tissue_fraction_per_tile -------------------------------------------------------------

def test_tissue_fraction_per_tile_is_the_exact_covered_area():
    rng = np.random.default_rng(1)
    mask = rng.random((23, 31)) < 0.4
    # Brute force: split every mask pixel into 4 x 4 sub-pixels; boxes on the 1/4 grid.
    fine = mask.repeat(4, 0).repeat(4, 1)
    corners = rng.integers(-8, 140, size=(200, 2))
    sizes = rng.integers(1, 40, size=(200, 2))
    boxes_q = np.concatenate([corners, corners + sizes], axis=1)          # quarter pixels
    expected = []
    for x0, y0, x1, y1 in boxes_q:
        inside = fine[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)].sum()
        expected.append(inside / ((x1 - x0) * (y1 - y0)))
    got = tissue_fraction_per_tile(mask, boxes_q / 4.0)
    assert got.dtype == np.float32 and got.shape == (200,)
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_tissue_fraction_per_tile_edge_cases():
    mask = np.ones((4, 4), bool)
    assert tissue_fraction_per_tile(mask, np.zeros((0, 4))).shape == (0,)
    # A box half outside the mask: the outside counts as background.
    assert tissue_fraction_per_tile(mask, np.array([[2, 0, 6, 4]]))[0] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="x1 > x0"):
        tissue_fraction_per_tile(mask, np.array([[2, 0, 2, 4]]))


# --- real H&E -------------------------------------------------------------------------------

def _thumbnail(path, target_mpp):
    with openslide.OpenSlide(str(path)) as slide:
        mpp = float(slide.properties[openslide.PROPERTY_NAME_MPP_X])
        width, height = slide.dimensions
        size = (round(width * mpp / target_mpp), round(height * mpp / target_mpp))
        thumb = np.asarray(slide.get_thumbnail(size).convert("RGB"))
    return thumb, width * mpp / thumb.shape[1]


@pytest.fixture(scope="module")
def cmu_thumbnail(cmu_slide):
    return _thumbnail(cmu_slide, 8.0)


def test_real_slide_tissue_fraction_is_plausible(cmu_thumbnail):
    # CMU-1-Small-Region: 1.1 x 1.5 mm of skin; checked by eye on the QC thumbnail, the
    # section (epidermis, dermis and a detached strip) covers a bit over a third of the field
    # (computed 0.397, 0.65 mm²); glass fills the rest, no pen.
    thumb, mpp = cmu_thumbnail
    assert mpp == pytest.approx(8.0, rel=0.02)      # 2220 x 2967 px at 0.499 µm/px -> ~138 x 184
    result = tissue_mask(thumb, mpp=mpp)
    assert 0.30 <= result.tissue_fraction <= 0.45
    assert 0.50 <= result.tissue_area_mm2 <= 0.75
    assert result.pen_fraction < 0.01
    assert result.mask[150:, 60:90].mean() > 0.95     # the dense lower middle is tissue
    assert not result.mask[100:140, :15].any()        # the glass on the left is not


def test_real_slide_mask_agrees_across_thumbnail_resolutions(cmu_slide, cmu_thumbnail):
    thumb, mpp = cmu_thumbnail
    at8 = tissue_mask(thumb, mpp=mpp)
    fine, fine_mpp = _thumbnail(cmu_slide, 2.0)    # reduced 4x inside tissue_mask
    at2 = tissue_mask(fine, mpp=fine_mpp)
    assert at2.tissue_area_mm2 == pytest.approx(at8.tissue_area_mm2, rel=0.05)


def test_real_tiles_are_detected_as_tissue(data_dir):
    # The four real H&E tiles (about 0.5 µm/px), each tiled into a 672-px square (336 µm, so
    # larger than the minimum tissue piece) and pasted on glass at 0.5 µm/px; the mask
    # (computed at 8 µm/px) must cover each square far above the 0.5 keep threshold and
    # leave the glass and pen empty.
    tiles = [np.asarray(Image.open(p).convert("RGB")) for p in sorted((data_dir / "tiles").iterdir())]
    assert len(tiles) == 4
    image = canvas(1008, 3360)
    boxes = []
    for i, tile in enumerate(tiles):
        block = np.tile(tile, (3, 3, 1))[:672, :672]
        y0, x0 = 160, 160 + i * 800
        image[y0:y0 + 672, x0:x0 + 672] = block
        boxes.append([x0, y0, x0 + 672, y0 + 672])
    result = tissue_mask(image, mpp=0.5)
    fractions = tissue_fraction_per_tile(result.mask, np.array(boxes, float))
    assert (fractions >= 0.9).all(), fractions
    assert not result.mask[900:, :].any() and not result.mask[:, :150].any()
    assert not result.pen.any()
