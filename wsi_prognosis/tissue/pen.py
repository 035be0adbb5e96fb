"""Pen ink (blue, green, black marker) on a slide thumbnail.

Pathologists circle tumour with marker on the glass or over the tissue; those pixels are
ink, not tissue, and must neither count as tissue nor be tiled.
"""

from __future__ import annotations

import numpy as np

from wsi_prognosis.tissue.color import check_rgb, hue_deg, saturation_u8
from wsi_prognosis.tissue.morphology import dilate, remove_small
from wsi_prognosis.tissue.params import TissueParams, pixel_sizes

__all__ = ["pen_mask", "pen_colour_mask"]


def pen_colour_mask(rgb: np.ndarray, *, params: TissueParams = TissueParams(),
                    sat: np.ndarray | None = None) -> np.ndarray:
    """Pixels whose colour is marker ink, before any size filter or dilation.

    Parameters
    ----------
    rgb : (H, W, 3) uint8 ndarray
    params : TissueParams
        Uses `pen_min_saturation`, `blue_hue_deg`, `green_hue_deg`, `black_max_value`,
        `black_max_chroma`.
    sat : (H, W) uint8 ndarray, optional
        `saturation_u8(rgb)` when the caller has it already.

    Returns
    -------
    ink : (H, W) bool ndarray
        Blue or green: saturation >= `pen_min_saturation` and hue in `blue_hue_deg` or
        `green_hue_deg` (H&E hues are purple to red: 250-360 and 0-30 degrees).
        Black: brightest channel <= `black_max_value` and max - min <= `black_max_chroma`.
    """
    rgb = check_rgb(rgb)
    if sat is None:
        sat = saturation_u8(rgb)
    mx = rgb.max(axis=2)
    ink = (mx <= params.black_max_value) & ((mx - rgb.min(axis=2)) <= params.black_max_chroma)

    candidates = sat >= np.uint8(min(255, np.ceil(params.pen_min_saturation * 255)))
    if candidates.any():
        hue = hue_deg(rgb[candidates])
        coloured = np.zeros(hue.shape, dtype=bool)
        for lo, hi in (params.blue_hue_deg, params.green_hue_deg):
            coloured |= (hue >= lo) & (hue <= hi)
        ink[candidates] |= coloured
    return ink


def pen_mask(rgb: np.ndarray, *, mpp: float | None = None,
             params: TissueParams = TissueParams()) -> np.ndarray:
    """Mask of pen ink: blue, green and black marker strokes, slightly dilated.

    Parameters
    ----------
    rgb : (H, W, 3) uint8 ndarray
        Thumbnail on a white background (transparent areas composited onto white).
    mpp : float, optional
        µm/px of `rgb`; sizes in `params` are converted with it. Default
        `params.mask_mpp` (the caller passes the thumbnail at that resolution).
    params : TissueParams
        Colour rules (see `pen_colour_mask`), `min_pen_area_um2` (smaller ink
        components are ignored) and `pen_dilation_um` (growth that covers the stroke's
        fringe).

    Returns
    -------
    pen : (H, W) bool ndarray
        True on ink. All False when nothing is ink-coloured.

    Examples
    --------
    >>> rgb = np.full((40, 40, 3), 255, np.uint8)
    >>> rgb[10:30, 18:22] = (40, 70, 170)          # a blue stroke, 4 px wide
    >>> bool(pen_mask(rgb, mpp=8.0).sum() > 80)     # the stroke, grown by 3 px
    True
    """
    rgb = check_rgb(rgb)
    sizes = pixel_sizes(params, params.mask_mpp if mpp is None else mpp)
    ink = pen_colour_mask(rgb, params=params)
    ink = remove_small(ink, sizes.min_pen_px)
    return dilate(ink, sizes.pen_dilation_px)
