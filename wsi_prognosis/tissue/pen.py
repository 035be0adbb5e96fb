"""Pen ink (blue, green, black marker) on a slide thumbnail.

Pathologists circle tumour with marker on the glass or over the tissue; those pixels are
ink, not tissue, and must neither count as tissue nor be tiled.
"""

from __future__ import annotations

import math

import numpy as np

from wsi_prognosis.tissue.color import channels, check_rgb, hue_deg, saturation_from_max_min
from wsi_prognosis.tissue.morphology import dilate, remove_small
from wsi_prognosis.tissue.params import TissueParams, pixel_sizes

__all__ = ["pen_mask", "pen_colour_mask"]


def pen_colour_mask(rgb: np.ndarray, *, params: TissueParams = TissueParams()) -> np.ndarray:
    """Pixels whose colour is marker ink, before any size filter or dilation.

    Parameters
    ----------
    rgb : (H, W, 3) uint8 ndarray
    params : TissueParams
        Uses `pen_min_saturation`, `blue_hue_deg`, `green_hue_deg`, `black_max_value`,
        `black_max_chroma`.

    Returns
    -------
    ink : (H, W) bool ndarray
        Blue or green: saturation >= `pen_min_saturation` and hue in `blue_hue_deg` or
        `green_hue_deg` (H&E hues are purple to red: 250-360 and 0-30 degrees).
        Black: brightest channel <= `black_max_value` and max - min <= `black_max_chroma`.
    """
    r, g, b = channels(rgb)
    mx = np.maximum(np.maximum(r, g), b)
    mn = np.minimum(np.minimum(r, g), b)
    return _ink(r, g, b, mx, mn, saturation_from_max_min(mx, mn), params)


def _ink(r: np.ndarray, g: np.ndarray, b: np.ndarray, mx: np.ndarray, mn: np.ndarray,
         sat: np.ndarray, params: TissueParams) -> np.ndarray:
    """`pen_colour_mask` from channel planes, their max / min and `saturation_u8`."""
    ink = mx <= params.black_max_value
    ink &= (mx - mn) <= params.black_max_chroma

    # saturation >= p implies saturation_u8 >= floor(255 p): a cheap superset, refined below.
    candidates = sat >= np.uint8(math.floor(params.pen_min_saturation * 255))
    ranges = (params.blue_hue_deg, params.green_hue_deg)
    if all(60.0 < lo and hi < 300.0 for lo, hi in ranges):
        # Those hues need red below green or blue; it drops nearly all H&E pixels cheaply.
        candidates &= r < np.maximum(g, b)
    index = np.flatnonzero(candidates)
    if index.size:
        pixels = np.stack([r.ravel()[index], g.ravel()[index], b.ravel()[index]], axis=1)
        top = pixels.max(axis=1).astype(np.float32)
        chroma = top - pixels.min(axis=1)
        coloured = chroma >= np.float32(params.pen_min_saturation) * top
        hue = hue_deg(pixels)
        in_range = np.zeros(hue.shape, dtype=bool)
        for lo, hi in ranges:
            in_range |= (hue >= lo) & (hue <= hi)
        ink.ravel()[index[coloured & in_range]] = True
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
