"""Pen ink: blue, green and black marker are found; H&E colours, real tiles and specks are not."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from tissue_images import BLACK_INK, BLUE_INK, GREEN_INK, PALE, PINK, canvas

from wsi_prognosis.tissue import (
    TissueParams,
    hue_deg,
    pen_colour_mask,
    pen_mask,
    saturation_u8,
    tissue_mask,
)

MPP = 8.0


@pytest.mark.parametrize(
    ("colour", "is_ink"),
    [
        (BLUE_INK, True),           # hue 223°, saturation 0.74
        ((120, 150, 230), True),    # light blue marker, hue 224°, saturation 0.48
        (GREEN_INK, True),          # hue 140°
        ((40, 140, 140), True),     # teal marker, hue 180°
        (BLACK_INK, True),          # brightest 38, chroma 5
        ((20, 20, 20), True),
        (PINK, False),              # eosin, hue 322°
        (PALE, False),
        ((120, 70, 160), False),    # hematoxylin: purple, hue 273°
        ((70, 40, 110), False),     # dense nuclei: dark but purple (chroma 70 > 40)
        ((245, 245, 245), False),   # glass
        ((150, 160, 185), False),   # greyish blue, saturation 0.19 < 0.3
    ],
)
def test_colour_rules(colour, is_ink):
    assert bool(pen_colour_mask(canvas(2, 2, colour)).all()) is is_ink


def test_hue_and_saturation_match_skimage():
    from skimage.color import rgb2hsv

    rgb = np.random.default_rng(3).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    hsv = rgb2hsv(rgb)
    np.testing.assert_allclose(hue_deg(rgb), hsv[..., 0] * 360, atol=1e-3)
    np.testing.assert_array_equal(saturation_u8(rgb), np.floor(hsv[..., 1] * 255 + 1e-9).astype(np.uint8))


def test_blue_stroke_on_tissue_is_pen_and_not_tissue():
    rgb = canvas(100, 100)
    rgb[10:90, 10:90] = PINK
    rgb[30:34, 5:95] = BLUE_INK                  # a 4-px stroke, crossing onto the glass
    result = tissue_mask(rgb, mpp=MPP)
    assert result.pen[30:34, 5:95].all()
    assert result.pen[27:37, 20].all()           # grown by 3 px (24 µm) each side
    assert not result.pen[20, 50] and not result.pen[45, 50]
    assert not result.mask[30:34].any()
    assert result.mask[10:26, 10:90].all() and result.mask[38:90, 10:90].all()
    assert result.pen_fraction > 0.1


def test_black_ink_over_tissue_is_excluded():
    rgb = canvas(100, 100)
    rgb[10:90, 10:90] = PINK
    rgb[50:90, 50:90] = BLACK_INK               # a filled black mark (dark, grey)
    result = tissue_mask(rgb, mpp=MPP)
    assert result.pen[50:90, 50:90].all()
    # Grown by a 3-px disk: the rows and columns next to the mark are pen too.
    assert not result.mask[47:90, 50:90].any() and not result.mask[50:90, 47:90].any()
    assert result.mask[10:40, 10:90].all()


def test_green_circle_on_glass_is_pen_and_not_tissue():
    # A pathologist's green circle around the tumour, drawn on the glass.
    yy, xx = np.mgrid[:160, :160]
    radius = np.hypot(yy - 80, xx - 80)
    rgb = canvas(160, 160)
    rgb[radius < 40] = PINK
    rgb[(radius > 60) & (radius < 64)] = GREEN_INK
    result = tissue_mask(rgb, mpp=MPP)
    assert result.pen[(radius > 60) & (radius < 64)].all()
    assert not result.mask[radius > 45].any()
    assert result.mask[radius < 38].all()


def test_ink_specks_below_the_minimum_pen_area_are_ignored():
    rgb = canvas(60, 60)
    rgb[10:15, 10:15] = BLUE_INK                 # 25 px = 1,600 µm² < 5,000 µm²
    assert pen_colour_mask(rgb).sum() == 25
    assert not pen_mask(rgb, mpp=MPP).any()
    # With the minimum area switched off the speck is ink, grown by 3 px each side.
    assert pen_mask(rgb, mpp=MPP, params=TissueParams(min_pen_area_um2=0)).sum() > 25


def test_pen_mask_sizes_follow_mpp():
    rgb = canvas(200, 200)
    rgb[50:150, 98:102] = BLUE_INK               # 400 px
    at8 = pen_mask(rgb, mpp=8.0)                 # 25,600 µm² ink, dilation 3 px
    at2 = pen_mask(rgb, mpp=2.0)                 # 1,600 µm² ink < 5,000: ignored
    assert at8[50:150, 95:105].all() and not at8[50:150, 94].any()
    assert not at2.any()


def test_pen_detection_can_be_switched_off_and_tuned():
    rgb = canvas(100, 100)
    rgb[10:90, 10:90] = PINK
    rgb[30:34, 5:95] = GREEN_INK
    off = tissue_mask(rgb, mpp=MPP, params=TissueParams(detect_pen=False))
    assert not off.pen.any() and off.pen_fraction == 0.0
    only_blue = TissueParams(green_hue_deg=(0.0, 0.0))
    assert not pen_colour_mask(rgb, params=only_blue)[30:34].any()


def test_real_tiles_have_no_pen(data_dir):
    # Real H&E (hematoxylin purple, eosin pink, red cells, mucin): any ink-coloured pixel is a
    # stray JPEG pixel, and none survives the minimum pen area.
    for path in sorted((data_dir / "tiles").iterdir()):
        rgb = np.asarray(Image.open(path).convert("RGB"))
        assert pen_colour_mask(rgb).mean() < 1e-3, path.name
        assert not pen_mask(rgb, mpp=MPP).any(), path.name
